//! Shared test support: a throw-away PostgreSQL database loaded with SAPL's
//! schema and sample data, and helpers to read a PDF back as text.
//!
//! Every test gets its own database (unique name), dropped when the guard goes
//! out of scope, so tests run in parallel without seeing each other's rows.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use sapl_renderer::{render, ReaderClass, RenderOptions, ReportId, ReportKind, ReportRequest};

/// The shared SAPL material, relative to the repository root.
pub fn sapl_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sapl")
}

fn base_url() -> String {
    std::env::var("SAPL_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A database created for one test, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: tokio_postgres::Client,
}

fn psql(url: &str, args: &[&str], stdin: Option<&[u8]>) {
    let mut cmd = Command::new("psql");
    cmd.arg(url)
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .expect("psql must be installed for the renderer tests");
    if let Some(bytes) = stdin {
        let mut entrada = child.stdin.take().expect("psql stdin");
        entrada.write_all(bytes).expect("feeding psql");
    }
    let saida = child.wait_with_output().expect("psql ran");
    assert!(
        saida.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&saida.stderr)
    );
}

impl TestDb {
    /// Creates `sapl_r4_<pid>_<n>_<nanos>`, loads schema.sql and sample-data.sql
    /// (data with triggers off, as the SAPL README says) and connects.
    pub async fn new() -> TestDb {
        static CONTADOR: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "sapl_r4_{}_{}_{}",
            std::process::id(),
            CONTADOR.fetch_add(1, Ordering::SeqCst),
            nanos
        );
        let base = base_url();
        psql(
            &format!("{base}/postgres"),
            &["-c", &format!("CREATE DATABASE {name}")],
            None,
        );
        let url = format!("{base}/{name}");
        let dir = sapl_dir();
        let schema = dir.join("schema.sql");
        psql(&url, &["-f", schema.to_str().expect("utf-8 path")], None);
        let mut dados = b"SET session_replication_role = replica;\n".to_vec();
        dados.extend(std::fs::read(dir.join("sample-data.sql")).expect("sample-data.sql"));
        psql(&url, &[], Some(&dados));

        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        TestDb { name, url, client }
    }

    /// Runs SQL (several statements allowed).
    pub async fn exec(&self, sql: &str) {
        self.client.batch_execute(sql).await.expect(sql);
    }

    /// Renders and returns the PDF bytes (panics on error).
    pub async fn pdf(&self, kind: ReportKind, id: ReportId, reader: ReaderClass) -> Vec<u8> {
        let req = ReportRequest { kind, id, reader };
        render(&self.client, &req, &opcoes())
            .await
            .unwrap_or_else(|e| panic!("render {kind} {id}: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // FORCE closes this test's own connection, which is still open here.
        let base = base_url();
        let _ = Command::new("psql")
            .arg(format!("{base}/postgres"))
            .args(["-q", "-X", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Options with a fixed footer date, so text checks do not depend on the clock.
pub fn opcoes() -> RenderOptions {
    RenderOptions {
        today: chrono::NaiveDate::from_ymd_opt(2026, 12, 3),
        ..RenderOptions::default()
    }
}

/// Text of a PDF in content-stream order (`pdftotext -raw`), whitespace collapsed.
pub fn texto(pdf: &[u8]) -> String {
    texto_com(pdf, &["-raw"])
}

/// `pdftotext` with extra arguments, whitespace collapsed.
pub fn texto_com(pdf: &[u8], args: &[&str]) -> String {
    let bruto = pdftotext(pdf, args);
    bruto.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Raw `pdftotext` output (pages separated by form feeds).
pub fn pdftotext(pdf: &[u8], args: &[&str]) -> String {
    let mut child = Command::new("pdftotext")
        .args(args)
        .args(["-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pdftotext (poppler-utils) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pdf)
        .expect("feeding pdftotext");
    let saida = child.wait_with_output().expect("pdftotext ran");
    assert!(
        saida.status.success(),
        "pdftotext failed: {}",
        String::from_utf8_lossy(&saida.stderr)
    );
    String::from_utf8(saida.stdout).expect("pdftotext prints UTF-8")
}

/// Number of pages, from `pdfinfo`.
pub fn paginas(pdf: &[u8]) -> usize {
    pdftotext(pdf, &["-raw"]).matches('\u{c}').count()
}

/// Asserts that every expected string occurs in `texto`, in the given order.
pub fn em_ordem(texto: &str, esperados: &[String]) {
    let mut desde = 0;
    for esperado in esperados {
        let esperado = esperado.split_whitespace().collect::<Vec<_>>().join(" ");
        match texto[desde..].find(&esperado) {
            Some(pos) => desde += pos + esperado.len(),
            None => {
                panic!("{esperado:?} missing (or out of order) after byte {desde} of:\n{texto}")
            }
        }
    }
}

/// The SQL expression for a date in SAPL's long pt-BR form, computed by the
/// database so the tests do not reuse the renderer's own formatting code.
pub fn data_longa_sql(coluna: &str) -> String {
    format!(
        "(extract(day FROM {coluna})::int || ' de ' || (ARRAY['Janeiro','Fevereiro','Março',\
         'Abril','Maio','Junho','Julho','Agosto','Setembro','Outubro','Novembro','Dezembro'])\
         [extract(month FROM {coluna})::int] || ' de ' || extract(year FROM {coluna})::int)"
    )
}

pub use sapl_renderer::ReaderClass as Leitor;
pub fn pk(n: i32) -> ReportId {
    ReportId::Pk(n)
}
