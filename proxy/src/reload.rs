//! SIGHUP reloads the configuration file without dropping a connection.
//!
//! The new file is validated completely first; only a valid one replaces the live
//! generation, atomically, so a request in flight finishes with the routes it started
//! with. An invalid file is logged (file, line, key) and the running configuration stays.
//! Listener addresses are bound once at start: changing them needs a restart or a binary
//! upgrade, and a reload that changes them says so.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics;
use crate::proxy::{Live, Runtime};

pub struct Reloader {
    pub path: PathBuf,
    pub live: Live,
}

impl Reloader {
    fn reload(&self) {
        match Config::load(&self.path) {
            Ok(config) => {
                let old = self.live.load();
                let old_listeners: Vec<_> =
                    old.config.listeners.iter().map(|l| &l.address).collect();
                let new_listeners: Vec<_> = config.listeners.iter().map(|l| &l.address).collect();
                if old_listeners != new_listeners {
                    warn!("listener addresses changed; they apply after a restart or upgrade");
                }
                let routes = config.routes.len();
                self.live.store(Arc::new(Runtime::renew(config, &old)));
                metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                info!(config = %self.path.display(), routes, "configuration reloaded");
            }
            Err(e) => {
                metrics::CONFIG_RELOADS.with_label_values(&["error"]).inc();
                error!(error = %e, "reload refused; the running configuration stays");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot listen for SIGHUP; reload is unavailable");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
