//! Ingress protection: what the rate-limiter generation of SAPL's nginx did before a
//! request reached Django.
//!
//! In the order a request meets them: scanner probes are dropped without an answer
//! ([`probes`]); then, on the chosen route, bot rules ([`bots`]), the Redis blocklist
//! ([`blocklist`]) and the route's rate zone ([`zones`]) may refuse it with 429. Every
//! rule judges the real client address ([`realip`]). CORS preflights are answered before
//! any of these, as nginx did, and the exempt paths skip the rate zones only.
//!
//! This module owns the per-generation state ([`Protection`]), the refusals written to
//! the client, their metrics and their log line (the access line's `refusal` field, once
//! per request), and the background task that keeps the blocklist fresh. The rules'
//! settings come validated from [`crate::config`].

pub mod blocklist;
pub mod bots;
pub mod probes;
pub mod realip;
pub mod zones;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompression;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::Result;
use regex::Regex;
use tracing::{debug, error, info};

use crate::config::{self, Route};
use crate::forwarding;
use crate::metrics;
use crate::proxy::{Live, RequestCtx, Runtime};
use blocklist::{Block, Blocklist};
use bots::{NetworkRules, UserAgentRules};
use zones::{Outcome, ZoneSet};

/// The body of every 429 the edge writes itself (SAPL's API answers the same way).
const TOO_MANY_BODY: &[u8] = br#"{"detail":"Too Many Requests"}"#;

/// Which rule refused a request: the `rule` label of the metrics and the access log's
/// `refusal` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Zone,
    UserAgent,
    Network,
    BlocklistPrefix,
    BlocklistIp,
    BlocklistApi,
    Probe,
}

impl Rule {
    pub fn label(self) -> &'static str {
        match self {
            Rule::Zone => "zone",
            Rule::UserAgent => "user_agent",
            Rule::Network => "network",
            Rule::BlocklistPrefix => "blocklist_prefix",
            Rule::BlocklistIp => "blocklist_ip",
            Rule::BlocklistApi => "blocklist_api",
            Rule::Probe => "probe",
        }
    }
}

/// What protection decides for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Forward after this wait (a zone without `nodelay`).
    Delay(Duration),
    /// Answer 429, with `Retry-After` in seconds when there is one.
    Refuse {
        rule: Rule,
        retry_after: Option<u64>,
    },
}

/// The protection state of one configuration generation. Zones and the blocklist carry
/// over from the previous generation when their settings are unchanged.
pub struct Protection {
    enabled: bool,
    zones: ZoneSet,
    exempt: Vec<Regex>,
    probe_suffixes: Vec<String>,
    user_agents: Option<UserAgentRules>,
    networks: Option<NetworkRules>,
    blocklist: Option<Arc<Blocklist>>,
}

impl Protection {
    pub fn new(settings: &config::Protection, previous: Option<&Protection>) -> Protection {
        let blocklist = settings.blocklist.as_ref().and_then(|spec| {
            match Blocklist::new(spec, previous.and_then(|p| p.blocklist.as_ref())) {
                Ok(b) => Some(b),
                Err(e) => {
                    // The URL was checked when the configuration was validated.
                    error!(error = %e, "blocklist disabled: bad Redis URL");
                    None
                }
            }
        });
        if settings.enabled {
            for zone in &settings.zones {
                debug!(
                    zone = %zone.name,
                    rate_milli_per_second = zone.rate.milli_per_second(),
                    burst = zone.burst,
                    nodelay = zone.nodelay,
                    "rate zone"
                );
            }
            info!(
                zones = settings.zones.len(),
                exempt = settings.exempt.len(),
                probe_suffixes = settings.probe_suffixes.len(),
                user_agent_patterns = settings.user_agents.as_ref().map_or(0, |u| u.count()),
                networks = settings.networks.as_ref().map_or(0, |n| n.count()),
                blocklist = blocklist.is_some(),
                "ingress protection on"
            );
        }
        Protection {
            enabled: settings.enabled,
            zones: ZoneSet::new(
                &settings.zones,
                settings.max_clients,
                previous.map(|p| &p.zones),
            ),
            exempt: settings.exempt.clone(),
            probe_suffixes: settings.probe_suffixes.clone(),
            user_agents: settings.user_agents.clone(),
            networks: settings.networks.clone(),
            blocklist,
        }
    }

    /// Whether the path is a scanner probe, to be dropped without an answer.
    pub fn is_probe(&self, path: &str) -> bool {
        self.enabled && probes::is_probe(path, &self.probe_suffixes)
    }

    /// The zone a request on `route` for `path` is counted in, if any.
    pub fn zone_for(&self, route: &Route, path: &str) -> Option<&Arc<zones::Zone>> {
        if !self.enabled {
            return None;
        }
        let zone = self.zones.get(route.zone.as_deref()?)?;
        if self.exempt.iter().any(|re| re.is_match(path)) {
            return None;
        }
        Some(zone)
    }

