//! The bridge between Django's channel layer on Redis A (DB 2) and the hub's sockets.
//!
//! Core layer (channels_redis `RedisChannelLayer`, 3.4.1 and 4.x): the edge is one more
//! channels process. It names itself `specific.<process hex>!`, joins each group with
//! sockets here as one member channel `specific.<process hex>!<member hex>` in
//! `<prefix>:group:<group>`, and pops its process key `<prefix>specific.<process hex>!`
//! with `BZPOPMIN` on a connection of its own (a shared connection's 500 ms response
//! timeout would cut the blocking pop). Memberships are re-added every
//! `membership_refresh`, so `group_send`'s pruning of members older than `group_expiry`
//! (24 h) never drops a panel left open through a long plenary, and a Redis restart is
//! healed within one refresh. A group's membership is removed when its last socket closes.
//! A membership write that fails (a timeout on a loaded machine, a dropped connection) is
//! made again every `RETRY_EVERY` until Redis takes it: a group is never left unjoined
//! until the next refresh, hours later, while its sockets hear nothing.
//!
//! Pub/sub layer (`RedisPubSubChannelLayer`): the edge subscribes to
//! `<prefix>__group__<group>` while the group has sockets here.
//!
//! Every message read is fanned out through the hub and kept as the group's snapshot in
//! `<prefix>:edge:snapshot:<group>` with a TTL, so a socket opening on any edge instance
//! gets the latest payload at once. All of the edge's keys start with the tenant prefix.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use redis::aio::{ConnectionManager, PubSubSink};
use redis::AsyncCommands;
use tokio::sync::{mpsc, OnceCell};
use tracing::{debug, info, warn};

use super::hub::{GroupChange, Hub};
use super::metrics;
use super::wire::{self, Crypter, LayerMessage};
use crate::config::{Painel as PainelConfig, PainelLayer};

/// How long a blocking pop waits before it is issued again; short enough that shutdown
/// is noticed, long enough to cost nothing.
const POP_TIMEOUT_SECS: u64 = 5;

/// How soon a failed membership write is made again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Response and connect timeout of the shared connection: generous, because a write that
/// times out may still land, and a loaded 2-core pod can stall for a second.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis fault at the bridge's border.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The edge's side of the channel layer.
pub struct Bridge {
    config: PainelConfig,
    hub: Arc<Hub>,
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    crypter: Crypter,
    /// `specific.<hex>!`: this process's channel name prefix.
    process: String,
    /// group → member channel, and back.
    members: Mutex<Members>,
    pubsub: tokio::sync::Mutex<Option<PubSubSink>>,
}

