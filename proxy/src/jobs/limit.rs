//! The per-client limit on *new* jobs: joining or reusing a job is free, creating one
//! costs a render, so only creations count. A fixed one-minute window per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts new jobs per client address.
pub struct NewJobLimit {
    per_window: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl NewJobLimit {
    /// `per_minute` new jobs per address; 0 means unlimited.
    pub fn new(per_minute: u32) -> NewJobLimit {
        NewJobLimit {
            per_window: per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one of `ip`'s new jobs for this window, if it has one left. Taken before the
    /// job is created, so concurrent requests cannot all pass the same check; a request
    /// that ends up not creating a job hands it back with [`NewJobLimit::give_back`].
    pub fn try_take(&self, ip: Option<IpAddr>) -> bool {
        let (Some(ip), true) = (ip, self.per_window > 0) else {
            return true;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 50_000 {
            seen.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= self.per_window {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Returns a job taken by [`NewJobLimit::try_take`] that was not created after all.
    pub fn give_back(&self, ip: Option<IpAddr>) {
        let (Some(ip), true) = (ip, self.per_window > 0) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = seen.get_mut(&ip) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_job_in_a_minute_is_refused_at_two() {
        let limit = NewJobLimit::new(2);
        let ip = Some("10.0.0.1".parse().unwrap());
        assert!(limit.try_take(ip));
        assert!(limit.try_take(ip));
        assert!(!limit.try_take(ip));
        assert!(limit.try_take(Some("10.0.0.2".parse().unwrap())));
        assert!(NewJobLimit::new(0).try_take(ip));
    }

    #[test]
    fn a_job_given_back_can_be_taken_again() {
        let limit = NewJobLimit::new(1);
        let ip = Some("10.0.0.1".parse().unwrap());
        assert!(limit.try_take(ip));
        limit.give_back(ip);
        assert!(limit.try_take(ip));
        assert!(!limit.try_take(ip));
    }
}
