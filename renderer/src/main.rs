//! The `sapl-renderer` command: renders one report to a file from the command
//! line. Subcommands keep room for the queue worker (`work`), which the job
//! pipeline adds beside `render`.

mod worker;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sapl_renderer::{render, ReaderClass, RenderOptions, ReportId, ReportKind, ReportRequest};

#[derive(Parser)]
#[command(
    name = "sapl-renderer",
    version,
    about = "Renders SAPL's PDF reports from its PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render one report to a PDF file.
    Render(RenderArgs),
    /// Consume the tenant's PDF job queue on Redis B (see src/worker/).
    Work(Box<worker::WorkArgs>),
}

#[derive(Args)]
struct RenderArgs {
    /// materia-tramitacao, etiqueta-materia, etiqueta-protocolo or sessao-plenaria.
    kind: ReportKind,
    /// Primary key, or numero/ano for etiqueta-protocolo.
    id: ReportId,
    /// Render as an anonymous reader (only sessao-plenaria differs).
    #[arg(long)]
    anonymous: bool,
    /// PostgreSQL connection string of SAPL's database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// SAPL's MEDIA_ROOT, where the chamber logo lives.
    #[arg(long, env = "SAPL_MEDIA_ROOT")]
    media_root: Option<PathBuf>,
    /// The chamber's time zone.
    #[arg(long, default_value = "America/Sao_Paulo")]
    time_zone: String,
    /// Output file.
    #[arg(short = 'o', long)]
    output: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Render(args) => render_to_file(args).await,
        Command::Work(args) => worker::run(*args).await,
    }
}

async fn render_to_file(args: RenderArgs) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    // The connection object drives the socket; it ends when the client drops.
    let conexao = tokio::spawn(connection);

    let req = ReportRequest {
        kind: args.kind,
        id: args.id,
        reader: if args.anonymous {
            ReaderClass::Anonymous
        } else {
            ReaderClass::Authenticated
        },
    };
    let opts = RenderOptions {
        media_root: args.media_root,
        time_zone: args.time_zone,
        today: None,
    };
    let pdf = render(&client, &req, &opts)
        .await
        .with_context(|| format!("rendering {} {}", req.kind, req.id))?;
    std::fs::write(&args.output, &pdf)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(kind = %req.kind, id = %req.id, bytes = pdf.len(), "report written");

    drop(client);
    let _ = conexao.await;
    Ok(())
}
