//! sapl-jobs: what sapl-edge (the producer) and sapl-renderer's worker (the consumer) must
//! agree on about PDF jobs.
//!
//! - [`message`]: Celery's message protocol v2 as stored by its Redis transport (build and
//!   parse), so Django's `send_task` and Celery's tools interoperate with both binaries;
//! - [`keys`]: every Redis key and channel of one tenant (chamber), under its prefix;
//! - [`state`]: job states, the job record, and the `celery-task-meta-<id>` record;
//! - [`store`]: enqueue with dedup, read a job, record a state change.
//!
//! The broker lives on Redis B's DB 0 and the results on DB 1, as Celery's
//! `CELERY_BROKER_URL` and `CELERY_RESULT_BACKEND` name them.

pub mod keys;
pub mod message;
pub mod state;
pub mod store;

pub use keys::Tenant;
pub use message::{Delivery, JobSpec};
pub use state::{FailReason, JobRecord, JobState};
