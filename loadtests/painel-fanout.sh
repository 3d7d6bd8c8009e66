#!/usr/bin/env bash
# Fan-out load test of the voting panel (issue 5): N WebSockets on one sessão, Django
# publishing with channels_redis `group_send` every 500 ms, sapl-edge and Daphne side by
# side, on this machine.
#
# For each size N (default 1000, 5000, 20000) and each server:
#   sapl-edge   release build, [painel] with auth = "public" (no Django login: the load
#               test measures the fan-out, not the session check), its own Redis A DB 2;
#   Daphne      testbed/painel/daphne_app.py in .venv-daphne (Channels consumers joining
#               the same group, sending the same frame), created here when missing from
#               testbed/requirements-daphne.txt;
# the load client (proxy/examples/painel_fanout.rs) opens N sockets on one sessão within
# --connect-timeout, then `peer.py publish-loop` (.venv-channels4, channels_redis 4.x
# core layer) publishes --messages messages {"seq", "sent_at"} every --interval, and the
# client measures each socket's delay (receive time minus sent_at).
#
# Recorded per line: sockets open and connect time; messages received, and those not
# received by --grace seconds after the last publish ("late or lost"); p50, p99
# and max delay; the server's RSS (VmRSS from /proc) before any socket and with N idle
# sockets, and the difference per socket; its open file descriptors per socket; its CPU
# (utime+stime from /proc/<pid>/stat) over the publishing window, in seconds and as a
# share of one core over messages × interval, and per message delivered; the client's own
# CPU while listening (it must not be the bottleneck). A fresh server process and a fresh sessão
# (group) per line, so no snapshot of an earlier line reaches the client. Daphne is not run
# at sizes above one where it failed: not every socket open within the budget, or not every
# message delivered by the end of the grace.
#
# Usage:
#   loadtests/painel-fanout.sh                   # the recorded sizes, 20 messages each
#   loadtests/painel-fanout.sh --write           # ... and replace the painel-fanout
#                                                # section of loadtests/RESULTS.md
#   loadtests/painel-fanout.sh --sizes 1000 --messages 5 --no-build   # a quick check
#   options: --sizes N,N,...  --messages K  --interval S  --connect-timeout S  --grace S
#            --edge-threads N  --no-daphne  --no-build  --out FILE  --write
#
# Everything listens on 127.0.0.1 (clients bind other 127.0.x.y source addresses, all
# loopback); every process it starts is stopped on exit; each line is bounded by the
# connect budget plus messages × interval plus a few seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source "$REPO/loadtests/lib.sh"
COMMAND_LINE="loadtests/painel-fanout.sh${*:+ $*}"

SIZES="1000,5000,20000"
MESSAGES=20
INTERVAL=0.5
CONNECT_TIMEOUT=90
GRACE=10
EDGE_THREADS=1
DAPHNE=1
BUILD=1
WRITE=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) SIZES="$2"; shift 2 ;;
        --messages) MESSAGES="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        --connect-timeout) CONNECT_TIMEOUT="$2"; shift 2 ;;
        --grace) GRACE="$2"; shift 2 ;;
        --edge-threads) EDGE_THREADS="$2"; shift 2 ;;
        --no-daphne) DAPHNE=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --write) WRITE=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
EDGE_BIN="${SAPL_EDGE_RELEASE_BIN:-$CARGO_TARGET_DIR/release/sapl-edge}"
CLIENT_BIN="$CARGO_TARGET_DIR/release/examples/painel_fanout"
if [ "$BUILD" -eq 1 ]; then
    cargo build --release -p sapl-edge --bin sapl-edge --example painel_fanout
fi
for bin in "$EDGE_BIN" "$CLIENT_BIN"; do
    [ -x "$bin" ] || { echo "no release binary at $bin (drop --no-build)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server missing: run scripts/setup.sh" >&2; exit 1; }
