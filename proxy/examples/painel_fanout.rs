//! Fan-out load client for the panel's WebSockets, driven by `loadtests/painel-fanout.sh`.
//!
//! Opens `--sockets` WebSockets to one URL (a sessão's `/ws/painel/<id>/` on sapl-edge or
//! on Daphne), waits until every one is open or the connect budget is spent, writes
//! `--ready-file`, then measures, for each socket and each load message
//! `{"type": "data", "payload": {"seq": n, "sent_at": epoch}}` (what
//! `testbed/painel/peer.py publish-loop` makes Django `group_send`), the receive time minus
//! `sent_at`. Both clocks are this machine's wall clock. It stops when every socket has
//! `--messages` messages, or `--grace` after `--done-file` appears (the publisher ended),
//! or at `--deadline`, and prints one line:
//!
//! ```text
//! connected=1000/1000 connect_s=0.41 received=20000/20000 p50_ms=0.912 p99_ms=3.170 max_ms=4.022 lost=0 closed=0 processes=1 errors=none
//! ```
//!
//! Two limits of one machine shape it. Ephemeral ports: sockets bind to `--sources`
//! consecutive loopback addresses from `--source-base`, so tens of thousands of sockets to
//! one port never run out of source ports. Open files: when the sockets do not fit under
//! this process's `RLIMIT_NOFILE`, the client runs copies of itself (`--child`), each with
//! a share of the sockets, and merges what they measured.
//!
//! `cargo build --release -p sapl-edge --example painel_fanout`, then
//! `painel_fanout --url ws://127.0.0.1:8080/ws/painel/1/ --sockets 1000 --messages 20`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Sockets one loopback source address carries by default: well under the 28,000 ports of
/// Linux's default ephemeral range, leaving room for TIME_WAIT of earlier runs.
const SOCKETS_PER_SOURCE: usize = 10_000;

/// File descriptors a client process keeps for itself (runtime, stdio, pipes).
const RESERVED_FDS: usize = 64;

#[derive(Parser, Debug, Clone)]
#[command(about = "Opens N panel WebSockets and measures the delivery delay of load messages")]
struct Args {
    /// The sessão's socket URL, e.g. ws://127.0.0.1:8080/ws/painel/1/
    #[arg(long)]
    url: String,
    /// How many sockets to open.
    #[arg(long)]
    sockets: usize,
    /// Load messages each socket should receive (seq 0..messages).
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Seconds all sockets together may take to open; later ones count as failed.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Handshakes in flight at once (split between processes).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Loopback source addresses to spread the sockets over (default: one per 10,000).
    #[arg(long)]
    sources: Option<usize>,
    /// The first source address; the others follow it.
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// Written (`connected=… connect_s=… errors=…`) once the connect phase is over.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Its appearance means the publisher is done: stop `--grace` seconds later.
    #[arg(long)]
    done_file: Option<PathBuf>,
    #[arg(long, default_value_t = 3.0)]
    grace: f64,
    /// Seconds after the connect phase at which listening stops in any case.
    #[arg(long, default_value_t = 300.0)]
    deadline: f64,
    /// Client processes (default: as many as the open-file limit needs).
    #[arg(long)]
    processes: Option<usize>,
    /// Internal: run as one share of a multi-process client, reporting JSON on stdout.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: global index of this share's first socket (picks its source addresses).
    #[arg(long, hide = true, default_value_t = 0)]
    first: usize,
}

/// What the connect phase of one share (or of all, merged) came to.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct OpenReport {
    connected: usize,
    failed: usize,
    /// From the first attempt to the last socket that opened.
    connect_secs: f64,
    /// Failure descriptions and how many sockets each ended.
    errors: BTreeMap<String, usize>,
}

