//! The configuration file (`conf/sapl-edge.toml`) and the validated model built from it.
//!
//! The file is read in exactly one place, [`Config::load`]: raw TOML is deserialised into
//! private `Raw*` structs that mirror the file, then checked and turned into the public model
//! ([`Config`], [`Route`], …) that the rest of the edge uses. No other module sees TOML.
//! Every error names the file, the line and the key, the way `nginx -t` does.
//! `conf/README.md` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::protection::blocklist::{self, BlocklistSpec};
use crate::protection::bots::{NetworkRules, RulesFileError, UserAgentRules};
use crate::protection::probes;
use crate::protection::zones::{Rate, ZoneSpec};

/// A configuration error, with where it was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Everything the edge needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub listeners: Vec<Listener>,
    pub upstream: Upstream,
    pub forwarding: Forwarding,
    pub body: BodyLimits,
    pub metrics: Option<Metrics>,
    pub gzip: Gzip,
    pub cors: Cors,
    pub routes: Vec<Route>,
    pub protection: Protection,
    /// The voting panel's WebSockets; needed by `websocket` and `painel_dados` routes.
    pub painel: Option<Painel>,
    /// PDF jobs on Redis B (`[jobs]`); needed by `pdf` routes.
    pub jobs: Option<crate::jobs::settings::JobsSettings>,
}

/// Process settings handed to Pingora.
#[derive(Debug, Clone)]
pub struct Server {
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
}

/// A plain-HTTP listening address and the scheme announced upstream for it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub address: String,
    /// Sent to Gunicorn as `X-Forwarded-Proto` (`https` when TLS ends in front of the pod).
    pub proto: String,
}

/// Where Gunicorn listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddress {
    Unix(PathBuf),
    Tcp(String),
}

impl fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            UpstreamAddress::Tcp(addr) => f.write_str(addr),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub address: UpstreamAddress,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Served as the body of 502 and 504 answers when the file exists (nginx's `error_page`).
    pub error_page: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_hops: Vec<IpNet>,
    /// Take the client address from `X-Forwarded-For` when the peer is a trusted hop
    /// (see [`crate::protection::realip`]).
    pub real_ip: bool,
}

impl Forwarding {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_hops.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest request body accepted (nginx `client_max_body_size`); larger gets 413.
    pub max_size: u64,
    /// Bodies are held in memory up to this size, and in a temporary file beyond it.
    pub buffer_size: u64,
    /// Where bodies larger than `buffer_size` are spooled.
    pub spool_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct Gzip {
    /// 0 turns compression off.
    pub level: u32,
    /// Media types (without parameters) that are compressed.
    pub types: Vec<String>,
}

impl Gzip {
    /// Whether a response of this `Content-Type` is compressed.
    pub fn compresses(&self, content_type: &str) -> bool {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        self.level > 0 && self.types.contains(&media_type)
    }
}

/// The `/api/` CORS block: headers added to answers on routes with `cors = true`.
#[derive(Debug, Clone)]
pub struct Cors {
    pub allow_origin: String,
    pub allow_credentials: bool,
    pub allow_methods: String,
    pub allow_headers: String,
    pub max_age: u64,
}

/// One entry of the ordered route table; the first match wins.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub max_body: Option<u64>,
    pub cors: bool,
    pub cache_control: Option<String>,
    /// The rate zone requests on this route are counted in; `None`: not limited.
    pub zone: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Prefix(String),
    /// A regular expression; its named captures are available to the action.
    Regex(Regex),
}

impl Matcher {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to Gunicorn.
    Upstream,
    /// Serve files under `root`; the part of the path after the route's prefix names the file.
    Files { root: PathBuf },
    /// A panel WebSocket (`/ws/painel/<sessao_id>/`), terminated by the edge; the route's
    /// regex captures `sessao_id`.
    WebSocket,
    /// `GET /painel/<sessao_id>/dados`: answered from the shared poll result when `[painel]`
    /// polls, forwarded to Gunicorn otherwise.
    PainelDados,
    /// A PDF report front door (issue 3): the job API, its status URL or a legacy
    /// `/relatorios/...` link; the route's regex captures `kind`, `id`, `numero`/`ano` or
    /// `task_id`.
    Pdf(crate::jobs::settings::PdfRoute),
}

/// The voting panel's WebSockets (`[painel]`): how the edge joins Django's channel layer
/// on Redis A, and how it checks who may watch.
#[derive(Debug, Clone)]
pub struct Painel {
    /// The Channels group of a sessão, e.g. `painel_{sessao_id}`.
    pub group_template: String,
    /// channels_redis `prefix`: per tenant, equal to Django's `CHANNEL_LAYERS` prefix. Every
    /// key the edge writes starts with it too.
    pub prefix: String,
    /// Redis A, database 2 (`redis://host:6379/2`).
    pub redis_url: String,
    pub layer: PainelLayer,
    /// channels_redis `capacity`: messages one process key holds before new ones are dropped.
    pub capacity: u64,
    /// channels_redis `expiry`: how long a message waits in Redis before it is dropped.
    pub expiry: Duration,
    /// channels_redis `group_expiry`: members older than this are dropped by `group_send`.
    pub group_expiry: Duration,
    /// How often the edge re-adds its memberships, well inside `group_expiry`.
    pub membership_refresh: Duration,
    /// channels_redis `symmetric_encryption_keys` (Fernet); empty means plain msgpack.
    pub encryption_keys: Vec<String>,
    pub auth: PainelAuth,
    /// `Origin`s accepted besides the request's own host (`https://painel.camara.leg.br`).
    pub allowed_origins: Vec<String>,
    pub ping_interval: Duration,
    /// A socket that has not answered a ping for this long is closed.
    pub pong_timeout: Duration,
    pub max_sockets: usize,
    pub max_sockets_per_ip: usize,
    /// Largest message (and frame) a client may send; larger closes with 1009.
    pub max_message_size: usize,
    /// Messages queued for one socket; a socket that falls further behind is closed (1013).
    pub send_queue: usize,
    /// How long the last message of a group stays in Redis A as the snapshot for new sockets.
    pub snapshot_ttl: Duration,
    /// The Django URL of a sessão's full payload, e.g. `/painel/{sessao_id}/dados`.
    pub dados_path: String,
    /// Poll-to-push: the edge polls `dados_path` itself for chambers without Channels.
    pub poll: Option<PainelPoll>,
}

