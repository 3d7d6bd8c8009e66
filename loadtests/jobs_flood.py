"""Load generator of loadtests/jobs-flood.sh (issue 3): a flood of SAPL's legacy report links
through sapl-edge, then the job API on fresh matérias.

Started by jobs-flood.sh once Redis B, Gunicorn, the renderer's worker and the edge are up;
it only speaks HTTP to them and reads their counters. Three phases:

  flood     --requests GETs of /relatorios/<pk>/materia-tramitacao over the --materias pks,
            open loop: request i leaves at i * duration / requests whatever the earlier
            ones are doing (one coroutine and one connection each), so a slow edge shows
            up as latency instead of silently lowering the rate. Every answer must be a
            valid PDF (200, application/pdf, %PDF … %%EOF, one per matéria read back with
            pdfinfo and pdftotext) or the pt-BR wait page (202); the wait pages' jobs are
            then followed to their PDF.
  api       POST /pdf/materia-tramitacao/<pk> on matérias nobody asked for yet (a fresh
            job each), paced at --api-rate: the 202's latency is the enqueue latency;
            polling GET /pdf/status/<task_id> until it answers 302 gives time-to-PDF.
  counters  Django's /__hits__ (straight on Gunicorn's socket) before and after: the
            legacy PDF requests Django received, which must stay 0; the edge's and the
            worker's job metrics around the flood.

Writes the markdown section (--out-md) and the raw numbers (--out-json). Exit status 1 when
Django received a PDF request, a client got neither a PDF nor the wait page, or an API job
did not end in its PDF; 0 otherwise.

HTTP is spoken with asyncio streams, one `Connection: close` request per connection, so
that 2,000 clients in flight cost coroutines, not threads, and nothing beyond the standard
library is needed.
"""
import argparse
import asyncio
import http.client
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

WAIT_PAGE_MARK = "Gerando o relatório".encode()
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------
class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased names; the last value of a repeated one
        self.body = body


async def request(host, port, method, path, timeout):
    """One request on a new connection; raises on a broken or late answer."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: %s\r\n"
                    "Accept: text/html,application/pdf,application/json;q=0.9,*/*;q=0.8\r\n"
                    "Connection: close\r\n" % (method, path, host, port, USER_AGENT))
            if method == "POST":
                head += "Content-Length: 0\r\n"
            writer.write((head + "\r\n").encode("latin-1"))
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if method == "HEAD" or status in (204, 304):
                body = b""
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await read_chunked(reader)
            else:
                body = await reader.read()
            return Answer(status, headers, body)
        finally:
            writer.close()


async def read_chunked(reader):
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def unix_get(sock_path, path, timeout=30.0):
    """GET straight on Gunicorn's unix socket, so the edge is not in the way."""

    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)

    conn = Connection("localhost", timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def django_hits(sock_path):
    """(legacy PDF requests, all requests) Django has received so far."""
    status, body = unix_get(sock_path, "/__hits__")
    if status != 200:
        raise RuntimeError("Gunicorn's /__hits__ answered %d" % status)
    counts = json.loads(body)["counts"]
    return counts["relatorios"], counts["total"]


def metrics(address):
    """A Prometheus text page as {(name, sorted label pairs): value}."""
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        pairs = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels)))
        values[(name, pairs)] = float(value)
    return values


