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
