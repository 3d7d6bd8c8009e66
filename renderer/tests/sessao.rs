//! sessao-plenaria against real PostgreSQL: the blocks in the stored order with
//! the values SAPL shows (computed by SQL here), the anonymous-reader rule for
//! correspondências, and a 40-item sessão with pathological text.

mod common;

use common::{em_ordem, paginas, pdftotext, pk, texto, Leitor, TestDb};
use sapl_renderer::{fingerprint, ReportKind, ReportRequest};

/// Correspondências (one public, one restricted), an orador and an ocorrência
/// for sessão 1.
const EXTRAS: &str = "
INSERT INTO protocoloadm_tipodocumentoadministrativo (id, sigla, descricao) VALUES (900, 'OF', 'Ofício');
INSERT INTO protocoloadm_documentoadministrativo (id, numero, ano, data, interessado, tramitacao,
        assunto, observacao, tipo_id, restrito, ip, complemento)
VALUES (901, 7, 2025, DATE '2025-03-10', 'Prefeitura', false, 'Convite para audiência', '', 900, false, '', ''),
       (902, 12, 2025, DATE '2025-03-11', 'Ministério Público', false, 'Assunto sigiloso', '', 900, true, '', 'A');
INSERT INTO sessao_correspondencia (sessao_plenaria_id, documento_id, tipo, numero_ordem, observacao)
VALUES (1, 901, 1, 1, ''), (1, 902, 1, 2, '');
INSERT INTO sessao_orador (sessao_plenaria_id, parlamentar_id, numero_ordem, observacao, url_discurso)
VALUES (1, 3, 1, 'Homenagem aos professores', '');
INSERT INTO sessao_consideracoesfinais (sessao_plenaria_id, conteudo)
VALUES (1, '<p>Encerrada &agrave;s 21h30 &amp; registrada.</p><p>Pr&oacute;xima sess&atilde;o: ter&ccedil;a.</p>');
";

