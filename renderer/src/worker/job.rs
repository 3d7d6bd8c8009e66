//! One job, from the message taken off the queue to its acknowledgement.
//!
//! Order matters for at-least-once: the delivery is counted first (so a job that kills the
//! worker every time is eventually given up), the outcome is recorded (file renamed into
//! place, then the job record and Celery's record written) and only then is the message
//! acknowledged. A crash anywhere before the acknowledgement means a redelivery, and a
//! redelivery of a finished job is acknowledged without rendering again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::RedisResult;
use sapl_jobs::state::{celery_failure, now_secs};
use sapl_jobs::store::{self, StateChange};
use sapl_jobs::{message, FailReason, JobSpec, JobState};
use sapl_renderer::{ReaderClass, RenderError, RenderOptions, ReportId, ReportKind, ReportRequest};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, warn};

use super::files;
use super::memory::PEAK_RSS;
use super::metrics;
use super::Worker;

/// Exit status after a render ran past the hard time limit: its thread cannot be stopped
/// from outside, so the process restarts.
pub const EXIT_TIME_LIMIT: i32 = 70;

/// Why one render attempt did not produce a PDF.
enum Fault {
    /// Worth retrying later (database or disk unavailable).
    Transient(String),
    /// Retrying cannot help.
    Permanent(FailReason, String),
    /// The hard time limit passed.
    HardLimit,
}

/// What a successful attempt produced.
struct Rendered {
    fingerprint: String,
    bytes: u64,
}

/// Repeats a Redis operation until it succeeds: the job's outcome must be recorded and
/// acknowledged, and Redis B coming back is only a matter of time.
async fn persist<T, F, Fut>(what: &'static str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                warn!(what, error = %e, "Redis B unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs one message to its end; `permit` holds a concurrency slot until then.
pub async fn process(w: Arc<Worker>, raw: String, permit: OwnedSemaphorePermit) {
    let _permit = permit;

    let delivery = match message::parse(&raw) {
        Ok(d) if d.task_name == w.settings.task_name && message::is_task_id(&d.task_id) => d,
        Ok(d) => {
            warn!(task_id = %d.task_id, task = %d.task_name, "message for another task or with an odd id; dead-lettered");
            discard(&w, &d.task_id, "unknown task or task id", &raw).await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "unreadable message; dead-lettered");
            discard(&w, "", &e.to_string(), &raw).await;
            return;
        }
    };
    let tid = delivery.task_id.clone();
    let spec = delivery.spec.clone();
    let kind = metrics::kind_label(&spec.kind);

    let deliveries = persist("count delivery", || {
        w.broker.count_delivery(&tid, w.settings.ttl)
    })
    .await;
    let record = persist("read job", || {
        let mut c = w.results.clone();
        let tenant = w.broker.tenant.clone();
        let tid = tid.clone();
        async move { store::read_job(&mut c, &tenant, &tid).await }
    })
    .await;
    if let Some(r) = &record {
        let file_there = files::pdf_path(&w.settings.pdf_dir, &tid).exists();
        if (r.state == JobState::Done && file_there) || r.state == JobState::Failed {
            info!(task_id = %tid, state = %r.state, "job already finished; redelivery acknowledged");
            finish(&w, &tid, &raw).await;
            return;
        }
    }
    if deliveries > w.settings.max_deliveries {
        let message = format!(
            "taken {} times without finishing (the renderer died each time)",
            deliveries - 1
        );
        error!(task_id = %tid, kind, deliveries, "giving up on a job that never finishes");
        fail(&w, &tid, &spec, FailReason::TooManyAttempts, &message).await;
        persist("dead letter", || {
            w.broker
                .dead_letter(&tid, FailReason::TooManyAttempts.code(), &raw)
        })
        .await;
        finish(&w, &tid, &raw).await;
        return;
    }
    if !persist("lock", || w.broker.lock(&tid)).await {
        // Limitation: the holder's own copy was already redelivered, so if the holder dies
        // before finishing, no message is left and the job stays `rendering` until its TTL.
        info!(task_id = %tid, "job is being rendered by a live worker; duplicate delivery dropped");
        persist("ack", || w.broker.ack(&raw)).await;
        return;
    }

    w.in_hand.lock().await.insert(tid.clone(), raw.clone());
    run_attempts(&w, &tid, &spec, deliveries, &raw, kind).await;
    // Acknowledged before it leaves `in_hand`: a shutdown that finds `in_hand` empty returns
    // whatever is still in flight to the queue, and a finished job must not be among it.
    persist("ack", || w.broker.ack(&raw)).await;
    w.in_hand.lock().await.remove(&tid);
    persist("forget", || w.broker.forget(&tid)).await;
}

