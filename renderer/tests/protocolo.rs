//! etiqueta-protocolo against real PostgreSQL with protocolos the test inserts:
//! one opened a matéria, one a documento administrativo, one is annulled and
//! predates the `timestamp` column.

mod common;

use common::{em_ordem, paginas, texto, Leitor, TestDb};
use sapl_renderer::{fingerprint, ReportId, ReportKind, ReportRequest};

const INSERIR: &str = "
INSERT INTO protocoloadm_tipodocumentoadministrativo (id, sigla, descricao)
     VALUES (900, 'OFI', 'Ofício');
-- 21 Mar 2025 02:30 UTC is 20 Mar 23:30 in São Paulo: the label must show the local day.
INSERT INTO protocoloadm_protocolo (numero, ano, data, hora, timestamp, tipo_processo, interessado,
        assunto_ementa, observacao, anulado, user_anulacao, ip_anulacao, justificativa_anulacao,
        ip_data_hora_manual, user_data_hora_manual, timestamp_data_hora_manual, de_proposicao)
VALUES (77, 2025, NULL, NULL, TIMESTAMPTZ '2025-03-21 02:30:00+00', 1, 'Ana', 'x', '', false,
        '', '', '', '', '', now(), false),
       (78, 2025, NULL, NULL, TIMESTAMPTZ '2025-04-02 13:05:00+00', 0, 'Prefeitura', 'y', '', false,
        '', '', '', '', '', now(), false),
       (79, 2024, DATE '2024-12-30', TIME '09:07', NULL, 0, 'Z', 'z', '', true,
        '', '', '', '', '', now(), false);
UPDATE materia_materialegislativa SET numero_protocolo = 77 WHERE id = (
    SELECT min(id) FROM materia_materialegislativa WHERE ano = 2025);
INSERT INTO protocoloadm_documentoadministrativo (numero, ano, data, interessado, tramitacao,
        assunto, observacao, tipo_id, restrito, ip, complemento, protocolo_id)
SELECT 5, 2025, DATE '2025-04-02', 'Prefeitura', false, 'Ofício', '', 900, false, '', '', id
  FROM protocoloadm_protocolo WHERE numero = 78 AND ano = 2025;
";

#[tokio::test]
async fn etiqueta_protocolo_mostra_o_que_o_sapl_mostra() {
    let db = TestDb::new().await;
    db.exec(INSERIR).await;

    // Expected values straight from SQL, in the label's order.
    let linhas = db
        .client
        .query(
            "SELECT p.numero, p.ano::int4,
                    'PROTOCOLO GERAL ' || p.numero || '/' || p.ano,
                    'Data: ' || COALESCE(to_char(p.timestamp AT TIME ZONE 'America/Sao_Paulo', 'DD/MM/YYYY'),
                                         to_char(p.data, 'DD/MM/YYYY'))
                      || ' - Horário: ' || COALESCE(to_char(p.timestamp AT TIME ZONE 'America/Sao_Paulo', 'HH24:MI'),
                                                    to_char(p.hora, 'HH24:MI')),
                    CASE p.tipo_processo WHEN 0 THEN 'Administrativo' ELSE 'Legislativo' END,
                    COALESCE((SELECT t.sigla || ' ' || m.numero || '/' || m.ano
                                FROM materia_materialegislativa m
                                JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
                               WHERE m.numero_protocolo = p.numero AND m.ano = p.ano),
                             (SELECT t.sigla || ' ' || d.numero || '/' || d.ano
                                FROM protocoloadm_documentoadministrativo d
                                JOIN protocoloadm_tipodocumentoadministrativo t ON t.id = d.tipo_id
                               WHERE d.protocolo_id = p.id), ''),
                    p.anulado
               FROM protocoloadm_protocolo p ORDER BY p.id",
            &[],
        )
        .await
        .expect("protocolos");
    assert_eq!(linhas.len(), 3);
    for linha in linhas {
        let (numero, ano): (i32, i32) = (linha.get(0), linha.get(1));
        let req = ReportRequest {
            kind: ReportKind::EtiquetaProtocolo,
            id: ReportId::Protocolo { numero, ano },
            reader: Leitor::Anonymous,
        };
        let pdf = db.pdf(req.kind, req.id, req.reader).await;
        let mut esperado = vec!["Câmara Municipal de Exemplo".to_string()];
        for i in 2..6 {
            let valor: String = linha.get(i);
            if !valor.is_empty() {
                esperado.push(valor);
            }
        }
        if linha.get::<_, bool>(6) {
            esperado.push("Nulo".to_string());
        }
        let t = texto(&pdf);
        em_ordem(&t, &esperado);
        assert_eq!(paginas(&pdf), 1);
        assert!(fingerprint(&db.client, &req).await.is_ok());
    }

    // The local-day rule, spelled out for the first one.
    let pdf = db
        .pdf(
            ReportKind::EtiquetaProtocolo,
            ReportId::Protocolo {
                numero: 77,
                ano: 2025,
            },
            Leitor::Anonymous,
        )
        .await;
    assert!(texto(&pdf).contains("Data: 20/03/2025 - Horário: 23:30"));
}
