"""The one-command demo (issue 7): scripts/demo.py brings the whole pod up on this machine
and its three flows work — a legacy report link answered with a real PDF that Gunicorn
did not render, the PDF API (202, status, 302, file), and a panel WebSocket receiving
Django's group_send — then it stops everything it started.

The demo runs as a user runs it (`DEMO_EXIT=1 scripts/demo.py`), with the binaries already
built (SAPL_EDGE_BIN / SAPL_RENDERER_BIN or CARGO_TARGET_DIR, as the rest of the suite) and
with DATABASE_URL pointing at the suite's PostgreSQL, so the test needs no initdb; its
private-cluster path is what `./demo.sh` runs.
"""
import os
import subprocess
import sys

import pytest

import servers

DEMO = os.path.join(servers.REPO, "scripts", "demo.py")


def renderer_binary():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(servers.REPO, "target")
    return os.environ.get("SAPL_RENDERER_BIN") or os.path.join(target, "debug", "sapl-renderer")


def pdf_pages(path):
    info = subprocess.run(["pdfinfo", path], capture_output=True, text=True, check=True)
    return int(next(line.split()[1] for line in info.stdout.splitlines()
                    if line.startswith("Pages:")))


def pids_running_under(folder):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if folder in cmdline:
            found.append("%s %s" % (pid, cmdline))
    return found


def database_exists(name):
    out = subprocess.run(
        ["psql", "-X", "-At", "-h", servers.PG_HOST, "-p", servers.PG_PORT, "-U",
         servers.PG_USER, "-d", "postgres", "-c",
         "SELECT count(*) FROM pg_database WHERE datname = '%s'" % name],
        capture_output=True, text=True, check=True)
    return out.stdout.strip() == "1"


@pytest.mark.timeout(420)
def test_demo_shows_the_three_flows_and_stops_everything(tmp_path):
    if not servers.pg_ready():
        pytest.fail("PostgreSQL is not answering on %s:%s" % (servers.PG_HOST, servers.PG_PORT))
    for name, binary in (("sapl-edge", servers.edge_binary()),
                         ("sapl-renderer", renderer_binary())):
        assert os.path.exists(binary), "%s not built at %s: cargo build -p %s" % (
            name, binary, name)
    run = str(tmp_path / "demo")
    env = dict(os.environ)
    env.update(
        DEMO_EXIT="1",
        DEMO_RUN_DIR=run,
        DEMO_PORT=str(servers.free_port()),
        DATABASE_URL="postgresql://%s@%s:%s/postgres"
        % (servers.PG_USER, servers.PG_HOST, servers.PG_PORT),
        SAPL_EDGE_BIN=servers.edge_binary(),
        SAPL_RENDERER_BIN=renderer_binary(),
    )
    done = subprocess.run([sys.executable, DEMO], env=env, capture_output=True, text=True,
                          timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out

    lines = out.splitlines()
    for flow in ("legacy-pdf", "api", "painel"):
        assert "FLOW %s: ok" % flow in lines, out
    assert "DEMO RESULT: all flows succeeded" in lines, out

    # The legacy links: real PDFs from the renderer, none built by Django.
    assert "   -> Gunicorn rendered no PDF" in lines, out
    pdfs = os.path.join(run, "pdfs")
    saved = sorted(os.listdir(pdfs))
    assert any(name.endswith("-tramitacao.pdf") for name in saved), saved
    assert any(name.endswith("-etiqueta.pdf") for name in saved), saved
    assert any(name.startswith("sessao-") for name in saved), saved  # from the API flow
    for name in saved:
        path = os.path.join(pdfs, name)
        assert "saved %s" % path in out
        with open(path, "rb") as f:
            assert f.read(5) == b"%PDF-"
        assert pdf_pages(path) >= 1

    # The API steps were each shown.
    assert any(" -> 202 " in line and "task_id" in line for line in lines), out
    assert any(" -> 302 " in line and "Location: /media/pdf/" in line for line in lines), out
    # The panel socket got what Django published.
    assert any(line.startswith("   the socket received: {\"type\": \"data\"")
               and "Votação aberta (demo)" in line for line in lines), out

    # Everything it started is gone, and so is the database it created.
    assert "== stopping everything the demo started" in lines
    assert pids_running_under(run) == []
    database = next(line.split()[1] for line in lines
                    if line.startswith("   database ") and line.endswith(" loaded"))
    assert not database_exists(database)