/// Renders with retries until done or failed; the outcome is recorded before returning.
async fn run_attempts(
    w: &Arc<Worker>,
    tid: &str,
    spec: &JobSpec,
    deliveries: u32,
    raw: &str,
    kind: &'static str,
) {
    let mut retries = 0u32;
    loop {
        let change = StateChange {
            state: JobState::Rendering,
            retrying: false,
            fields: vec![
                ("kind", spec.kind.clone()),
                ("id", spec.id.clone()),
                ("reader", spec.reader.clone()),
                ("started_at", now_secs().to_string()),
                ("attempt", deliveries.to_string()),
                ("worker", w.broker.worker_id.clone()),
            ],
            celery_result: json!({"pid": std::process::id(), "hostname": w.broker.worker_id}),
        };
        record(w, tid, &change).await;
        metrics::STARTED.with_label_values(&[kind]).inc();
        let started = Instant::now();
        let peak_before = PEAK_RSS.load(std::sync::atomic::Ordering::Relaxed);

        match attempt(w, tid, spec).await {
            Ok(done) => {
                let seconds = started.elapsed().as_secs_f64();
                metrics::RENDER_SECONDS
                    .with_label_values(&[kind])
                    .observe(seconds);
                metrics::DONE.with_label_values(&[kind]).inc();
                let peak = PEAK_RSS
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(peak_before);
                let pdf = format!("{}{tid}.pdf", w.settings.pdf_url);
                let change = StateChange {
                    state: JobState::Done,
                    retrying: false,
                    fields: vec![
                        ("fingerprint", done.fingerprint),
                        ("bytes", done.bytes.to_string()),
                        ("render_ms", format!("{:.1}", seconds * 1000.0)),
                        ("peak_rss", peak.to_string()),
                        ("done_at", now_secs().to_string()),
                        ("reason", String::new()),
                    ],
                    celery_result: json!({"pdf": pdf, "bytes": done.bytes, "kind": spec.kind, "id": spec.id}),
                };
                record(w, tid, &change).await;
                info!(task_id = %tid, kind, id = %spec.id, bytes = done.bytes, seconds, peak_rss = peak, "job done");
                return;
            }
            Err(Fault::Permanent(reason, message)) => {
                warn!(task_id = %tid, kind, id = %spec.id, reason = reason.code(), %message, "job failed");
                fail(w, tid, spec, reason, &message).await;
                return;
            }
            Err(Fault::HardLimit) => {
                let limit = w.settings.hard_time_limit;
                let message = format!("render ran past the hard time limit of {limit:?}");
                error!(task_id = %tid, kind, "hard time limit reached; the worker restarts");
                fail(w, tid, spec, FailReason::TimeLimit, &message).await;
                persist("dead letter", || {
                    w.broker.dead_letter(tid, FailReason::TimeLimit.code(), raw)
                })
                .await;
                finish(w, tid, raw).await;
                std::process::exit(EXIT_TIME_LIMIT);
            }
            Err(Fault::Transient(message)) => {
                retries += 1;
                metrics::RETRIED.with_label_values(&[kind]).inc();
                if retries > w.settings.max_retries {
                    let message = format!("gave up after {} retries: {message}", retries - 1);
                    warn!(task_id = %tid, kind, %message, "job failed");
                    fail(w, tid, spec, FailReason::RetriesExhausted, &message).await;
                    persist("dead letter", || {
                        w.broker
                            .dead_letter(tid, FailReason::RetriesExhausted.code(), raw)
                    })
                    .await;
                    return;
                }
                let backoff = w
                    .settings
                    .retry_backoff
                    .saturating_mul(1 << (retries - 1).min(16))
                    .min(Duration::from_secs(60));
                warn!(task_id = %tid, kind, retries, ?backoff, %message, "transient fault; retrying");
                let change = StateChange {
                    state: JobState::Queued,
                    retrying: true,
                    fields: vec![
                        ("retries", retries.to_string()),
                        ("message", message.clone()),
                    ],
                    celery_result: json!({"exc_type": "ConnectionError", "exc_message": [message], "exc_module": "builtins"}),
                };
                record(w, tid, &change).await;
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// One render in a thread of its own (layout is CPU work that must not stall the worker's
/// heartbeats), under the soft and hard time limits.
async fn attempt(w: &Arc<Worker>, tid: &str, spec: &JobSpec) -> Result<Rendered, Fault> {
    let Ok(kind) = spec.kind.parse::<ReportKind>() else {
        return Err(Fault::Permanent(
            FailReason::BadRequest,
            format!("unknown report kind {:?}", spec.kind),
        ));
    };
    let Ok(id) = spec.id.parse::<ReportId>() else {
        return Err(Fault::Permanent(
            FailReason::BadRequest,
            format!("malformed id {:?}", spec.id),
        ));
    };
    let reader = match spec.reader.as_str() {
        "authenticated" => ReaderClass::Authenticated,
        _ => ReaderClass::Anonymous,
    };
    let req = ReportRequest { kind, id, reader };
    let database_url = w.settings.database_url.clone();
    let opts = w.render_options.clone();
    let dir = w.settings.pdf_dir.clone();
    let task_id = tid.to_string();

    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("render-{}", &tid[..8]))
        .spawn(move || {
            let _ = tx.send(render_blocking(&database_url, &req, &opts, &dir, &task_id));
        });
    if let Err(e) = spawned {
        return Err(Fault::Transient(format!(
            "cannot start a render thread: {e}"
        )));
    }

    let soft = tokio::time::sleep(w.settings.soft_time_limit);
    let hard = tokio::time::sleep(w.settings.hard_time_limit);
    tokio::pin!(soft, hard, rx);
    let mut warned = false;
    loop {
        tokio::select! {
            result = &mut rx => {
                return result.unwrap_or_else(|_| Err(Fault::Permanent(
                    FailReason::Error,
                    "render thread ended without an answer".into(),
                )));
            }
            _ = &mut soft, if !warned => {
                warned = true;
                warn!(task_id = %tid, limit = ?w.settings.soft_time_limit, "render past the soft time limit");
            }
            _ = &mut hard => return Err(Fault::HardLimit),
        }
    }
}

/// Connects, fingerprints, renders and writes the file; runs on the render thread.
fn render_blocking(
    database_url: &str,
    req: &ReportRequest,
    opts: &RenderOptions,
    dir: &std::path::Path,
    task_id: &str,
) -> Result<Rendered, Fault> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fault::Transient(format!("cannot start a runtime: {e}")))?;
    let (fingerprint, pdf) = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| Fault::Transient(format!("PostgreSQL unreachable: {e}")))?;
        let driver = tokio::spawn(connection);
        let fingerprint = sapl_renderer::fingerprint(&client, req)
            .await
            .map_err(classify)?;
        let pdf = sapl_renderer::render(&client, req, opts)
            .await
            .map_err(classify)?;
        drop(client);
        let _ = driver.await;
        Ok::<_, Fault>((fingerprint, pdf))
    })?;
    let bytes = files::write_atomically(dir, task_id, &pdf)
        .map_err(|e| Fault::Transient(format!("cannot write the PDF: {e}")))?;
    Ok(Rendered { fingerprint, bytes })
}

