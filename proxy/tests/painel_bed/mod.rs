//! The real peers of the panel tests: a private redis-server as Redis A, a scratch
//! PostgreSQL database with SAPL's schema and sample data, the test bed's Django (Gunicorn)
//! when a test needs Django's dados view, the channels peers (`testbed/painel/peer.py` in
//! `.venv-channels3` / `.venv-channels4`), and `sapl-edge` itself.
//!
//! Every process is started by the test that needs it and killed when its handle drops.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const SECRET_KEY: &str = "painel-test-secret-key";
/// How long any single wait may last before the test fails as hung (not a timed assertion:
/// every wait ends as soon as its condition holds).
pub const HANG: Duration = Duration::from_secs(30);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proxy/ has a parent")
        .to_path_buf()
}

pub fn shared_sapl() -> PathBuf {
    std::env::var_os("SAPL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().parent().unwrap().join("shared").join("sapl"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits for `cond`, failing the test after [`HANG`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private redis-server, in memory only.
pub struct Redis {
    pub port: u16,
    _proc: Proc,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let redis = Redis {
            port,
            _proc: Proc {
                child,
                name: "redis".into(),
            },
        };
        wait_for("redis-server", || {
            redis::Client::open(redis.url(0))
                .and_then(|c| c.get_connection())
                .is_ok()
        });
        redis
    }

    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url(2))
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }
}

fn pg(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "5432")
        .env("PGUSER", "postgres")
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", args[0]))
}

/// One database per test process, loaded with SAPL's schema and sample data. Databases of
/// earlier runs (other pids) are dropped first.
pub fn database() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let listed = pg(&[
            "psql",
            "-Atc",
            "SELECT datname FROM pg_database WHERE datname LIKE 'painel_edge_%'",
        ]);
        assert!(
            listed.status.success(),
            "PostgreSQL on 127.0.0.1:5432: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        for stale in String::from_utf8_lossy(&listed.stdout).lines() {
            pg(&["dropdb", "--if-exists", stale.trim()]);
        }
        let name = format!("painel_edge_{}", std::process::id());
        assert!(pg(&["createdb", &name]).status.success());
        let schema = shared_sapl().join("schema.sql");
        let loaded = pg(&[
            "psql",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &name,
            "-f",
            schema.to_str().unwrap(),
        ]);
        assert!(loaded.status.success(), "schema.sql loads");
        let data = std::fs::read_to_string(shared_sapl().join("sample-data.sql"))
            .expect("sample-data.sql");
        let mut psql = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &name])
            .env("PGHOST", "127.0.0.1")
            .env("PGUSER", "postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        {
            let stdin = psql.stdin.as_mut().unwrap();
            stdin
                .write_all(b"SET session_replication_role = replica;\n")
                .unwrap();
            stdin.write_all(data.as_bytes()).unwrap();
        }
        assert!(psql.wait().unwrap().success(), "sample-data.sql loads");
        name
    })
}

pub fn sql(statement: &str) {
    let out = pg(&[
        "psql",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        database(),
        "-Atc",
        statement,
    ]);
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which channels_redis the Django peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// channels-redis 3.4.1 on Django 2.2 / Python 3.9 (SAPL's pins).
    V3,
    /// channels-redis 4.x on Django 4.2 / Python 3.11.
    V4,
}

impl Channels {
    pub fn venv(self) -> PathBuf {
        repo().join(match self {
            Channels::V3 => ".venv-channels3",
            Channels::V4 => ".venv-channels4",
        })
    }

    /// The peer's Python, or `None` (with a loud message) when setup.sh could not create it.
    pub fn python(self) -> Option<PathBuf> {
        let python = self.venv().join("bin").join("python");
        if python.exists() {
            return Some(python);
        }
        if self == Channels::V4 {
            panic!("{} missing: run scripts/setup.sh", python.display());
        }
        eprintln!(
            "SKIPPED: {} missing (no Python 3.9 on this machine?): the channels-redis 3.4.1 \
             peer cannot run; scripts/setup.sh says why",
            python.display()
        );
        None
    }
}