#[derive(Default)]
struct Members {
    by_group: HashMap<String, String>,
    by_channel: HashMap<String, String>,
    /// Groups whose membership write Redis has not confirmed yet.
    unconfirmed: HashSet<String>,
    /// Memberships of groups left here whose removal failed: (group, channel).
    stale: Vec<(String, String)>,
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Bridge {
    pub fn new(config: PainelConfig, hub: Arc<Hub>) -> Result<Bridge, BridgeError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let crypter = Crypter::new(&config.encryption_keys);
        Ok(Bridge {
            config,
            hub,
            client,
            manager: OnceCell::new(),
            crypter,
            process: format!("specific.{}!", random_hex()),
            members: Mutex::new(Members::default()),
            pubsub: tokio::sync::Mutex::new(None),
        })
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared connection for short commands (reconnects by itself).
    pub async fn manager(&self) -> Result<ConnectionManager, BridgeError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_connection_timeout(Some(COMMAND_TIMEOUT));
                self.client.get_connection_manager_with_config(config).await
            })
            .await?;
        Ok(manager.clone())
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}:group:{}", self.config.prefix, group)
    }

    fn process_key(&self) -> String {
        format!("{}{}", self.config.prefix, self.process)
    }

    fn snapshot_key(&self, group: &str) -> String {
        format!("{}:edge:snapshot:{}", self.config.prefix, group)
    }

    fn pubsub_channel(&self, group: &str) -> String {
        format!("{}__group__{}", self.config.prefix, group)
    }

    /// Runs until shutdown: mirrors group changes into Redis, refreshes memberships and
    /// drains the layer.
    pub async fn run(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<GroupChange>,
        mut shutdown: ShutdownWatch,
    ) {
        info!(
            prefix = %self.config.prefix,
            layer = ?self.config.layer,
            process = %self.process,
            "painel bridge starting"
        );
        let reader = match self.config.layer {
            PainelLayer::Core => tokio::spawn(self.clone().drain_core(shutdown.clone())),
            PainelLayer::PubSub => tokio::spawn(self.clone().read_pubsub(shutdown.clone())),
        };

        let mut refresh = tokio::time::interval(self.config.membership_refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { break };
                    let group = match change {
                        GroupChange::Joined(g) | GroupChange::Left(g) => g,
                    };
                    if let Err(e) = self.sync_group(&group).await {
                        metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
                        warn!(error = %e, group = %group, "painel: group membership not updated");
                    }
                }
                _ = retry.tick() => self.retry_pending().await,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_all().await {
                        metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
                        warn!(error = %e, "painel: memberships not refreshed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }

        self.leave_all().await;
        reader.abort();
        info!("painel bridge stopped");
    }

    /// Makes Redis agree with the hub about one group: member while it has sockets here.
    /// A failed write is recorded and made again by [`Bridge::retry_pending`].
    async fn sync_group(&self, group: &str) -> Result<(), BridgeError> {
        let wanted = self.hub.has_group(group);
        let (current, confirmed) = {
            let members = self.members();
            (
                members.by_group.get(group).cloned(),
                !members.unconfirmed.contains(group),
            )
        };
        match (wanted, current) {
            (true, None) => {
                let channel = format!("{}{}", self.process, random_hex());
                {
                    let mut members = self.members();
                    members.by_group.insert(group.to_string(), channel.clone());
                    members
                        .by_channel
                        .insert(channel.clone(), group.to_string());
                    members.unconfirmed.insert(group.to_string());
                }
                self.add_membership(group, &channel).await?;
                self.members().unconfirmed.remove(group);
                debug!(group = %group, channel = %channel, "painel: joined group");
            }
            // The same channel name again: a write that timed out may have landed.
            (true, Some(channel)) if !confirmed => {
                self.add_membership(group, &channel).await?;
                self.members().unconfirmed.remove(group);
                debug!(group = %group, channel = %channel, "painel: joined group on retry");
            }
            (false, Some(channel)) => {
                {
                    let mut members = self.members();
                    members.by_group.remove(group);
                    members.by_channel.remove(&channel);
                    members.unconfirmed.remove(group);
                }
                if let Err(e) = self.remove_membership(group, &channel).await {
                    self.members().stale.push((group.to_string(), channel));
                    return Err(e);
                }
                debug!(group = %group, "painel: left group");
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes the membership writes that failed again.
    async fn retry_pending(&self) {
        let (groups, stale) = {
            let mut members = self.members();
            let groups: Vec<String> = members.unconfirmed.iter().cloned().collect();
            (groups, std::mem::take(&mut members.stale))
        };
        for group in groups {
            if let Err(e) = self.sync_group(&group).await {
                debug!(error = %e, group = %group, "painel: membership still not written");
            }
        }
        for (group, channel) in stale {
            if let Err(e) = self.remove_membership(&group, &channel).await {
                debug!(error = %e, group = %group, "painel: membership still not removed");
                self.members().stale.push((group, channel));
            }
        }
    }

    async fn add_membership(&self, group: &str, channel: &str) -> Result<(), BridgeError> {
        match self.config.layer {
            PainelLayer::Core => {
                let mut conn = self.manager().await?;
                let key = self.group_key(group);
                redis::pipe()
                    .zadd(&key, channel, now_secs_f64())
                    .ignore()
                    .expire(&key, self.config.group_expiry.as_secs() as i64)
                    .ignore()
                    .exec_async(&mut conn)
                    .await?;
            }
            PainelLayer::PubSub => {
                if let Some(sink) = self.pubsub.lock().await.as_mut() {
                    sink.subscribe(self.pubsub_channel(group)).await?;
                }
            }
        }
        Ok(())
    }

    async fn remove_membership(&self, group: &str, channel: &str) -> Result<(), BridgeError> {
        match self.config.layer {
            PainelLayer::Core => {
                let mut conn = self.manager().await?;
                let _: () = conn.zrem(self.group_key(group), channel).await?;
            }
            PainelLayer::PubSub => {
                if let Some(sink) = self.pubsub.lock().await.as_mut() {
                    sink.unsubscribe(self.pubsub_channel(group)).await?;
                }
            }
        }
        Ok(())
    }

    /// Re-adds every membership with a fresh score.
    async fn refresh_all(&self) -> Result<(), BridgeError> {
        if self.config.layer != PainelLayer::Core {
            return Ok(());
        }
        let memberships: Vec<(String, String)> = self
            .members()
            .by_group
            .iter()
            .map(|(g, c)| (g.clone(), c.clone()))
            .collect();
        if memberships.is_empty() {
            return Ok(());
        }
        let mut conn = self.manager().await?;
        let mut pipe = redis::pipe();
        let now = now_secs_f64();
        for (group, channel) in &memberships {
            let key = self.group_key(group);
            pipe.zadd(&key, channel, now)
                .ignore()
                .expire(&key, self.config.group_expiry.as_secs() as i64)
                .ignore();
        }
        pipe.exec_async(&mut conn).await?;
        {
            let mut members = self.members();
            for (group, channel) in &memberships {
                if members.by_group.get(group) == Some(channel) {
                    members.unconfirmed.remove(group);
                }
            }
        }
        debug!(groups = memberships.len(), "painel: memberships refreshed");
        Ok(())
    }

    async fn leave_all(&self) {
        let memberships: Vec<(String, String)> = self.members().by_group.drain().collect();
        for (group, channel) in memberships {
            if let Err(e) = self.remove_membership(&group, &channel).await {
                debug!(error = %e, group = %group, "painel: membership left to expire");
            }
        }
    }

    /// Pops the process key continuously; with `expiry` at 10 s there is no slack for pauses.
    async fn drain_core(self: Arc<Self>, _shutdown: ShutdownWatch) {
        let key = self.process_key();
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        loop {
            let mut conn = match self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(conn) => conn,
                Err(e) => {
                    metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
                    warn!(error = %e, "painel: cannot reach Redis A; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Memberships may have vanished with a restarted Redis: put them back at once.
            if let Err(e) = self.refresh_all().await {
                debug!(error = %e, "painel: refresh after connect failed");
            }
            loop {
                let popped: Result<Option<(String, Vec<u8>, f64)>, _> = redis::cmd("BZPOPMIN")
                    .arg(&key)
                    .arg(POP_TIMEOUT_SECS)
                    .query_async(&mut conn)
                    .await;
                match popped {
                    Ok(Some((_, value, sent_at))) => {
                        metrics::BRIDGE_LAG.observe((now_secs_f64() - sent_at).max(0.0));
                        self.on_core_value(&value).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
                        warn!(error = %e, "painel: BZPOPMIN failed; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }

    fn ttl_secs(&self) -> u64 {
        self.config.expiry.as_secs() + 10
    }

    async fn on_core_value(&self, value: &[u8]) {
        let message = match wire::decode_core(value, &self.crypter, self.ttl_secs()) {
            Ok(m) => m,
            Err(e) => {
                metrics::BRIDGE_ERRORS.with_label_values(&["decode"]).inc();
                warn!(error = %e, "painel: unreadable channel-layer message dropped");
                return;
            }
        };
        let groups: Vec<String> = {
            let members = self.members();
            message
                .channels
                .iter()
                .filter_map(|c| members.by_channel.get(c).cloned())
                .collect()
        };
        for group in groups {
            self.deliver(&group, &message).await;
        }
    }

    /// Subscribes to the groups' channels and reads them, reconnecting when Redis drops.
    async fn read_pubsub(self: Arc<Self>, _shutdown: ShutdownWatch) {
        loop {
            let pubsub = match self.client.get_async_pubsub().await {
                Ok(p) => p,
                Err(e) => {
                    metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
                    warn!(error = %e, "painel: cannot reach Redis A; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Both halves are kept: dropping the sink would close the stream too.
            let (mut sink, mut stream) = pubsub.split();
            let mut ok = true;
            {
                // Held while subscribing, so a group joining meanwhile waits for the sink
                // and subscribes itself rather than being missed.
                let mut slot = self.pubsub.lock().await;
                let groups: Vec<String> = self.members().by_group.keys().cloned().collect();
                for group in &groups {
                    if let Err(e) = sink.subscribe(self.pubsub_channel(group)).await {
                        warn!(error = %e, "painel: SUBSCRIBE failed");
                        ok = false;
                    }
                }
                *slot = Some(sink);
            }
            if ok {
                while let Some(msg) = stream.next().await {
                    let channel = msg.get_channel_name().to_string();
                    let Some(group) = channel
                        .strip_prefix(&format!("{}__group__", self.config.prefix))
                        .map(str::to_string)
                    else {
                        continue;
                    };
                    match wire::decode_pubsub(
                        msg.get_payload_bytes(),
                        &self.crypter,
                        self.ttl_secs(),
                    ) {
                        Ok(message) => self.deliver(&group, &message).await,
                        Err(e) => {
                            metrics::BRIDGE_ERRORS.with_label_values(&["decode"]).inc();
                            warn!(error = %e, "painel: unreadable pub/sub message dropped");
                        }
                    }
                }
            }
            *self.pubsub.lock().await = None;
            metrics::BRIDGE_ERRORS.with_label_values(&["redis"]).inc();
            warn!("painel: pub/sub connection lost; reconnecting");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a message to the group's sockets here and keeps it as the group's snapshot.
    async fn deliver(&self, group: &str, message: &LayerMessage) {
        let text: Arc<str> = Arc::from(message.client_text());
        metrics::MESSAGES.with_label_values(&["bridge"]).inc();
        let delivery = self.hub.broadcast(group, text.clone());
        debug!(group = %group, queued = delivery.queued, slow = delivery.slow, "painel: message fanned out");
        if let Err(e) = self.store_snapshot(group, &text).await {
            debug!(error = %e, "painel: snapshot not stored");
        }
    }

    async fn store_snapshot(&self, group: &str, text: &str) -> Result<(), BridgeError> {
        let mut conn = self.manager().await?;
        let _: () = conn
            .set_ex(
                self.snapshot_key(group),
                text,
                self.config.snapshot_ttl.as_secs().max(1),
            )
            .await?;
        Ok(())
    }

    /// The last message seen for a group by any edge instance, if it has not expired.
    pub async fn snapshot(&self, group: &str) -> Result<Option<String>, BridgeError> {
        let mut conn = self.manager().await?;
        Ok(conn.get(self.snapshot_key(group)).await?)
    }

    /// Publishes to a group the way Django's `group_send` does, so every edge instance
    /// (this one included) and any Channels consumer receives it.
    pub async fn group_send(
        &self,
        group: &str,
        fields: &[(rmpv::Value, rmpv::Value)],
    ) -> Result<(), BridgeError> {
        let mut conn = self.manager().await?;
        match self.config.layer {
            PainelLayer::PubSub => {
                let payload = wire::encode_pubsub(fields, &self.crypter);
                let _: () = conn.publish(self.pubsub_channel(group), payload).await?;
            }
            PainelLayer::Core => {
                let key = self.group_key(group);
                let now = now_secs_f64();
                let _: () = conn
                    .zrembyscore(
                        &key,
                        0,
                        (now as i64) - self.config.group_expiry.as_secs() as i64,
                    )
                    .await?;
                let channels: Vec<String> = conn.zrange(&key, 0, -1).await?;
                let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
                for channel in channels {
                    let process = match channel.find('!') {
                        Some(i) => &channel[..=i],
                        None => channel.as_str(),
                    };
                    by_key
                        .entry(format!("{}{}", self.config.prefix, process))
                        .or_default()
                        .push(channel.clone());
                }
                for (process_key, members) in by_key {
                    let value = wire::encode_core(fields, &members, &self.crypter);
                    let queued: i64 = conn.zcard(&process_key).await?;
                    if queued as u64 >= self.config.capacity {
                        debug!("painel: a process key is at capacity; message dropped for it");
                        continue;
                    }
                    redis::pipe()
                        .zadd(&process_key, value, now)
                        .ignore()
                        .expire(&process_key, self.config.expiry.as_secs() as i64)
                        .ignore()
                        .exec_async(&mut conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A key of the edge's own under the tenant prefix (`<prefix>:edge:<name>`).
    pub fn edge_key(&self, name: &str) -> String {
        format!("{}:edge:{}", self.config.prefix, name)
    }

    pub fn process_name(&self) -> &str {
        &self.process
    }
}
