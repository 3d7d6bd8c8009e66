//! Result notifications: one pub/sub connection per edge, subscribed to the tenant's result
//! channels (the worker publishes each state change there, as Celery's backend does), wakes
//! the legacy links waiting for those jobs.
//!
//! A waiter never depends on the notification alone: it also re-reads the job record at a
//! slow pace, so a message lost while the subscription reconnects costs a second, not the
//! answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// The jobs being waited for, each with the `Notify` its waiters sleep on.
#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    /// The notifier of `task_id`, registering the caller as a waiter.
    pub fn watch(&self, task_id: &str) -> Arc<Notify> {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.entry(task_id.to_string()).or_default().clone()
    }

    /// Unregisters a waiter; the entry goes when its last waiter leaves.
    pub fn unwatch(&self, task_id: &str, notify: Arc<Notify>) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        drop(notify);
        if w.get(task_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            w.remove(task_id);
        }
    }

    fn wake(&self, task_id: &str) {
        let w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.get(task_id) {
            n.notify_waiters();
        }
    }
}

/// The background service holding the subscription.
pub struct Listener {
    pub url: Option<String>,
    pub pattern: String,
    /// The channel name before the task id (`<tenant>:celery-task-meta-`).
    pub channel_prefix: String,
    pub waiters: Arc<Waiters>,
}

#[async_trait]
impl BackgroundService for Listener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(client) = self
            .url
            .as_deref()
            .and_then(|u| redis::Client::open(u).ok())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = self.listen(&client) => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Listener {
    /// Subscribes and dispatches until the connection fails.
    async fn listen(&self, client: &redis::Client) {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "result channel subscription unavailable");
                return;
            }
        };
        if let Err(e) = pubsub.psubscribe(&self.pattern).await {
            warn!(error = %e, "cannot subscribe to result channels");
            return;
        }
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let channel = msg.get_channel_name();
            if let Some(task_id) = channel.strip_prefix(&self.channel_prefix) {
                self.waiters.wake(task_id);
            }
        }
        warn!("result channel subscription lost; reconnecting");
    }
}
