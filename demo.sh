#!/usr/bin/env bash
# The one-command demo of sapl-edge (see README.md): installs what is missing, builds the
# two binaries, then runs scripts/demo.py, which starts PostgreSQL (or uses $DATABASE_URL),
# Redis A and B, Gunicorn with the Django app, the renderer and the edge, shows the main
# flows and keeps them running until Ctrl-C. Set DEMO_EXIT=1 to stop right after the flows
# (the exit status then says whether they all worked); DEMO_PORT picks the edge's port.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"

scripts/setup.sh

# Without DATABASE_URL the demo runs a private PostgreSQL cluster: it needs the server
# binaries (initdb, pg_ctl), which the test suite does not.
if [ -z "${DATABASE_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "==> installing the PostgreSQL server (initdb, pg_ctl) for the demo's private cluster"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
echo "==> building sapl-edge and sapl-renderer (first build: about five minutes)"
cargo build -p sapl-edge -p sapl-renderer
export SAPL_EDGE_BIN="$CARGO_TARGET_DIR/debug/sapl-edge"
export SAPL_RENDERER_BIN="$CARGO_TARGET_DIR/debug/sapl-renderer"
exec .venv-test/bin/python scripts/demo.py
