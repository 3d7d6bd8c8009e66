//! The edge's request pipeline: Pingora's [`ProxyHttp`] hooks wired to the route table.
//!
//! For each request: give it an id, refuse ambiguous framing, normalize the path, pick the
//! route, then either answer locally (files, CORS preflight, refusals) or forward to
//! Gunicorn with nginx's header rules ([`crate::forwarding`]). Bodies are buffered before
//! Gunicorn is contacted ([`crate::body`]). One access-log line and the metrics are written
//! in [`ProxyHttp::logging`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use tracing::{debug, info, warn};

use crate::body;
use crate::config::{Action, Config, Route, UpstreamAddress};
use crate::files;
use crate::forwarding;
use crate::metrics;
use crate::protection::{self, realip, Protection};
use crate::routes::{self, RouteTable};

/// One generation of the configuration; SIGHUP swaps in a new one.
pub struct Runtime {
    pub config: Config,
    pub routes: RouteTable,
    pub protection: Protection,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let routes = RouteTable::new(&config);
        let protection = Protection::new(&config.protection, None);
        Runtime {
            config,
            routes,
            protection,
        }
    }

    /// The generation after `previous`: rate zones and the blocklist whose settings did not
    /// change keep their state.
    pub fn renew(config: Config, previous: &Runtime) -> Runtime {
        let routes = RouteTable::new(&config);
        let protection = Protection::new(&config.protection, Some(&previous.protection));
        Runtime {
            config,
            routes,
            protection,
        }
    }
}

/// The live configuration, shared by every listener and the reloader.
pub type Live = Arc<ArcSwap<Runtime>>;

/// The proxy behind one listener.
pub struct EdgeProxy {
    pub live: Live,
    /// The listener's scheme, sent upstream as `X-Forwarded-Proto`.
    pub proto: String,
    /// The gzip level the compression module starts with (per request it is adjusted).
    pub gzip_level: u32,
    /// The panel's WebSockets and poll results, when `[painel]` is configured.
    pub painel: Option<Arc<crate::painel::Painel>>,
}

/// What the hooks of one request share.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    request_id: String,
    route: Option<Arc<Route>>,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_time: Option<Duration>,
    /// Status of an answer the edge wrote itself (files, refusals, buffered exchanges).
    local_status: Option<u16>,
    /// Why the edge refused the request, for the access log.
    refusal: Option<&'static str>,
    /// The real client address ([`realip`]); `None` before it is known.
    client: Option<IpAddr>,
    /// The rate zone the request was counted in, for the access log.
    zone: Option<Arc<str>>,
}

impl EdgeProxy {
    fn route_name(ctx: &RequestCtx) -> &str {
        ctx.route.as_ref().map_or("none", |r| r.name.as_str())
    }