PUBLISHER=.venv-channels4/bin/python
[ -x "$PUBLISHER" ] || { echo ".venv-channels4 missing: run scripts/setup.sh" >&2; exit 1; }

# ------------------------------------------------------------------------------------------
# Daphne's venv: Python 3.11 (pyenv), testbed/requirements-daphne.txt; remade when the
# requirements or the interpreter change, as scripts/setup.sh does for the other venvs.
# ------------------------------------------------------------------------------------------
daphne_venv() {
    local python="${PY311:-/root/.pyenv/versions/3.11.7/bin/python}" stamp
    if [ ! -x "$python" ]; then
        python="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python 2>/dev/null \
            | sort -V | tail -n 1 || true)"
        [ -n "$python" ] || python="$(command -v python3.11 || true)"
    fi
    [ -n "$python" ] || { echo "Python 3.11 not found (pyenv or python3.11)" >&2; exit 1; }
    stamp="$("$python" -c 'import sys; print(sys.version.split()[0])') $(sha256sum testbed/requirements-daphne.txt | cut -c1-64)"
    if [ -x .venv-daphne/bin/daphne ] && [ "$(cat .venv-daphne/.sapl-stamp 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    echo "==> creating .venv-daphne from testbed/requirements-daphne.txt with $python"
    rm -rf .venv-daphne
    "$python" -m venv .venv-daphne
    .venv-daphne/bin/python -m pip install -q --disable-pip-version-check --no-input \
        -r testbed/requirements-daphne.txt
    printf '%s' "$stamp" > .venv-daphne/.sapl-stamp
}
[ "$DAPHNE" -eq 1 ] && daphne_venv

# Every socket is a file descriptor in the client and at least one in the server: take
# the whole hard limit (raising the hard limit itself needs CAP_SYS_RESOURCE).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT="$(ulimit -n)"

WORK="$(mktemp -d /tmp/sapl-painel-fanout.XXXXXX)"
PIDS=()
cleanup() {
    stop_started 50
    # KEEP_WORK=1 keeps the logs and configs for a look afterwards.
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# stop PID: ends one server between lines (SIGTERM, then SIGKILL after 5 s).
stop() {
    local pid="$1"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

REDIS_PORT="$(free_port)"
start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --protected-mode no --dir "$WORK"
wait_port "$REDIS_PORT" "$LAST_PID" || { cat "$WORK/redis.log"; exit 1; }
PREFIX="asgi-painel-fanout"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/2"
# What peer.py's publishing commands and the Daphne app read.
PAINEL_ENV=(SECRET_KEY=painel-fanout SAPL_DB_NAME=unused-by-publishing
            PAINEL_REDIS_URL="$REDIS_URL" PAINEL_PREFIX="$PREFIX" PAINEL_LAYER=core)

# ------------------------------------------------------------------------------------------
# Servers
# ------------------------------------------------------------------------------------------
# start_edge N: a sapl-edge for N sockets; sets PORT, SERVER_PID, METRICS_PORT.
start_edge() {
    local sockets="$1" dir="$WORK/edge-$RUN"
    PORT="$(free_port)"
    METRICS_PORT="$(free_port)"
    mkdir -p "$dir"
    cat > "$dir/sapl-edge.toml" <<EOF
[server]
threads = $EDGE_THREADS
pid_file = "$dir/edge.pid"
upgrade_sock = "$dir/upgrade.sock"
grace_period = "1s"
shutdown_timeout = "2s"

[[listener]]
address = "127.0.0.1:$PORT"

# No Gunicorn: public sockets need none, and the snapshot a new socket would ask Django
# for fails at once (the group has no message yet), so sockets start idle.
[upstream]
address = "unix:$dir/no-gunicorn.sock"

[metrics]
address = "127.0.0.1:$METRICS_PORT"

[[route]]
name = "painel-ws"
regex = "^/ws/painel/(?P<sessao_id>[0-9]+)/$"
action = "websocket"
zone = "off"

[[route]]
name = "default"
prefix = "/"
action = "upstream"

[painel]
redis_url = "$REDIS_URL"
prefix = "$PREFIX"
layer = "core"
auth = "public"
# All sockets come from a few loopback addresses: the caps must not be what is measured.
max_sockets = $(( sockets > 20000 ? sockets : 20000 ))
max_sockets_per_ip = $sockets
EOF
    start "edge-$RUN" env RUST_LOG=warn "$EDGE_BIN" -c "$dir/sapl-edge.toml"
    SERVER_PID="$LAST_PID"
    wait_port "$PORT" "$SERVER_PID" || { tail -n 20 "$WORK/edge-$RUN.log"; exit 1; }
}

# start_daphne: Daphne with the panel consumer; sets PORT, SERVER_PID.
start_daphne() {
    PORT="$(free_port)"
    METRICS_PORT=""
    # -v 0: no access log line per socket, as the edge runs with RUST_LOG=warn.
    start "daphne-$RUN" env "${PAINEL_ENV[@]}" PYTHONPATH="$REPO/testbed/painel" \
        "$REPO/.venv-daphne/bin/daphne" -b 127.0.0.1 -p "$PORT" -v 0 daphne_app:application
    SERVER_PID="$LAST_PID"
    wait_port "$PORT" "$SERVER_PID" || { tail -n 20 "$WORK/daphne-$RUN.log"; exit 1; }
}

# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" | wc -l; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# field KEY LINE: the value of KEY=value in the client's summary line.
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
metric() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" 'index($0, s) == 1 {print $NF; exit}'
}

ROWS=()
RUN=0
DAPHNE_FAILED_AT=""
run_line() {
    local sockets="$1" server="$2"
    RUN=$((RUN + 1))
    local sessao=$((100 + RUN)) group ready="$WORK/ready-$RUN" done_file="$WORK/done-$RUN"
    group="painel_$sessao"
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null

    # One descriptor per socket in either server, plus what each keeps for itself (the
    # edge caps its sockets at the limit minus 512 and answers 503 past that).
    if [ $(( sockets + 100 )) -gt "$FD_LIMIT" ]; then
        echo "!! $server with $sockets sockets needs more than the $FD_LIMIT open files" \
            "allowed here: expect it to stop short" >&2
    fi

    case "$server" in
        sapl-edge) start_edge "$sockets" ;;
        daphne) start_daphne ;;
    esac
    sleep 1
    local rss0 fd0
    rss0="$(rss_kb "$SERVER_PID")"
    fd0="$(fd_count "$SERVER_PID")"

    # A block of source addresses per line: TIME_WAIT left by the last line never collides.
    start "client-$RUN" "$CLIENT_BIN" --url "ws://127.0.0.1:$PORT/ws/painel/$sessao/" \
        --sockets "$sockets" --messages "$MESSAGES" --connect-timeout "$CONNECT_TIMEOUT" \
        --source-base "127.0.$RUN.1" --ready-file "$ready" --done-file "$done_file" \
        --grace "$GRACE" \
        --deadline "$(awk -v k="$MESSAGES" -v i="$INTERVAL" 'BEGIN {print k * i + 60}')"
    local client_pid="$LAST_PID"
    local limit=$(( ${CONNECT_TIMEOUT%.*} * 10 + 300 ))
    for _ in $(seq 1 "$limit"); do
        [ -f "$ready" ] && break
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -f "$ready" ]; then
        echo "!! $server/$sockets: the client ended before its connect report" >&2
        tail -n 5 "$WORK/client-$RUN.log" >&2
        ROWS+=("| $sockets | $server | client failed | | | | | | | | | | | | | |")
        stop "$client_pid"
        stop "$SERVER_PID"
        return
    fi
    local opened connected
    opened="$(cat "$ready")"
    connected="$(field connected "$opened")"
    connected="${connected%%/*}"
    echo "$server/$sockets: $opened"

    if [ "$server" = sapl-edge ] && [ "$connected" -gt 0 ]; then
        # The edge joins the group in Redis when the first socket arrives, in the background.
        for _ in $(seq 1 150); do
            [ "$(redis-cli -p "$REDIS_PORT" -n 2 ZCARD "$PREFIX:group:$group")" -gt 0 ] && break
            sleep 0.1
        done
    fi
    # Idle sockets: nothing has been published on this group.
    sleep 2
    local rss1 fd1 open_here=""
    rss1="$(rss_kb "$SERVER_PID")"
    fd1="$(fd_count "$SERVER_PID")"
    if [ -n "$METRICS_PORT" ]; then
        open_here="$(metric "$METRICS_PORT" 'sapl_edge_painel_sockets_open{route="painel-ws"}')"
        echo "  edge reports ${open_here:-?} sockets open"
    fi

    local cpu0 cpu1 t0 t1
    cpu0="$(cpu_ticks "$SERVER_PID")"
    t0="$(date +%s.%N)"
    if ! timeout 120 env "${PAINEL_ENV[@]}" "$PUBLISHER" testbed/painel/peer.py publish-loop \
        "$group" "$MESSAGES" "$INTERVAL" > "$WORK/publish-$RUN.log" 2>&1; then
        echo "!! $server/$sockets: publisher failed" >&2
        tail -n 5 "$WORK/publish-$RUN.log" >&2
    fi
    t1="$(date +%s.%N)"
    cpu1="$(cpu_ticks "$SERVER_PID" 2>/dev/null || echo "$cpu0")"
    touch "$done_file"
    for _ in $(seq 1 900); do
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    stop "$client_pid"
    local summary
    summary="$(grep '^connected=' "$WORK/client-$RUN.log" | tail -n 1 || true)"
    echo "  client: ${summary:-no summary}"
    echo "  publisher: $(tail -n 1 "$WORK/publish-$RUN.log") in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
    stop "$SERVER_PID"

    if [ -z "$summary" ]; then
        ROWS+=("| $sockets | $server | $connected | no client summary | | | | | | | | | | | | |")
        return
    fi
    local per_socket fds cpu_s cpu_pct cpu_msg client_s errors
    per_socket="$(awk -v a="$rss0" -v b="$rss1" -v n="$connected" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print "-" }')"
    fds="$(awk -v a="$fd0" -v b="$fd1" -v n="$connected" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print "-" }')"
    cpu_s="$(awk -v t=$(( cpu1 - cpu0 )) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
    cpu_pct="$(awk -v s="$cpu_s" -v k="$MESSAGES" -v i="$INTERVAL" \
        'BEGIN { printf "%.0f", s / (k * i) * 100 }')"
    # The client reports its own: it may have ended before the publisher did.
    client_s="$(field client_cpu_s "$summary")"
    cpu_msg="$(awk -v s="$cpu_s" -v r="$(field received "$summary")" \
        'BEGIN { split(r, n, "/"); if (n[1] > 0) printf "%.0f", s * 1e6 / n[1]; else print "-" }')"
    errors="$(printf '%s\n' "$summary" | sed -n 's/.* errors=//p')"
    local note=""
    [ "$errors" != none ] && note="$errors"
    [ "$(field closed "$summary")" != 0 ] && note="${note:+$note; }$(field closed "$summary") closed by the server"
    ROWS+=("| $sockets | $server | $(field connected "$summary") in $(field connect_s "$summary") s | $(field received "$summary") | $(field lost "$summary") | $(field p50_ms "$summary") | $(field p99_ms "$summary") | $(field max_ms "$summary") | $(awk -v a="$rss0" -v b="$rss1" 'BEGIN {printf "%.1f → %.1f", a / 1024, b / 1024}') | $per_socket | $fds | $cpu_s | $cpu_pct % | $cpu_msg | $client_s | ${note:-} |")
    if [ "$server" = daphne ] && { [ "$connected" -lt "$sockets" ] \
        || [ "$(field lost "$summary")" != 0 ]; }; then
        DAPHNE_FAILED_AT="$sockets"
    fi
}

