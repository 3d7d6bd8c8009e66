#!/usr/bin/env bash
# Prepares a machine to build sapl-edge and run its test bed.
#
# Idempotent and non-interactive: CI runs it on every clean clone, a new developer runs it
# once. It installs the Debian packages the build and the tests use (only when something is
# missing), checks the Rust toolchain, and creates two pinned Python virtualenvs in the repo:
#
#   .venv-django  the Django peer served by Gunicorn (Python 3.9 + Django 2.2, as SAPL runs;
#                 Django 4.2 on Python 3.11 when no Python 3.9 exists, with a loud warning)
#   .venv-test    pytest and the HTTP client libraries of the integration suite (Python 3.11)
#
# Re-running it changes nothing unless a requirements file changed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { printf '==> %s\n' "$*"; }
warn() { printf '\n!!! %s\n\n' "$*" >&2; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (no sudo found)"
    fi
}

# ---------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------
# cmake: pingora-core builds zlib-ng. nginx-light: the parity peer. poppler-utils: pdftotext
# for PDF checks. wrk: load tests. redis-server: tests start their own instances.
# fonts-dejavu-core: the renderer embeds DejaVu Sans. postgresql-client: psql/createdb.
# chromium: the panel page test (tests/test_painel_browser.py) runs it headless through
# Playwright, which cannot download a browser of its own here.
PACKAGES=(cmake nginx-light poppler-utils wrk redis-server fonts-dejavu-core postgresql-client
    chromium)

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if package_installed "$pkg"; then
        continue
    fi
    # Any nginx flavour (nginx-core, nginx-full, ...) serves the parity tests; installing
    # nginx-light over another flavour would remove that one.
    if [ "$pkg" = nginx-light ] && command -v nginx >/dev/null 2>&1; then
        continue
    fi
    missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
    say "installing Debian packages: ${missing[*]}"

    # Packages like nginx and redis-server start a system service from their postinst; the
    # tests run their own instances on private ports, so keep the system ones from starting
    # (and from grabbing port 80). policy-rc.d is removed again only if we created it.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        created_policy=1
    fi
    cleanup_policy() {
        if [ "$created_policy" -eq 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
    }
    trap cleanup_policy EXIT

    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"

    cleanup_policy
    trap - EXIT
else
    say "Debian packages present: ${PACKAGES[*]}"
fi

# ---------------------------------------------------------------------------------------
# Rust toolchain
# ---------------------------------------------------------------------------------------
# Only checked: this machine cannot download a toolchain, so a missing piece must be reported
# rather than fetched.
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
say "$(cargo --version) / $(rustc --version)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"

# ---------------------------------------------------------------------------------------
# Python virtualenvs
# ---------------------------------------------------------------------------------------
PYENV_ROOT_DIR=""
if command -v pyenv >/dev/null 2>&1; then
    PYENV_ROOT_DIR="$(pyenv root)"
elif [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    PYENV_ROOT_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
fi

# find_python MINOR: the newest pyenv build of 3.MINOR, else python3.MINOR on PATH.
find_python() {
    local minor="$1" candidate=""
    if [ -n "$PYENV_ROOT_DIR" ]; then
        candidate="$(ls -d "$PYENV_ROOT_DIR"/versions/3."$minor".*/bin/python 2>/dev/null \
            | sort -V | tail -n 1 || true)"
    fi
    if [ -z "$candidate" ] && command -v "python3.$minor" >/dev/null 2>&1; then
        candidate="$(command -v "python3.$minor")"
    fi
    printf '%s' "$candidate"
}

# make_venv DIR PYTHON REQUIREMENTS: (re)creates DIR unless it already holds exactly these
# requirements on this interpreter (recorded in DIR/.sapl-stamp).
make_venv() {
    local dir="$1" python="$2" requirements="$3"
    local stamp
    stamp="$("$python" -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$requirements" | cut -c1-64)"

    if [ -x "$dir/bin/python" ] && [ -f "$dir/.sapl-stamp" ] \
        && [ "$(cat "$dir/.sapl-stamp")" = "$stamp" ]; then
        say "$dir up to date ($requirements)"
        return
    fi

    say "creating $dir from $requirements with $python"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        -r "$requirements"
    printf '%s' "$stamp" > "$dir/.sapl-stamp"
}

PY311="$(find_python 11)"
[ -n "$PY311" ] || die "Python 3.11 not found (pyenv versions, or python3.11 on PATH)"

PY39="$(find_python 9)"
if [ -n "$PY39" ]; then
    make_venv .venv-django "$PY39" testbed/requirements-django22.txt
    printf 'django22\n' > .venv-django/.sapl-peer
else
    warn "Python 3.9 NOT FOUND (looked in ${PYENV_ROOT_DIR:-<no pyenv>}/versions/3.9.* and for python3.9).
    SAPL runs Django 2.2 on Python 3.9; this machine cannot reproduce that.
    FALLING BACK to Django 4.2 on Python 3.11 for the Django peer (.venv-django).
    Install Python 3.9 with pyenv and re-run scripts/setup.sh to test against SAPL's versions."
    make_venv .venv-django "$PY311" testbed/requirements-django42.txt
    printf 'django42\n' > .venv-django/.sapl-peer
fi

make_venv .venv-test "$PY311" testbed/requirements-test.txt

say "Django peer: $(.venv-django/bin/python -c 'import django, sys; print("Django", django.get_version(), "on Python", sys.version.split()[0])')"
say "test venv:   $(.venv-test/bin/python -m pytest --version 2>&1 | head -n 1)"
say "setup done"

# ---------------------------------------------------------------------------------------
# Panel WebSocket peers (issue 5; owned by the painel work, kept to this block)
# ---------------------------------------------------------------------------------------
#   .venv-channels3  Django 2.2 + channels-redis 3.4.1 + Daphne 3 on Python 3.9 (SAPL's pins)
#   .venv-channels4  Django 4.2 + channels-redis 4.x on Python 3.11
# proxy/tests/painel.rs publishes through both; a missing Python 3.9 skips only the 3.4.1
# peer, loudly.
if [ -n "$PY39" ]; then
    make_venv .venv-channels3 "$PY39" testbed/requirements-channels3.txt
else
    warn "Python 3.9 NOT FOUND: .venv-channels3 (channels-redis 3.4.1) not created; the
    panel tests against SAPL's channels-redis pin will report themselves skipped."
fi
make_venv .venv-channels4 "$PY311" testbed/requirements-channels4.txt
say "panel peers ready"
