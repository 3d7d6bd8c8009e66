//! materia-tramitacao and etiqueta-materia against real PostgreSQL: the values
//! SAPL shows, computed by SQL here, must all be in the PDF text, in order; and
//! pathological rows must still render.

mod common;

use common::{data_longa_sql, em_ordem, paginas, pdftotext, pk, texto, Leitor, TestDb};
use sapl_renderer::{fingerprint, render, RenderError, ReportId, ReportKind, ReportRequest};

/// Expected header lines and table rows of materia-tramitacao for `materia`,
/// straight from SQL (units resolved the way `str(UnidadeTramitacao)` does).
async fn esperado_tramitacao(db: &TestDb, materia: i32) -> Vec<String> {
    let cab = db
        .client
        .query_one(
            "SELECT m.numero || '/' || m.ano, t.descricao,
                    (SELECT COALESCE(p.nome_parlamentar, a.nome)
                       FROM materia_autoria au JOIN base_autor a ON a.id = au.autor_id
                       LEFT JOIN django_content_type ct ON ct.id = a.content_type_id
                       LEFT JOIN parlamentares_parlamentar p
                              ON ct.model = 'parlamentar' AND p.id = a.object_id
                      WHERE au.materia_id = m.id ORDER BY a.nome LIMIT 1)
               FROM materia_materialegislativa m
               JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id WHERE m.id = $1",
            &[&materia],
        )
        .await
        .expect("materia");
    let mut esperado = vec![
        "Câmara Municipal de Exemplo".to_string(),
        "Sistema de Apoio ao Processo Legislativo".to_string(),
        format!(
            "Histórico de Tramitações da Matéria: {}",
            cab.get::<_, String>(0)
        ),
        format!("Tipo de matéria: {}", cab.get::<_, String>(1)),
        format!(
            "Autor: {}",
            cab.get::<_, Option<String>>(2).unwrap_or_default()
        ),
        "Data Tramitação".to_string(),
        "Unidade Local".to_string(),
        "Unidade Destino".to_string(),
        "Status".to_string(),
    ];
    let unidade = |alias: &str| {
        format!(
            "concat_ws(' - ', {a}c.sigla || ' - ' || {a}c.nome, {a}o.nome || ' - ' || {a}o.sigla, {a}p.nome_parlamentar)",
            a = alias
        )
    };
    let sql = format!(
        "SELECT {data}, {local}, {destino}, COALESCE(st.descricao, '')
           FROM materia_tramitacao tr
           JOIN materia_unidadetramitacao lu ON lu.id = tr.unidade_tramitacao_local_id
           LEFT JOIN comissoes_comissao lc ON lc.id = lu.comissao_id
           LEFT JOIN materia_orgao lo ON lo.id = lu.orgao_id
           LEFT JOIN parlamentares_parlamentar lp ON lp.id = lu.parlamentar_id
           LEFT JOIN materia_unidadetramitacao du ON du.id = tr.unidade_tramitacao_destino_id
           LEFT JOIN comissoes_comissao dc ON dc.id = du.comissao_id
           LEFT JOIN materia_orgao do_ ON do_.id = du.orgao_id
           LEFT JOIN parlamentares_parlamentar dp ON dp.id = du.parlamentar_id
           LEFT JOIN materia_statustramitacao st ON st.id = tr.status_id
          WHERE tr.materia_id = $1
          ORDER BY tr.data_tramitacao DESC, tr.id DESC",
        data = data_longa_sql("tr.data_tramitacao"),
        local = unidade("l"),
        destino = unidade("d").replace("do.", "do_."),
    );
    for linha in db
        .client
        .query(&sql, &[&materia])
        .await
        .expect("tramitacoes")
    {
        for i in 0..4 {
            let valor: String = linha.get(i);
            if !valor.is_empty() {
                esperado.push(valor);
            }
        }
    }
    esperado.push("Página 1".to_string());
    esperado
}