/// The Django peer: logs users in and publishes with channels_redis's own `group_send`.
pub struct Peer {
    pub python: PathBuf,
    pub redis_url: String,
    pub prefix: String,
    pub layer: &'static str,
    pub keys: String,
}

impl Peer {
    pub fn new(channels: Channels, redis: &Redis, prefix: &str) -> Option<Peer> {
        Some(Peer {
            python: channels.python()?,
            redis_url: redis.url(2),
            prefix: prefix.to_string(),
            layer: "core",
            keys: String::new(),
        })
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .arg(repo().join("testbed/painel/peer.py"))
            .args(args)
            .env("SECRET_KEY", SECRET_KEY)
            .env("SAPL_DB_NAME", database())
            .env("PAINEL_REDIS_URL", &self.redis_url)
            .env("PAINEL_PREFIX", &self.prefix)
            .env("PAINEL_LAYER", self.layer)
            .env("PAINEL_KEYS", &self.keys)
            .output()
            .expect("peer.py runs");
        assert!(
            out.status.success(),
            "peer.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn login(&self, user: &str, password: &str) -> String {
        self.run(&["login", user, password])
    }

    /// Logs in a user of the calling test's own, with a painel permission. Tests never
    /// share a user: a login by the other Django version (or a concurrent first login)
    /// rehashes a shared user's password, and Django then ends that user's other sessions,
    /// so a socket of a test running alongside would be closed 4401.
    pub fn viewer(&self, username: &str) -> String {
        let password = "senha-do-painel-1";
        self.run(&["create-user", username, password, "painel.list_painel"]);
        self.login(username, password)
    }

    pub fn publish(&self, group: &str, payload: &str) {
        self.run(&["publish", group, payload]);
    }
}

/// Gunicorn serving the test bed's Django app (for the dados view).
pub struct Gunicorn {
    pub socket: PathBuf,
    _proc: Proc,
}

impl Gunicorn {
    pub fn start(dir: &Path) -> Gunicorn {
        let socket = dir.join("gunicorn.sock");
        let binary = repo().join(".venv-django/bin/gunicorn");
        assert!(
            binary.exists(),
            "{} missing: run scripts/setup.sh",
            binary.display()
        );
        let child = Command::new(binary)
            .args(["--workers", "2", "--bind"])
            .arg(format!("unix:{}", socket.display()))
            .arg("--chdir")
            .arg(repo().join("testbed/django_app"))
            .arg("saplbed.wsgi:application")
            .env("SECRET_KEY", SECRET_KEY)
            .env("SAPL_DB_NAME", database())
            .env("DJANGO_SETTINGS_MODULE", "saplbed.settings")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("gunicorn.log")).unwrap())
            .spawn()
            .expect("gunicorn");
        let gunicorn = Gunicorn {
            socket,
            _proc: Proc {
                child,
                name: "gunicorn".into(),
            },
        };
        wait_for("gunicorn", || {
            std::os::unix::net::UnixStream::connect(&gunicorn.socket).is_ok()
        });
        gunicorn
    }
}

/// How one sapl-edge is configured.
#[derive(Clone)]
pub struct EdgeSettings {
    pub prefix: String,
    pub auth: &'static str,
    pub layer: &'static str,
    pub upstream: Option<PathBuf>,
    /// Extra `key = value` lines for `[painel]`.
    pub extra: Vec<String>,
}

impl EdgeSettings {
    pub fn new(prefix: &str) -> EdgeSettings {
        EdgeSettings {
            prefix: prefix.to_string(),
            auth: "django",
            layer: "core",
            upstream: None,
            extra: Vec::new(),
        }
    }
}

/// A running sapl-edge.
pub struct Edge {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    proc: Proc,
}

