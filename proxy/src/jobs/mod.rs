//! PDF jobs at the edge: the `pdf` route action (issue 3).
//!
//! Reports are no longer built inside Gunicorn. A request for one finds or creates a job on
//! Redis B (Celery's wire format, see the `sapl-jobs` crate), and the renderer's worker
//! builds the PDF out of band into the PDF directory under the media root. Three front
//! doors ([`settings::PdfMode`]): the API (`POST /pdf/<kind>/<id>` → 202, [`api`]), the
//! status URL ([`api::status`]) and SAPL's legacy `/relatorios/...` links, which wait a
//! bounded time and answer the PDF or a wait page ([`legacy`]).
//!
//! Owns: the process-wide job client ([`Jobs`], set once at start), the lazy links to
//! Redis B and PostgreSQL ([`link`], [`fingerprint`]), result notifications ([`events`]),
//! the per-client new-job limit ([`limit`]) and the job metrics ([`metrics`]). Redis B
//! being down never affects other routes: nothing here runs for them, and nothing connects
//! before the first PDF request.

pub mod answer;
pub mod api;
pub mod events;
pub mod fingerprint;
pub mod legacy;
pub mod limit;
pub mod link;
pub mod metrics;
pub mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pingora::proxy::Session;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::Result;
use sapl_jobs::store::{self, EnqueueOptions, Enqueued};
use sapl_jobs::{JobSpec, JobState, Tenant};
use sapl_renderer::ReportRequest;
use tracing::{info, warn};

use crate::config::{Config, Matcher, Route};
use crate::proxy::RequestCtx;
use events::{Listener, Waiters};
use fingerprint::{Fingerprint, Fingerprints};
use limit::NewJobLimit;
use link::RedisLink;
use settings::{JobsSettings, PdfMode, PdfRoute};

/// The process's job client, built from `[jobs]` at start (a reload does not change it).
static JOBS: OnceLock<Arc<Jobs>> = OnceLock::new();

/// Everything a PDF request needs.
pub struct Jobs {
    pub settings: JobsSettings,
    /// `None` when no tenant is configured: jobs are then unavailable.
    pub tenant: Option<Tenant>,
    pub broker: RedisLink,
    pub results: RedisLink,
    pub fingerprints: Fingerprints,
    pub waiters: Arc<Waiters>,
    pub limit: NewJobLimit,
    /// Requests of this edge between reading the queue depth and enqueueing.
    creating: AtomicUsize,
    /// The producer name written in messages (`sapl-edge@<host>`).
    pub origin: String,
}

/// What finding or creating a job came to.
#[derive(Debug)]
pub enum Ask {
    Job {
        task_id: String,
        state: JobState,
    },
    /// The report's object does not exist.
    NotFound,
    /// No new job may be created now (`queue_full` or `ip_limit`).
    Busy(&'static str),
    /// Redis B is unreachable (or jobs are not configured).
    Down,
}

/// Builds the job client from the configuration and adds the result listener to the
/// server. Does nothing when the file has no `[jobs]` section.
pub fn start(config: &Config, server: &mut Server) {
    let Some(settings) = config.jobs.clone() else {
        return;
    };
    metrics::init();
    let tenant = settings.tenant.as_deref().and_then(|name| {
        Tenant::new(name, &settings.queue)
            .map_err(|e| warn!(error = %e, "PDF jobs unavailable"))
            .ok()
    });
    if settings.broker_url.is_none() || tenant.is_none() {
        warn!("[jobs] has no broker URL or tenant (CELERY_BROKER_URL, POD_NAMESPACE): legacy report links go to Django, the PDF API answers 503");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let jobs = Arc::new(Jobs {
        broker: RedisLink::new("broker", settings.broker_url.as_deref()),
        results: RedisLink::new("results", settings.result_backend.as_deref()),
        fingerprints: Fingerprints::new(settings.database_url.clone(), settings.fingerprint_cache),
        waiters: Arc::new(Waiters::default()),
        limit: NewJobLimit::new(settings.new_jobs_per_ip),
        creating: AtomicUsize::new(0),
        origin: format!("sapl-edge@{host}"),
        tenant,
        settings,
    });
    if let Some(tenant) = &jobs.tenant {
        server.add_service(background_service(
            "jobs results",
            Listener {
                url: jobs.settings.result_backend.clone(),
                pattern: tenant.meta_pattern(),
                channel_prefix: tenant.meta(""),
                waiters: jobs.waiters.clone(),
            },
        ));
        info!(tenant = tenant.name(), queue = %tenant.queue(), "PDF jobs enabled");
    }
    let _ = JOBS.set(jobs);
}

/// Answers a request on a `pdf` route. `Ok(false)` hands it to Gunicorn (legacy links
/// when Redis B is down, as before the edge existed).
pub async fn handle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    pdf: &PdfRoute,
    path: &str,
) -> Result<bool> {
    let captures = captures(route, path);
    let Some(jobs) = JOBS.get().cloned() else {
        return match pdf.mode {
            PdfMode::Legacy => {
                metrics::FALLBACKS
                    .with_label_values(&["unconfigured"])
                    .inc();
                Ok(false)
            }
            _ => api::unavailable(session, ctx).await.map(|()| true),
        };
    };
    match pdf.mode {
        PdfMode::Api => api::create(&jobs, session, ctx, pdf, &captures).await,
        PdfMode::Status => api::status(&jobs, session, ctx, &captures).await,
        PdfMode::Legacy => legacy::serve(&jobs, session, ctx, pdf, &captures).await,
    }
}

/// The route regex's named captures for `path`.
fn captures(route: &Route, path: &str) -> HashMap<String, String> {
    let Matcher::Regex(re) = &route.matcher else {
        return HashMap::new();
    };
    let Some(caps) = re.captures(path) else {
        return HashMap::new();
    };
    re.capture_names()
        .flatten()
        .filter_map(|name| Some((name.to_string(), caps.name(name)?.as_str().to_string())))
        .collect()
}

impl Jobs {
    /// Where the job's PDF is on disk.
    pub fn pdf_path(&self, task_id: &str) -> PathBuf {
        self.settings.pdf_dir.join(format!("{task_id}.pdf"))
    }

