//! What one panel socket goes through, end to end on `sapl-edge` with real Redis A,
//! PostgreSQL, Gunicorn and channels_redis peers: frames as clients in the field send
//! them, the snapshot on connect, poll-to-push, socket hygiene (slow consumers, the
//! per-IP cap, idle sockets) and the metrics all of it leaves.
//!
//! Run: `scripts/setup.sh` once, then `cargo test -p sapl-edge --test painel_sockets`.

mod painel_bed;

use futures_util::{SinkExt, StreamExt};
use painel_bed::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn as_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn frame_json(frame: &Frame) -> Value {
    assert_eq!(frame.opcode, op::TEXT, "a text frame: {frame:?}");
    as_json(std::str::from_utf8(&frame.payload).expect("UTF-8 from the server"))
}

/// An edge with public panels and no Gunicorn: the frame tests need neither.
fn public_edge(redis: &Redis, prefix: &str, extra: &[&str]) -> Edge {
    let mut settings = EdgeSettings::new(prefix);
    settings.auth = "public";
    settings.extra = extra.iter().map(|s| s.to_string()).collect();
    Edge::start(redis, &settings)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragmented_message_with_a_ping_between_is_one_message() {
    let redis = Redis::start();
    let edge = public_edge(&redis, "asgi-camara-frag", &[]);
    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;

    // The same message, whole, answers as SAPL's consumer does.
    let ping = "{\"type\":\"ping\",\"texto\":\"Votação\"}".as_bytes();
    ws.send(true, op::TEXT, ping).await;
    assert_eq!(
        frame_json(&ws.frame().await.unwrap()),
        json!({"type": "pong"})
    );

    // Split in three, the first cut inside "ç" (C3 | A7), a ping between the fragments.
    let cut = ping.iter().position(|b| *b == 0xC3).unwrap() + 1;
    ws.send(false, op::TEXT, &ping[..cut]).await;
    ws.send(true, op::PING, b"painel-42").await;
    ws.send(false, op::CONTINUATION, &ping[cut..cut + 3]).await;
    ws.send(true, op::CONTINUATION, &ping[cut + 3..]).await;
    let pong = ws.frame().await.unwrap();
    assert_eq!(
        (pong.fin, pong.opcode, pong.payload.as_slice()),
        (true, op::PONG, &b"painel-42"[..]),
        "the control frame is answered at once, with its own payload"
    );
    assert_eq!(
        frame_json(&ws.frame().await.unwrap()),
        json!({"type": "pong"})
    );

    // Anything else split the same way gets one error, not one per fragment.
    let voto = "{\"type\":\"voto\",\"texto\":\"Votação\"}".as_bytes();
    let cut = voto.iter().position(|b| *b == 0xC3).unwrap() + 1;
    ws.send(false, op::TEXT, &voto[..cut]).await;
    ws.send(true, op::CONTINUATION, &voto[cut..]).await;
    ws.send(true, op::TEXT, b"{\"type\":\"ping\"}").await;
    assert_eq!(frame_json(&ws.frame().await.unwrap())["type"], "error");
    assert_eq!(
        frame_json(&ws.frame().await.unwrap()),
        json!({"type": "pong"})
    );

    assert_eq!(
        edge.metric("sapl_edge_painel_messages_total{direction=\"in\"}"),
        4.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_frames_close_with_the_rfc_codes() {
    let redis = Redis::start();
    let edge = public_edge(
        &redis,
        "asgi-camara-broken",
        &["max_message_size = \"1KiB\""],
    );

    // Invalid UTF-8 in one frame ("é" with a bad continuation byte).
    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;
    ws.send(true, op::TEXT, b"{\"texto\":\"\xc3\x28\"}").await;
    assert_eq!(ws.close_code().await, Some(1007));

    // A message whose last fragment ends inside a character.
    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;
    ws.send(false, op::TEXT, b"{\"texto\":\"Vota").await;
    ws.send(true, op::CONTINUATION, b"\xc3").await;
    assert_eq!(ws.close_code().await, Some(1007));

    // A control frame must not be fragmented.
    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;
    ws.send(false, op::PING, b"meio").await;
    assert_eq!(ws.close_code().await, Some(1002));

    // At the limit a message is still answered; over it, in one frame or in several, not.
    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;
    let at_limit = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(1000));
    assert_eq!(at_limit.len(), 1024);
    ws.send(true, op::TEXT, at_limit.as_bytes()).await;
    assert_eq!(
        frame_json(&ws.frame().await.unwrap()),
        json!({"type": "pong"})
    );
    ws.send(true, op::TEXT, &[b'x'; 2000]).await;
    assert_eq!(ws.close_code().await, Some(1009));

    let mut ws = RawWs::connect(&edge, "/ws/painel/1/").await;
    ws.send(false, op::TEXT, &[b'x'; 600]).await;
    ws.send(true, op::CONTINUATION, &[b'x'; 600]).await;
    assert_eq!(ws.close_code().await, Some(1009));

    let closes = |reason: &str| {
        edge.metric(&format!(
            "sapl_edge_painel_closes_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(closes("invalid_utf8"), 2.0);
    assert_eq!(closes("protocol"), 1.0);
    assert_eq!(closes("too_big"), 2.0);
}

/// Gunicorn with the test bed's Django, and a V3 peer: the test bed runs Django 2.2, so
/// only sessions in 2.2's encoding log its dados view in.
fn django(redis: &Redis, prefix: &str) -> Option<(Peer, Gunicorn, tempfile::TempDir)> {
    let peer = Peer::new(Channels::V3, redis, prefix)?;
    let dir = tempfile::Builder::new()
        .prefix("pg")
        .tempdir_in("/tmp")
        .unwrap();
    let gunicorn = Gunicorn::start(dir.path());
    Some((peer, gunicorn, dir))
}

fn metric(edge: &Edge, name: &str, label: &str, value: &str) -> f64 {
    edge.metric(&format!("sapl_edge_painel_{name}{{{label}=\"{value}\"}}"))
}

async fn send_ping(ws: &mut Ws) {
    ws.send("{\"type\":\"ping\"}".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_socket_gets_the_last_message_else_djangos_dados() {
    let redis = Redis::start();
    let prefix = "asgi-camara-snapshot";
    let Some((peer, gunicorn, _dir)) = django(&redis, prefix) else {
        return;
    };
    let mut settings = EdgeSettings::new(prefix);
    settings.upstream = Some(gunicorn.socket.clone());
    let edge = Edge::start(&redis, &settings);
    let session = peer.viewer("snapshot-viewer");

    // Nothing was ever published: the socket opens on Django's dados, as this viewer.
    let dados = edge.get("/painel/1/dados", Some(&session));
    assert_eq!(dados.status, 200, "{}", dados.body);
    let dados = as_json(&dados.body);
    assert_eq!(dados["num_presentes"], 8);
    assert!(
        dados["sessao_plenaria"]
            .as_str()
            .unwrap()
            .starts_with("5ª "),
        "{dados}"
    );
    let mut first = connect(&edge, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    assert_eq!(
        as_json(&next_text(&mut first).await),
        json!({"type": "data", "payload": dados})
    );

    // Django publishes the open vote; a socket opening afterwards starts from it at once.
    wait_membership(&redis, prefix, "painel_1");
    let votacao = json!({"type": "data", "payload": as_json(&dados_votacao_aberta())});
    peer.publish("painel_1", &dados_votacao_aberta());
    assert_eq!(as_json(&next_text(&mut first).await), votacao);
    let mut second = connect(&edge, "/ws/painel/1/", Some(&session), None)
        .await
        .unwrap();
    assert_eq!(as_json(&next_text(&mut second).await), votacao);
    send_ping(&mut second).await;
    assert_eq!(
        as_json(&next_text(&mut second).await),
        json!({"type": "pong"})
    );

    // Django answered the page's request and the first socket's; the second cost nothing.
    assert_eq!(gunicorn.hits("/painel/1/dados").len(), 2);
    assert_eq!(metric(&edge, "snapshots_total", "source", "django"), 1.0);
    assert_eq!(metric(&edge, "snapshots_total", "source", "redis"), 1.0);
    assert_eq!(metric(&edge, "auth_total", "outcome", "ok"), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_to_push_asks_django_once_per_interval_for_every_screen() {
    let redis = Redis::start();
    let prefix = "asgi-camara-poll";
    let Some((peer, gunicorn, _dir)) = django(&redis, prefix) else {
        return;
    };
    let mut settings = EdgeSettings::new(prefix);
    settings.upstream = Some(gunicorn.socket.clone());
    settings
        .extra
        .extend(["poll = true".into(), "poll_interval = \"200ms\"".into()]);
    let edge = Edge::start(&redis, &settings);
    let session = peer.viewer("poll-viewer");
    // A sessão of this test's own, since it changes it.
    sql(
        "CREATE TEMP TABLE s AS SELECT * FROM sessao_sessaoplenaria WHERE id = 1; \
         UPDATE s SET id = 2, numero = 6, tema_solene = 'Sessão do poll'; \
         INSERT INTO sessao_sessaoplenaria SELECT * FROM s;",
    );
    let polls = |result: &str| metric(&edge, "polls_total", "result", result);

    let mut screens = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&edge, "/ws/painel/2/", Some(&session), None)
            .await
            .unwrap();
        let first = as_json(&next_text(&mut ws).await);
        assert_eq!(first["payload"]["tema_solene"], "Sessão do poll");
        screens.push(ws);
    }
    // Limitation: the first poll republishes what a socket opened with from Django, so
    // the earliest screens may get that same payload twice; never anything else.
    wait_for("a poll round with nothing new", || {
        polls("unchanged") >= 1.0
    });
    for ws in &mut screens {
        send_ping(ws).await;
        loop {
            let msg = as_json(&next_text(ws).await);
            if msg["type"] == "pong" {
                break;
            }
            assert_eq!(msg["payload"]["tema_solene"], "Sessão do poll");
        }
    }

    // A change reaches every screen once; then nothing until the next change.
    sql("UPDATE sessao_sessaoplenaria SET tema_solene = 'Votação do orçamento' WHERE id = 2");
    for ws in &mut screens {
        let pushed = as_json(&next_text(ws).await);
        assert_eq!(pushed["payload"]["tema_solene"], "Votação do orçamento");
    }
    let quiet_from = polls("unchanged");
    wait_for("three poll rounds with nothing new", || {
        polls("unchanged") >= quiet_from + 3.0
    });
    for ws in &mut screens {
        send_ping(ws).await;
        assert_eq!(as_json(&next_text(ws).await), json!({"type": "pong"}));
    }

    // An old polling page is answered from the shared result; Gunicorn never sees it.
    let page = edge.get("/painel/2/dados?_=pagina-antiga", Some(&session));
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(as_json(&page.body)["tema_solene"], "Votação do orçamento");
    let hits = gunicorn.hits("/painel/2/dados");
    assert!(
        hits.iter().all(|uri| !uri.contains("pagina-antiga")),
        "{hits:?}"
    );
    // …and without the viewer's session it is Django's to refuse, as before.
    let anonymous = edge.get("/painel/2/dados?_=anonimo", None);
    assert_eq!(anonymous.status, 302);

    // Every dados request Django received was one poll round or one Django snapshot:
    // five screens did not multiply them.
    let rounds = || polls("changed") + polls("unchanged") + polls("error");
    let django_snapshots = metric(&edge, "snapshots_total", "source", "django");
    assert!(django_snapshots <= 5.0);
    wait_for("Django's dados requests to match the poll rounds", || {
        let received = gunicorn
            .hits("/painel/2/dados")
            .iter()
            .filter(|uri| !uri.contains("anonimo"))
            .count() as f64;
        received == rounds() + django_snapshots
    });
    assert!(rounds() >= 5.0);
    assert_eq!(polls("changed"), 2.0);
    assert_eq!(polls("error"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_socket_is_closed_1013_and_the_others_get_every_message() {
    const COUNT: u64 = 300;
    let redis = Redis::start();
    let prefix = "asgi-camara-lenta";
    let peer = Peer::new(Channels::V4, &redis, prefix).expect("4.x peer");
    let edge = public_edge(&redis, prefix, &["send_queue = 4"]);
    let mut fast = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    let mut slow = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    wait_membership(&redis, prefix, "painel_1");

    // 300 messages of 64 KiB: far more than the buffers between the edge and a client
    // that does not read.
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < COUNT {
            let msg = as_json(&next_text(&mut fast).await);
            seqs.push(msg["payload"]["seq"].as_u64().unwrap());
        }
        seqs
    });
    tokio::task::spawn_blocking(move || peer.publish_many("painel_1", COUNT as usize, 64 << 10))
        .await
        .unwrap();
    let seqs = reader.await.unwrap();
    assert_eq!(
        seqs,
        (0..COUNT).collect::<Vec<_>>(),
        "the fast socket got all"
    );

    // The slow client reads at last: what was already on its way, then 1013.
    let mut received = 0;
    let code = loop {
        let msg = tokio::time::timeout(HANG, slow.next())
            .await
            .expect("a close before the hang guard");
        match msg {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(received < COUNT, "{received} messages");

    // Reconnecting, it starts from the last message.
    let mut again = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    assert_eq!(
        as_json(&next_text(&mut again).await)["payload"]["seq"],
        COUNT - 1
    );
    assert_eq!(
        metric(&edge, "slow_consumers_dropped_total", "route", "painel-ws"),
        1.0
    );
    assert_eq!(
        metric(&edge, "closes_total", "reason", "slow_consumer"),
        1.0
    );
    assert_eq!(metric(&edge, "snapshots_total", "source", "redis"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_ip_cap_refuses_the_socket_over_it() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let redis = Redis::start();
    let edge = public_edge(&redis, "asgi-camara-cap", &["max_sockets_per_ip = 2"]);
    let mut a = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    let mut b = connect(&edge, "/ws/votacao/1", None, None).await.unwrap();
    for ws in [&mut a, &mut b] {
        send_ping(ws).await;
        assert_eq!(as_json(&next_text(ws).await)["type"], "pong");
    }

    // A third from the same address is refused.
    match connect(&edge, "/ws/painel/1/", None, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| "a socket")),
    }

    // Behind a trusted hop (127.0.0.1 is one by default) the cap counts the client the hop
    // names, as every other rule does: the ingress in front of a pod is not one viewer.
    let mut request = edge.url("/ws/painel/1/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Forwarded-For", "203.0.113.7".parse().unwrap());
    let (mut other_viewer, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("another client's socket opens");
    send_ping(&mut other_viewer).await;
    assert_eq!(as_json(&next_text(&mut other_viewer).await)["type"], "pong");

    // A socket that closes gives its place back.
    a.close(None).await.unwrap();
    wait_for("the closed socket to leave", || {
        // The other client's socket stays.
        metric(&edge, "sockets_open", "route", "painel-ws") == 1.0
    });
    let mut c = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    send_ping(&mut c).await;
    assert_eq!(as_json(&next_text(&mut c).await)["type"], "pong");

    assert_eq!(metric(&edge, "auth_total", "outcome", "over_capacity"), 1.0);
    assert_eq!(metric(&edge, "auth_total", "outcome", "public"), 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_socket_outlives_the_read_timeout() {
    let redis = Redis::start();
    let mut settings = EdgeSettings::new("asgi-camara-quieta");
    settings.auth = "public";
    settings.upstream_extra.push("read_timeout = \"2s\"".into());
    settings.ws_route_extra.push("read_timeout = \"2s\"".into());
    let edge = Edge::start(&redis, &settings);
    let mut painel = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    let mut votacao = connect(&edge, "/ws/votacao/1", None, None).await.unwrap();

    // A panel between votes: nothing either way for three read timeouts.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    for ws in [&mut painel, &mut votacao] {
        send_ping(ws).await;
        assert_eq!(as_json(&next_text(ws).await), json!({"type": "pong"}));
    }
    assert_eq!(metric(&edge, "sockets_open", "route", "painel-ws"), 1.0);
    assert_eq!(metric(&edge, "sockets_open", "route", "votacao-ws"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_sockets_messages_snapshots_and_auth() {
    let redis = Redis::start();
    let prefix = "asgi-camara-metricas";
    let peer = Peer::new(Channels::V4, &redis, prefix).expect("4.x peer");
    let edge = Edge::start(&redis, &EdgeSettings::new(prefix));
    let session = peer.viewer("metricas");

    let mut sockets = Vec::new();
    for path in ["/ws/painel/1/", "/ws/painel/1/", "/ws/votacao/1"] {
        sockets.push(connect(&edge, path, Some(&session), None).await.unwrap());
    }
    let mut anonymous = connect(&edge, "/ws/painel/1/", None, None).await.unwrap();
    assert_eq!(close_code(&mut anonymous).await, Some(4401));
    wait_for("three sockets open", || {
        metric(&edge, "sockets_open", "route", "painel-ws") == 2.0
            && metric(&edge, "sockets_open", "route", "votacao-ws") == 1.0
    });

    wait_membership(&redis, prefix, "painel_1");
    peer.publish("painel_1", r#"{"msg_painel": "contado"}"#);
    for ws in &mut sockets {
        assert_eq!(
            as_json(&next_text(ws).await)["payload"]["msg_painel"],
            "contado"
        );
    }
    let votacao = sockets.pop().unwrap();
    drop(votacao);
    wait_for("the votação socket to close", || {
        metric(&edge, "sockets_open", "route", "votacao-ws") == 0.0
    });

    assert_eq!(metric(&edge, "sockets_open", "route", "painel-ws"), 2.0);
    assert_eq!(metric(&edge, "messages_total", "direction", "bridge"), 1.0);
    assert_eq!(metric(&edge, "messages_total", "direction", "out"), 3.0);
    // No Gunicorn here and nothing published before: the sockets opened without one.
    assert_eq!(metric(&edge, "snapshots_total", "source", "none"), 3.0);
    assert_eq!(metric(&edge, "auth_total", "outcome", "ok"), 3.0);
    assert_eq!(
        metric(&edge, "auth_total", "outcome", "unauthenticated"),
        1.0
    );
    assert_eq!(
        metric(&edge, "slow_consumers_dropped_total", "route", "painel-ws"),
        0.0
    );
}

/// RFC 6455 4.2.1: a request that is not a complete opening handshake gets 400 from the
/// edge itself, never a 101 and never a gateway error.
#[tokio::test(flavor = "multi_thread")]
async fn incomplete_handshakes_are_refused_with_400() {
    use std::io::{Read, Write};

    let redis = Redis::start();
    let edge = public_edge(&redis, "asgi-camara-aperto", &[]);
    let status = |headers: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
        stream.set_read_timeout(Some(HANG)).unwrap();
        write!(
            stream,
            "GET /ws/painel/1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).to_string()
    };

    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let whole =
        format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{key}");
    assert_eq!(status(&whole), "101");
    assert_eq!(
        status("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"),
        "400",
        "no key"
    );
    assert_eq!(
        status(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n{key}"
        )),
        "400",
        "old version"
    );
    assert_eq!(
        status(&format!(
            "Upgrade: websocket\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n{key}"
        )),
        "400",
        "no upgrade token in Connection"
    );
}
