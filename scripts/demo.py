"""The one-command demo: the whole of sapl-edge on this machine, on SAPL's sample chamber.

Started by ./demo.sh (which installs what is missing and builds the binaries). Everything
runs under .run/demo/, laid anew on each run:

  - PostgreSQL: $DATABASE_URL when set, else a private cluster (initdb + pg_ctl) loaded
    with SAPL's schema and sample data;
  - Redis A (allkeys-lru, no persistence) and Redis B (deploy/redis-b.conf: noeviction,
    AOF) as local redis-server processes;
  - Gunicorn with the test-bed Django app on a unix socket;
  - sapl-renderer (the PDF worker) and sapl-edge, configured from conf/sapl-edge.toml.

Then it drives the main flows through the edge, prints what happened, and keeps
everything running until Ctrl-C, which stops all it started.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

RUN = os.path.join(REPO, ".run", "demo")
EDGE_PORT = int(os.environ.get("DEMO_PORT", "8080"))


def say(text=""):
    print(text, flush=True)


def step(title):
    say()
    say("== " + title)


class PrivatePostgres:
    """A PostgreSQL cluster of the demo's own, under .run/demo/pg (removed each run)."""

    def __init__(self, base, port):
        self.base = base
        self.data = os.path.join(base, "data")
        self.sockdir = os.path.join(base, "sock")
        self.port = port
        self.bindir = self._bindir()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    @staticmethod
    def _bindir():
        root = "/usr/lib/postgresql"
        versions = sorted(os.listdir(root), key=lambda v: int(v)) if os.path.isdir(root) else []
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
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-l",
                   os.path.join(self.base, "postgres.log"), "-o",
                   "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.sockdir),
                   "start"], stdout=subprocess.DEVNULL)
        return self

    def stop(self):
        try:
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast",
                       "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            pass