    /// Judges a request from `client` for `path` on `route`.
    pub async fn judge(
        &self,
        client: IpAddr,
        route: &Route,
        path: &str,
        user_agent: Option<&[u8]>,
    ) -> Verdict {
        if !self.enabled {
            return Verdict::Pass;
        }

        let refuse = |rule, retry_after| Verdict::Refuse { rule, retry_after };
        if let (Some(rules), Some(ua)) = (&self.user_agents, user_agent) {
            if rules.matches(ua) {
                return refuse(Rule::UserAgent, None);
            }
        }
        if self.networks.as_ref().is_some_and(|n| n.contains(client)) {
            return refuse(Rule::Network, None);
        }
        if let Some(blocklist) = &self.blocklist {
            let retry_after = Some(blocklist.retry_after());
            match blocklist.check(client, path.starts_with("/api/")).await {
                Some(Block::Prefix) => return refuse(Rule::BlocklistPrefix, retry_after),
                Some(Block::Ip) => return refuse(Rule::BlocklistIp, retry_after),
                Some(Block::Api) => return refuse(Rule::BlocklistApi, retry_after),
                None => {}
            }
        }

        let Some(zone) = self.zone_for(route, path) else {
            return Verdict::Pass;
        };
        match zone.check(realip::limit_key(client)) {
            Outcome::Pass => Verdict::Pass,
            Outcome::Delay(wait) => Verdict::Delay(wait),
            Outcome::Refuse { retry_after } => {
                // Whole seconds, rounded up, at least one: "Retry-After: 0" invites a
                // client to hammer.
                let secs = retry_after.as_millis().div_ceil(1000).max(1);
                refuse(Rule::Zone, Some(u64::try_from(secs).unwrap_or(u64::MAX)))
            }
        }
    }
}

/// Drops a scanner probe: no status line, no body, the connection closed (nginx's 444,
/// which the access log shows as well).
pub fn drop_probe(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    metrics::PROTECTION_REFUSALS
        .with_label_values(&[Rule::Probe.label(), ""])
        .inc();
    ctx.note_refusal(444, Rule::Probe.label());
    // With keep-alive off and nothing written, Pingora closes the connection when the
    // request is finished; a response header is never produced.
    session.set_keepalive(None);
    Ok(true)
}

/// Applies bot rules, the blocklist and the rate zone to a routed request: answers 429
/// and returns `true` when refused, waits first when the zone paces it, and returns
/// `false` to let the request go on.
pub async fn enforce(
    session: &mut Session,
    ctx: &mut RequestCtx,
    runtime: &Runtime,
    route: &Route,
    path: &str,
) -> Result<bool> {
    let protection = &runtime.protection;
    let zone = protection.zone_for(route, path).map(|z| z.name().clone());
    ctx.set_zone(zone.clone());
    let zone_label = zone.as_deref().unwrap_or("");

    let user_agent = session
        .req_header()
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| v.as_bytes().to_vec());
    let verdict = protection
        .judge(ctx.client(), route, path, user_agent.as_deref())
        .await;

    match verdict {
        Verdict::Pass => Ok(false),
        Verdict::Delay(wait) => {
            metrics::ZONE_DELAYED.with_label_values(&[zone_label]).inc();
            metrics::ZONE_DELAY_SECONDS
                .with_label_values(&[zone_label])
                .inc_by(wait.as_secs_f64());
            debug!(request_id = %ctx.request_id(), zone = zone_label, wait_ms = wait.as_millis() as u64, "request paced by its zone");
            tokio::time::sleep(wait).await;
            Ok(false)
        }
        Verdict::Refuse { rule, retry_after } => {
            let zone_label = if rule == Rule::Zone { zone_label } else { "" };
            metrics::PROTECTION_REFUSALS
                .with_label_values(&[rule.label(), zone_label])
                .inc();
            ctx.note_refusal(429, rule.label());
            let cors = route.cors.then_some(&runtime.config.cors);
            too_many(session, ctx.request_id(), cors, retry_after).await?;
            Ok(true)
        }
    }
}

/// Writes the 429 answer: JSON body, `Retry-After` when known, CORS headers on CORS routes.
async fn too_many(
    session: &mut Session,
    request_id: &str,
    cors: Option<&config::Cors>,
    retry_after: Option<u64>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(http::StatusCode::TOO_MANY_REQUESTS, Some(8))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", TOO_MANY_BODY.len().to_string())?;
    if let Some(secs) = retry_after {
        resp.insert_header("Retry-After", secs.to_string())?;
    }
    resp.insert_header("X-Request-ID", request_id)?;
    if let Some(cors) = cors {
        forwarding::add_cors(&mut resp, cors)?;
    }
    // A refusal is 30 bytes: compressing it would only cost.
    if let Some(module) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        module.adjust_level(0);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(TOO_MANY_BODY)), true)
        .await?;
    Ok(())
}

/// Keeps the live generation's blocklist connected and its prefix set fresh.
pub struct BlocklistRefresher {
    pub live: Live,
}

/// How often the refresher looks at the blocklist; a refresh itself happens every
/// `refresh_interval`.
const TICK: Duration = Duration::from_millis(500);

