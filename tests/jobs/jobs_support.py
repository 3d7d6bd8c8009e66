"""Processes and helpers of the PDF-job suite (issue 3): Redis B, the renderer's worker,
sapl-edge with `[jobs]` and `pdf` routes. The fixtures using them are in conftest.py.

Redis B is a real redis-server started with deploy/redis-b.conf (the file production uses),
its port and directory overridden on the command line. The jobs get a scratch database of
their own (SAPL's schema and sample data), so tests that add rows do not disturb the rest
of the suite. Gunicorn and the static/media roots are the session's (tests/conftest.py).
"""
import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import requests

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
    """`sapl-renderer work` for one tenant.

    `extra` is flags and values (`"--concurrency", "1"`); a flag the suite already sets
    (`--visibility-timeout`, say) takes the value given in `extra` instead. Each start is a
    new process with its own log (`<name>-<run>.log`); `logs()` reads them all.
    """

    def __init__(self, workdir, name, redis_b, db_name, tenant, pdf_dir, extra=()):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.name = name
        self.metrics_port = servers.free_port()
        binary = renderer_binary()
        if not os.path.exists(binary):
            raise servers.ServerFailed(
                "sapl-renderer not found at %s: `cargo build -p sapl-renderer`" % binary)
        options = {
            "--tenant": tenant,
            "--pdf-dir": pdf_dir,
            "--broker-url": redis_b.url(0),
            "--result-backend": redis_b.url(1),
            "--database-url": dsn(db_name),
            "--visibility-timeout": "2s",
            "--retry-backoff": "200ms",
            "--sweep-interval": "1s",
            "--shutdown-grace": "5s",
            "--metrics-address": "127.0.0.1:%d" % self.metrics_port,
        }
        extra = list(extra)
        if len(extra) % 2:
            raise ValueError("worker flags come in pairs: %r" % extra)
        options.update(zip(extra[::2], extra[1::2]))
        self.options = options
        self.argv = [binary, "work"] + [x for pair in options.items() for x in pair]
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
        """This run's log."""
        try:
            with open(self.process.log_path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def logs(self):
        """Every run's log, oldest first, as text without terminal colours."""
        text = []
        for run in range(1, self.runs + 1):
            try:
                with open(os.path.join(self.workdir, "%s-%d.log" % (self.name, run)), "rb") as f:
                    text.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return ANSI.sub("", "".join(text))

    def log_lines(self, message, task_id=None):
        """The log lines (all runs) carrying `message`, and `task_id` when given."""
        return [line for line in self.logs().splitlines()
                if message in line and (task_id is None or "task_id=%s" % task_id in line)]

    @property
    def pid(self):
        return self.process.pid

    def worker_id(self):
        """The id this run announced (`<host>-<pid>-<random>`), as job records name it."""
        return WORKER_ID.findall(ANSI.sub("", self.log().decode("utf-8", "replace")))[-1]

    def alive(self):
        return self.process is not None and self.process.alive()

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.proc.wait(10)

    def terminate(self):
        """SIGTERM, as Kubernetes stops a pod; does not wait."""
        self.process.signal(signal.SIGTERM)

    def wait_exit(self, timeout=60.0):
        """Waits for the process to end; returns its exit status."""
        return self.process.proc.wait(timeout)

    def stop(self):
        if self.process is not None:
            self.process.stop(timeout=20)

    def metric(self, name, **labels):
        """A counter's value from the worker's /metrics (0 when absent)."""
        import requests
        text = requests.get("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).text
        return parse_metric(text, name, labels)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
WORKER_ID = re.compile(r"worker ready worker=(\S+)")


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


# ---------------------------------------------------------------------------------------
# What a user does: ask the edge, poll the status URL, read the PDF
# ---------------------------------------------------------------------------------------
def base(edge):
    return "http://127.0.0.1:%d" % edge.port


def post(edge, path, **kw):
    return requests.post(base(edge) + path, allow_redirects=False, timeout=30, **kw)


def get(edge, path, **kw):
    return requests.get(base(edge) + path, allow_redirects=False, timeout=30, **kw)


def wait_done(edge, task_id, timeout=90):
    """Polls the status URL until it redirects to the PDF; returns the redirect."""
    def done():
        r = get(edge, "/pdf/status/%s" % task_id)
        if r.status_code == 302:
            return r
        assert r.status_code == 200, r.text
        assert r.json()["state"] != "failed", r.text
        return None
    return wait_until(done, timeout=timeout, step=0.2, what="job %s done" % task_id)


def pdf_text(data):
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True,
                         check=True)
    return out.stdout.decode("utf-8")


def materia_numero_ano(db, pk):
    return psql(db, "SELECT numero || '/' || ano FROM materia_materialegislativa WHERE id = %d"
                % pk)


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




def materia_with_tramitacoes(db_name, count):
    """Adds a copy of matéria 1 with `count` tramitações and returns its pk.

    A long history is what makes a real render slow and large (10,000 tramitações take
    seconds and tens of megabytes in a debug build), so the fault tests can act while a
    job is in hand without any delay built into the worker.
    """
    return int(psql(db_name, """
        SELECT setval('materia_materialegislativa_id_seq',
                      GREATEST((SELECT max(id) FROM materia_materialegislativa), 1));
        SELECT setval('materia_tramitacao_id_seq',
                      GREATEST((SELECT max(id) FROM materia_tramitacao), 1));
        WITH novo AS (SELECT nextval('materia_materialegislativa_id_seq') AS id),
        materia AS (
          INSERT INTO materia_materialegislativa
          SELECT (jsonb_populate_record(NULL::materia_materialegislativa, to_jsonb(m) ||
                  jsonb_build_object('id', novo.id, 'numero', 100000 + novo.id))).*
            FROM materia_materialegislativa m, novo WHERE m.id = 1
          RETURNING id
        ), tramitacoes AS (
          INSERT INTO materia_tramitacao (materia_id, data_tramitacao,
                 unidade_tramitacao_local_id, unidade_tramitacao_destino_id, status_id, turno,
                 texto, urgente, timestamp, ip)
          SELECT materia.id, DATE '1990-01-01' + g, 1, 1, 1, '',
                 'Encaminhado para análise da comissão', false, now(), ''
            FROM materia, generate_series(1, %d) g
        )
        SELECT id FROM materia;
        """ % count).split()[-1])
