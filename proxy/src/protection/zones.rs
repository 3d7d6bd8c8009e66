//! Rate zones: per-client leaky buckets with the arithmetic of nginx's `limit_req`.
//!
//! A zone has a rate, a burst and a `nodelay` flag. Each client (see
//! [`super::realip::limit_key`]) has an *excess*: how many requests it is ahead of the
//! rate, kept in thousandths of a request as nginx does, so integer rounding, and thus
//! which request is refused, is the same as nginx's. The excess leaks at the rate; each
//! request adds one. A request that would push the excess above the burst is refused and
//! changes nothing; otherwise it is accepted and, without `nodelay`, held back until the
//! leak has caught up with it.
//!
//! State lives in this process only: replicas each count on their own (`conf/README.md`
//! says what that means). A zone whose settings are unchanged keeps its state across a
//! configuration reload ([`ZoneSet::new`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request rate, in thousandths of a request per second.
///
/// `"120r/m"` is 2000, `"1r/s"` is 1000, `"10r/m"` is 166: nginx truncates a per-minute
/// rate the same way, so 10 r/m leaks 0.166 request per second, not 0.1666….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    milli_per_second: u64,
}

/// Why a rate is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a rate like \"120r/m\" or \"2r/s\" (at least 1r/m)")]
pub struct RateError(String);

impl Rate {
    /// Parses `"<n>r/s"` or `"<n>r/m"`.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let bad = || RateError(text.to_string());
        let (count, unit) = text.trim().split_once("r/").ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let milli_per_second = match unit.trim() {
            "s" => count.checked_mul(1000).ok_or_else(bad)?,
            "m" => count.checked_mul(1000).ok_or_else(bad)? / 60,
            _ => return Err(bad()),
        };
        if milli_per_second == 0 {
            return Err(bad());
        }
        Ok(Rate { milli_per_second })
    }

    pub fn milli_per_second(&self) -> u64 {
        self.milli_per_second
    }
}

/// One zone as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    pub name: String,
    pub rate: Rate,
    /// Requests a client may be ahead of the rate before it is refused.
    pub burst: u64,
    /// Serve accepted requests at once instead of pacing them to the rate.
    pub nodelay: bool,
}

/// What a zone decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Accepted, but to be forwarded only after this wait.
    Delay(Duration),
    /// Over the limit; a request after `retry_after` would be accepted.
    Refuse {
        retry_after: Duration,
    },
}

/// A client's bucket: its excess (thousandths of a request) as of `last` (ms since the
/// zone's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    excess: u64,
    last: u64,
}

/// The arithmetic of one request against one bucket, at `now` ms.
///
/// Returns the bucket to keep (`None`: refused, keep the old one) and the outcome.
///
/// Example, `rate=1r/s burst=5` without `nodelay`, seven requests in the same
/// millisecond: the first finds no bucket and passes (excess 0); the next five raise the
/// excess to 1000, 2000, … 5000 and wait 1, 2, … 5 s (excess ÷ rate); the seventh would
/// make 6000 > 5000 and is refused, with a retry in 1 s, when 1000 will have leaked.
/// With `nodelay` the same six pass at once and the seventh is refused.
fn step(
    old: Option<Bucket>,
    now: u64,
    rate: u64,
    burst: u64,
    nodelay: bool,
) -> (Option<Bucket>, Outcome) {
    let Some(old) = old else {
        return (
            Some(Bucket {
                excess: 0,
                last: now,
            }),
            Outcome::Pass,
        );
    };

    // As in nginx, what leaked is taken from the old excess *plus* this request before
    // clamping at zero: a client that waited a full interval is back at zero, not at one.
    let elapsed = now.saturating_sub(old.last);
    let leaked = rate.saturating_mul(elapsed) / 1000;
    let excess = (old.excess + 1000).saturating_sub(leaked);
    let limit = burst.saturating_mul(1000);

    if excess > limit {
        let wait_ms = (excess - limit).saturating_mul(1000).div_ceil(rate);
        return (
            None,
            Outcome::Refuse {
                retry_after: Duration::from_millis(wait_ms),
            },
        );
    }

    let bucket = Bucket { excess, last: now };
    if nodelay || excess == 0 {
        return (Some(bucket), Outcome::Pass);
    }
    let delay_ms = excess.saturating_mul(1000) / rate;
    (
        Some(bucket),
        Outcome::Delay(Duration::from_millis(delay_ms)),
    )
}

const SHARDS: usize = 16;

