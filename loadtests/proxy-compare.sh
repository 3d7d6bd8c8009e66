#!/usr/bin/env bash
# Compares sapl-edge (release build) with nginx in one run, on this machine, with wrk.
#
# Proxies, each started in front of the same upstreams:
#   nginx-sapl   testbed/nginx/sapl-mainline.conf.tmpl (SAPL's settings: worker_processes 1)
#   nginx-tuned  testbed/nginx/sapl-tuned.conf.tmpl (worker_processes auto, upstream keepalive)
#   sapl-edge    the equivalent TOML, `threads` = --edge-threads
#
# Upstreams, shared by all proxies:
#   a fast upstream: an extra nginx on a unix socket answering a tiny body and a 100 KB
#     JSON file, so that the proxy's own cost dominates (Gunicorn's 3 sync workers would
#     cap every proxy at the same rate);
#   Gunicorn with the test-bed Django app (3 sync workers, SAPL's flags) for one realistic
#     line: the tiny Django view /tiny/ (it touches no database).
#
# Scenarios: tiny proxied answer, 100 KB proxied answer, static file (30 KB CSS) without
# and with gzip, tiny Django view through Gunicorn. For each proxy and scenario it records
# req/s and p99 latency (wrk --latency) and CPU per request: utime+stime of the proxy's
# processes (master and workers, from /proc/<pid>/stat) over the run, divided by the
# requests wrk completed. Prints a markdown table (and writes it to --out).
#
# With --protection it measures instead what ingress protection costs: sapl-edge without
# and with a [protection] section, same upstreams, alternating for --rounds rounds. The
# protected edge runs every check on every request: real client IP from X-Forwarded-For
# (the peer is a trusted hop), the scanner-probe test, a User-Agent rules file, a networks
# file, the Redis blocklist (a private redis-server; prefix set loaded, per-client answer
# cached) and the `general` zone, set so high that it never refuses. Both edges get the
# same X-Forwarded-For and browser User-Agent.
#
# Usage:
#   loadtests/proxy-compare.sh                     # 30 s per line (the recorded run)
#   loadtests/proxy-compare.sh --duration 3s       # a quick check that it all works
#   loadtests/proxy-compare.sh --protection --rounds 3 --duration 20s
#   loadtests/proxy-compare.sh --write             # ... and replace its section of
#                                                  # loadtests/RESULTS.md (proxy-compare,
#                                                  # or protection-cost with --protection)
#   options: --duration D  --connections N  --wrk-threads N  --edge-threads N
#            --no-build (use the existing release binary)  --out FILE
#            --protection  --rounds N (protection mode: off/on pairs, default 3)  --write
#
# Everything runs on 127.0.0.1 and unix sockets in a temporary directory; all processes
# it starts are stopped on exit. Needs scripts/setup.sh to have run (venvs, nginx, wrk).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
COMMAND_LINE="loadtests/proxy-compare.sh${*:+ $*}"
source "$REPO/loadtests/lib.sh"

DURATION=30s
CONNECTIONS=32
WRK_THREADS=2
EDGE_THREADS="$(nproc)"
BUILD=1
OUT=""
PROTECTION=0
ROUNDS=3
WRITE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --protection) PROTECTION=1; shift ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --wrk-threads) WRK_THREADS="$2"; shift 2 ;;
        --edge-threads) EDGE_THREADS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --write) WRITE=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
EDGE_BIN="${SAPL_EDGE_RELEASE_BIN:-$CARGO_TARGET_DIR/release/sapl-edge}"
if [ "$BUILD" -eq 1 ]; then
    cargo build --release -p sapl-edge
fi
[ -x "$EDGE_BIN" ] || { echo "no release binary at $EDGE_BIN (drop --no-build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: run scripts/setup.sh" >&2; exit 1; }
[ -x .venv-django/bin/gunicorn ] || { echo ".venv-django missing: run scripts/setup.sh" >&2; exit 1; }

