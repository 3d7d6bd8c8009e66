"""Session fixtures of the integration suite: the real test bed, started once per run.

One pytest session starts, in a private temporary directory:
  - a scratch PostgreSQL database with SAPL's schema and sample data (dropped at the end),
  - Gunicorn serving testbed/django_app on a unix socket (3 sync workers, as SAPL),
  - nginx with testbed/nginx/sapl-mainline.conf.tmpl in front of that socket,
  - sapl-edge with the equivalent TOML in front of the same socket,
  - the static, media and error-page trees both proxies serve.

Tests take `proxy` (parametrized: each test runs through nginx and through sapl-edge),
or `nginx`/`edge` directly, plus `gunicorn` to see what reached Django. Tests that need a
proxy with different settings (short read timeout, reload) use the factories, which stop
what they started when the test ends.
"""
import os
import shutil
import subprocess

import pytest

import servers

# A marker that must never appear in a response: it lives just outside the served roots.
OUTSIDE_MARKER = b"SEGREDO-FORA-DA-RAIZ-7f3a"
ERROR_PAGE_MARKER = "Erro interno - sapl test bed 500.html"

MIL_BYTES = bytes((i * 7 + 3) % 256 for i in range(1000))
SESSAO_PDF = b"%PDF-1.4\n% ata da sess\xc3\xa3o, test bed\n" + b"0" * 2000 + b"\n%%EOF\n"
CSS = "".join(
    ".materia-%d { color: #%06x; margin: %dpx; font-family: 'DejaVu Sans', sans-serif; }\n"
    % (i, (i * 2654435761) % 0xFFFFFF, i % 17)
    for i in range(300)
).encode()


def pytest_report_header(config):
    peer = servers.django_peer()
    peer_text = {
        "django22": "Django 2.2 on Python 3.9 (as SAPL runs)",
        "django42": "Django 4.2 on Python 3.11 -- FALLBACK, Python 3.9 missing on this machine",
    }.get(peer, "unknown: run scripts/setup.sh")
    nginx = shutil.which("nginx") or "not found"
    return [
        "Django peer: %s" % peer_text,
        "sapl-edge binary: %s" % servers.edge_binary(),
        "nginx: %s" % nginx,
    ]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    # Unix socket paths are limited to ~107 bytes: keep the directory short.
    return str(tmp_path_factory.mktemp("bed"))


@pytest.fixture(scope="session")
def roots(workdir):
    """The static, media and error-page trees, with files the tests know byte for byte."""
    www = os.path.join(workdir, "www")
    static = os.path.join(www, "static")
    media = os.path.join(www, "media")
    errors = os.path.join(www, "errors")
    outside = os.path.join(workdir, "fora")
    for d in (static, media, errors, outside, os.path.join(static, "subdir"),
              os.path.join(media, "sapl", "private")):
        os.makedirs(d, exist_ok=True)

    files = {
        os.path.join(static, "mil.bin"): MIL_BYTES,
        os.path.join(static, "digitos.txt"): b"0123456789",
        os.path.join(static, "sapl.css"): CSS,
        os.path.join(static, "dados.json"): b'{"chave": "' + b"valor " * 500 + b'"}',
        os.path.join(static, "subdir", "dentro.txt"): b"inside a directory\n",
        os.path.join(media, "ata sess\u00e3o.pdf"): SESSAO_PDF,
        os.path.join(media, "sapl", "private", "doc.pdf"): b"%PDF-1.4 private\n",
        os.path.join(errors, "500.html"): (
            "<!DOCTYPE html><html><body><h1>%s</h1></body></html>\n" % ERROR_PAGE_MARKER
        ).encode(),
        # Just outside each root: what traversal attempts would reach.
        os.path.join(www, "segredo.txt"): OUTSIDE_MARKER + b" www\n",
        os.path.join(workdir, "segredo.txt"): OUTSIDE_MARKER + b" workdir\n",
        os.path.join(outside, "segredo.txt"): OUTSIDE_MARKER + b" symlink target\n",
    }
    for path, data in files.items():
        with open(path, "wb") as f:
            f.write(data)
    # A symlink inside media that leaves the root.
    link = os.path.join(media, "atalho-fora")
    if not os.path.lexists(link):
        os.symlink(outside, link)
    return {"static": static, "media": media, "errors": errors, "outside": outside}


@pytest.fixture(scope="session")
def sapl_db(workdir):
    name = servers.create_sapl_database(workdir)
    yield name
    servers.drop_database(name)


@pytest.fixture(scope="session")
def gunicorn(workdir, sapl_db):
    server = servers.Gunicorn(workdir, sapl_db).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nginx(workdir, gunicorn, roots):
    server = servers.Nginx(workdir, "nginx", gunicorn.socket, roots).start()
    server.kind = "nginx"
    yield server
    server.stop()


def _new_edge(workdir, name, gunicorn, roots, **overrides):
    listen, metrics = servers.free_port(), servers.free_port()
    upstream = overrides.pop("upstream_socket", gunicorn.socket)
    config = servers.edge_config(listen, metrics, upstream, roots, **overrides)
    server = servers.Edge(workdir, name, config, listen, metrics)
    server.kind = "edge"
    return server.start()


class _EdgeHolder:
    """Keeps the session's sapl-edge; restarts it if an earlier test crashed it, so one
    crash shows up as that test's failure rather than as every later test's."""

    def __init__(self, workdir, gunicorn, roots):
        self.args = (workdir, gunicorn, roots)
        self.server = None
        self.restarts = 0

    def get(self):
        if self.server is not None and not self.server.process.alive():
            self.restarts += 1
            self.server = None
        if self.server is None:
            workdir, gunicorn, roots = self.args
            self.server = _new_edge(workdir, "edge-%d" % self.restarts, gunicorn, roots)
        return self.server

    def stop(self):
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def _edge_holder(workdir, gunicorn, roots):
    holder = _EdgeHolder(workdir, gunicorn, roots)
    yield holder
    holder.stop()


@pytest.fixture
def edge(_edge_holder):
    return _edge_holder.get()


@pytest.fixture(params=["nginx", "edge"])
def proxy(request):
    """Each test using it runs twice: through nginx (SAPL today) and through sapl-edge."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def edge_factory(workdir, gunicorn, roots):
    """Starts extra sapl-edge instances with overridden settings, stopped after the test."""
    started = []

    def start(name, **overrides):
        # Overrides: upstream_socket, and any keyword of servers.edge_config.
        server = _new_edge(workdir, name, gunicorn, roots, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def nginx_factory(workdir, gunicorn, roots):
    """Starts extra nginx instances (mainline template) with other settings."""
    started = []

    def start(name, **kwargs):
        upstream = kwargs.pop("upstream_socket", gunicorn.socket)
        server = servers.Nginx(workdir, name, upstream, roots, **kwargs).start()
        server.kind = "nginx"
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(workdir):
    """A private redis-server on a free port, kept in memory only."""
    server = servers.Redis(workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_credentials():
    # The superuser of shared/sapl/sample-data.sql.
    return ("admin", "sapl-admin-123")


def pytest_sessionstart(session):
    # A missing PostgreSQL is the most common set-up failure: say so before any test.
    if shutil.which("pg_isready") and not servers.pg_ready():
        session.config.warn = None
        print("\n!!! PostgreSQL is not answering on %s:%s; database fixtures will fail."
              % (servers.PG_HOST, servers.PG_PORT))


@pytest.fixture(scope="session")
def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip()