/// One zone's buckets, shared by every listener thread.
pub struct Zone {
    spec: ZoneSpec,
    name: Arc<str>,
    epoch: Instant,
    shard_capacity: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl Zone {
    /// A zone tracking at most about `max_clients` clients at once.
    pub fn new(spec: ZoneSpec, max_clients: usize) -> Zone {
        Zone {
            name: Arc::from(spec.name.as_str()),
            spec,
            epoch: Instant::now(),
            shard_capacity: (max_clients / SHARDS).max(16),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    #[cfg(test)]
    pub fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    /// Counts one request of `client` now.
    pub fn check(&self, client: IpAddr) -> Outcome {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(client, now)
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Outcome {
        let shard = (self.hasher.hash_one(client) as usize) % SHARDS;
        // A poisoned lock only means another thread panicked mid-update of plain numbers;
        // the map is still usable.
        let mut buckets = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        let old = buckets.get(&client).copied();
        if old.is_none() && buckets.len() >= self.shard_capacity {
            self.make_room(&mut buckets, now);
        }
        let (kept, outcome) = step(
            old,
            now,
            self.spec.rate.milli_per_second,
            self.spec.burst,
            self.spec.nodelay,
        );
        if let Some(bucket) = kept {
            buckets.insert(client, bucket);
        }
        outcome
    }

    /// Frees space in a full shard: first the clients whose next request would find the
    /// bucket empty anyway (they are indistinguishable from new ones), then, if that is not enough, the half seen
    /// least recently. The second step costs one pass over the shard but runs at most once
    /// per half a shard of new clients.
    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: u64) {
        let rate = self.spec.rate.milli_per_second;
        buckets.retain(|_, b| {
            rate.saturating_mul(now.saturating_sub(b.last)) / 1000 < b.excess + 1000
        });
        if buckets.len() < self.shard_capacity {
            return;
        }
        let mut lasts: Vec<u64> = buckets.values().map(|b| b.last).collect();
        let middle = lasts.len() / 2;
        let (_, cutoff, _) = lasts.select_nth_unstable(middle);
        let cutoff = *cutoff;
        buckets.retain(|_, b| b.last > cutoff);
    }

    /// Clients currently tracked.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

// Limitation: zone counts live in this process; N edge replicas let a client through at N
// times the rate.
/// The zones of one configuration generation, by name.
pub struct ZoneSet {
    zones: HashMap<String, Arc<Zone>>,
}

impl ZoneSet {
    /// Builds the zones, taking over from `previous` every zone whose name and settings
    /// are unchanged, so a reload does not hand every client a fresh allowance.
    pub fn new(specs: &[ZoneSpec], max_clients: usize, previous: Option<&ZoneSet>) -> ZoneSet {
        let mut zones = HashMap::new();
        for spec in specs {
            let kept = previous
                .and_then(|p| p.zones.get(&spec.name))
                .filter(|z| z.spec == *spec && z.shard_capacity == (max_clients / SHARDS).max(16))
                .cloned();
            let zone = kept.unwrap_or_else(|| Arc::new(Zone::new(spec.clone(), max_clients)));
            zones.insert(spec.name.clone(), zone);
        }
        ZoneSet { zones }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Zone>> {
        self.zones.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: &str, burst: u64, nodelay: bool) -> ZoneSpec {
        ZoneSpec {
            name: "z".into(),
            rate: Rate::parse(rate).unwrap(),
            burst,
            nodelay,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn rates_use_nginx_integer_arithmetic() {
        assert_eq!(Rate::parse("120r/m").unwrap().milli_per_second(), 2000);
        assert_eq!(Rate::parse("1r/s").unwrap().milli_per_second(), 1000);
        assert_eq!(Rate::parse("10r/m").unwrap().milli_per_second(), 166);
        assert_eq!(Rate::parse("240r/m").unwrap().milli_per_second(), 4000);
        for bad in ["", "120", "120/m", "r/m", "0r/s", "5r/h", "-1r/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seven_simultaneous_requests_at_1rps_burst_5_are_paced_then_refused() {
        let zone = Zone::new(spec("1r/s", 5, false), 1000);
        let outcomes: Vec<Outcome> = (0..7).map(|_| zone.check_at(ip(1), 0)).collect();
        let secs = |s| Outcome::Delay(Duration::from_secs(s));
        assert_eq!(
            outcomes,
            vec![
                Outcome::Pass,
                secs(1),
                secs(2),
                secs(3),
                secs(4),
                secs(5),
                Outcome::Refuse {
                    retry_after: Duration::from_secs(1)
                },
            ]
        );
    }

    #[test]
    fn with_nodelay_six_pass_at_once_and_the_seventh_is_refused() {
        let zone = Zone::new(spec("1r/s", 5, true), 1000);
        let outcomes: Vec<Outcome> = (0..7).map(|_| zone.check_at(ip(1), 0)).collect();
        assert_eq!(outcomes[..6], [Outcome::Pass; 6]);
        assert!(matches!(outcomes[6], Outcome::Refuse { .. }));
    }

    #[test]
    fn the_bucket_leaks_at_the_rate() {
        let zone = Zone::new(spec("1r/s", 5, true), 1000);
        for _ in 0..6 {
            assert_eq!(zone.check_at(ip(1), 0), Outcome::Pass);
        }
        assert!(matches!(zone.check_at(ip(1), 999), Outcome::Refuse { .. }));
        // After a second, exactly one more request fits.
        assert_eq!(zone.check_at(ip(1), 1000), Outcome::Pass);
        assert!(matches!(zone.check_at(ip(1), 1000), Outcome::Refuse { .. }));
        // After ten quiet seconds the whole burst is back.
        for _ in 0..6 {
            assert_eq!(zone.check_at(ip(1), 11_000), Outcome::Pass);
        }
    }

    #[test]
    fn without_burst_the_second_request_inside_the_interval_is_refused() {
        // 120r/m is one request every 500 ms.
        let zone = Zone::new(spec("120r/m", 0, false), 1000);
        assert_eq!(zone.check_at(ip(1), 0), Outcome::Pass);
        assert_eq!(
            zone.check_at(ip(1), 100),
            Outcome::Refuse {
                retry_after: Duration::from_millis(400)
            }
        );
        assert_eq!(zone.check_at(ip(1), 500), Outcome::Pass);
        // Exactly on time again and again: never refused.
        assert_eq!(zone.check_at(ip(1), 1000), Outcome::Pass);
        assert_eq!(zone.check_at(ip(1), 1500), Outcome::Pass);
    }

    #[test]
    fn heavy_zone_default_allows_21_then_one_every_six_seconds() {
        let zone = Zone::new(spec("10r/m", 20, true), 1000);
        let passed = (0..30)
            .filter(|_| zone.check_at(ip(1), 0) == Outcome::Pass)
            .count();
        assert_eq!(passed, 21);
        // 166 thousandths leak per second: 1000 have leaked after 6.03 s, not 6.
        assert!(matches!(zone.check_at(ip(1), 6000), Outcome::Refuse { .. }));
        assert_eq!(zone.check_at(ip(1), 6100), Outcome::Pass);
    }

    #[test]
    fn clients_are_counted_separately() {
        let zone = Zone::new(spec("1r/m", 0, true), 1000);
        assert_eq!(zone.check_at(ip(1), 0), Outcome::Pass);
        assert_eq!(zone.check_at(ip(2), 0), Outcome::Pass);
        assert!(matches!(zone.check_at(ip(1), 0), Outcome::Refuse { .. }));
    }

    #[test]
    fn a_full_zone_forgets_idle_clients_first() {
        let zone = Zone::new(spec("1r/s", 0, true), 0);
        // Capacity is 16 per shard; 2000 clients in one instant must not grow it unbounded.
        for n in 0..2000u32 {
            zone.check_at(IpAddr::from(n.to_be_bytes()), 0);
        }
        assert!(zone.clients() <= 16 * SHARDS, "{}", zone.clients());
        // Long after, every old client has leaked away and room is made without loss.
        zone.check_at(ip(1), 60_000);
        assert!(zone.clients() <= 16 * SHARDS);
    }

    #[test]
    fn unchanged_zones_keep_their_state_across_a_reload() {
        let specs = vec![spec("1r/m", 0, true)];
        let first = ZoneSet::new(&specs, 1000, None);
        assert_eq!(first.get("z").unwrap().check_at(ip(1), 0), Outcome::Pass);

        let same = ZoneSet::new(&specs, 1000, Some(&first));
        assert!(Arc::ptr_eq(same.get("z").unwrap(), first.get("z").unwrap()));

        let changed = ZoneSet::new(&[spec("2r/m", 0, true)], 1000, Some(&first));
        assert!(!Arc::ptr_eq(
            changed.get("z").unwrap(),
            first.get("z").unwrap()
        ));
        assert_eq!(changed.get("z").unwrap().check_at(ip(1), 0), Outcome::Pass);
    }
}
