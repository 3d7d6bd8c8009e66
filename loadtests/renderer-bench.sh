#!/usr/bin/env bash
# Benchmark of sapl-renderer (issue 4): renders each report at a small and a large
# size from a scratch PostgreSQL database and records wall time and peak RSS per
# render next to SAPL's own numbers (../shared/sapl/baseline.md).
#
#   loadtests/renderer-bench.sh            build release, measure, rewrite the
#                                          "Native reports (issue 4)" section of
#                                          loadtests/RESULTS.md
#   RUNS=10 loadtests/renderer-bench.sh    more runs per case (default 5)
#
# Two timings per case:
# - process: one run of the release binary (`sapl-renderer render ...`), so it
#   includes process start-up, the PostgreSQL connection, the queries, layout and
#   writing the file (what a one-off CLI call costs); peak RSS comes from
#   `/usr/bin/time -v` on these runs;
# - worker: `render()` timed inside one warm process on one open connection
#   (`examples/render_bench.rs`), which is what the queue worker pays per job.
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust; SAPL_TEST_PG overrides
# the base URL), psql, poppler-utils (pdfinfo) and /usr/bin/time.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/loadtests/lib.sh"
SAPL="$REPO/../shared/sapl"
RUNS="${RUNS:-5}"
BASE="${SAPL_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
BASE="${BASE%/}"
DB="sapl_r4_bench_$$"
URL="$BASE/$DB"
OUT="$(mktemp -d /tmp/renderer-bench.XXXXXX)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

cleanup() {
    psql -q -X "$BASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT

echo "==> building the release binary"
cargo build --release -q -p sapl-renderer --bin sapl-renderer --example render_bench \
    --manifest-path "$REPO/Cargo.toml"
BIN="$CARGO_TARGET_DIR/release/sapl-renderer"
WARM="$CARGO_TARGET_DIR/release/examples/render_bench"
RUNS_WARM="${RUNS_WARM:-20}"

echo "==> scratch database $DB: schema, sample data, generated sizes"
psql -q -X "$BASE/postgres" -c "CREATE DATABASE $DB" >/dev/null
psql -q -X -v ON_ERROR_STOP=1 "$URL" -f "$SAPL/schema.sql" >/dev/null
(echo 'SET session_replication_role = replica;'; cat "$SAPL/sample-data.sql") |
    psql -q -X -v ON_ERROR_STOP=1 "$URL" >/dev/null

# Realistic sizes: matérias 2, 3 and 4 get 10, 320 and 650 tramitações; sessões 2
# and 3 are copies of sessão 1 (mesa, presenças, expediente) with 16 and 40 items,
# each a matéria with a 400-character ementa, two autores and five tramitações,
# half of them voted, one in four by name with eight votes, a quarter of them in
# the expediente; one protocolo 77/2025 for the label.
psql -q -X -v ON_ERROR_STOP=1 "$URL" >/dev/null <<'SQL'
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['materia_materialegislativa', 'materia_autoria', 'materia_tramitacao',
      'sessao_sessaoplenaria', 'sessao_sessaoplenariapresenca', 'sessao_presencaordemdia',
      'sessao_integrantemesa', 'sessao_expedientesessao', 'sessao_ordemdia',
      'sessao_expedientemateria', 'sessao_registrovotacao', 'sessao_votoparlamentar',
      'protocoloadm_protocolo'] LOOP
    EXECUTE format('SELECT setval(%L, GREATEST((SELECT max(id) FROM %I), 1))', t || '_id_seq', t);
  END LOOP;
END $$;

-- Copies the rows of `origem` matching `filtro` into `destino` (same columns), with
-- new ids and `mudancas` applied; returns the last new id.
CREATE FUNCTION pg_temp.copiar_de(destino text, origem text, filtro text, mudancas jsonb)
RETURNS int AS $$
DECLARE novo int;
BEGIN
  EXECUTE format('INSERT INTO %1$I SELECT (jsonb_populate_record(NULL::%1$I,
                    to_jsonb(x) || jsonb_build_object(''id'', nextval(%2$L)) || %3$L::jsonb)).*
                    FROM %4$I x WHERE %5$s ORDER BY x.id RETURNING id',
                 destino, destino || '_id_seq', mudancas, origem, filtro) INTO novo;
  RETURN novo;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION pg_temp.copiar(tabela text, filtro text, mudancas jsonb) RETURNS int AS $$
  SELECT pg_temp.copiar_de(tabela, tabela, filtro, mudancas)
$$ LANGUAGE sql;

