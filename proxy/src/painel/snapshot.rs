//! The first message a new socket gets: the sessão's full payload, at once.
//!
//! The bridge keeps the last message of every group in Redis A, so a socket opening on any
//! edge instance reads it from there. When there is none (nothing published since the
//! snapshot TTL), the edge asks Django for `dados_path` with the client's own cookies and
//! wraps the answer as `{"type": "data", "payload": …}`. The request goes to Gunicorn
//! directly, over the upstream address of the configuration.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::UpstreamAddress;

/// Largest dados answer the edge reads; SAPL's is a few KiB.
const MAX_ANSWER: usize = 4 << 20;

/// Where a snapshot came from, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Redis,
    Django,
    None,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Django => "django",
            Source::None => "none",
        }
    }
}

/// Why Django's answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to Gunicorn: {0}")]
    Io(#[from] std::io::Error),
    #[error("Gunicorn took longer than {0:?}")]
    Timeout(Duration),
    #[error("unreadable answer from Gunicorn")]
    BadAnswer,
    #[error("Gunicorn answered {0}")]
    Status(u16),
    #[error("the answer is not JSON")]
    NotJson,
}

/// A GET to Django as a given viewer.
#[derive(Debug, Clone)]
pub struct DadosRequest<'a> {
    pub upstream: &'a UpstreamAddress,
    pub path: &'a str,
    pub host: &'a str,
    pub cookie: &'a str,
    pub timeout: Duration,
}

/// `dados_path` with the sessão id filled in.
pub fn dados_path(template: &str, sessao_id: u64) -> String {
    template.replace("{sessao_id}", &sessao_id.to_string())
}

/// Fetches the dados JSON (the body only), checking that it is a 200 with a JSON document.
pub async fn fetch_dados(req: &DadosRequest<'_>) -> Result<String, FetchError> {
    tokio::time::timeout(req.timeout, fetch_inner(req))
        .await
        .map_err(|_| FetchError::Timeout(req.timeout))?
}

async fn fetch_inner(req: &DadosRequest<'_>) -> Result<String, FetchError> {
    // HTTP/1.0 with `Connection: close`: the body ends where the stream ends, so there is
    // no chunked framing to undo.
    let mut head = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\
         X-Requested-With: XMLHttpRequest\r\nConnection: close\r\n",
        req.path,
        clean_header(req.host)
    );
    if !req.cookie.is_empty() {
        head.push_str(&format!("Cookie: {}\r\n", clean_header(req.cookie)));
    }
    head.push_str("\r\n");

    let raw = match req.upstream {
        UpstreamAddress::Unix(path) => exchange(UnixStream::connect(path).await?, &head).await?,
        UpstreamAddress::Tcp(addr) => exchange(TcpStream::connect(addr).await?, &head).await?,
    };

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let body_start = match response.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(FetchError::BadAnswer),
    };
    let status = response.code.unwrap_or(0);
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let body = std::str::from_utf8(&raw[body_start..]).map_err(|_| FetchError::NotJson)?;
    serde_json::from_str::<serde_json::Value>(body).map_err(|_| FetchError::NotJson)?;
    Ok(body.trim().to_string())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
) -> Result<Vec<u8>, FetchError> {
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    limited.read_to_end(&mut raw).await?;
    if raw.len() > MAX_ANSWER {
        return Err(FetchError::BadAnswer);
    }
    Ok(raw)
}

/// Header values from the client are re-sent; CR and LF would split them into new headers.
fn clean_header(value: &str) -> String {
    value.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dados_path_fills_the_sessao() {
        assert_eq!(
            dados_path("/painel/{sessao_id}/dados", 42),
            "/painel/42/dados"
        );
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        assert_eq!(clean_header("a=b\r\nX-Evil: 1"), "a=bX-Evil: 1");
    }

    #[tokio::test]
    async fn a_json_answer_is_returned_and_an_error_status_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"num_presentes\": 8}",
                "HTTP/1.1 302 Found\r\nLocation: /login/\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let upstream = UpstreamAddress::Tcp(addr);
        let req = DadosRequest {
            upstream: &upstream,
            path: "/painel/1/dados",
            host: "camara.test",
            cookie: "sessionid=abc",
            timeout: Duration::from_secs(5),
        };
        assert_eq!(fetch_dados(&req).await.unwrap(), "{\"num_presentes\": 8}");
        assert!(matches!(
            fetch_dados(&req).await,
            Err(FetchError::Status(302))
        ));
    }
}