    /// The shared poll-to-push result for a `painel_dados` route, when the viewer may see it.
    async fn painel_dados(&self, session: &Session, route: &Route, path: &str) -> Option<String> {
        let painel = self.painel.as_ref()?;
        let sessao_id = crate::painel::sessao_id(route, path)?;
        let header = |name| {
            session
                .req_header()
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let (host, cookie) = (header(http::header::HOST), header(http::header::COOKIE));
        crate::painel::poll::answer_dados(painel, sessao_id, host, cookie).await
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            runtime: self.live.load_full(),
            request_id: String::new(),
            route: None,
            started: Instant::now(),
            upstream_started: None,
            upstream_time: None,
            local_status: None,
            refusal: None,
            client: None,
            zone: None,
        }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(ResponseCompressionBuilder::enable(self.gzip_level));
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.runtime = self.live.load_full();
        ctx.request_id = forwarding::request_id(session.req_header().headers.get("x-request-id"));
        ctx.client = client_ip(session).map(|peer| {
            let forwarded = session.req_header().headers.get_all("x-forwarded-for");
            realip::client_ip(
                peer,
                forwarded.iter().map(|v| v.as_bytes()),
                &ctx.runtime.config.forwarding,
            )
        });

        if has_conflicting_framing(session) {
            return refuse(
                session,
                ctx,
                StatusCode::BAD_REQUEST,
                "content-length with chunked",
            )
            .await;
        }

        // RFC 9112 3.2: origin-form ("/path") or absolute-form; `http` would read an
        // authority-form "wp-login.php" as the path "/" and route it past every rule.
        let target = session.req_header().raw_path();
        let absolute = session.req_header().uri.scheme().is_some();
        if !absolute && !target.starts_with(b"/") {
            return refuse(session, ctx, StatusCode::BAD_REQUEST, "bad request target").await;
        }
        if target.len() > MAX_HEADER_LINE {
            return refuse(session, ctx, StatusCode::URI_TOO_LONG, "uri too long").await;
        }

        if headers_too_large(session) {
            return refuse(
                session,
                ctx,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header too large",
            )
            .await;
        }

        let path = match routes::normalize(session.req_header().uri.path()) {
            Ok(path) => path,
            Err(_) => return refuse(session, ctx, StatusCode::BAD_REQUEST, "bad path").await,
        };
        if ctx.runtime.protection.is_probe(&path) {
            return protection::drop_probe(session, ctx);
        }

        let runtime = ctx.runtime.clone();
        let Some(route) = runtime.routes.find(&path).cloned() else {
            return refuse(session, ctx, StatusCode::NOT_FOUND, "no route").await;
        };
        ctx.route = Some(route.clone());

        let limit = route.max_body.unwrap_or(runtime.config.body.max_size);
        if declared_length(session.req_header()).is_some_and(|len| len > limit) {
            return refuse(
                session,
                ctx,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            )
            .await;
        }

        if route.cors && session.req_header().method == http::Method::OPTIONS {
            let mut resp = forwarding::preflight(&runtime.config.cors)?;
            resp.insert_header("X-Request-ID", &ctx.request_id)?;
            session.write_response_header(Box::new(resp), true).await?;
            ctx.local_status = Some(204);
            return Ok(true);
        }

        if protection::enforce(session, ctx, &runtime, &route, &path).await? {
            return Ok(true);
        }

        match &route.action {
            Action::Files { root } => {
                let Some(relative) = route_remainder(&route, &path) else {
                    return refuse(session, ctx, StatusCode::NOT_FOUND, "no file").await;
                };
                let content_type = mime_guess::from_path(relative).first_or_octet_stream();
                set_compression(session, &runtime.config, content_type.essence_str());
                let status =
                    files::serve(session, root, relative, route.cache_control.as_deref()).await?;
                ctx.local_status = Some(status.as_u16());
                Ok(true)
            }
            Action::WebSocket => {
                let Some(painel) = self.painel.as_ref() else {
                    return refuse(session, ctx, StatusCode::NOT_FOUND, "no [painel]").await;
                };
                if !session.is_upgrade_req() {
                    return refuse(session, ctx, StatusCode::BAD_REQUEST, "not a websocket").await;
                }
                match crate::painel::socket::upgrade(painel, session, ctx.client, &ctx.request_id)
                    .await?
                {
                    Ok(()) => {
                        ctx.local_status = Some(101);
                        Ok(true)
                    }
                    Err((status, reason)) => refuse(session, ctx, status, reason).await,
                }
            }
            Action::PainelDados
                if self.painel.is_some() && session.req_header().method == http::Method::GET =>
            {
                if let Some(json) = self.painel_dados(session, &route, &path).await {
                    let mut resp = ResponseHeader::build(StatusCode::OK, Some(4))?;
                    resp.insert_header("Content-Type", "application/json")?;
                    resp.insert_header("Content-Length", json.len().to_string())?;
                    resp.insert_header("X-Request-ID", &ctx.request_id)?;
                    session.write_response_header(Box::new(resp), false).await?;
                    session
                        .write_response_body(Some(Bytes::from(json)), true)
                        .await?;
                    ctx.local_status = Some(200);
                    return Ok(true);
                }
                Ok(false)
            }
            Action::Pdf(pdf) => crate::jobs::handle(session, ctx, &route, pdf, &path).await,
            Action::Upstream | Action::PainelDados => {
                if body::should_buffer(session) {
                    let status =
                        body::buffered_exchange(session, &runtime, &route, self, ctx).await?;
                    ctx.local_status = Some(status);
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(Instant::now());
        upstream_peer(&ctx.runtime.config, ctx.route.as_deref())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        forwarding::upstream_request(
            upstream_request,
            &ctx.runtime.config,
            client_ip(session),
            &self.proto,
            &ctx.request_id,
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_time = ctx.upstream_started.map(|t| t.elapsed());
        // As nginx does (`proxy_hide_header` by default): the client learns which proxy
        // answered, not Gunicorn's name and version.
        upstream_response.insert_header("Server", "sapl-edge")?;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        decorate_response(session, upstream_response, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = error_status(e);
        if code >= 500 {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[fault_kind(e)])
                .inc();
        }
        if code > 0 {
            let body = error_body(&ctx.runtime.config, code);
            if let Err(write_error) = write_error_answer(session, code, body, ctx).await {
                debug!(error = %write_error, "could not send the error answer");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let route = Self::route_name(ctx).to_string();
        let elapsed = ctx.started.elapsed();
        let bytes = session.body_bytes_sent();

        metrics::REQUESTS
            .with_label_values(&[route.as_str(), metrics::status_class(status)])
            .inc();
        metrics::REQUEST_SECONDS
            .with_label_values(&[route.as_str()])
            .observe(elapsed.as_secs_f64());
        metrics::RESPONSE_BYTES
            .with_label_values(&[route.as_str()])
            .inc_by(bytes as u64);

        let req = session.req_header();
        info!(
            target: "access",
            request_id = %ctx.request_id,
            client = %ctx.client.map(|ip| ip.to_string()).unwrap_or_default(),
            peer = %client_ip(session).map(|ip| ip.to_string()).unwrap_or_default(),
            method = %req.method,
            uri = %req.uri,
            route = %route,
            status,
            bytes,
            upstream_ms = ctx.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            refusal = ctx.refusal,
            zone = ctx.zone.as_deref(),
            error = e.map(|e| e.to_string()),
        );
    }
}

/// The TCP peer of the request (the client, or the hop in front of the edge).
pub fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Adds the request id, CORS headers and the compression decision to an answer.
pub fn decorate_response(
    session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    resp.insert_header("X-Request-ID", &ctx.request_id)?;
    if ctx.route.as_ref().is_some_and(|r| r.cors) {
        forwarding::add_cors(resp, &ctx.runtime.config.cors)?;
    }
    let content_type = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if resp.status == StatusCode::PARTIAL_CONTENT {
        set_compression(session, &ctx.runtime.config, "");
    } else {
        set_compression(session, &ctx.runtime.config, &content_type);
    }
    Ok(())
}

/// Turns gzip on for the types in `gzip.types`, off for everything else.
fn set_compression(session: &mut Session, config: &Config, content_type: &str) {
    let level = if config.gzip.compresses(content_type) {
        config.gzip.level
    } else {
        0
    };
    if let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        module.adjust_level(level);
    }
}

/// The part of `path` after a prefix route's prefix.
fn route_remainder<'a>(route: &Route, path: &'a str) -> Option<&'a str> {
    match &route.matcher {
        crate::config::Matcher::Prefix(prefix) => path.strip_prefix(prefix.as_str()),
        crate::config::Matcher::Regex(_) => None,
    }
}

/// A request with both `Content-Length` and `Transfer-Encoding` could be read two ways
/// (request smuggling). Pingora drops the length and carries on; like nginx, the edge
/// refuses it outright. Pingora has already removed the header, so the raw bytes tell.
fn has_conflicting_framing(session: &Session) -> bool {
    if !session
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return false;
    }
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// nginx's `large_client_header_buffers 4 8k`: no header line over 8 KiB, no header block
/// over 32 KiB. Pingora itself only stops at 1 MiB, far more than any browser sends.
const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADER_BLOCK: usize = 32 * 1024;

fn headers_too_large(session: &Session) -> bool {
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.len() > MAX_HEADER_BLOCK
        || raw
            .split(|b| *b == b'\n')
            .any(|l| l.len() > MAX_HEADER_LINE)
}

/// The `Content-Length` the client declared, if any.
fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Answers a request the edge will not forward, and closes the connection.
async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: StatusCode,
    reason: &'static str,
) -> Result<bool> {
    ctx.refusal = Some(reason);
    ctx.local_status = Some(status.as_u16());
    warn!(request_id = %ctx.request_id, status = status.as_u16(), reason, "request refused");
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("Content-Length", "0")?;
    resp.insert_header("Connection", "close")?;
    resp.insert_header("X-Request-ID", &ctx.request_id)?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

/// The peer for Gunicorn, with the route's timeouts over the upstream's.
pub fn upstream_peer(config: &Config, route: Option<&Route>) -> Result<Box<HttpPeer>> {
    let upstream = &config.upstream;
    let mut peer = match &upstream.address {
        UpstreamAddress::Unix(path) => {
            HttpPeer::new_uds(&path.to_string_lossy(), false, String::new())?
        }
        UpstreamAddress::Tcp(addr) => HttpPeer::new(addr.as_str(), false, String::new()),
    };
    peer.options.connection_timeout = Some(
        route
            .and_then(|r| r.connect_timeout)
            .unwrap_or(upstream.connect_timeout),
    );
    peer.options.read_timeout = Some(
        route
            .and_then(|r| r.read_timeout)
            .unwrap_or(upstream.read_timeout),
    );
    peer.options.write_timeout = Some(upstream.write_timeout);
    Ok(Box::new(peer))
}

/// The status an upstream fault is answered with: 504 for time-outs, 502 when Gunicorn
/// cannot be reached or answers garbage, the code itself for refusals carried as errors.
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &pingora::ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => 502,
            pingora::ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            _ => 500,
        },
    }
}

