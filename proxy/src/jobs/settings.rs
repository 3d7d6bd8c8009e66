//! The validated `[jobs]` section and the `pdf` route settings, as `config.rs` builds them.
//!
//! Kept beside the code that uses them; only `config.rs` constructs them from the file.

use std::path::PathBuf;
use std::time::Duration;

use sapl_renderer::ReportKind;

/// `[jobs]`: how the edge reaches Redis B, PostgreSQL and the PDF directory, and its limits.
#[derive(Debug, Clone)]
pub struct JobsSettings {
    /// Redis B, DB 0 (`CELERY_BROKER_URL` when the file does not say). `None`: PDF routes
    /// behave as if Redis B were down (legacy links go to Django, the API answers 503).
    pub broker_url: Option<String>,
    /// Redis B, DB 1 (`CELERY_RESULT_BACKEND` when the file does not say).
    pub result_backend: Option<String>,
    /// SAPL's PostgreSQL (`DATABASE_URL`), for data fingerprints; `None`: finished PDFs are
    /// reused until their TTL ends.
    pub database_url: Option<String>,
    /// The tenant (chamber): the key prefix on Redis B (`POD_NAMESPACE` when not set).
    pub tenant: Option<String>,
    pub queue: String,
    pub task_name: String,
    /// How long a legacy link waits for its PDF before answering the wait page.
    pub wait_budget: Duration,
    /// Messages waiting in the queue past which no new job is created.
    pub max_queue_depth: u64,
    /// New jobs one client address may create per minute; 0 means no limit.
    pub new_jobs_per_ip: u32,
    /// Lifetime of job records (and of the PDFs, swept by the worker).
    pub ttl: Duration,
    /// Where the worker writes `<task_id>.pdf`.
    pub pdf_dir: PathBuf,
    /// The URL path `pdf_dir` is served under (by a `files` route), ending in `/`.
    pub pdf_url: String,
    /// How long a computed fingerprint is trusted before it is asked again.
    pub fingerprint_cache: Duration,
}

/// Which front door a `pdf` route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdfMode {
    /// `POST /pdf/<kind>/<id>`: 202 and a status URL.
    Api,
    /// `GET /pdf/status/<task_id>`.
    Status,
    /// SAPL's own `/relatorios/...` URLs: wait, then the PDF or the wait page.
    Legacy,
}

/// A `pdf` route: its mode and, when the path does not carry it, the report kind.
#[derive(Debug, Clone)]
pub struct PdfRoute {
    pub mode: PdfMode,
    pub kind: Option<ReportKind>,
}

/// Parses a kind as routes and URLs name it; `materia` is the plan's alias of
/// `materia-tramitacao` (`POST /pdf/materia/<id>`).
pub fn parse_kind(name: &str) -> Option<ReportKind> {
    match name {
        "materia" => Some(ReportKind::MateriaTramitacao),
        other => other.parse().ok(),
    }
}
