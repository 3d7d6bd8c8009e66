//! Static and media files: what nginx's `alias` locations did for `/static/` and `/media/`.
//!
//! Owns resolving a request path to a file under a route's root (never outside it, even
//! through a symlink), validators (`ETag`, `Last-Modified`, 304), single byte ranges (206,
//! 416; RFC 9110 §14) and streaming the file. Compression is left to the gzip module the
//! proxy installs; listing a directory is never done.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::io::{Read, Seek};

/// Size of each chunk read from disk and written to the client.
const CHUNK: usize = 64 * 1024;

/// What a request for a file resolves to, before anything is written.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(PathBuf),
    NotFound,
}

/// Resolves `relative` (the decoded, normalized path after the route prefix) under `root`.
///
/// Directories and anything whose real path leaves the real root (a symlink pointing out)
/// are `NotFound`, so a request can neither list a folder nor read outside it.
pub fn lookup(root: &Path, relative: &str) -> Lookup {
    let relative = relative.trim_start_matches('/');
    if relative.is_empty() || relative.ends_with('/') {
        return Lookup::NotFound;
    }
    let (Ok(real_root), Ok(real_path)) = (
        std::fs::canonicalize(root),
        std::fs::canonicalize(root.join(relative)),
    ) else {
        return Lookup::NotFound;
    };
    if !real_path.starts_with(&real_root) || !real_path.is_file() {
        return Lookup::NotFound;
    }
    Lookup::Found(real_path)
}

/// The validators of a file, as nginx computes them: `"<mtime hex>-<size hex>"`.
pub struct Validators {
    pub etag: String,
    pub last_modified: SystemTime,
}

impl Validators {
    pub fn of(meta: &Metadata) -> Validators {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Validators {
            etag: format!("\"{secs:x}-{:x}\"", meta.len()),
            // HTTP dates have one-second resolution; compare at that resolution.
            last_modified: UNIX_EPOCH + std::time::Duration::from_secs(secs),
        }
    }

    /// Whether the client's copy is current (RFC 9110 §13.1.2 and §13.1.3):
    /// `If-None-Match` wins over `If-Modified-Since` when both are sent.
    pub fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        if let Some(tags) = if_none_match {
            let ours = self.etag.trim_start_matches("W/");
            return tags
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
        }
        match if_modified_since.and_then(|d| httpdate::parse_http_date(d).ok()) {
            Some(since) => self.last_modified <= since,
            None => false,
        }
    }
}

/// The answer to a `Range` header for a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: send the whole file with 200.
    Whole,
    /// One satisfiable range, first and last byte inclusive: 206.
    Partial(u64, u64),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Applies RFC 9110 §14 to one `Range` value.
