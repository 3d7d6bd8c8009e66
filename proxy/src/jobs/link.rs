//! The edge's connections to Redis B and PostgreSQL, created lazily and never on the path
//! of anything but a PDF request.
//!
//! A link that fails is marked down for a short while, so requests during an outage fail
//! at once (legacy links then go to Django) instead of each waiting for a connect timeout.

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use tracing::warn;

/// How long a failed link is left alone before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Redis B is not reachable (or not configured).
#[derive(Debug, thiserror::Error)]
#[error("Redis B unavailable: {0}")]
pub struct Unavailable(pub String);

/// One lazily connected Redis database.
pub struct RedisLink {
    name: &'static str,
    client: Option<redis::Client>,
    conn: Mutex<Option<ConnectionManager>>,
    down_until: StdMutex<Option<Instant>>,
}

impl RedisLink {
    /// A link to `url`; nothing is connected yet. A bad or missing URL gives a link that is
    /// always unavailable.
    pub fn new(name: &'static str, url: Option<&str>) -> RedisLink {
        let client = url.and_then(|u| match redis::Client::open(u) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(link = name, error = %e, "invalid Redis URL; PDF jobs unavailable");
                None
            }
        });
        RedisLink {
            name,
            client,
            conn: Mutex::new(None),
            down_until: StdMutex::new(None),
        }
    }

    /// The connection, connecting on first use.
    pub async fn get(&self) -> Result<ConnectionManager, Unavailable> {
        let Some(client) = &self.client else {
            return Err(Unavailable("not configured".into()));
        };
        if let Some(until) = *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return Err(Unavailable("marked down".into()));
            }
        }
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        match client.get_connection_manager_with_config(config).await {
            Ok(c) => {
                *conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                drop(conn);
                self.mark_down(&e);
                Err(Unavailable(e.to_string()))
            }
        }
    }

    /// Records a failure: the link answers `Unavailable` for a moment.
    pub fn mark_down(&self, error: &dyn std::fmt::Display) {
        warn!(link = self.name, error = %error, "Redis B unavailable");
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + DOWN_FOR);
    }
}
