//! Prometheus metrics and the separate listener that serves them with `/healthz` and
//! `/readyz`.
//!
//! Names follow `sapl_edge_<subsystem>_<what>_<unit>`; labels take bounded values only
//! (route names from the config, status classes, fault kinds), never a path, id or address.

use std::sync::LazyLock;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, Encoder, HistogramVec, IntCounterVec,
    TextEncoder,
};

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_http_requests_total",
        "Requests answered, by route and status class (2xx, 3xx, 4xx, 5xx).",
        &["route", "status"]
    )
    .expect("metric registers once")
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sapl_edge_http_request_duration_seconds",
        "Time from the request header to the last byte of the answer, by route.",
        &["route"],
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
    )
    .expect("metric registers once")
});

pub static RESPONSE_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_http_response_bytes_total",
        "Body bytes written to clients, by route.",
        &["route"]
    )
    .expect("metric registers once")
});

pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_upstream_errors_total",
        "Requests Gunicorn could not answer, by fault (connect, timeout, other).",
        &["fault"]
    )
    .expect("metric registers once")
});

pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_config_reloads_total",
        "SIGHUP reloads of the configuration, by result (ok, error).",
        &["result"]
    )
    .expect("metric registers once")
});

pub static PROTECTION_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_protection_refusals_total",
        "Requests refused by ingress protection, by rule (zone, user_agent, network, \
         blocklist_prefix, blocklist_ip, blocklist_api, probe) and zone (for rule zone).",
        &["rule", "zone"]
    )
    .expect("metric registers once")
});

pub static ZONE_DELAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_protection_delayed_total",
        "Requests held back to their zone's rate (zones without nodelay), by zone.",
        &["zone"]
    )
    .expect("metric registers once")
});

pub static ZONE_DELAY_SECONDS: LazyLock<prometheus::CounterVec> = LazyLock::new(|| {
    prometheus::register_counter_vec!(
        "sapl_edge_protection_delay_seconds_total",
        "Total time requests were held back by their zone, by zone.",
        &["zone"]
    )
    .expect("metric registers once")
});

pub static BLOCKLIST_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_protection_blocklist_lookups_total",
        "Per-client blocklist answers, by source (cache, redis).",
        &["source"]
    )
    .expect("metric registers once")
});

pub static BLOCKLIST_FAIL_OPEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_protection_blocklist_fail_open_total",
        "Requests let through unchecked because Redis could not answer, by cause \
         (timeout, error, not_connected, backoff).",
        &["cause"]
    )
    .expect("metric registers once")
});

pub static BLOCKLIST_REFRESHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_protection_blocklist_refreshes_total",
        "Reads of the blocked-prefix set from Redis, by result (ok, error).",
        &["result"]
    )
    .expect("metric registers once")
});

pub static BLOCKLIST_PREFIXES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "sapl_edge_protection_blocklist_prefixes",
        "Entries of the blocked-prefix set as last read from Redis."
    )
    .expect("metric registers once")
});

/// `2xx`, `4xx`… for a status code; `0` (connection closed before an answer) is `none`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Touches every metric so it shows in `/metrics` before its first event.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&RESPONSE_BYTES);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&CONFIG_RELOADS);
    LazyLock::force(&PROTECTION_REFUSALS);
    LazyLock::force(&ZONE_DELAYED);
    LazyLock::force(&ZONE_DELAY_SECONDS);
    LazyLock::force(&BLOCKLIST_LOOKUPS);
    LazyLock::force(&BLOCKLIST_FAIL_OPEN);
    LazyLock::force(&BLOCKLIST_REFRESHES);
    LazyLock::force(&BLOCKLIST_PREFIXES);

    // Series that alerts watch start at 0, so the first event is an increase.
    for fault in ["connect", "timeout", "other"] {
        UPSTREAM_ERRORS.with_label_values(&[fault]);
    }
    for result in ["ok", "error"] {
        CONFIG_RELOADS.with_label_values(&[result]);
    }
    for cause in ["error", "timeout"] {
        BLOCKLIST_FAIL_OPEN.with_label_values(&[cause]);
    }
}

/// The metrics listener's application: `/metrics`, `/healthz`, `/readyz`.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&prometheus::gather(), &mut buf) {
                    Ok(()) => (StatusCode::OK, encoder.format_type().to_string(), buf),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain".into(),
                        e.to_string().into_bytes(),
                    ),
                }
            }
            // The process answers, so it is alive; it only serves once its config loaded,
            // so it is ready too. Later subsystems (Redis links) refine readiness.
            "/healthz" | "/readyz" => (StatusCode::OK, "text/plain".into(), b"ok\n".to_vec()),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain".into(),
                b"not found\n".to_vec(),
            ),
        };
        Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}
