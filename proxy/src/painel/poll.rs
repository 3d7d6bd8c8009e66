//! Poll-to-push, for chambers whose Django does not publish with Channels.
//!
//! Every `poll_interval`, for each sessão watched through this edge (open sockets, or a
//! recent `GET /painel/<id>/dados` from an old polling page), the edge instances of the
//! chamber elect one poller with a Redis lock (`<prefix>:edge:poll:lock:<sessao>`, `SET NX
//! PX`). The poller asks Django for `dados_path` once and, when the payload changed,
//! publishes it to the sessão's group through the channel layer exactly as Django's
//! `group_send` would, so every instance fans it out to its own sockets. The latest payload
//! is also kept in `<prefix>:edge:poll:result:<sessao>`, from which
//! `GET /painel/<id>/dados` is answered for users who pass the panel's permission check.
//! N screens cost one upstream request per interval instead of 2 N per second.
//!
//! Limitation: the four `cronometro_*` fields of the payload come from the *caller's*
//! Django session (SAPL keeps the cronômetro state there), so every viewer now sees the
//! values of the viewer whose cookies the poller used, not their own. On screens that
//! only display the panel this is what the operator's session shows; a viewer who runs a
//! cronômetro in their own session sees it through the ordinary (non-poll) views.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::server::ShutdownWatch;
use redis::AsyncCommands;
use rmpv::Value;
use tracing::{debug, warn};

use super::hub::Credentials;
use super::metrics;
use super::snapshot::{self, DadosRequest};
use super::{wire, Painel};

/// How long a dados request keeps a sessão polled when no socket watches it.
const WANTED_FOR: Duration = Duration::from_secs(30);

/// What the poller remembers between rounds.
#[derive(Default)]
pub struct PollResults {
    inner: Mutex<PollState>,
}

#[derive(Default)]
struct PollState {
    /// Sessões asked for by polling pages: when, and as whom.
    wanted: HashMap<u64, (Instant, Arc<Credentials>)>,
    /// The last payload this instance published, per sessão.
    last: HashMap<u64, String>,
}

impl PollResults {
    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a sessão polled for a while on behalf of an old polling page.
    pub fn want(&self, sessao_id: u64, credentials: Credentials) {
        self.lock()
            .wanted
            .insert(sessao_id, (Instant::now(), Arc::new(credentials)));
    }
}

fn lock_key(painel: &Painel, sessao_id: u64) -> String {
    painel.bridge.edge_key(&format!("poll:lock:{sessao_id}"))
}

fn result_key(painel: &Painel, sessao_id: u64) -> String {
    painel.bridge.edge_key(&format!("poll:result:{sessao_id}"))
}

/// The poller loop; runs until shutdown.
pub async fn run(painel: Arc<Painel>, mut shutdown: ShutdownWatch) {
    let Some(settings) = painel.config.poll.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for (sessao_id, credentials) in watched(&painel) {
            if let Err(e) = poll_once(&painel, sessao_id, &credentials, settings.interval).await {
                metrics::POLLS.with_label_values(&["error"]).inc();
                debug!(error = %e, sessao_id, "painel: poll failed");
            }
        }
    }
}

/// Sessões to poll, with whose cookies.
fn watched(painel: &Painel) -> Vec<(u64, Arc<Credentials>)> {
    let mut out: HashMap<u64, Arc<Credentials>> = HashMap::new();
    for (_, sessao_id, credentials) in painel.hub.groups() {
        if let Some(c) = credentials {
            out.insert(sessao_id, c);
        }
    }
    let mut state = painel.poll.lock();
    state
        .wanted
        .retain(|_, (since, _)| since.elapsed() < WANTED_FOR);
    for (sessao_id, (_, credentials)) in &state.wanted {
        out.entry(*sessao_id).or_insert_with(|| credentials.clone());
    }
    out.into_iter().collect()
}

/// Why one poll round failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Bridge(#[from] super::bridge::BridgeError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Fetch(#[from] snapshot::FetchError),
    #[error("payload is not JSON")]
    NotJson,
}

async fn poll_once(
    painel: &Painel,
    sessao_id: u64,
    credentials: &Credentials,
    interval: Duration,
) -> Result<(), PollError> {
    let mut conn = painel.bridge.manager().await?;
    let me = painel.bridge.process_name().to_string();
    let key = lock_key(painel, sessao_id);
    let hold_ms = (interval * 3).as_millis() as u64;

    // Elect one poller per sessão: take the lock if free, keep it if ours.
    let taken: bool = redis::cmd("SET")
        .arg(&key)
        .arg(&me)
        .arg("NX")
        .arg("PX")
        .arg(hold_ms)
        .query_async::<Option<String>>(&mut conn)
        .await?
        .is_some();
    if !taken {
        let holder: Option<String> = conn.get(&key).await?;
        if holder.as_deref() != Some(me.as_str()) {
            return Ok(());
        }
        let _: () = conn.pexpire(&key, hold_ms as i64).await?;
    }

    let runtime = painel.live.load_full();
    let path = snapshot::dados_path(&painel.config.dados_path, sessao_id);
    let request = DadosRequest {
        upstream: &runtime.config.upstream.address,
        path: &path,
        host: &credentials.host,
        cookie: &credentials.cookie,
        timeout: interval.max(Duration::from_secs(5)),
    };
    let json = snapshot::fetch_dados(&request).await?;

    let max_age_ms = painel
        .config
        .poll
        .as_ref()
        .map_or(hold_ms, |p| p.max_age.as_millis() as u64);
    let _: () = conn
        .pset_ex(result_key(painel, sessao_id), &json, max_age_ms)
        .await?;

    // Limitation: the first poll of a sessão has nothing to compare with and is pushed, so
    // the first screens may get the payload of their snapshot a second time.
    let changed = painel.poll.lock().last.get(&sessao_id) != Some(&json);
    if !changed {
        metrics::POLLS.with_label_values(&["unchanged"]).inc();
        return Ok(());
    }
    let payload: serde_json::Value = serde_json::from_str(&json).map_err(|_| PollError::NotJson)?;
    let fields = vec![
        (Value::from("type"), Value::from("painel.data")),
        (Value::from("payload"), wire::json_to_value(&payload)),
    ];
    painel
        .bridge
        .group_send(&painel.group_name(sessao_id), &fields)
        .await?;
    painel.poll.lock().last.insert(sessao_id, json);
    metrics::POLLS.with_label_values(&["changed"]).inc();
    Ok(())
}

/// The shared poll result for `GET /painel/<id>/dados`, when the viewer passes the panel's
/// permission check and a fresh result exists; `None` sends the request on to Django,
/// which then answers (or refuses) as it always did.
pub async fn answer_dados(
    painel: &Painel,
    sessao_id: u64,
    host: &str,
    cookie: &str,
) -> Option<String> {
    painel.config.poll.as_ref()?;
    if let crate::config::PainelAuth::Django { .. } = painel.config.auth {
        let session_key = super::auth::cookie(cookie, "sessionid");
        match painel.auth.check(session_key, sessao_id).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(e) => {
                warn!(error = %e, "painel: dados permission check failed; asking Django");
                return None;
            }
        }
    }
    painel.poll.want(
        sessao_id,
        Credentials {
            host: host.to_string(),
            cookie: cookie.to_string(),
        },
    );
    let mut conn = painel.bridge.manager().await.ok()?;
    conn.get(result_key(painel, sessao_id)).await.ok().flatten()
}