INSERT INTO materia_tramitacao (materia_id, data_tramitacao, unidade_tramitacao_local_id,
       unidade_tramitacao_destino_id, status_id, turno, texto, urgente, timestamp, ip)
SELECT m, DATE '2019-01-01' + g, 1, 1, 1, CASE WHEN g % 7 = 0 THEN 'P' ELSE '' END,
       'Encaminhado', false, now(), ''
  FROM (VALUES (2, 10), (3, 320), (4, 650)) AS v(m, n), generate_series(1, n) g
 WHERE g <= n;

DO $$
DECLARE
  s int; n int; k int; nova_sessao int; materia int; item int; registro int; tabela text;
BEGIN
  FOR s, n IN SELECT * FROM (VALUES (2, 16), (3, 40)) v LOOP
    nova_sessao := pg_temp.copiar('sessao_sessaoplenaria', 'id = 1', jsonb_build_object('numero', 4 + s));
    PERFORM pg_temp.copiar(t, 'sessao_plenaria_id = 1', jsonb_build_object('sessao_plenaria_id', nova_sessao))
       FROM unnest(ARRAY['sessao_sessaoplenariapresenca', 'sessao_presencaordemdia',
                         'sessao_integrantemesa', 'sessao_expedientesessao']) t;
    FOR k IN 1..n LOOP
      materia := pg_temp.copiar('materia_materialegislativa', 'id = 1', jsonb_build_object(
          'numero', 1000 * s + k,
          'ementa', 'Dispõe sobre a política municipal de ' || k || ', ' ||
                    repeat('estabelece diretrizes para a participação da sociedade civil, ', 6)));
      PERFORM pg_temp.copiar('materia_autoria', 'materia_id = 1', jsonb_build_object('materia_id', materia));
      FOR registro IN 1..5 LOOP
        PERFORM pg_temp.copiar('materia_tramitacao', 'materia_id = 1', jsonb_build_object(
            'materia_id', materia, 'data_tramitacao', DATE '2025-01-01' + registro,
            'turno', CASE WHEN registro = 5 THEN 'P' ELSE '' END));
      END LOOP;
      tabela := CASE WHEN k <= n / 4 THEN 'sessao_expedientemateria' ELSE 'sessao_ordemdia' END;
      item := pg_temp.copiar_de(tabela, 'sessao_ordemdia', 'id = 1', jsonb_build_object(
          'sessao_plenaria_id', nova_sessao, 'materia_id', materia, 'numero_ordem', k,
          'tipo_votacao', CASE WHEN k % 4 = 0 THEN 2 ELSE 1 END));
      IF k % 2 = 0 THEN
        registro := pg_temp.copiar('sessao_registrovotacao', 'id = 2', jsonb_build_object(
            'materia_id', materia,
            'ordem_id', CASE WHEN tabela = 'sessao_ordemdia' THEN item END,
            'expediente_id', CASE WHEN tabela = 'sessao_expedientemateria' THEN item END));
        IF k % 4 = 0 THEN
          PERFORM pg_temp.copiar('sessao_votoparlamentar', 'votacao_id = 2', jsonb_build_object(
              'votacao_id', registro,
              'ordem_id', CASE WHEN tabela = 'sessao_ordemdia' THEN item END,
              'expediente_id', CASE WHEN tabela = 'sessao_expedientemateria' THEN item END));
        END IF;
      END IF;
    END LOOP;
  END LOOP;
END $$;

INSERT INTO protocoloadm_protocolo (numero, ano, timestamp, tipo_processo, interessado,
       assunto_ementa, observacao, anulado, user_anulacao, ip_anulacao, justificativa_anulacao,
       ip_data_hora_manual, user_data_hora_manual, timestamp_data_hora_manual, de_proposicao)
VALUES (77, 2025, now(), 1, 'Ana', 'x', '', false, '', '', '', '', '', now(), false);
UPDATE materia_materialegislativa SET numero_protocolo = 77 WHERE id = 1;
ANALYZE;
SQL
psql -X -t -A "$URL" -c "SELECT 'sessão ' || sessao_plenaria_id || ': ' || count(*) || ' items'
    FROM (SELECT sessao_plenaria_id FROM sessao_ordemdia UNION ALL
          SELECT sessao_plenaria_id FROM sessao_expedientemateria) x
    GROUP BY sessao_plenaria_id ORDER BY sessao_plenaria_id"

# The copied sessões got their ids from sequences; find them by número.
SESSAO16=$(psql -X -t -A "$URL" -c "SELECT id FROM sessao_sessaoplenaria WHERE numero = 6")
SESSAO40=$(psql -X -t -A "$URL" -c "SELECT id FROM sessao_sessaoplenaria WHERE numero = 7")

