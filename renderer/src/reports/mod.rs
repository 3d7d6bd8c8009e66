//! One module per report: each runs a fixed set of queries (pipelined on one
//! connection) and turns the rows into a [`Document`]. They share the chamber
//! frame (`casa`) and the SQL that reproduces SAPL's `__str__` rules (`sql`).
//!
//! Reports never position anything; adding one means a new module here and an
//! arm in [`construir`] and [`impressao_digital`], not a change to `layout`.

mod casa;
mod etiqueta_materia;
mod etiqueta_protocolo;
mod materia_tramitacao;
mod sessao_plenaria;
mod sql;

use tokio_postgres::Client;

use crate::layout::model::Document;
use crate::{RenderError, RenderOptions, ReportId, ReportKind, ReportRequest};

/// Builds the document model for `req`.
pub(crate) async fn construir(
    db: &Client,
    req: &ReportRequest,
    opts: &RenderOptions,
) -> Result<Document, RenderError> {
    match (req.kind, req.id) {
        (ReportKind::MateriaTramitacao, ReportId::Pk(pk)) => {
            materia_tramitacao::construir(db, pk, opts).await
        }
        (ReportKind::EtiquetaMateria, ReportId::Pk(pk)) => {
            etiqueta_materia::construir(db, pk).await
        }
        (ReportKind::EtiquetaProtocolo, ReportId::Protocolo { numero, ano }) => {
            etiqueta_protocolo::construir(db, numero, ano, opts).await
        }
        (ReportKind::SessaoPlenaria, ReportId::Pk(pk)) => {
            sessao_plenaria::construir(db, pk, req.reader, opts).await
        }
        (kind, id) => Err(RenderError::WrongId { kind, id }),
    }
}

/// The data fingerprint for `req` (see [`crate::fingerprint`]).
pub(crate) async fn impressao_digital(
    db: &Client,
    req: &ReportRequest,
) -> Result<String, RenderError> {
    let linha = match (req.kind, req.id) {
        (ReportKind::MateriaTramitacao, ReportId::Pk(pk)) => {
            db.query_opt(materia_tramitacao::IMPRESSAO_DIGITAL.as_str(), &[&pk])
                .await?
        }
        (ReportKind::EtiquetaMateria, ReportId::Pk(pk)) => {
            db.query_opt(etiqueta_materia::IMPRESSAO_DIGITAL.as_str(), &[&pk])
                .await?
        }
        (ReportKind::EtiquetaProtocolo, ReportId::Protocolo { numero, ano }) => {
            let ano = etiqueta_protocolo::ano_smallint(ano).ok_or(RenderError::NotFound {
                kind: req.kind,
                id: req.id,
            })?;
            db.query_opt(
                etiqueta_protocolo::IMPRESSAO_DIGITAL.as_str(),
                &[&numero, &ano],
            )
            .await?
        }
        (ReportKind::SessaoPlenaria, ReportId::Pk(pk)) => {
            let anonimo = req.reader == crate::ReaderClass::Anonymous;
            db.query_opt(
                sessao_plenaria::IMPRESSAO_DIGITAL.as_str(),
                &[&pk, &anonimo],
            )
            .await?
        }
        (kind, id) => return Err(RenderError::WrongId { kind, id }),
    };
    let linha = linha.ok_or(RenderError::NotFound {
        kind: req.kind,
        id: req.id,
    })?;
    let hash: String = linha.try_get(0)?;
    Ok(format!("{}:{hash}", req.kind.as_str()))
}
