//! `sapl-renderer work`: the queue worker that renders the edge's (and Django's) PDF jobs.
//!
//! It consumes one tenant's queue on Redis B with at-least-once semantics ([`broker`]),
//! renders each job ([`job`]) with a configurable number of jobs at once, writes the PDF
//! atomically under the PDF directory ([`files`]), records the outcome in the result
//! database in both sapl-edge's and Celery's form, and only then acknowledges the message.
//! Around that: the memory envelope ([`memory`]), time limits, retries with backoff, the
//! dead-letter list, the sweeper of expired files, metrics ([`metrics`]) and a graceful
//! SIGTERM (stop taking jobs, finish or return those in hand).

mod broker;
mod files;
mod job;
mod memory;
mod metrics;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use redis::aio::ConnectionManager;
use sapl_jobs::message::DEFAULT_TASK_NAME;
use sapl_jobs::Tenant;
use sapl_renderer::RenderOptions;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Mutex, Semaphore};
use tracing::{info, warn};

use broker::Broker;

/// The worker's settings; every flag also reads an environment variable where ops already
/// have one (the Celery names of the plan's Secret).
#[derive(Args, Debug, Clone)]
pub struct WorkArgs {
    /// Broker: Redis B, database 0.
    #[arg(long, env = "CELERY_BROKER_URL")]
    pub broker_url: String,
    /// Result backend: Redis B, database 1.
    #[arg(long, env = "CELERY_RESULT_BACKEND")]
    pub result_backend: String,
    /// SAPL's PostgreSQL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The tenant (chamber) whose queue this worker serves; keys are prefixed `<tenant>:`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub tenant: String,
    /// The queue name (Celery's `queue=`), without the tenant prefix.
    #[arg(long, default_value = "sapl-pdf")]
    pub queue: String,
    /// The Celery task name of PDF jobs.
    #[arg(long, default_value = DEFAULT_TASK_NAME)]
    pub task_name: String,
    /// Where finished PDFs are written (`<media root>/pdf`).
    #[arg(long, env = "SAPL_PDF_DIR")]
    pub pdf_dir: PathBuf,
    /// The URL path the PDF directory is served under.
    #[arg(long, default_value = "/media/pdf/")]
    pub pdf_url: String,
    /// SAPL's MEDIA_ROOT (the chamber's logo).
    #[arg(long, env = "SAPL_MEDIA_ROOT")]
    pub media_root: Option<PathBuf>,
    /// The chamber's time zone.
    #[arg(long, default_value = "America/Sao_Paulo")]
    pub time_zone: String,
    /// Jobs rendered at the same time.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// How long a dead worker's jobs wait before redelivery.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub visibility_timeout: Duration,
    /// Retries of transient faults (database or disk unavailable) before giving up.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// First retry delay; doubled at each retry, at most 60 s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Deliveries of one job (each worker death mid-job is one) before it is failed and
    /// dead-lettered.
    #[arg(long, default_value_t = 3)]
    pub max_deliveries: u32,
    /// A render past this is logged as slow.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub soft_time_limit: Duration,
    /// A render past this fails its job and restarts the worker.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub hard_time_limit: Duration,
    /// Memory envelope in MiB: a warning at 7/8 of it, exit and restart past it.
    #[arg(long, default_value_t = 400)]
    pub memory_limit_mb: u64,
    /// Lifetime of PDFs and job records.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How often expired PDFs and orphaned temporary files are removed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// After SIGTERM, how long jobs in hand may run before they are returned to the queue.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9146`).
    #[arg(long, env = "SAPL_RENDERER_METRICS")]
    pub metrics_address: Option<String>,
}

/// What every job of this worker shares.
pub struct Worker {
    settings: WorkArgs,
    broker: Broker,
    results: ConnectionManager,
    render_options: RenderOptions,
    /// Task id → raw message of the jobs being worked on, for lock refreshes and shutdown.
    in_hand: Mutex<HashMap<String, String>>,
}

