//! `sessao-plenaria`: the sessão summary — up to sixteen blocks in the order the
//! chamber stored in `sessao_resumoordenacao`.
//!
//! Fourteen queries whatever the size of the sessão, pipelined on the one
//! connection: the sessão, the chamber, appconfig, the block order, and one
//! query per kind of list (mesa, presenças, justificativas, correspondências,
//! expedientes, matérias of both phases with their turno, autores and resultado
//! resolved in SQL, nominal votes, oradores of the three phases, presença na
//! ordem do dia, ocorrências and considerações).

use std::sync::LazyLock;

use chrono::NaiveDate;
use tokio_postgres::{Client, Row};

use super::casa::{self, Casa};
use super::sql::CASA_TEXTO;
use crate::layout::model::{
    celula, corpo, secao, Bloco, Celula, Coluna, Document, Estilo, Formato, Paragrafo, Tabela,
};
use crate::text::{data_curta, html_para_paragrafos, ordinal_feminino};
use crate::{ReaderClass, RenderError, RenderOptions, ReportId, ReportKind};

/// The sixteen blocks, named by the codes `sessao_resumoordenacao` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parte {
    IdentificacaoBasica,
    ConteudoMultimidia,
    MesaDiretora,
    ListaPresenca,
    Correspondencias,
    Expedientes,
    MateriasExpediente,
    VotosNominaisExpediente,
    OradoresExpediente,
    ListaPresencaOrdemDia,
    MateriasOrdemDia,
    VotosNominaisOrdemDia,
    OradoresOrdemDia,
    OradoresExplicacoes,
    Ocorrencias,
    ConsideracoesFinais,
}

impl Parte {
    fn do_codigo(codigo: &str) -> Option<Parte> {
        Some(match codigo {
            "id_basica" => Parte::IdentificacaoBasica,
            "cont_mult" => Parte::ConteudoMultimidia,
            "mesa_d" => Parte::MesaDiretora,
            "lista_p" => Parte::ListaPresenca,
            "correspondencia" => Parte::Correspondencias,
            "exp" => Parte::Expedientes,
            "mat_exp" => Parte::MateriasExpediente,
            "v_n_mat_exp" => Parte::VotosNominaisExpediente,
            "oradores_exped" => Parte::OradoresExpediente,
            "lista_p_o_d" => Parte::ListaPresencaOrdemDia,
            "mat_o_d" => Parte::MateriasOrdemDia,
            "v_n_mat_o_d" => Parte::VotosNominaisOrdemDia,
            "oradores_o_d" => Parte::OradoresOrdemDia,
            "oradores_expli" => Parte::OradoresExplicacoes,
            "ocorr_sessao" => Parte::Ocorrencias,
            "cons_finais" => Parte::ConsideracoesFinais,
            _ => return None,
        })
    }
}

/// SAPL's order when the stored one names an unknown block.
const ORDEM_PADRAO: [Parte; 16] = [
    Parte::IdentificacaoBasica,
    Parte::ConteudoMultimidia,
    Parte::MesaDiretora,
    Parte::ListaPresenca,
    Parte::Correspondencias,
    Parte::Expedientes,
    Parte::MateriasExpediente,
    Parte::VotosNominaisExpediente,
    Parte::OradoresExpediente,
    Parte::ListaPresencaOrdemDia,
    Parte::MateriasOrdemDia,
    Parte::VotosNominaisOrdemDia,
    Parte::OradoresOrdemDia,
    Parte::OradoresExplicacoes,
    Parte::Ocorrencias,
    Parte::ConsideracoesFinais,
];

/// The block order from the stored codes: each block once, at its first
/// position; any unknown code makes SAPL fall back to its default order.
fn ordem(codigos: &[String]) -> Vec<Parte> {
    let mut partes = Vec::new();
    for codigo in codigos {
        match Parte::do_codigo(codigo.trim()) {
            Some(parte) if !partes.contains(&parte) => partes.push(parte),
            Some(_) => {}
            None => return ORDEM_PADRAO.to_vec(),
        }
    }
    if partes.is_empty() {
        ORDEM_PADRAO.to_vec()
    } else {
        partes
    }
}

/// Turno codes of `materia_tramitacao.turno` (SAPL's TURNO_CHOICES).
fn turno(codigo: &str) -> &'static str {
    match codigo {
        "P" => "Primeiro",
        "S" => "Segundo",
        "U" => "Único",
        "L" => "Suplementar",
        "F" => "Final",
        "A" => "Votação Única em Regime de Urgência",
        "B" => "1ª Votação",
        "C" => "2ª e 3ª Votações",
        _ => "",
    }
}