#[async_trait]
impl BackgroundService for BlocklistRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let runtime = self.live.load_full();
            if let Some(blocklist) = &runtime.protection.blocklist {
                blocklist.maintain().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runtime(protection: &str, route_extra: &str) -> Runtime {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream]\naddress = \"127.0.0.1:2\"\n\
             {protection}\n\
             [[route]]\nname = \"api\"\nprefix = \"/api/\"\naction = \"upstream\"\n{route_extra}\n\
             [[route]]\nname = \"d\"\nprefix = \"/\"\naction = \"upstream\"\n"
        );
        let config = crate::config::Config::parse(Path::new("t.toml"), &text).unwrap();
        Runtime::new(config)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn without_a_protection_section_nothing_is_judged() {
        let rt = runtime("", "");
        let route = rt.routes.find("/").unwrap().clone();
        assert!(!rt.protection.is_probe("/wp-login.php"));
        for _ in 0..500 {
            let v =
                block_on(
                    rt.protection
                        .judge("203.0.113.1".parse().unwrap(), &route, "/", None),
                );
            assert_eq!(v, Verdict::Pass);
        }
    }

    #[test]
    fn exempt_paths_skip_the_zone_and_zone_off_routes_are_unlimited() {
        let rt = runtime(
            "[protection]\n[protection.zones.general]\nrate = \"1r/m\"\nburst = 0\nnodelay = true\n",
            "zone = \"off\"",
        );
        let client = "203.0.113.1".parse().unwrap();
        let default = rt.routes.find("/").unwrap().clone();
        let api = rt.routes.find("/api/x").unwrap().clone();

        let judge =
            |route: &Route, path: &str| block_on(rt.protection.judge(client, route, path, None));
        assert_eq!(judge(&default, "/materia/1"), Verdict::Pass);
        assert_eq!(
            judge(&default, "/materia/2"),
            Verdict::Refuse {
                rule: Rule::Zone,
                // 1r/m leaks 16 thousandths a second (nginx truncates): 62.5 s for one.
                retry_after: Some(63)
            }
        );
        // Live-vote paths are exempt by default; the zone-less API route is never limited.
        for _ in 0..20 {
            assert_eq!(judge(&default, "/painel/7/dados"), Verdict::Pass);
            assert_eq!(judge(&default, "/sessao/12/votacao"), Verdict::Pass);
            assert_eq!(judge(&default, "/voto-individual/3"), Verdict::Pass);
            assert_eq!(judge(&api, "/api/x"), Verdict::Pass);
        }
        // /painel/7/dados/extra is not the polling endpoint.
        assert!(matches!(
            judge(&default, "/painel/7/dados/extra"),
            Verdict::Refuse { .. }
        ));
    }

    #[test]
    fn the_default_zones_follow_the_issue() {
        let rt = runtime("[protection]\n", "");
        let rate = |name: &str| {
            let zone = rt.protection.zones.get(name).unwrap();
            (
                zone.spec().rate.milli_per_second(),
                zone.spec().burst,
                zone.spec().nodelay,
            )
        };
        assert_eq!(rate("general").0, 2000);
        assert_eq!(rate("media").0, 4000);
        assert_eq!(rate("api").0, 2000);
        assert_eq!(rate("heavy"), (166, 20, true));
        // Routes without a `zone` key are counted in `general`.
        let route = rt.routes.find("/").unwrap();
        assert_eq!(route.zone.as_deref(), Some("general"));
        assert!(rt.protection.is_probe("/.env"));
    }

    #[test]
    fn bots_are_refused_before_any_zone_is_charged() {
        let dir = tempfile::tempdir().unwrap();
        let ua = dir.path().join("ua.txt");
        let nets = dir.path().join("nets.txt");
        std::fs::write(&ua, "GPTBot\n").unwrap();
        std::fs::write(&nets, "192.0.2.0/24\n").unwrap();
        let rt = runtime(
            &format!(
                "[protection]\nuser_agents_file = \"{}\"\nnetworks_file = \"{}\"\n\
                 [protection.zones.general]\nrate = \"1r/m\"\n",
                ua.display(),
                nets.display()
            ),
            "",
        );
        let route = rt.routes.find("/").unwrap().clone();
        let judge = |ip: &str, ua: &[u8]| {
            block_on(
                rt.protection
                    .judge(ip.parse().unwrap(), &route, "/", Some(ua)),
            )
        };
        assert_eq!(
            judge("203.0.113.1", b"Mozilla/5.0 (compatible; GPTBot/1.2)"),
            Verdict::Refuse {
                rule: Rule::UserAgent,
                retry_after: None
            }
        );
        assert_eq!(
            judge("192.0.2.77", b"Mozilla/5.0"),
            Verdict::Refuse {
                rule: Rule::Network,
                retry_after: None
            }
        );
        // The bot's refusal did not use up 203.0.113.1's single request.
        assert_eq!(judge("203.0.113.1", b"Mozilla/5.0"), Verdict::Pass);
    }
}
