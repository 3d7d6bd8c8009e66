"""Records every request that reaches Django, so tests can prove what Gunicorn received.

Gunicorn runs several worker processes, so the record is a file shared by all of them
(path in SAPL_TESTBED_HITS): one JSON line per request, appended with O_APPEND so that
lines from different workers never interleave. `/__hits__` reads it back.
"""
import json
import os
import time

HITS_FILE = os.environ.get("SAPL_TESTBED_HITS", "")


def record(request):
    if not HITS_FILE:
        return
    line = json.dumps(
        {
            "t": time.time(),
            "pid": os.getpid(),
            "method": request.method,
            "path": request.path,
            "raw_uri": request.META.get("RAW_URI", ""),
            "request_id": request.META.get("HTTP_X_REQUEST_ID", ""),
        }
    )
    fd = os.open(HITS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_all():
    if not HITS_FILE or not os.path.exists(HITS_FILE):
        return []
    with open(HITS_FILE) as f:
        return [json.loads(line) for line in f if line.strip()]


class HitsMiddleware:
    """Appends the request to the hits file before anything else can reject it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path != "/__hits__":
            record(request)
        return self.get_response(request)
