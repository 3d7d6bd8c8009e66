"""The one-command demo: the whole of sapl-edge on this machine, on SAPL's sample chamber.

Started by ./demo.sh (which installs what is missing and builds the binaries). Everything
runs under .run/demo/ ($DEMO_RUN_DIR), laid anew on each run:

  - PostgreSQL: $DATABASE_URL when set (a new database is created there and dropped at
    the end), else a private cluster (initdb + pg_ctl), loaded with SAPL's schema and
    sample data;
  - Redis A (allkeys-lru, no persistence) and Redis B (deploy/redis-b.conf: noeviction,
    AOF) as local redis-server processes;
  - Gunicorn with the test-bed Django app on a unix socket;
  - sapl-renderer (the PDF worker) for the demo chamber's queue;
  - sapl-edge, configured from conf/sapl-edge.toml with paths and addresses rewritten.

Then it drives the main job through the edge and prints what happened: a legacy report
link answered with a real PDF (Gunicorn renders none), the PDF API (202, status, 302,
file), and a panel WebSocket receiving a `group_send` published from Django with
channels_redis. Then everything keeps running until Ctrl-C, which stops all it started.

Environment: DEMO_PORT (the edge's port; default 8080, or a free one when 8080 is taken),
DEMO_RUN_DIR, DEMO_EXIT=1 (stop right after the flows; the exit status says whether they
all worked), DATABASE_URL, SAPL_EDGE_BIN / SAPL_RENDERER_BIN or CARGO_TARGET_DIR.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import tomllib
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

RUN = os.path.abspath(os.environ.get("DEMO_RUN_DIR") or os.path.join(REPO, ".run", "demo"))
# The processes started by the running demo ("pid starttime name" lines), so that a demo
# that was killed outright is cleaned up by the next one.
PROCESSES = os.path.join(RUN, "demo-processes.txt")
OWNER = os.path.join(RUN, "demo.pid")
# Where the private cluster goes when the postgres user cannot reach RUN (see pg_base).
PG_FALLBACK = "/tmp/sapl-edge-demo-pg-" + hashlib.sha1(RUN.encode()).hexdigest()[:10]

TENANT = "cm-demo"  # POD_NAMESPACE of the demo chamber: keys, queue and channels prefix
SECRET_KEY = "demo-secret-key-only-for-this-machine"  # Django's and the edge's
ADMIN = ("admin", "sapl-admin-123")  # the superuser of shared/sapl/sample-data.sql
CHANNELS_VENVS = (".venv-channels4", ".venv-channels3")


def say(text=""):
    print(text, flush=True)


def step(title):
    say()
    say("== " + title)


def exit_requested():
    return os.environ.get("DEMO_EXIT", "") not in ("", "0", "no", "false")


# --------------------------------------------------------------------------------------
# Leftovers of an earlier run
# --------------------------------------------------------------------------------------
def start_time(pid):
    """The kernel's start time of `pid` (to tell a reused pid apart), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(name, pid):
    with open(PROCESSES, "a") as f:
        f.write("%d %s %s\n" % (pid, start_time(pid), name))


def recorded():
    try:
        with open(PROCESSES) as f:
            lines = [line.split() for line in f if line.strip()]
    except OSError:
        return []
    return [(int(pid), started, name) for pid, started, name in lines]


