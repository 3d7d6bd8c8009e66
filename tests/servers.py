"""Starts and stops the real processes of the test bed: PostgreSQL database, Gunicorn with
the Django app, nginx with SAPL's mainline config, sapl-edge, redis-server.

Each server writes its output to a log file in the test's own directory; a server that
fails to come up raises `ServerFailed` with the tail of that log, so a broken start names
its cause instead of surfacing later as a connection error. Fixtures in conftest.py decide
the lifetimes; this module only knows how to run each piece.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid

from rawhttp import wait_for_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shared_sapl():
    # CI lays shared/ beside the clone; a developer's checkout may sit elsewhere.
    if os.environ.get("SAPL_SHARED_DIR"):
        return os.environ["SAPL_SHARED_DIR"]
    for candidate in (os.path.join(os.path.dirname(REPO), "shared", "sapl"), "/work/shared/sapl"):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(os.path.dirname(REPO), "shared", "sapl")


SHARED_SAPL = _shared_sapl()
DJANGO_APP = os.path.join(REPO, "testbed", "django_app")
# SAPL_DJANGO_VENV runs the suite against another Django peer (e.g. the 4.2 fallback).
DJANGO_VENV = os.environ.get("SAPL_DJANGO_VENV") or os.path.join(REPO, ".venv-django")
NGINX_TEMPLATES = os.path.join(REPO, "testbed", "nginx")

PG_HOST = os.environ.get("SAPL_DB_HOST", "127.0.0.1")
PG_PORT = os.environ.get("SAPL_DB_PORT", "5432")
PG_USER = os.environ.get("SAPL_DB_USER", "postgres")

START_TIMEOUT = 30.0


class ServerFailed(RuntimeError):
    """A server did not start; the message carries its log tail."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log at %s)" % path
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class ManagedProcess:
    """One child process with its stdout and stderr in `<logdir>/<name>.log`."""

    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, "%s.log" % name)
        self.env = env
        self.cwd = cwd
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        try:
            # A session of its own: signals sent to pytest's group do not hit it, and
            # stop() can end the whole group (Gunicorn's and nginx's workers too).
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as err:
            raise ServerFailed("%s: cannot run %s: %s" % (self.name, self.argv[0], err))
        finally:
            log.close()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def failure(self, what):
        code = self.proc.poll() if self.proc else None
        state = "exited with %s" % code if code is not None else "still running"
        return ServerFailed(
            "%s %s (%s). Command: %s\n--- %s ---\n%s"
            % (self.name, what, state, " ".join(self.argv), self.log_path, tail(self.log_path))
        )

    def stop(self, timeout=10.0):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)


# --------------------------------------------------------------------------------------
# PostgreSQL: a scratch database with SAPL's schema and sample data
# --------------------------------------------------------------------------------------
def _pg_env():
    env = dict(os.environ)
    env.update(PGHOST=PG_HOST, PGPORT=PG_PORT, PGUSER=PG_USER)
    return env


def pg_ready():
    result = subprocess.run(
        ["pg_isready", "-h", PG_HOST, "-p", PG_PORT], capture_output=True, text=True
    )
    return result.returncode == 0


def create_sapl_database(logdir):
    """Creates a uniquely named database loaded with SAPL's schema and sample data."""
    schema = os.path.join(SHARED_SAPL, "schema.sql")
    data = os.path.join(SHARED_SAPL, "sample-data.sql")
    for path in (schema, data):
        if not os.path.exists(path):
            raise ServerFailed(
                "SAPL's %s not found at %s (set SAPL_SHARED_DIR to the shared/sapl folder)"
                % (os.path.basename(path), path)
            )
    if not pg_ready():
        raise ServerFailed(
            "PostgreSQL is not answering on %s:%s (scripts/test.sh starts it)" % (PG_HOST, PG_PORT)
        )

    name = "saplbed_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
    env = _pg_env()
    log_path = os.path.join(logdir, "postgres-load.log")
    with open(log_path, "ab") as log:
        subprocess.run(["createdb", name], env=env, check=True, stdout=log, stderr=log)
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", name, "-f", schema],
            env=env, check=True, stdout=log, stderr=log,
        )
        # Two tables reference each other: the data goes in with triggers off.
        with open(data, "rb") as f:
            sql = b"SET session_replication_role = replica;\n" + f.read()
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", name],
            input=sql, env=env, check=True, stdout=log, stderr=log,
        )
    return name


def drop_database(name):
    subprocess.run(
        ["dropdb", "--if-exists", "--force", name], env=_pg_env(), capture_output=True
    )


