//! Data fingerprints of reports, asked of SAPL's PostgreSQL with the renderer's own query
//! ([`sapl_renderer::fingerprint`]) and cached for a few seconds.
//!
//! The fingerprint is what makes reuse safe: a finished PDF is served again only while
//! the report's rows (and today's date, which every footer prints) are unchanged. It also
//! answers "does this object exist" before any job is created, so unknown ids get 404
//! at once. When PostgreSQL cannot be asked, the answer is `Unknown` and the dedup rule
//! falls back to reusing the latest job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use sapl_renderer::{RenderError, ReportRequest};
use tokio::sync::Mutex;
use tracing::warn;

/// What is known of a report's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    Known(String),
    /// The object does not exist.
    NotFound,
    /// PostgreSQL could not be asked.
    Unknown,
}

/// The PostgreSQL client and the short cache.
pub struct Fingerprints {
    url: Option<String>,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
    cache: StdMutex<HashMap<ReportRequest, (Instant, Fingerprint)>>,
    cache_for: Duration,
}

impl Fingerprints {
    pub fn new(url: Option<String>, cache_for: Duration) -> Fingerprints {
        Fingerprints {
            url,
            client: Mutex::new(None),
            cache: StdMutex::new(HashMap::new()),
            cache_for,
        }
    }

    /// The report's current fingerprint (cached up to `fingerprint_cache`).
    pub async fn of(&self, req: &ReportRequest) -> Fingerprint {
        if let Some((at, fp)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(req)
        {
            if at.elapsed() < self.cache_for {
                return fp.clone();
            }
        }
        let Some(client) = self.client().await else {
            return Fingerprint::Unknown;
        };
        let fp = match sapl_renderer::fingerprint(&client, req).await {
            Ok(fp) => Fingerprint::Known(fp),
            Err(RenderError::NotFound { .. } | RenderError::WrongId { .. }) => {
                Fingerprint::NotFound
            }
            Err(e) => {
                warn!(error = %e, "fingerprint query failed");
                if client.is_closed() {
                    *self.client.lock().await = None;
                }
                return Fingerprint::Unknown;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            let keep = self.cache_for;
            cache.retain(|_, (at, _)| at.elapsed() < keep);
        }
        cache.insert(*req, (Instant::now(), fp.clone()));
        fp
    }

    async fn client(&self) -> Option<Arc<tokio_postgres::Client>> {
        let url = self.url.as_deref()?;
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Some(c.clone());
        }
        let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        warn!(error = %e, "PostgreSQL connection for fingerprints ended");
                    }
                });
                let client = Arc::new(client);
                *slot = Some(client.clone());
                Some(client)
            }
            Ok(Err(e)) => {
                warn!(error = %e, "PostgreSQL unreachable; fingerprints unknown");
                None
            }
            Err(_) => {
                warn!("PostgreSQL connect timed out; fingerprints unknown");
                None
            }
        }
    }
}
