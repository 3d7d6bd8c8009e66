//! Job states, the job record, and their Celery result-backend form.
//!
//! A job is `queued`, then `rendering`, then `done` or `failed` (with a reason). The job
//! record (a hash in the result database) carries what the edge's status API shows; the
//! Celery record `celery-task-meta-<id>` carries the same state in Celery's words
//! (`PENDING`, `STARTED`, `RETRY`, `SUCCESS`, `FAILURE`) so `AsyncResult(id).state` works.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting in the queue (or waiting to be retried after a transient fault).
    Queued,
    /// A worker is rendering it.
    Rendering,
    /// The PDF is written under the PDF directory as `<task_id>.pdf`.
    Done,
    /// Given up: the object does not exist, a time limit or the attempt limit was reached.
    Failed,
}

impl JobState {
    /// `queued`, `rendering`, `done` or `failed`, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Rendering => "rendering",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// Celery's name for the state (`retrying` tells `RETRY` apart from `PENDING`).
    pub fn celery_status(self, retrying: bool) -> &'static str {
        match self {
            JobState::Queued if retrying => "RETRY",
            JobState::Queued => "PENDING",
            JobState::Rendering => "STARTED",
            JobState::Done => "SUCCESS",
            JobState::Failed => "FAILURE",
        }
    }

    /// Done or failed: nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "queued" => Ok(JobState::Queued),
            "rendering" => Ok(JobState::Rendering),
            "done" => Ok(JobState::Done),
            "failed" => Ok(JobState::Failed),
            _ => Err(()),
        }
    }
}

/// Why a failed job failed, in words the status API and the logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The object does not exist (answered as 404).
    NotFound,
    /// The arguments do not name a report (unknown kind, malformed id).
    BadRequest,
    /// The render ran past the hard time limit.
    TimeLimit,
    /// The job was taken too many times without finishing (the renderer died each time).
    TooManyAttempts,
    /// Transient faults persisted through every retry.
    RetriesExhausted,
    /// Anything else permanent (query rejected by the database, layout fault).
    Error,
}

impl FailReason {
    /// The short code stored in the job record (`not_found`, `time_limit`…).
    pub fn code(self) -> &'static str {
        match self {
            FailReason::NotFound => "not_found",
            FailReason::BadRequest => "bad_request",
            FailReason::TimeLimit => "time_limit",
            FailReason::TooManyAttempts => "too_many_attempts",
            FailReason::RetriesExhausted => "retries_exhausted",
            FailReason::Error => "error",
        }
    }

    /// The HTTP status a user asking for the failed job gets.
    pub fn http_status(self) -> u16 {
        match self {
            FailReason::NotFound | FailReason::BadRequest => 404,
            _ => 500,
        }
    }

    /// Parses [`FailReason::code`]; unknown codes are `Error`.
    pub fn from_code(code: &str) -> FailReason {
        match code {
            "not_found" => FailReason::NotFound,
            "bad_request" => FailReason::BadRequest,
            "time_limit" => FailReason::TimeLimit,
            "too_many_attempts" => FailReason::TooManyAttempts,
            "retries_exhausted" => FailReason::RetriesExhausted,
            _ => FailReason::Error,
        }
    }
}

/// The job record as read back from its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub kind: String,
    pub id: String,
    pub reader: String,
    pub state: JobState,
    /// For failed jobs: the [`FailReason::code`].
    pub reason: Option<String>,
    /// For failed jobs: a human-readable message.
    pub message: Option<String>,
    /// The data fingerprint the PDF was (or will be) rendered from; empty when unknown.
    pub fingerprint: String,
    /// Transient-fault retries so far.
    pub retries: u32,
    /// Size of the finished PDF.
    pub bytes: Option<u64>,
}

impl JobRecord {
    /// Reads a record from `HGETALL`; `None` when the hash is empty or has no valid state.
    pub fn from_hash(fields: &HashMap<String, String>) -> Option<JobRecord> {
        let state = fields.get("state")?.parse().ok()?;
        let text = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let opt = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        Some(JobRecord {
            kind: text("kind"),
            id: text("id"),
            reader: text("reader"),
            state,
            reason: opt("reason"),
            message: opt("message"),
            fingerprint: text("fingerprint"),
            retries: fields
                .get("retries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            bytes: fields.get("bytes").and_then(|v| v.parse().ok()),
        })
    }
}

/// Seconds since the Unix epoch, as stored in the records.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An ISO 8601 UTC timestamp (`2026-12-03T20:31:07.123456`), as Celery's `date_done`.
pub fn iso_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The `celery-task-meta-<id>` JSON for a job in `state`.
///
/// `result` is what Celery's `AsyncResult.result` returns: for a done job an object with
/// the PDF's URL path and size; for a failed one the exception form Celery decodes
/// (`exc_type`, `exc_message`, `exc_module`).
pub fn celery_meta(task_id: &str, state: JobState, retrying: bool, result: Value) -> String {
    let status = state.celery_status(retrying);
    let date_done = if state.is_final() {
        Value::String(iso_now())
    } else {
        Value::Null
    };
    json!({
        "status": status,
        "result": result,
        "traceback": null,
        "children": [],
        "date_done": date_done,
        "task_id": task_id,
    })
    .to_string()
}

/// The Celery `result` of a failed job: a Python exception Celery can rebuild.
pub fn celery_failure(reason: FailReason, message: &str) -> Value {
    let exc_type = match reason {
        FailReason::NotFound => "LookupError",
        FailReason::BadRequest => "ValueError",
        FailReason::TimeLimit => "TimeoutError",
        _ => "RuntimeError",
    };
    json!({
        "exc_type": exc_type,
        "exc_message": [message],
        "exc_module": "builtins",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_map_to_celery() {
        for s in [
            JobState::Queued,
            JobState::Rendering,
            JobState::Done,
            JobState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert_eq!(JobState::Done.celery_status(false), "SUCCESS");
        assert_eq!(JobState::Queued.celery_status(true), "RETRY");
    }

    #[test]
    fn meta_has_celery_fields() {
        let m: Value = serde_json::from_str(&celery_meta(
            "abc",
            JobState::Failed,
            false,
            celery_failure(FailReason::NotFound, "materia 9 not found"),
        ))
        .unwrap();
        assert_eq!(m["status"], "FAILURE");
        assert_eq!(m["task_id"], "abc");
        assert_eq!(m["result"]["exc_type"], "LookupError");
        assert!(m["date_done"].as_str().unwrap().starts_with("20"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn record_reads_from_hash() {
        let mut h = HashMap::new();
        h.insert("state".to_string(), "failed".to_string());
        h.insert("kind".to_string(), "etiqueta-materia".to_string());
        h.insert("reason".to_string(), "not_found".to_string());
        let r = JobRecord::from_hash(&h).unwrap();
        assert_eq!(r.state, JobState::Failed);
        assert_eq!(r.reason.as_deref(), Some("not_found"));
        assert!(JobRecord::from_hash(&HashMap::new()).is_none());
    }
}
