//! `materia-tramitacao`: a matéria's tramitação history, newest first.
//!
//! Four queries whatever the number of tramitações: the matéria, its first
//! autor (by `base_autor.nome`, as `materia.autores.first()` orders), every
//! tramitação with its units and status resolved in SQL, and the chamber.

use std::sync::LazyLock;

use chrono::NaiveDate;
use tokio_postgres::Client;

use super::casa;
use super::sql::{unidade_str, AUTOR_STR, CASA_TEXTO};
use crate::layout::model::{celula, Bloco, Coluna, Document, Estilo, Formato, Paragrafo, Tabela};
use crate::text::data_por_extenso;
use crate::{RenderError, RenderOptions, ReportId, ReportKind};

const MATERIA: &str = "SELECT m.numero, m.ano::int4, t.descricao
      FROM materia_materialegislativa m
      JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
     WHERE m.id = $1";

static PRIMEIRO_AUTOR: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {AUTOR_STR}
           FROM materia_autoria au JOIN base_autor a ON a.id = au.autor_id
          WHERE au.materia_id = $1
          ORDER BY a.nome, a.id
          LIMIT 1"
    )
});

static TRAMITACOES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT tr.data_tramitacao, {local}, {destino}, COALESCE(st.descricao, '')
           FROM materia_tramitacao tr
           LEFT JOIN materia_statustramitacao st ON st.id = tr.status_id
          WHERE tr.materia_id = $1
          ORDER BY tr.data_tramitacao DESC, tr.id DESC",
        local = unidade_str("tr.unidade_tramitacao_local_id"),
        destino = unidade_str("tr.unidade_tramitacao_destino_id"),
    )
});

/// One query hashing every value the report prints (see `crate::fingerprint`).
pub static IMPRESSAO_DIGITAL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT md5(concat_ws('|', m.numero, m.ano, t.descricao,
                (SELECT string_agg(x.s, ',' ORDER BY x.nome, x.id)
                   FROM (SELECT {AUTOR_STR} AS s, a.nome, a.id
                           FROM materia_autoria au JOIN base_autor a ON a.id = au.autor_id
                          WHERE au.materia_id = m.id) x),
                (SELECT string_agg(concat_ws(';', tr.id, tr.data_tramitacao, {local}, {destino},
                                             st.descricao), ',' ORDER BY tr.id)
                   FROM materia_tramitacao tr
                   LEFT JOIN materia_statustramitacao st ON st.id = tr.status_id
                  WHERE tr.materia_id = m.id),
                {CASA_TEXTO}, current_date))
           FROM materia_materialegislativa m
           JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
          WHERE m.id = $1",
        local = unidade_str("tr.unidade_tramitacao_local_id"),
        destino = unidade_str("tr.unidade_tramitacao_destino_id"),
    )
});

/// Builds the report for matéria `pk`.
pub async fn construir(
    db: &Client,
    pk: i32,
    opts: &RenderOptions,
) -> Result<Document, RenderError> {
    let (materia, autor, tramitacoes, casa) = tokio::try_join!(
        async { Ok::<_, RenderError>(db.query_opt(MATERIA, &[&pk]).await?) },
        async { Ok(db.query_opt(PRIMEIRO_AUTOR.as_str(), &[&pk]).await?) },
        async { Ok(db.query(TRAMITACOES.as_str(), &[&pk]).await?) },
        casa::carregar(db, opts),
    )?;
    let materia = materia.ok_or(RenderError::NotFound {
        kind: ReportKind::MateriaTramitacao,
        id: ReportId::Pk(pk),
    })?;
    let numero: i32 = materia.try_get(0)?;
    let ano: i32 = materia.try_get(1)?;
    let tipo: String = materia.try_get(2)?;
    let autor: String = match autor {
        Some(linha) => linha.try_get(0)?,
        None => String::new(),
    };

    let mut linhas = Vec::with_capacity(tramitacoes.len());
    for tr in &tramitacoes {
        let data: NaiveDate = tr.try_get(0)?;
        let local: String = tr.try_get(1)?;
        let destino: String = tr.try_get(2)?;
        let status: String = tr.try_get(3)?;
        linhas.push(vec![
            celula(data_por_extenso(data)),
            celula(local),
            celula(destino),
            celula(status),
        ]);
    }

    let blocos = vec![
        Bloco::Paragrafo(Paragrafo::simples(
            Estilo::Titulo,
            format!("Histórico de Tramitações da Matéria: {numero}/{ano}"),
        )),
        Bloco::Paragrafo(Paragrafo::rotulado(Estilo::Corpo, "Tipo de matéria", tipo)),
        Bloco::Paragrafo(Paragrafo::rotulado(Estilo::Corpo, "Autor", autor)),
        Bloco::Espaco(6.0),
        Bloco::Tabela(Tabela {
            colunas: vec![
                coluna("Data Tramitação", 1.35),
                coluna("Unidade Local", 1.25),
                coluna("Unidade Destino", 1.25),
                coluna("Status", 1.2),
            ],
            linhas,
        }),
    ];

    Ok(Document {
        titulo: format!("Histórico de Tramitações da Matéria {numero}/{ano}"),
        formato: Formato::A4(casa.moldura(opts, None).await),
        blocos,
    })
}

fn coluna(titulo: &str, peso: f32) -> Coluna {
    Coluna {
        titulo: titulo.to_string(),
        peso,
    }
}