WORK="$(mktemp -d /tmp/sapl-proxy-compare.XXXXXX)"
PIDS=()
cleanup() {
    # Graceful shutdowns (sapl-edge's grace period, Gunicorn's workers) get a few seconds.
    stop_started 50
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_socket() {
    local path="$1" pid="$2"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        [ -S "$path" ] && return 0
        sleep 0.05
    done
    return 1
}

NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"

# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
mkdir -p "$WORK/static" "$WORK/media" "$WORK/errors" "$WORK/fast"
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
css = "".join(".materia-%d { color: #%06x; margin: %dpx; }\n" % (i, (i * 2654435761) % 0xFFFFFF, i % 17)
              for i in range(800))[:30 * 1024]
open(work + "/static/sapl.css", "w").write(css)
open(work + "/errors/500.html", "w").write("<h1>erro</h1>\n")
open(work + "/fast/blob100k.json", "w").write(json.dumps({"data": "x" * (100 * 1024 - 12)}))
open(work + "/fast/tiny.txt", "w").write("ok\n")
EOF

# ------------------------------------------------------------------------------------------
# Upstreams
# ------------------------------------------------------------------------------------------
FAST_SOCK="$WORK/fast.sock"
mkdir -p "$WORK/fast-nginx/temp"
cat > "$WORK/fast-nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/fast-nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/fast-nginx/temp/b;
    proxy_temp_path $WORK/fast-nginx/temp/p;
    fastcgi_temp_path $WORK/fast-nginx/temp/f;
    uwsgi_temp_path $WORK/fast-nginx/temp/u;
    scgi_temp_path $WORK/fast-nginx/temp/s;
    keepalive_requests 1000000;
    server {
        listen unix:$FAST_SOCK;
        location = /tiny { default_type text/plain; return 200 "ok\n"; }
        location = /blob100k { default_type application/json; alias $WORK/fast/blob100k.json; }
    }
}
EOF
start fast-nginx nginx -p "$WORK/fast-nginx" -c "$WORK/fast-nginx/nginx.conf" -e stderr \
    -g "daemon off; $NGINX_USER"
wait_socket "$FAST_SOCK" "$LAST_PID" || { cat "$WORK/fast-nginx.log"; exit 1; }

GUNICORN_SOCK="$WORK/gunicorn.sock"
(
    cd testbed/django_app
    SECRET_KEY=loadtest SAPL_DB_NAME=unused-by-tiny setsid "$REPO/.venv-django/bin/gunicorn" \
        --workers 3 --worker-class sync --timeout 300 --max-requests 100 \
        --bind "unix:$GUNICORN_SOCK" saplbed.wsgi:application \
        >"$WORK/gunicorn.log" 2>&1 < /dev/null &
    echo $! > "$WORK/gunicorn.pid"
)
PIDS+=("$(cat "$WORK/gunicorn.pid")")
wait_socket "$GUNICORN_SOCK" "$(cat "$WORK/gunicorn.pid")" || { cat "$WORK/gunicorn.log"; exit 1; }

# ------------------------------------------------------------------------------------------
# Proxies. Each gets two ports: one in front of the fast upstream, one in front of
# Gunicorn (nginx: two instances per flavour; sapl-edge: two processes), so routes and
# files are identical and only the upstream differs.
# ------------------------------------------------------------------------------------------
declare -A PORT PID_OF

start_nginx() {
    local name="$1" template="$2" upstream="$3"
    local dir="$WORK/$name" port
    port="$(free_port)"
    mkdir -p "$dir/temp"
    sed -e "s|@@PID_FILE@@|$dir/nginx.pid|" -e "s|@@TEMP_DIR@@|$dir/temp|" \
        -e "s|@@LISTEN@@|127.0.0.1:$port|" -e "s|@@UPSTREAM_SOCKET@@|$upstream|" \
        -e "s|@@STATIC_ROOT@@|$WORK/static|" -e "s|@@MEDIA_ROOT@@|$WORK/media|" \
        -e "s|@@ERROR_ROOT@@|$WORK/errors|" -e "s|@@READ_TIMEOUT@@|300s|" \
        -e "s|access_log /dev/stdout;|access_log off;|" \
        "testbed/nginx/$template" > "$dir/nginx.conf"
    start "$name" nginx -p "$dir" -c "$dir/nginx.conf" -e stderr -g "daemon off; $NGINX_USER"
    wait_port "$port" "$LAST_PID" || { cat "$WORK/$name.log"; exit 1; }
    PORT[$name]="$port"
    PID_OF[$name]="$(cat "$dir/nginx.pid")"
}

