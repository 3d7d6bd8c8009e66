//! `sapl-edge`: the ingress of a SAPL pod, in place of nginx.
//!
//! Reads `sapl-edge.toml` (see `conf/README.md`), then hands one proxy service per listener,
//! the metrics listener and the SIGHUP reloader to Pingora, which owns the runtimes,
//! graceful shutdown (SIGTERM) and the binary upgrade (`--upgrade`, then SIGQUIT to the
//! old process).

mod body;
mod config;
mod files;
mod forwarding;
mod jobs;
mod metrics;
mod painel;
mod protection;
mod proxy;
mod reload;
mod routes;

// mimalloc instead of glibc's malloc: Pingora allocates per request on every worker thread,
// and glibc's arenas spent a tenth of the edge's CPU in malloc, free and their locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes Pingora buffers when reading a client connection (its default is 64 KiB). A request
/// head fits in 4 KiB; with no buffer at all the tiny proxied answer lost a fifth of its
/// throughput, with 64 KiB every idle panel socket held 64 KiB more (loadtests/RESULTS.md).
const CONNECTION_READ_BUFFER: usize = 4 * 1024;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::Parser;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tracing::{info, warn};
use tracing_subscriber::{filter, fmt, prelude::*, EnvFilter};

use crate::config::Config;
use crate::proxy::{EdgeProxy, Runtime};

#[derive(Parser)]
#[command(
    name = "sapl-edge",
    version,
    about = "SAPL's pod ingress: proxy, files, PDF jobs"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/sapl-edge/sapl-edge.toml"
    )]
    config: PathBuf,

    /// Check the configuration file and exit (like `nginx -t`).
    #[arg(short = 't', long = "test")]
    test: bool,

    /// Take the listening sockets over from a running sapl-edge (binary upgrade); send
    /// SIGQUIT to the old process once this one is started.
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();

    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sapl-edge: {e}");
            eprintln!(
                "sapl-edge: configuration file {} test failed",
                cli.config.display()
            );
            return ExitCode::from(1);
        }
    };
    if cli.test {
        for warning in start_warnings(&config) {
            eprintln!("sapl-edge: warning: {warning}");
        }
        println!(
            "sapl-edge: configuration file {} test is successful",
            cli.config.display()
        );
        return ExitCode::SUCCESS;
    }

    run(cli, config)
}

/// What a valid configuration will run without, for lack of an environment variable: the
/// edge starts all the same (and logs the same at start), but `--test` says it up front.
fn start_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(jobs) = &config.jobs {
        if jobs.broker_url.is_none() {
            warnings.push(
                "[jobs] has no broker URL (broker_url or $CELERY_BROKER_URL): legacy report \
                 links will go to Django and the PDF API will answer 503"
                    .to_string(),
            );
        }
        if jobs.tenant.is_none() {
            warnings.push(
                "[jobs] has no tenant (tenant or $POD_NAMESPACE): PDF jobs will be off".to_string(),
            );
        }
    }
    if let Some(painel) = &config.painel {
        if let config::PainelAuth::Django { database_url, .. } = &painel.auth {
            if database_url.is_none() {
                warnings.push(
                    "[painel] auth = \"django\" without a database URL: every panel socket \
                     will be closed 1011"
                        .to_string(),
                );
            }
        }
    }
    warnings
}

/// Access lines (target `access`) go to stdout, everything else to stderr, as nginx's
/// `access_log /dev/stdout` and `error_log stderr` did. `RUST_LOG` refines the levels.
fn init_logging() {
    let env = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let access = fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .with_filter(filter::filter_fn(|m| m.target() == "access"))
        .with_filter(env());
    let errors = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter::filter_fn(|m| m.target() != "access"))
        .with_filter(env());
    tracing_subscriber::registry()
        .with(access)
        .with(errors)
        .init();
}

fn run(cli: Cli, config: Config) -> ExitCode {
    metrics::init();

    let mut server_conf = ServerConf {
        threads: config.server.threads,
        pid_file: config.server.pid_file.to_string_lossy().into_owned(),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    // Every listener shares one pool of upstream connections to Gunicorn.
    server_conf.upstream_keepalive_pool_size = 128;
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    // Pingora writes the pid file only when it daemonizes. Written after `bootstrap`, which
    // in an upgrade waits for the old process's listeners, so until the hand-over the file
    // still names the old process (the one `kill -QUIT "$(cat pid_file)"` must reach).
    if let Err(e) = std::fs::write(&config.server.pid_file, format!("{}\n", std::process::id())) {
        warn!(path = %config.server.pid_file.display(), error = %e, "pid file not written");
    }

    let live = Arc::new(ArcSwap::from_pointee(Runtime::new(config.clone())));

    let painel = match &config.painel {
        Some(p) => match painel::Painel::new(p.clone(), live.clone()) {
            Ok(painel) => {
                painel::add_services(&mut server, &painel);
                Some(painel)
            }
            Err(e) => {
                eprintln!("sapl-edge: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };

    for listener in &config.listeners {
        let edge = EdgeProxy {
            live: live.clone(),
            proto: listener.proto.clone(),
            gzip_level: config.gzip.level,
            painel: painel.clone(),
        };
        let mut service = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            edge,
            &format!("edge {}", listener.address),
        );
        // Pingora reads each connection through a buffer of its own, zeroed (so resident)
        // from the start: with thousands of idle panel sockets its size is most of the
        // edge's memory.
        service.add_listener(
            ListenerConfig::tcp(listener.address.as_str())
                .l4_buffer(L4BufferSettings::default().read(CONNECTION_READ_BUFFER)),
        );
        server.add_service(service);
        info!(address = %listener.address, proto = %listener.proto, "listener ready");
    }

    if let Some(m) = &config.metrics {
        let mut service = Service::new("metrics".to_string(), metrics::MetricsApp);
        service.add_tcp(&m.address);
        server.add_service(service);
        info!(address = %m.address, "metrics listener ready");
    }

    server.add_service(background_service(
        "blocklist",
        protection::BlocklistRefresher { live: live.clone() },
    ));

    jobs::start(&config, &mut server);

    server.add_service(background_service(
        "reload",
        reload::Reloader {
            path: cli.config.clone(),
            live,
        },
    ));

    info!(
        config = %cli.config.display(),
        upstream = %config.upstream.address,
        routes = config.routes.len(),
        "sapl-edge starting"
    );
    server.run_forever()
}
