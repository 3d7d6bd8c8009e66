//! `etiqueta-protocolo`: the 62 × 29 mm label of a protocolo, addressed by
//! numero/ano as in its legacy URL.
//!
//! Two queries: the protocolo with its date, time and process identifier all
//! resolved in SQL (SAPL runs several per protocolo), and the chamber.

use std::sync::LazyLock;

use tokio_postgres::Client;

use super::casa;
use super::sql::CASA_TEXTO;
use crate::layout::model::{Bloco, Document, Estilo, Formato, Paragrafo};
use crate::text::{transliterar, truncar};
use crate::{RenderError, RenderOptions, ReportId, ReportKind};

/// SAPL cuts the process identifier to this many characters.
const IDENTIFICADOR_MAXIMO: usize = 60;

/// The process a protocolo opened: the matéria whose `numero_protocolo`/`ano`
/// match, else the documento administrativo linked to the protocolo.
const IDENTIFICADOR: &str = "COALESCE(
    (SELECT t.sigla || ' ' || m.numero || '/' || m.ano
       FROM materia_materialegislativa m
       JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
      WHERE m.numero_protocolo = p.numero AND m.ano = p.ano
      ORDER BY m.id DESC LIMIT 1),
    (SELECT t.sigla || ' ' || d.numero || '/' || d.ano
       FROM protocoloadm_documentoadministrativo d
       JOIN protocoloadm_tipodocumentoadministrativo t ON t.id = d.tipo_id
      WHERE d.protocolo_id = p.id
      ORDER BY d.id DESC LIMIT 1),
    '')";

static PROTOCOLO: LazyLock<String> = LazyLock::new(|| {
    // `timestamp` is shown in the chamber's zone; older rows only have data/hora.
    format!(
        "SELECT p.numero, p.ano::int4, p.tipo_processo, p.anulado,
                COALESCE(to_char(p.timestamp AT TIME ZONE $3, 'DD/MM/YYYY'),
                         to_char(p.data, 'DD/MM/YYYY'), ''),
                COALESCE(to_char(p.timestamp AT TIME ZONE $3, 'HH24:MI'),
                         to_char(p.hora, 'HH24:MI'), ''),
                {IDENTIFICADOR}
           FROM protocoloadm_protocolo p
          WHERE p.numero = $1 AND p.ano = $2"
    )
});

/// One query hashing every value the label prints.
pub static IMPRESSAO_DIGITAL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT md5(concat_ws('|', p.numero, p.ano, p.tipo_processo, p.anulado, p.timestamp,
                              p.data, p.hora, {IDENTIFICADOR}, {CASA_TEXTO}))
           FROM protocoloadm_protocolo p
          WHERE p.numero = $1 AND p.ano = $2"
    )
});

/// `ano` as the smallint column holds it; a year outside that range matches
/// no protocolo.
pub fn ano_smallint(ano: i32) -> Option<i16> {
    i16::try_from(ano).ok()
}

/// Builds the label for protocolo `numero`/`ano`.
pub async fn construir(
    db: &Client,
    numero: i32,
    ano: i32,
    opts: &RenderOptions,
) -> Result<Document, RenderError> {
    let nao_encontrado = RenderError::NotFound {
        kind: ReportKind::EtiquetaProtocolo,
        id: ReportId::Protocolo { numero, ano },
    };
    let Some(ano_curto) = ano_smallint(ano) else {
        return Err(nao_encontrado);
    };
    let (protocolo, casa) = tokio::try_join!(
        async {
            Ok::<_, RenderError>(
                db.query_opt(PROTOCOLO.as_str(), &[&numero, &ano_curto, &opts.time_zone])
                    .await?,
            )
        },
        casa::carregar(db, opts),
    )?;
    let protocolo = protocolo.ok_or(nao_encontrado)?;
    let numero: i32 = protocolo.try_get(0)?;
    let ano: i32 = protocolo.try_get(1)?;
    let tipo_processo: i32 = protocolo.try_get(2)?;
    let anulado: bool = protocolo.try_get(3)?;
    let data: String = protocolo.try_get(4)?;
    let hora: String = protocolo.try_get(5)?;
    let identificador: String = protocolo.try_get(6)?;

    let natureza = match tipo_processo {
        0 => "Administrativo",
        1 => "Legislativo",
        _ => "",
    };

    let mut blocos = vec![
        Bloco::Paragrafo(Paragrafo::simples(Estilo::Secao, casa.nome.clone()).centralizado()),
        Bloco::CodigoDeBarras {
            dados: transliterar(&format!("{numero}/{ano}")),
            altura_mm: 8.0,
        },
        Bloco::Paragrafo(Paragrafo::simples(
            Estilo::Secao,
            format!("PROTOCOLO GERAL {numero}/{ano}"),
        )),
        Bloco::Paragrafo(Paragrafo::simples(
            Estilo::Corpo,
            format!("Data: {data} - Horário: {hora}"),
        )),
        Bloco::Paragrafo(Paragrafo::simples(Estilo::Corpo, natureza)),
        Bloco::Paragrafo(Paragrafo::simples(
            Estilo::Corpo,
            truncar(&identificador, IDENTIFICADOR_MAXIMO),
        )),
    ];
    if anulado {
        blocos.push(Bloco::Paragrafo(Paragrafo::simples(Estilo::Secao, "Nulo")));
    }

    Ok(Document {
        titulo: format!("Etiqueta do Protocolo {numero}/{ano}"),
        formato: Formato::Etiqueta {
            largura_mm: 62.0,
            altura_mm: 29.0,
        },
        blocos,
    })
}
