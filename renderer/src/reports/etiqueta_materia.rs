//! `etiqueta-materia`: the matéria label with its Code128 barcode, one page of
//! the size configured in `materia_configetiquetamaterialegislativa`.
//!
//! Two queries: the matéria with its tipo, and the label size.

use std::sync::LazyLock;

use chrono::NaiveDate;
use tokio_postgres::Client;

use crate::layout::model::{Bloco, Document, Estilo, Formato, Paragrafo};
use crate::text::{cortar, data_por_extenso, transliterar};
use crate::{RenderError, ReportId, ReportKind};

/// SAPL cuts the ementa on the label to this many characters.
const EMENTA_MAXIMA: usize = 240;

const MATERIA: &str =
    "SELECT m.numero, m.ano::int4, t.sigla, t.descricao, m.data_apresentacao, m.ementa
      FROM materia_materialegislativa m
      JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
     WHERE m.id = $1";

const TAMANHO: &str = "SELECT largura, altura FROM materia_configetiquetamaterialegislativa
     ORDER BY id LIMIT 1";

/// One query hashing every value the label prints.
pub static IMPRESSAO_DIGITAL: LazyLock<String> = LazyLock::new(|| {
    "SELECT md5(concat_ws('|', m.numero, m.ano, t.sigla, t.descricao, m.data_apresentacao,
                m.ementa,
                (SELECT concat_ws('x', c.largura, c.altura)
                   FROM materia_configetiquetamaterialegislativa c ORDER BY c.id LIMIT 1)))
       FROM materia_materialegislativa m
       JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
      WHERE m.id = $1"
        .to_string()
});

/// Builds the label for matéria `pk`.
pub async fn construir(db: &Client, pk: i32) -> Result<Document, RenderError> {
    let (materia, tamanho) = tokio::try_join!(
        async { Ok::<_, RenderError>(db.query_opt(MATERIA, &[&pk]).await?) },
        async { Ok(db.query_opt(TAMANHO, &[]).await?) },
    )?;
    let materia = materia.ok_or(RenderError::NotFound {
        kind: ReportKind::EtiquetaMateria,
        id: ReportId::Pk(pk),
    })?;
    let numero: i32 = materia.try_get(0)?;
    let ano: i32 = materia.try_get(1)?;
    let sigla: String = materia.try_get(2)?;
    let descricao: String = materia.try_get(3)?;
    let data: NaiveDate = materia.try_get(4)?;
    let ementa: String = materia.try_get(5)?;

    // The model's defaults (5 × 3 cm) when the chamber never configured a size.
    // SAPL passes `largura` for both sides (a bug); the real height is used here.
    let (largura_cm, altura_cm) = match tamanho {
        Some(linha) => (linha.try_get::<_, f64>(0)?, linha.try_get::<_, f64>(1)?),
        None => (5.0, 3.0),
    };

    let blocos = vec![
        Bloco::Paragrafo(Paragrafo::simples(
            Estilo::Secao,
            format!("Materia Legislativa - {numero}/{ano}"),
        )),
        Bloco::Paragrafo(Paragrafo::rotulado(
            Estilo::Corpo,
            "Tipo",
            format!("{sigla} - {descricao}"),
        )),
        Bloco::Paragrafo(Paragrafo::rotulado(
            Estilo::Corpo,
            "Data",
            data_por_extenso(data),
        )),
        Bloco::Paragrafo(Paragrafo::rotulado(
            Estilo::Corpo,
            "Ementa",
            cortar(&ementa, EMENTA_MAXIMA),
        )),
        Bloco::CodigoDeBarras {
            dados: transliterar(&format!("{numero}/{ano}-{sigla}")),
            altura_mm: 7.0,
        },
    ];

    Ok(Document {
        titulo: format!("Etiqueta da Matéria {numero}/{ano}"),
        formato: Formato::Etiqueta {
            largura_mm: (largura_cm * 10.0) as f32,
            altura_mm: (altura_cm * 10.0) as f32,
        },
        blocos,
    })
}
