//! sapl-renderer: SAPL's PDF reports rendered natively from its PostgreSQL.
//!
//! The job worker (and the CLI) call [`render`] with a [`ReportRequest`] and get
//! PDF bytes back; [`fingerprint`] answers, with one cheap query, a string that
//! changes whenever the rows a report reads change, so a finished PDF can be
//! reused until then.
//!
//! Inside, `reports` turns rows into a document model (one module per report,
//! a fixed number of queries each), `layout` turns the model into pages and PDF
//! bytes, and `text` holds the pt-BR string rules.
//!
//! ```no_run
//! # async fn exemplo(db: &tokio_postgres::Client) -> Result<(), sapl_renderer::RenderError> {
//! use sapl_renderer::{render, ReaderClass, RenderOptions, ReportId, ReportKind, ReportRequest};
//! let req = ReportRequest {
//!     kind: ReportKind::MateriaTramitacao,
//!     id: ReportId::Pk(1),
//!     reader: ReaderClass::Anonymous,
//! };
//! let pdf = render(db, &req, &RenderOptions::default()).await?;
//! # Ok(()) }
//! ```

pub mod layout;
mod reports;
pub mod text;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::NaiveDate;

/// The reports this crate renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// A matéria's tramitação history (`/relatorios/<pk>/materia-tramitacao`).
    MateriaTramitacao,
    /// The matéria label with its barcode (`/relatorios/<pk>/etiqueta-materia-legislativa`).
    EtiquetaMateria,
    /// The 62 × 29 mm protocolo label (`/relatorios/<nro>/<ano>/etiqueta-protocolo`).
    EtiquetaProtocolo,
    /// The sessão plenária summary (`/relatorios/<pk>/sessao-plenaria-pdf`).
    SessaoPlenaria,
}

impl ReportKind {
    /// Every kind, for listings and metrics labels.
    pub const ALL: [ReportKind; 4] = [
        ReportKind::MateriaTramitacao,
        ReportKind::EtiquetaMateria,
        ReportKind::EtiquetaProtocolo,
        ReportKind::SessaoPlenaria,
    ];

    /// The kebab-case name used on the command line, in job payloads and as a
    /// metrics label: `materia-tramitacao`, `etiqueta-materia`,
    /// `etiqueta-protocolo`, `sessao-plenaria`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::MateriaTramitacao => "materia-tramitacao",
            ReportKind::EtiquetaMateria => "etiqueta-materia",
            ReportKind::EtiquetaProtocolo => "etiqueta-protocolo",
            ReportKind::SessaoPlenaria => "sessao-plenaria",
        }
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A report name that is not one of the four kebab-case kinds.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown report kind {0:?} (expected materia-tramitacao, etiqueta-materia, etiqueta-protocolo or sessao-plenaria)")]
pub struct UnknownKind(pub String);

impl FromStr for ReportKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReportKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Which object a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportId {
    /// Primary key of the matéria or sessão.
    Pk(i32),
    /// A protocolo is addressed by its number and year, as in its legacy URL.
    Protocolo { numero: i32, ano: i32 },
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportId::Pk(pk) => write!(f, "{pk}"),
            ReportId::Protocolo { numero, ano } => write!(f, "{numero}/{ano}"),
        }
    }
}

/// An id string that is neither a pk nor `numero/ano`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid report id {0:?} (expected a number, or numero/ano for a protocolo)")]
pub struct InvalidId(pub String);

impl FromStr for ReportId {
    type Err = InvalidId;

    /// `"42"` is a pk; `"15/2025"` is a protocolo's numero/ano.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let erro = || InvalidId(s.to_string());
        match s.split_once('/') {
            Some((numero, ano)) => Ok(ReportId::Protocolo {
                numero: numero.trim().parse().map_err(|_| erro())?,
                ano: ano.trim().parse().map_err(|_| erro())?,
            }),
            None => s.trim().parse().map(ReportId::Pk).map_err(|_| erro()),
        }
    }
}

/// Who will read the PDF. Only `sessao-plenaria` differs: anonymous readers see
/// correspondências only when the chamber publishes administrative documents
/// (`base_appconfig.documentos_administrativos = 'O'`), and then only the
/// non-restricted ones. Job keys must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReaderClass {
    #[default]
    Anonymous,
    Authenticated,
}

impl ReaderClass {
    /// `anonymous` or `authenticated`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderClass::Anonymous => "anonymous",
            ReaderClass::Authenticated => "authenticated",
        }
    }
}

/// One report to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportRequest {
    pub kind: ReportKind,
    pub id: ReportId,
    pub reader: ReaderClass,
}

