//! The blocklist SAPL's operators and its Django rate limiter write in Redis A, DB 1.
//!
//! Three kinds of entry, with the key names SAPL's middleware uses, so the tools that
//! curate them keep working:
//!
//! - `rl:ip_prefix:blocked`, a set of dotted prefixes (`"103.124.225"`, `"45.8."`) or whole
//!   addresses. Prefixes match at a dot: `"10.1.2"` blocks `10.1.2.9` but not `10.1.20.9`.
//!   The set is read in full every `refresh_interval` by a background task, never per
//!   request.
//! - `rl:ip:{ip}:blocked`, one key per blocked client, for every path.
//! - `rl:api:ns:{ns}:ip:{ip}:blocked`, for `/api/` paths only, `{ns}` being the tenant's
//!   namespace (`POD_NAMESPACE` in SAPL).
//!
//! Any value in a key means blocked. Per-client answers (blocked or not) are cached for
//! `cache_ttl`, so at steady state a client costs one Redis round trip per `cache_ttl`,
//! not one per request; both keys of an `/api/` request go in a single `MGET`. A lookup has
//! `lookup_timeout` (200 ms) and **fails open**: when Redis is slow, down or not yet
//! connected the request passes, a metric counts it, and Redis is left alone for a second
//! so a dead Redis does not add its timeout to every request.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, info, warn};

use super::realip::limit_key;
use crate::metrics;

/// The Redis set of blocked prefixes.
pub const PREFIX_SET_KEY: &str = "rl:ip_prefix:blocked";

/// How long Redis is left alone after a failed lookup.
const BACKOFF: Duration = Duration::from_secs(1);

/// Most clients whose answers are cached at once.
const CACHE_CAPACITY: usize = 65_536;

/// The `[protection.blocklist]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlocklistSpec {
    /// Redis A, database 1: `redis://host:6379/1`.
    pub redis_url: String,
    /// The tenant's namespace for the `/api/` key; without one that key is not read.
    pub namespace: Option<String>,
    pub lookup_timeout: Duration,
    pub cache_ttl: Duration,
    pub refresh_interval: Duration,
    /// Seconds announced in `Retry-After` (SAPL blocks for 300 s).
    pub retry_after: u64,
}

/// Checks a Redis URL the way the client will read it.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Which entry blocked a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Prefix,
    Ip,
    Api,
}

/// The blocked prefixes, normalized so that a lookup is a few set probes.
#[derive(Debug, Default)]
pub struct PrefixSet {
    entries: HashSet<String>,
}

impl PrefixSet {
    /// Builds the set from the members of `rl:ip_prefix:blocked`.
    ///
    /// A dotted entry with fewer than three dots is a prefix and gets a trailing dot
    /// (`"45.8"` and `"45.8."` both become `"45.8."`); one with three is an address and is
    /// kept as it is. IPv6 entries are kept as written: end one with `:` to make it a
    /// prefix.
    pub fn from_members<I, S>(members: I) -> PrefixSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries = HashSet::new();
        for member in members {
            let text = member.as_ref().trim().to_ascii_lowercase();
            if text.is_empty() {
                continue;
            }
            if text.contains(':') {
                entries.insert(text);
                continue;
            }
            let bare = text.trim_end_matches('.');
            if bare.is_empty() {
                continue;
            }
            if bare.matches('.').count() < 3 {
                entries.insert(format!("{bare}."));
            } else {
                entries.insert(bare.to_string());
            }
        }
        PrefixSet { entries }
    }

    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Whether an address (as text) is blocked: the whole address, or any part of it that
    /// ends at a `.` (or `:` for IPv6) is in the set.
    ///
    /// For `103.124.225.7` the probes are `103.`, `103.124.`, `103.124.225.` and
    /// `103.124.225.7`.
    pub fn contains(&self, ip: &str) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        if self.entries.contains(ip) {
            return true;
        }
        ip.char_indices()
            .filter(|(_, c)| *c == '.' || *c == ':')
            .any(|(i, _)| self.entries.contains(&ip[..=i]))
    }
}

#[derive(Clone, Copy)]
struct Cached {
    answer: Option<Block>,
    expires: Instant,
}

/// The blocklist: a Redis link, the prefix set and the per-client answer cache.
pub struct Blocklist {
    spec: BlocklistSpec,
    client: redis::Client,
    connection: ArcSwapOption<ConnectionManager>,
    prefixes: ArcSwap<PrefixSet>,
    cache: Mutex<HashMap<(IpAddr, bool), Cached>>,
    backoff_until: Mutex<Option<Instant>>,
    next_refresh: Mutex<Option<Instant>>,
}

