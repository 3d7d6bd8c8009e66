# Shell functions the load-test scripts share; sourced, not run.
#
#   stop_started TENTHS      TERM every process group in PIDS, wait up to TENTHS × 0.1 s for
#                            them to leave (graceful shutdowns), then KILL what is left
#   write_results_section NAME FILE
#                            put FILE (which starts with <!-- NAME:start --> and ends with
#                            <!-- NAME:end -->) in loadtests/RESULTS.md in place of the
#                            section of that name, or at the end when there is none yet;
#                            the other sections belong to other load tests and stay as
#                            they are
#   start NAME COMMAND...    run COMMAND in its own session (so stop_started ends its whole
#                            group), output in $WORK/NAME.log; sets LAST_PID, adds to PIDS
#   free_port                a free TCP port on 127.0.0.1
#   wait_port PORT PID [TENTHS]
#                            wait until 127.0.0.1:PORT accepts (up to TENTHS × 0.05 s,
#                            default 400); fails at once when PID exits

stop_started() {
    local tenths="$1" pid
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 "$tenths"); do
        local left=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && left=1
        done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}

write_results_section() {
    local name="$1" section="$2"
    local results
    results="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/RESULTS.md"
    if [ -f "$results" ] && grep -q "<!-- $name:start -->" "$results"; then
        awk -v section="$section" -v start="<!-- $name:start -->" -v end="<!-- $name:end -->" '
            $0 == start { while ((getline l < section) > 0) print l; skip = 1; next }
            $0 == end { skip = 0; next }
            !skip { print }' "$results" >"$results.new"
        mv "$results.new" "$results"
    else
        [ -f "$results" ] || printf '# Load test results\n' >"$results"
        { echo; cat "$section"; } >>"$results"
    fi
    echo "==> wrote the $name section of $results"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

wait_port() {
    local port="$1" pid="$2" tries="${3:-400}"
    for _ in $(seq 1 "$tries"); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

start() {
    local name="$1"
    shift
    setsid "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    # No job-control chatter ("Killed") when stop_started ends it.
    disown "$LAST_PID"
    PIDS+=("$LAST_PID")
}
