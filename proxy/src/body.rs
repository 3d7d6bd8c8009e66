//! Request bodies are read completely before Gunicorn is contacted.
//!
//! SAPL runs three *sync* Gunicorn workers: a worker that receives a request header waits,
//! doing nothing else, until the whole body has arrived. A phone on a bad link uploading a
//! 20 MB PDF would hold a third of the chamber's capacity for minutes. nginx avoids that by
//! buffering; so does the edge: the body goes to memory up to `body.buffer_size` and
//! continues in an unlinked temporary file under `body.spool_dir` beyond it, up to the
//! route's limit (413 past it). Only then is Gunicorn connected, and the body is sent over
//! the local socket at memory speed.
//!
//! Pingora's proxy loop streams request bodies as they arrive and cannot replay one read
//! earlier, so this module runs the upstream exchange itself with Pingora's own HTTP client
//! ([`Connector`]), applying the same header rules as the proxy path.

use std::io::SeekFrom;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::Route;
use crate::forwarding;
use crate::metrics;
use crate::proxy::{self, EdgeProxy, RequestCtx, Runtime};

/// Upstream connections made by this module; kept apart from the proxy loop's own pool.
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// Chunk size for spooling to and replaying from disk.
const CHUNK: usize = 64 * 1024;

/// Whether the request carries a body that must be buffered first.
/// WebSocket upgrades stream both ways and are never buffered.
pub fn should_buffer(session: &mut Session) -> bool {
    let req = session.req_header();
    let is_upgrade = req.headers.contains_key(http::header::UPGRADE);
    !is_upgrade && !session.as_mut().is_body_empty()
}

/// A request body held by the edge.
enum Held {
    Memory(Bytes),
    Spooled { file: tokio::fs::File, len: u64 },
}

impl Held {
    fn len(&self) -> u64 {
        match self {
            Held::Memory(b) => b.len() as u64,
            Held::Spooled { len, .. } => *len,
        }
    }
}

enum ReadFault {
    TooLarge,
    Pingora(Box<Error>),
}

impl From<Box<Error>> for ReadFault {
    fn from(e: Box<Error>) -> Self {
        ReadFault::Pingora(e)
    }
}

impl From<std::io::Error> for ReadFault {
    fn from(e: std::io::Error) -> Self {
        ReadFault::Pingora(Error::because(ErrorType::InternalError, "spooling body", e))
    }
}

/// Reads the whole body: memory first, then an unlinked temporary file.
async fn read_body(
    session: &mut Session,
    memory_limit: u64,
    limit: u64,
    spool_dir: &std::path::Path,
) -> std::result::Result<Held, ReadFault> {
    let mut memory = BytesMut::new();
    let mut spool: Option<(tokio::fs::File, u64)> = None;

    // A read fault is the client's (a malformed chunk → 400, a stalled body → 408), never
    // the edge's 500.
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
    {
        let total = memory.len() as u64 + spool.as_ref().map_or(0, |s| s.1) + chunk.len() as u64;
        if total > limit {
            return Err(ReadFault::TooLarge);
        }
        match &mut spool {
            Some((file, len)) => {
                file.write_all(&chunk).await?;
                *len += chunk.len() as u64;
            }
            None if total > memory_limit => {
                let mut file = tokio::fs::File::from_std(tempfile::tempfile_in(spool_dir)?);
                file.write_all(&memory).await?;
                file.write_all(&chunk).await?;
                spool = Some((file, total));
                memory = BytesMut::new();
            }
            None => memory.extend_from_slice(&chunk),
        }
    }

    Ok(match spool {
        Some((mut file, len)) => {
            file.flush().await?;
            file.seek(SeekFrom::Start(0)).await?;
            Held::Spooled { file, len }
        }
        None => Held::Memory(memory.freeze()),
    })
}