impl Blocklist {
    /// The blocklist for `spec`: `previous` itself when its settings are the same (its
    /// connection, prefixes and cache stay), else a new one that connects on the
    /// background task's next tick.
    pub fn new(
        spec: &BlocklistSpec,
        previous: Option<&Arc<Blocklist>>,
    ) -> Result<Arc<Blocklist>, redis::RedisError> {
        if let Some(previous) = previous.filter(|p| p.spec == *spec) {
            return Ok(previous.clone());
        }
        Ok(Arc::new(Blocklist {
            spec: spec.clone(),
            client: redis::Client::open(spec.redis_url.as_str())?,
            connection: ArcSwapOption::empty(),
            prefixes: ArcSwap::from_pointee(PrefixSet::default()),
            cache: Mutex::new(HashMap::new()),
            backoff_until: Mutex::new(None),
            next_refresh: Mutex::new(None),
        }))
    }

    pub fn retry_after(&self) -> u64 {
        self.spec.retry_after
    }

    /// Whether `ip` is blocked for this request; `api` selects the `/api/` key too.
    pub async fn check(&self, ip: IpAddr, api: bool) -> Option<Block> {
        if self.prefixes.load().contains(&ip.to_string()) {
            return Some(Block::Prefix);
        }

        let key = limit_key(ip);
        let api = api && self.spec.namespace.is_some();
        let now = Instant::now();
        if let Some(hit) = self.cached(key, api, now) {
            metrics::BLOCKLIST_LOOKUPS
                .with_label_values(&["cache"])
                .inc();
            return hit.answer;
        }

        match self.lookup(key, api).await {
            Ok(answer) => {
                metrics::BLOCKLIST_LOOKUPS
                    .with_label_values(&["redis"])
                    .inc();
                self.remember(key, api, answer, now);
                answer
            }
            Err(cause) => {
                metrics::BLOCKLIST_FAIL_OPEN
                    .with_label_values(&[cause])
                    .inc();
                None
            }
        }
    }

