//! What the edge tells Gunicorn about a request, and what it adds to the answer.
//!
//! Owns the request id, `X-Forwarded-For`, `X-Forwarded-Proto`, removing hop-by-hop headers
//! (RFC 9110 §7.6.1) and the `/api/` CORS headers. `Host` and the request target are left
//! exactly as the client sent them, and `Location` is never rewritten (nginx's
//! `proxy_redirect off`).

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use rand::Rng;

use crate::config::{Config, Cors};

/// Headers that describe one connection, never the request (RFC 9110 §7.6.1, plus the
/// historic `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
];

/// The client's `X-Request-ID` when it is a sane token, else a new random one.
///
/// Sane means 1–128 visible ASCII characters; anything else could forge log lines.
pub fn request_id(client_value: Option<&HeaderValue>) -> String {
    if let Some(v) = client_value.and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rewrites the request Gunicorn will see.
///
/// `peer` is the address of the TCP peer, `listener_proto` the scheme of the listener the
/// request came in on. A peer inside `forwarding.trusted_hops` may state the scheme itself.
pub fn upstream_request(
    req: &mut RequestHeader,
    config: &Config,
    peer: Option<IpAddr>,
    listener_proto: &str,
    request_id: &str,
) -> Result<()> {
    let is_upgrade = req
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    remove_hop_by_hop(req, is_upgrade);

    // nginx's `underscores_in_headers off`: `X_Forwarded_Proto` would reach Django as
    // HTTP_X_FORWARDED_PROTO beside the real one (WSGI maps `_` and `-` alike).
    let underscored: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        req.remove_header(&name);
    }

    let trusted = peer.is_some_and(|ip| config.forwarding.is_trusted(ip));

    if let Some(ip) = peer {
        // nginx's $proxy_add_x_forwarded_for: the client's list, then the peer.
        let forwarded = match req.headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(list)) if !list.trim().is_empty() => format!("{list}, {ip}"),
            _ => ip.to_string(),
        };
        req.insert_header("X-Forwarded-For", forwarded)?;
    }

    let client_proto_believed = trusted && req.headers.contains_key("x-forwarded-proto");
    if !client_proto_believed {
        req.insert_header("X-Forwarded-Proto", listener_proto)?;
    }

    req.insert_header("X-Request-ID", request_id)?;
    Ok(())
}

/// Removes the hop-by-hop headers and every header the client named in `Connection`.
/// A WebSocket upgrade keeps `Connection: upgrade` and `Upgrade`, which it needs.
fn remove_hop_by_hop(req: &mut RequestHeader, is_upgrade: bool) {
    let named: Vec<HeaderName> = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(is_upgrade && name == http::header::UPGRADE))
        .collect();
    for name in named {
        req.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(name);
    }
    if is_upgrade {
        let _ = req.insert_header(CONNECTION, "upgrade");
    } else {
        req.remove_header(&http::header::UPGRADE);
    }
}

/// Adds the `/api/` CORS headers to an answer.
pub fn add_cors(resp: &mut ResponseHeader, cors: &Cors) -> Result<()> {
    resp.insert_header("Access-Control-Allow-Origin", &cors.allow_origin)?;
    if cors.allow_credentials {
        resp.insert_header("Access-Control-Allow-Credentials", "true")?;
    }
    resp.insert_header("Access-Control-Allow-Methods", &cors.allow_methods)?;
    resp.insert_header("Access-Control-Allow-Headers", &cors.allow_headers)?;
    Ok(())
}

/// The answer to a CORS preflight (`OPTIONS` on a CORS route), given by the edge itself.
pub fn preflight(cors: &Cors) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(http::StatusCode::NO_CONTENT, Some(8))?;
    add_cors(&mut resp, cors)?;
    resp.insert_header("Access-Control-Max-Age", cors.max_age.to_string())?;
    resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    resp.insert_header("Content-Length", "0")?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(trusted: &str) -> Config {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream]\naddress = \"127.0.0.1:2\"\n\
             [forwarding]\ntrusted_hops = [\"{trusted}\"]\n\
             [[route]]\nname = \"d\"\nprefix = \"/\"\naction = \"upstream\"\n"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn header(req: &RequestHeader, name: &str) -> Option<String> {
        req.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn client_ip_is_appended_and_proto_comes_from_the_listener() {
        let mut req = RequestHeader::build("GET", b"/materia/1", None).unwrap();
        req.insert_header("X-Forwarded-For", "203.0.113.9").unwrap();
        req.insert_header("X-Forwarded-Proto", "https").unwrap();
        let peer = "198.51.100.7".parse().ok();
        upstream_request(&mut req, &config("10.0.0.0/8"), peer, "http", "abc").unwrap();

        assert_eq!(
            header(&req, "x-forwarded-for").as_deref(),
            Some("203.0.113.9, 198.51.100.7")
        );
        assert_eq!(header(&req, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(header(&req, "x-request-id").as_deref(), Some("abc"));
    }

    #[test]
    fn a_trusted_hop_may_state_the_scheme() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Forwarded-Proto", "https").unwrap();
        let peer = "10.2.3.4".parse().ok();
        upstream_request(&mut req, &config("10.0.0.0/8"), peer, "http", "id").unwrap();
        assert_eq!(header(&req, "x-forwarded-proto").as_deref(), Some("https"));
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Connection", "close, X-Debug").unwrap();
        req.insert_header("X-Debug", "1").unwrap();
        req.insert_header("Keep-Alive", "timeout=5").unwrap();
        req.insert_header("TE", "trailers").unwrap();
        req.insert_header("Cookie", "sessionid=x").unwrap();
        upstream_request(&mut req, &config("127.0.0.1"), None, "http", "id").unwrap();
        for gone in ["connection", "x-debug", "keep-alive", "te"] {
            assert_eq!(header(&req, gone), None, "{gone} reached upstream");
        }
        assert_eq!(header(&req, "cookie").as_deref(), Some("sessionid=x"));
    }

    #[test]
    fn request_ids_are_reused_only_when_sane() {
        let good = HeaderValue::from_static("req-123");
        assert_eq!(request_id(Some(&good)), "req-123");
        let bad = HeaderValue::from_static("two words");
        let fresh = request_id(Some(&bad));
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, request_id(None));
    }
}
