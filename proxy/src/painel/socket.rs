//! One panel WebSocket, from handshake to close, ended in the edge itself.
//!
//! The proxy hands `websocket` routes here (see `proxy.rs`). In order: the route and its
//! `sessao_id`, the handshake headers (400), the `Origin` check (403 for a foreign site), the
//! caps (503); then the edge writes the 101 on the client's own connection, takes that
//! connection out of Pingora's HTTP session and runs the socket in a task of its own with
//! tokio-tungstenite: the session and permission check (close 4401/4403/4404), joining the
//! sessão's group, the snapshot, and the message loop. No second connection and no proxy
//! buffers stand between the client and the socket, so an idle panel costs one file
//! descriptor and a few KiB.
//!
//! Hygiene in the loop: the server pings every `ping_interval` and closes a socket silent
//! for `ping_interval + pong_timeout`; `{"type":"ping"}` is answered `{"type":"pong"}`;
//! oversized messages close with 1009, invalid UTF-8 with 1007, protocol violations such
//! as a fragmented control frame with 1002. A socket whose send queue overflows is closed
//! with 1013 and a shutdown closes every socket with 1012: both are codes SAPL's pages
//! retry at once, so viewers move to a healthy edge without a "conexão perdida" pause.

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession as HttpSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use super::auth;
use super::hub::{Credentials, Slot};
use super::metrics;
use super::snapshot::{self, DadosRequest, Source};
use super::Painel;
use crate::config::{Action, PainelAuth};
use crate::routes;

/// Close codes the edge sends besides SAPL's 44xx.
pub mod code {
    /// Going away: the peer stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Service restart: the edge is shutting down; reconnect now.
    pub const RESTART: u16 = 1012;
    /// Try again later: the socket fell behind.
    pub const TRY_AGAIN: u16 = 1013;
}

/// How long a send to a client may block before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handshake learned, for the session that follows.
struct Handshake {
    route: String,
    sessao_id: u64,
    cookie: String,
    host: String,
    slot: Slot,
}

/// Why a socket was not opened: the status answered and the reason logged.
pub type Refusal = (StatusCode, &'static str);

/// Ends the request of a `websocket` route: on success the 101 has been written, the
/// client's connection belongs to a socket task, and the session left to Pingora is a
/// closed stand-in carrying the same request (for the access log). `client` is the real
/// client address, which the per-address cap counts.
pub async fn upgrade(
    painel: &Arc<Painel>,
    session: &mut Session,
    client: Option<IpAddr>,
    request_id: &str,
) -> pingora::Result<Result<(), Refusal>> {
    let req = session.req_header();
    let checked = handshake_key(req)
        .and_then(|key| Ok((key, admit(painel, req.uri.path(), &req.headers, client)?)));
    let (key, handshake) = match checked {
        Ok(checked) => checked,
        Err(refusal) => {
            metrics::AUTH.with_label_values(&[refusal.1]).inc();
            return Ok(Err(refusal));
        }
    };

    // A closed stand-in takes the client's place in Pingora's session: it reads back the
    // same request, so logging sees it, and ends without keep-alive.
    let mut stand_in = HttpSession::new_http1(Box::new(Cursor::new(request_head(req))));
    stand_in.read_request().await?;
    stand_in.set_keepalive(None);
    let taken = std::mem::replace(&mut *session.downstream_session, stand_in);
    let mut stream: Stream = match taken {
        HttpSession::H1(h1) => h1.into_inner(),
        other => {
            // Only HTTP/1.1 upgrades reach here (`is_upgrade_req`); put it back untouched.
            *session.downstream_session = other;
            return Ok(Err((StatusCode::BAD_REQUEST, "bad_handshake")));
        }
    };

    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nX-Request-ID: {request_id}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let written = async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await
    };
    if let Err(e) = written.await {
        debug!(error = %e, "painel: client left during the handshake");
        return Ok(Ok(()));
    }

    let config = WebSocketConfig::default()
        // Small buffers keep an idle socket cheap: viewers send only pings, and a larger
        // message is read in several chunks.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(painel.config.max_message_size))
        .max_frame_size(Some(painel.config.max_message_size));
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    tokio::spawn(run_session(
        painel.clone(),
        ws,
        handshake,
        painel.closing.subscribe(),
    ));
    Ok(Ok(()))
}

/// The client's `Sec-WebSocket-Key` once the request is a WebSocket opening handshake
/// (RFC 6455 4.2.1): GET, `Upgrade: websocket`, version 13.
fn handshake_key(req: &RequestHeader) -> Result<String, Refusal> {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case(token))
    };
    let upgrade_websocket = has_token("upgrade", "websocket") && has_token("connection", "upgrade");
    let key = header("sec-websocket-key").trim();
    if req.method != http::Method::GET
        || !upgrade_websocket
        || header("sec-websocket-version").trim() != "13"
        || key.is_empty()
    {
        return Err((StatusCode::BAD_REQUEST, "bad_handshake"));
    }
    Ok(key.to_string())
}