def clear_leftovers():
    """Stops what a killed earlier demo left running in RUN, then empties RUN."""
    try:
        with open(OWNER) as f:
            pid, started = f.read().split()
        if int(pid) != os.getpid() and start_time(int(pid)) == started \
                and not _zombie(int(pid)):
            raise SystemExit(
                "Another demo (pid %s) is running in %s: stop it with Ctrl-C (or kill %s), "
                "or give this one its own DEMO_RUN_DIR and DEMO_PORT." % (pid, RUN, pid))
    except (OSError, ValueError):
        pass

    stale = [(pid, name) for pid, started, name in recorded() if start_time(pid) == started]
    for pid, name in stale:
        say("   stopping %s (pid %d) left running by an earlier demo" % (name, pid))
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while stale and time.monotonic() < deadline:
        stale = [(pid, name) for pid, name in stale if start_time(pid) is not None
                 and not _zombie(pid)]
        time.sleep(0.2)
    for pid, _ in stale:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for base in (os.path.join(RUN, "pg"), PG_FALLBACK):
        data = os.path.join(base, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            say("   stopping the PostgreSQL cluster left running in %s" % data)
            try:
                PrivatePostgres(base, 0).stop(mode="immediate")
            except SystemExit:
                pass
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(PG_FALLBACK, ignore_errors=True)


def pg_base():
    """RUN/pg, or PG_FALLBACK when the cluster runs as `postgres` (we are root) and that
    user cannot reach RUN (a checkout under /root)."""
    base = os.path.join(RUN, "pg")
    if os.geteuid() != 0:
        return base
    path = RUN
    while path != "/":
        if os.stat(path).st_mode & 0o001 == 0:
            return PG_FALLBACK
        path = os.path.dirname(path)
    return base


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def port_is_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(servers):
    if os.environ.get("DEMO_PORT"):
        port = int(os.environ["DEMO_PORT"])
        if not port_is_free(port):
            raise SystemExit("DEMO_PORT %d is in use by another program: choose another." % port)
        return port
    if port_is_free(8080):
        return 8080
    port = servers.free_port()
    say("   port 8080 is taken by another program; the edge listens on %d instead" % port)
    return port


# --------------------------------------------------------------------------------------
# The processes
# --------------------------------------------------------------------------------------
class PrivatePostgres:
    """A PostgreSQL cluster of the demo's own, under RUN/pg (removed each run)."""

    def __init__(self, base, port):
        self.base = base
        self.data = os.path.join(base, "data")
        self.sockdir = os.path.join(base, "sock")
        self.log = os.path.join(base, "postgres.log")
        self.port = port
        self.bindir = self._bindir()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    @staticmethod
    def _bindir():
        root = "/usr/lib/postgresql"
        versions = sorted(os.listdir(root), key=int) if os.path.isdir(root) else []
        for v in reversed(versions):
            if os.path.exists(os.path.join(root, v, "bin", "initdb")):
                return os.path.join(root, v, "bin")
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")

    def _run(self, argv, **kw):
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, check=True, **kw)

    def start(self):
        os.makedirs(self.sockdir, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockdir, "postgres", "postgres")
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                   "--auth=trust", "-E", "UTF8"], stdout=subprocess.DEVNULL)
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-l", self.log,
                   "-o", "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.sockdir),
                   "start"], stdout=subprocess.DEVNULL)
        return self

    def stop(self, mode="fast"):
        try:
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode,
                       "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            pass

    def __str__(self):
        return "PostgreSQL"


class Database:
    """SAPL's database of the demo: its address, and psql."""

    def __init__(self, servers, host, port, user, password, external):
        self.servers = servers
        self.host, self.port, self.user, self.password = host, str(port), user, password
        self.external = external
        servers.PG_HOST, servers.PG_PORT, servers.PG_USER = host, self.port, user
        if password:
            os.environ["PGPASSWORD"] = password  # psql, createdb
            os.environ["SAPL_DB_PASSWORD"] = password  # Django
        self.name = servers.create_sapl_database(RUN)

    @property
    def url(self):
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        return "postgresql://%s@%s:%s/%s" % (auth, self.host, self.port, self.name)

    def query(self, sql):
        env = dict(os.environ, PGHOST=self.host, PGPORT=self.port, PGUSER=self.user)
        out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                              "-d", self.name, "-c", sql],
                             env=env, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        if self.external:
            self.servers.drop_database(self.name)

    def __str__(self):
        return "database %s" % self.name