#[tokio::test]
async fn materia_tramitacao_mostra_o_que_o_sapl_mostra() {
    let db = TestDb::new().await;
    let materias: Vec<i32> = db
        .client
        .query(
            "SELECT DISTINCT materia_id FROM materia_tramitacao ORDER BY 1",
            &[],
        )
        .await
        .expect("materias")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!materias.is_empty(), "sample data has tramitações");
    for materia in materias {
        let pdf = db
            .pdf(
                ReportKind::MateriaTramitacao,
                pk(materia),
                Leitor::Anonymous,
            )
            .await;
        assert!(pdf.starts_with(b"%PDF"));
        let esperado = esperado_tramitacao(&db, materia).await;
        em_ordem(&texto(&pdf), &esperado);
    }
    // The rodapé as SAPL builds it for the sample chamber (CEP of 9 characters
    // is left out), with the fixed footer date.
    let pdf = db
        .pdf(ReportKind::MateriaTramitacao, pk(1), Leitor::Anonymous)
        .await;
    em_ordem(
        &texto(&pdf),
        &[
            "Praça da Matriz, 100 - Exemplópolis DF Tel.: (61) 3333-0000".to_string(),
            "http://camara.exemplo.leg.br - E-mail: contato@exemplo.leg.br 03/12/2026".to_string(),
            "03/12/2026".to_string(),
            "Página 1".to_string(),
        ],
    );
}

#[tokio::test]
async fn materia_com_500_tramitacoes_ocupa_varias_paginas_com_cabecalho() {
    let db = TestDb::new().await;
    db.exec(
        "INSERT INTO materia_tramitacao (materia_id, data_tramitacao, unidade_tramitacao_local_id,
                unidade_tramitacao_destino_id, status_id, turno, texto, urgente, timestamp, ip)
         SELECT 2, DATE '2020-01-01' + g, t.unidade_tramitacao_local_id,
                t.unidade_tramitacao_destino_id, t.status_id, '', 'gerada', false, now(), ''
           FROM generate_series(1, 500) g,
                (SELECT * FROM materia_tramitacao ORDER BY id LIMIT 1) t",
    )
    .await;
    let pdf = db
        .pdf(ReportKind::MateriaTramitacao, pk(2), Leitor::Anonymous)
        .await;
    let n = paginas(&pdf);
    assert!(n >= 5, "500 rows should need several pages, got {n}");

    let bruto = pdftotext(&pdf, &["-raw"]);
    let paginas_texto: Vec<&str> = bruto
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(paginas_texto.len(), n);
    for (i, pagina) in paginas_texto.iter().enumerate() {
        let pagina = pagina.split_whitespace().collect::<Vec<_>>().join(" ");
        em_ordem(
            &pagina,
            &[
                "Câmara Municipal de Exemplo".to_string(),
                "Data Tramitação Unidade Local Unidade Destino Status".to_string(),
                format!("Página {}", i + 1),
            ],
        );
    }
    // Every row is there, newest first.
    let esperado = esperado_tramitacao(&db, 2).await;
    let linhas: Vec<String> = esperado
        .into_iter()
        .filter(|s| s.contains(" de 20"))
        .collect();
    assert!(linhas.len() >= 500);
    let tudo = texto(&pdf);
    em_ordem(&tudo, &linhas);
}