/// The expected strings of sessão 1, in the block order the sample data stores.
async fn esperado(db: &TestDb, anonimo: bool) -> Vec<String> {
    let c = &db.client;
    let um = |sql: &'static str| async move {
        c.query(sql, &[])
            .await
            .expect(sql)
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<String>>()
    };
    let mut e: Vec<String> = Vec::new();
    let titulo = um("SELECT 'Resumo da ' || s.numero || 'ª Reunião ' || ts.nome || ' da ' || sl.numero
                     || 'ª Sessão Legislativa da ' || l.numero || 'ª (' || extract(year FROM l.data_inicio)
                     || ' - ' || extract(year FROM l.data_fim) || ') (Atual) Legislatura'
                     FROM sessao_sessaoplenaria s JOIN sessao_tiposessaoplenaria ts ON ts.id = s.tipo_id
                     JOIN parlamentares_legislatura l ON l.id = s.legislatura_id
                     JOIN parlamentares_sessaolegislativa sl ON sl.id = s.sessao_legislativa_id
                     WHERE s.id = 1")
    .await;
    e.extend(titulo);
    e.push("Informações Básicas".into());
    e.extend(
        um("SELECT unnest(ARRAY['Tipo da Sessão: ' || ts.nome,
                  'Abertura: ' || to_char(s.data_inicio, 'DD/MM/YYYY') || ' - ' || s.hora_inicio,
                  'Encerramento: ' || to_char(s.data_fim, 'DD/MM/YYYY') || ' - ' || s.hora_fim,
                  'Conteúdo Multimídia',
                  'Multimídia Audio: ' || COALESCE(NULLIF(s.url_audio, ''), 'Indisponível'),
                  'Multimídia Video: ' || COALESCE(NULLIF(s.url_video, ''), 'Indisponível')])
             FROM sessao_sessaoplenaria s JOIN sessao_tiposessaoplenaria ts ON ts.id = s.tipo_id
            WHERE s.id = 1")
        .await,
    );
    e.push("Mesa Diretora".into());
    e.extend(
        um("SELECT c.descricao || ': ' || p.nome_parlamentar || '/' ||
                   (SELECT pa.sigla FROM parlamentares_filiacao f JOIN parlamentares_partido pa ON pa.id = f.partido_id
                     WHERE f.parlamentar_id = p.id ORDER BY f.data DESC LIMIT 1)
              FROM sessao_integrantemesa im JOIN parlamentares_parlamentar p ON p.id = im.parlamentar_id
              JOIN parlamentares_cargomesa c ON c.id = im.cargo_id
             WHERE im.sessao_plenaria_id = 1 ORDER BY im.cargo_id")
        .await,
    );
    let presenca = |tabela: &'static str| {
        format!(
            "SELECT p.nome_parlamentar || '/' || string_agg(pa.sigla, ' | ')
               FROM {tabela} x JOIN parlamentares_parlamentar p ON p.id = x.parlamentar_id
               JOIN sessao_sessaoplenaria s ON s.id = x.sessao_plenaria_id
               JOIN parlamentares_filiacao f ON f.parlamentar_id = p.id AND f.data <= s.data_inicio
                    AND (f.data_desfiliacao IS NULL OR f.data_desfiliacao >= s.data_inicio)
               JOIN parlamentares_partido pa ON pa.id = f.partido_id
              WHERE x.sessao_plenaria_id = 1 GROUP BY p.nome_parlamentar ORDER BY p.nome_parlamentar"
        )
    };
    let nomes = |sql: String| async move {
        c.query(&sql, &[])
            .await
            .expect("presença")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<String>>()
    };
    e.push("Lista de Presença da Sessão".into());
    let presentes = nomes(presenca("sessao_sessaoplenariapresenca")).await;
    assert!(presentes.len() >= 8);
    e.extend(presentes);
    e.push("Correspondências".into());
    let filtro = if anonimo { "AND NOT d.restrito" } else { "" };
    for r in c
        .query(
            &format!(
                "SELECT t.sigla || ' Nº ' || lpad(d.numero::text, 3, '0') || '/' || d.ano
                        || CASE WHEN d.complemento <> '' THEN '-' || d.complemento ELSE '' END
                        || ' - ' || t.descricao,
                        'Data: ' || to_char(d.data, 'DD/MM/YYYY'), 'Interessado: ' || d.interessado,
                        'Assunto: ' || d.assunto
                   FROM sessao_correspondencia co
                   JOIN protocoloadm_documentoadministrativo d ON d.id = co.documento_id
                   JOIN protocoloadm_tipodocumentoadministrativo t ON t.id = d.tipo_id
                  WHERE co.sessao_plenaria_id = 1 {filtro} ORDER BY co.numero_ordem"
            ),
            &[],
        )
        .await
        .expect("correspondências")
    {
        for i in 0..4 {
            e.push(r.get(i));
        }
    }
    e.push("Expedientes".into());
    e.extend(
        um(
            "SELECT unnest(ARRAY[te.nome, regexp_replace(e.conteudo, '<[^>]*>', '', 'g')])
              FROM sessao_expedientesessao e JOIN sessao_tipoexpediente te ON te.id = e.tipo_id
             WHERE e.sessao_plenaria_id = 1 ORDER BY te.nome",
        )
        .await,
    );
    e.extend([
        "Matérias do Expediente".into(),
        "Votações Nominais - Matérias do Expediente".into(),
        "Oradores do Expediente".into(),
        "Lista de Presença da Ordem do Dia".into(),
    ]);
    e.extend(nomes(presenca("sessao_presencaordemdia")).await);
    e.push("Matérias da Ordem do Dia".into());
    e.extend(
        um("SELECT unnest(ARRAY[
                   o.numero_ordem || ' - ' || t.sigla || ' ' || t.descricao || ' ' || m.numero || '/' || m.ano,
                   m.ementa,
                   COALESCE((SELECT tr.nome FROM sessao_registrovotacao r
                               JOIN sessao_tiporesultadovotacao tr ON tr.id = r.tipo_resultado_votacao_id
                              WHERE r.ordem_id = o.id), 'Matéria não votada')])
              FROM sessao_ordemdia o JOIN materia_materialegislativa m ON m.id = o.materia_id
              JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
             WHERE o.sessao_plenaria_id = 1 ORDER BY o.numero_ordem")
        .await,
    );
    e.push("Votações Nominais - Matérias da Ordem do Dia".into());
    for r in c
        .query(
            "SELECT o.id, t.descricao || ' nº ' || m.numero || ' de ' || m.ano
               FROM sessao_ordemdia o JOIN materia_materialegislativa m ON m.id = o.materia_id
               JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
              WHERE o.sessao_plenaria_id = 1 AND o.tipo_votacao = 2 ORDER BY m.ano, m.numero DESC",
            &[],
        )
        .await
        .expect("nominais")
    {
        let item: i32 = r.get(0);
        e.push(r.get(1));
        for v in c
            .query(
                "SELECT p.nome_parlamentar || ' ' || v.voto FROM sessao_votoparlamentar v
                   JOIN sessao_registrovotacao r ON r.id = v.votacao_id
                   JOIN parlamentares_parlamentar p ON p.id = v.parlamentar_id
                  WHERE r.ordem_id = $1 ORDER BY p.nome_parlamentar",
                &[&item],
            )
            .await
            .expect("votos")
        {
            e.push(v.get(0));
        }
    }
    e.push("Oradores da Ordem do Dia".into());
    e.push("Oradores das Explicações Pessoais".into());
    e.extend(
        um("SELECT o.numero_ordem || ' - ' || p.nome_parlamentar || '/' ||
                   (SELECT pa.sigla FROM parlamentares_filiacao f JOIN parlamentares_partido pa ON pa.id = f.partido_id
                     WHERE f.parlamentar_id = p.id ORDER BY f.data DESC LIMIT 1) || ' - ' || o.observacao
              FROM sessao_orador o JOIN parlamentares_parlamentar p ON p.id = o.parlamentar_id
             WHERE o.sessao_plenaria_id = 1 ORDER BY o.numero_ordem")
        .await,
    );
    e.push("Considerações Finais".into());
    e.push("Encerrada às 21h30 & registrada.".into());
    e.push("Próxima sessão: terça.".into());
    e
}