    fn cached(&self, key: IpAddr, api: bool, now: Instant) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&(key, api)).copied().filter(|c| c.expires > now)
    }

    fn remember(&self, key: IpAddr, api: bool, answer: Option<Block>, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= CACHE_CAPACITY {
                // Under a flood of distinct clients the cache cannot help; start over
                // rather than grow.
                cache.clear();
            }
        }
        cache.insert(
            (key, api),
            Cached {
                answer,
                expires: now + self.spec.cache_ttl,
            },
        );
    }

    /// One round trip: `GET` the client's key, or `MGET` it with the `/api/` key.
    /// The error is the fail-open cause, a metric label.
    async fn lookup(&self, key: IpAddr, api: bool) -> Result<Option<Block>, &'static str> {
        {
            let backoff = self.backoff_until.lock().unwrap_or_else(|p| p.into_inner());
            if backoff.is_some_and(|until| until > Instant::now()) {
                return Err("backoff");
            }
        }
        let Some(connection) = self.connection.load_full() else {
            return Err("not_connected");
        };
        let mut connection = (*connection).clone();

        let mut keys = vec![format!("rl:ip:{key}:blocked")];
        if api {
            if let Some(ns) = &self.spec.namespace {
                keys.push(format!("rl:api:ns:{ns}:ip:{key}:blocked"));
            }
        }
        let mut command = redis::cmd("MGET");
        command.arg(&keys);
        let query = command.query_async::<Vec<Option<Vec<u8>>>>(&mut connection);

        match tokio::time::timeout(self.spec.lookup_timeout, query).await {
            Ok(Ok(values)) => Ok(match values.as_slice() {
                [Some(_), ..] => Some(Block::Ip),
                [None, Some(_)] => Some(Block::Api),
                _ => None,
            }),
            // The connection's own response timeout equals the budget and usually fires
            // first: that is a timeout too, not a Redis error.
            Ok(Err(e)) if !e.is_timeout() => {
                self.back_off();
                debug!(error = %e, "blocklist lookup failed; request passes");
                Err("error")
            }
            _ => {
                self.back_off();
                debug!(
                    timeout_ms = self.spec.lookup_timeout.as_millis() as u64,
                    "blocklist lookup timed out; request passes"
                );
                Err("timeout")
            }
        }
    }

    fn back_off(&self) {
        let mut backoff = self.backoff_until.lock().unwrap_or_else(|p| p.into_inner());
        let first = backoff.is_none_or(|until| until <= Instant::now());
        *backoff = Some(Instant::now() + BACKOFF);
        if first {
            warn!(redis = %self.spec.redis_url, "blocklist Redis not answering; failing open");
        }
    }

    /// The background task's tick: connects when not connected, and re-reads the prefix
    /// set when it is due.
    pub async fn maintain(&self) {
        let connection = match self.connection.load_full() {
            Some(c) => c,
            None => match self.connect().await {
                Some(c) => c,
                None => return,
            },
        };

        let now = Instant::now();
        {
            let next = self.next_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some_and(|at| at > now) {
                return;
            }
        }

        let mut connection = (*connection).clone();
        let mut command = redis::cmd("SMEMBERS");
        command.arg(PREFIX_SET_KEY);
        let query = command.query_async::<Vec<String>>(&mut connection);
        let next = match tokio::time::timeout(self.spec.lookup_timeout * 5, query).await {
            Ok(Ok(members)) => {
                let set = PrefixSet::from_members(&members);
                metrics::BLOCKLIST_PREFIXES.set(set.count() as i64);
                metrics::BLOCKLIST_REFRESHES
                    .with_label_values(&["ok"])
                    .inc();
                debug!(prefixes = set.count(), "blocked prefixes refreshed");
                self.prefixes.store(Arc::new(set));
                now + self.spec.refresh_interval
            }
            Ok(Err(e)) => {
                metrics::BLOCKLIST_REFRESHES
                    .with_label_values(&["error"])
                    .inc();
                debug!(error = %e, "blocked prefixes not refreshed; the previous set stays");
                now + self.spec.refresh_interval.min(Duration::from_secs(5))
            }
            Err(_) => {
                metrics::BLOCKLIST_REFRESHES
                    .with_label_values(&["error"])
                    .inc();
                debug!("blocked prefixes refresh timed out; the previous set stays");
                now + self.spec.refresh_interval.min(Duration::from_secs(5))
            }
        };
        *self.next_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
    }

    async fn connect(&self) -> Option<Arc<ConnectionManager>> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.spec.lookup_timeout))
            .set_response_timeout(Some(self.spec.lookup_timeout))
            .set_number_of_retries(1);
        let attempt = self.client.get_connection_manager_with_config(config);
        match tokio::time::timeout(self.spec.lookup_timeout * 5, attempt).await {
            Ok(Ok(manager)) => {
                let manager = Arc::new(manager);
                self.connection.store(Some(manager.clone()));
                info!(redis = %self.spec.redis_url, "blocklist Redis connected");
                Some(manager)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "blocklist Redis not reachable yet");
                None
            }
            Err(_) => {
                debug!("blocklist Redis connection timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_only_at_a_dot() {
        let set = PrefixSet::from_members(["103.124.225", "45.8.", "198.51.100.7", " 10.1.2 "]);
        assert_eq!(set.count(), 4);
        for blocked in [
            "103.124.225.7",
            "103.124.225.250",
            "45.8.0.1",
            "45.8.99.3",
            "198.51.100.7",
            "10.1.2.9",
        ] {
            assert!(set.contains(blocked), "{blocked} should be blocked");
        }
        for free in [
            "103.124.22.7",
            "103.124.2250.1",
            "45.80.0.1",
            "145.8.0.1",
            "198.51.100.70",
            "10.1.20.9",
            "10.1.3.2",
        ] {
            assert!(!set.contains(free), "{free} should pass");
        }
    }

    #[test]
    fn a_whole_address_entry_blocks_only_that_address() {
        let set = PrefixSet::from_members(["198.51.100.7."]);
        assert!(set.contains("198.51.100.7"));
        assert!(!set.contains("198.51.100.77"));
    }

    #[test]
    fn ipv6_entries_match_at_a_colon() {
        let set = PrefixSet::from_members(["2001:DB8:"]);
        assert!(set.contains("2001:db8::1"));
        assert!(set.contains("2001:db8:5::1"));
        assert!(!set.contains("2001:db80::1"));
    }

    #[test]
    fn junk_members_are_ignored() {
        let set = PrefixSet::from_members(["", "  ", "..."]);
        assert_eq!(set.count(), 0);
        assert!(!set.contains("10.0.0.1"));
    }
}