# start_edge NAME UPSTREAM_SOCKET [EXTRA_TOML]: EXTRA_TOML is appended to the file.
start_edge() {
    local name="$1" upstream="$2" extra="${3:-}"
    local dir="$WORK/$name" port metrics
    port="$(free_port)"
    metrics="$(free_port)"
    mkdir -p "$dir"
    cat > "$dir/sapl-edge.toml" <<EOF
[server]
threads = $EDGE_THREADS

[[listener]]
address = "127.0.0.1:$port"
proto = "http"

[upstream]
address = "unix:$upstream"
connect_timeout = "75s"
read_timeout = "300s"
error_page = "$WORK/errors/500.html"

[body]
max_size = "4GiB"
buffer_size = "16MiB"
${FORWARDING:-}

[metrics]
address = "127.0.0.1:$metrics"

[gzip]
level = 5
types = ["text/html", "text/css", "text/javascript", "application/javascript", "application/x-javascript", "text/xml", "application/xml", "application/rss+xml", "image/svg+xml", "image/x-icon", "image/png", "image/jpeg", "image/gif"]

[cors]
allow_origin = "*"

[[route]]
name = "static"
prefix = "/static/"
action = "files"
root = "$WORK/static"
cache_control = "public, max-age=5400"

[[route]]
name = "media"
prefix = "/media/"
action = "files"
root = "$WORK/media"

[[route]]
name = "default"
prefix = "/"
action = "upstream"

$extra
EOF
    # Access logs off for every proxy in this comparison: RUST_LOG=warn for the edge,
    # `access_log off` for nginx.
    start "$name" env RUST_LOG=warn "$EDGE_BIN" -c "$dir/sapl-edge.toml"
    wait_port "$port" "$LAST_PID" || { cat "$WORK/$name.log"; exit 1; }
    PORT[$name]="$port"
    PID_OF[$name]="$LAST_PID"
}

if [ "$PROTECTION" -eq 1 ]; then
    # The blocklist's Redis, with a few blocked prefixes and one blocked client.
    REDIS_PORT="$(free_port)"
    start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$WORK"
    wait_port "$REDIS_PORT" "$LAST_PID" || { cat "$WORK/redis.log"; exit 1; }
    redis-cli -p "$REDIS_PORT" -n 1 SADD rl:ip_prefix:blocked 45.8 103.124.225 192.0.2 >/dev/null
    redis-cli -p "$REDIS_PORT" -n 1 SET rl:ip:198.51.100.66:blocked 1 >/dev/null
    printf '%s\n' "# AI crawlers and scrapers" GPTBot ClaudeBot CCBot Bytespider Amazonbot \
        PerplexityBot meta-externalagent Applebot-Extended DataForSeoBot SemrushBot AhrefsBot \
        MJ12bot python-requests Go-http-client Scrapy HeadlessChrome 'Chrome/98\.0\.4758' \
        > "$WORK/bots-ua.txt"
    printf '%s\n' "# cloud ranges" 3.0.0.0/9 13.32.0.0/15 34.64.0.0/10 35.184.0.0/13 \
        52.0.0.0/10 104.196.0.0/14 2600:1f00::/24 > "$WORK/bots-networks.txt"
    # Both edges trust the same hops, so both read X-Forwarded-For the same way.
    FORWARDING='[forwarding]