fn classify(e: RenderError) -> Fault {
    match e {
        RenderError::NotFound { .. } | RenderError::WrongId { .. } => {
            Fault::Permanent(FailReason::NotFound, e.to_string())
        }
        e if e.is_transient() => Fault::Transient(e.to_string()),
        e => Fault::Permanent(FailReason::Error, e.to_string()),
    }
}

/// Records the job as failed for `reason`.
async fn fail(w: &Arc<Worker>, tid: &str, spec: &JobSpec, reason: FailReason, message: &str) {
    metrics::FAILED
        .with_label_values(&[metrics::kind_label(&spec.kind)])
        .inc();
    let change = StateChange {
        state: JobState::Failed,
        retrying: false,
        fields: vec![
            ("kind", spec.kind.clone()),
            ("id", spec.id.clone()),
            ("reader", spec.reader.clone()),
            ("reason", reason.code().to_string()),
            ("message", message.to_string()),
            ("done_at", now_secs().to_string()),
        ],
        celery_result: celery_failure(reason, message),
    };
    record(w, tid, &change).await;
}

async fn record(w: &Arc<Worker>, tid: &str, change: &StateChange<'_>) {
    let ttl = w.settings.ttl.as_secs();
    persist("record state", || {
        let mut c = w.results.clone();
        let tenant = w.broker.tenant.clone();
        let change = change.clone();
        let tid = tid.to_string();
        async move { store::record_state(&mut c, &tenant, &tid, &change, ttl).await }
    })
    .await
}

/// Acknowledges the message and drops the job's broker-side state.
async fn finish(w: &Arc<Worker>, tid: &str, raw: &str) {
    persist("ack", || w.broker.ack(raw)).await;
    persist("forget", || w.broker.forget(tid)).await;
}

/// Dead-letters and acknowledges a message that is not a job of ours.
async fn discard(w: &Arc<Worker>, tid: &str, reason: &str, raw: &str) {
    persist("dead letter", || w.broker.dead_letter(tid, reason, raw)).await;
    persist("ack", || w.broker.ack(raw)).await;
}