/// The request line and headers as the client sent them, for the stand-in session.
fn request_head(req: &RequestHeader) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.uri).into_bytes();
    for (name, value) in req.headers.iter() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The checks made before the 101: route, `Origin`, caps.
fn admit(
    painel: &Painel,
    path: &str,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Handshake, Refusal> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };

    let runtime = painel.live.load_full();
    let path = routes::normalize(path).map_err(|_| (StatusCode::BAD_REQUEST, "bad_route"))?;
    let route = runtime
        .routes
        .find(&path)
        .filter(|r| matches!(r.action, Action::WebSocket))
        .ok_or((StatusCode::NOT_FOUND, "bad_route"))?;
    let sessao_id = super::sessao_id(route, &path).ok_or((StatusCode::NOT_FOUND, "bad_route"))?;

    let host = header("host");
    let origin = header("origin");
    if !origin.is_empty() && !origin_allowed(&origin, &host, &painel.config.allowed_origins) {
        warn!(origin = %origin, host = %host, "painel: foreign Origin refused");
        return Err((StatusCode::FORBIDDEN, "bad_origin"));
    }

    let slot = painel.hub.reserve(client).map_err(|e| {
        warn!(reason = %e, "painel: socket refused");
        (StatusCode::SERVICE_UNAVAILABLE, "over_capacity")
    })?;

    Ok(Handshake {
        route: route.name.clone(),
        sessao_id,
        cookie: header("cookie"),
        host,
        slot,
    })
}

/// Whether a browser page at `origin` may open a socket on `host`: the same host (either
/// scheme, since TLS usually ends in front of the pod), or a configured origin.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some_and(|h| !h.is_empty() && h == host.trim().to_ascii_lowercase())
}

/// Everything after the 101.
async fn run_session(
    painel: Arc<Painel>,
    mut ws: WebSocketStream<Stream>,
    handshake: Handshake,
    mut shutdown: ShutdownWatch,
) {
    let Handshake {
        route,
        sessao_id,
        cookie,
        host,
        slot,
    } = handshake;

    // Who is watching.
    let outcome = match &painel.config.auth {
        PainelAuth::Public => Ok("public"),
        PainelAuth::Django { .. } => {
            let session_key = auth::cookie(&cookie, "sessionid");
            // Boxed, like the snapshot below: a task keeps the size of its largest state for
            // its whole life, and these one-off database and HTTP calls would triple the
            // memory of every idle socket.
            match Box::pin(painel.auth.check(session_key, sessao_id)).await {
                Ok(Ok(_user)) => Ok("ok"),
                Ok(Err(denial)) => Err((denial.close_code(), denial.label())),
                Err(e) => {
                    warn!(error = %e, "painel: cannot check the session");
                    Err((code::INTERNAL, "error"))
                }
            }
        }
    };
    metrics::AUTH
        .with_label_values(&[match outcome {
            Ok(label) | Err((_, label)) => label,
        }])
        .inc();
    if let Err((close_code, label)) = outcome {
        debug!(
            sessao_id,
            outcome = label,
            "painel: socket refused after the handshake"
        );
        close(&mut ws, close_code, label).await;
        return;
    }

    let group = painel.group_name(sessao_id);
    let credentials = Credentials {
        host: host.clone(),
        cookie: cookie.clone(),
    };
    let mut membership = painel.hub.join(&group, sessao_id, Some(credentials));
    let open = metrics::SOCKETS_OPEN.with_label_values(&[route.as_str()]);
    open.inc();
    info!(route = %route, sessao_id, sockets = painel.hub.total(), "painel: socket open");

    // The snapshot goes out before anything queued since the join.
    let (first, source) =
        Box::pin(initial_payload(&painel, &group, sessao_id, &host, &cookie)).await;
    metrics::SNAPSHOTS
        .with_label_values(&[source.label()])
        .inc();
    let mut alive = match first {
        Some(text) => send_text(&mut ws, text).await,
        None => true,
    };

    let ping_every = painel.config.ping_interval;
    let silence_limit = ping_every + painel.config.pong_timeout;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();

    while alive {
        tokio::select! {
            _ = shutdown.changed() => {
                metrics::CLOSES.with_label_values(&["shutdown"]).inc();
                close(&mut ws, code::RESTART, "edge restarting").await;
                break;
            }
            _ = membership.kick.notified() => {
                metrics::SLOW_CONSUMERS.with_label_values(&[route.as_str()]).inc();
                metrics::CLOSES.with_label_values(&["slow_consumer"]).inc();
                close(&mut ws, code::TRY_AGAIN, "too slow").await;
                break;
            }
            queued = membership.rx.recv() => match queued {
                Some(text) => alive = send_text(&mut ws, text.to_string()).await,
                None => break,
            },
            incoming = ws.next() => {
                last_heard = Instant::now();
                match incoming {
                    None => break,
                    Some(Ok(Message::Text(text))) => {
                        metrics::MESSAGES.with_label_values(&["in"]).inc();
                        alive = send_text(&mut ws, answer(text.as_str())).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        metrics::MESSAGES.with_label_values(&["in"]).inc();
                        alive = send_text(&mut ws, error_message("mensagens binárias não são aceitas")).await;
                    }
                    // tungstenite queued the pong; flushing sends it now.
                    Some(Ok(Message::Ping(_))) => alive = ws.flush().await.is_ok(),
                    Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        let _ = ws.flush().await;
                        break;
                    }
                    Some(Err(e)) => {
                        if let Some((close_code, reason)) = close_for(&e) {
                            metrics::CLOSES.with_label_values(&[reason]).inc();
                            debug!(error = %e, close_code, "painel: client broke the protocol");
                            close(&mut ws, close_code, reason).await;
                        }
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > silence_limit {
                    metrics::CLOSES.with_label_values(&["ping_timeout"]).inc();
                    close(&mut ws, code::GOING_AWAY, "ping timeout").await;
                    break;
                }
                alive = tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default())))
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
        }
    }

    open.dec();
    drop(membership);
    drop(slot);
    debug!(route = %route, sessao_id, "painel: socket closed");
}

