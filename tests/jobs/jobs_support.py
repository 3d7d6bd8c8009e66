"""Processes and helpers of the PDF-job suite (issue 3): Redis B, the renderer's worker,
sapl-edge with `[jobs]` and `pdf` routes. The fixtures using them are in conftest.py.

Redis B is a real redis-server started with deploy/redis-b.conf (the file production uses),
its port and directory overridden on the command line. The jobs get a scratch database of
their own (SAPL's schema and sample data), so tests that add rows do not disturb the rest
of the suite. Gunicorn and the static/media roots are the session's (tests/conftest.py).
"""
import os
import shutil
import signal
import subprocess
import time
import uuid

import servers
from rawhttp import wait_for_port

REDIS_B_CONF = os.path.join(servers.REPO, "deploy", "redis-b.conf")
TASK_NAME = "sapl_edge.render_pdf"
QUEUE = "sapl-pdf"


def renderer_binary():
    explicit = os.environ.get("SAPL_RENDERER_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(servers.REPO, "target")
    return os.path.join(target, "debug", "sapl-renderer")


def wait_until(predicate, timeout=60.0, step=0.1, what="condition"):
    """Polls `predicate` until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(step)


class RedisB:
    """redis-server with deploy/redis-b.conf; restartable on the same port and data."""

    def __init__(self, workdir, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = servers.free_port()
        self.name = name
        self.process = None
        self.starts = 0

    def url(self, db):
        return "redis://%s:%d/%d" % (self.host, self.port, db)

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, REDIS_B_CONF, "--port", str(self.port), "--bind", self.host,
                "--dir", self.dir]
        self.starts += 1
        self.process = servers.ManagedProcess(
            "%s-%d" % (self.name, self.starts), argv, self.dir).start()
        if not wait_for_port(self.host, self.port, servers.START_TIMEOUT, self.process.alive):
            raise self.process.failure("did not listen on %d" % self.port)
        # Loading the AOF happens after the port opens; wait until the data is in.
        wait_until(lambda: self._loaded(), what="redis loading")
        return self

    def _loaded(self):
        try:
            return self.client(0).info("persistence").get("loading") == 0
        except Exception:
            return False

    def stop(self):
        if self.process is not None:
            self.process.stop()

    def restart(self):
        self.stop()
        return self.start()

    def client(self, db):
        import redis
        return redis.Redis(host=self.host, port=self.port, db=db, decode_responses=True)


class Worker:
    """`sapl-renderer work` for one tenant."""

    def __init__(self, workdir, name, redis_b, db_name, tenant, pdf_dir, extra=()):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.name = name
        self.metrics_port = servers.free_port()
        binary = renderer_binary()
        if not os.path.exists(binary):
            raise servers.ServerFailed(
                "sapl-renderer not found at %s: `cargo build -p sapl-renderer`" % binary)
        self.argv = [
            binary, "work",
            "--tenant", tenant,
            "--pdf-dir", pdf_dir,
            "--broker-url", redis_b.url(0),
            "--result-backend", redis_b.url(1),
            "--database-url", dsn(db_name),
            "--visibility-timeout", "2s",
            "--retry-backoff", "200ms",
            "--sweep-interval", "1s",
            "--shutdown-grace", "5s",
            "--metrics-address", "127.0.0.1:%d" % self.metrics_port,
            *extra,
        ]
        self.env = dict(os.environ)
        self.env.setdefault("RUST_LOG", "info")
        self.runs = 0
        self.process = None

    def start(self):
        self.runs += 1
        self.process = servers.ManagedProcess(
            "%s-%d" % (self.name, self.runs), self.argv, self.workdir, env=self.env).start()
        wait_until(lambda: b"worker ready" in self.log() or not self.process.alive(),
                   timeout=servers.START_TIMEOUT, what="worker ready")
        if not self.process.alive():
            raise self.process.failure("exited during start-up")
        return self

    def log(self):
        try:
            with open(self.process.log_path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def alive(self):
        return self.process is not None and self.process.alive()

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.proc.wait(10)

    def stop(self):
        if self.process is not None:
            self.process.stop(timeout=20)

    def metric(self, name, **labels):
        """A counter's value from the worker's /metrics (0 when absent)."""
        import requests
        text = requests.get("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).text
        return parse_metric(text, name, labels)


def parse_metric(text, name, labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric != name:
            continue
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if got == want:
            return float(value)
    return 0.0


def dsn(db_name):
    return "host=%s port=%s user=%s dbname=%s" % (
        servers.PG_HOST, servers.PG_PORT, servers.PG_USER, db_name)


def psql(db_name, sql):
    env = dict(os.environ, PGHOST=servers.PG_HOST, PGPORT=servers.PG_PORT,
               PGUSER=servers.PG_USER)
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                          "-d", db_name, "-c", sql],
                         env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


PDF_ROUTES = [
    {"name": "pdf-status", "regex": r"^/pdf/status/(?P<task_id>[^/]+)$", "action": "pdf",
     "mode": "status"},
    {"name": "pdf-api", "regex": r"^/pdf/(?P<kind>[^/]+)/(?P<id>.+)$", "action": "pdf",
     "mode": "api"},
    {"name": "relatorio-materia", "regex": r"^/relatorios/(?P<id>[0-9]+)/materia-tramitacao$",
     "action": "pdf", "mode": "legacy", "kind": "materia-tramitacao"},
    {"name": "relatorio-etiqueta-materia",
     "regex": r"^/relatorios/(?P<id>[0-9]+)/etiqueta-materia-legislativa$",
     "action": "pdf", "mode": "legacy", "kind": "etiqueta-materia"},
    {"name": "relatorio-etiqueta-protocolo",
     "regex": r"^/relatorios/(?P<numero>[0-9]+)/(?P<ano>[0-9]+)/etiqueta-protocolo$",
     "action": "pdf", "mode": "legacy", "kind": "etiqueta-protocolo"},
    {"name": "relatorio-sessao", "regex": r"^/relatorios/(?P<id>[0-9]+)/sessao-plenaria-pdf$",
     "action": "pdf", "mode": "legacy", "kind": "sessao-plenaria"},
]


def jobs_edge_config(listen, metrics, gunicorn, roots, redis_b, db_name, tenant, **jobs):
    config = servers.edge_config(listen, metrics, gunicorn.socket, roots)
    section = {
        "broker_url": redis_b.url(0),
        "result_backend": redis_b.url(1),
        "database_url": dsn(db_name),
        "tenant": tenant,
        "pdf_dir": os.path.join(roots["media"], "pdf"),
        "pdf_url": "/media/pdf/",
        "wait_budget": "10s",
        "new_jobs_per_ip": 0,
    }
    section.update(jobs)
    config["jobs"] = section
    routes = config["route"]
    media = next(i for i, r in enumerate(routes) if r["name"] == "media")
    config["route"] = routes[:media + 1] + [dict(r) for r in PDF_ROUTES] + routes[media + 1:]
    return config


