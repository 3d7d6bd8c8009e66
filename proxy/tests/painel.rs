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
    let session = peer.viewer(&format!("painel-{channels:?}").to_lowercase());

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

#[tokio::test(flavor = "multi_thread")]
async fn auth_refusals_close_with_sapls_codes() {
    let redis = Redis::start();
    let prefix = "asgi-camara-auth";
    let peer = Peer::new(Channels::V4, &redis, prefix).expect("4.x peer");
    let edge = Edge::start(&redis, &EdgeSettings::new(prefix));
    peer.run(&["create-user", "semperm", "senha-semperm-1"]);
    peer.run(&[
        "create-user",
        "operador",
        "senha-operador-1",
        "painel.list_painel",
    ]);

    // No cookie at all.
    let mut ws = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4401));

    // A cookie naming no session.
    let mut ws = connect(&edge, "/ws/painel/1/", Some("naoexiste"), None)
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4401));

    // Logged in, without any panel permission.
    let semperm = peer.login("semperm", "senha-semperm-1");
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&semperm), None)
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4403));

    // A painel permission passes; the socket answers pings.
    let operador = peer.login("operador", "senha-operador-1");
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&operador), None)
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut ws, "{\"type\":\"ping\"}".into())
        .await
        .unwrap();
    assert_eq!(
        as_json(&next_text(&mut ws).await),
        serde_json::json!({"type": "pong"})
    );

    // No such sessão.
    let mut ws = connect(&edge, "/ws/painel/999/", Some(&operador), None)
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4404));

    // An expired session.
    let expired = peer.login("operador", "senha-operador-1");
    sql(&format!(
        "UPDATE django_session SET expire_date = now() - interval '1 minute' \
         WHERE session_key = '{expired}'"
    ));
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&expired), None)
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4401));

    // The password changed after the login: Django's session hash no longer matches.
    peer.run(&["set-password", "operador", "senha-operador-2"]);
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&operador), None)
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4401));

    // A page on another site cannot open the socket (cross-site WebSocket hijacking).
    let fresh = peer.viewer("auth-fresh");
    let refused = connect(
        &edge,
        "/ws/painel/1/",
        Some(&fresh),
        Some("https://evil.example"),
    )
    .await
    .expect_err("foreign Origin refused");
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let own_origin = format!("http://127.0.0.1:{}", edge.port);
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&fresh), Some(&own_origin))
        .await
        .expect("same-host Origin accepted");
    futures_util::SinkExt::send(&mut ws, "{\"type\":\"ping\"}".into())
        .await
        .unwrap();
    assert_eq!(as_json(&next_text(&mut ws).await)["type"], "pong");

    assert!(edge.metric("sapl_edge_painel_auth_total{outcome=\"forbidden\"}") >= 1.0);
    assert!(edge.metric("sapl_edge_painel_auth_total{outcome=\"bad_origin\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_on_one_redis_never_cross() {
    let redis = Redis::start();
    let (pa, pb) = ("asgi-camara-a", "asgi-camara-b");
    let peer_a = Peer::new(Channels::V4, &redis, pa).expect("4.x peer");
    let peer_b = Peer::new(Channels::V4, &redis, pb).expect("4.x peer");
    let edge_a = Edge::start(&redis, &EdgeSettings::new(pa));
    let edge_b = Edge::start(&redis, &EdgeSettings::new(pb));
    let session = peer_a.viewer("tenants");

    // Both chambers have a sessão 1 with the same group name.
    let mut ws_a = connect(&edge_a, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    let mut ws_b = connect(&edge_b, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    wait_membership(&redis, pa, "painel_1");
    wait_membership(&redis, pb, "painel_1");

    peer_a.publish("painel_1", r#"{"camara": "A", "voto": "Sim"}"#);
    peer_b.publish("painel_1", r#"{"camara": "B", "voto": "Não"}"#);
    peer_a.publish("painel_1", r#"{"camara": "A", "voto": "Abstenção"}"#);

    // Had A's vote leaked into B's process key, it would come before B's own.
    assert_eq!(
        as_json(&next_text(&mut ws_b).await)["payload"]["camara"],
        "B"
    );
    assert_eq!(
        as_json(&next_text(&mut ws_a).await)["payload"]["voto"],
        "Sim"
    );
    assert_eq!(
        as_json(&next_text(&mut ws_a).await)["payload"]["voto"],
        "Abstenção"
    );
    peer_b.publish("painel_1", r#"{"camara": "B", "voto": "fim"}"#);
    assert_eq!(
        as_json(&next_text(&mut ws_b).await)["payload"]["voto"],
        "fim"
    );

    // Every key the edges wrote carries their tenant's prefix.
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(key.starts_with(pa) || key.starts_with(pb), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_older_than_group_expiry_still_receives() {
    let redis = Redis::start();
    let prefix = "asgi-camara-longa";
    let peer = Peer::new(Channels::V4, &redis, prefix).expect("4.x peer");
    let mut settings = EdgeSettings::new(prefix);
    settings.extra.push("membership_refresh = \"1s\"".into());
    let edge = Edge::start(&redis, &settings);
    let session = peer.viewer("longa");
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    wait_membership(&redis, prefix, "painel_1");

    // The plenary has run for 25 hours: the membership's score is older than 24 h, which
    // channels_redis's group_send prunes.
    let key = format!("{prefix}:group:painel_1");
    let mut conn = redis.conn();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let now: f64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for member in &members {
        let _: () = redis::cmd("ZADD")
            .arg(&key)
            .arg(now - 25.0 * 3600.0)
            .arg(member)
            .query(&mut conn)
            .unwrap();
    }
    wait_for("the edge to refresh its membership", || {
        let scores: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut conn)
            .unwrap_or_default();
        !scores.is_empty() && scores.iter().all(|(_, s)| *s > now - 3600.0)
    });

    peer.publish("painel_1", r#"{"msg_painel": "ainda aqui"}"#);
    assert_eq!(
        as_json(&next_text(&mut ws).await)["payload"]["msg_painel"],
        "ainda aqui"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_layer_and_encrypted_core_layer_are_understood() {
    for channels in [Channels::V4, Channels::V3] {
        let redis = Redis::start();
        let prefix = "asgi-camara-pubsub";
        let Some(mut peer) = Peer::new(channels, &redis, prefix) else {
            continue;
        };
        peer.layer = "pubsub";
        let mut settings = EdgeSettings::new(prefix);
        settings.layer = "pubsub";
        let edge = Edge::start(&redis, &settings);
        let session = peer.viewer(&format!("pubsub-{channels:?}").to_lowercase());
        let mut ws = connect(&edge, "/ws/painel/1/", Some(&session), None)
            .await
            .unwrap();
        wait_subscription(&redis, prefix, "painel_1");
        let payload = dados_votacao_aberta();
        peer.publish("painel_1", &payload);
        assert_eq!(
            as_json(&next_text(&mut ws).await),
            expected(&payload),
            "{channels:?} pub/sub"
        );
    }

    for channels in [Channels::V4, Channels::V3] {
        let redis = Redis::start();
        let prefix = "asgi-camara-fernet";
        let Some(mut peer) = Peer::new(channels, &redis, prefix) else {
            continue;
        };
        peer.keys = "chave-nova-do-painel".into();
        let mut settings = EdgeSettings::new(prefix);
        settings.extra.push(
            "symmetric_encryption_keys = [\"chave-antiga\", \"chave-nova-do-painel\"]".into(),
        );
        let edge = Edge::start(&redis, &settings);
        let session = peer.viewer(&format!("fernet-{channels:?}").to_lowercase());
        let mut ws = connect(&edge, "/ws/painel/1/", Some(&session), None)
            .await
            .unwrap();
        wait_membership(&redis, prefix, "painel_1");
        peer.publish("painel_1", r#"{"msg_painel": "cifrado"}"#);
        assert_eq!(
            as_json(&next_text(&mut ws).await)["payload"]["msg_painel"],
            "cifrado",
            "{channels:?} Fernet"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_sockets_with_a_retryable_code() {
    let redis = Redis::start();
    let mut settings = EdgeSettings::new("asgi-camara-restart");
    settings.auth = "public";
    let edge = Edge::start(&redis, &settings);
    let mut ws = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    futures_util::SinkExt::send(&mut ws, "{\"type\":\"ping\"}".into())
        .await
        .unwrap();
    assert_eq!(as_json(&next_text(&mut ws).await)["type"], "pong");
    edge.terminate();
    assert_eq!(close_code(&mut ws).await, Some(1012));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_membership_write_is_made_again() {
    let redis = Redis::start();
    let prefix = "asgi-camara-retry";
    let peer = Peer::new(Channels::V4, &redis, prefix).expect("4.x peer");
    let edge = Edge::start(&redis, &EdgeSettings::new(prefix));
    let session = peer.viewer("retry");

    // Redis A refuses the edge's first membership write for the group (here the key
    // holds a string; on a loaded machine it is a timeout or a dropped connection).
    let key = format!("{prefix}:group:painel_1");
    let mut conn = redis.conn();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a sorted set")
        .query(&mut conn)
        .unwrap();
    let mut ws = connect(&edge, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    wait_for("the edge to report the refused write", || {
        edge.log().contains("group membership not updated")
    });

    // Once Redis accepts writes again, the membership lands without any new socket.
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
    wait_membership(&redis, prefix, "painel_1");
    peer.publish("painel_1", r#"{"msg_painel": "de volta"}"#);
    assert_eq!(
        as_json(&next_text(&mut ws).await)["payload"]["msg_painel"],
        "de volta"
    );
}
