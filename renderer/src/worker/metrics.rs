//! The worker's Prometheus metrics and the small listener that serves them.
//!
//! Names share the edge's `sapl_edge_jobs_*` family so one dashboard shows both sides;
//! the only label is the report kind (four values).

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, Encoder, HistogramVec,
    IntCounterVec, IntGauge, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

fn counter(name: &str, help: &str) -> IntCounterVec {
    register_int_counter_vec!(name, help, &["kind"]).expect("metric registers once")
}

pub static STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sapl_edge_jobs_started_total",
        "Renders started by the worker, by report kind.",
    )
});
pub static DONE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sapl_edge_jobs_done_total",
        "Jobs whose PDF was written, by report kind.",
    )
});
pub static FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sapl_edge_jobs_failed_total",
        "Jobs given up on, by report kind.",
    )
});
pub static RETRIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "sapl_edge_jobs_retried_total",
        "Transient faults retried, by report kind.",
    )
});
pub static RENDER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sapl_edge_jobs_render_duration_seconds",
        "Time to render and write one PDF, by report kind.",
        &["kind"],
        vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0]
    )
    .expect("metric registers once")
});
pub static RSS_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sapl_edge_jobs_worker_rss_bytes",
        "Resident memory of the worker."
    )
    .expect("metric registers once")
});
pub static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sapl_edge_jobs_worker_queue_depth",
        "Messages waiting in the queue."
    )
    .expect("metric registers once")
});

/// Starts the per-kind failure and retry series at 0, so an alert sees the first one.
pub fn init() {
    for kind in sapl_renderer::ReportKind::ALL {
        FAILED.with_label_values(&[kind.as_str()]);
        RETRIED.with_label_values(&[kind.as_str()]);
    }
}

/// The metric label for a kind: one of the four known kinds, or `other`.
pub fn kind_label(kind: &str) -> &'static str {
    sapl_renderer::ReportKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .map_or("other", |k| k.as_str())
}

/// Serves `GET /metrics` (any path, in fact) on `address` until the process ends.
pub async fn serve(address: String) {
    let listener = match TcpListener::bind(&address).await {
        Ok(l) => l,
        Err(e) => {
            warn!(address = %address, error = %e, "metrics listener unavailable");
            return;
        }
    };
    info!(address = %address, "metrics listener ready");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let mut body = Vec::new();
            let _ = TextEncoder::new().encode(&prometheus::gather(), &mut body);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}