const SESSAO: &str = "SELECT s.numero, ts.nome, ts.tipo_numeracao, s.data_inicio, s.hora_inicio,
            s.data_fim, s.hora_fim, s.tema_solene, s.url_audio, s.url_video,
            l.numero, l.data_inicio, l.data_fim, sl.numero
       FROM sessao_sessaoplenaria s
       JOIN sessao_tiposessaoplenaria ts ON ts.id = s.tipo_id
       JOIN parlamentares_legislatura l ON l.id = s.legislatura_id
       JOIN parlamentares_sessaolegislativa sl ON sl.id = s.sessao_legislativa_id
      WHERE s.id = $1";

const APPCONFIG: &str = "SELECT documentos_administrativos, identificacao_de_documentos
       FROM base_appconfig ORDER BY id DESC LIMIT 1";

const ORDENACAO: &str = "SELECT primeiro, segundo, terceiro, quarto, quinto, sexto, setimo,
            oitavo, nono, decimo, decimo_primeiro, decimo_segundo, decimo_terceiro,
            decimo_quarto, decimo_quinto, decimo_sexto
       FROM sessao_resumoordenacao ORDER BY id LIMIT 1";

/// The parlamentar's first filiação in Filiacao's default ordering, whatever its
/// date (what SAPL prints for the mesa and the oradores).
const PARTIDO_PRIMEIRO: &str = "COALESCE((SELECT pa.sigla FROM parlamentares_filiacao f
       JOIN parlamentares_partido pa ON pa.id = f.partido_id
      WHERE f.parlamentar_id = p.id
      ORDER BY f.data DESC, f.data_desfiliacao DESC, f.id LIMIT 1), '')";

/// SAPL's `filiacao_data`: the partidos the parlamentar belonged to on the day
/// the sessão opened, joined by " | ".
const PARTIDO_NA_DATA: &str = "COALESCE((SELECT string_agg(pa.sigla, ' | '
             ORDER BY f.data DESC, f.data_desfiliacao DESC, f.id)
       FROM parlamentares_filiacao f JOIN parlamentares_partido pa ON pa.id = f.partido_id
      WHERE f.parlamentar_id = p.id AND f.data <= s.data_inicio
        AND (f.data_desfiliacao IS NULL OR f.data_desfiliacao >= s.data_inicio)), '')";

static MESA: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT c.descricao, p.nome_parlamentar, {PARTIDO_PRIMEIRO}
           FROM sessao_integrantemesa im
           JOIN parlamentares_parlamentar p ON p.id = im.parlamentar_id
           JOIN parlamentares_cargomesa c ON c.id = im.cargo_id
          WHERE im.sessao_plenaria_id = $1
          ORDER BY im.cargo_id, im.id"
    )
});

fn presenca_sql(tabela: &str) -> String {
    format!(
        "SELECT p.nome_parlamentar, {PARTIDO_NA_DATA}
           FROM {tabela} x
           JOIN parlamentares_parlamentar p ON p.id = x.parlamentar_id
           JOIN sessao_sessaoplenaria s ON s.id = x.sessao_plenaria_id
          WHERE x.sessao_plenaria_id = $1
          ORDER BY p.nome_parlamentar, x.id"
    )
}

static PRESENCA: LazyLock<String> = LazyLock::new(|| presenca_sql("sessao_sessaoplenariapresenca"));
static PRESENCA_ORDEM_DIA: LazyLock<String> =
    LazyLock::new(|| presenca_sql("sessao_presencaordemdia"));

const JUSTIFICATIVAS: &str = "SELECT p.nome_parlamentar, tj.descricao, j.ausencia
       FROM sessao_justificativaausencia j
       JOIN parlamentares_parlamentar p ON p.id = j.parlamentar_id
       JOIN sessao_tipojustificativa tj ON tj.id = j.tipo_ausencia_id
      WHERE j.sessao_plenaria_id = $1
      ORDER BY p.nome_parlamentar, j.id";

const CORRESPONDENCIAS: &str = "SELECT t.sigla, t.descricao, d.numero, d.ano::int4, d.complemento,
            d.data, d.interessado, d.assunto, d.restrito
       FROM sessao_correspondencia c
       JOIN protocoloadm_documentoadministrativo d ON d.id = c.documento_id
       JOIN protocoloadm_tipodocumentoadministrativo t ON t.id = d.tipo_id
      WHERE c.sessao_plenaria_id = $1
      ORDER BY c.numero_ordem, c.id";

const EXPEDIENTES: &str = "SELECT te.nome, e.conteudo
       FROM sessao_expedientesessao e
       JOIN sessao_tipoexpediente te ON te.id = e.tipo_id
      WHERE e.sessao_plenaria_id = $1
      ORDER BY te.nome, e.id";

/// Both item lists (expediente 'E', ordem do dia 'O') of a sessão.
const ITENS: &str = "SELECT 'E'::text AS fonte, x.id, x.numero_ordem, x.observacao, x.tipo_votacao,
            x.materia_id
       FROM sessao_expedientemateria x WHERE x.sessao_plenaria_id = $1
     UNION ALL
     SELECT 'O', x.id, x.numero_ordem, x.observacao, x.tipo_votacao, x.materia_id
       FROM sessao_ordemdia x WHERE x.sessao_plenaria_id = $1";

