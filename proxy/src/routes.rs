//! Request paths and the route table: which route answers a request.
//!
//! A path is percent-decoded and its dot segments resolved *before* any route is matched,
//! so `/static/%2e%2e/x` and `/media/..%2f..%2fetc` are judged by what they really name.
//! A path that climbs above `/`, carries a NUL byte or is not UTF-8 is refused (400).
//! The request sent upstream keeps the client's original bytes, as nginx's `proxy_pass`
//! without a URI part does.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::config::{Config, Route};

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with `/`")]
    NotAbsolute,
    #[error("path is not UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path climbs above the root")]
    Escapes,
}

/// Decodes `%XX` escapes, resolves `.` and `..`, and merges repeated slashes.
///
/// `/media/ata%20sess%C3%A3o.pdf` becomes `/media/ata sessão.pdf`;
/// `/a/./b/../c` becomes `/a/c`; `/a/../../etc` is refused.
/// A trailing slash is kept, since Django's URLs distinguish it.
pub fn normalize(raw_path: &str) -> Result<String, PathError> {
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    if decoded.contains('\0') {
        return Err(PathError::Nul);
    }

    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::Escapes)?;
            }
            s => segments.push(s),
        }
    }

    let mut path = String::with_capacity(decoded.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    let ends_in_dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if path.is_empty() || ends_in_dir {
        path.push('/');
    }
    Ok(path)
}

/// The ordered route table of one configuration generation.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(config: &Config) -> RouteTable {
        RouteTable {
            routes: config.routes.iter().cloned().map(Arc::new).collect(),
        }
    }

    /// The first route whose prefix or regex matches the normalized path.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matcher.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(
            normalize("/media/ata%20sess%C3%A3o.pdf").unwrap(),
            "/media/ata sessão.pdf"
        );
    }

    #[test]
    fn dot_segments_resolve_inside_the_root() {
        assert_eq!(normalize("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(normalize("//static///css/").unwrap(), "/static/css/");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/materia/1/..").unwrap(), "/materia/");
    }

    #[test]
    fn encoded_traversal_is_refused() {
        assert_eq!(
            normalize("/static/%2e%2e/%2e%2e/etc/passwd"),
            Err(PathError::Escapes)
        );
        assert_eq!(
            normalize("/media/..%2f..%2fetc/passwd"),
            Err(PathError::Escapes)
        );
        assert_eq!(normalize("/.."), Err(PathError::Escapes));
    }

    #[test]
    fn nul_and_invalid_utf8_are_refused() {
        assert_eq!(normalize("/media/a%00.pdf"), Err(PathError::Nul));
        assert_eq!(normalize("/media/%ff"), Err(PathError::NotUtf8));
        assert_eq!(normalize("media"), Err(PathError::NotAbsolute));
    }
}