/// Reads the body, then forwards the request to Gunicorn and relays its answer.
/// Returns the status the client got.
pub async fn buffered_exchange(
    session: &mut Session,
    runtime: &Runtime,
    route: &Route,
    edge: &EdgeProxy,
    ctx: &mut RequestCtx,
) -> Result<u16> {
    let config = &runtime.config;
    let limit = route.max_body.unwrap_or(config.body.max_size);

    // The client asked to be told before it sends the body; the edge takes the body
    // itself, so it answers now and Gunicorn never sees the expectation.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        let resp = ResponseHeader::build(StatusCode::CONTINUE, Some(0))?;
        session.write_response_header(Box::new(resp), false).await?;
    }

    let mut held = match read_body(
        session,
        config.body.buffer_size,
        limit,
        &config.body.spool_dir,
    )
    .await
    {
        Ok(held) => held,
        Err(ReadFault::TooLarge) => {
            proxy::write_error_answer(session, 413, None, ctx).await?;
            return Ok(413);
        }
        Err(ReadFault::Pingora(e)) => return Err(e),
    };

    let mut req = session.req_header().clone();
    forwarding::upstream_request(
        &mut req,
        config,
        proxy::client_ip(session),
        &edge.proto,
        ctx.request_id(),
    )?;
    req.remove_header(&http::header::EXPECT);
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.insert_header(http::header::CONTENT_LENGTH, held.len().to_string())?;

    let peer = proxy::upstream_peer(config, Some(route))?;
    ctx.mark_upstream_start();
    let mut upstream = match CONNECTOR.get_http_session(&*peer).await {
        Ok((upstream, _reused)) => upstream,
        Err(e) => return answer_fault(session, &e, runtime, ctx).await,
    };
    upstream.set_read_timeout(peer.options.read_timeout);
    upstream.set_write_timeout(peer.options.write_timeout);

    let sent: Result<()> = async {
        upstream.write_request_header(Box::new(req)).await?;
        match &mut held {
            Held::Memory(bytes) => upstream.write_request_body(bytes.clone(), true).await?,
            Held::Spooled { file, len } => {
                let mut left = *len;
                let mut buf = vec![0u8; CHUNK];
                while left > 0 {
                    let n = file.read(&mut buf).await.map_err(|e| {
                        Error::because(ErrorType::InternalError, "replaying spooled body", e)
                    })?;
                    if n == 0 {
                        return Error::e_explain(ErrorType::InternalError, "spooled body shrank");
                    }
                    left -= n as u64;
                    upstream
                        .write_request_body(Bytes::copy_from_slice(&buf[..n]), left == 0)
                        .await?;
                }
            }
        }
        upstream.finish_request_body().await?;
        // Gunicorn may send interim answers; the client already had its 100 Continue.
        loop {
            upstream.read_response_header().await?;
            let informational = upstream
                .response_header()
                .is_some_and(|h| h.status.is_informational());
            if !informational {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = sent {
        return answer_fault(session, &e, runtime, ctx).await;
    }
    ctx.mark_upstream_answer();

    let Some(header) = upstream.response_header() else {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header");
    };
    let mut resp = header.clone();
    let status = resp.status.as_u16();
    proxy::decorate_response(session, &mut resp, ctx)?;
    let done = upstream.response_done();
    session.write_response_header(Box::new(resp), done).await?;
    if !done {
        while let Some(chunk) = upstream.read_response_body().await? {
            session.write_response_body(Some(chunk), false).await?;
        }
        session.write_response_body(None, true).await?;
    }

    // Sync Gunicorn workers close after each answer; a keep-alive upstream is reused.
    if upstream.response_done() {
        CONNECTOR.release_http_session(upstream, &*peer, None).await;
    }
    Ok(status)
}

/// Answers a fault reaching Gunicorn the way the proxy path does (502, 504, error page).
async fn answer_fault(
    session: &mut Session,
    e: &Error,
    runtime: &Runtime,
    ctx: &mut RequestCtx,
) -> Result<u16> {
    let code = match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
        _ => 502,
    };
    metrics::UPSTREAM_ERRORS
        .with_label_values(&[proxy::fault_kind(e)])
        .inc();
    let body = runtime
        .config
        .upstream
        .error_page
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(Bytes::from);
    proxy::write_error_answer(session, code, body, ctx).await?;
    Ok(code)
}