/// Whether a registro row (aliased `r`) belongs to item `i`.
const DO_ITEM: &str = "(CASE i.fonte WHEN 'E' THEN r.expediente_id ELSE r.ordem_id END) = i.id";

static MATERIAS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH i AS ({ITENS})
         SELECT i.fonte, i.numero_ordem, i.observacao, i.tipo_votacao,
                t.sigla || ' ' || t.descricao || ' ' || m.numero || '/' || m.ano,
                m.ementa,
                COALESCE((SELECT tr.turno FROM materia_tramitacao tr
                           WHERE tr.materia_id = m.id AND tr.turno <> ''
                           ORDER BY tr.data_tramitacao DESC, tr.id DESC LIMIT 1), ''),
                (SELECT count(*) FROM materia_autoria au WHERE au.materia_id = m.id),
                COALESCE((SELECT string_agg(a.nome, ', ' ORDER BY au.primeiro_autor DESC, a.nome, au.id)
                            FROM materia_autoria au JOIN base_autor a ON a.id = au.autor_id
                           WHERE au.materia_id = m.id AND a.nome <> ''), ''),
                rv.nome, rv.observacao, rp.descricao, rp.observacao, rl.observacao
           FROM i
           JOIN materia_materialegislativa m ON m.id = i.materia_id
           JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
           LEFT JOIN LATERAL (
                SELECT tr.nome, r.observacao FROM sessao_registrovotacao r
                  JOIN sessao_tiporesultadovotacao tr ON tr.id = r.tipo_resultado_votacao_id
                 WHERE r.materia_id = i.materia_id AND {DO_ITEM} ORDER BY r.id LIMIT 1) rv ON true
           LEFT JOIN LATERAL (
                SELECT tp.descricao, r.observacao FROM sessao_retiradapauta r
                  JOIN sessao_tiporetiradapauta tp ON tp.id = r.tipo_de_retirada_id
                 WHERE r.materia_id = i.materia_id AND {DO_ITEM} ORDER BY r.id LIMIT 1) rp ON true
           LEFT JOIN LATERAL (
                SELECT r.observacao FROM sessao_registroleitura r
                 WHERE r.materia_id = i.materia_id AND {DO_ITEM} ORDER BY r.id LIMIT 1) rl ON true
          ORDER BY i.fonte, i.numero_ordem, i.id"
    )
});

/// Nominal votes of the items voted by name, in SAPL's odd `-materia` order
/// (year ascending, then tipo and número descending), votes by parlamentar name.
static VOTOS_NOMINAIS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH i AS ({ITENS})
         SELECT i.fonte, i.id, t.descricao || ' nº ' || m.numero || ' de ' || m.ano,
                v.nome_parlamentar, v.voto
           FROM i
           JOIN materia_materialegislativa m ON m.id = i.materia_id
           JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
           LEFT JOIN LATERAL (
                SELECT p.nome_parlamentar, vp.voto, vp.id
                  FROM sessao_votoparlamentar vp
                  JOIN sessao_registrovotacao r ON r.id = vp.votacao_id
                  JOIN parlamentares_parlamentar p ON p.id = vp.parlamentar_id
                 WHERE {DO_ITEM}) v ON true
          WHERE i.tipo_votacao = 2
          ORDER BY i.fonte, m.ano, t.sequencia_regimental DESC, t.descricao DESC, m.numero DESC,
                   i.id, v.nome_parlamentar, v.id"
    )
});

static ORADORES: LazyLock<String> = LazyLock::new(|| {
    let fase = |codigo: &str, tabela: &str| {
        format!(
            "SELECT '{codigo}'::text AS fonte, o.numero_ordem, o.id, p.nome_parlamentar,
                    {PARTIDO_PRIMEIRO} AS partido, o.observacao
               FROM {tabela} o JOIN parlamentares_parlamentar p ON p.id = o.parlamentar_id
              WHERE o.sessao_plenaria_id = $1"
        )
    };
    format!(
        "{} UNION ALL {} UNION ALL {} ORDER BY 1, 2, 3",
        fase("E", "sessao_oradorexpediente"),
        fase("O", "sessao_oradorordemdia"),
        fase("X", "sessao_orador"),
    )
});

const TEXTOS: &str = "SELECT 'O'::text AS fonte, id, conteudo FROM sessao_ocorrenciasessao
      WHERE sessao_plenaria_id = $1
     UNION ALL
     SELECT 'C', id, conteudo FROM sessao_consideracoesfinais WHERE sessao_plenaria_id = $1
     ORDER BY 1, 2";