for sockets in ${SIZES//,/ }; do
    run_line "$sockets" sapl-edge
    if [ "$DAPHNE" -eq 1 ]; then
        if [ -n "$DAPHNE_FAILED_AT" ]; then
            ROWS+=("| $sockets | daphne | not run: failed at $DAPHNE_FAILED_AT | | | | | | | | | | | | | |")
        else
            run_line "$sockets" daphne
        fi
    fi
done

DAPHNE_VERSION=""
if [ "$DAPHNE" -eq 1 ]; then
    DAPHNE_VERSION="$(.venv-daphne/bin/python -c 'import daphne, channels, channels_redis, sys; print("Daphne %s, channels %s, channels_redis %s, Python %s" % (daphne.__version__, channels.__version__, channels_redis.__version__, sys.version.split()[0]))')"
fi
TABLE="$(
    echo "| sockets | server | open (connect time) | messages received | late or lost | p50 (ms) | p99 (ms) | max (ms) | RSS before → with N idle (MiB) | RSS per idle socket (KiB) | fds per socket | CPU over window (s) | CPU (% of one core) | CPU per delivery (µs) | client CPU (s) | notes |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
)"
echo
echo "$TABLE"
[ -n "$OUT" ] && echo "$TABLE" > "$OUT"

[ "$WRITE" -eq 1 ] || exit 0
SECTION="$WORK/section.md"
{
    echo "<!-- painel-fanout:start -->"
    echo "## Panel fan-out (issue 5)"
    echo
    echo "Target: 20,000 sockets on one edge, p99 delivery < 100 ms, < 8 KB per idle socket."
    echo
    echo "One sessão, N WebSockets opened by \`proxy/examples/painel_fanout.rs\` (one Rust"
    echo "process per $(( FD_LIMIT - 64 )) sockets, the open-file limit), then Django's"
    echo "\`group_send\` (channels_redis 4.x core layer, \`testbed/painel/peer.py publish-loop\`)"
    echo "of $MESSAGES messages every ${INTERVAL} s; delay = receive time − \`sent_at\` of each"
    echo "message on each socket; *late or lost* = not received ${GRACE} s after the last publish."
    echo "sapl-edge: release build, \`threads = $EDGE_THREADS\` (a pod's setting), [painel]"
    echo "\`auth = \"public\"\`: no Django login, so no PostgreSQL session check per socket (it"
    echo "costs at connect, not per message). Daphne: \`testbed/painel/daphne_app.py\`, a Channels"
    echo "consumer per socket in the same group sending the same frame${DAPHNE_VERSION:+ ($DAPHNE_VERSION)};"
    echo "after a size where it failed (a socket not open within ${CONNECT_TIMEOUT} s, or a message"
    echo "late or lost) larger sizes are not run. RSS: VmRSS from /proc before any socket and with"
    echo "N idle sockets; per socket = difference / N sockets open. CPU: the server's"
    echo "utime+stime over the publishing window, as % of one core over messages × interval and"
    echo "per message delivered; the client's own CPU over the same window shows it is not the"
    echo "bottleneck. Client, server, Redis and publisher share the machine, and so do other"
    echo "sessions' builds (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)."
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "open-file limit $FD_LIMIT per process (the hard limit here; raising it needs"
    echo "CAP_SYS_RESOURCE, which this machine does not give): a server stops opening sockets"
    echo "when its fds per socket × N reach it (see the fds column)."
    echo
    echo "Command: \`$COMMAND_LINE\`"
    echo
    echo "$TABLE"
    echo "<!-- painel-fanout:end -->"
} > "$SECTION"

write_results_section painel-fanout "$SECTION"