impl Edge {
    pub fn start(redis: &Redis, settings: &EdgeSettings) -> Edge {
        let dir = tempfile::Builder::new()
            .prefix("pe")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let metrics_port = free_port();
        let upstream = settings
            .upstream
            .clone()
            .unwrap_or_else(|| dir.path().join("no-gunicorn.sock"));
        let mut painel = vec![
            format!("prefix = {:?}", settings.prefix),
            format!("redis_url = {:?}", redis.url(2)),
            format!("layer = {:?}", settings.layer),
            format!("auth = {:?}", settings.auth),
        ];
        painel.extend(settings.extra.iter().cloned());
        let config = format!(
            r#"
[server]
pid_file = {pid:?}
upgrade_sock = {upgrade:?}
grace_period = "1s"
shutdown_timeout = "2s"

[[listener]]
address = "127.0.0.1:{port}"

[upstream]
address = "unix:{upstream}"

[metrics]
address = "127.0.0.1:{metrics_port}"

[[route]]
name = "painel-ws"
regex = "^/ws/painel/(?P<sessao_id>[0-9]+)/$"
action = "websocket"

[[route]]
name = "votacao-ws"
regex = "^/ws/votacao/(?P<sessao_id>[0-9]+)$"
action = "websocket"

[[route]]
name = "painel-dados"
regex = "^/painel/(?P<sessao_id>[0-9]+)/dados$"
action = "painel_dados"

[[route]]
name = "default"
prefix = "/"
action = "upstream"

[painel]
{painel}
"#,
            pid = dir.path().join("edge.pid"),
            upgrade = dir.path().join("upgrade.sock"),
            upstream = upstream.display(),
            painel = painel.join("\n"),
        );
        let conf = dir.path().join("sapl-edge.toml");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sapl-edge"))
            .arg("-c")
            .arg(&conf)
            .env(
                "DATABASE_URL",
                format!("postgresql://postgres@127.0.0.1:5432/{}", database()),
            )
            .env("SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info,sapl_edge::painel=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("edge.log")).unwrap())
            .spawn()
            .expect("sapl-edge starts");
        let edge = Edge {
            port,
            metrics_port,
            proc: Proc {
                child,
                name: "sapl-edge".into(),
            },
            dir,
        };
        wait_for("sapl-edge listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        edge
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// The value of one metric series in `/metrics`, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: m\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Edge {
    /// A failing test shows what the edge logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- sapl-edge log (last 40 lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a panel socket as a browser on the edge's own host would.
pub async fn connect(
    edge: &Edge,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = edge.url(path).into_client_request()?;
    if let Some(session) = cookie {
        request.headers_mut().insert(
            "Cookie",
            format!("csrftoken=x; sessionid={session}").parse().unwrap(),
        );
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

/// The next text message (pings and pongs skipped).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(HANG, ws.next())
            .await
            .expect("a message before the hang guard")
            .expect("socket still open")
            .expect("no protocol error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => {}
        }
    }
}

/// The close code the server ends the socket with.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(HANG, ws.next())
            .await
            .expect("a close before the hang guard");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return Some(frame.code.into()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Waits until the edge is a member of `group` in Redis (core layer).
pub fn wait_membership(redis: &Redis, prefix: &str, group: &str) {
    let mut conn = redis.conn();
    let key = format!("{prefix}:group:{group}");
    wait_for(&format!("membership in {key}"), || {
        redis::cmd("ZCARD")
            .arg(&key)
            .query::<i64>(&mut conn)
            .unwrap_or(0)
            > 0
    });
}

/// Waits until someone subscribes to the group's pub/sub channel.
pub fn wait_subscription(redis: &Redis, prefix: &str, group: &str) {
    let mut conn = redis.conn();
    let channel = format!("{prefix}__group__{group}");
    wait_for(&format!("subscription to {channel}"), || {
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query(&mut conn)
            .unwrap_or_default();
        counts.first().is_some_and(|(_, n)| *n > 0)
    });
}

/// The panel JSON SAPL produced for an open nominal vote.
pub fn dados_votacao_aberta() -> String {
    std::fs::read_to_string(shared_sapl().join("painel/dados-votacao-aberta.json"))
        .expect("painel/dados-votacao-aberta.json")
}