/// The snapshot: the group's last message from Redis, else Django's dados as this viewer.
async fn initial_payload(
    painel: &Painel,
    group: &str,
    sessao_id: u64,
    host: &str,
    cookie: &str,
) -> (Option<String>, Source) {
    match painel.bridge.snapshot(group).await {
        Ok(Some(text)) => return (Some(text), Source::Redis),
        Ok(None) => {}
        Err(e) => debug!(error = %e, "painel: snapshot not read from Redis"),
    }
    let runtime = painel.live.load_full();
    let path = snapshot::dados_path(&painel.config.dados_path, sessao_id);
    let request = DadosRequest {
        upstream: &runtime.config.upstream.address,
        path: &path,
        host,
        cookie,
        timeout: Duration::from_secs(10),
    };
    match snapshot::fetch_dados(&request).await {
        Ok(json) => (Some(super::wire::data_message(&json)), Source::Django),
        Err(e) => {
            debug!(error = %e, sessao_id, "painel: no snapshot from Django");
            (None, Source::None)
        }
    }
}

/// The answer to a client's text message.
fn answer(text: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(|t| t.as_str())
    {
        Some("ping") => "{\"type\": \"pong\"}".to_string(),
        _ => error_message("mensagem não reconhecida"),
    }
}

fn error_message(message: &str) -> String {
    serde_json::json!({"type": "error", "message": message}).to_string()
}

/// Sends one text message; false when the socket is gone or too slow to take it.
async fn send_text(ws: &mut WebSocketStream<Stream>, text: String) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => {
            metrics::MESSAGES.with_label_values(&["out"]).inc();
            true
        }
        Ok(Err(e)) => {
            debug!(error = %e, "painel: send failed");
            false
        }
        Err(_) => {
            metrics::CLOSES.with_label_values(&["send_timeout"]).inc();
            false
        }
    }
}

/// The close code for a read error, when the peer is still there to be told.
fn close_for(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((code::TOO_BIG, "too_big")),
        WsError::Utf8(_) => Some((code::INVALID_DATA, "invalid_utf8")),
        WsError::Protocol(_) => Some((code::PROTOCOL, "protocol")),
        _ => None,
    }
}

/// Sends a close frame and waits briefly for the client's reply, so the close is clean.
async fn close(ws: &mut WebSocketStream<Stream>, close_code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(close_code),
        reason: reason.to_string().into(),
    };
    let wait = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_origins_pass_and_others_do_not() {
        let allowed = vec!["https://painel.camara.leg.br".to_string()];
        assert!(origin_allowed(
            "https://sapl.camara.leg.br",
            "sapl.camara.leg.br",
            &[]
        ));
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            "127.0.0.1:8080",
            &[]
        ));
        assert!(origin_allowed(
            "https://Painel.Camara.leg.br/",
            "sapl.x",
            &allowed
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            "sapl.camara.leg.br",
            &allowed
        ));
        assert!(!origin_allowed("null", "sapl.camara.leg.br", &[]));
        assert!(!origin_allowed(
            "https://sapl.camara.leg.br.evil.example",
            "sapl.camara.leg.br",
            &[]
        ));
    }

    #[test]
    fn ping_is_answered_and_anything_else_is_an_error() {
        assert_eq!(answer("{\"type\":\"ping\"}"), "{\"type\": \"pong\"}");
        let err: serde_json::Value = serde_json::from_str(&answer("oi")).unwrap();
        assert_eq!(err["type"], "error");
    }
}
