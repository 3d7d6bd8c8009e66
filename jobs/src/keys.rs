//! Every Redis key and channel name of one tenant (one chamber), in one place.
//!
//! Redis B is shared by the whole fleet, so every name starts with the tenant's prefix,
//! `<tenant>:`. That is also what Celery writes when Django sets
//! `broker_transport_options = result_backend_transport_options = {"global_keyprefix":
//! "<tenant>:"}`, so a Django process and sapl-edge see the same queue and result keys.
//! Pub/sub ignores the database number; the prefix keeps channels apart too.
//!
//! Broker database (DB 0): the queue list, the per-worker in-flight lists, worker
//! liveness, delivery counters, render locks and the dead-letter list.
//! Result database (DB 1): Celery's `celery-task-meta-<id>` record, the job record and the
//! dedup index.

/// The names of one tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    name: String,
    prefix: String,
    queue: String,
}

/// A tenant name that cannot be used as a key prefix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tenant name {0:?} must be 1 to 63 characters of a-z, 0-9, `-`, `_` or `.`")]
pub struct BadTenant(pub String);

impl Tenant {
    /// The tenant `name` (a Kubernetes namespace, say `cm-natal`) with the queue `queue`.
    pub fn new(name: &str, queue: &str) -> Result<Tenant, BadTenant> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !ok || queue.is_empty() || queue.contains(char::is_whitespace) {
            return Err(BadTenant(name.to_string()));
        }
        Ok(Tenant {
            name: name.to_string(),
            prefix: format!("{name}:"),
            queue: queue.to_string(),
        })
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key prefix, `<tenant>:` (Celery's `global_keyprefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue's name as Celery's `send_task(..., queue=...)` takes it (no prefix).
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The queue list producers `LPUSH` to and workers take from the right end (FIFO).
    pub fn queue(&self) -> String {
        format!("{}{}", self.prefix, self.queue)
    }

    /// A worker's in-flight list: messages it took and has not acknowledged.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}pdf.inflight.{worker}", self.prefix)
    }

    /// The set of worker ids that may own an in-flight list.
    pub fn workers(&self) -> String {
        format!("{}pdf.workers", self.prefix)
    }

    /// A worker's liveness key; when it expires the worker's messages are redelivered.
    pub fn alive(&self, worker: &str) -> String {
        format!("{}pdf.alive.{worker}", self.prefix)
    }

    /// How many times a job's message has been taken by a worker.
    pub fn deliveries(&self, task_id: &str) -> String {
        format!("{}pdf.deliveries.{task_id}", self.prefix)
    }

    /// Held while a worker renders the job, so a second delivery does not render it again.
    pub fn lock(&self, task_id: &str) -> String {
        format!("{}pdf.lock.{task_id}", self.prefix)
    }

    /// Messages given up on, each with the reason.
    pub fn dead_letter(&self) -> String {
        format!("{}pdf.dead", self.prefix)
    }

    /// Celery's result record (and the channel its changes are published on).
    pub fn meta(&self, task_id: &str) -> String {
        format!("{}celery-task-meta-{task_id}", self.prefix)
    }

    /// The pattern matching every result channel of the tenant.
    pub fn meta_pattern(&self) -> String {
        format!("{}celery-task-meta-*", self.prefix)
    }

    /// The job record: a hash with kind, id, reader, state and the rest.
    pub fn job(&self, task_id: &str) -> String {
        format!("{}pdf.job.{task_id}", self.prefix)
    }

    /// The dedup index entry: the latest job for one kind, id and reader class.
    pub fn dedup(&self, kind: &str, id: &str, reader: &str) -> String {
        format!("{}pdf.dedup.{kind}.{id}.{reader}", self.prefix)
    }
}

/// The tenant name from the environment: `POD_NAMESPACE` (the chamber's namespace).
pub fn tenant_from_env() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_tenant_prefix() {
        let t = Tenant::new("cm-natal", "sapl-pdf").unwrap();
        assert_eq!(t.queue(), "cm-natal:sapl-pdf");
        assert_eq!(t.meta("x"), "cm-natal:celery-task-meta-x");
        assert_eq!(
            t.dedup("materia-tramitacao", "1", "anonymous"),
            "cm-natal:pdf.dedup.materia-tramitacao.1.anonymous"
        );
        assert!(t.inflight("w").starts_with("cm-natal:"));
    }

    #[test]
    fn odd_tenant_names_are_refused() {
        assert!(Tenant::new("", "q").is_err());
        assert!(Tenant::new("CM Natal", "q").is_err());
        assert!(Tenant::new("cm*", "q").is_err());
    }
}
