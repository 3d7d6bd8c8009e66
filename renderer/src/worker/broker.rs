//! The worker's side of the queue: taking messages with at-least-once semantics.
//!
//! A message is moved atomically (`BLMOVE`) from the tenant's queue into this worker's
//! in-flight list before any work starts, and removed from it (`LREM`, the acknowledgement)
//! only once the job's outcome is recorded. The worker keeps a liveness key fresh while it
//! runs; when that key expires (the worker was killed), any worker's restorer moves the dead
//! worker's in-flight messages back to the queue. The liveness key is the visibility
//! timeout: a long render never triggers a redelivery while its worker is alive.
//!
//! Each job also takes a render lock naming its worker, so a second delivery of a task id
//! already being rendered by a live worker is dropped instead of rendered twice.

use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisResult, Script};
use sapl_jobs::Tenant;

/// Moves every in-flight message of workers whose liveness key expired back to the queue.
/// Returns how many messages were restored.
const RESTORE_SCRIPT: &str = r#"
local restored = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. w) == 0 then
    local list = ARGV[2] .. w
    while redis.call('LMOVE', list, KEYS[2], 'RIGHT', 'RIGHT') do
      restored = restored + 1
    end
    redis.call('SREM', KEYS[1], w)
  end
end
return restored
"#;

/// Takes the render lock when it is free, ours, or held by a worker that is no longer alive.
const LOCK_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] or redis.call('EXISTS', ARGV[3] .. holder) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Puts one in-flight message back at the consuming end of the queue.
const RETURN_SCRIPT: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// Moves everything left in one in-flight list back to the queue.
const RETURN_ALL_SCRIPT: &str = r#"
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT') do
  n = n + 1
end
return n
"#;

/// One worker's handle on the broker database.
#[derive(Clone)]
pub struct Broker {
    pub tenant: Tenant,
    pub worker_id: String,
    pub visibility: Duration,
    conn: ConnectionManager,
}

impl Broker {
    pub async fn connect(
        client: &Client,
        tenant: Tenant,
        worker_id: String,
        visibility: Duration,
    ) -> RedisResult<Broker> {
        let conn = client.get_connection_manager().await?;
        Ok(Broker {
            tenant,
            worker_id,
            visibility,
            conn,
        })
    }

    /// A connection of its own for `BLMOVE`: the shared one would time a blocking read out
    /// after 500 ms.
    pub async fn blocking_connection(client: &Client) -> RedisResult<MultiplexedConnection> {
        client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
    }

    /// Announces this worker and refreshes its liveness key.
    pub async fn heartbeat(&self) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .sadd(self.tenant.workers(), &self.worker_id)
            .ignore()
            .pset_ex(
                self.tenant.alive(&self.worker_id),
                1,
                self.visibility.as_millis() as u64,
            )
            .ignore()
            .query_async(&mut c)
            .await
    }

    /// Waits up to `wait` for a message and moves it into this worker's in-flight list.
    pub async fn take(
        &self,
        blocking: &mut MultiplexedConnection,
        wait: Duration,
    ) -> RedisResult<Option<String>> {
        redis::cmd("BLMOVE")
            .arg(self.tenant.queue())
            .arg(self.tenant.inflight(&self.worker_id))
            .arg("RIGHT")
            .arg("LEFT")
            .arg(wait.as_secs_f64())
            .query_async(blocking)
            .await
    }

    /// Acknowledges a message: it leaves the in-flight list for good.
    pub async fn ack(&self, raw: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("LREM")
            .arg(self.tenant.inflight(&self.worker_id))
            .arg(1)
            .arg(raw)
            .query_async(&mut c)
            .await
    }

    /// Returns an unfinished message to the queue (shutdown).
    pub async fn give_back(&self, raw: &str) -> RedisResult<bool> {
        let mut c = self.conn.clone();
        let moved: i64 = Script::new(RETURN_SCRIPT)
            .key(self.tenant.inflight(&self.worker_id))
            .key(self.tenant.queue())
            .arg(raw)
            .invoke_async(&mut c)
            .await?;
        Ok(moved == 1)
    }

    /// Returns every message still in this worker's in-flight list to the queue.
    pub async fn return_all(&self) -> RedisResult<u64> {
        let mut c = self.conn.clone();
        Script::new(RETURN_ALL_SCRIPT)
            .key(self.tenant.inflight(&self.worker_id))
            .key(self.tenant.queue())
            .invoke_async(&mut c)
            .await
    }

    /// Releases the job's render lock (the job goes back to the queue unfinished).
    pub async fn forget_lock(&self, task_id: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.tenant.lock(task_id))
            .query_async(&mut c)
            .await
    }

    /// Redelivers the messages of dead workers.
    pub async fn restore(&self) -> RedisResult<u64> {
        let mut c = self.conn.clone();
        Script::new(RESTORE_SCRIPT)
            .key(self.tenant.workers())
            .key(self.tenant.queue())
            .arg(self.tenant.alive(""))
            .arg(self.tenant.inflight(""))
            .invoke_async(&mut c)
            .await
    }

    /// Counts one more delivery of the job; the count outlives worker deaths.
    pub async fn count_delivery(&self, task_id: &str, ttl: Duration) -> RedisResult<u32> {
        let mut c = self.conn.clone();
        let key = self.tenant.deliveries(task_id);
        let (n,): (u32,) = redis::pipe()
            .incr(&key, 1)
            .expire(&key, ttl.as_secs() as i64)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Takes back a delivery that did not run (the job was returned at shutdown).
    pub async fn uncount_delivery(&self, task_id: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("DECR")
            .arg(self.tenant.deliveries(task_id))
            .query_async(&mut c)
            .await
    }

    /// Takes (or refreshes) the job's render lock; false when a live worker holds it.
    pub async fn lock(&self, task_id: &str) -> RedisResult<bool> {
        let mut c = self.conn.clone();
        let got: i64 = Script::new(LOCK_SCRIPT)
            .key(self.tenant.lock(task_id))
            .arg(&self.worker_id)
            .arg(self.visibility.as_millis() as u64)
            .arg(self.tenant.alive(""))
            .invoke_async(&mut c)
            .await?;
        Ok(got == 1)
    }

    /// Forgets the job's broker-side state once its outcome is recorded.
    pub async fn forget(&self, task_id: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .del(self.tenant.lock(task_id))
            .ignore()
            .del(self.tenant.deliveries(task_id))
            .ignore()
            .query_async(&mut c)
            .await
    }

    /// Keeps a message that will not be retried, with the reason, for an operator to see.
    pub async fn dead_letter(&self, task_id: &str, reason: &str, raw: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        let entry = serde_json::json!({
            "task_id": task_id,
            "reason": reason,
            "at": sapl_jobs::state::iso_now(),
            "message": raw,
        });
        redis::cmd("LPUSH")
            .arg(self.tenant.dead_letter())
            .arg(entry.to_string())
            .query_async(&mut c)
            .await
    }

    /// Leaves the worker set (clean shutdown, nothing left in flight).
    pub async fn leave(&self) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .srem(self.tenant.workers(), &self.worker_id)
            .ignore()
            .del(self.tenant.alive(&self.worker_id))
            .ignore()
            .del(self.tenant.inflight(&self.worker_id))
            .ignore()
            .query_async(&mut c)
            .await
    }

    /// Messages waiting in the queue.
    pub async fn depth(&self) -> RedisResult<u64> {
        let mut c = self.conn.clone();
        sapl_jobs::store::queue_depth(&mut c, &self.tenant).await
    }
}