impl OpenReport {
    fn merge(&mut self, other: OpenReport) {
        self.connected += other.connected;
        self.failed += other.failed;
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_string();
        }
        self.errors
            .iter()
            .map(|(e, n)| format!("{n}× {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What one share measured.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ShareResult {
    open: OpenReport,
    /// One delay per load message received, in microseconds.
    delays_us: Vec<u32>,
    /// Sockets the server closed (or that broke) before the end.
    closed: usize,
    /// Load messages seen twice on one socket.
    duplicates: usize,
    /// CPU this process used while listening (after its connect phase).
    cpu_secs: f64,
}

impl ShareResult {
    fn merge(&mut self, other: ShareResult) {
        self.open.merge(other.open);
        self.delays_us.extend(other.delays_us);
        self.closed += other.closed;
        self.duplicates += other.duplicates;
        self.cpu_secs += other.cpu_secs;
    }
}

/// What one socket measured.
#[derive(Default)]
struct SocketResult {
    delays_us: Vec<u32>,
    closed: bool,
    duplicates: usize,
}

/// The payload of a load message; other messages (a snapshot) have no `seq`.
#[derive(Deserialize)]
struct PanelMessage {
    payload: Option<LoadPayload>,
}

#[derive(Deserialize)]
struct LoadPayload {
    seq: Option<usize>,
    sent_at: Option<f64>,
}

/// What every socket task of a share needs.
struct Share {
    url: String,
    server: SocketAddr,
    sockets: usize,
    first: usize,
    messages: usize,
    sources: Vec<Ipv4Addr>,
    connect_deadline: Instant,
    permits: Semaphore,
    /// Sockets that have received every load message.
    complete: AtomicUsize,
}

impl Share {
    fn source(&self, global_index: usize) -> SocketAddr {
        let ip = self.sources[global_index % self.sources.len()];
        SocketAddr::V4(SocketAddrV4::new(ip, 0))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sockets == 0 {
        bail!("--sockets must be at least 1");
    }
    let processes = match args.processes {
        Some(p) => p.max(1),
        None if args.child => 1,
        None => {
            let budget = open_file_limit()?.saturating_sub(RESERVED_FDS).max(1);
            args.sockets.div_ceil(budget)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    if processes > 1 {
        // The coordinator only reads pipes and files.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(coordinate(args, processes));
    }
    let workers = if args.child { 1 } else { cores };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(single(args))
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux).
fn open_file_limit() -> anyhow::Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("/proc/self/limits")?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .context("no \"Max open files\" line in /proc/self/limits")
}

/// The server's address, from the URL's host and port.
async fn server_address(url: &str) -> anyhow::Result<SocketAddr> {
    let request = url.into_client_request().context("--url")?;
    let uri = request.uri();
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let mut addresses = tokio::net::lookup_host((host, port)).await?;
    let found = addresses.find(SocketAddr::is_ipv4);
    found.with_context(|| format!("{host} has no IPv4 address"))
}

fn source_addresses(args: &Args) -> Vec<Ipv4Addr> {
    // A child sees only its share; the coordinator passes the total explicitly.
    let total = args
        .sources
        .unwrap_or_else(|| args.sockets.div_ceil(SOCKETS_PER_SOURCE));
    let base = u32::from(args.source_base);
    (0..total.max(1) as u32)
        .map(|i| Ipv4Addr::from(base + i))
        .collect()
}

/// One process holds every socket (or, as a child, its share).
async fn single(args: Args) -> anyhow::Result<()> {
    let (open_tx, open_rx) = oneshot::channel::<OpenReport>();
    let reporting = {
        let args = args.clone();
        tokio::spawn(async move {
            let Ok(open) = open_rx.await else { return };
            if args.child {
                // The coordinator reads this line to know the share is ready.
                println!("{}", serde_json::to_string(&open).unwrap_or_default());
            } else if let Some(path) = &args.ready_file {
                write_ready(path, &open, args.sockets);
            }
        })
    };
    let result = run_share(&args, open_tx).await?;
    let _ = reporting.await;
    if args.child {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_summary(&args, result, 1);
    }
    Ok(())
}

/// Runs `processes` children with a share each and merges what they report.
async fn coordinate(args: Args, processes: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let sources = source_addresses(&args).len();
    let per_child = args.sockets.div_ceil(processes);
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<OpenReport>();
    let mut readers = Vec::new();
    let mut first = 0;
    while first < args.sockets {
        let share = per_child.min(args.sockets - first);
        let child_args: Vec<String> = vec![
            "--url".into(),
            args.url.clone(),
            "--sockets".into(),
            share.to_string(),
            "--first".into(),
            first.to_string(),
            "--messages".into(),
            args.messages.to_string(),
            "--connect-timeout".into(),
            args.connect_timeout.to_string(),
            "--concurrency".into(),
            (args.concurrency / processes).max(1).to_string(),
            "--sources".into(),
            sources.to_string(),
            "--source-base".into(),
            args.source_base.to_string(),
            "--grace".into(),
            args.grace.to_string(),
            "--deadline".into(),
            args.deadline.to_string(),
            "--processes".into(),
            "1".into(),
            "--child".into(),
        ];
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(&child_args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(done) = &args.done_file {
            command.arg("--done-file").arg(done);
        }
        let mut child = command.spawn().context("starting a client share")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let open_tx = open_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let open: OpenReport = match lines.next_line().await? {
                Some(line) => serde_json::from_str(&line)?,
                None => bail!("a client share ended before its connect report"),
            };
            let _ = open_tx.send(open);
            let result: ShareResult = match lines.next_line().await? {
                Some(line) => serde_json::from_str(&line)?,
                None => bail!("a client share ended before its result"),
            };
            child.wait().await?;
            Ok::<_, anyhow::Error>(result)
        }));
        first += share;
    }
    drop(open_tx);

    let mut open = OpenReport::default();
    for _ in 0..readers.len() {
        match open_rx.recv().await {
            Some(report) => open.merge(report),
            None => break,
        }
    }
    if let Some(path) = &args.ready_file {
        write_ready(path, &open, args.sockets);
    }

    let mut merged = ShareResult::default();
    for reader in readers {
        merged.merge(reader.await??);
    }
    print_summary(&args, merged, processes);
    Ok(())
}

/// Written through a rename, so the script never reads half a file.
fn write_ready(path: &Path, open: &OpenReport, wanted: usize) {
    let text = format!(
        "connected={}/{} connect_s={:.2} errors={}\n",
        open.connected,
        wanted,
        open.connect_secs,
        open.errors_text()
    );
    let partial = path.with_extension("partial");
    if std::fs::write(&partial, text).is_ok() {
        let _ = std::fs::rename(&partial, path);
    }
}

fn print_summary(args: &Args, mut result: ShareResult, processes: usize) {
    let expected = result.open.connected * args.messages;
    let received = result.delays_us.len();
    result.delays_us.sort_unstable();
    let at = |q: f64| percentile_ms(&result.delays_us, q);
    println!(
        "connected={}/{} connect_s={:.2} received={}/{} p50_ms={} p99_ms={} max_ms={} lost={} \
         closed={} duplicates={} client_cpu_s={:.2} processes={} errors={}",
        result.open.connected,
        args.sockets,
        result.open.connect_secs,
        received,
        expected,
        at(0.50),
        at(0.99),
        at(1.0),
        expected.saturating_sub(received),
        result.closed,
        result.duplicates,
        result.cpu_secs,
        processes,
        result.open.errors_text()
    );
}

/// The `q` quantile (nearest rank) of sorted microsecond delays, in milliseconds.
fn percentile_ms(sorted: &[u32], q: f64) -> String {
    if sorted.is_empty() {
        return "-".to_string();
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    format!("{:.3}", f64::from(sorted[rank - 1]) / 1000.0)
}

/// Opens this share's sockets, reports the connect phase on `open_tx`, then listens.
async fn run_share(
    args: &Args,
    open_tx: oneshot::Sender<OpenReport>,
) -> anyhow::Result<ShareResult> {
    let started = Instant::now();
    let share = Arc::new(Share {
        url: args.url.clone(),
        server: server_address(&args.url).await?,
        sockets: args.sockets,
        first: args.first,
        messages: args.messages,
        sources: source_addresses(args),
        connect_deadline: started + Duration::from_secs_f64(args.connect_timeout),
        permits: Semaphore::new(args.concurrency.max(1)),
        complete: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel::<Result<(), String>>();
    let tasks: Vec<_> = (0..share.sockets)
        .map(|i| {
            tokio::spawn(socket(
                share.clone(),
                share.first + i,
                outcome_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(outcome_tx);

    // Every task reports once, at the latest when the connect budget runs out.
    let mut open = OpenReport::default();
    while let Some(outcome) = outcomes.recv().await {
        match outcome {
            Ok(()) => {
                open.connected += 1;
                open.connect_secs = started.elapsed().as_secs_f64();
            }
            Err(e) => {
                open.failed += 1;
                *open.errors.entry(e).or_default() += 1;
            }
        }
    }
    let connected = open.connected;
    let _ = open_tx.send(open.clone());
    let cpu_before = process_cpu_secs();

    let listen_until = Instant::now() + Duration::from_secs_f64(args.deadline);
    let mut grace_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if share.complete.load(Ordering::Relaxed) >= connected || now >= listen_until {
            break;
        }
        match grace_until {
            Some(t) if now >= t => break,
            Some(_) => {}
            None => {
                if args.done_file.as_ref().is_some_and(|p| p.exists()) {
                    grace_until = Some(now + Duration::from_secs_f64(args.grace));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);

    let mut result = ShareResult {
        open,
        ..ShareResult::default()
    };
    for task in tasks {
        let socket = task.await?;
        result.delays_us.extend(socket.delays_us);
        result.closed += usize::from(socket.closed);
        result.duplicates += socket.duplicates;
    }
    result.cpu_secs = process_cpu_secs() - cpu_before;
    Ok(result)
}

/// utime + stime of this process from `/proc/self/stat`, in seconds (USER_HZ is 100 on
/// Linux), so the script need not catch the client alive to know what it cost.
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // After the command name's closing parenthesis, utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One socket: open it within the budget, then record each load message's delay.
async fn socket(
    share: Arc<Share>,
    global_index: usize,
    outcome: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> SocketResult {
    let opening = async {
        // Held only for the handshake: it bounds handshakes in flight, not open sockets.
        let _permit = share.permits.acquire().await.map_err(|e| e.to_string())?;
        open(&share.url, share.source(global_index), share.server).await
    };
    let mut ws = match tokio::time::timeout_at(share.connect_deadline, opening).await {
        Ok(Ok(ws)) => {
            let _ = outcome.send(Ok(()));
            ws
        }
        Ok(Err(e)) => {
            let _ = outcome.send(Err(e));
            return SocketResult::default();
        }
        Err(_) => {
            let _ = outcome.send(Err("not open within the connect budget".to_string()));
            return SocketResult::default();
        }
    };
    drop(outcome);

    let mut result = SocketResult {
        delays_us: Vec::with_capacity(share.messages),
        ..SocketResult::default()
    };
    let mut seen = vec![false; share.messages];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // The clock is read before parsing, so parsing is not counted as delay.
                    let received_at = epoch_secs();
                    let Some((seq, sent_at)) = load_message(text.as_str()) else {
                        continue;
                    };
                    if seq >= share.messages {
                        continue;
                    }
                    if seen[seq] {
                        result.duplicates += 1;
                        continue;
                    }
                    seen[seq] = true;
                    let delay_us = ((received_at - sent_at) * 1e6).max(0.0);
                    result.delays_us.push(delay_us.min(f64::from(u32::MAX)) as u32);
                    if result.delays_us.len() == share.messages {
                        share.complete.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    result.closed = true;
                    break;
                }
                // tungstenite answers pings by itself on the next read.
                Some(Ok(_)) => {}
            },
        }
    }
    result
}

type Ws = WebSocketStream<TcpStream>;

/// A TCP connection from `source` to `server`, then the WebSocket handshake for `url`.
async fn open(url: &str, source: SocketAddr, server: SocketAddr) -> Result<Ws, String> {
    let tcp = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    tcp.bind(source)
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = tcp
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Panel messages are small; small buffers keep 20,000 sockets cheap on the client too.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => format!("handshake: HTTP {}", response.status()),
            other => format!("handshake: {other}"),
        })?;
    Ok(ws)
}

/// `(seq, sent_at)` of a load message.
fn load_message(text: &str) -> Option<(usize, f64)> {
    let message: PanelMessage = serde_json::from_str(text).ok()?;
    let payload = message.payload?;
    Some((payload.seq?, payload.sent_at?))
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_messages_are_recognised_and_snapshots_are_not() {
        let load = r#"{"type": "data", "payload": {"seq": 3, "sent_at": 1764800000.25}}"#;
        assert_eq!(load_message(load), Some((3, 1764800000.25)));
        let snapshot = r#"{"type": "data", "payload": {"num_presentes": 8}}"#;
        assert_eq!(load_message(snapshot), None);
        assert_eq!(load_message("{\"type\": \"pong\"}"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let delays: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&delays, 0.50), "50.000");
        assert_eq!(percentile_ms(&delays, 0.99), "99.000");
        assert_eq!(percentile_ms(&delays, 1.0), "100.000");
        assert_eq!(percentile_ms(&[], 0.5), "-");
    }
}