/// Which channels_redis layer Django publishes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PainelLayer {
    /// `channels_redis.core.RedisChannelLayer` (3.4.1 and 4.x).
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer`.
    PubSub,
}

/// Who may open a panel socket.
#[derive(Debug, Clone)]
pub enum PainelAuth {
    /// Anyone: chambers that show the panel to the public.
    Public,
    /// The Django session named by the `sessionid` cookie, read from PostgreSQL.
    Django {
        /// From the environment variable named by `database_url_env`.
        database_url: Option<String>,
        /// From the environment variable named by `secret_key_env`; enables the
        /// `_auth_user_hash` (password changed) check.
        secret_key: Option<String>,
        /// A user passes with any permission of these apps (`has_module_perms`).
        modules: Vec<String>,
        /// …or any of these permissions, `app_label.codename`.
        permissions: Vec<String>,
    },
}

/// Poll-to-push settings.
#[derive(Debug, Clone)]
pub struct PainelPoll {
    pub interval: Duration,
    /// A `painel_dados` request is answered from the shared result when it is this fresh.
    pub max_age: Duration,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates configuration text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let here = Source { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| here.toml_error(&e))?;
        raw.validate(&here)
    }
}

/// The file being validated, to turn byte spans into line numbers.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start.min(self.text.len()));
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(offset),
            key: self.key_at(offset),
            message: e.message().to_string(),
        }
    }

    /// The dotted key of the line holding `offset`, for errors toml reports by position:
    /// `threads = -1` under `[server]` is `server.threads`; a table header names its table.
    fn key_at(&self, offset: usize) -> String {
        let table_name = |header: &str| {
            header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("").trim();
        if line.starts_with('[') {
            return table_name(line);
        }
        let table = self.text[..start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(table_name);
        let name = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string());
        match (table, name) {
            (Some(t), Some(n)) if !t.is_empty() => format!("{t}.{n}"),
            (_, Some(n)) => n,
            (Some(t), None) if !t.is_empty() => t,
            _ => "(top level)".to_string(),
        }
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.invalid(
                value.span(),
                key,
                format!(
                    "`{}` is not a duration like \"75s\" or \"500ms\": {e}",
                    value.get_ref()
                ),
            )
        })
    }

    fn size(&self, value: &Spanned<RawSize>, key: &str) -> Result<u64, ConfigError> {
        match value.get_ref() {
            RawSize::Bytes(n) if *n >= 0 => Ok(*n as u64),
            RawSize::Bytes(n) => Err(self.invalid(value.span(), key, format!("{n} is negative"))),
            RawSize::Text(text) => text
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| {
                    self.invalid(
                        value.span(),
                        key,
                        format!("`{text}` is not a size like \"4GiB\" or \"16MiB\": {e}"),
                    )
                }),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(rename = "listener")]
    listeners: Spanned<Vec<RawListener>>,
    upstream: RawUpstream,
    #[serde(default)]
    forwarding: RawForwarding,
    #[serde(default)]
    body: RawBody,
    metrics: Option<RawMetrics>,
    #[serde(default)]
    gzip: RawGzip,
    #[serde(default)]
    cors: RawCors,
    #[serde(rename = "route")]
    routes: Spanned<Vec<RawRoute>>,
    protection: Option<RawProtection>,
    painel: Option<RawPainel>,
    jobs: Option<RawJobs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default = "default_pid_file")]
    pid_file: PathBuf,
    #[serde(default = "default_upgrade_sock")]
    upgrade_sock: PathBuf,
    grace_period: Option<Spanned<String>>,
    shutdown_timeout: Option<Spanned<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            threads: default_threads(),
            pid_file: default_pid_file(),
            upgrade_sock: default_upgrade_sock(),
            grace_period: None,
            shutdown_timeout: None,
        }
    }
}

fn default_threads() -> usize {
    1
}

fn default_pid_file() -> PathBuf {
    PathBuf::from("/tmp/sapl-edge.pid")
}

fn default_upgrade_sock() -> PathBuf {
    PathBuf::from("/tmp/sapl-edge-upgrade.sock")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: Spanned<String>,
    #[serde(default)]
    proto: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: Spanned<String>,
    connect_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
    error_page: Option<PathBuf>,
}

/// Peers believed about `X-Forwarded-For` and `X-Forwarded-Proto` when `[forwarding]`
/// does not say.
const DEFAULT_TRUSTED_HOPS: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.1/32",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    #[serde(default = "default_trusted_hops")]
    trusted_hops: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    real_ip: bool,
}

impl Default for RawForwarding {
    fn default() -> Self {
        // The rate-limiter generation's `set_real_ip_from` list: the cluster's private
        // networks (ingress controller, load balancer) and loopback.
        RawForwarding {
            trusted_hops: default_trusted_hops(),
            real_ip: true,
        }
    }
}

fn default_trusted_hops() -> Vec<Spanned<String>> {
    DEFAULT_TRUSTED_HOPS
        .iter()
        .map(|net| Spanned::new(0..0, net.to_string()))
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBody {
    max_size: Option<Spanned<RawSize>>,
    buffer_size: Option<Spanned<RawSize>>,
    spool_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGzip {
    #[serde(default = "default_gzip_level")]
    level: Spanned<u32>,
    #[serde(default = "default_gzip_types")]
    types: Vec<String>,
}

impl Default for RawGzip {
    fn default() -> Self {
        RawGzip {
            level: default_gzip_level(),
            types: default_gzip_types(),
        }
    }
}

fn default_gzip_level() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

/// SAPL's nginx list (`application/json` is deliberately absent there too).
fn default_gzip_types() -> Vec<String> {
    [
        "text/html",
        "text/plain",
        "text/css",
        "text/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/xml",
        "application/xml+rss",
        "image/svg+xml",
        "image/x-icon",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    #[serde(default = "default_allow_origin")]
    allow_origin: String,
    #[serde(default = "default_true")]
    allow_credentials: bool,
    #[serde(default = "default_allow_methods")]
    allow_methods: String,
    #[serde(default = "default_allow_headers")]
    allow_headers: String,
    #[serde(default = "default_max_age")]
    max_age: u64,
}

impl Default for RawCors {
    fn default() -> Self {
        RawCors {
            allow_origin: default_allow_origin(),
            allow_credentials: true,
            allow_methods: default_allow_methods(),
            allow_headers: default_allow_headers(),
            max_age: default_max_age(),
        }
    }
}

fn default_allow_origin() -> String {
    "*".into()
}

fn default_true() -> bool {
    true
}

fn default_allow_methods() -> String {
    "GET, POST, PUT, PATCH, DELETE, OPTIONS".into()
}

fn default_allow_headers() -> String {
    "DNT,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,\
     Authorization,X-CSRFToken"
        .into()
}

fn default_max_age() -> u64 {
    1_728_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    prefix: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    action: Spanned<String>,
    root: Option<Spanned<PathBuf>>,
    connect_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<RawSize>>,
    #[serde(default)]
    cors: bool,
    cache_control: Option<String>,
    zone: Option<Spanned<String>>,
    /// `pdf` routes: the report kind, when the path does not capture it.
    kind: Option<Spanned<String>>,
    /// `pdf` routes: `api`, `status` or `legacy`.
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPainel {
    group_template: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    #[serde(default = "default_namespace_env")]
    namespace_env: String,
    redis_url: Spanned<String>,
    layer: Option<Spanned<String>>,
    capacity: Option<u64>,
    expiry: Option<Spanned<String>>,
    group_expiry: Option<Spanned<String>>,
    membership_refresh: Option<Spanned<String>>,
    #[serde(default)]
    symmetric_encryption_keys: Vec<String>,
    auth: Option<Spanned<String>>,
    #[serde(default = "default_database_url_env")]
    database_url_env: String,
    #[serde(default = "default_secret_key_env")]
    secret_key_env: String,
    permission_modules: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    ping_interval: Option<Spanned<String>>,
    pong_timeout: Option<Spanned<String>>,
    max_sockets: Option<usize>,
    max_sockets_per_ip: Option<usize>,
    max_message_size: Option<Spanned<RawSize>>,
    send_queue: Option<Spanned<usize>>,
    snapshot_ttl: Option<Spanned<String>>,
    dados_path: Option<Spanned<String>>,
    #[serde(default)]
    poll: bool,
    poll_interval: Option<Spanned<String>>,
}

fn default_namespace_env() -> String {
    "POD_NAMESPACE".into()
}

fn default_database_url_env() -> String {
    "DATABASE_URL".into()
}

fn default_secret_key_env() -> String {
    "SECRET_KEY".into()
}

/// A non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl RawPainel {
    fn validate(&self, here: &Source) -> Result<Painel, ConfigError> {
        let d = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
            opt_duration(v, key, here).map(|d| d.unwrap_or(default))
        };

        let group_template = match &self.group_template {
            Some(t) if t.get_ref().contains("{sessao_id}") => t.get_ref().clone(),
            Some(t) => {
                return Err(here.invalid(
                    t.span(),
                    "painel.group_template",
                    "must contain `{sessao_id}`",
                ))
            }
            None => "painel_{sessao_id}".into(),
        };

        // Redis A is shared by the whole fleet and sessão ids repeat across chambers, so a
        // prefix is never left at channels_redis's `asgi`.
        let prefix = match &self.prefix {
            Some(p) if !p.get_ref().is_empty() => p.get_ref().clone(),
            Some(p) => return Err(here.invalid(p.span(), "painel.prefix", "must not be empty")),
            None => match env_var(&self.namespace_env) {
                Some(ns) => format!("asgi-{}", ns.trim()),
                None => {
                    return Err(here.invalid(
                        self.redis_url.span(),
                        "painel.prefix",
                        format!(
                            "no `prefix` and ${} is not set: a per-tenant prefix is required",
                            self.namespace_env
                        ),
                    ))
                }
            },
        };

        let url = self.redis_url.get_ref();
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Err(here.invalid(
                self.redis_url.span(),
                "painel.redis_url",
                format!("`{url}` is not a URL like \"redis://redis-a:6379/2\""),
            ));
        }

        let layer = match self.layer.as_ref().map(|l| l.get_ref().as_str()) {
            None | Some("core") => PainelLayer::Core,
            Some("pubsub") => PainelLayer::PubSub,
            Some(_) => {
                let span = self.layer.as_ref().map(|l| l.span()).unwrap_or_default();
                return Err(here.invalid(span, "painel.layer", "must be \"core\" or \"pubsub\""));
            }
        };

        let auth = match self.auth.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("django") => PainelAuth::Django {
                database_url: env_var(&self.database_url_env),
                secret_key: env_var(&self.secret_key_env),
                modules: self
                    .permission_modules
                    .clone()
                    .unwrap_or_else(|| vec!["painel".into(), "sessao".into()]),
                permissions: self
                    .permissions
                    .clone()
                    .unwrap_or_else(|| vec!["parlamentares.can_vote".into()]),
            },
            Some("public") => PainelAuth::Public,
            Some(_) => {
                let span = self.auth.as_ref().map(|a| a.span()).unwrap_or_default();
                return Err(here.invalid(span, "painel.auth", "must be \"django\" or \"public\""));
            }
        };

        let group_expiry = d(
            &self.group_expiry,
            "painel.group_expiry",
            Duration::from_secs(86_400),
        )?;
        let membership_refresh = d(
            &self.membership_refresh,
            "painel.membership_refresh",
            group_expiry / 4,
        )?;
        if membership_refresh.is_zero() || membership_refresh >= group_expiry {
            let span = self
                .membership_refresh
                .as_ref()
                .map(|v| v.span())
                .unwrap_or_default();
            return Err(here.invalid(
                span,
                "painel.membership_refresh",
                "must be shorter than group_expiry",
            ));
        }

        let send_queue = self.send_queue.as_ref().map_or(64, |q| *q.get_ref());
        if send_queue == 0 {
            let span = self
                .send_queue
                .as_ref()
                .map(|q| q.span())
                .unwrap_or_default();
            return Err(here.invalid(span, "painel.send_queue", "must be at least 1"));
        }

        let dados_path = match &self.dados_path {
            Some(p) if p.get_ref().starts_with('/') && p.get_ref().contains("{sessao_id}") => {
                p.get_ref().clone()
            }
            Some(p) => {
                return Err(here.invalid(
                    p.span(),
                    "painel.dados_path",
                    "must start with `/` and contain `{sessao_id}`",
                ))
            }
            None => "/painel/{sessao_id}/dados".into(),
        };

        let poll = if self.poll {
            let interval = d(
                &self.poll_interval,
                "painel.poll_interval",
                Duration::from_millis(500),
            )?;
            Some(PainelPoll {
                interval,
                max_age: interval * 4,
            })
        } else {
            None
        };

        Ok(Painel {
            group_template,
            prefix,
            redis_url: url.clone(),
            layer,
            capacity: self.capacity.unwrap_or(1500),
            expiry: d(&self.expiry, "painel.expiry", Duration::from_secs(10))?,
            group_expiry,
            membership_refresh,
            encryption_keys: self.symmetric_encryption_keys.clone(),
            auth,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            ping_interval: d(
                &self.ping_interval,
                "painel.ping_interval",
                Duration::from_secs(25),
            )?,
            pong_timeout: d(
                &self.pong_timeout,
                "painel.pong_timeout",
                Duration::from_secs(20),
            )?,
            max_sockets: self.max_sockets.unwrap_or(20_000),
            max_sockets_per_ip: self.max_sockets_per_ip.unwrap_or(50),
            max_message_size: match &self.max_message_size {
                Some(v) => here.size(v, "painel.max_message_size")? as usize,
                None => 64 * 1024,
            },
            send_queue,
            snapshot_ttl: d(
                &self.snapshot_ttl,
                "painel.snapshot_ttl",
                Duration::from_secs(6 * 3600),
            )?,
            dados_path,
            poll,
        })
    }
}

impl RawConfig {
    fn validate(self, here: &Source) -> Result<Config, ConfigError> {
        let listeners = validate_listeners(&self.listeners, here)?;
        let upstream = self.upstream.validate(here)?;

        let mut trusted_hops = Vec::new();
        for hop in &self.forwarding.trusted_hops {
            trusted_hops.push(parse_net(hop, here)?);
        }

        let body = BodyLimits {
            max_size: match &self.body.max_size {
                Some(v) => here.size(v, "body.max_size")?,
                None => 4 << 30,
            },
            buffer_size: match &self.body.buffer_size {
                Some(v) => here.size(v, "body.buffer_size")?,
                None => 1 << 20,
            },
            spool_dir: self.body.spool_dir.unwrap_or_else(std::env::temp_dir),
        };

        let cors_at = here.text.find("[cors]").unwrap_or(0);
        for (value, key) in [
            (&self.cors.allow_origin, "cors.allow_origin"),
            (&self.cors.allow_methods, "cors.allow_methods"),
            (&self.cors.allow_headers, "cors.allow_headers"),
        ] {
            header_value(value, key, cors_at..cors_at, here)?;
        }

        if *self.gzip.level.get_ref() > 9 {
            return Err(here.invalid(self.gzip.level.span(), "gzip.level", "must be 0 to 9"));
        }

        let mut routes = Vec::new();
        for raw in self.routes.get_ref() {
            let route = raw.validate(here)?;
            if routes.iter().any(|r: &Route| r.name == route.name) {
                return Err(here.invalid(
                    raw.name.span(),
                    "route.name",
                    format!("route `{}` is defined twice", route.name),
                ));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(here.invalid(self.routes.span(), "route", "at least one route is needed"));
        }

        let protection = validate_protection(self.protection.as_ref(), here)?;
        for (raw, route) in self.routes.get_ref().iter().zip(routes.iter_mut()) {
            route.zone = protection.zone_of(raw.zone.as_ref(), here)?;
        }

        let painel = self.painel.as_ref().map(|p| p.validate(here)).transpose()?;
        for (route, raw) in routes.iter().zip(self.routes.get_ref()) {
            if matches!(route.action, Action::WebSocket | Action::PainelDados) && painel.is_none() {
                return Err(here.invalid(
                    raw.action.span(),
                    "route.action",
                    format!("route `{}` needs a `[painel]` section", route.name),
                ));
            }
        }

        let jobs = self.jobs.as_ref().map(|j| j.validate(here)).transpose()?;
        for (route, raw) in routes.iter().zip(self.routes.get_ref()) {
            if matches!(route.action, Action::Pdf(_)) && jobs.is_none() {
                return Err(here.invalid(
                    raw.action.span(),
                    "route.action",
                    format!("route `{}` needs a `[jobs]` section", route.name),
                ));
            }
        }

        let server = Server {
            threads: self.server.threads.max(1),
            pid_file: self.server.pid_file,
            upgrade_sock: self.server.upgrade_sock,
            grace_period: opt_duration(&self.server.grace_period, "server.grace_period", here)?
                .unwrap_or(Duration::from_secs(5)),
            shutdown_timeout: opt_duration(
                &self.server.shutdown_timeout,
                "server.shutdown_timeout",
                here,
            )?
            .unwrap_or(Duration::from_secs(30)),
        };

        Ok(Config {
            server,
            listeners,
            upstream,
            forwarding: Forwarding {
                trusted_hops,
                real_ip: self.forwarding.real_ip,
            },
            body,
            metrics: self.metrics.map(|m| Metrics {
                address: m.address.into_inner(),
            }),
            gzip: Gzip {
                level: *self.gzip.level.get_ref(),
                types: self
                    .gzip
                    .types
                    .iter()
                    .map(|t| t.to_ascii_lowercase())
                    .collect(),
            },
            cors: Cors {
                allow_origin: self.cors.allow_origin,
                allow_credentials: self.cors.allow_credentials,
                allow_methods: self.cors.allow_methods,
                allow_headers: self.cors.allow_headers,
                max_age: self.cors.max_age,
            },
            routes,
            painel,
            protection,
            jobs,
        })
    }
}

/// A value the edge will send as a header: no line breaks or control characters.
fn header_value(
    value: &str,
    key: &str,
    span: Range<usize>,
    here: &Source,
) -> Result<(), ConfigError> {
    http::HeaderValue::from_str(value).map(|_| ()).map_err(|_| {
        here.invalid(
            span,
            key,
            "not a valid header value (line break or control character)",
        )
    })
}

fn validate_listeners(
    raw: &Spanned<Vec<RawListener>>,
    here: &Source,
) -> Result<Vec<Listener>, ConfigError> {
    if raw.get_ref().is_empty() {
        return Err(here.invalid(raw.span(), "listener", "at least one listener is needed"));
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for l in raw.get_ref() {
        if listeners
            .iter()
            .any(|seen| &seen.address == l.address.get_ref())
        {
            return Err(here.invalid(
                l.address.span(),
                "listener.address",
                format!("`{}` is listed twice", l.address.get_ref()),
            ));
        }
        if l.address.get_ref().parse::<std::net::SocketAddr>().is_err() {
            return Err(here.invalid(
                l.address.span(),
                "listener.address",
                format!(
                    "`{}` is not an address like \"0.0.0.0:80\"",
                    l.address.get_ref()
                ),
            ));
        }
        let proto = match &l.proto {
            None => "http".to_string(),
            Some(p) if p.get_ref() == "http" || p.get_ref() == "https" => p.get_ref().clone(),
            Some(p) => {
                return Err(here.invalid(
                    p.span(),
                    "listener.proto",
                    "must be \"http\" or \"https\"",
                ))
            }
        };
        listeners.push(Listener {
            address: l.address.get_ref().clone(),
            proto,
        });
    }
    Ok(listeners)
}

impl RawUpstream {
    fn validate(&self, here: &Source) -> Result<Upstream, ConfigError> {
        let text = self.address.get_ref();
        let address = if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(here.invalid(
                    self.address.span(),
                    "upstream.address",
                    format!("`{text}`: a unix socket needs an absolute path (\"unix:/run/gunicorn.sock\")"),
                ));
            }
            UpstreamAddress::Unix(PathBuf::from(path))
        } else if text.parse::<std::net::SocketAddr>().is_ok() {
            UpstreamAddress::Tcp(text.clone())
        } else {
            return Err(here.invalid(
                self.address.span(),
                "upstream.address",
                format!("`{text}` is neither \"unix:/path/to.sock\" nor \"host:port\""),
            ));
        };
        Ok(Upstream {
            address,
            connect_timeout: opt_duration(&self.connect_timeout, "upstream.connect_timeout", here)?
                .unwrap_or(Duration::from_secs(75)),
            read_timeout: opt_duration(&self.read_timeout, "upstream.read_timeout", here)?
                .unwrap_or(Duration::from_secs(300)),
            write_timeout: opt_duration(&self.write_timeout, "upstream.write_timeout", here)?
                .unwrap_or(Duration::from_secs(300)),
            error_page: self.error_page.clone(),
        })
    }
}

impl RawRoute {
    fn validate(&self, here: &Source) -> Result<Route, ConfigError> {
        let name = self.name.get_ref().clone();
        if name.trim().is_empty() {
            return Err(here.invalid(self.name.span(), "route.name", "must not be empty"));
        }
        if let Some(value) = &self.cache_control {
            header_value(value, "route.cache_control", self.name.span(), here)?;
        }
        let matcher = match (&self.prefix, &self.regex) {
            (Some(prefix), None) if prefix.get_ref().starts_with('/') => {
                Matcher::Prefix(prefix.get_ref().clone())
            }
            (Some(prefix), None) => {
                return Err(here.invalid(prefix.span(), "route.prefix", "must start with `/`"))
            }
            (None, Some(re)) => Matcher::Regex(Regex::new(re.get_ref()).map_err(|e| {
                here.invalid(
                    re.span(),
                    "route.regex",
                    format!("invalid regular expression: {e}"),
                )
            })?),
            _ => {
                return Err(here.invalid(
                    self.name.span(),
                    "route",
                    format!("route `{name}` needs exactly one of `prefix` or `regex`"),
                ))
            }
        };

        let action = match self.action.get_ref().as_str() {
            "upstream" => Action::Upstream,
            "files" => {
                let Some(root) = &self.root else {
                    return Err(here.invalid(
                        self.action.span(),
                        "route.root",
                        format!("route `{name}` serves files and needs `root`"),
                    ));
                };
                if !matches!(matcher, Matcher::Prefix(_)) {
                    return Err(here.invalid(
                        self.action.span(),
                        "route.action",
                        "a `files` route is matched by `prefix`",
                    ));
                }
                Action::Files {
                    root: root.get_ref().clone(),
                }
            }
            "websocket" | "painel_dados" => {
                let captures = match &matcher {
                    Matcher::Regex(re) => re.capture_names().flatten().any(|n| n == "sessao_id"),
                    Matcher::Prefix(_) => false,
                };
                if !captures {
                    return Err(here.invalid(
                        self.action.span(),
                        "route.regex",
                        format!(
                            "route `{name}` needs a `regex` with a `(?P<sessao_id>[0-9]+)` capture"
                        ),
                    ));
                }
                if self.action.get_ref() == "websocket" {
                    Action::WebSocket
                } else {
                    Action::PainelDados
                }
            }
            "pdf" => Action::Pdf(self.pdf_route(&matcher, here)?),
            other => {
                return Err(here.invalid(
                    self.action.span(),
                    "route.action",
                    format!(
                        "unknown action `{other}`; known: upstream, files, websocket, painel_dados, pdf"
                    ),
                ))
            }
        };

        Ok(Route {
            name,
            matcher,
            action,
            connect_timeout: opt_duration(&self.connect_timeout, "route.connect_timeout", here)?,
            read_timeout: opt_duration(&self.read_timeout, "route.read_timeout", here)?,
            max_body: match &self.max_body {
                Some(v) => Some(here.size(v, "route.max_body")?),
                None => None,
            },
            cors: self.cors,
            cache_control: self.cache_control.clone(),
            zone: None,
        })
    }
}

fn opt_duration(
    value: &Option<Spanned<String>>,
    key: &str,
    here: &Source,
) -> Result<Option<Duration>, ConfigError> {
    value.as_ref().map(|v| here.duration(v, key)).transpose()
}

fn parse_net(value: &Spanned<String>, here: &Source) -> Result<IpNet, ConfigError> {
    let text = value.get_ref();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            here.invalid(
                value.span(),
                "forwarding.trusted_hops",
                format!("`{text}` is not an address or network like \"10.0.0.0/8\""),
            )
        })
}

/// Ingress protection (`[protection]`): rate zones, bot rules, the Redis blocklist and
/// scanner-probe drops (see [`crate::protection`]). Without the section all of it is off.
#[derive(Debug, Clone)]
pub struct Protection {
    pub enabled: bool,
    /// The built-in zones, replaced or extended by `[protection.zones.<name>]`.
    pub zones: Vec<ZoneSpec>,
    /// Clients tracked per zone before the least recently seen are forgotten.
    pub max_clients: usize,
    /// Paths (regexes) never counted in a zone: live-vote polling behind one NAT address.
    pub exempt: Vec<Regex>,
    /// Path endings dropped without an answer (lower case).
    pub probe_suffixes: Vec<String>,
    pub user_agents: Option<UserAgentRules>,
    pub networks: Option<NetworkRules>,
    pub blocklist: Option<BlocklistSpec>,
    /// The zone of routes without a `zone` key.
    pub default_zone: Option<String>,
}

impl Protection {
    /// No `[protection]` section: nothing is judged, but `zone` keys are still checked
    /// against the built-in zones so a typo is caught before the section is turned on.
    fn off() -> Protection {
        Protection {
            enabled: false,
            zones: default_zones(),
            max_clients: DEFAULT_MAX_CLIENTS,
            exempt: Vec::new(),
            probe_suffixes: Vec::new(),
            user_agents: None,
            networks: None,
            blocklist: None,
            default_zone: None,
        }
    }

    /// The zone a route's `zone` key names: the default when absent, none for `"off"`.
    fn zone_of(
        &self,
        key: Option<&Spanned<String>>,
        here: &Source,
    ) -> Result<Option<String>, ConfigError> {
        let Some(key) = key else {
            return Ok(self.default_zone.clone());
        };
        let name = key.get_ref();
        if name == "off" {
            return Ok(None);
        }
        if self.zones.iter().any(|z| z.name == *name) {
            return Ok(Some(name.clone()));
        }
        let known: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
        Err(here.invalid(
            key.span(),
            "route.zone",
            format!(
                "unknown zone `{name}`; known: {}, or \"off\"",
                known.join(", ")
            ),
        ))
    }
}

const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// The rate-limiter generation's zones. Its rates; the bursts of `general`, `media` and
/// `api` are ours (it lists none), sized for a page view's burst of requests.
fn default_zones() -> Vec<ZoneSpec> {
    let zone = |name: &str, rate: &str, burst: u64| ZoneSpec {
        name: name.to_string(),
        rate: Rate::parse(rate).unwrap_or_else(|_| unreachable!("built-in rate {rate}")),
        burst,
        nodelay: true,
    };
    vec![
        zone("general", "120r/m", 30),
        zone("media", "240r/m", 60),
        zone("api", "120r/m", 30),
        zone("heavy", "10r/m", 20),
    ]
}

/// Live-vote traffic: many councillors behind one address poll these.
const DEFAULT_EXEMPT: [&str; 3] = [
    r"^/painel/\d+/dados$",
    r"^/voto-individual/",
    r"^/sessao/\d+",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtection {
    #[serde(default = "default_true")]
    enabled: bool,
    default_zone: Option<Spanned<String>>,
    max_clients: Option<usize>,
    exempt: Option<Vec<Spanned<String>>>,
    probe_suffixes: Option<Vec<String>>,
    user_agents_file: Option<Spanned<PathBuf>>,
    networks_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    zones: BTreeMap<String, RawZone>,
    blocklist: Option<RawBlocklist>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    rate: Spanned<String>,
    #[serde(default)]
    burst: u64,
    #[serde(default)]
    nodelay: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocklist {
    redis_url: Spanned<String>,
    namespace: Option<String>,
    #[serde(default = "default_blocklist_namespace_env")]
    namespace_env: String,
    lookup_timeout: Option<Spanned<String>>,
    cache_ttl: Option<Spanned<String>>,
    refresh_interval: Option<Spanned<String>>,
    #[serde(default = "default_blocklist_retry_after")]
    retry_after: u64,
}

/// SAPL's own setting name for the tenant namespace.
fn default_blocklist_namespace_env() -> String {
    "POD_NAMESPACE".into()
}

fn default_blocklist_retry_after() -> u64 {
    300
}

/// A rules file error as a configuration error: the rules file's own line when the
/// content is wrong, the configuration key's line when the file cannot be read.
fn rules_file_error(
    e: RulesFileError,
    key: &Spanned<PathBuf>,
    name: &str,
    here: &Source,
) -> ConfigError {
    match e {
        RulesFileError::Line {
            path,
            line,
            message,
        } => ConfigError::Invalid {
            path,
            line,
            key: name.to_string(),
            message,
        },
        read @ RulesFileError::Read { .. } => here.invalid(key.span(), name, read.to_string()),
    }
}

fn validate_protection(
    raw: Option<&RawProtection>,
    here: &Source,
) -> Result<Protection, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Protection::off());
    };

    let mut zones = default_zones();
    for (name, z) in &raw.zones {
        if name == "off" {
            return Err(here.invalid(
                z.rate.span(),
                "protection.zones",
                "`off` means no zone; pick another name",
            ));
        }
        let rate = Rate::parse(z.rate.get_ref())
            .map_err(|e| here.invalid(z.rate.span(), "protection.zones.rate", e.to_string()))?;
        let spec = ZoneSpec {
            name: name.clone(),
            rate,
            burst: z.burst,
            nodelay: z.nodelay,
        };
        match zones.iter_mut().find(|known| known.name == *name) {
            Some(known) => *known = spec,
            None => zones.push(spec),
        }
    }

    let default_zone = match &raw.default_zone {
        None => Some("general".to_string()),
        Some(name) if name.get_ref() == "off" => None,
        Some(name) if zones.iter().any(|z| z.name == *name.get_ref()) => {
            Some(name.get_ref().clone())
        }
        Some(name) => {
            return Err(here.invalid(
                name.span(),
                "protection.default_zone",
                format!("unknown zone `{}`", name.get_ref()),
            ))
        }
    };

    let exempt = match &raw.exempt {
        None => DEFAULT_EXEMPT
            .iter()
            .map(|p| Regex::new(p).unwrap_or_else(|_| unreachable!("built-in regex {p}")))
            .collect(),
        Some(list) => {
            let mut exempt = Vec::new();
            for p in list {
                exempt.push(Regex::new(p.get_ref()).map_err(|e| {
                    here.invalid(
                        p.span(),
                        "protection.exempt",
                        format!("invalid regular expression: {e}"),
                    )
                })?);
            }
            exempt
        }
    };

    let probe_suffixes = match &raw.probe_suffixes {
        None => probes::DEFAULT_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(list) => list
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase())
            .collect(),
    };

    let user_agents = match &raw.user_agents_file {
        None => None,
        Some(path) => Some(
            UserAgentRules::load(path.get_ref())
                .map_err(|e| rules_file_error(e, path, "protection.user_agents_file", here))?,
        ),
    };
    let networks = match &raw.networks_file {
        None => None,
        Some(path) => Some(
            NetworkRules::load(path.get_ref())
                .map_err(|e| rules_file_error(e, path, "protection.networks_file", here))?,
        ),
    };

    let blocklist = match &raw.blocklist {
        None => None,
        Some(b) => {
            blocklist::check_url(b.redis_url.get_ref()).map_err(|e| {
                here.invalid(b.redis_url.span(), "protection.blocklist.redis_url", e)
            })?;
            let namespace = b
                .namespace
                .clone()
                .or_else(|| std::env::var(&b.namespace_env).ok())
                .filter(|ns| !ns.trim().is_empty());
            Some(BlocklistSpec {
                redis_url: b.redis_url.get_ref().clone(),
                namespace,
                lookup_timeout: opt_duration(
                    &b.lookup_timeout,
                    "protection.blocklist.lookup_timeout",
                    here,
                )?
                .unwrap_or(Duration::from_millis(200)),
                cache_ttl: opt_duration(&b.cache_ttl, "protection.blocklist.cache_ttl", here)?
                    .unwrap_or(Duration::from_secs(5)),
                refresh_interval: opt_duration(
                    &b.refresh_interval,
                    "protection.blocklist.refresh_interval",
                    here,
                )?
                .unwrap_or(Duration::from_secs(60)),
                retry_after: b.retry_after,
            })
        }
    };

    Ok(Protection {
        enabled: raw.enabled,
        zones,
        max_clients: raw.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS),
        exempt,
        probe_suffixes,
        user_agents,
        networks,
        blocklist,
        default_zone,
    })
}

impl RawRoute {
    /// A `pdf` route: `mode`, the `kind` (fixed, or captured by the regex), and captures
    /// that suit the mode.
    fn pdf_route(
        &self,
        matcher: &Matcher,
        here: &Source,
    ) -> Result<crate::jobs::settings::PdfRoute, ConfigError> {
        use crate::jobs::settings::{parse_kind, PdfMode, PdfRoute};
        let name = self.name.get_ref();
        let Matcher::Regex(re) = matcher else {
            return Err(here.invalid(
                self.action.span(),
                "route.regex",
                format!("route `{name}` is a `pdf` route and is matched by `regex` with captures"),
            ));
        };
        let has = |capture: &str| re.capture_names().flatten().any(|n| n == capture);
        let mode = match self.mode.as_ref().map(|m| m.get_ref().as_str()) {
            Some("api") => PdfMode::Api,
            Some("status") => PdfMode::Status,
            Some("legacy") => PdfMode::Legacy,
            _ => {
                let span = self.mode.as_ref().map_or(self.action.span(), |m| m.span());
                return Err(here.invalid(
                    span,
                    "route.mode",
                    format!("route `{name}` needs mode = \"api\", \"status\" or \"legacy\""),
                ));
            }
        };
        let kind = match &self.kind {
            Some(k) => Some(parse_kind(k.get_ref()).ok_or_else(|| {
                here.invalid(
                    k.span(),
                    "route.kind",
                    format!(
                        "unknown report kind `{}`; known: materia-tramitacao, etiqueta-materia, \
                         etiqueta-protocolo, sessao-plenaria",
                        k.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        let captures_ok = match mode {
            PdfMode::Status => has("task_id"),
            PdfMode::Api => (kind.is_some() || has("kind")) && (has("id") || has("numero")),
            PdfMode::Legacy => kind.is_some() && (has("id") || (has("numero") && has("ano"))),
        };
        if !captures_ok {
            let needs = match mode {
                PdfMode::Status => "a `(?P<task_id>...)` capture",
                PdfMode::Api => "`kind` (or a `kind` capture) and an `id` capture",
                PdfMode::Legacy => "`kind` and an `id` (or `numero` and `ano`) capture",
            };
            return Err(here.invalid(
                self.regex.as_ref().map_or(self.action.span(), |r| r.span()),
                "route.regex",
                format!("route `{name}` needs {needs}"),
            ));
        }
        Ok(PdfRoute { mode, kind })
    }
}

/// `[jobs]`: Redis B, the tenant, the PDF directory and the limits of PDF jobs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    broker_url: Option<String>,
    result_backend: Option<String>,
    database_url: Option<String>,
    tenant: Option<Spanned<String>>,
    queue: Option<String>,
    task_name: Option<String>,
    wait_budget: Option<Spanned<String>>,
    max_queue_depth: Option<u64>,
    new_jobs_per_ip: Option<u32>,
    ttl: Option<Spanned<String>>,
    pdf_dir: Spanned<PathBuf>,
    pdf_url: Option<Spanned<String>>,
    fingerprint_cache: Option<Spanned<String>>,
}

impl RawJobs {
    fn validate(&self, here: &Source) -> Result<crate::jobs::settings::JobsSettings, ConfigError> {
        // Unset keys fall back to the variables ops already set for Celery in the plan.
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let tenant = match &self.tenant {
            Some(t) => {
                sapl_jobs::Tenant::new(t.get_ref(), "q")
                    .map_err(|e| here.invalid(t.span(), "jobs.tenant", e.to_string()))?;
                Some(t.get_ref().clone())
            }
            None => match sapl_jobs::keys::tenant_from_env() {
                // A namespace that cannot name keys would leave the PDF jobs off at start.
                Some(name) => {
                    let at = here.text.find("[jobs]").unwrap_or(0);
                    sapl_jobs::Tenant::new(&name, "q").map_err(|e| {
                        here.invalid(at..at, "jobs.tenant", format!("from $POD_NAMESPACE: {e}"))
                    })?;
                    Some(name)
                }
                None => None,
            },
        };
        let pdf_url = match &self.pdf_url {
            Some(u) if u.get_ref().starts_with('/') && u.get_ref().ends_with('/') => {
                u.get_ref().clone()
            }
            Some(u) => {
                return Err(here.invalid(u.span(), "jobs.pdf_url", "must start and end with `/`"))
            }
            None => "/media/pdf/".into(),
        };
        let d = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
            Ok::<_, ConfigError>(opt_duration(v, key, here)?.unwrap_or(default))
        };
        Ok(crate::jobs::settings::JobsSettings {
            broker_url: self.broker_url.clone().or_else(|| env("CELERY_BROKER_URL")),
            result_backend: self
                .result_backend
                .clone()
                .or_else(|| env("CELERY_RESULT_BACKEND")),
            database_url: self.database_url.clone().or_else(|| env("DATABASE_URL")),
            tenant,
            queue: self.queue.clone().unwrap_or_else(|| "sapl-pdf".into()),
            task_name: self
                .task_name
                .clone()
                .unwrap_or_else(|| sapl_jobs::message::DEFAULT_TASK_NAME.into()),
            wait_budget: d(
                &self.wait_budget,
                "jobs.wait_budget",
                Duration::from_secs(10),
            )?,
            max_queue_depth: self.max_queue_depth.unwrap_or(500),
            new_jobs_per_ip: self.new_jobs_per_ip.unwrap_or(30),
            ttl: d(&self.ttl, "jobs.ttl", Duration::from_secs(24 * 3600))?,
            pdf_dir: self.pdf_dir.get_ref().clone(),
            pdf_url,
            fingerprint_cache: d(
                &self.fingerprint_cache,
                "jobs.fingerprint_cache",
                Duration::from_secs(2),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listener]]
address = "127.0.0.1:8080"

[upstream]
address = "unix:/run/gunicorn.sock"

[[route]]
name = "static"
prefix = "/static/"
action = "files"
root = "/srv/static"
cache_control = "public, max-age=5400"

[[route]]
name = "default"
prefix = "/"
action = "upstream"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("edge.toml"), text)
    }

    #[test]
    fn minimal_file_gets_nginx_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.upstream.connect_timeout, Duration::from_secs(75));
        assert_eq!(config.upstream.read_timeout, Duration::from_secs(300));
        assert_eq!(config.body.max_size, 4 * 1024 * 1024 * 1024);
        assert_eq!(
            config.upstream.address,
            UpstreamAddress::Unix("/run/gunicorn.sock".into())
        );
        assert_eq!(config.routes.len(), 2);
        assert!(config.gzip.compresses("text/html; charset=utf-8"));
        assert!(!config.gzip.compresses("application/json"));
        for hop in ["127.0.0.1", "10.1.2.3", "172.31.0.9", "192.168.7.7"] {
            assert!(config.forwarding.is_trusted(hop.parse().unwrap()), "{hop}");
        }
        for outside in ["127.0.0.2", "172.32.0.1", "203.0.113.7", "::1"] {
            assert!(
                !config.forwarding.is_trusted(outside.parse().unwrap()),
                "{outside}"
            );
        }
    }

    #[test]
    fn sizes_and_durations_accept_human_units() {
        let text = MINIMAL.replace(
            "[upstream]",
            "[body]\nmax_size = \"150MiB\"\nbuffer_size = 65536\n\n[upstream]\nread_timeout = \"180s\"",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.body.max_size, 150 * 1024 * 1024);
        assert_eq!(config.body.buffer_size, 65536);
        assert_eq!(config.upstream.read_timeout, Duration::from_secs(180));
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let text = MINIMAL.replace(
            "address = \"unix:/run/gunicorn.sock\"",
            "address = \"unix:/run/gunicorn.sock\"\nread_timeout = \"five minutes\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("edge.toml:7: upstream.read_timeout:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_action_is_refused_with_its_line() {
        let text = MINIMAL.replace("action = \"upstream\"", "action = \"teleport\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("edge.toml:18: route.action:"), "{err}");
        assert!(err.contains("teleport"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = MINIMAL.replace("cache_control", "cache_controll");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("edge.toml:13:"), "{err}");
        assert!(err.contains("cache_controll"), "{err}");
    }

    #[test]
    fn unknown_key_and_wrong_type_name_their_table() {
        let text = MINIMAL.replace("cache_control", "cache_controll");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("edge.toml:13: route.cache_controll:"),
            "{err}"
        );

        let text = format!("{MINIMAL}\n[server]\nthreads = -1   # one CPU\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("edge.toml:21: server.threads:"), "{err}");
        assert!(!err.contains("one CPU"), "{err}");
    }

    #[test]
    fn values_that_would_fail_at_run_time_are_refused() {
        let err = parse(&MINIMAL.replace("unix:/run/gunicorn.sock", "unix:"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("edge.toml:6: upstream.address:"), "{err}");

        let twice = MINIMAL.replace(
            "[upstream]",
            "[[listener]]\naddress = \"127.0.0.1:8080\"\n\n[upstream]",
        );
        let err = parse(&twice).unwrap_err().to_string();
        assert!(err.contains("listener.address"), "{err}");
        assert!(err.contains("listed twice"), "{err}");

        let header = MINIMAL.replace("max-age=5400", "max-age=5400\\r\\nX-Evil: 1");
        let err = parse(&header).unwrap_err().to_string();
        assert!(err.contains("route.cache_control"), "{err}");

        let unnamed = MINIMAL.replace("name = \"static\"", "name = \"\"");
        let err = parse(&unnamed).unwrap_err().to_string();
        assert!(err.starts_with("edge.toml:9: route.name:"), "{err}");
    }

    #[test]
    fn broken_syntax_names_a_line_and_never_an_empty_key() {
        let text = MINIMAL.replace("[upstream]", "[upstream");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("edge.toml:"), "{err}");
        assert!(!err.contains(": :"), "{err}");
    }

    #[test]
    fn bad_regex_and_missing_root_are_refused() {
        let text = MINIMAL.replace("prefix = \"/\"", "regex = \"^/(unclosed\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("route.regex"), "{err}");

        let text = MINIMAL.replace("root = \"/srv/static\"\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("route.root"), "{err}");
    }

    #[test]
    fn bad_upstream_and_trusted_hop_are_refused() {
        let text = MINIMAL.replace("unix:/run/gunicorn.sock", "gunicorn");
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("upstream.address"));

        let text = format!("{MINIMAL}\n[forwarding]\ntrusted_hops = [\"10.0.0.0/33\"]\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("forwarding.trusted_hops"), "{err}");
    }
}
