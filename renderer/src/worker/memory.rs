//! The worker's memory envelope, measured from `/proc/self/statm`.
//!
//! A render's memory cannot be taken back from inside the process, so the envelope is
//! enforced the way the plan states it for Celery workers: past the soft mark a warning,
//! past the hard limit the worker exits (status 75) and its supervisor restarts it. The
//! jobs it held are redelivered; each delivery is counted, so a job that blows the
//! envelope every time ends `failed` after `max_deliveries` instead of looping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{error, warn};

use super::metrics;

/// Exit status when the hard memory limit is crossed.
pub const EXIT_MEMORY: i32 = 75;

/// The highest resident set size sampled since start, in bytes.
pub static PEAK_RSS: AtomicU64 = AtomicU64::new(0);

/// Resident set size of this process in bytes, or 0 when `/proc` is unreadable.
pub fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// Samples RSS every 100 ms forever: records the peak, warns past `soft`, exits past `hard`.
pub async fn watch(soft: u64, hard: u64) {
    let mut warned = false;
    loop {
        let rss = rss_bytes();
        PEAK_RSS.fetch_max(rss, Ordering::Relaxed);
        metrics::RSS_BYTES.set(rss as i64);
        if rss > hard {
            error!(
                rss,
                limit = hard,
                "memory envelope exceeded; the worker exits and its jobs are redelivered"
            );
            std::process::exit(EXIT_MEMORY);
        }
        if rss > soft && !warned {
            warn!(rss, soft_limit = soft, "memory above the soft mark");
            warned = true;
        } else if rss <= soft {
            warned = false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