pub fn fault_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError => "connect",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        _ => "other",
    }
}

/// The configured error page for 5xx answers, when it can be read.
fn error_body(config: &Config, code: u16) -> Option<Bytes> {
    if code < 500 {
        return None;
    }
    let page = config.upstream.error_page.as_ref()?;
    std::fs::read(page).ok().map(Bytes::from)
}

/// Writes an error answer, with the error page as body when there is one.
pub async fn write_error_answer(
    session: &mut Session,
    code: u16,
    body: Option<Bytes>,
    ctx: &RequestCtx,
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header("X-Request-ID", &ctx.request_id)?;
    resp.insert_header("Connection", "close")?;
    match &body {
        Some(b) => {
            resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
            resp.insert_header("Content-Length", b.len().to_string())?;
        }
        None => resp.insert_header("Content-Length", "0")?,
    }
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(resp), body.is_none())
        .await?;
    if let Some(b) = body {
        session.write_response_body(Some(b), true).await?;
    }
    Ok(())
}

impl RequestCtx {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Records the status of an answer the edge wrote itself, for the access log.
    pub fn set_local_status(&mut self, status: u16) {
        self.local_status = Some(status);
    }

    /// The real client address; unspecified when the peer has no IP address (unix socket).
    pub fn client(&self) -> IpAddr {
        self.client
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// Records a refusal the edge answered (or dropped) itself, for the access log.
    pub fn note_refusal(&mut self, status: u16, reason: &'static str) {
        self.local_status = Some(status);
        self.refusal = Some(reason);
    }

    pub fn set_zone(&mut self, zone: Option<Arc<str>>) {
        self.zone = zone;
    }

    pub fn mark_upstream_start(&mut self) {
        self.upstream_started = Some(Instant::now());
    }

    pub fn mark_upstream_answer(&mut self) {
        self.upstream_time = self.upstream_started.map(|t| t.elapsed());
    }
}
