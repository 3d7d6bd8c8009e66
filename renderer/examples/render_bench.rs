//! Warm-process render timing, as the queue worker will see it: one connection,
//! the same report rendered `runs` times, each `render` call timed on its own.
//!
//! `cargo run --release -p sapl-renderer --example render_bench -- <database-url> <kind> <id> [runs]`
//!
//! Prints one line: `first <s> min <s> median <s> max <s>` (first = the cold call,
//! which also parses the embedded fonts; min/median/max over the following runs).

use std::time::Instant;

use sapl_renderer::{render, ReaderClass, RenderOptions, ReportRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, kind, id, resto @ ..] = args.as_slice() else {
        anyhow::bail!("usage: render_bench <database-url> <kind> <id> [runs]");
    };
    let runs: usize = resto.first().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    let req = ReportRequest {
        kind: kind.parse()?,
        id: id.parse()?,
        reader: ReaderClass::Anonymous,
    };
    let opts = RenderOptions::default();
    let mut tempos = Vec::with_capacity(runs + 1);
    for _ in 0..=runs {
        let inicio = Instant::now();
        let pdf = render(&client, &req, &opts).await?;
        tempos.push(inicio.elapsed().as_secs_f64());
        std::hint::black_box(pdf);
    }
    let primeiro = tempos.remove(0);
    tempos.sort_by(f64::total_cmp);
    let mediana = tempos[tempos.len() / 2];
    println!(
        "first {primeiro:.4} min {:.4} median {mediana:.4} max {:.4}",
        tempos[0],
        tempos[tempos.len() - 1]
    );
    Ok(())
}