/// One query hashing every row the summary reads. `$2` is true for an
/// anonymous reader, since the correspondências depend on it.
pub static IMPRESSAO_DIGITAL: LazyLock<String> = LazyLock::new(|| {
    let da_sessao = [
        "sessao_integrantemesa",
        "sessao_sessaoplenariapresenca",
        "sessao_presencaordemdia",
        "sessao_justificativaausencia",
        "sessao_correspondencia",
        "sessao_expedientesessao",
        "sessao_expedientemateria",
        "sessao_ordemdia",
        "sessao_oradorexpediente",
        "sessao_oradorordemdia",
        "sessao_orador",
        "sessao_ocorrenciasessao",
        "sessao_consideracoesfinais",
    ];
    let mut partes: Vec<String> = da_sessao
        .iter()
        .map(|t| {
            format!(
                "(SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM {t} x
                   WHERE x.sessao_plenaria_id = s.id)"
            )
        })
        .collect();
    // Rows reached through the items' matérias and votes.
    let itens = "(SELECT materia_id FROM sessao_expedientemateria WHERE sessao_plenaria_id = s.id
                  UNION SELECT materia_id FROM sessao_ordemdia WHERE sessao_plenaria_id = s.id)";
    for (tabela, filtro) in [
        ("materia_materialegislativa", format!("x.id IN {itens}")),
        ("materia_autoria", format!("x.materia_id IN {itens}")),
        ("materia_tramitacao", format!("x.materia_id IN {itens}")),
        ("sessao_registrovotacao", format!("x.materia_id IN {itens}")),
        ("sessao_retiradapauta", format!("x.materia_id IN {itens}")),
        ("sessao_registroleitura", format!("x.materia_id IN {itens}")),
        (
            "sessao_votoparlamentar",
            "x.votacao_id IN (SELECT r.id FROM sessao_registrovotacao r
               WHERE r.ordem_id IN (SELECT id FROM sessao_ordemdia WHERE sessao_plenaria_id = s.id)
                  OR r.expediente_id IN (SELECT id FROM sessao_expedientemateria
                                          WHERE sessao_plenaria_id = s.id))"
                .to_string(),
        ),
        (
            "protocoloadm_documentoadministrativo",
            "x.id IN (SELECT documento_id FROM sessao_correspondencia
                       WHERE sessao_plenaria_id = s.id)"
                .to_string(),
        ),
    ] {
        partes.push(format!(
            "(SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM {tabela} x WHERE {filtro})"
        ));
    }
    // Small lookup tables read whole.
    for tabela in [
        "base_autor",
        "parlamentares_parlamentar",
        "parlamentares_filiacao",
        "parlamentares_partido",
        "parlamentares_cargomesa",
        "materia_tipomaterialegislativa",
        "materia_statustramitacao",
        "sessao_tipoexpediente",
        "sessao_tiporesultadovotacao",
        "sessao_tiporetiradapauta",
        "sessao_tipojustificativa",
        "protocoloadm_tipodocumentoadministrativo",
        "sessao_resumoordenacao",
        "base_appconfig",
    ] {
        partes.push(format!(
            "(SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM {tabela} x)"
        ));
    }
    format!(
        "SELECT md5(concat_ws('|', s::text, ts::text, l::text, sl::text, $2::bool, {CASA_TEXTO},
                              current_date, {}))
           FROM sessao_sessaoplenaria s
           JOIN sessao_tiposessaoplenaria ts ON ts.id = s.tipo_id
           JOIN parlamentares_legislatura l ON l.id = s.legislatura_id
           JOIN parlamentares_sessaolegislativa sl ON sl.id = s.sessao_legislativa_id
          WHERE s.id = $1",
        partes.join(",\n")
    )
});

/// All rows of one sessão, as fetched.
struct Linhas {
    mesa: Vec<Row>,
    presenca: Vec<Row>,
    justificativas: Vec<Row>,
    correspondencias: Vec<Row>,
    expedientes: Vec<Row>,
    materias: Vec<Row>,
    votos: Vec<Row>,
    oradores: Vec<Row>,
    presenca_ordem_dia: Vec<Row>,
    textos: Vec<Row>,
}

