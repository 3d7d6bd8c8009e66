#!/usr/bin/env bash
# The PDF flood of issue 3: 2,000 of SAPL's legacy report links over 200 distinct matérias
# in 10 s through sapl-edge. Shows that Gunicorn receives none of them, that every client
# gets a valid PDF or the pt-BR wait page, and records the job API's enqueue latency and
# time-to-PDF (loadtests/jobs_flood.py does the measuring; this script brings up what it
# measures).
#
# Brought up here, all on 127.0.0.1 and unix sockets under a temporary directory:
#   - a scratch PostgreSQL database (SAPL's schema and sample data, plus generated matérias
#     with 3-6 tramitações each: the flooded ones and fresh ones for the API), dropped at
#     the end;
#   - Redis B: redis-server with deploy/redis-b.conf on a free port;
#   - Gunicorn with the test-bed Django app (3 sync workers, SAPL's flags), which counts
#     the legacy PDF requests it receives at /__hits__;
#   - one `sapl-renderer work` worker (release build);
#   - the release `sapl-edge` with the pdf routes and [jobs] of conf/sapl-edge.toml.
#
# Limits raised, because every request of the load test comes from 127.0.0.1 while the
# scenario is many readers: jobs.new_jobs_per_ip = 0 (conf: 30 a minute) and the general,
# media and heavy zones at 1000000r/s (conf: heavy 10r/m burst 20). Everything else is
# the pod's: edge threads = 1, wait_budget 10s, max_queue_depth 500, worker concurrency 2.
#
# Usage:
#   loadtests/jobs-flood.sh                 build the release binaries, run, print the
#                                           markdown section
#   loadtests/jobs-flood.sh --no-build --write
#                                           use the binaries already built; replace the
#                                           jobs-flood section of loadtests/RESULTS.md
#                                           (only a passing run is recorded)
#   options: --requests N (2000)  --materias N (200)  --duration S (10)
#            --api-jobs N (100)  --api-rate R (20 POSTs/s)  --seed N
#            --edge-threads N (1)  --worker-concurrency N (2)  --keep (leave the temp dir)
#            --wait-budget D (10s, jobs.wait_budget: shorter ones make wait pages)
#            --json FILE (every request's status, content type, outcome and latency)
#
# Exit status 0 only when Gunicorn received 0 PDF requests (after a control request the
# edge forwards has shown that its counter counts), every client got a PDF or the wait
# page, every PDF read back and every API job ended in its PDF. Every process started here
# is stopped on exit; each start-up waits at most 60 s, the measurement 15 min.
#
# Needs PostgreSQL at $PGHOST:$PGPORT (default 127.0.0.1:5432, user postgres, trust),
# redis-server, psql, poppler-utils and the venvs of scripts/setup.sh. CARGO_TARGET_DIR
# says where the release binaries are (default ./target); SAPL_EDGE_RELEASE_BIN /
# SAPL_RENDERER_RELEASE_BIN override each.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER_DIR="$PWD"
cd "$REPO"
source "$REPO/loadtests/lib.sh"
ARGS_GIVEN="$*"

REQUESTS=2000
MATERIAS=200
DURATION=10
API_JOBS=100
API_RATE=20
SEED=3
EDGE_THREADS=1
WORKER_CONCURRENCY=2
WAIT_BUDGET=10s
BUILD=1
WRITE=0
KEEP=0
JSON_OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift 2 ;;
        --materias) MATERIAS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --api-jobs) API_JOBS="$2"; shift 2 ;;
        --api-rate) API_RATE="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --edge-threads) EDGE_THREADS="$2"; shift 2 ;;
        --worker-concurrency) WORKER_CONCURRENCY="$2"; shift 2 ;;
        --wait-budget) WAIT_BUDGET="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --write) WRITE=1; shift ;;
        --keep) KEEP=1; shift ;;
        --json) JSON_OUT="$(cd "$CALLER_DIR" && realpath -m "$2")"; shift 2 ;;
        -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
EDGE_BIN="${SAPL_EDGE_RELEASE_BIN:-$CARGO_TARGET_DIR/release/sapl-edge}"
RENDERER_BIN="${SAPL_RENDERER_RELEASE_BIN:-$CARGO_TARGET_DIR/release/sapl-renderer}"
if [ "$BUILD" -eq 1 ]; then
    cargo build --release -p sapl-edge -p sapl-renderer
fi
for bin in "$EDGE_BIN" "$RENDERER_BIN"; do
    [ -x "$bin" ] || { echo "no release binary at $bin (drop --no-build)" >&2; exit 1; }