#[tokio::test]
async fn sessao_plenaria_mostra_o_que_o_sapl_mostra() {
    let db = TestDb::new().await;
    db.exec(EXTRAS).await;

    for (leitor, anonimo) in [(Leitor::Authenticated, false), (Leitor::Anonymous, true)] {
        let pdf = db.pdf(ReportKind::SessaoPlenaria, pk(1), leitor).await;
        let t = texto(&pdf);
        em_ordem(&t, &esperado(&db, anonimo).await);
        let restrito = t.contains("Assunto sigiloso");
        assert_eq!(
            restrito, !anonimo,
            "restricted correspondência shown: {restrito}"
        );
        assert!(t.contains("Convite para audiência"));
    }

    // A chamber that does not publish administrative documents shows anonymous
    // readers no correspondência at all.
    db.exec("UPDATE base_appconfig SET documentos_administrativos = 'R'")
        .await;
    let pdf = db
        .pdf(ReportKind::SessaoPlenaria, pk(1), Leitor::Anonymous)
        .await;
    assert!(!texto(&pdf).contains("Convite para audiência"));
    let pdf = db
        .pdf(ReportKind::SessaoPlenaria, pk(1), Leitor::Authenticated)
        .await;
    assert!(texto(&pdf).contains("Convite para audiência"));
}

#[tokio::test]
async fn ordem_dos_blocos_segue_o_resumoordenacao() {
    let db = TestDb::new().await;
    db.exec(
        "UPDATE sessao_resumoordenacao SET primeiro = 'cons_finais', segundo = 'mesa_d',
                terceiro = 'id_basica', quarto = 'mat_o_d', quinto = 'cons_finais', sexto = 'mesa_d',
                setimo = 'mesa_d', oitavo = 'mesa_d', nono = 'mesa_d', decimo = 'mesa_d',
                decimo_primeiro = 'mesa_d', decimo_segundo = 'mesa_d', decimo_terceiro = 'mesa_d',
                decimo_quarto = 'mesa_d', decimo_quinto = 'mesa_d', decimo_sexto = 'mesa_d'",
    )
    .await;
    let pdf = db
        .pdf(ReportKind::SessaoPlenaria, pk(1), Leitor::Anonymous)
        .await;
    let t = texto(&pdf);
    em_ordem(
        &t,
        &[
            "Considerações Finais".into(),
            "Mesa Diretora".into(),
            "Informações Básicas".into(),
            "Matérias da Ordem do Dia".into(),
        ],
    );
    assert!(!t.contains("Lista de Presença"));
    assert_eq!(t.matches("Mesa Diretora").count(), 1);
}