#[tokio::test]
async fn dados_patologicos_nao_quebram_o_layout() {
    let db = TestDb::new().await;
    // varchar(256) is the longest name column a tramitação shows.
    let palavra = "Z".repeat(256);
    let ementa = format!("{} fim.", "ementa muito longa ".repeat(270));
    assert!(ementa.chars().count() > 5000);
    db.client
        .execute(
            "UPDATE materia_materialegislativa SET ementa = $1 WHERE id = 3",
            &[&ementa],
        )
        .await
        .expect("ementa");
    db.exec(
        "WITH s AS (INSERT INTO materia_statustramitacao (sigla, descricao, indicador)
                    VALUES ('EMJ', 'Emoji 🎉 e ✓', '') RETURNING id)
         INSERT INTO materia_tramitacao (materia_id, data_tramitacao, unidade_tramitacao_local_id,
                unidade_tramitacao_destino_id, status_id, turno, texto, urgente, timestamp, ip)
         SELECT 3, DATE '2028-02-29', 1, 1, s.id, '', '', false, now(), '' FROM s",
    )
    .await;
    db.client
        .execute(
            "WITH o AS (INSERT INTO materia_orgao (nome, sigla, unidade_deliberativa, endereco, telefone)
                        VALUES ($1, 'ZZ', false, '', '') RETURNING id),
                  u AS (INSERT INTO materia_unidadetramitacao (orgao_id) SELECT id FROM o RETURNING id)
             INSERT INTO materia_tramitacao (materia_id, data_tramitacao, unidade_tramitacao_local_id,
                    unidade_tramitacao_destino_id, status_id, turno, texto, urgente, timestamp, ip)
             SELECT 3, DATE '2029-06-01', 1, u.id, NULL, '', '', false, now(), '' FROM u",
            &[&palavra],
        )
        .await
        .expect("orgao with a giant word");
    // Empty optional fields: no destino, no status.
    db.exec(
        "INSERT INTO materia_tramitacao (materia_id, data_tramitacao, unidade_tramitacao_local_id,
                unidade_tramitacao_destino_id, status_id, turno, texto, urgente, timestamp, ip)
         SELECT 3, DATE '2030-01-01', 1, NULL, NULL, '', '', false, now(), ''",
    )
    .await;

    let pdf = db
        .pdf(ReportKind::MateriaTramitacao, pk(3), Leitor::Anonymous)
        .await;
    let t = texto(&pdf);
    // The emoji degrades to the visible replacement glyph; the text around it stays.
    assert!(
        t.contains("Emoji \u{FFFD} e ✓"),
        "emoji fallback missing: {t}"
    );
    // The 300-character word is broken across lines but nothing is lost.
    let sem_espacos: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(sem_espacos.contains(&palavra));
    assert!(t.contains("1 de Janeiro de 2030"));

    // The label cuts the 5,000-character ementa to 240 characters plus "...".
    let etiqueta = db
        .pdf(ReportKind::EtiquetaMateria, pk(3), Leitor::Anonymous)
        .await;
    let t = texto(&etiqueta);
    let cortada: String = ementa.chars().take(240).collect();
    em_ordem(&t, &[format!("Ementa: {}...", cortada.trim_end())]);
    assert_eq!(paginas(&etiqueta), 1);
}

#[tokio::test]
async fn etiqueta_materia_mostra_o_que_o_sapl_mostra() {
    let db = TestDb::new().await;
    let linhas = db
        .client
        .query(
            &format!(
                "SELECT m.id, 'Materia Legislativa - ' || m.numero || '/' || m.ano,
                        'Tipo: ' || t.sigla || ' - ' || t.descricao,
                        'Data: ' || {data},
                        'Ementa: ' || CASE WHEN char_length(m.ementa) < 240 THEN m.ementa
                                            ELSE left(m.ementa, 240) || '...' END
                   FROM materia_materialegislativa m
                   JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id ORDER BY m.id",
                data = data_longa_sql("m.data_apresentacao")
            ),
            &[],
        )
        .await
        .expect("materias");
    assert!(linhas.len() >= 20);
    let (largura, altura): (f64, f64) = {
        let r = db
            .client
            .query_one(
                "SELECT largura, altura FROM materia_configetiquetamaterialegislativa ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .expect("config");
        (r.get(0), r.get(1))
    };
    for linha in linhas {
        let id: i32 = linha.get(0);
        let pdf = db
            .pdf(ReportKind::EtiquetaMateria, pk(id), Leitor::Anonymous)
            .await;
        let esperado: Vec<String> = (1..5).map(|i| linha.get::<_, String>(i)).collect();
        em_ordem(&texto(&pdf), &esperado);
        assert_eq!(paginas(&pdf), 1);
        // Page size is the configured label size (cm → pt), height included.
        let info = std::process::Command::new("pdfinfo")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(&pdf)?;
                c.wait_with_output()
            })
            .expect("pdfinfo");
        let info = String::from_utf8_lossy(&info.stdout).to_string();
        let tamanho = info
            .lines()
            .find(|l| l.starts_with("Page size:"))
            .expect("page size line");
        let numeros: Vec<f64> = tamanho
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert!(
            (numeros[0] - largura * 72.0 / 2.54).abs() < 1.0,
            "{tamanho}"
        );
        assert!((numeros[1] - altura * 72.0 / 2.54).abs() < 1.0, "{tamanho}");
    }
}