trusted_hops = ["127.0.0.1/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]'
    PROTECTION_TOML="[protection]
user_agents_file = \"$WORK/bots-ua.txt\"
networks_file = \"$WORK/bots-networks.txt\"

[protection.zones.general]
rate = \"1000000r/s\"
burst = 1000000
nodelay = true

[protection.blocklist]
redis_url = \"redis://127.0.0.1:$REDIS_PORT/1\"
namespace = \"camara-loadtest\""
    start_edge edge-off "$FAST_SOCK"
    start_edge edge-on "$FAST_SOCK" "$PROTECTION_TOML"
    start_edge edge-off-gunicorn "$GUNICORN_SOCK"
    start_edge edge-on-gunicorn "$GUNICORN_SOCK" "$PROTECTION_TOML"
else
    start_nginx nginx-sapl sapl-mainline.conf.tmpl "$FAST_SOCK"
    start_nginx nginx-sapl-gunicorn sapl-mainline.conf.tmpl "$GUNICORN_SOCK"
    start_nginx nginx-tuned sapl-tuned.conf.tmpl "$FAST_SOCK"
    start_nginx nginx-tuned-gunicorn sapl-tuned.conf.tmpl "$GUNICORN_SOCK"
    start_edge sapl-edge "$FAST_SOCK"
    start_edge sapl-edge-gunicorn "$GUNICORN_SOCK"
fi

# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"

# cpu_ticks PID: utime+stime of PID and its direct children (nginx's workers).
cpu_ticks() {
    local root="$1" total=0 pid fields
    for pid in "$root" $(pgrep -P "$root" || true); do
        [ -r "/proc/$pid/stat" ] || continue
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        fields="$(sed 's/.*) //' "/proc/$pid/stat")"
        total=$(( total + $(echo "$fields" | awk '{print $12 + $13}') ))
    done
    echo "$total"
}

# to_ms VALUE: wrk's latency ("812.00us", "1.23ms", "2.01s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "%s", v }
    }'
}

ROWS=()
run_line() {
    local scenario="$1" proxy="$2" path="$3" connections="$4"
    shift 4
    local url="http://127.0.0.1:${PORT[$proxy]}$path" before after out requests rps p99 errors
    local check
    # The answer must be right before it is fast.
    check="$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")"
    if [ "$check" != 200 ]; then
        echo "!! $proxy $path answered $check; skipping" >&2
        ROWS+=("| $scenario | $proxy | failed ($check) | | | |")
        return
    fi
    wrk -t "$WRK_THREADS" -c "$connections" -d 1s "$@" "$url" >/dev/null 2>&1 || true
    before="$(cpu_ticks "${PID_OF[$proxy]}")"
    out="$(wrk -t "$WRK_THREADS" -c "$connections" -d "$DURATION" --latency "$@" "$url")"
    after="$(cpu_ticks "${PID_OF[$proxy]}")"
    echo "$out" > "$WORK/wrk-$proxy-${scenario// /_}.txt"

    requests="$(echo "$out" | awk '/requests in/ {print $1}')"
    rps="$(echo "$out" | awk '/^Requests\/sec:/ {printf "%.0f", $2}')"
    p99="$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
    errors="$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')"
    local cpu_us="n/a"
    if [ "${requests:-0}" -gt 0 ]; then
        cpu_us="$(awk -v t=$(( after - before )) -v hz="$CLK_TCK" -v n="$requests" \
            'BEGIN { printf "%.1f", t / hz / n * 1e6 }')"
    fi
    ROWS+=("| $scenario | $proxy | $rps | $p99 | $cpu_us | ${errors:-} |")
    printf '%-34s %-22s %8s req/s  p99 %8s ms  %6s us CPU/req %s\n' \
        "$scenario" "$proxy" "$rps" "$p99" "$cpu_us" "${errors:-}"
}

# status PORT PATH [CURL ARGS]: the status code (000: closed without an answer).
status() {
    local port="$1" path="$2"
    shift 2
    curl -s -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:$port$path" || true
}

# report SECTION COLUMN RUN_NOTE TITLE INTRO...: prints the table of ROWS (its second column
# named COLUMN, RUN_NOTE ending its "Run:" line), writes it to --out, and with --write puts
# it in RESULTS.md as SECTION under TITLE, after the INTRO lines and the command.
report() {
    local section="$1" column="$2" run_note="$3" title="$4"
    shift 4
    TABLE="$(
        echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t $WRK_THREADS -c $CONNECTIONS (Gunicorn lines: -c 8) -d $DURATION --latency; sapl-edge threads = $EDGE_THREADS; $run_note"
        echo
        echo "| scenario | $column | req/s | p99 (ms) | CPU per request (µs) | errors |"
        echo "|---|---|---:|---:|---:|---|"
        printf '%s\n' "${ROWS[@]}"
    )"
    echo
    echo "$TABLE"
    if [ -n "$OUT" ]; then
        echo "$TABLE" >"$OUT"
    fi
    [ "$WRITE" -eq 1 ] || return 0
    {
        echo "<!-- $section:start -->"
        echo "$title"
        echo
        printf '%s\n' "$@"
        echo
        echo "Command: \`$COMMAND_LINE\`"
        echo
        echo "$TABLE"
        echo "<!-- $section:end -->"
    } >"$WORK/section.md"
    write_results_section "$section" "$WORK/section.md"
}