/// Settings that are not in the database.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// SAPL's MEDIA_ROOT; the logo is `media_root/<base_casalegislativa.logotipo>`
    /// and is drawn only when that file exists and decodes. `None`: no logo.
    pub media_root: Option<PathBuf>,
    /// The chamber's time zone (IANA name) for the protocolo time and today's date.
    pub time_zone: String,
    /// The date printed in footers; `None` asks PostgreSQL for today in `time_zone`.
    pub today: Option<NaiveDate>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            media_root: None,
            time_zone: "America/Sao_Paulo".to_string(),
            today: None,
        }
    }
}

/// Why a render failed. [`RenderError::is_transient`] tells the job layer
/// whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The object does not exist: permanent, answered as 404.
    #[error("{kind} {id} not found")]
    NotFound { kind: ReportKind, id: ReportId },
    /// The id has the wrong shape for the kind (a pk for a protocolo, or the
    /// reverse): permanent, answered as 404 like an unknown object.
    #[error("{kind} cannot be addressed by id {id}")]
    WrongId { kind: ReportKind, id: ReportId },
    /// Connection-level or server-resource failure: transient, retry later.
    #[error("database unavailable: {0}")]
    Database(#[source] tokio_postgres::Error),
    /// The server rejected a query (schema mismatch, bad time zone name…):
    /// permanent until the deployment changes.
    #[error("query rejected: {0}")]
    Query(#[source] tokio_postgres::Error),
    /// The PDF could not be produced (broken embedded font, writer fault).
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
}

impl RenderError {
    /// True when the same request may succeed later (database unreachable,
    /// connection lost, server overloaded); false for everything permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self, RenderError::Database(_))
    }

    /// The HTTP status a legacy URL answers with for this failure.
    pub fn http_status(&self) -> u16 {
        match self {
            RenderError::NotFound { .. } | RenderError::WrongId { .. } => 404,
            RenderError::Database(_) => 503,
            RenderError::Query(_) | RenderError::Layout(_) => 500,
        }
    }
}

impl From<tokio_postgres::Error> for RenderError {
    fn from(erro: tokio_postgres::Error) -> Self {
        // SQLSTATE classes that describe the server's state, not the query:
        // 08 connection, 40 rollback/serialization, 53 resources, 57 operator
        // intervention (shutdown), 58 system error. No code at all means the
        // connection itself failed.
        let transitoria = match erro.code() {
            None => true,
            Some(code) => matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58"),
        };
        if transitoria {
            RenderError::Database(erro)
        } else {
            RenderError::Query(erro)
        }
    }
}

/// Renders one report to PDF bytes.
///
/// Runs a fixed number of queries for the kind (never one per row), then lays
/// the document out with the embedded DejaVu Sans, subset to the glyphs used.
pub async fn render(
    db: &tokio_postgres::Client,
    req: &ReportRequest,
    opts: &RenderOptions,
) -> Result<Vec<u8>, RenderError> {
    let documento = reports::construir(db, req, opts).await?;
    Ok(layout::renderizar(&documento)?)
}

/// A short string that changes whenever the rows `req`'s report reads change.
///
/// One query per call: an MD5 over the textual form of every row the report
/// reads (the object, its related rows and the names they point to, the
/// chamber's header row and, for sessões, the reader-dependent appconfig), plus
/// the database's current date, because every A4 report prints today's date in
/// its footer and every render therefore differs from one day to the next. The
/// job layer may serve a cached PDF while `fingerprint` returns the same value.
/// Unknown objects give [`RenderError::NotFound`], as [`render`] does.
///
/// Not covered: the logo file's bytes under the media root (only its path).
pub async fn fingerprint(
    db: &tokio_postgres::Client,
    req: &ReportRequest,
) -> Result<String, RenderError> {
    reports::impressao_digital(db, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nomes_dos_relatorios_vao_e_voltam() {
        for kind in ReportKind::ALL {
            assert_eq!(kind.as_str().parse::<ReportKind>().ok(), Some(kind));
        }
        assert!("materia".parse::<ReportKind>().is_err());
    }

    #[test]
    fn ids_de_protocolo_e_pk() {
        assert_eq!("42".parse::<ReportId>().ok(), Some(ReportId::Pk(42)));
        assert_eq!(
            "15/2025".parse::<ReportId>().ok(),
            Some(ReportId::Protocolo {
                numero: 15,
                ano: 2025
            })
        );
        assert!("abc".parse::<ReportId>().is_err());
        assert!("1/x".parse::<ReportId>().is_err());
    }
}