class Managed:
    """A servers.ManagedProcess the demo started: recorded, stopped by process group."""

    def __init__(self, name, process, timeout=15):
        self.name = name
        self.process = process
        self.timeout = timeout
        record(name, process.pid)

    @property
    def log(self):
        return self.process.log_path

    def stop(self):
        self.process.stop(timeout=self.timeout)

    def __str__(self):
        return self.name


def redis_a(servers, started):
    server = servers.Redis(RUN, "redis-a", ("--maxmemory", "256mb",
                                            "--maxmemory-policy", "allkeys-lru"))
    server.process.start()
    handle = Managed("redis-a", server.process)
    started.append(handle)
    if not servers.wait_for_port(server.host, server.port, 30, server.process.alive):
        raise server.process.failure("did not listen")
    handle.port = server.port
    return handle


def redis_b(servers, started):
    workdir = os.path.join(RUN, "redis-b")
    os.makedirs(workdir, exist_ok=True)
    port = servers.free_port()
    argv = [shutil.which("redis-server") or "/usr/bin/redis-server",
            os.path.join(REPO, "deploy", "redis-b.conf"),
            "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir]
    process = servers.ManagedProcess("redis-b", argv, workdir).start()
    handle = Managed("redis-b", process)
    started.append(handle)
    if not servers.wait_for_port("127.0.0.1", port, 30, process.alive):
        raise process.failure("did not listen")
    handle.port = port
    return handle


def gunicorn(servers, db, started):
    server = servers.Gunicorn(RUN, db.name, secret_key=SECRET_KEY)
    try:
        server.start()
    finally:
        if server.process.proc is not None:
            handle = Managed("gunicorn", server.process)
            started.append(handle)
    handle.socket = server.socket
    return handle


def renderer_binary():
    explicit = os.environ.get("SAPL_RENDERER_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "debug", "sapl-renderer")


def renderer(servers, db, redis_b_port, roots, started):
    binary = renderer_binary()
    if not os.path.exists(binary):
        raise SystemExit("sapl-renderer not found at %s: `cargo build -p sapl-renderer` "
                         "or set SAPL_RENDERER_BIN" % binary)
    metrics = servers.free_port()
    argv = [binary, "work",
            "--tenant", TENANT,
            "--broker-url", "redis://127.0.0.1:%d/0" % redis_b_port,
            "--result-backend", "redis://127.0.0.1:%d/1" % redis_b_port,
            "--database-url", db.url,
            "--pdf-dir", os.path.join(roots["media"], "pdf"),
            "--media-root", roots["media"],
            "--shutdown-grace", "5s",
            "--metrics-address", "127.0.0.1:%d" % metrics]
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    process = servers.ManagedProcess("sapl-renderer", argv, RUN, env=env).start()
    handle = Managed("sapl-renderer", process, timeout=20)
    started.append(handle)
    handle.metrics = metrics
    deadline = time.monotonic() + 60
    while b"worker ready" not in _read(process.log_path):
        if not process.alive():
            raise process.failure("exited during start-up")
        if time.monotonic() > deadline:
            raise process.failure("did not log `worker ready`")
        time.sleep(0.1)
    return handle


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def make_roots():
    roots = {k: os.path.join(RUN, "www", k) for k in ("static", "media", "errors")}
    for d in roots.values():
        os.makedirs(d, exist_ok=True)
    os.makedirs(os.path.join(roots["media"], "pdf"), exist_ok=True)
    with open(os.path.join(roots["static"], "sapl.css"), "w") as f:
        f.write("body { font-family: 'DejaVu Sans', sans-serif; }\n" * 200)
    with open(os.path.join(roots["errors"], "500.html"), "w") as f:
        f.write("<h1>SAPL indisponível no momento</h1>\n")
    return roots


def edge(servers, started, port, gunicorn_socket, roots, redis_a_port, redis_b_port, db):
    """sapl-edge with conf/sapl-edge.toml, its paths and addresses pointed at the demo."""
    with open(os.path.join(REPO, "conf", "sapl-edge.toml")) as f:
        text = f.read()
    metrics = servers.free_port()
    replacements = [
        ("0.0.0.0:80\"", "127.0.0.1:%d\"" % port),
        ("0.0.0.0:9145", "127.0.0.1:%d" % metrics),
        ("unix:/var/interlegis/sapl/run/gunicorn.sock", "unix:" + gunicorn_socket),
        ("/var/interlegis/sapl/collected_static/500.html",
         os.path.join(roots["errors"], "500.html")),
        ("/var/interlegis/sapl/collected_static", roots["static"]),
        ("/var/interlegis/sapl/media", roots["media"]),
        ("/tmp/sapl-edge.pid", os.path.join(RUN, "edge.pid")),
        ("/tmp/sapl-edge-upgrade.sock", os.path.join(RUN, "edge-upgrade.sock")),
        ("redis://redis-a:6379/", "redis://127.0.0.1:%d/" % redis_a_port),
    ]
    for old, new in replacements:
        if old not in text:
            raise SystemExit("conf/sapl-edge.toml no longer holds %r, which the demo rewrites: "
                             "update scripts/demo.py" % old)
        text = text.replace(old, new)
    conf = os.path.join(RUN, "sapl-edge.toml")
    with open(conf, "w") as f:
        f.write(text)
    settings = tomllib.loads(text)

    env = dict(os.environ)
    env.update(
        CELERY_BROKER_URL="redis://127.0.0.1:%d/0" % redis_b_port,
        CELERY_RESULT_BACKEND="redis://127.0.0.1:%d/1" % redis_b_port,
        POD_NAMESPACE=TENANT,
        DATABASE_URL=db.url,
        SECRET_KEY=SECRET_KEY,
        RUST_LOG=os.environ.get("RUST_LOG", "info"),
    )
    binary = servers.edge_binary()
    if not os.path.exists(binary):
        raise SystemExit("sapl-edge not found at %s: `cargo build -p sapl-edge` or set "
                         "SAPL_EDGE_BIN" % binary)
    check = subprocess.run([binary, "--test", "-c", conf], env=env, capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise SystemExit("sapl-edge refused the demo's config:\n" + check.stderr + check.stdout)
    process = servers.ManagedProcess("sapl-edge", [binary, "-c", conf], RUN, env=env).start()
    handle = Managed("sapl-edge", process, timeout=20)
    started.append(handle)
    deadline = time.monotonic() + 30
    while not servers.wait_for_port("127.0.0.1", port, 0.2, process.alive):
        if not process.alive():
            raise process.failure("exited during start-up")
        if time.monotonic() > deadline:
            raise process.failure("did not listen on 127.0.0.1:%d" % port)
    handle.conf = conf
    handle.settings = settings
    handle.metrics = metrics
    return handle


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def main():
    import servers  # after sys.path is set

    say("== sapl-edge demo: everything runs under %s" % RUN)
    clear_leftovers()
    os.makedirs(RUN)
    with open(OWNER, "w") as f:
        f.write("%d %s\n" % (os.getpid(), start_time(os.getpid())))
    started = []
    state = {"code": 0, "stopped": False}

    def stop_all(*_):
        if state["stopped"]:
            sys.exit(state["code"])
        state["stopped"] = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say()
        say("== stopping everything the demo started")
        for thing in reversed(started):
            try:
                say("   %s" % thing)
                thing.stop()
            except Exception as err:  # keep stopping the rest
                say("   could not stop %s: %s" % (thing, err))
        for name in (PROCESSES, OWNER):
            try:
                os.remove(name)
            except OSError:
                pass
        say("   done (logs and PDFs stay in %s until the next run)" % RUN)
        sys.exit(state["code"])

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    try:
        ok = bring_up_and_show(servers, started)
    except Exception as err:
        import traceback

        traceback.print_exc()
        say()
        say("The demo could not start (%s); stopping what it started." % err)
        state["code"] = 1
        stop_all()
    except SystemExit as err:
        if err.code not in (None, 0) and not isinstance(err.code, int):
            say(str(err.code))
        state["code"] = 1
        stop_all()
    state["code"] = 0 if ok else 1
    if exit_requested():
        stop_all()
    say()
    say("Everything keeps running. Press Ctrl-C to stop it all.")
    while True:
        time.sleep(3600)


def bring_up_and_show(servers, started):
    port = pick_port(servers)

    step("PostgreSQL with SAPL's schema and sample data")
    url = os.environ.get("DATABASE_URL")
    if url:
        parsed = urllib.parse.urlparse(url)
        db = Database(servers, parsed.hostname or "127.0.0.1", parsed.port or 5432,
                      urllib.parse.unquote(parsed.username or "postgres"),
                      urllib.parse.unquote(parsed.password or ""), external=True)
        say("   using DATABASE_URL's server %s:%s" % (db.host, db.port))
    else:
        pg = PrivatePostgres(pg_base(), servers.free_port())
        started.append(pg)
        pg.start()
        say("   private cluster on 127.0.0.1:%d (data in %s)" % (pg.port, pg.data))
        db = Database(servers, "127.0.0.1", pg.port, "postgres", "", external=False)
    started.append(db)
    say("   database %s loaded" % db.name)

    step("Redis A (allkeys-lru, no persistence) and Redis B (noeviction, AOF)")
    ra = redis_a(servers, started)
    rb = redis_b(servers, started)
    say("   Redis A on 127.0.0.1:%d, Redis B on 127.0.0.1:%d" % (ra.port, rb.port))

    step("Gunicorn (3 sync workers, unix socket) with the Django app")
    gu = gunicorn(servers, db, started)
    say("   %s" % gu.socket)

    roots = make_roots()
    step("sapl-renderer: the PDF worker of chamber %r" % TENANT)
    worker = renderer(servers, db, rb.port, roots, started)
    say("   serving queue %s:sapl-pdf on Redis B, writing %s"
        % (TENANT, os.path.join(roots["media"], "pdf")))

    step("sapl-edge on http://127.0.0.1:%d" % port)
    ed = edge(servers, started, port, gu.socket, roots, ra.port, rb.port, db)
    say("   config %s (conf/sapl-edge.toml, paths rewritten)" % ed.conf)

    base = "http://127.0.0.1:%d" % port
    out = os.path.join(RUN, "pdfs")
    os.makedirs(out)
    results = {}
    for name, flow in (("pages", lambda: flow_pages(base)),
                       ("legacy-pdf", lambda: flow_legacy(base, db, gu.socket, out)),
                       ("api", lambda: flow_api(base, db, out)),
                       ("painel", lambda: flow_painel(base, port, db, ra.port, ed.settings))):
        try:
            results[name] = bool(flow())
        except Exception as err:
            say("   FAILED: %s: %s" % (type(err).__name__, err))
            results[name] = False

    step("Summary")
    for name, ok in results.items():
        say("FLOW %s: %s" % (name, "ok" if ok else "FAILED"))
    say()
    say("Where things are:")
    say("   edge             %s   (try: curl -i %s/materia/1)" % (base, base))
    say("   edge metrics     http://127.0.0.1:%d/metrics  (/healthz, /readyz)" % ed.metrics)
    say("   renderer metrics http://127.0.0.1:%d/metrics" % worker.metrics)
    say("   Redis A          redis://127.0.0.1:%d   Redis B redis://127.0.0.1:%d"
        % (ra.port, rb.port))
    say("   PostgreSQL       %s" % db.url)
    say("   edge config      %s" % ed.conf)
    say("   PDFs             %s" % out)
    say("   logs             %s" % "\n                    ".join(
        p for p in (ed.log, worker.log, gu.log, ra.log, rb.log,
                    os.path.join(pg_base(), "postgres.log"))
        if os.path.exists(p)))
    say("   try the API:     curl -i -X POST %s/pdf/materia-tramitacao/1" % base)
    all_ok = all(results.values())
    say()
    say("DEMO RESULT: %s" % ("all flows succeeded" if all_ok else "SOME FLOWS FAILED (above)"))
    return all_ok


# --------------------------------------------------------------------------------------
# The flows
# --------------------------------------------------------------------------------------
def flow_pages(base):
    import requests

    step("A page of the chamber, through the edge to Django")
    r = requests.get(base + "/materia/1", timeout=30)
    say("   GET /materia/1 -> %d, %d bytes, X-Request-ID %s"
        % (r.status_code, len(r.content), r.headers.get("X-Request-ID")))
    ok = r.status_code == 200

    step("A static file served by the edge itself (gzip, ETag, 304)")
    r = requests.get(base + "/static/sapl.css", timeout=30)
    etag = r.headers.get("ETag")
    say("   GET /static/sapl.css -> %d, Content-Encoding %s, ETag %s"
        % (r.status_code, r.headers.get("Content-Encoding"), etag))
    r2 = requests.get(base + "/static/sapl.css", headers={"If-None-Match": etag}, timeout=30)
    say("   again with If-None-Match -> %d" % r2.status_code)
    return ok and r.status_code == 200 and r2.status_code == 304


def pdf_facts(path):
    """(pages, text) of a PDF file, read back with poppler-utils."""
    info = subprocess.run(["pdfinfo", path], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    text = subprocess.run(["pdftotext", "-layout", path, "-"], capture_output=True,
                          check=True).stdout.decode("utf-8", "replace")
    return pages, text


def line_with(text, needle):
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    for line in lines:
        if needle in line:
            return line
    return lines[0] if lines else ""


def relatorio_hits(gunicorn_socket):
    import servers

    status, body = servers.unix_http(gunicorn_socket, "GET", "/__hits__")
    return json.loads(body)["counts"]["relatorios"]


def flow_legacy(base, db, gunicorn_socket, out):
    import requests

    step("A legacy report link, answered by the edge with a PDF from sapl-renderer")
    pk = int(db.query("SELECT materia_id FROM materia_tramitacao GROUP BY materia_id "
                      "ORDER BY count(*) DESC, materia_id LIMIT 1")
             or db.query("SELECT min(id) FROM materia_materialegislativa"))
    numero_ano = db.query("SELECT numero || '/' || ano FROM materia_materialegislativa "
                          "WHERE id = %d" % pk)
    say("   sample matéria: pk %d (%s)" % (pk, numero_ano))
    before = relatorio_hits(gunicorn_socket)
    ok = True
    for path, name, needle in (
            ("/relatorios/%d/materia-tramitacao" % pk, "materia-%d-tramitacao.pdf" % pk,
             "Tramitações"),
            ("/relatorios/%d/etiqueta-materia-legislativa" % pk,
             "materia-%d-etiqueta.pdf" % pk, numero_ano)):
        started = time.monotonic()
        r = requests.get(base + path, timeout=120)
        kind = r.headers.get("Content-Type", "")
        # Past jobs.wait_budget the link answers the wait page (202); asking again waits
        # for the same job, and finds the PDF once it is done.
        while r.status_code == 202 and time.monotonic() - started < 180:
            say("   GET %s -> 202 %s (the wait page: still rendering); asking again"
                % (path, kind))
            time.sleep(1)
            r = requests.get(base + path, timeout=120)
            kind = r.headers.get("Content-Type", "")
        say("   GET %s -> %d %s, %d bytes" % (path, r.status_code, kind, len(r.content)))
        if r.status_code != 200 or not r.content.startswith(b"%PDF"):
            ok = False
            continue
        saved = os.path.join(out, name)
        with open(saved, "wb") as f:
            f.write(r.content)
        pages, text = pdf_facts(saved)
        say("      saved %s" % saved)
        say("      pages: %d; text: %r" % (pages, line_with(text, needle)))
        ok &= pages >= 1 and numero_ano in " ".join(text.split())
    after = relatorio_hits(gunicorn_socket)
    say("   PDF requests that reached Gunicorn (/__hits__ relatorios): %d before, %d after"
        % (before, after))
    if after == before:
        say("   -> Gunicorn rendered no PDF")
    return ok and after == before


def flow_api(base, db, out):
    import requests

    step("The PDF API: POST -> 202 -> status -> 302 -> the file from /media/pdf")
    sessao = int(db.query("SELECT min(id) FROM sessao_sessaoplenaria"))
    path = "/pdf/sessao-plenaria/%d" % sessao
    r = requests.post(base + path, allow_redirects=False, timeout=30)
    say("   POST %s -> %d %s" % (path, r.status_code, r.text.strip()))
    if r.status_code != 202:
        return False
    job = r.json()
    status_url = job["status_url"]
    say("   task_id %s, status URL %s" % (job["task_id"], status_url))
    started, last = time.monotonic(), None
    while True:
        r = requests.get(base + status_url, allow_redirects=False, timeout=30)
        if r.status_code != 200 or r.json().get("state") != last:
            say("   GET %s -> %d %s%s" % (status_url, r.status_code, r.text.strip(),
                                          (" Location: %s" % r.headers["Location"])
                                          if "Location" in r.headers else ""))
        if r.status_code != 200:
            break
        last = r.json().get("state")
        if last == "failed" or time.monotonic() - started > 120:
            return False
        time.sleep(0.5)
    if r.status_code != 302:
        return False
    location = r.headers["Location"]
    pdf = requests.get(base + location, timeout=30)
    say("   GET %s -> %d %s, %d bytes" % (location, pdf.status_code,
                                          pdf.headers.get("Content-Type"), len(pdf.content)))
    if pdf.status_code != 200 or not pdf.content.startswith(b"%PDF"):
        return False
    saved = os.path.join(out, "sessao-%d.pdf" % sessao)
    with open(saved, "wb") as f:
        f.write(pdf.content)
    pages, text = pdf_facts(saved)
    say("      saved %s" % saved)
    say("      pages: %d; text: %r" % (pages, line_with(text, "Sessão")))
    return pages >= 1


class WebSocket:
    """A small RFC 6455 client: enough to watch a panel socket from this script."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port, path, headers, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port,
                 "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"] + ["%s: %s" % kv for kv in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        head = head.decode("latin-1").split("\r\n")
        self.status = head[0]
        if " 101 " not in head[0] + " ":
            raise ConnectionError("handshake refused: %s" % head[0])
        fields = {k.strip().lower(): v.strip() for k, v in
                  (line.split(":", 1) for line in head[1:] if ":" in line)}
        want = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if fields.get("sec-websocket-accept") != want:
            raise ConnectionError("bad Sec-WebSocket-Accept")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the edge")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _frame(self):
        b0, b1 = self._take(2)
        size = b1 & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        mask = self._take(4) if b1 & 0x80 else None
        data = self._take(size)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return bool(b0 & 0x80), b0 & 0x0F, data

    def send(self, opcode, data):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        if len(data) < 126:
            head += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", len(data))
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", len(data))
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))

    def recv_text(self):
        message = b""
        while True:
            fin, opcode, data = self._frame()
            if opcode == 0x9:
                self.send(0xA, data)
            elif opcode == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise ConnectionError("socket closed by the edge, code %s %s"
                                      % (code, data[2:].decode("utf-8", "replace")))
            elif opcode in (0x1, 0x0):
                message += data
                if fin:
                    return message.decode("utf-8")

    def close(self):
        try:
            self.send(0x8, struct.pack("!H", 1000))
        finally:
            self.sock.close()


def channels_python():
    for venv in CHANNELS_VENVS:
        python = os.path.join(REPO, venv, "bin", "python")
        if os.path.exists(python):
            return venv, python
    raise SystemExit("no channels venv (%s): run scripts/setup.sh" % ", ".join(CHANNELS_VENVS))


def flow_painel(base, port, db, redis_a_port, settings):
    import redis
    import requests

    painel = settings["painel"]
    auth = painel.get("auth", "django")
    prefix = painel.get("prefix", "asgi-" + TENANT)
    sessao = int(db.query("SELECT min(id) FROM sessao_sessaoplenaria"))
    group = painel.get("group_template", "painel_{sessao_id}").replace("{sessao_id}",
                                                                      str(sessao))
    step("The voting panel: a WebSocket through the edge receives Django's group_send")
    say("   config: [painel] auth = %r, layer %r, prefix %r, group %r"
        % (auth, painel.get("layer", "core"), prefix, group))

    headers = {}
    if auth == "django":
        browser = requests.Session()
        form = browser.get(base + "/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        r = browser.post(base + "/login/", timeout=30, allow_redirects=False,
                         data={"csrfmiddlewaretoken": token, "username": ADMIN[0],
                               "password": ADMIN[1], "next": "/"})
        session = browser.cookies.get("sessionid")
        say("   POST /login/ as %s through the edge -> %d, sessionid %s…"
            % (ADMIN[0], r.status_code, (session or "(none)")[:8]))
        if not session:
            return False
        headers["Cookie"] = "; ".join("%s=%s" % kv for kv in browser.cookies.items())

    path = "/ws/painel/%d/" % sessao
    ws = WebSocket(port, path, headers)
    try:
        say("   GET %s (Upgrade) -> %s" % (path, ws.status))
        first = json.loads(ws.recv_text())
        say("   first message (snapshot from Django's dados): type %r, sessão %r"
            % (first.get("type"), first.get("payload", {}).get("sessao_plenaria")))

        # The edge joins the group in Redis A before Django's message can reach it.
        client = redis.Redis(host="127.0.0.1", port=redis_a_port, db=2)
        key = "%s:group:%s" % (prefix, group)
        deadline = time.monotonic() + 30
        while not client.zcard(key):
            if time.monotonic() > deadline:
                say("   the edge never joined %s" % key)
                return False
            time.sleep(0.05)
        client.close()

        venv, python = channels_python()
        payload = {"msg_painel": "Votação aberta (demo)", "sent_at": time.strftime("%H:%M:%S")}
        env = dict(os.environ, SECRET_KEY=SECRET_KEY, SAPL_DB_NAME=db.name,
                   SAPL_DB_HOST=db.host, SAPL_DB_PORT=db.port, SAPL_DB_USER=db.user,
                   PAINEL_REDIS_URL="redis://127.0.0.1:%d/2" % redis_a_port,
                   PAINEL_PREFIX=prefix, PAINEL_LAYER=painel.get("layer", "core"))
        env.pop("PYTHONPATH", None)
        subprocess.run([python, os.path.join(REPO, "testbed", "painel", "peer.py"),
                        "publish", group, json.dumps(payload)], env=env, check=True,
                       capture_output=True, timeout=60)
        say("   Django (%s, channels_redis) group_send(%r, {type: painel.data, payload: %s})"
            % (venv, group, json.dumps(payload, ensure_ascii=False)))
        while True:
            text = ws.recv_text()
            message = json.loads(text)
            if message.get("payload") == payload:
                say("   the socket received: %s" % text)
                return message.get("type") == "data"
            say("   (other message: %s)" % text[:120])
    finally:
        ws.close()


if __name__ == "__main__":
    main()