if [ "$PROTECTION" -eq 1 ]; then
    CLIENT=(-H "X-Forwarded-For: 203.0.113.7"
            -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    # The protected edge must refuse what it should before it is measured (the prefix set
    # is read in the background shortly after start).
    for _ in $(seq 1 40); do
        blocked="$(status "${PORT[edge-on]}" /tiny -H "X-Forwarded-For: 192.0.2.9")"
        [ "$blocked" = 429 ] && break
        sleep 0.25
    done
    bot="$(status "${PORT[edge-on]}" /tiny -A "GPTBot/1.2")"
    probe="$(status "${PORT[edge-on]}" /x.php)"
    echo "protected edge: blocked prefix -> $blocked, bot UA -> $bot, probe -> $probe (000: closed)"
    if [ "$blocked" != 429 ] || [ "$bot" != 429 ] || [ "$probe" != 000 ]; then
        echo "the protected edge does not protect" >&2
        exit 1
    fi

    for round in $(seq 1 "$ROUNDS"); do
        for state in off on; do
            run_line "tiny proxied (fast upstream), round $round" "edge-$state" /tiny \
                "$CONNECTIONS" "${CLIENT[@]}"
        done
        for state in off on; do
            run_line "tiny Django view (Gunicorn), round $round" "edge-$state-gunicorn" /tiny/ 8 \
                "${CLIENT[@]}"
        done
    done
    metrics_at="$(grep -A1 '^\[metrics\]' "$WORK/edge-on/sapl-edge.toml" | grep -o '127.0.0.1:[0-9]*')"
    echo "protected edge (fast upstream), protection counters:"
    curl -s "http://$metrics_at/metrics" \
        | grep -E '^sapl_edge_protection_(refusals|blocklist_lookups|blocklist_fail_open)' || true

    report protection-cost edge "protection off/on alternating, $ROUNDS rounds" \
        "## What ingress protection costs (issue 6)" \
        "The same release sapl-edge twice in one run, alternating: without [protection] (off)" \
        "and with every check on every request (on): real client IP from X-Forwarded-For" \
        "through a trusted hop, the scanner-probe test, a User-Agent rules file, a networks" \
        "file, the Redis A blocklist (a private redis-server, prefix set loaded, answers" \
        "cached) and the general zone set too high to refuse. Target: under 5 % throughput" \
        "cost on the tiny proxied answer."
    exit 0
fi

GZIP=(-H "Accept-Encoding: gzip")
for flavour in nginx-sapl nginx-tuned sapl-edge; do
    run_line "tiny proxied (fast upstream)" "$flavour" /tiny "$CONNECTIONS"
    run_line "100 KB proxied (fast upstream)" "$flavour" /blob100k "$CONNECTIONS"
    run_line "static 30 KB CSS, no gzip" "$flavour" /static/sapl.css "$CONNECTIONS"
    run_line "static 30 KB CSS, gzip" "$flavour" /static/sapl.css "$CONNECTIONS" "${GZIP[@]}"
    # Gunicorn has 3 sync workers: more connections only queue.
    run_line "tiny Django view (Gunicorn)" "$flavour-gunicorn" /tiny/ 8
done

report proxy-compare proxy "$(nginx -v 2>&1)" \
    "## sapl-edge beside nginx (issue 2)" \
    "The same upstreams behind three proxies in one run: nginx with SAPL's settings" \
    "(nginx-sapl: \`worker_processes 1\`), nginx tuned for this machine (nginx-tuned:" \
    "\`worker_processes auto\`, upstream keepalive) and the release sapl-edge. The fast" \
    "upstream is an nginx on a unix socket (so that the proxy's own cost shows); the" \
    "Gunicorn line is the test-bed Django app with SAPL's 3 sync workers. CPU per request" \
    "is the proxy's own utime+stime (master and workers) over the run / requests done." \
    "wrk, the upstreams and the proxy share the 2 cores."