///
/// A header that does not parse, or asks for several ranges, is ignored (the whole file is a
/// valid answer to both). A suffix longer than the file means the whole file; a suffix of
/// zero or a start past the end cannot be satisfied.
pub fn answer_range(header: &str, size: u64) -> RangeAnswer {
    let parsed = match http_range_header::parse_range_header(header) {
        Ok(parsed) => parsed,
        Err(RangeUnsatisfiableError::ZeroSuffix) => return RangeAnswer::Unsatisfiable,
        Err(_) => return RangeAnswer::Whole,
    };
    let [range] = parsed.ranges.as_slice() else {
        return RangeAnswer::Whole;
    };
    let (first, last) = match (range.start, range.end) {
        (StartPosition::FromLast(n), _) => (size.saturating_sub(n), size.wrapping_sub(1)),
        (StartPosition::Index(start), EndPosition::LastByte) => (start, size.wrapping_sub(1)),
        (StartPosition::Index(start), EndPosition::Index(end)) => {
            (start, end.min(size.wrapping_sub(1)))
        }
    };
    if size == 0 || first >= size || first > last {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial(first, last)
}

/// Serves one file to the client; the response is complete when this returns.
///
/// `relative` is the normalized path after the route prefix. Returns the status written.
pub async fn serve(
    session: &mut Session,
    root: &Path,
    relative: &str,
    cache_control: Option<&str>,
) -> Result<StatusCode> {
    let method = session.req_header().method.clone();
    if method != Method::GET && method != Method::HEAD {
        let mut header = ResponseHeader::build(StatusCode::METHOD_NOT_ALLOWED, Some(2))?;
        header.insert_header("Allow", "GET, HEAD")?;
        header.insert_header("Content-Length", "0")?;
        session
            .write_response_header(Box::new(header), true)
            .await?;
        return Ok(StatusCode::METHOD_NOT_ALLOWED);
    }

    let Lookup::Found(path) = lookup(root, relative) else {
        return write_empty(session, StatusCode::NOT_FOUND).await;
    };
    // Plain blocking file calls, as nginx makes them with its default `aio off`: on a
    // page-cache hit each takes microseconds, while tokio::fs hands every call to its
    // blocking pool and back, and those thread switches cost more than the file itself
    // (a 30 KB CSS file under wrk went from 13,000 to 40,000 requests a second).
    // Limitation: a cold read from a slow media volume stalls the other connections of
    // that worker thread for its duration, as it stalls an nginx worker.
    let Ok(mut file) = std::fs::File::open(&path) else {
        return write_empty(session, StatusCode::NOT_FOUND).await;
    };
    let meta = file.metadata().map_err(|e| {
        pingora::Error::because(
            pingora::ErrorType::InternalError,
            "reading file metadata",
            e,
        )
    })?;
    let size = meta.len();
    let validators = Validators::of(&meta);

    let header_str = |name: &str| {
        session
            .req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let if_none_match = header_str("if-none-match");
    let if_modified_since = header_str("if-modified-since");
    let range = header_str("range");
    let if_range = header_str("if-range");

    let mut header = ResponseHeader::build(StatusCode::OK, Some(8))?;
    let content_type = mime_guess::from_path(&path).first_or_octet_stream();
    header.insert_header("Content-Type", content_type.essence_str())?;
    header.insert_header("ETag", &validators.etag)?;
    header.insert_header(
        "Last-Modified",
        httpdate::fmt_http_date(validators.last_modified),
    )?;
    header.insert_header("Accept-Ranges", "bytes")?;
    if let Some(cc) = cache_control {
        header.insert_header("Cache-Control", cc)?;
    }

    if validators.not_modified(if_none_match.as_deref(), if_modified_since.as_deref()) {
        header.set_status(StatusCode::NOT_MODIFIED)?;
        header.remove_header("Content-Type");
        session
            .write_response_header(Box::new(header), true)
            .await?;
        return Ok(StatusCode::NOT_MODIFIED);
    }

    // If-Range with a validator that no longer matches: the client's partial copy is stale.
    let range_applies = match &if_range {
        Some(v) => v == &validators.etag,
        None => true,
    };
    let answer = match range {
        Some(r) if range_applies => answer_range(&r, size),
        _ => RangeAnswer::Whole,
    };

    let (first, length) = match answer {
        RangeAnswer::Whole => {
            header.insert_header("Content-Length", size.to_string())?;
            (0, size)
        }
        RangeAnswer::Partial(first, last) => {
            header.set_status(StatusCode::PARTIAL_CONTENT)?;
            header.insert_header("Content-Range", format!("bytes {first}-{last}/{size}"))?;
            header.insert_header("Content-Length", (last - first + 1).to_string())?;
            (first, last - first + 1)
        }
        RangeAnswer::Unsatisfiable => {
            let mut header = ResponseHeader::build(StatusCode::RANGE_NOT_SATISFIABLE, Some(2))?;
            header.insert_header("Content-Range", format!("bytes */{size}"))?;
            header.insert_header("Content-Length", "0")?;
            session
                .write_response_header(Box::new(header), true)
                .await?;
            return Ok(StatusCode::RANGE_NOT_SATISFIABLE);
        }
    };
    let status = header.status;

    if method == Method::HEAD || length == 0 {
        session
            .write_response_header(Box::new(header), true)
            .await?;
        return Ok(status);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;

    if first > 0 {
        file.seek(std::io::SeekFrom::Start(first))
            .map_err(|e| pingora::Error::because(pingora::ErrorType::ReadError, "seek", e))?;
    }
    let mut remaining = length;
    while remaining > 0 {
        let mut buf = vec![0u8; CHUNK.min(remaining as usize)];
        let n = file
            .read(&mut buf)
            .map_err(|e| pingora::Error::because(pingora::ErrorType::ReadError, "reading", e))?;
        if n == 0 {
            // The file shrank while being sent; the client sees a short body and retries.
            return pingora::Error::e_explain(pingora::ErrorType::ReadError, "file truncated");
        }
        remaining -= n as u64;
        buf.truncate(n);
        session
            .write_response_body(Some(Bytes::from(buf)), remaining == 0)
            .await?;
    }
    Ok(status)
}

/// Writes a bodiless answer such as 404.
pub async fn write_empty(session: &mut Session, status: StatusCode) -> Result<StatusCode> {
    let mut header = ResponseHeader::build(status, Some(1))?;
    header.insert_header("Content-Length", "0")?;
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_past_the_end_is_clamped() {
        assert_eq!(
            answer_range("bytes=0-3145727", 1000),
            RangeAnswer::Partial(0, 999)
        );
    }

    #[test]
    fn range_starting_at_the_end_is_unsatisfiable() {
        assert_eq!(
            answer_range("bytes=1000-", 1000),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn suffix_ranges_follow_rfc_9110() {
        assert_eq!(answer_range("bytes=-4", 10), RangeAnswer::Partial(6, 9));
        assert_eq!(answer_range("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(answer_range("bytes=-20", 10), RangeAnswer::Partial(0, 9));
    }

    #[test]
    fn unparseable_and_multiple_ranges_mean_the_whole_file() {
        assert_eq!(answer_range("pages=1-2", 10), RangeAnswer::Whole);
        assert_eq!(answer_range("bytes=0-1,4-5", 10), RangeAnswer::Whole);
    }

    #[test]
    fn lookup_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        std::fs::create_dir_all(root.join("sapl")).unwrap();
        std::fs::write(root.join("ata sessão.pdf"), b"%PDF").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();

        assert_eq!(
            lookup(&root, "ata sessão.pdf"),
            Lookup::Found(std::fs::canonicalize(root.join("ata sessão.pdf")).unwrap())
        );
        assert_eq!(lookup(&root, "link"), Lookup::NotFound);
        assert_eq!(lookup(&root, "sapl"), Lookup::NotFound);
        assert_eq!(lookup(&root, "sapl/"), Lookup::NotFound);
        assert_eq!(lookup(&root, "missing.pdf"), Lookup::NotFound);
    }

    #[test]
    fn validators_answer_conditional_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.css");
        std::fs::write(&path, b"body{}").unwrap();
        let v = Validators::of(&std::fs::metadata(&path).unwrap());

        assert!(v.not_modified(Some(&v.etag), None));
        assert!(v.not_modified(Some(&format!("\"x\", W/{}", v.etag)), None));
        assert!(!v.not_modified(Some("\"other\""), None));
        let later = httpdate::fmt_http_date(v.last_modified + std::time::Duration::from_secs(60));
        let earlier = httpdate::fmt_http_date(v.last_modified - std::time::Duration::from_secs(60));
        assert!(v.not_modified(None, Some(&later)));
        assert!(!v.not_modified(None, Some(&earlier)));
        // An ETag that does not match wins over a date that would.
        assert!(!v.not_modified(Some("\"other\""), Some(&later)));
    }
}
