//! The voting panel's WebSockets, held by the edge instead of Daphne.
//!
//! Django keeps publishing with the standard Channels API (`group_send` on
//! channels_redis, Redis A DB 2); the edge takes the sockets SAPL's pages open at
//! `/ws/painel/<sessao_id>/`, checks the viewer against PostgreSQL, and relays each group
//! message to every socket of that sessão.
//!
//! - [`socket`]: one WebSocket session (handshake, admission, hygiene), taken over from
//!   the proxy's HTTP session of a `websocket` route;
//! - [`auth`]: Django session and permission check;
//! - [`hub`]: the sockets of this process by group, caps and fan-out;
//! - [`bridge`]: channels_redis core and pub/sub layers;
//! - [`wire`]: the layer's message format and what a socket is sent;
//! - [`snapshot`]: the payload a new socket gets first;
//! - [`poll`]: poll-to-push for chambers without Channels, and the dados answers from it;
//! - [`metrics`]: the panel's Prometheus metrics.
//!
//! `[painel]` is read at start: changing it needs a restart, like the listeners.

pub mod auth;
pub mod bridge;
pub mod hub;
pub mod metrics;
pub mod poll;
pub mod snapshot;
pub mod socket;
pub mod wire;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use crate::config::{Painel as PainelConfig, PainelAuth};
use crate::proxy::Live;

use self::auth::Authenticator;
use self::bridge::Bridge;
use self::hub::{GroupChange, Hub};

/// What the socket tasks, the bridge, the poller and the proxy share.
pub struct Painel {
    pub config: PainelConfig,
    pub hub: Arc<Hub>,
    pub bridge: Arc<Bridge>,
    pub auth: Authenticator,
    pub live: Live,
    pub poll: poll::PollResults,
    /// Turns true when the edge shuts down: every socket closes with a retryable code.
    pub closing: watch::Sender<bool>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<GroupChange>>>,
}

/// `[painel]` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PainelError {
    #[error("painel.redis_url: {0}")]
    Redis(#[from] bridge::BridgeError),
}

impl Painel {
    pub fn new(config: PainelConfig, live: Live) -> Result<Arc<Painel>, PainelError> {
        let (hub, changes) = Hub::new(
            sockets_within_file_limit(config.max_sockets),
            config.max_sockets_per_ip,
            config.send_queue,
        );
        let bridge = Arc::new(Bridge::new(config.clone(), hub.clone())?);
        let auth = match &config.auth {
            PainelAuth::Django {
                database_url,
                secret_key,
                modules,
                permissions,
            } => {
                if database_url.is_none() {
                    warn!("painel: auth = \"django\" but no DATABASE_URL: every socket will be closed 1011");
                }
                if secret_key.is_none() {
                    warn!(
                        "painel: no SECRET_KEY: sessions are not invalidated by password changes"
                    );
                }
                Authenticator::new(
                    database_url.clone(),
                    secret_key.clone(),
                    modules.clone(),
                    permissions.clone(),
                )
            }
            PainelAuth::Public => Authenticator::new(None, None, Vec::new(), Vec::new()),
        };
        metrics::init();
        Ok(Arc::new(Painel {
            config,
            hub,
            bridge,
            auth,
            live,
            poll: poll::PollResults::default(),
            closing: watch::Sender::new(false),
            changes: Mutex::new(Some(changes)),
        }))
    }

    /// The Channels group of a sessão, from `group_template`.
    pub fn group_name(&self, sessao_id: u64) -> String {
        self.config
            .group_template
            .replace("{sessao_id}", &sessao_id.to_string())
    }
}

/// The bridge and the poller, in a runtime of their own.
pub struct PainelBackground {
    pub painel: Arc<Painel>,
}

#[async_trait]
impl BackgroundService for PainelBackground {
    async fn start(&self, shutdown: ShutdownWatch) {
        let changes = self
            .painel
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(changes) = changes else {
            error!("painel: background service started twice");
            return;
        };
        // Sockets run in the proxy's tasks: tell them when the server shuts down.
        let mut server_shutdown = shutdown.clone();
        let painel = self.painel.clone();
        tokio::spawn(async move {
            let _ = server_shutdown.changed().await;
            painel.closing.send_replace(true);
        });

        let poller = self
            .painel
            .config
            .poll
            .is_some()
            .then(|| tokio::spawn(poll::run(self.painel.clone(), shutdown.clone())));
        self.painel.bridge.clone().run(changes, shutdown).await;
        if let Some(p) = poller {
            p.abort();
        }
    }
}

/// Adds the panel's bridge and poller to Pingora (the sockets themselves live in the proxy).
pub fn add_services(server: &mut pingora::server::Server, painel: &Arc<Painel>) {
    server.add_service(pingora::services::background::background_service(
        "painel bridge",
        PainelBackground {
            painel: painel.clone(),
        },
    ));
    tracing::info!(prefix = %painel.config.prefix, "painel websockets ready");
}

/// File descriptors kept for everything but panel sockets: listeners, the upstream pool,
/// Redis, PostgreSQL, files being served.
const FILES_KEPT: u64 = 512;

/// `max_sockets`, lowered so that sockets never take the descriptors the bridge and the
/// proxy need: at the open-file limit the bridge could not reach Redis, and every socket
/// would go silent at once. The soft limit is raised to the hard one first.
fn sockets_within_file_limit(max_sockets: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "painel: open-file limit unknown; max_sockets kept");
            return max_sockets;
        }
    };
    let room = usize::try_from(limit.saturating_sub(FILES_KEPT)).unwrap_or(usize::MAX);
    if room < max_sockets {
        warn!(
            max_sockets,
            open_file_limit = limit,
            sockets = room,
            "painel: max_sockets lowered to fit the open-file limit (raise `ulimit -n`)"
        );
    }
    max_sockets.min(room)
}

/// The `sessao_id` a panel route's regex captured from `path`.
pub fn sessao_id(route: &crate::config::Route, path: &str) -> Option<u64> {
    match &route.matcher {
        crate::config::Matcher::Regex(re) => {
            re.captures(path)?.name("sessao_id")?.as_str().parse().ok()
        }
        crate::config::Matcher::Prefix(_) => None,
    }
}
