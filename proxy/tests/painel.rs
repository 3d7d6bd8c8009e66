//! The voting panel's WebSockets end to end: real Redis A, real PostgreSQL with SAPL's
//! schema, real Django logging users in and publishing with channels_redis's own
//! `group_send` (3.4.1 and 4.x), and Rust WebSocket clients on `sapl-edge`.
//!
//! Run: `scripts/setup.sh` once (creates the channels venvs), then
//! `cargo test -p sapl-edge --test painel`.

mod painel_bed;

use painel_bed::*;
use serde_json::Value;

fn as_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What a socket must receive for a `group_send` of `payload`.
fn expected(payload: &str) -> Value {
    serde_json::json!({"type": "data", "payload": as_json(payload)})
}

async fn publish_reaches_every_socket(channels: Channels) {
    let redis = Redis::start();
    let prefix = format!("asgi-camara-{channels:?}").to_lowercase();
    let Some(peer) = Peer::new(channels, &redis, &prefix) else {
        return;
    };
    let edge = Edge::start(&redis, &EdgeSettings::new(&prefix));
    let session = peer.login("admin", "sapl-admin-123");

    let mut painel = connect(&edge, "/ws/painel/1/", Some(&session), None)
        .await
        .expect("handshake");
    let mut votacao = connect(&edge, "/ws/votacao/1", Some(&session), None)
        .await
        .expect("handshake");
    wait_membership(&redis, &prefix, "painel_1");

    let payload = dados_votacao_aberta();
    peer.publish("painel_1", &payload);

    for ws in [&mut painel, &mut votacao] {
        let text = next_text(ws).await;
        assert_eq!(as_json(&text), expected(&payload));
        // Key order is Django's own: the text starts as SAPL's JSON does.
        assert!(
            text.starts_with("{\"type\": \"data\", \"payload\": {\"sessao_plenaria\": "),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_redis_4_group_send_reaches_every_socket() {
    publish_reaches_every_socket(Channels::V4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_redis_3_4_1_group_send_reaches_every_socket() {
    publish_reaches_every_socket(Channels::V3).await;
}
