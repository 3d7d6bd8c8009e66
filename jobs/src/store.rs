//! The Redis operations both binaries perform on job records: enqueue with dedup, read a
//! record, record a state change.
//!
//! Dedup rule: the dedup index maps (kind, id, reader class) to the latest job. A request
//! joins that job while it is queued; joins it while it renders or reuses it once done when
//! the data fingerprint the caller computed equals the job's (or the caller could not
//! compute one); otherwise a new job is created. So a finished PDF is served until the
//! report's data changes (or its TTL ends), and identical requests share one render.
//! The check and the creation run in one Lua script, so two edges racing create one job.
//!
//! The worker's own broker protocol (in-flight lists, redelivery) lives with the worker.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde_json::Value;

use crate::keys::Tenant;
use crate::message::{self, JobSpec};
use crate::state::{celery_meta, now_secs, JobRecord, JobState};

/// How [`enqueue`] behaves.
#[derive(Debug, Clone)]
pub struct EnqueueOptions<'a> {
    /// The Celery task name written in the message.
    pub task_name: &'a str,
    /// The producer's name (`sapl-edge@<host>`).
    pub origin: &'a str,
    /// Lifetime of the job record, result record and dedup entry, in seconds.
    pub ttl_secs: u64,
    /// False when a new job may not be created (queue full, client over its limit): the
    /// request may still join or reuse an existing job.
    pub may_create: bool,
    /// Create a new job even when a finished one would be reused (its file is gone).
    pub force_new: bool,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job was created and pushed to the queue.
    Created { task_id: String },
    /// An identical job is queued or rendering; the request shares it.
    Joined { task_id: String, state: JobState },
    /// An identical job finished from the same data; its PDF (or failure) stands.
    Reused { task_id: String, state: JobState },
    /// A new job would be needed and `may_create` was false.
    Refused,
}

const DEDUP_SCRIPT: &str = r#"
local tid = redis.call('GET', KEYS[1])
local fp = ARGV[2]
if tid and ARGV[11] ~= '1' then
  local rec = redis.call('HMGET', ARGV[7] .. tid, 'state', 'fingerprint')
  local state, jfp = rec[1], rec[2] or ''
  local same = (fp == '' or jfp == '' or jfp == fp)
  if state == 'queued' then
    return {'joined', tid, state}
  elseif state == 'rendering' and same then
    return {'joined', tid, state}
  elseif (state == 'done' or state == 'failed') and same then
    return {'reused', tid, state}
  end
end
if ARGV[10] ~= '1' then
  return {'refused', '', ''}
end
local new = ARGV[1]
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], new, 'EX', ttl)
redis.call('HSET', ARGV[7] .. new, 'kind', ARGV[4], 'id', ARGV[5], 'reader', ARGV[6],
  'state', 'queued', 'fingerprint', fp, 'enqueued_at', ARGV[12])
redis.call('EXPIRE', ARGV[7] .. new, ttl)
redis.call('SET', ARGV[8] .. new, ARGV[9], 'EX', ttl)
return {'created', new, 'queued'}
"#;

