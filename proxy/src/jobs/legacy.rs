//! SAPL's legacy report links (`/relatorios/<pk>/materia-tramitacao` and the others),
//! intercepted so that Gunicorn never builds a PDF.
//!
//! The link finds or joins the job, then waits up to the wait budget, holding nothing
//! upstream: woken by the result channel, re-reading the job record every second in case
//! a notification was missed. It answers the PDF itself (200, inline) when the job is
//! done in time, or the pt-BR wait page that follows the status URL. When Redis B is
//! unreachable the request is handed to Django, exactly as before the edge existed.
//!
//! Limitation: a logged-in reader's `sessao-plenaria` link goes to Django, because only
//! Django can tell whether the session may see restricted correspondências.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Method;
use pingora::proxy::Session;
use pingora::Result;
use sapl_jobs::{store, FailReason, JobState};
use sapl_renderer::{ReaderClass, ReportKind, ReportRequest};
use tracing::debug;

use super::api::{report_id, status_url};
use super::settings::PdfRoute;
use super::{answer, metrics, Ask, Jobs};
use crate::proxy::RequestCtx;

/// How often a waiting link re-reads the job record besides the notifications.
const POLL: Duration = Duration::from_secs(1);

/// How a wait ended.
enum Waited {
    Done,
    Failed(FailReason),
    Pending,
}

/// Answers a legacy link; `Ok(false)` forwards it to Django.
pub async fn serve(
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &PdfRoute,
    captures: &HashMap<String, String>,
) -> Result<bool> {
    let method = session.req_header().method.clone();
    let Some(kind) = route.kind else {
        return Ok(false);
    };
    let Some(id) = report_id(kind, captures) else {
        return Ok(false);
    };
    if method != Method::GET && method != Method::HEAD {
        return Ok(false);
    }
    if kind == ReportKind::SessaoPlenaria && has_session(session) {
        metrics::FALLBACKS
            .with_label_values(&["authenticated"])
            .inc();
        return Ok(false);
    }
    let req = ReportRequest {
        kind,
        id,
        reader: ReaderClass::Anonymous,
    };
    let started = Instant::now();

    let (task_id, state) = match jobs.ask(&req, Some(ctx.client())).await {
        Ask::Job { task_id, state } => (task_id, state),
        Ask::Down => {
            metrics::FALLBACKS.with_label_values(&["redis_down"]).inc();
            return Ok(false);
        }
        Ask::NotFound => {
            answer::html(session, ctx, 404, answer::failure_page(true), &[]).await?;
            return Ok(true);
        }
        Ask::Busy(_) => {
            let retry = 30;
            let headers = [("Retry-After", retry.to_string())];
            answer::html(session, ctx, 503, answer::busy_page(retry), &headers).await?;
            return Ok(true);
        }
    };

    let deadline = started + jobs.settings.wait_budget;
    let waited = wait(jobs, &task_id, state, deadline).await;
    let filename = format!("{}-{}.pdf", kind.as_str(), id.to_string().replace('/', "-"));
    let outcome = match waited {
        Waited::Done => {
            if answer::pdf(session, ctx, &jobs.pdf_path(&task_id), &filename).await? {
                "pdf"
            } else {
                wait_page(jobs, session, ctx, &task_id).await?;
                "wait_page"
            }
        }
        Waited::Failed(reason) => {
            let not_found = reason.http_status() == 404;
            let status = if not_found { 404 } else { 503 };
            answer::html(session, ctx, status, answer::failure_page(not_found), &[]).await?;
            "failed"
        }
        Waited::Pending => {
            wait_page(jobs, session, ctx, &task_id).await?;
            "wait_page"
        }
    };
    metrics::WAIT_OUTCOMES.with_label_values(&[outcome]).inc();
    metrics::WAIT_SECONDS
        .with_label_values(&[outcome])
        .observe(started.elapsed().as_secs_f64());
    Ok(true)
}

async fn wait_page(
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
    task_id: &str,
) -> Result<()> {
    let status = status_url(jobs, task_id);
    let page = answer::wait_page(&status, &jobs.pdf_url(task_id));
    let headers = [("X-Job-Id", task_id.to_string())];
    answer::html(session, ctx, 202, page, &headers).await
}

/// Waits for the job to finish, until `deadline`.
async fn wait(jobs: &Jobs, task_id: &str, mut state: JobState, deadline: Instant) -> Waited {
    let (Some(tenant), Ok(mut results)) = (&jobs.tenant, jobs.results.get().await) else {
        return Waited::Pending;
    };
    let notify = jobs.waiters.watch(task_id);
    let mut reason = None;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering, so a change published in between is not missed.
        match store::read_job(&mut results, tenant, task_id).await {
            Ok(Some(record)) => {
                state = record.state;
                reason = record.reason;
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "reading a job while waiting failed");
            }
        }
        let now = Instant::now();
        if state.is_final() || now >= deadline {
            break;
        }
        let pause = (deadline - now).min(POLL);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    jobs.waiters.unwatch(task_id, notify);
    match state {
        JobState::Done => Waited::Done,
        JobState::Failed => Waited::Failed(FailReason::from_code(reason.as_deref().unwrap_or(""))),
        _ => Waited::Pending,
    }
}

/// Whether the request carries Django's session cookie.
fn has_session(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim_start().starts_with("sessionid="))
}
