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

    /// The peer's Python with the Django settings of this peer in its environment.
    fn python(&self) -> Command {
        let mut command = Command::new(&self.python);
        command
            .env("SECRET_KEY", SECRET_KEY)
            .env("SAPL_DB_NAME", database())
            .env("PAINEL_REDIS_URL", &self.redis_url)
            .env("PAINEL_PREFIX", &self.prefix)
            .env("PAINEL_LAYER", self.layer)
            .env("PAINEL_KEYS", &self.keys);
        command
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .python()
            .arg(repo().join("testbed/painel/peer.py"))
            .args(args)
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
    /// The test bed's record of every request Django received (`saplbed/hits.py`).
    pub hits: PathBuf,
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
            .env("SAPL_TESTBED_HITS", dir.join("hits.jsonl"))
            .env("DJANGO_SETTINGS_MODULE", "saplbed.settings")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("gunicorn.log")).unwrap())
            .spawn()
            .expect("gunicorn");
        let gunicorn = Gunicorn {
            socket,
            hits: dir.join("hits.jsonl"),
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

impl Gunicorn {
    /// The requests Django received for `path` so far, by their raw URI (query included).
    pub fn hits(&self, path: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.hits).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|hit| hit["path"] == path)
            .map(|hit| hit["raw_uri"].as_str().unwrap_or("").to_string())
            .collect()
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
    /// Extra `key = value` lines for `[upstream]`.
    pub upstream_extra: Vec<String>,
    /// Extra `key = value` lines for the `painel-ws` route.
    pub ws_route_extra: Vec<String>,
}

impl EdgeSettings {
    pub fn new(prefix: &str) -> EdgeSettings {
        EdgeSettings {
            prefix: prefix.to_string(),
            auth: "django",
            layer: "core",
            upstream: None,
            extra: Vec::new(),
            upstream_extra: Vec::new(),
            ws_route_extra: Vec::new(),
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
{upstream_extra}

[metrics]
address = "127.0.0.1:{metrics_port}"

[[route]]
name = "painel-ws"
regex = "^/ws/painel/(?P<sessao_id>[0-9]+)/$"
action = "websocket"
{ws_route_extra}

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
            upstream_extra = settings.upstream_extra.join("\n"),
            ws_route_extra = settings.ws_route_extra.join("\n"),
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
                && TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()
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
        stream.set_read_timeout(Some(HANG)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .unwrap();
        // Read to Content-Length: the listener may keep the connection open after it.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("/metrics has a Content-Length");
                if body.len() >= length {
                    break;
                }
            }
            let n = stream.read(&mut chunk).expect("/metrics answers");
            assert!(n > 0, "/metrics closed early");
            raw.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&raw);
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

impl Peer {
    /// `count` messages `{"seq": n, "texto": <size bytes>}` to `group` from one Django
    /// process, through channels_redis's own `group_send`, as fast as the layer takes them.
    pub fn publish_many(&self, group: &str, count: usize, size: usize) {
        let script = r#"
import asyncio, importlib.util, sys
spec = importlib.util.spec_from_file_location("peer", sys.argv[1])
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
peer._setup(publishing=True)
from channels.layers import get_channel_layer
group, count, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def run():
    layer = get_channel_layer()
    for seq in range(count):
        await layer.group_send(
            group, {"type": "painel.data", "payload": {"seq": seq, "texto": "v" * size}}
        )

asyncio.run(run())
"#;
        let out = self
            .python()
            .arg("-c")
            .arg(script)
            .arg(repo().join("testbed/painel/peer.py"))
            .args([group, &count.to_string(), &size.to_string()])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "publish_many: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One HTTP answer read whole.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Edge {
    /// A plain `GET` through the edge's listener, as a browser page's XHR would send it.
    pub fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(HANG)).unwrap();
        let cookie = session
            .map(|s| format!("Cookie: csrftoken=x; sessionid={s}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\
             X-Requested-With: XMLHttpRequest\r\n{cookie}\r\n",
            self.port
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_string(),
        }
    }
}

/// WebSocket opcodes the raw client writes and reads (RFC 6455, 5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket client that writes frames byte by byte, for what a well-behaved library
/// will not send: fragments with a ping between them, a character split across frames,
/// invalid UTF-8, fragmented control frames.
pub struct RawWs {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Completes the upgrade on `path`; panics unless the edge answers 101.
    pub async fn connect(edge: &Edge, path: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            edge.port
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
                .await
                .expect("a handshake answer before the hang guard")
                .unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // The key of RFC 6455's own example, so its accept value is known.
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "Sec-WebSocket-Accept: {head}"
        );
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Writes one masked frame.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;

        let mask = [0x5a, 0x13, 0xc7, 0x2e];
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame from the server; `None` when the connection ended.
    pub async fn frame(&mut self) -> Option<Frame> {
        use tokio::io::AsyncReadExt;

        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout(HANG, self.stream.read(&mut chunk))
                .await
                .expect("a frame before the hang guard");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The close code the server ends the connection with (data frames skipped).
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(frame) = self.frame().await {
            if frame.opcode == op::CLOSE {
                return frame.close_code();
            }
        }
        None
    }
}

/// An unmasked server frame at the start of `buf`, and the bytes it took.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((
        Frame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload,
        },
        at,
    ))
}
