//! The edge's job metrics (`sapl_edge_jobs_*`); the worker exports the render-side ones
//! (started, done, failed, retried, render seconds) under the same family.
//!
//! Labels: report kind (four values), outcome and reason words fixed in the code.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    Histogram, HistogramVec, IntCounterVec, IntGauge,
};

pub static ENQUEUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_jobs_enqueued_total",
        "New jobs pushed to the queue by the edge, by report kind.",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static DEDUPLICATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_jobs_deduplicated_total",
        "Requests that joined a job in flight (joined) or reused a finished one (reused).",
        &["kind", "outcome"]
    )
    .expect("metric registers once")
});

pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_jobs_refused_total",
        "Requests that could not get a job: queue_full, ip_limit, redis_down.",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sapl_edge_jobs_queue_depth",
        "Messages waiting in the tenant's queue, as last seen by the edge."
    )
    .expect("metric registers once")
});

pub static WAIT_OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_jobs_wait_outcomes_total",
        "Legacy links by what the wait budget ended with: pdf, wait_page, failed.",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static FALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_jobs_fallbacks_total",
        "Legacy links forwarded to Django: redis_down, authenticated, unconfigured.",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static ENQUEUE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sapl_edge_jobs_enqueue_duration_seconds",
        "Time to find or create a job (fingerprint, dedup, push).",
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric registers once")
});

pub static WAIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sapl_edge_jobs_wait_duration_seconds",
        "Time a legacy link waited for its PDF, by outcome.",
        &["outcome"],
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]
    )
    .expect("metric registers once")
});

/// Touches every metric so it is listed before its first event.
pub fn init() {
    LazyLock::force(&ENQUEUED);
    LazyLock::force(&DEDUPLICATED);
    LazyLock::force(&REFUSED);
    LazyLock::force(&QUEUE_DEPTH);
    LazyLock::force(&WAIT_OUTCOMES);
    LazyLock::force(&FALLBACKS);
    LazyLock::force(&ENQUEUE_SECONDS);
    LazyLock::force(&WAIT_SECONDS);
}
