//! Bot rules read from files ops maintain: User-Agent patterns and blocked networks.
//!
//! `user_agents_file` holds one regular expression per line, matched case-insensitively
//! anywhere in the `User-Agent` header (`GPTBot`, `Chrome/98\.0\.4758`). `networks_file`
//! holds one address or CIDR network per line (a cloud provider's ranges, for instance).
//! In both, blank lines and `#` comments are ignored. A request that matches either is
//! refused with 429 by [`super`]. The files are read when the configuration is loaded or
//! reloaded (SIGHUP); a bad line stops the load with the file's name and line number.
//!
//! Limitation: ASN rules (a MaxMind database) are not read; turn an ASN into its announced
//! prefixes in `networks_file` instead.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use regex::{RegexSet, RegexSetBuilder};

/// A line of a rules file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The meaningful lines of a rules file, with their line numbers.
fn rule_lines(path: &Path) -> Result<Vec<(usize, String)>, RulesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| (n, line.to_string()))
        .collect())
}

/// User-Agent patterns, compiled into one automaton.
#[derive(Debug, Clone)]
pub struct UserAgentRules {
    set: RegexSet,
}

impl UserAgentRules {
    /// Reads a patterns file.
    pub fn load(path: &Path) -> Result<UserAgentRules, RulesFileError> {
        let lines = rule_lines(path)?;
        // Each pattern is checked alone first, so an error names its line.
        for (line, pattern) in &lines {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(RulesFileError::Line {
                    path: path.to_path_buf(),
                    line: *line,
                    message: format!("invalid regular expression: {e}"),
                });
            }
        }
        UserAgentRules::new(lines.iter().map(|(_, p)| p.as_str())).map_err(|e| {
            RulesFileError::Line {
                path: path.to_path_buf(),
                line: 0,
                message: e.to_string(),
            }
        })
    }

    pub fn new<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<UserAgentRules, regex::Error> {
        let set = RegexSetBuilder::new(patterns)
            .case_insensitive(true)
            .build()?;
        Ok(UserAgentRules { set })
    }

    /// Whether a `User-Agent` matches any pattern. A request without one does not.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        match std::str::from_utf8(user_agent) {
            Ok(text) => self.set.is_match(text),
            Err(_) => self.set.is_match(&String::from_utf8_lossy(user_agent)),
        }
    }

    /// Patterns in the file.
    pub fn count(&self) -> usize {
        self.set.len()
    }
}

/// Blocked networks as sorted, merged address ranges: a lookup is a binary search, so a
/// list of thousands of cloud prefixes costs a handful of comparisons per request.
#[derive(Debug, Clone, Default)]
pub struct NetworkRules {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
    count: usize,
}

impl NetworkRules {
    /// Reads a networks file.
    pub fn load(path: &Path) -> Result<NetworkRules, RulesFileError> {
        let mut nets = Vec::new();
        for (line, text) in rule_lines(path)? {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| RulesFileError::Line {
                    path: path.to_path_buf(),
                    line,
                    message: format!("`{text}` is not an address or network like \"192.0.2.0/24\""),
                })?;
            nets.push(net);
        }
        Ok(NetworkRules::new(nets))
    }

    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> NetworkRules {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut count = 0;
        for net in nets {
            count += 1;
            match net {
                IpNet::V4(n) => v4.push((
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                )),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        NetworkRules {
            v4: merge(v4),
            v6: merge(v6),
            count,
        }
    }

    /// Whether `ip` lies in a listed network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (ranges, value) = match ip {
            IpAddr::V4(v4) => (&self.v4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (&self.v4, u128::from(u32::from(v4))),
                None => (&self.v6, u128::from(v6)),
            },
        };
        let after = ranges.partition_point(|(start, _)| *start <= value);
        after > 0 && ranges[after - 1].1 >= value
    }

    /// Networks listed in the file (before merging).
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Sorts ranges and joins those that overlap or touch.
fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn user_agent_patterns_match_anywhere_ignoring_case() {
        let f = file("# AI crawlers\nGPTBot\nclaudebot\n\nChrome/98\\.0\\.4758\n");
        let rules = UserAgentRules::load(f.path()).unwrap();
        assert_eq!(rules.count(), 3);
        assert!(rules.matches(b"Mozilla/5.0 AppleWebKit/537.36 (compatible; GPTBot/1.1)"));
        assert!(rules.matches(b"Mozilla/5.0 (compatible; ClaudeBot/1.0)"));
        assert!(rules.matches(b"Mozilla/5.0 Chrome/98.0.4758.102 Safari/537.36"));
        assert!(!rules.matches(b"Mozilla/5.0 Chrome/98.0.4759.1 Safari/537.36"));
        assert!(!rules.matches(b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"));
        assert!(!rules.matches(b""));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let f = file("GPTBot\n# fine\n(unclosed\n");
        let err = UserAgentRules::load(f.path()).unwrap_err().to_string();
        assert!(err.contains(":3: invalid regular expression"), "{err}");
    }

    #[test]
    fn networks_match_by_range() {
        let f = file("# cloud\n192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n203.0.113.0/25\n203.0.113.128/25\n");
        let rules = NetworkRules::load(f.path()).unwrap();
        assert_eq!(rules.count(), 5);
        for inside in [
            "192.0.2.0",
            "192.0.2.255",
            "198.51.100.7",
            "2001:db8:ffff::1",
            "203.0.113.200",
            "::ffff:192.0.2.9",
        ] {
            assert!(rules.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "192.0.3.0",
            "192.0.1.255",
            "198.51.100.8",
            "2001:db9::1",
            "10.0.0.1",
        ] {
            assert!(!rules.contains(outside.parse().unwrap()), "{outside}");
        }
        // The two /25 halves are one range after merging.
        assert_eq!(rules.v4.len(), 3);
    }

    #[test]
    fn a_bad_network_names_its_line() {
        let f = file("192.0.2.0/24\n\n10.0.0.0/33\n");
        let err = NetworkRules::load(f.path()).unwrap_err().to_string();
        assert!(err.contains(":3: `10.0.0.0/33`"), "{err}");
    }

    #[test]
    fn an_empty_list_contains_nothing() {
        assert!(!NetworkRules::default().contains("192.0.2.1".parse().unwrap()));
    }
}
