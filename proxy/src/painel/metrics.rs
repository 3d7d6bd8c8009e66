//! The panel's Prometheus metrics, in the process-wide registry that `/metrics` serves.
//!
//! Labels carry bounded values only: route names from the config, directions, sources and
//! outcomes named here; never a sessão id, group name or address.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter_vec, register_int_gauge_vec, Histogram, IntCounterVec,
    IntGaugeVec,
};

pub static SOCKETS_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "sapl_edge_painel_sockets_open",
        "Panel WebSockets open now, by route.",
        &["route"]
    )
    .expect("metric registers once")
});

pub static MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_messages_total",
        "WebSocket messages, by direction (in: from clients, out: to clients, \
         bridge: read from the channel layer).",
        &["direction"]
    )
    .expect("metric registers once")
});

pub static SNAPSHOTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_snapshots_total",
        "Snapshots sent to new sockets, by source (redis, django, none).",
        &["source"]
    )
    .expect("metric registers once")
});

pub static SLOW_CONSUMERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_slow_consumers_dropped_total",
        "Sockets closed because their send queue was full, by route.",
        &["route"]
    )
    .expect("metric registers once")
});

pub static AUTH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_auth_total",
        "Socket admission outcomes (ok, public, unauthenticated, forbidden, no_sessao, \
         bad_origin, over_capacity, error).",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static CLOSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_closes_total",
        "Sockets closed by the edge, by reason.",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static BRIDGE_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sapl_edge_painel_bridge_lag_seconds",
        "Time from Django's group_send to the edge reading the message from Redis.",
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

pub static BRIDGE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_bridge_errors_total",
        "Channel-layer faults, by kind (redis, decode).",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static POLLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sapl_edge_painel_polls_total",
        "Poll-to-push requests to Django, by result (changed, unchanged, error).",
        &["result"]
    )
    .expect("metric registers once")
});

/// Touches every metric so it shows in `/metrics` before its first event.
pub fn init() {
    LazyLock::force(&SOCKETS_OPEN);
    LazyLock::force(&MESSAGES);
    LazyLock::force(&SNAPSHOTS);
    LazyLock::force(&SLOW_CONSUMERS);
    LazyLock::force(&AUTH);
    LazyLock::force(&CLOSES);
    LazyLock::force(&BRIDGE_LAG);
    LazyLock::force(&BRIDGE_ERRORS);
    LazyLock::force(&POLLS);
    for cause in ["redis", "decode"] {
        BRIDGE_ERRORS.with_label_values(&[cause]);
    }
}
