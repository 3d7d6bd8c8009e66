#!/usr/bin/env bash
# The one-command demo of sapl-edge (see README.md): installs what is missing, builds the
# two binaries, then runs scripts/demo.py, which starts PostgreSQL (or uses $DATABASE_URL),
# Redis A and B, Gunicorn with the Django app, the renderer and the edge, shows the main
# flows and keeps them running until Ctrl-C. Set DEMO_EXIT=1 to stop right after the flows.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"

scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
echo "==> building sapl-edge and sapl-renderer (first build: about five minutes)"
cargo build -p sapl-edge -p sapl-renderer
exec .venv-test/bin/python scripts/demo.py