# name | kind | id | size | SAPL median (s) | SAPL row
CASES=(
    "materia-tramitacao|materia-tramitacao|2|10 tramitações|0.38|10 tramitações"
    "materia-tramitacao|materia-tramitacao|3|320 tramitações|4.99|320 tramitações"
    "materia-tramitacao|materia-tramitacao|4|650 tramitações|9.36|650 tramitações"
    "etiqueta-materia|etiqueta-materia|1|one matéria|0.66|any"
    "etiqueta-protocolo|etiqueta-protocolo|77/2025|one protocolo|0.039|one protocolo"
    "sessao-plenaria|sessao-plenaria|1|6 items (sample)|-|-"
    "sessao-plenaria|sessao-plenaria|$SESSAO16|16 items|2.05|16 items"
    "sessao-plenaria|sessao-plenaria|$SESSAO40|40 items|4.07|40 items"
)

run_once() { # kind id pdf -> prints "seconds rss_kb"
    local inicio fim
    inicio=$(date +%s%N)
    /usr/bin/time -v -o "$OUT/time.txt" "$BIN" render "$1" "$2" --anonymous \
        --database-url "$URL" -o "$3" 2>"$OUT/stderr.txt"
    fim=$(date +%s%N)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/time.txt")
    echo "$(( (fim - inicio) / 1000 )) $rss"
}

LINES=()
for case in "${CASES[@]}"; do
    IFS='|' read -r _ kind id size sapl sapl_row <<<"$case"
    pdf="$OUT/out.pdf"
    run_once "$kind" "$id" "$pdf" >/dev/null # warm-up
    : >"$OUT/samples.txt"
    for _ in $(seq "$RUNS"); do run_once "$kind" "$id" "$pdf" >>"$OUT/samples.txt"; done
    # "first F min A median M max B" over RUNS_WARM renders in one process.
    warm=$("$WARM" "$URL" "$kind" "$id" "$RUNS_WARM")
    pages=$(pdfinfo "$pdf" | awk '/^Pages:/ {print $2}')
    bytes=$(stat -c %s "$pdf")
    line=$(sort -n "$OUT/samples.txt" | awk -v kind="$kind" -v size="$size" -v sapl="$sapl" \
        -v sapl_row="$sapl_row" -v pages="$pages" -v bytes="$bytes" -v warm="$warm" '
        { t[NR] = $1 / 1e6; if ($2 > rss) rss = $2 }
        END {
            med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
            split(warm, w, " ")
            wmin = w[4]; wmed = w[6]; wmax = w[8]
            speed = (sapl == "-") ? "-" : sprintf("%.0f× / %.0f×", sapl / wmed, sapl / med)
            printf "| %s | %s | %.4f / %.4f / %.4f | %.3f / %.3f / %.3f | %s | %.1f KB | %.1f MB | %s | %s |\n",
                kind, size, wmin, wmed, wmax, t[1], med, t[NR], pages, bytes / 1024, rss / 1024, sapl, speed
        }')
    echo "$line"
    LINES+=("$line")
done

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
SECTION="$OUT/section.md"
{
    echo "<!-- renderer-bench:start -->"
    echo "## Native reports (issue 4)"
    echo
    echo "\`sapl-renderer\` release build. *Worker*: \`render()\` timed inside one warm process"
    echo "on an open connection ($RUNS_WARM renders after a cold one), what the queue worker"
    echo "pays per job. *Process*: one CLI run each (start-up, PostgreSQL connection, queries,"
    echo "layout, file written), $RUNS runs after a warm-up. Peak RSS is the largest"
    echo "\`/usr/bin/time -v\` \"Maximum resident set size\" of the process runs. SAPL's median"
    echo "is from \`../shared/sapl/baseline.md\` (warm Gunicorn worker, same machine kind, data"
    echo "of the same size); speed-up = SAPL median / worker median, then / process median."
    echo "Data: SAPL's sample data plus generated rows (see the script). Measured"
    echo "$(date -u +%Y-%m-%d) on $(nproc) cores ($CPU), PostgreSQL local; load average"
    echo "at the start $(cut -d' ' -f1-3 /proc/loadavg) (other builds share the machine, so"
    echo "expect noise)."
    echo
    echo "Command: \`loadtests/renderer-bench.sh\` (RUNS=$RUNS)"
    echo
    echo "| report | data size | worker min / median / max (s) | process min / median / max (s) | pages | PDF size | peak RSS | SAPL median (s) | speed-up (worker / process) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${LINES[@]}"
    echo "<!-- renderer-bench:end -->"
} >"$SECTION"

write_results_section renderer-bench "$SECTION"