def database_from_env():
    """host, port, user from $DATABASE_URL, or None."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or "127.0.0.1", str(parsed.port or 5432), parsed.username or "postgres"


def main():
    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(RUN)
    started = []

    def stop_all(*_):
        say()
        say("== stopping everything the demo started")
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as err:  # keep stopping the rest
                say("   could not stop %s: %s" % (thing, err))
        say("   done")
        sys.exit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    import servers  # after sys.path is set

    try:
        bring_up_and_show(servers, started, stop_all)
    except Exception:
        import traceback

        traceback.print_exc()
        say("The demo could not start; stopping what it started.")
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception:
                pass
        sys.exit(1)


def bring_up_and_show(servers, started, stop_all):
    step("PostgreSQL with SAPL's schema and sample data")
    db = database_from_env()
    if db is None:
        pg = PrivatePostgres(os.path.join(RUN, "pg"), servers.free_port()).start()
        started.append(pg)
        db = ("127.0.0.1", str(pg.port), "postgres")
        say("   private cluster on 127.0.0.1:%d (data in %s)" % (pg.port, pg.data))
    else:
        say("   using DATABASE_URL (%s:%s)" % (db[0], db[1]))
    servers.PG_HOST, servers.PG_PORT, servers.PG_USER = db
    db_name = servers.create_sapl_database(RUN)
    say("   database %s loaded" % db_name)

    step("Redis A (allkeys-lru, no persistence) and Redis B (noeviction, AOF)")
    redis_a = servers.Redis(RUN, "redis-a", ("--maxmemory", "256mb",
                                              "--maxmemory-policy", "allkeys-lru")).start()
    started.append(redis_a)
    redis_b = RedisB(servers, RUN).start()
    started.append(redis_b)
    say("   Redis A on :%d, Redis B on :%d" % (redis_a.port, redis_b.port))

    step("Gunicorn (3 sync workers, unix socket) with the Django app")
    gunicorn = servers.Gunicorn(RUN, db_name).start()
    started.append(gunicorn)
    say("   %s" % gunicorn.socket)

    step("sapl-edge on http://127.0.0.1:%d" % EDGE_PORT)
    roots = make_roots()
    edge = start_edge(servers, gunicorn, roots, redis_a, redis_b, db)
    started.append(edge)
    say("   config %s" % edge.conf)

    base = "http://127.0.0.1:%d" % EDGE_PORT
    flows_ok = run_flows(base, roots)

    say()
    say("All services are running. Try: curl -i %s/materia/1" % base)
    say("Logs are in %s. Press Ctrl-C to stop everything." % RUN)
    if os.environ.get("DEMO_EXIT"):
        stop_all()
    while True:
        time.sleep(3600)
    return flows_ok


class RedisB:
    """redis-server with deploy/redis-b.conf, port and directory given on the command line."""

    def __init__(self, servers, run):
        self.workdir = os.path.join(run, "redis-b")
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = servers.free_port()
        argv = ["redis-server", os.path.join(REPO, "deploy", "redis-b.conf"),
                "--bind", self.host, "--port", str(self.port), "--dir", self.workdir]
        self.servers = servers
        self.process = servers.ManagedProcess("redis-b", argv, self.workdir)

    def start(self):
        self.process.start()
        if not self.servers.wait_for_port(self.host, self.port, 30, self.process.alive):
            raise self.process.failure("did not listen")
        return self

    def stop(self):
        self.process.stop()


def make_roots():
    roots = {k: os.path.join(RUN, "www", k) for k in ("static", "media", "errors")}
    for d in roots.values():
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(roots["static"], "sapl.css"), "w") as f:
        f.write("body { font-family: 'DejaVu Sans', sans-serif; }\n" * 200)
    with open(os.path.join(roots["errors"], "500.html"), "w") as f:
        f.write("<h1>SAPL indisponível no momento</h1>\n")
    return roots


def start_edge(servers, gunicorn, roots, redis_a, redis_b, db):
    """sapl-edge with conf/sapl-edge.toml, its paths and addresses pointed at the demo."""
    with open(os.path.join(REPO, "conf", "sapl-edge.toml")) as f:
        text = f.read()
    replacements = {
        "0.0.0.0:80": "127.0.0.1:%d" % EDGE_PORT,
        "0.0.0.0:9145": "127.0.0.1:%d" % servers.free_port(),
        "unix:/var/interlegis/sapl/run/gunicorn.sock": "unix:" + gunicorn.socket,
        "/var/interlegis/sapl/collected_static/500.html": os.path.join(roots["errors"],
                                                                       "500.html"),
        "/var/interlegis/sapl/collected_static": roots["static"],
        "/var/interlegis/sapl/media": roots["media"],
        "/tmp/sapl-edge.pid": os.path.join(RUN, "edge.pid"),
        "/tmp/sapl-edge-upgrade.sock": os.path.join(RUN, "edge-upgrade.sock"),
    }
    for old, new in replacements.items():
        text = text.replace(old, new)
    conf = os.path.join(RUN, "sapl-edge.toml")
    with open(conf, "w") as f:
        f.write(text)

    env = dict(os.environ)
    env.update(
        CELERY_BROKER_URL="redis://127.0.0.1:%d/0" % redis_b.port,
        CELERY_RESULT_BACKEND="redis://127.0.0.1:%d/1" % redis_b.port,
        REDIS_A_URL="redis://127.0.0.1:%d/2" % redis_a.port,
        POD_NAMESPACE="demo",
        DATABASE_URL="postgres://%s@%s:%s/%s" % (db[2], db[0], db[1], "postgres"),
        RUST_LOG=os.environ.get("RUST_LOG", "info"),
    )
    binary = servers.edge_binary()
    proc = servers.ManagedProcess("sapl-edge", [binary, "-c", conf], RUN, env=env)
    proc.start()
    if not servers.wait_for_port("127.0.0.1", EDGE_PORT, 30, proc.alive):
        raise proc.failure("did not listen on 127.0.0.1:%d" % EDGE_PORT)

    class Handle:
        def stop(self):
            proc.stop()

        def __str__(self):
            return "sapl-edge"

    handle = Handle()
    handle.conf = conf
    return handle


def run_flows(base, roots):
    import requests

    ok = True

    step("A page of the chamber, through the edge to Django")
    r = requests.get(base + "/materia/1", timeout=30)
    say("   GET /materia/1 -> %d, %d bytes, X-Request-ID %s"
        % (r.status_code, len(r.content), r.headers.get("X-Request-ID")))
    ok &= r.status_code == 200

    step("A static file served by the edge itself (gzip, ETag, 304)")
    r = requests.get(base + "/static/sapl.css", timeout=30)
    etag = r.headers.get("ETag")
    say("   GET /static/sapl.css -> %d, Content-Encoding %s, ETag %s"
        % (r.status_code, r.headers.get("Content-Encoding"), etag))
    r2 = requests.get(base + "/static/sapl.css", headers={"If-None-Match": etag}, timeout=30)
    say("   again with If-None-Match -> %d" % r2.status_code)
    ok &= r.status_code == 200 and r2.status_code == 304

    say()
    say("Flows: %s" % ("all as expected" if ok else "SOME FAILED (see above)"))
    return ok


if __name__ == "__main__":
    main()
