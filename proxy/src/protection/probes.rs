//! Scanner probes: requests for files a SAPL pod never serves (`.php`, `.env`, `.bak`…).
//!
//! Such requests come from vulnerability scanners walking address ranges. They get no
//! answer at all: the connection is closed without a status line, as nginx's `return 444`
//! does, so a scanner learns nothing and spends a connection per guess. Only the path's
//! ending is judged (the normalized path, so `%2Ephp` is caught too); the query string is
//! not part of it. Closing the connection is [`super`]'s job.

/// The endings nginx's rate-limiter configuration drops, in the order it lists them.
pub const DEFAULT_SUFFIXES: [&str; 15] = [
    ".php",
    ".asp",
    ".aspx",
    ".jsp",
    ".cgi",
    ".env",
    ".htaccess",
    ".htpasswd",
    ".bak",
    ".sql",
    ".sh",
    ".bash",
    ".py",
    ".rb",
    ".pl",
];

/// Whether a normalized path ends with one of the probe `suffixes` (lower case),
/// ignoring ASCII case: `/wp-login.PHP` is a probe, `/materia/1/phpinfo` is not.
pub fn is_probe(path: &str, suffixes: &[String]) -> bool {
    let path = path.as_bytes();
    suffixes.iter().any(|suffix| {
        let suffix = suffix.as_bytes();
        path.len() >= suffix.len() && path[path.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_SUFFIXES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_listed_ending_is_a_probe_in_any_case() {
        let suffixes = defaults();
        for path in [
            "/wp-login.php",
            "/admin/config.PHP",
            "/.env",
            "/app/.env",
            "/.htaccess",
            "/.htpasswd",
            "/backup.sql",
            "/site.bak",
            "/cgi-bin/test.cgi",
            "/default.aspx",
            "/index.asp",
            "/login.jsp",
            "/deploy.sh",
            "/x.bash",
            "/manage.py",
            "/config.rb",
            "/awstats.pl",
        ] {
            assert!(is_probe(path, &suffixes), "{path} should be dropped");
        }
    }

    #[test]
    fn sapl_paths_are_not_probes() {
        let suffixes = defaults();
        for path in [
            "/",
            "/materia/1/",
            "/materia/pesquisar-materia",
            "/relatorios/12/etiqueta-materia-legislativa",
            "/media/sapl/public/ata.pdf",
            "/static/js/app.js",
            "/static/css/sapl.css",
            "/phpinfo",
            "/environment/",
        ] {
            assert!(!is_probe(path, &suffixes), "{path} should pass");
        }
    }

    #[test]
    fn an_empty_list_drops_nothing() {
        assert!(!is_probe("/wp-login.php", &[]));
    }
}