/// Runs the worker until SIGTERM or SIGINT.
pub async fn run(args: WorkArgs) -> anyhow::Result<()> {
    let tenant = Tenant::new(&args.tenant, &args.queue).context("--tenant")?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    std::fs::create_dir_all(&args.pdf_dir)
        .with_context(|| format!("creating {}", args.pdf_dir.display()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("stop requested: no new jobs; finishing those in hand");
        let _ = stop_tx.send(true);
    });

    let hard = args.memory_limit_mb * 1024 * 1024;
    tokio::spawn(memory::watch(hard / 8 * 7, hard));
    if let Some(address) = args.metrics_address.clone() {
        metrics::init();
        tokio::spawn(metrics::serve(address));
    }

    let broker_client = redis::Client::open(args.broker_url.as_str()).context("--broker-url")?;
    let results_client =
        redis::Client::open(args.result_backend.as_str()).context("--result-backend")?;
    let worker_id = format!(
        "{}-{}-{:08x}",
        files::host_name(),
        std::process::id(),
        rand_suffix()
    );
    let (broker, results) = loop {
        let connected = async {
            let b = Broker::connect(
                &broker_client,
                tenant.clone(),
                worker_id.clone(),
                args.visibility_timeout,
            )
            .await?;
            let r = results_client.get_connection_manager().await?;
            Ok::<_, redis::RedisError>((b, r))
        };
        match connected.await {
            Ok(pair) => break pair,
            Err(e) => {
                warn!(error = %e, "Redis B unreachable; retrying in 1 s");
                if *stop_rx.borrow() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };

    let worker = Arc::new(Worker {
        render_options: RenderOptions {
            media_root: args.media_root.clone(),
            time_zone: args.time_zone.clone(),
            today: None,
        },
        settings: args,
        broker,
        results,
        in_hand: Mutex::new(HashMap::new()),
    });
    let s = &worker.settings;
    files::sweep(&s.pdf_dir, s.ttl, s.hard_time_limit);
    worker.broker.heartbeat().await.context("first heartbeat")?;
    if let Ok(n) = worker.broker.restore().await {
        if n > 0 {
            info!(restored = n, "jobs of dead workers returned to the queue");
        }
    }
    tokio::spawn(housekeeping(worker.clone()));
    info!(
        worker = %worker.broker.worker_id,
        queue = %worker.broker.tenant.queue(),
        concurrency = s.concurrency,
        "worker ready"
    );

    consume(&worker, &broker_client, stop_rx).await;
    shut_down(&worker).await;
    Ok(())
}

/// Takes messages while there is a free slot, until a stop is requested.
async fn consume(worker: &Arc<Worker>, client: &redis::Client, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(worker.settings.concurrency));
    let mut blocking = None;
    while !*stop.borrow() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        if blocking.is_none() {
            match Broker::blocking_connection(client).await {
                Ok(c) => blocking = Some(c),
                Err(e) => {
                    warn!(error = %e, "Redis B unreachable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(conn) = blocking.as_mut() else {
            continue;
        };
        // A short wait keeps the stop check timely; a message that arrives as the stop is
        // requested stays in the in-flight list and is returned by `shut_down`.
        match worker.broker.take(conn, Duration::from_secs(1)).await {
            Ok(Some(raw)) if !*stop.borrow() => {
                tokio::spawn(job::process(worker.clone(), raw, permit));
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "taking from the queue failed; reconnecting");
                blocking = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Waits up to the grace period for jobs in hand, then returns the rest to the queue.
async fn shut_down(worker: &Arc<Worker>) {
    let deadline = tokio::time::Instant::now() + worker.settings.shutdown_grace;
    while tokio::time::Instant::now() < deadline && !worker.in_hand.lock().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<(String, String)> = worker.in_hand.lock().await.drain().collect();
    for (tid, raw) in &left {
        if let Ok(true) = worker.broker.give_back(raw).await {
            let _ = worker.broker.uncount_delivery(tid).await;
            let _ = worker.broker.forget_lock(tid).await;
            info!(task_id = %tid, "job returned to the queue");
        }
    }
    // Anything else still in the in-flight list (taken as the stop came) goes back too.
    if let Err(e) = worker.broker.return_all().await {
        warn!(error = %e, "could not return in-flight messages; they are redelivered after the visibility timeout");
        return;
    }
    let _ = worker.broker.leave().await;
    info!(returned = left.len(), "worker stopped");
}

/// Heartbeats, lock refreshes, redelivery of dead workers' jobs, queue depth and sweeps.
async fn housekeeping(worker: Arc<Worker>) {
    let s = &worker.settings;
    let beat = (s.visibility_timeout / 3).max(Duration::from_millis(100));
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(beat).await;
        if let Err(e) = worker.broker.heartbeat().await {
            warn!(error = %e, "heartbeat failed");
            continue;
        }
        let tasks: Vec<String> = worker.in_hand.lock().await.keys().cloned().collect();
        for tid in tasks {
            let _ = worker.broker.lock(&tid).await;
        }
        match worker.broker.restore().await {
            Ok(n) if n > 0 => info!(restored = n, "jobs of dead workers returned to the queue"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "restoring dead workers' jobs failed"),
        }
        if let Ok(depth) = worker.broker.depth().await {
            metrics::QUEUE_DEPTH.set(depth as i64);
        }
        if last_sweep.elapsed() >= s.sweep_interval {
            last_sweep = tokio::time::Instant::now();
            let dir = s.pdf_dir.clone();
            let (ttl, hard) = (s.ttl, s.hard_time_limit);
            let _ = tokio::task::spawn_blocking(move || files::sweep(&dir, ttl, hard)).await;
        }
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