/// Finds or creates the job for `spec` (see the module's dedup rule) and, when created,
/// pushes its message to the tenant's queue.
///
/// `fingerprint` is the report's current data fingerprint, or `None` when it could not be
/// computed (then any existing job is joined or reused).
pub async fn enqueue<B, R>(
    broker: &mut B,
    results: &mut R,
    tenant: &Tenant,
    spec: &JobSpec,
    fingerprint: Option<&str>,
    opts: &EnqueueOptions<'_>,
) -> RedisResult<Enqueued>
where
    B: ConnectionLike + Send,
    R: ConnectionLike + Send,
{
    let new_id = message::new_task_id();
    let pending = celery_meta(&new_id, JobState::Queued, false, Value::Null);
    let (outcome, task_id, state): (String, String, String) = Script::new(DEDUP_SCRIPT)
        .key(tenant.dedup(&spec.kind, &spec.id, &spec.reader))
        .arg(&new_id)
        .arg(fingerprint.unwrap_or(""))
        .arg(opts.ttl_secs)
        .arg(&spec.kind)
        .arg(&spec.id)
        .arg(&spec.reader)
        .arg(tenant.job(""))
        .arg(tenant.meta(""))
        .arg(pending)
        .arg(if opts.may_create { "1" } else { "0" })
        .arg(if opts.force_new { "1" } else { "0" })
        .arg(now_secs())
        .invoke_async(results)
        .await?;
    let state = state.parse().unwrap_or(JobState::Queued);
    match outcome.as_str() {
        "created" => {
            let raw = message::build(
                opts.task_name,
                &task_id,
                spec,
                tenant.queue_name(),
                opts.origin,
            );
            let pushed: RedisResult<i64> = redis::cmd("LPUSH")
                .arg(tenant.queue())
                .arg(raw)
                .query_async(broker)
                .await;
            if let Err(e) = pushed {
                // The record exists but no message does: withdraw it so the next request
                // creates the job again instead of joining one nobody will render.
                let _: RedisResult<()> = redis::pipe()
                    .del(tenant.dedup(&spec.kind, &spec.id, &spec.reader))
                    .del(tenant.job(&task_id))
                    .del(tenant.meta(&task_id))
                    .query_async(results)
                    .await;
                return Err(e);
            }
            Ok(Enqueued::Created { task_id })
        }
        "joined" => Ok(Enqueued::Joined { task_id, state }),
        "reused" => Ok(Enqueued::Reused { task_id, state }),
        _ => Ok(Enqueued::Refused),
    }
}

/// Reads a job record; `None` when the job is unknown (or expired).
pub async fn read_job<R: ConnectionLike + Send>(
    results: &mut R,
    tenant: &Tenant,
    task_id: &str,
) -> RedisResult<Option<JobRecord>> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(tenant.job(task_id))
        .query_async(results)
        .await?;
    Ok(JobRecord::from_hash(&fields))
}

/// Records a state change: the job hash fields, Celery's result record, and a message on
/// the result channel (Celery's backend publishes the record on a channel of its name),
/// in one transaction.
pub async fn record_state<R: ConnectionLike + Send>(
    results: &mut R,
    tenant: &Tenant,
    task_id: &str,
    change: &StateChange<'_>,
    ttl_secs: u64,
) -> RedisResult<()> {
    let meta = celery_meta(
        task_id,
        change.state,
        change.retrying,
        change.celery_result.clone(),
    );
    let mut fields: Vec<(&str, String)> = vec![("state", change.state.as_str().to_string())];
    fields.extend(change.fields.iter().map(|(k, v)| (*k, v.clone())));
    let job = tenant.job(task_id);
    let channel = tenant.meta(task_id);
    redis::pipe()
        .atomic()
        .hset_multiple(&job, &fields)
        .ignore()
        .expire(&job, ttl_secs as i64)
        .ignore()
        .set_ex(&channel, &meta, ttl_secs)
        .ignore()
        .publish(&channel, &meta)
        .ignore()
        .query_async(results)
        .await
}

/// One state change for [`record_state`].
#[derive(Debug, Clone)]
pub struct StateChange<'a> {
    pub state: JobState,
    /// Queued again after a transient fault (Celery's `RETRY`).
    pub retrying: bool,
    /// Other job-record fields to set (`reason`, `fingerprint`, `bytes`…).
    pub fields: Vec<(&'a str, String)>,
    /// Celery's `result` for the record.
    pub celery_result: Value,
}

/// The number of messages waiting in the tenant's queue.
pub async fn queue_depth<B: ConnectionLike + Send>(
    broker: &mut B,
    tenant: &Tenant,
) -> RedisResult<u64> {
    redis::cmd("LLEN")
        .arg(tenant.queue())
        .query_async(broker)
        .await
}