#[tokio::test]
async fn sessao_com_40_itens_e_textos_patologicos() {
    let db = TestDb::new().await;
    let palavra = "W".repeat(300);
    let ementa_longa = format!("{palavra} {}", "ementa extensa com acentuação ".repeat(170));
    assert!(ementa_longa.chars().count() > 5000);
    // 34 new matérias on the ordem do dia (40 items with the sample's 6), one of
    // them with a 5,000-character ementa opening with a 300-character word, one
    // with emoji and entities; an expediente and an ocorrência in TinyMCE HTML.
    db.client
        .execute(
            "INSERT INTO materia_materialegislativa (numero, ano, data_apresentacao, tipo_apresentacao,
                    numero_origem_externa, apelido, em_tramitacao, objeto, ementa, indexacao, observacao,
                    resultado, regime_tramitacao_id, tipo_id, ip)
             SELECT 100 + g, 2025, DATE '2025-03-01', 'E', '', '', true, '',
                    CASE g WHEN 1 THEN $1 WHEN 2 THEN 'Festa 🎉 &amp; alegria 😀' ELSE 'Ementa ' || g END,
                    '', '', '', m.regime_tramitacao_id, m.tipo_id, ''
               FROM generate_series(1, 34) g, (SELECT * FROM materia_materialegislativa WHERE id = 1) m",
            &[&ementa_longa],
        )
        .await
        .expect("matérias");
    db.exec(
        "INSERT INTO sessao_ordemdia (sessao_plenaria_id, materia_id, numero_ordem, observacao,
                tipo_votacao, resultado, data_ordem)
         SELECT 1, m.id, 6 + row_number() OVER (ORDER BY m.id), 'Discussão única', 1, '', DATE '2025-03-18'
           FROM materia_materialegislativa m WHERE m.numero > 100;
         INSERT INTO sessao_ocorrenciasessao (sessao_plenaria_id, conteudo)
         VALUES (1, '<p style=\"x\">Ocorr&ecirc;ncia <strong>registrada</strong><br/>com quebra</p>');
         UPDATE sessao_expedientesessao SET conteudo = conteudo || '<p>' || repeat('longo ', 900) || '</p>';
         UPDATE sessao_resumoordenacao SET decimo_quinto = 'ocorr_sessao';",
    )
    .await;

    let pdf = db
        .pdf(ReportKind::SessaoPlenaria, pk(1), Leitor::Authenticated)
        .await;
    let n = paginas(&pdf);
    assert!(
        n >= 4,
        "40 items with a 5,000-character ementa need pages: {n}"
    );
    let t = texto(&pdf);
    let itens: Vec<String> = db
        .client
        .query(
            "SELECT o.numero_ordem || ' - ' || t.sigla || ' ' || t.descricao || ' ' || m.numero || '/' || m.ano
               FROM sessao_ordemdia o JOIN materia_materialegislativa m ON m.id = o.materia_id
               JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
              WHERE o.sessao_plenaria_id = 1 ORDER BY o.numero_ordem",
            &[],
        )
        .await
        .expect("itens")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(itens.len(), 40);
    em_ordem(&t, &itens);
    assert!(
        t.contains("Festa \u{FFFD} & alegria 😀"),
        "emoji/entities: {t}"
    );
    assert!(t.contains("Ocorrência registrada com quebra"));
    let sem_espacos: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(sem_espacos.contains(&palavra), "300-character word lost");
    assert!(t.contains("ementa extensa com acentuação"));

    // Every page carries the frame and its number; the table header repeats
    // on the pages the table continues onto.
    let bruto = pdftotext(&pdf, &["-raw"]);
    let paginas_texto: Vec<String> = bruto
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(paginas_texto.len(), n);
    for (i, p) in paginas_texto.iter().enumerate() {
        em_ordem(
            p,
            &[
                "Câmara Municipal de Exemplo".into(),
                "Resumo da 5ª Reunião Ordinária".into(),
                format!("Página {}", i + 1),
            ],
        );
    }
    let cabecalhos = t.matches("Matéria Ementa Resultado da Votação").count();
    assert!(
        cabecalhos >= 3,
        "table header repeated only {cabecalhos} times"
    );
}

#[tokio::test]
async fn fingerprint_da_sessao() {
    let db = TestDb::new().await;
    let req = ReportRequest {
        kind: ReportKind::SessaoPlenaria,
        id: pk(1),
        reader: Leitor::Anonymous,
    };
    let anonimo = fingerprint(&db.client, &req).await.expect("fingerprint");
    let autenticado = fingerprint(
        &db.client,
        &ReportRequest {
            reader: Leitor::Authenticated,
            ..req
        },
    )
    .await
    .expect("fingerprint");
    assert_ne!(anonimo, autenticado, "reader class is part of the key");
    db.exec("UPDATE sessao_votoparlamentar SET voto = 'Não' WHERE id = (SELECT min(id) FROM sessao_votoparlamentar)")
        .await;
    assert_ne!(anonimo, fingerprint(&db.client, &req).await.expect("fp"));
}