/// Builds the summary of sessão `pk` as `leitor` may see it.
pub async fn construir(
    db: &Client,
    pk: i32,
    leitor: ReaderClass,
    opts: &RenderOptions,
) -> Result<Document, RenderError> {
    let q = |sql: &'static str| async move { Ok::<_, RenderError>(db.query(sql, &[&pk]).await?) };
    let (sessao, casa, appconfig, ordenacao, mesa, presenca, justificativas, correspondencias) = tokio::try_join!(
        async { Ok::<_, RenderError>(db.query_opt(SESSAO, &[&pk]).await?) },
        casa::carregar(db, opts),
        async { Ok(db.query_opt(APPCONFIG, &[]).await?) },
        async { Ok(db.query_opt(ORDENACAO, &[]).await?) },
        q(MESA.as_str()),
        q(PRESENCA.as_str()),
        q(JUSTIFICATIVAS),
        q(CORRESPONDENCIAS),
    )?;
    let (expedientes, materias, votos, oradores, presenca_ordem_dia, textos) = tokio::try_join!(
        q(EXPEDIENTES),
        q(MATERIAS.as_str()),
        q(VOTOS_NOMINAIS.as_str()),
        q(ORADORES.as_str()),
        q(PRESENCA_ORDEM_DIA.as_str()),
        q(TEXTOS),
    )?;
    let sessao = sessao.ok_or(RenderError::NotFound {
        kind: ReportKind::SessaoPlenaria,
        id: ReportId::Pk(pk),
    })?;

    let (publica_documentos, mascara) = match appconfig {
        Some(linha) => (
            linha.try_get::<_, String>(0)? == "O",
            linha.try_get::<_, String>(1)?,
        ),
        // No appconfig row: treat administrative documents as restricted.
        None => (false, MASCARA_PADRAO.to_string()),
    };
    let codigos: Vec<String> = match ordenacao {
        Some(linha) => (0..16)
            .map(|i| linha.try_get::<_, String>(i))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    let cabecalho = Cabecalho::ler(&sessao, &casa)?;
    let linhas = Linhas {
        mesa,
        presenca,
        justificativas,
        correspondencias,
        expedientes,
        materias,
        votos,
        oradores,
        presenca_ordem_dia,
        textos,
    };
    let visiveis = Visibilidade {
        anonimo: leitor == ReaderClass::Anonymous,
        publica_documentos,
        mascara,
    };

    // The title is repeated in every page's header, as SAPL does; no second copy.
    let mut blocos = Vec::new();
    for parte in ordem(&codigos) {
        blocos.extend(bloco(parte, &cabecalho, &linhas, &visiveis)?);
    }

    Ok(Document {
        titulo: cabecalho.titulo.clone(),
        formato: Formato::A4(casa.moldura(opts, Some(cabecalho.titulo.clone())).await),
        blocos,
    })
}

/// SAPL's default `identificacao_de_documentos` mask.
const MASCARA_PADRAO: &str = "{sigla} Nº {numero}/{ano}{-}{complemento} - {nome}";

struct Visibilidade {
    anonimo: bool,
    publica_documentos: bool,
    mascara: String,
}

/// Values of the sessão row used by several blocks.
struct Cabecalho {
    titulo: String,
    tipo: String,
    abertura: String,
    encerramento: String,
    tema_solene: Option<String>,
    url_audio: String,
    url_video: String,
}

impl Cabecalho {
    fn ler(s: &Row, casa: &Casa) -> Result<Self, RenderError> {
        let numero: i32 = s.try_get(0)?;
        let tipo: String = s.try_get(1)?;
        let data_inicio: NaiveDate = s.try_get(3)?;
        let hora_inicio: String = s.try_get(4)?;
        let data_fim: Option<NaiveDate> = s.try_get(5)?;
        let hora_fim: String = s.try_get(6)?;
        let tema_solene: String = s.try_get(7)?;
        let url_audio: String = s.try_get(8)?;
        let url_video: String = s.try_get(9)?;
        let legislatura =
            legislatura_str(s.try_get(10)?, s.try_get(11)?, s.try_get(12)?, casa.hoje);
        let sessao_legislativa: i32 = s.try_get(13)?;

        Ok(Self {
            titulo: format!(
                "Resumo da {} Reunião {tipo} da {} Sessão Legislativa da {legislatura} Legislatura",
                ordinal_feminino(i64::from(numero)),
                ordinal_feminino(i64::from(sessao_legislativa)),
            ),
            abertura: format!("{} - {hora_inicio}", data_curta(data_inicio)),
            encerramento: format!(
                "{} - {hora_fim}",
                data_fim.map(data_curta).unwrap_or_default()
            ),
            tema_solene: (tipo == "Solene").then_some(tema_solene),
            tipo,
            url_audio,
            url_video,
        })
    }
}

/// `str(Legislatura)`: "19ª (2025 - 2028)", plus " (Atual)" while it is running.
fn legislatura_str(numero: i32, inicio: NaiveDate, fim: NaiveDate, hoje: NaiveDate) -> String {
    use chrono::Datelike;
    let atual = if inicio <= hoje && hoje <= fim {
        " (Atual)"
    } else {
        ""
    };
    format!(
        "{} ({} - {}){atual}",
        ordinal_feminino(i64::from(numero)),
        inicio.year(),
        fim.year()
    )
}

/// `DocumentoAdministrativo.epigrafe`: the chamber's mask with `{sigla}`,
/// `{nome}` (tipo's descrição), `{numero}` (at least three digits), `{ano}`,
/// `{complemento}` and `{-}` (a hyphen only when there is a complemento).
fn epigrafe(
    mascara: &str,
    sigla: &str,
    nome: &str,
    numero: i32,
    ano: i32,
    complemento: &str,
) -> String {
    mascara
        .replace("{sigla}", sigla)
        .replace("{nome}", nome)
        .replace("{numero}", &format!("{numero:03}"))
        .replace("{ano}", &ano.to_string())
        .replace("{-}", if complemento.is_empty() { "" } else { "-" })
        .replace("{complemento}", complemento)
}

fn nome_partido(nome: &str, partido: &str) -> String {
    if partido.is_empty() {
        nome.to_string()
    } else {
        format!("{nome}/{partido}")
    }
}

fn bloco(
    parte: Parte,
    cab: &Cabecalho,
    l: &Linhas,
    vis: &Visibilidade,
) -> Result<Vec<Bloco>, RenderError> {
    let mut b = Vec::new();
    match parte {
        Parte::IdentificacaoBasica => {
            b.push(secao("Informações Básicas"));
            b.push(rotulo("Tipo da Sessão", &cab.tipo));
            if let Some(tema) = &cab.tema_solene {
                b.push(rotulo("Tema da Sessão Solene", tema));
            }
            b.push(rotulo("Abertura", &cab.abertura));
            b.push(rotulo("Encerramento", &cab.encerramento));
        }
        Parte::ConteudoMultimidia => {
            b.push(secao("Conteúdo Multimídia"));
            let ou = |url: &str| {
                if url.is_empty() {
                    "Indisponível".to_string()
                } else {
                    url.to_string()
                }
            };
            b.push(rotulo("Multimídia Audio", &ou(&cab.url_audio)));
            b.push(rotulo("Multimídia Video", &ou(&cab.url_video)));
        }
        Parte::MesaDiretora => {
            b.push(secao("Mesa Diretora"));
            for r in &l.mesa {
                let cargo: String = r.try_get(0)?;
                let nome: String = r.try_get(1)?;
                let partido: String = r.try_get(2)?;
                b.push(rotulo(&cargo, &nome_partido(&nome, &partido)));
            }
        }
        Parte::ListaPresenca => {
            b.push(secao("Lista de Presença da Sessão"));
            presentes(&mut b, &l.presenca)?;
            if !l.justificativas.is_empty() {
                b.push(secao("Justificativas de Ausência da Sessão"));
                for r in &l.justificativas {
                    let nome: String = r.try_get(0)?;
                    let justificativa: String = r.try_get(1)?;
                    let ausencia: i32 = r.try_get(2)?;
                    let em = if ausencia == 1 { "Matéria" } else { "Sessão" };
                    b.push(corpo(format!(
                        "{nome} - {justificativa} - Ausente em: {em}"
                    )));
                }
            }
        }
        Parte::Correspondencias => {
            b.push(secao("Correspondências"));
            // Anonymous readers see none unless the chamber publishes its
            // documents ('O'), and then only the unrestricted ones.
            for r in &l.correspondencias {
                let restrito: bool = r.try_get(8)?;
                if vis.anonimo && (!vis.publica_documentos || restrito) {
                    continue;
                }
                let sigla: String = r.try_get(0)?;
                let descricao: String = r.try_get(1)?;
                let numero: i32 = r.try_get(2)?;
                let ano: i32 = r.try_get(3)?;
                let complemento: String = r.try_get(4)?;
                let data: NaiveDate = r.try_get(5)?;
                let interessado: String = r.try_get(6)?;
                let assunto: String = r.try_get(7)?;
                b.push(Bloco::Paragrafo(Paragrafo::simples(
                    Estilo::Corpo,
                    epigrafe(&vis.mascara, &sigla, &descricao, numero, ano, &complemento),
                )));
                b.push(rotulo("Data", &data_curta(data)));
                b.push(rotulo("Interessado", &interessado));
                b.push(rotulo("Assunto", &assunto));
            }
        }
        Parte::Expedientes => {
            b.push(secao("Expedientes"));
            for r in &l.expedientes {
                let tipo: String = r.try_get(0)?;
                let conteudo: String = r.try_get(1)?;
                let paragrafos = html_para_paragrafos(&conteudo);
                if paragrafos.is_empty() {
                    continue;
                }
                b.push(Bloco::Paragrafo(Paragrafo {
                    trechos: vec![crate::layout::model::Trecho {
                        texto: tipo,
                        negrito: true,
                    }],
                    estilo: Estilo::Corpo,
                    alinhamento: Default::default(),
                }));
                b.extend(paragrafos.into_iter().map(corpo));
            }
        }
        Parte::MateriasExpediente => {
            b.push(secao("Matérias do Expediente"));
            b.push(tabela_materias(&l.materias, "E")?);
        }
        Parte::MateriasOrdemDia => {
            b.push(secao("Matérias da Ordem do Dia"));
            b.push(tabela_materias(&l.materias, "O")?);
        }
        Parte::VotosNominaisExpediente => {
            b.push(secao("Votações Nominais - Matérias do Expediente"));
            b.push(tabela_votos(&l.votos, "E")?);
        }
        Parte::VotosNominaisOrdemDia => {
            b.push(secao("Votações Nominais - Matérias da Ordem do Dia"));
            b.push(tabela_votos(&l.votos, "O")?);
        }
        Parte::OradoresExpediente => {
            b.push(secao("Oradores do Expediente"));
            oradores(&mut b, &l.oradores, "E")?;
        }
        Parte::OradoresOrdemDia => {
            b.push(secao("Oradores da Ordem do Dia"));
            oradores(&mut b, &l.oradores, "O")?;
        }
        Parte::OradoresExplicacoes => {
            b.push(secao("Oradores das Explicações Pessoais"));
            oradores(&mut b, &l.oradores, "X")?;
        }
        Parte::ListaPresencaOrdemDia => {
            b.push(secao("Lista de Presença da Ordem do Dia"));
            presentes(&mut b, &l.presenca_ordem_dia)?;
        }
        Parte::Ocorrencias => {
            b.push(secao("Ocorrências da Sessão"));
            textos(&mut b, &l.textos, "O")?;
        }
        Parte::ConsideracoesFinais => {
            b.push(secao("Considerações Finais"));
            textos(&mut b, &l.textos, "C")?;
        }
    }
    b.push(Bloco::Espaco(4.0));
    Ok(b)
}

fn rotulo(rotulo: &str, valor: &str) -> Bloco {
    Bloco::Paragrafo(Paragrafo::rotulado(Estilo::Corpo, rotulo, valor))
}

fn presentes(b: &mut Vec<Bloco>, linhas: &[Row]) -> Result<(), RenderError> {
    for r in linhas {
        let nome: String = r.try_get(0)?;
        let partido: String = r.try_get(1)?;
        b.push(corpo(nome_partido(&nome, &partido)));
    }
    Ok(())
}

fn oradores(b: &mut Vec<Bloco>, linhas: &[Row], fonte: &str) -> Result<(), RenderError> {
    for r in linhas {
        if r.try_get::<_, String>(0)? != fonte {
            continue;
        }
        let numero: i32 = r.try_get(1)?;
        let nome: String = r.try_get(3)?;
        let partido: String = r.try_get(4)?;
        let observacao: String = r.try_get(5)?;
        let observacao = if observacao.trim().is_empty() {
            "-".to_string()
        } else {
            observacao
        };
        b.push(corpo(format!(
            "{numero} - {} - {observacao}",
            nome_partido(&nome, &partido)
        )));
    }
    Ok(())
}

fn textos(b: &mut Vec<Bloco>, linhas: &[Row], fonte: &str) -> Result<(), RenderError> {
    for r in linhas {
        if r.try_get::<_, String>(0)? != fonte {
            continue;
        }
        let conteudo: String = r.try_get(2)?;
        b.extend(html_para_paragrafos(&conteudo).into_iter().map(corpo));
    }
    Ok(())
}

fn decodificar(texto: &str) -> String {
    html_escape::decode_html_entities(texto).into_owned()
}

fn tabela_materias(linhas: &[Row], fonte: &str) -> Result<Bloco, RenderError> {
    let mut tabela = Tabela {
        colunas: vec![
            Coluna {
                titulo: "Matéria".into(),
                peso: 1.3,
            },
            Coluna {
                titulo: "Ementa".into(),
                peso: 1.5,
            },
            Coluna {
                titulo: "Resultado da Votação".into(),
                peso: 1.0,
            },
        ],
        linhas: Vec::new(),
    };
    for r in linhas {
        if r.try_get::<_, String>(0)? != fonte {
            continue;
        }
        let numero_ordem: i32 = r.try_get(1)?;
        let observacao: String = r.try_get(2)?;
        let tipo_votacao: i32 = r.try_get(3)?;
        let id_materia: String = r.try_get(4)?;
        let ementa: String = r.try_get(5)?;
        let codigo_turno: String = r.try_get(6)?;
        let n_autores: i64 = r.try_get(7)?;
        let autores: String = r.try_get(8)?;
        let votacao: Option<String> = r.try_get(9)?;
        let votacao_obs: Option<String> = r.try_get(10)?;
        let retirada: Option<String> = r.try_get(11)?;
        let retirada_obs: Option<String> = r.try_get(12)?;
        let leitura_obs: Option<String> = r.try_get(13)?;

        // Resultado precedence: votação, then retirada de pauta, then leitura.
        let (resultado, resultado_obs) = if let Some(nome) = votacao {
            (nome, votacao_obs.unwrap_or_default())
        } else if let Some(descricao) = retirada {
            (descricao, retirada_obs.unwrap_or_default())
        } else if let Some(obs) = leitura_obs {
            ("Matéria lida".to_string(), obs)
        } else if tipo_votacao == 4 {
            ("Matéria não lida".to_string(), String::new())
        } else {
            ("Matéria não votada".to_string(), String::new())
        };

        let (rotulo_autor, autores) = match (n_autores, autores.is_empty()) {
            (0, _) => ("Autor", "Desconhecido".to_string()),
            (1, _) => ("Autor", autores),
            _ => ("Autores", autores),
        };
        let materia: Celula = vec![
            Paragrafo::simples(Estilo::Corpo, format!("{numero_ordem} - {id_materia}")),
            Paragrafo::rotulado(Estilo::Corpo, "Turno", turno(&codigo_turno)),
            Paragrafo::rotulado(Estilo::Corpo, rotulo_autor, autores),
        ];
        let mut ementa_celula = celula(decodificar(&ementa));
        let observacao = decodificar(&observacao);
        if !observacao.trim().is_empty() {
            ementa_celula.push(Paragrafo::rotulado(Estilo::Nota, "Obs.", observacao));
        }
        let mut resultado_celula = vec![Paragrafo {
            trechos: vec![crate::layout::model::Trecho {
                texto: resultado,
                negrito: true,
            }],
            estilo: Estilo::Corpo,
            alinhamento: Default::default(),
        }];
        if !resultado_obs.trim().is_empty() {
            resultado_celula.push(Paragrafo::simples(Estilo::Nota, resultado_obs));
        }
        tabela
            .linhas
            .push(vec![materia, ementa_celula, resultado_celula]);
    }
    Ok(Bloco::Tabela(tabela))
}

fn tabela_votos(linhas: &[Row], fonte: &str) -> Result<Bloco, RenderError> {
    let mut tabela = Tabela {
        colunas: vec![
            Coluna {
                titulo: "Matéria".into(),
                peso: 1.5,
            },
            Coluna {
                titulo: "Votos".into(),
                peso: 1.0,
            },
        ],
        linhas: Vec::new(),
    };
    let mut atual: Option<(i32, Celula, Celula)> = None;
    for r in linhas {
        if r.try_get::<_, String>(0)? != fonte {
            continue;
        }
        let item: i32 = r.try_get(1)?;
        let titulo: String = r.try_get(2)?;
        let parlamentar: Option<String> = r.try_get(3)?;
        let voto: Option<String> = r.try_get(4)?;
        if atual.as_ref().is_none_or(|(id, _, _)| *id != item) {
            if let Some((_, materia, votos)) = atual.take() {
                tabela.linhas.push(fechar_votos(materia, votos));
            }
            atual = Some((item, celula(titulo), Vec::new()));
        }
        if let (Some((_, _, votos)), Some(nome)) = (atual.as_mut(), parlamentar) {
            votos.push(Paragrafo::simples(
                Estilo::Corpo,
                format!("{nome} {}", voto.unwrap_or_default()),
            ));
        }
    }
    if let Some((_, materia, votos)) = atual.take() {
        tabela.linhas.push(fechar_votos(materia, votos));
    }
    Ok(Bloco::Tabela(tabela))
}

fn fechar_votos(materia: Celula, votos: Celula) -> Vec<Celula> {
    if votos.is_empty() {
        vec![materia, celula("Matéria não votada")]
    } else {
        vec![materia, votos]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(a: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(a, m, d).expect("date")
    }

    #[test]
    fn ordem_repetida_e_desconhecida() {
        let codigos: Vec<String> = ["id_basica", "mesa_d", "id_basica", "cons_finais"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            ordem(&codigos),
            vec![
                Parte::IdentificacaoBasica,
                Parte::MesaDiretora,
                Parte::ConsideracoesFinais
            ]
        );
        assert_eq!(ordem(&["xyz".to_string()]), ORDEM_PADRAO.to_vec());
        assert_eq!(ordem(&[]), ORDEM_PADRAO.to_vec());
    }

    #[test]
    fn legislatura_atual() {
        let l = |hoje| legislatura_str(19, data(2025, 1, 1), data(2028, 12, 31), hoje);
        assert_eq!(l(data(2026, 12, 3)), "19ª (2025 - 2028) (Atual)");
        assert_eq!(l(data(2030, 1, 1)), "19ª (2025 - 2028)");
    }

    #[test]
    fn epigrafe_com_e_sem_complemento() {
        let m = MASCARA_PADRAO;
        assert_eq!(
            epigrafe(m, "OF", "Ofício", 7, 2025, ""),
            "OF Nº 007/2025 - Ofício"
        );
        assert_eq!(
            epigrafe(m, "OF", "Ofício", 12, 2025, "A"),
            "OF Nº 012/2025-A - Ofício"
        );
    }

    #[test]
    fn turnos() {
        assert_eq!(turno("P"), "Primeiro");
        assert_eq!(turno("C"), "2ª e 3ª Votações");
        assert_eq!(turno(""), "");
    }
}
