//! The job API: `POST /pdf/<kind>/<id>` creates (or joins) a job and answers 202 with its
//! status URL; `GET /pdf/status/<task_id>` answers the job's state as JSON, or 302 to the
//! PDF once it is done.
//!
//! Errors: unknown kind or object → 404, malformed id → 400, unknown job → 404, queue
//! full → 503 with `Retry-After`, client over its new-job limit → 429, Redis B down → 503.

use std::collections::HashMap;

use http::Method;
use pingora::proxy::Session;
use pingora::Result;
use sapl_jobs::{message, store, JobState};
use sapl_renderer::{ReaderClass, ReportId, ReportKind, ReportRequest};
use serde_json::json;

use super::answer;
use super::settings::{parse_kind, PdfRoute};
use super::{Ask, Jobs};
use crate::proxy::RequestCtx;

/// The report id from a route's captures: `id` (a pk, or `numero/ano`), or `numero` and
/// `ano`. `None` when it is malformed or does not suit the kind.
pub fn report_id(kind: ReportKind, captures: &HashMap<String, String>) -> Option<ReportId> {
    let id = match (captures.get("numero"), captures.get("ano")) {
        (Some(numero), Some(ano)) => ReportId::Protocolo {
            numero: numero.parse().ok()?,
            ano: ano.parse().ok()?,
        },
        _ => captures.get("id")?.parse().ok()?,
    };
    let positive = match id {
        ReportId::Pk(pk) => pk > 0,
        ReportId::Protocolo { numero, ano } => numero > 0 && ano > 0,
    };
    let suits = matches!(
        (kind, id),
        (ReportKind::EtiquetaProtocolo, ReportId::Protocolo { .. })
            | (
                ReportKind::MateriaTramitacao
                    | ReportKind::EtiquetaMateria
                    | ReportKind::SessaoPlenaria,
                ReportId::Pk(_)
            )
    );
    (positive && suits).then_some(id)
}

/// `POST /pdf/<kind>/<id>`.
pub async fn create(
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &PdfRoute,
    captures: &HashMap<String, String>,
) -> Result<bool> {
    if session.req_header().method != Method::POST {
        let body = json!({"error": "use POST to request a PDF"});
        answer::json(session, ctx, 405, body, &[("Allow", "POST".into())]).await?;
        return Ok(true);
    }
    let kind = route
        .kind
        .or_else(|| captures.get("kind").and_then(|k| parse_kind(k)));
    let Some(kind) = kind else {
        let body = json!({"error": "unknown report kind"});
        answer::json(session, ctx, 404, body, &[]).await?;
        return Ok(true);
    };
    let Some(id) = report_id(kind, captures) else {
        let body = json!({"error": "malformed id", "kind": kind.as_str()});
        answer::json(session, ctx, 400, body, &[]).await?;
        return Ok(true);
    };
    // Restricted content is never rendered for the API: the edge cannot verify a session.
    let req = ReportRequest {
        kind,
        id,
        reader: ReaderClass::Anonymous,
    };

    match jobs.ask(&req, Some(ctx.client())).await {
        Ask::Job { task_id, state } => {
            let status_url = status_url(jobs, &task_id);
            let body =
                json!({"task_id": task_id, "state": state.as_str(), "status_url": status_url});
            answer::json(session, ctx, 202, body, &[("Location", status_url)]).await?;
        }
        Ask::NotFound => {
            let body = json!({"error": "not found", "kind": kind.as_str(), "id": id.to_string()});
            answer::json(session, ctx, 404, body, &[]).await?;
        }
        Ask::Busy("ip_limit") => {
            let body = json!({"error": "too many new reports from this address"});
            answer::json(session, ctx, 429, body, &[("Retry-After", "60".into())]).await?;
        }
        Ask::Busy(_) => {
            let body = json!({"error": "too many reports queued"});
            answer::json(session, ctx, 503, body, &[("Retry-After", "30".into())]).await?;
        }
        Ask::Down => unavailable(session, ctx).await?,
    }
    Ok(true)
}

/// `GET /pdf/status/<task_id>`.
pub async fn status(
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
    captures: &HashMap<String, String>,
) -> Result<bool> {
    let task_id = captures.get("task_id").map(String::as_str).unwrap_or("");
    let (true, Some(tenant)) = (message::is_task_id(task_id), &jobs.tenant) else {
        answer::json(session, ctx, 404, json!({"error": "unknown job"}), &[]).await?;
        return Ok(true);
    };
    let Ok(mut results) = jobs.results.get().await else {
        unavailable(session, ctx).await?;
        return Ok(true);
    };
    let record = match store::read_job(&mut results, tenant, task_id).await {
        Ok(r) => r,
        Err(e) => {
            jobs.results.mark_down(&e);
            unavailable(session, ctx).await?;
            return Ok(true);
        }
    };
    let Some(record) = record else {
        answer::json(session, ctx, 404, json!({"error": "unknown job"}), &[]).await?;
        return Ok(true);
    };
    let mut body = json!({
        "task_id": task_id,
        "state": record.state.as_str(),
        "kind": record.kind,
        "id": record.id,
    });
    match record.state {
        JobState::Done => {
            let pdf_url = jobs.pdf_url(task_id);
            body["pdf_url"] = json!(pdf_url);
            answer::json(session, ctx, 302, body, &[("Location", pdf_url)]).await?;
        }
        JobState::Failed => {
            body["reason"] = json!(record.reason.unwrap_or_else(|| "error".into()));
            body["message"] = json!(record.message.unwrap_or_default());
            answer::json(session, ctx, 200, body, &[]).await?;
        }
        JobState::Queued | JobState::Rendering => {
            body["retries"] = json!(record.retries);
            answer::json(session, ctx, 200, body, &[]).await?;
        }
    }
    Ok(true)
}

/// The status URL of a job, as the API and the wait page give it.
pub fn status_url(_jobs: &Jobs, task_id: &str) -> String {
    format!("/pdf/status/{task_id}")
}

/// 503: Redis B unreachable or jobs not configured.
pub async fn unavailable(session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let body = json!({"error": "PDF jobs temporarily unavailable"});
    answer::json(session, ctx, 503, body, &[("Retry-After", "10".into())]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ids_must_suit_their_kind() {
        let k = ReportKind::MateriaTramitacao;
        assert_eq!(report_id(k, &caps(&[("id", "42")])), Some(ReportId::Pk(42)));
        assert_eq!(report_id(k, &caps(&[("id", "abc")])), None);
        assert_eq!(report_id(k, &caps(&[("id", "0")])), None);
        assert_eq!(report_id(k, &caps(&[("id", "15/2025")])), None);
        let p = ReportKind::EtiquetaProtocolo;
        assert_eq!(
            report_id(p, &caps(&[("numero", "15"), ("ano", "2025")])),
            Some(ReportId::Protocolo {
                numero: 15,
                ano: 2025
            })
        );
        assert_eq!(report_id(p, &caps(&[("id", "7")])), None);
    }
}
