#!/usr/bin/env bash
# Runs every test of sapl-edge: formatting, lints, Rust unit tests, the debug build of the
# proxy, then the integration suite (tests/, pytest) against real Gunicorn, nginx and
# sapl-edge processes that the suite starts itself.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -k range        extra arguments go to pytest
#
# Every step runs even when an earlier one failed, so one run shows all that is broken;
# the exit status is non-zero when any step failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

failed=()
step() {
    local name="$1"
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    if "$@"; then
        printf '==> %s: ok\n' "$name"
    else
        printf '==> %s: FAILED (exit %s)\n' "$name" "$?"
        failed+=("$name")
    fi
}

# The Python venvs come from scripts/setup.sh; a new clone gets them on first run.
if [ ! -x .venv-test/bin/python ] || [ ! -x .venv-django/bin/gunicorn ]; then
    printf '==> Python venvs missing: running scripts/setup.sh\n'
    scripts/setup.sh || exit 1
fi

# PostgreSQL on 127.0.0.1:5432 is the machine's; start its cluster if it is down.
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432; then
        return 0
    fi
    printf '==> PostgreSQL not answering on 127.0.0.1:5432: starting the cluster\n'
    local version
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p 5432 && return 0
        sleep 0.5
    done
    printf '==> PostgreSQL still not answering on 127.0.0.1:5432\n' >&2
    return 1
}

step "cargo fmt" cargo fmt --all --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test" cargo test --workspace --no-fail-fast
step "cargo build" cargo build -p sapl-edge -p sapl-renderer

export SAPL_EDGE_BIN="${SAPL_EDGE_BIN:-$CARGO_TARGET_DIR/debug/sapl-edge}"
# The PDF-job suite and the demo test run the renderer's worker.
export SAPL_RENDERER_BIN="${SAPL_RENDERER_BIN:-$CARGO_TARGET_DIR/debug/sapl-renderer}"
step "postgresql" ensure_postgres
step "integration tests" .venv-test/bin/python -m pytest tests "$@"

printf '\n'
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'scripts/test.sh: FAILED steps: %s\n' "${failed[*]}"
    exit 1
fi
printf 'scripts/test.sh: all steps passed\n'