done
PYTHON="$REPO/.venv-test/bin/python"
[ -x "$PYTHON" ] || { echo ".venv-test missing: run scripts/setup.sh" >&2; exit 1; }
[ -x "$REPO/.venv-django/bin/gunicorn" ] ||
    { echo ".venv-django missing: run scripts/setup.sh" >&2; exit 1; }
for tool in redis-server redis-cli psql createdb dropdb pdfinfo pdftotext curl; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
SAPL="${SAPL_SHARED_DIR:-$REPO/../shared/sapl}"
DB="sapl_jobs_flood_$$"
DB_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$DB"
TENANT="cm-flood"
RESULTS="$REPO/loadtests/RESULTS.md"
# Taken before anything starts: the machine's own load, not ours.
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

WORK="$(mktemp -d /tmp/sapl-jobs-flood.XXXXXX)"
PIDS=()
DB_CREATED=0
cleanup() {
    local status=$?
    # The edge's grace period and the worker's shutdown grace are 5 s.
    stop_started 100
    if [ "$status" -ne 0 ]; then
        local log
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            echo "--- last lines of $log" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if [ "$DB_CREATED" -eq 1 ]; then
        dropdb --if-exists --force "$DB" >/dev/null 2>&1 || true
    fi
    if [ "$KEEP" -eq 1 ]; then
        echo "==> kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for WHAT PID SECONDS TEST...: polls TEST until it succeeds, PID dies or time runs out.
wait_for() {
    local what="$1" pid="$2" seconds="$3"
    shift 3
    local deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$what exited during start-up" >&2
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "$what not ready after ${seconds}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------
GENERATED=$(( MATERIAS + API_JOBS ))
echo "==> scratch database $DB: schema, sample data, $GENERATED generated matérias"
createdb "$DB"
DB_CREATED=1
psql -q -X -v ON_ERROR_STOP=1 -d "$DB" -f "$SAPL/schema.sql" >/dev/null
# Two of SAPL's tables reference each other: the sample rows go in with triggers off.
(echo 'SET session_replication_role = replica;'; cat "$SAPL/sample-data.sql") |
    psql -q -X -v ON_ERROR_STOP=1 -d "$DB" >/dev/null

# Each generated matéria is a projeto de lei of 2024 (tipo 1, as the sample's matéria 1)
# with one autor and 3 to 6 tramitações between the sample's units; `indexacao` marks them
# so they can be listed back. The sample data leaves the id sequences past its rows.
psql -q -X -v ON_ERROR_STOP=1 -v n="$GENERATED" -d "$DB" >/dev/null <<'SQL'
INSERT INTO materia_materialegislativa (numero, ano, numero_protocolo, data_apresentacao,
       tipo_apresentacao, numero_origem_externa, apelido, em_tramitacao, polemica, objeto,
       complementar, ementa, indexacao, observacao, resultado, regime_tramitacao_id,
       tipo_id, data_ultima_atualizacao, ip)
SELECT 5000 + g, 2024, NULL, DATE '2024-02-01' + (g % 280), '', '', '', true, false, '',
       false, 'Dispõe sobre o programa municipal número ' || g ||
       ' de conservação de praças, calçadas e áreas verdes nos bairros.',
       'jobs-flood', '', '', 1, 1, now(), ''
  FROM generate_series(1, :n) g;

INSERT INTO materia_autoria (primeiro_autor, autor_id, materia_id)
SELECT true, 1 + (m.numero % 9), m.id
  FROM materia_materialegislativa m WHERE m.indexacao = 'jobs-flood';

INSERT INTO materia_tramitacao (data_tramitacao, urgente, turno, texto, materia_id,
       status_id, unidade_tramitacao_destino_id, unidade_tramitacao_local_id, timestamp, ip)
SELECT m.data_apresentacao + 7 * k, false, CASE WHEN k = 1 THEN 'P' ELSE '' END,
       'Encaminhado à comissão (' || k || ').', m.id, 1, 1, 1, now(), ''
  FROM materia_materialegislativa m, generate_series(1, 6) k
 WHERE m.indexacao = 'jobs-flood' AND k <= 3 + (m.numero % 4);
ANALYZE;
SQL
psql -X -t -A -F $'\t' -d "$DB" -c "SELECT id, numero || '/' || ano
    FROM materia_materialegislativa WHERE indexacao = 'jobs-flood' ORDER BY id" >"$WORK/pks.tsv"
psql -X -t -A -d "$DB" -c "SELECT count(DISTINCT materia_id) || ' matérias with ' ||
    min(n) || '-' || max(n) || ' tramitações' FROM (SELECT materia_id, count(*) n
    FROM materia_tramitacao t JOIN materia_materialegislativa m ON m.id = t.materia_id
    WHERE m.indexacao = 'jobs-flood' GROUP BY materia_id) x"

# ------------------------------------------------------------------------------------------
# Redis B, Gunicorn, the worker, the edge
# ------------------------------------------------------------------------------------------
REDIS_PORT="$(free_port)"
mkdir -p "$WORK/redis-b"
echo "==> Redis B (deploy/redis-b.conf) on 127.0.0.1:$REDIS_PORT"
start redis-b redis-server "$REPO/deploy/redis-b.conf" --bind 127.0.0.1 --port "$REDIS_PORT" \
    --dir "$WORK/redis-b"
redis_loaded() {
    redis-cli -p "$REDIS_PORT" info persistence | grep -q '^loading:0'
}
wait_for "Redis B" "$LAST_PID" 30 redis_loaded

GUNICORN_SOCK="$WORK/gunicorn.sock"
echo "==> Gunicorn (test-bed Django app, 3 sync workers) on $GUNICORN_SOCK"
start gunicorn env -u PYTHONPATH SECRET_KEY=jobs-flood SAPL_DB_NAME="$DB" SAPL_DB_HOST="$PGHOST" \
    SAPL_DB_PORT="$PGPORT" SAPL_DB_USER="$PGUSER" SAPL_TESTBED_HITS="$WORK/django-hits.jsonl" \
    DJANGO_SETTINGS_MODULE=saplbed.settings PYTHONDONTWRITEBYTECODE=1 \
    "$REPO/.venv-django/bin/gunicorn" --workers 3 --worker-class sync --timeout 300 \
    --max-requests 100 --bind "unix:$GUNICORN_SOCK" --chdir "$REPO/testbed/django_app" \
    saplbed.wsgi:application
hits_answer() {
    curl -sf --unix-socket "$GUNICORN_SOCK" http://localhost/__hits__
}
wait_for "Gunicorn" "$LAST_PID" 60 hits_answer

mkdir -p "$WORK/media/pdf"
WORKER_METRICS="127.0.0.1:$(free_port)"
echo "==> sapl-renderer work (tenant $TENANT, concurrency $WORKER_CONCURRENCY)"
start sapl-renderer env RUST_LOG=info "$RENDERER_BIN" work \
    --tenant "$TENANT" \
    --broker-url "redis://127.0.0.1:$REDIS_PORT/0" \
    --result-backend "redis://127.0.0.1:$REDIS_PORT/1" \
    --database-url "$DB_URL" \
    --pdf-dir "$WORK/media/pdf" \
    --media-root "$WORK/media" \
    --concurrency "$WORKER_CONCURRENCY" \
    --shutdown-grace 5s \
    --metrics-address "$WORKER_METRICS"
worker_ready() { grep -q 'worker ready' "$WORK/sapl-renderer.log"; }
wait_for "sapl-renderer" "$LAST_PID" 60 worker_ready

EDGE_PORT="$(free_port)"
EDGE_METRICS="127.0.0.1:$(free_port)"
# conf/sapl-edge.toml's server, upstream, media, pdf and relatorios routes and [jobs], with
# this run's addresses; no panel or blocklist (they need Redis A and play no part here).
cat >"$WORK/sapl-edge.toml" <<EOF
[server]
threads = $EDGE_THREADS
pid_file = "$WORK/sapl-edge.pid"
upgrade_sock = "$WORK/sapl-edge-upgrade.sock"
grace_period = "5s"
shutdown_timeout = "30s"

[[listener]]
address = "127.0.0.1:$EDGE_PORT"
proto = "http"

[upstream]
address = "unix:$GUNICORN_SOCK"
connect_timeout = "75s"
read_timeout = "300s"
write_timeout = "300s"

[body]
max_size = "4GiB"
buffer_size = "1MiB"
spool_dir = "$WORK"

[metrics]
address = "$EDGE_METRICS"

[[route]]
name = "media"
prefix = "/media/"
action = "files"
root = "$WORK/media"
zone = "media"

[[route]]
name = "pdf-status"
regex = "^/pdf/status/(?P<task_id>[^/]+)\$"
action = "pdf"
mode = "status"

[[route]]
name = "pdf-api"
regex = "^/pdf/(?P<kind>[^/]+)/(?P<id>.+)\$"
action = "pdf"
mode = "api"
zone = "heavy"

[[route]]
name = "relatorio-materia-tramitacao"
regex = "^/relatorios/(?P<id>[0-9]+)/materia-tramitacao\$"
action = "pdf"
mode = "legacy"
kind = "materia-tramitacao"
zone = "heavy"
read_timeout = "180s"

[[route]]
name = "relatorios"
prefix = "/relatorios/"
action = "upstream"
read_timeout = "180s"
zone = "heavy"

[[route]]
name = "default"
prefix = "/"
action = "upstream"

[jobs]
pdf_dir = "$WORK/media/pdf"
pdf_url = "/media/pdf/"
broker_url = "redis://127.0.0.1:$REDIS_PORT/0"
result_backend = "redis://127.0.0.1:$REDIS_PORT/1"
database_url = "$DB_URL"
tenant = "$TENANT"
wait_budget = "$WAIT_BUDGET"
max_queue_depth = 500
# Raised for the load test (conf: 30): all its clients share 127.0.0.1.
new_jobs_per_ip = 0

# The pod's zones, raised for the load test for the same reason (conf: heavy 10r/m burst 20).
[protection]
default_zone = "general"

[protection.zones.general]
rate = "1000000r/s"
burst = 1000000
nodelay = true

[protection.zones.media]
rate = "1000000r/s"
burst = 1000000
nodelay = true

[protection.zones.heavy]
rate = "1000000r/s"
burst = 1000000
nodelay = true
EOF
"$EDGE_BIN" --test -c "$WORK/sapl-edge.toml" >"$WORK/edge-test.log" 2>&1 ||
    { cat "$WORK/edge-test.log" >&2; exit 1; }
echo "==> sapl-edge (release, threads $EDGE_THREADS) on 127.0.0.1:$EDGE_PORT"
start sapl-edge env RUST_LOG=info "$EDGE_BIN" -c "$WORK/sapl-edge.toml"
wait_for "sapl-edge" "$LAST_PID" 30 port_open "$EDGE_PORT"

# ------------------------------------------------------------------------------------------
# The measurement
# ------------------------------------------------------------------------------------------
COMMAND="loadtests/jobs-flood.sh${ARGS_GIVEN:+ $ARGS_GIVEN}"
NOTE="Edge \`threads = $EDGE_THREADS\`, worker \`--concurrency $WORKER_CONCURRENCY\`,"
NOTE="$NOTE \`wait_budget = \"$WAIT_BUDGET\"\`, \`max_queue_depth = 500\`. Raised because every"
NOTE="$NOTE request comes from 127.0.0.1: \`new_jobs_per_ip = 0\` (conf: 30/min) and the"
NOTE="$NOTE general, media and heavy zones at 1000000r/s (conf: heavy 10r/m burst 20)."
NOTE="$NOTE Before the flood one link outside both sets (the sample's matéria 1) opens the"
NOTE="$NOTE edge's lazy Redis B and PostgreSQL links, as in a pod already serving."
set +e
timeout -k 10 900 "$PYTHON" "$REPO/loadtests/jobs_flood.py" \
    --port "$EDGE_PORT" --edge-metrics "$EDGE_METRICS" --worker-metrics "$WORKER_METRICS" \
    --gunicorn-socket "$GUNICORN_SOCK" --pks "$WORK/pks.tsv" --workdir "$WORK" \
    --materias "$MATERIAS" --requests "$REQUESTS" --duration "$DURATION" \
    --api-jobs "$API_JOBS" --api-rate "$API_RATE" --seed "$SEED" --generated "$GENERATED" \
    --warmup-pk 1 --loadavg "$LOADAVG" --command "$COMMAND" --setup-note "$NOTE" \
    --out-md "$WORK/section.md" --out-json "$WORK/result.json"
MEASURED=$?
set -e
[ -f "$WORK/section.md" ] || { echo "the load generator wrote no results" >&2; exit 1; }
echo
cat "$WORK/section.md"
if [ -n "$JSON_OUT" ]; then
    cp "$WORK/result.json" "$JSON_OUT"
fi

if [ "$WRITE" -eq 1 ] && [ "$MEASURED" -eq 0 ]; then
    write_results_section jobs-flood "$WORK/section.md"
elif [ "$WRITE" -eq 1 ]; then
    echo "==> the run failed: $RESULTS left as it was" >&2
fi
exit "$MEASURED"