# --------------------------------------------------------------------------------------
# Gunicorn + Django
# --------------------------------------------------------------------------------------
def django_peer():
    """Which Django peer scripts/setup.sh built: 'django22' (SAPL's) or 'django42'."""
    try:
        with open(os.path.join(DJANGO_VENV, ".sapl-peer")) as f:
            return f.read().strip()
    except OSError:
        return ""


def unix_http(sock_path, method, path, body=None, headers=None, timeout=10.0):
    """One HTTP request straight to Gunicorn's unix socket (no proxy in between)."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)

    conn = UnixConnection("localhost", timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Gunicorn:
    """Gunicorn serving the test-bed Django app on a unix socket, with SAPL's flags."""

    def __init__(self, workdir, db_name, secret_key="test-bed-secret-key"):
        self.workdir = workdir
        self.socket = os.path.join(workdir, "gunicorn.sock")
        self.hits_file = os.path.join(workdir, "django-hits.jsonl")
        binary = os.path.join(DJANGO_VENV, "bin", "gunicorn")
        if not os.path.exists(binary):
            raise ServerFailed("%s missing: run scripts/setup.sh first" % binary)
        env = dict(os.environ)
        env.update(
            SECRET_KEY=secret_key,
            SAPL_DB_NAME=db_name,
            SAPL_DB_HOST=PG_HOST,
            SAPL_DB_PORT=PG_PORT,
            SAPL_DB_USER=PG_USER,
            SAPL_TESTBED_HITS=self.hits_file,
            DJANGO_SETTINGS_MODULE="saplbed.settings",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.pop("PYTHONPATH", None)
        argv = [
            binary,
            "--workers", "3",
            "--worker-class", "sync",
            "--timeout", "300",
            "--max-requests", "100",
            "--bind", "unix:" + self.socket,
            "--chdir", DJANGO_APP,
            "saplbed.wsgi:application",
        ]
        self.process = ManagedProcess("gunicorn", argv, workdir, env=env, cwd=DJANGO_APP)

    def start(self):
        self.process.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise self.process.failure("exited during start-up")
            if os.path.exists(self.socket):
                try:
                    status, _ = unix_http(self.socket, "GET", "/__hits__")
                    if status == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise self.process.failure("did not answer /__hits__ within %ds" % START_TIMEOUT)

    def stop(self):
        self.process.stop()

    def hits(self):
        """Every request Django has received so far (see testbed saplbed/hits.py)."""
        if not os.path.exists(self.hits_file):
            return []
        with open(self.hits_file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def pdf_hits(self):
        """How many legacy PDF report requests (/relatorios/...) reached Django."""
        return sum(1 for hit in self.hits() if hit["path"].startswith("/relatorios/"))


# --------------------------------------------------------------------------------------
# nginx with SAPL's mainline config
# --------------------------------------------------------------------------------------
def render_template(path, values):
    with open(path) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace("@@%s@@" % key, str(value))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise ValueError("unfilled placeholders in %s: %s" % (path, ", ".join(left)))
    return text


class Nginx:
    def __init__(self, workdir, name, upstream_socket, roots, read_timeout="300s",
                 template="sapl-mainline.conf.tmpl", port=None):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.workdir, "temp"), exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf = os.path.join(self.workdir, "nginx.conf")
        text = render_template(
            os.path.join(NGINX_TEMPLATES, template),
            {
                "PID_FILE": os.path.join(self.workdir, "nginx.pid"),
                "TEMP_DIR": os.path.join(self.workdir, "temp"),
                "LISTEN": "%s:%d" % (self.host, self.port),
                "UPSTREAM_SOCKET": upstream_socket,
                "STATIC_ROOT": roots["static"],
                "MEDIA_ROOT": roots["media"],
                "ERROR_ROOT": roots["errors"],
                "READ_TIMEOUT": read_timeout,
            },
        )
        with open(self.conf, "w") as f:
            f.write(text)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        globals_ = "daemon off;"
        if os.geteuid() == 0:
            # As root nginx's workers would drop to `nobody` and lose access to the test's
            # private directory (socket, files); as any other user this is not needed.
            globals_ += " user root;"
        argv = [binary, "-p", self.workdir, "-c", self.conf, "-e", "stderr", "-g", globals_]
        self.process = ManagedProcess(name, argv, self.workdir)

    def start(self):
        self.process.start()
        if not wait_for_port(self.host, self.port, START_TIMEOUT, self.process.alive):
            raise self.process.failure("did not listen on %s:%d" % (self.host, self.port))
        return self

    def stop(self):
        self.process.stop()


# --------------------------------------------------------------------------------------
# sapl-edge
# --------------------------------------------------------------------------------------
def edge_binary():
    explicit = os.environ.get("SAPL_EDGE_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "debug", "sapl-edge")


CORS_ALLOW_HEADERS = (
    "DNT,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,"
    "Authorization,X-CSRFToken"
)

GZIP_TYPES = [
    "text/html",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "text/xml",
    "application/xml",
    "application/rss+xml",
    "image/svg+xml",
    "image/x-icon",
    "image/png",
    "image/jpeg",
    "image/gif",
]


def edge_config(listen_port, metrics_port, upstream_socket, roots, read_timeout="300s",
                trusted_hops=(), threads=1):
    """The sapl-edge TOML model (as a dict) equivalent to the mainline nginx config."""
    return {
        "server": {"threads": threads},
        "listener": [{"address": "127.0.0.1:%d" % listen_port, "proto": "http"}],
        "upstream": {
            "address": "unix:" + upstream_socket,
            "connect_timeout": "75s",
            "read_timeout": read_timeout,
            "error_page": os.path.join(roots["errors"], "500.html"),
        },
        "forwarding": {"trusted_hops": list(trusted_hops)},
        "body": {"max_size": "4GiB", "buffer_size": "16MiB"},
        "metrics": {"address": "127.0.0.1:%d" % metrics_port},
        "gzip": {"level": 5, "types": list(GZIP_TYPES)},
        # The same values as the nginx template's /api/ block.
        "cors": {
            "allow_origin": "*",
            "allow_credentials": True,
            "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            "allow_headers": CORS_ALLOW_HEADERS,
            "max_age": 1728000,
        },
        "route": [
            {
                "name": "static",
                "prefix": "/static/",
                "action": "files",
                "root": roots["static"],
                "cache_control": "public, max-age=5400",
            },
            {"name": "media", "prefix": "/media/", "action": "files", "root": roots["media"]},
            {"name": "api", "prefix": "/api/", "action": "upstream", "cors": True},
            {"name": "default", "prefix": "/", "action": "upstream"},
        ],
    }


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError("no TOML form for %r" % (value,))


def to_toml(config):
    """Writes the two-level dict model above as TOML: tables and arrays of tables."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out.append("[%s]" % key)
            out += ["%s = %s" % (k, _toml_value(v)) for k, v in value.items()]
            out.append("")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out.append("[[%s]]" % key)
                out += ["%s = %s" % (k, _toml_value(v)) for k, v in item.items()]
                out.append("")
        else:
            out.insert(0, "%s = %s" % (key, _toml_value(value)))
    return "\n".join(out) + "\n"


class Edge:
    def __init__(self, workdir, name, config, listen_port, metrics_port):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = listen_port
        self.metrics_port = metrics_port
        self.config = config
        self.conf = os.path.join(self.workdir, "sapl-edge.toml")
        self.write_config(config)
        binary = edge_binary()
        if not os.path.exists(binary):
            raise ServerFailed(
                "sapl-edge binary not found at %s: build it with `cargo build -p sapl-edge` "
                "or set SAPL_EDGE_BIN" % binary
            )
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.process = ManagedProcess(name, [binary, "-c", self.conf], self.workdir, env=env)

    def write_config(self, config):
        self.config = config
        with open(self.conf, "w") as f:
            f.write(to_toml(config))

    def start(self):
        self.process.start()
        if not wait_for_port(self.host, self.port, START_TIMEOUT, self.process.alive):
            raise self.process.failure("did not listen on %s:%d" % (self.host, self.port))
        return self

    def reload(self):
        self.process.signal(signal.SIGHUP)

    def stop(self):
        self.process.stop()


# --------------------------------------------------------------------------------------
# redis-server (for suites that need a private Redis)
# --------------------------------------------------------------------------------------
class Redis:
    def __init__(self, workdir, name="redis", extra_args=()):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [
            binary, "--bind", self.host, "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--dir", self.workdir, *extra_args,
        ]
        self.process = ManagedProcess(name, argv, self.workdir)

    @property
    def url(self):
        return "redis://%s:%d/0" % (self.host, self.port)

    def start(self):
        self.process.start()
        if not wait_for_port(self.host, self.port, START_TIMEOUT, self.process.alive):
            raise self.process.failure("did not listen on %s:%d" % (self.host, self.port))
        return self

    def stop(self):
        self.process.stop()