#[tokio::test]
async fn objeto_desconhecido_e_not_found() {
    let db = TestDb::new().await;
    for kind in [
        ReportKind::MateriaTramitacao,
        ReportKind::EtiquetaMateria,
        ReportKind::SessaoPlenaria,
    ] {
        let req = ReportRequest {
            kind,
            id: ReportId::Pk(987_654),
            reader: Leitor::Anonymous,
        };
        let erro = render(&db.client, &req, &common::opcoes())
            .await
            .expect_err("unknown pk");
        assert!(
            matches!(erro, RenderError::NotFound { .. }),
            "{kind}: {erro}"
        );
        assert_eq!(erro.http_status(), 404);
        assert!(!erro.is_transient());
        let erro = fingerprint(&db.client, &req).await.expect_err("unknown pk");
        assert!(matches!(erro, RenderError::NotFound { .. }));
    }
    let req = ReportRequest {
        kind: ReportKind::EtiquetaProtocolo,
        id: ReportId::Protocolo {
            numero: 999_999,
            ano: 2025,
        },
        reader: Leitor::Anonymous,
    };
    let erro = render(&db.client, &req, &common::opcoes())
        .await
        .expect_err("unknown protocolo");
    assert!(matches!(erro, RenderError::NotFound { .. }));
}

#[tokio::test]
async fn fingerprint_muda_quando_os_dados_mudam() {
    let db = TestDb::new().await;
    let req = ReportRequest {
        kind: ReportKind::MateriaTramitacao,
        id: pk(1),
        reader: Leitor::Anonymous,
    };
    let antes = fingerprint(&db.client, &req).await.expect("fingerprint");
    assert_eq!(antes, fingerprint(&db.client, &req).await.expect("again"));
    db.exec(
        "UPDATE materia_statustramitacao SET descricao = descricao || ' (revisto)'
          WHERE id IN (SELECT status_id FROM materia_tramitacao WHERE materia_id = 1)",
    )
    .await;
    let depois = fingerprint(&db.client, &req).await.expect("fingerprint");
    assert_ne!(
        antes, depois,
        "a renamed status must change the fingerprint"
    );

    let etiqueta = ReportRequest {
        kind: ReportKind::EtiquetaMateria,
        ..req
    };
    let antes = fingerprint(&db.client, &etiqueta)
        .await
        .expect("fingerprint");
    db.exec("UPDATE materia_materialegislativa SET ementa = ementa || '.' WHERE id = 1")
        .await;
    assert_ne!(antes, fingerprint(&db.client, &etiqueta).await.expect("fp"));
}

/// A PDF viewer's "created" field shows when the report was made, not 1970.
#[tokio::test]
async fn o_pdf_traz_a_data_em_que_foi_gerado() {
    let db = TestDb::new().await;
    let pdf = db
        .pdf(ReportKind::MateriaTramitacao, pk(1), Leitor::Anonymous)
        .await;
    let arquivo = std::env::temp_dir().join(format!("sapl-data-{}.pdf", std::process::id()));
    std::fs::write(&arquivo, &pdf).expect("PDF written");
    let saida = std::process::Command::new("pdfinfo")
        .arg("-isodates")
        .arg(&arquivo)
        .output()
        .expect("pdfinfo runs");
    let _ = std::fs::remove_file(&arquivo);
    let info = String::from_utf8_lossy(&saida.stdout);
    let criado = info
        .lines()
        .find_map(|l| l.strip_prefix("CreationDate:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let hoje = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        criado.starts_with(&hoje),
        "CreationDate {criado:?}, today {hoje}"
    );
}