def delta(after, before, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def histogram_quantile_bound(after, before, name, q):
    """The upper bound of the bucket holding quantile `q` of what was observed between the
    two snapshots (Prometheus buckets are cumulative), or None without observations."""
    buckets = []
    for (metric, pairs), value in after.items():
        if metric != name + "_bucket":
            continue
        le = dict(pairs)["le"]
        bound = math.inf if le == "+Inf" else float(le)
        buckets.append((bound, value - before.get((metric, pairs), 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    want = q * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= want)


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------
def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds):
    return "-" if seconds is None else ("%.1f" % (seconds * 1000.0))


def bucket(bound):
    """A histogram bucket's upper bound as a limit on the quantile."""
    if bound is None:
        return "-"
    if math.isinf(bound):
        return "> largest bucket"
    return "≤ %s ms" % ("%g" % (bound * 1000.0))


def wrap(paragraph):
    """A markdown paragraph in lines of 88 columns, never split inside a hyphenated name or
    a `code span` (its spaces are held as NUL while wrapping)."""
    held = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"), paragraph)
    text = textwrap.fill(held, 88, break_on_hyphens=False, break_long_words=False)
    return text.replace("\0", " ")


def spread(values):
    """'p50 / p90 / p99 / max' in milliseconds."""
    return " / ".join(ms(percentile(values, p)) for p in (50, 90, 99, 100))


# --------------------------------------------------------------------------------------
# Phase 1: the flood of legacy links
# --------------------------------------------------------------------------------------
def valid_pdf_body(answer):
    body = answer.body
    return (answer.status == 200
            and answer.headers.get("content-type", "").startswith("application/pdf")
            and body.startswith(b"%PDF-")
            and b"%%EOF" in body[-1024:])


def wait_page(answer):
    return (answer.status == 202
            and answer.headers.get("content-type", "").startswith("text/html")
            and b'lang="pt-BR"' in answer.body
            and WAIT_PAGE_MARK in answer.body
            and bool(answer.headers.get("x-job-id")))


async def flood(args, pks, saved_dir):
    """Fires the legacy links on schedule; returns one record per request."""
    rng = random.Random(args.seed)
    per_pk = args.requests // len(pks)
    plan = [pk for pk in pks for _ in range(per_pk)]
    plan += rng.sample(pks, args.requests - len(plan))
    rng.shuffle(plan)
    interval = args.duration / args.requests
    records = [None] * len(plan)
    saved = {}
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2

    async def one(i, pk):
        scheduled = t0 + i * interval
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        started = loop.time()
        record = {"pk": pk, "lag": started - scheduled, "started": started - t0}
        try:
            answer = await request(args.host, args.port, "GET",
                                   "/relatorios/%d/materia-tramitacao" % pk, args.timeout)
            record.update(status=answer.status,
                          content_type=answer.headers.get("content-type", ""),
                          bytes=len(answer.body), latency=loop.time() - started)
            if valid_pdf_body(answer):
                record["outcome"] = "pdf"
                if pk not in saved:
                    path = os.path.join(saved_dir, "materia-%d.pdf" % pk)
                    with open(path, "wb") as f:
                        f.write(answer.body)
                    saved[pk] = path
            elif wait_page(answer):
                record["outcome"] = "wait_page"
                record["job"] = answer.headers["x-job-id"]
            else:
                record["outcome"] = "other"
                record["snippet"] = answer.body[:200].decode("utf-8", "replace")
        except Exception as err:  # the client got nothing usable: counted, not raised
            record.update(outcome="error", error="%s: %s" % (type(err).__name__, err),
                          latency=loop.time() - started)
        records[i] = record

    await asyncio.gather(*(one(i, pk) for i, pk in enumerate(plan)))
    return records, saved, loop.time() - t0


async def follow_jobs(args, task_ids):
    """Polls each wait page's job until its status URL answers 302; {task_id: ok}."""

    async def follow(task_id):
        deadline = time.monotonic() + args.follow_timeout
        while time.monotonic() < deadline:
            try:
                answer = await request(args.host, args.port, "GET", "/pdf/status/" + task_id,
                                       args.timeout)
                if answer.status == 302:
                    return True
                if answer.status != 200 or json.loads(answer.body).get("state") == "failed":
                    return False
            except Exception:
                pass
            await asyncio.sleep(0.2)
        return False

    results = await asyncio.gather(*(follow(t) for t in task_ids))
    return dict(zip(task_ids, results))


def check_pdfs(saved, etiquetas):
    """pdfinfo and pdftotext on one PDF per matéria: the file parses, has pages and shows
    the matéria's número/ano. Returns the pks whose PDF failed, with why."""
    failed = {}
    for pk, path in sorted(saved.items()):
        info = subprocess.run(["pdfinfo", path], capture_output=True, text=True)
        pages = re.search(r"^Pages:\s+(\d+)", info.stdout, re.M)
        if info.returncode != 0 or not pages or int(pages.group(1)) < 1:
            failed[pk] = "pdfinfo: %s" % (info.stderr.strip() or "no pages")
            continue
        text = subprocess.run(["pdftotext", path, "-"], capture_output=True).stdout
        words = " ".join(text.decode("utf-8", "replace").split())
        if etiquetas.get(pk) and etiquetas[pk] not in words:
            failed[pk] = "text does not show %s" % etiquetas[pk]
    return failed


# --------------------------------------------------------------------------------------
# Phase 2: the job API on fresh matérias
# --------------------------------------------------------------------------------------
async def api_jobs(args, pks):
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1
    interval = 1.0 / args.api_rate

    async def one(i, pk):
        await asyncio.sleep(max(0.0, t0 + i * interval - loop.time()))
        posted = loop.time()
        record = {"pk": pk}
        try:
            answer = await request(args.host, args.port, "POST",
                                   "/pdf/materia-tramitacao/%d" % pk, args.timeout)
            record["enqueue"] = loop.time() - posted
            record["status"] = answer.status
            if answer.status != 202:
                record["error"] = "POST answered %d: %s" % (
                    answer.status, answer.body[:200].decode("utf-8", "replace"))
                return record
            job = json.loads(answer.body)
            record["state"] = job.get("state")
            status_url = job["status_url"]
            deadline = posted + args.follow_timeout
            while loop.time() < deadline:
                answer = await request(args.host, args.port, "GET", status_url, args.timeout)
                if answer.status == 302:
                    record["to_pdf"] = loop.time() - posted
                    location = answer.headers.get("location", "")
                    pdf = await request(args.host, args.port, "GET", location, args.timeout)
                    if not (pdf.status == 200 and pdf.body.startswith(b"%PDF-")):
                        record["error"] = "GET %s answered %d" % (location, pdf.status)
                    return record
                if answer.status != 200 or json.loads(answer.body).get("state") == "failed":
                    record["error"] = "status answered %d: %s" % (
                        answer.status, answer.body[:200].decode("utf-8", "replace"))
                    return record
                await asyncio.sleep(args.poll_interval)
            record["error"] = "no PDF within %ss" % args.follow_timeout
        except Exception as err:
            record["error"] = "%s: %s" % (type(err).__name__, err)
        return record

    return await asyncio.gather(*(one(i, pk) for i, pk in enumerate(pks)))


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def wait_pages(fl):
    if not fl["wait_page"]:
        return "0"
    return "%d (%d jobs, %s)" % (fl["wait_page"], fl["wait_jobs"],
                                 "each then reached its PDF" if fl["wait_jobs_ok"]
                                 else "NOT all reached their PDF")


def section(args, r):
    fl, api, ct = r["flood"], r["api"], r["counters"]
    intro = (
        "%d legacy links `GET /relatorios/<pk>/materia-tramitacao` over %d distinct matérias "
        "in %g s (open loop, %.0f req/s scheduled, one connection per request, all from "
        "127.0.0.1), sent to the release `sapl-edge` with the pdf routes and `[jobs]` of "
        "`conf/sapl-edge.toml`, one `sapl-renderer work` worker, Redis B with "
        "`deploy/redis-b.conf`, Gunicorn with the test-bed Django app (3 sync workers) and a "
        "scratch PostgreSQL database (SAPL's sample data plus %d generated matérias with 3–6 "
        "tramitações each). Starting cold: no PDF existed. Then the job API on %d matérias "
        "nobody had asked for: `POST /pdf/materia-tramitacao/<pk>` at %g/s, each job's "
        "status polled every %g ms until it answered 302."
        % (args.requests, len(r["flood_pks"]), args.duration, args.requests / args.duration,
           args.generated, len(r["api_pks"]), args.api_rate, args.poll_interval * 1000))
    machine = (
        "Measured %s on %d cores (%s); load average before the servers started %s. The load "
        "generator (Python asyncio), PostgreSQL, Redis, Gunicorn, the worker and the edge "
        "share those cores. %s Gunicorn's counter was checked first: one request the edge "
        "hands to Django (`/relatorios/1/etiqueta-materia-legislativa`, no pdf route in this "
        "config) raised it by %d."
        % (r["date"], len(os.sched_getaffinity(0)), r["cpu"], r["loadavg"], args.setup_note,
           r["counters"]["control"]))
    lines = [
        "<!-- jobs-flood:start -->",
        "## PDF flood through the edge (issue 3)",
        "",
        wrap(intro),
        "",
        wrap(machine),
        "",
        "Command: `%s`" % args.command,
        "",
        "| flood | value |",
        "|---|---|",
        "| requests sent / answered | %d / %d |" % (fl["sent"], fl["answered"]),
        "| sending took | %.2f s (largest start lag behind the schedule %s ms) |"
        % (fl["elapsed_send"], ms(fl["max_lag"])),
        "| answered the PDF (200, valid) | %d |" % fl["pdf"],
        "| answered the wait page (202, pt-BR) | %s |" % wait_pages(fl),
        "| neither (other status, broken answer) | %d |" % (fl["other"] + fl["error"]),
        "| PDFs read back with pdfinfo + pdftotext (one per matéria) | %d, %d failed |"
        % (fl["pdfs_checked"], len(fl["pdf_failures"])),
        "| **PDF requests Gunicorn received** (`/__hits__` relatorios) | **%d** (all Django"
        " requests: %d) |" % (ct["django_pdf"], ct["django_all"]),
        "| jobs created / joined in flight / reused finished | %d / %d / %d |"
        % (ct["created"], ct["joined"], ct["reused"]),
        "| refused (queue full, per-IP limit, Redis down) / handed to Django | %d / %d |"
        % (ct["refused"], ct["fallbacks"]),
        "| jobs rendered by the worker / failed, mean render | %d / %d, %s ms |"
        % (ct["rendered"], ct["render_failed"], ms(ct["render_mean"])),
        "| latency, PDF answers (p50 / p90 / p99 / max, ms) | %s |" % spread(fl["lat_pdf"]),
        "| latency, wait pages (p50 / p90 / p99 / max, ms) | %s |" % spread(fl["lat_wait"]),
        "| latency, all answers (p50 / p90 / p99 / max, ms) | %s |" % spread(fl["lat_all"]),
        "| edge enqueue time during the flood (its histogram's buckets, p50 / p99) | %s / %s |"
        % (bucket(ct["enqueue_p50_bound"]), bucket(ct["enqueue_p99_bound"])),
        "",
        "| job API on fresh matérias | value |",
        "|---|---|",
        "| jobs | %d (202: %d, ended in their PDF: %d) |"
        % (api["jobs"], api["accepted"], api["to_pdf_count"]),
        "| **enqueue latency** (POST → 202, p50 / p99 / max, ms) | **%s / %s** / %s |"
        % (ms(percentile(api["enqueue"], 50)), ms(percentile(api["enqueue"], 99)),
           ms(percentile(api["enqueue"], 100))),
        "| **time-to-PDF** (POST → status 302, p50 / p90 / p99 / max, ms) | **%s** |"
        % spread(api["to_pdf"]),
        "",
        "Result: %s." % ("passed" if r["passed"] else "FAILED: " + "; ".join(r["problems"])),
        "<!-- jobs-flood:end -->",
    ]
    return "\n".join(lines) + "\n"


def load_pks(path):
    """`pk<TAB>numero/ano` lines."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                pk, etiqueta = line.rstrip("\n").split("\t")
                rows.append((int(pk), etiqueta))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the edge's listener")
    p.add_argument("--edge-metrics", required=True, help="host:port of the edge's [metrics]")
    p.add_argument("--worker-metrics", required=True, help="host:port of the worker's metrics")
    p.add_argument("--gunicorn-socket", required=True)
    p.add_argument("--pks", required=True, help="file of `pk<TAB>numero/ano` lines")
    p.add_argument("--materias", type=int, default=200, help="distinct matérias flooded")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds the flood is spread over")
    p.add_argument("--api-jobs", type=int, default=100)
    p.add_argument("--api-rate", type=float, default=20.0, help="API POSTs per second")
    p.add_argument("--poll-interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=60.0, help="one request's limit (s)")
    p.add_argument("--follow-timeout", type=float, default=120.0,
                   help="how long a job may take to reach its PDF (s)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--generated", type=int, default=0, help="generated matérias (for the text)")
    p.add_argument("--warmup-pk", type=int, default=0,
                   help="a matéria outside both sets asked once first (opens the edge's links)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--command", default="loadtests/jobs-flood.sh")
    p.add_argument("--setup-note", default="")
    p.add_argument("--loadavg", default="", help="load average before the servers started")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-json", required=True)
    args = p.parse_args()

    rows = load_pks(args.pks)
    if len(rows) < args.materias + args.api_jobs:
        sys.exit("need %d matérias in %s, found %d"
                 % (args.materias + args.api_jobs, args.pks, len(rows)))
    etiquetas = dict(rows)
    flood_pks = [pk for pk, _ in rows[:args.materias]]
    api_pks = [pk for pk, _ in rows[args.materias:args.materias + args.api_jobs]]
    saved_dir = os.path.join(args.workdir, "flood-pdfs")
    os.makedirs(saved_dir, exist_ok=True)
    say = lambda text: print(text, flush=True)  # noqa: E731

    # A control first: a report link this config forwards must show up in Django's counter,
    # so that the 0 measured below is a count, not a counter that never moves.
    control_before = django_hits(args.gunicorn_socket)[0]
    answer = asyncio.run(request(args.host, args.port, "GET",
                                 "/relatorios/1/etiqueta-materia-legislativa", args.timeout))
    control = django_hits(args.gunicorn_socket)[0] - control_before
    say("   control /relatorios/1/etiqueta-materia-legislativa -> %d via Django, counter +%d"
        % (answer.status, control))
    hits_before = django_hits(args.gunicorn_socket)
    if args.warmup_pk:
        # The edge opens its Redis B and PostgreSQL links on the first PDF request; a pod
        # in service has them open, so one request outside the measured sets opens them.
        answer = asyncio.run(request(args.host, args.port, "GET",
                                     "/relatorios/%d/materia-tramitacao" % args.warmup_pk,
                                     args.timeout))
        say("   warm-up /relatorios/%d/materia-tramitacao -> %d %s"
            % (args.warmup_pk, answer.status, answer.headers.get("content-type", "")))
    edge_before = metrics(args.edge_metrics)
    worker_before = metrics(args.worker_metrics)

    say("   flood: %d requests over %d matérias in %g s" % (args.requests, len(flood_pks),
                                                            args.duration))
    records, saved, elapsed_send = asyncio.run(flood(args, flood_pks, saved_dir))
    by = lambda outcome: [r for r in records if r["outcome"] == outcome]  # noqa: E731
    wait_jobs = sorted({r["job"] for r in by("wait_page")})
    say("   answers: %d PDF, %d wait page, %d other, %d broken"
        % (len(by("pdf")), len(by("wait_page")), len(by("other")), len(by("error"))))
    followed = asyncio.run(follow_jobs(args, wait_jobs)) if wait_jobs else {}
    edge_after = metrics(args.edge_metrics)
    worker_after = metrics(args.worker_metrics)
    pdf_failures = check_pdfs(saved, etiquetas)
    say("   %d PDFs read back with pdfinfo/pdftotext, %d failed" % (len(saved), len(pdf_failures)))

    say("   job API: %d fresh matérias at %g/s" % (len(api_pks), args.api_rate))
    api = asyncio.run(api_jobs(args, api_pks))
    hits_after = django_hits(args.gunicorn_socket)

    kind = "materia-tramitacao"
    rendered = delta(worker_after, worker_before, "sapl_edge_jobs_done_total", kind=kind)
    render_sum = delta(worker_after, worker_before,
                       "sapl_edge_jobs_render_duration_seconds_sum", kind=kind)
    render_count = delta(worker_after, worker_before,
                         "sapl_edge_jobs_render_duration_seconds_count", kind=kind)
    refused = sum(delta(edge_after, edge_before, "sapl_edge_jobs_refused_total", reason=x)
                  for x in ("queue_full", "ip_limit", "redis_down"))
    fallbacks = sum(delta(edge_after, edge_before, "sapl_edge_jobs_fallbacks_total", reason=x)
                    for x in ("redis_down", "authenticated", "unconfigured"))
    hist = "sapl_edge_jobs_enqueue_duration_seconds"
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "loadavg": args.loadavg or " ".join("%.2f" % x for x in os.getloadavg()),
        "flood_pks": flood_pks,
        "api_pks": api_pks,
        "flood": {
            "sent": len(records),
            "answered": sum(1 for r in records if r["outcome"] != "error"),
            "elapsed_send": elapsed_send,
            "max_lag": max(r["lag"] for r in records),
            "pdf": len(by("pdf")),
            "wait_page": len(by("wait_page")),
            "other": len(by("other")),
            "error": len(by("error")),
            "wait_jobs": len(wait_jobs),
            "wait_jobs_ok": all(followed.values()),
            "pdfs_checked": len(saved),
            "pdf_failures": pdf_failures,
            "lat_pdf": [r["latency"] for r in by("pdf")],
            "lat_wait": [r["latency"] for r in by("wait_page")],
            "lat_all": [r["latency"] for r in records if r["outcome"] != "error"],
            "statuses": sorted({r.get("status", 0) for r in records}),
            "samples_bad": [r for r in records if r["outcome"] in ("other", "error")][:10],
            "records": records,
        },
        "counters": {
            "control": control,
            "django_pdf": hits_after[0] - hits_before[0],
            "django_all": hits_after[1] - hits_before[1],
            "created": delta(edge_after, edge_before, "sapl_edge_jobs_enqueued_total", kind=kind),
            "joined": delta(edge_after, edge_before, "sapl_edge_jobs_deduplicated_total",
                            kind=kind, outcome="joined"),
            "reused": delta(edge_after, edge_before, "sapl_edge_jobs_deduplicated_total",
                            kind=kind, outcome="reused"),
            "refused": refused,
            "fallbacks": fallbacks,
            "rendered": rendered,
            "render_failed": delta(worker_after, worker_before, "sapl_edge_jobs_failed_total",
                                   kind=kind),
            "render_mean": render_sum / render_count if render_count else None,
            "enqueue_p50_bound": histogram_quantile_bound(edge_after, edge_before, hist, 0.50),
            "enqueue_p99_bound": histogram_quantile_bound(edge_after, edge_before, hist, 0.99),
        },
        "api": {
            "jobs": len(api),
            "accepted": sum(1 for a in api if a.get("status") == 202),
            "fresh": sum(1 for a in api if a.get("state") == "queued"),
            "enqueue": [a["enqueue"] for a in api if a.get("status") == 202],
            "to_pdf": [a["to_pdf"] for a in api if "to_pdf" in a and "error" not in a],
            "to_pdf_count": sum(1 for a in api if "to_pdf" in a and "error" not in a),
            "errors": [a for a in api if "error" in a][:10],
            "records": api,
        },
    }
    for c in ("created", "joined", "reused", "refused", "fallbacks", "rendered",
              "render_failed"):
        result["counters"][c] = int(result["counters"][c])

    problems = []
    fl, ct, ap = result["flood"], result["counters"], result["api"]
    if ct["control"] != 1:
        problems.append("Gunicorn's counter did not count the control request")
    if ct["django_pdf"] != 0:
        problems.append("Gunicorn received %d PDF requests" % ct["django_pdf"])
    if fl["other"] or fl["error"]:
        problems.append("%d clients got neither a PDF nor the wait page"
                        % (fl["other"] + fl["error"]))
    if pdf_failures:
        problems.append("%d PDFs did not read back" % len(pdf_failures))
    if not fl["wait_jobs_ok"]:
        problems.append("a wait page's job never reached its PDF")
    if ap["to_pdf_count"] != ap["jobs"]:
        problems.append("%d API jobs did not end in their PDF" % (ap["jobs"] - ap["to_pdf_count"]))
    result["problems"] = problems
    result["passed"] = not problems

    with open(args.out_json, "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(args.out_md, "w") as f:
        f.write(section(args, result))
    for bad in fl["samples_bad"][:5]:
        say("   bad answer: %s" % json.dumps(bad, ensure_ascii=False))
    for bad in ap["errors"][:5]:
        say("   API problem: %s" % json.dumps(bad, ensure_ascii=False))
    return 0 if result["passed"] else 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