    /// The URL path of the job's PDF.
    pub fn pdf_url(&self, task_id: &str) -> String {
        format!("{}{task_id}.pdf", self.settings.pdf_url)
    }

    /// Finds the job for `req` or creates it (the dedup rule is in `sapl_jobs::store`).
    pub async fn ask(&self, req: &ReportRequest, client: Option<IpAddr>) -> Ask {
        let started = Instant::now();
        let Some(tenant) = &self.tenant else {
            return Ask::Down;
        };
        let fingerprint = self.fingerprints.of(req).await;
        let fp = match &fingerprint {
            Fingerprint::NotFound => return Ask::NotFound,
            Fingerprint::Known(fp) => Some(fp.as_str()),
            Fingerprint::Unknown => None,
        };
        let (mut broker, mut results) = match (self.broker.get().await, self.results.get().await) {
            (Ok(b), Ok(r)) => (b, r),
            _ => {
                metrics::REFUSED.with_label_values(&["redis_down"]).inc();
                return Ask::Down;
            }
        };
        // Jobs this edge is creating right now count against the cap too: their messages
        // are not in the queue yet, and a burst would otherwise all read the same depth.
        // Counted before the depth is read, so a job is in one or the other (or both).
        let creating = Creation::start(&self.creating);
        let depth = match store::queue_depth(&mut broker, tenant).await {
            Ok(d) => d,
            Err(e) => {
                self.broker.mark_down(&e);
                metrics::REFUSED.with_label_values(&["redis_down"]).inc();
                return Ask::Down;
            }
        };
        metrics::QUEUE_DEPTH.set(depth as i64);
        let full = depth + creating.ahead as u64 >= self.settings.max_queue_depth;
        let limited = !full && !self.limit.try_take(client);
        let spec = JobSpec {
            kind: req.kind.as_str().to_string(),
            id: req.id.to_string(),
            reader: req.reader.as_str().to_string(),
        };
        let mut opts = EnqueueOptions {
            task_name: &self.settings.task_name,
            origin: &self.origin,
            ttl_secs: self.settings.ttl.as_secs(),
            may_create: !full && !limited,
            force_new: false,
        };

        let mut outcome = store::enqueue(&mut broker, &mut results, tenant, &spec, fp, &opts).await;
        // A finished job whose file is gone, or a failure while the data is readable now,
        // is not reused: the report is rendered again.
        if let Ok(Enqueued::Reused { task_id, state }) = &outcome {
            let stale = match state {
                JobState::Done => !self.pdf_path(task_id).exists(),
                _ => fp.is_some(),
            };
            if stale {
                opts.force_new = true;
                outcome = store::enqueue(&mut broker, &mut results, tenant, &spec, fp, &opts).await;
            }
        }
        drop(creating);
        metrics::ENQUEUE_SECONDS.observe(started.elapsed().as_secs_f64());
        if !full && !limited && !matches!(outcome, Ok(Enqueued::Created { .. })) {
            self.limit.give_back(client);
        }
        let kind = req.kind.as_str();
        match outcome {
            Ok(Enqueued::Created { task_id }) => {
                metrics::ENQUEUED.with_label_values(&[kind]).inc();
                Ask::Job {
                    task_id,
                    state: JobState::Queued,
                }
            }
            Ok(Enqueued::Joined { task_id, state }) => {
                metrics::DEDUPLICATED
                    .with_label_values(&[kind, "joined"])
                    .inc();
                Ask::Job { task_id, state }
            }
            Ok(Enqueued::Reused { task_id, state }) => {
                metrics::DEDUPLICATED
                    .with_label_values(&[kind, "reused"])
                    .inc();
                Ask::Job { task_id, state }
            }
            Ok(Enqueued::Refused) => {
                let reason = if full { "queue_full" } else { "ip_limit" };
                metrics::REFUSED.with_label_values(&[reason]).inc();
                Ask::Busy(reason)
            }
            Err(e) => {
                self.broker.mark_down(&e);
                metrics::REFUSED.with_label_values(&["redis_down"]).inc();
                Ask::Down
            }
        }
    }
}

/// One request's place among those about to create a job (see `Jobs::ask`).
struct Creation<'a> {
    counter: &'a AtomicUsize,
    /// How many were already creating when this one started.
    ahead: usize,
}

impl<'a> Creation<'a> {
    fn start(counter: &'a AtomicUsize) -> Creation<'a> {
        let ahead = counter.fetch_add(1, Ordering::SeqCst);
        Creation { counter, ahead }
    }
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}
