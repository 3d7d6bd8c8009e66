"""The proxy's duties toward Gunicorn's three sync workers: bodies buffered before a worker
is taken, uploads intact, 502 when Gunicorn is down, 504 past the read timeout, and the
/api/ preflight answered without Django.
"""
import hashlib
import json
import os
import socket
import time
import uuid

import pytest
import requests

import rawhttp
from conftest import ERROR_PAGE_MARKER
from servers import CORS_ALLOW_HEADERS


def url(server, path):
    return "http://%s:%d%s" % (server.host, server.port, path)


# --------------------------------------------------------------------------------------
# Uploads and buffering
# --------------------------------------------------------------------------------------
def test_multipart_upload_arrives_intact(proxy):
    data = os.urandom(5 * 1024 * 1024)
    response = requests.post(
        url(proxy, "/upload/"),
        files={"arquivo": ("ata sessão.pdf", data, "application/pdf")},
        timeout=60,
    )
    assert response.status_code == 200
    got = response.json()
    assert got["size"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["files"][0]["name"] == "ata sessão.pdf"


def test_raw_body_larger_than_the_memory_buffer_arrives_intact(proxy):
    # 20 MiB: over sapl-edge's 16 MiB in-memory buffer (spooled) and nginx's body buffer.
    data = os.urandom(20 * 1024 * 1024)
    response = requests.post(
        url(proxy, "/upload/"),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert response.status_code == 200
    assert response.json() == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "files": [],
    }


def _trickle(proxy, target, chunks, pause):
    """Sends a POST whose body arrives in `chunks` with a pause before each; returns the
    echo answer and the wall-clock time just before the last chunk left the client."""
    body = b"".join(chunks)
    head = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: %d\r\n\r\n" % (target, len(body))
    ).encode()
    with rawhttp.RawConnection(proxy.host, proxy.port, timeout=120) as conn:
        conn.send(head)
        last_sent_at = None
        for i, chunk in enumerate(chunks):
            time.sleep(pause)
            if i == len(chunks) - 1:
                last_sent_at = time.time()
            conn.send(chunk)
        response = conn.read_response()
    assert response.status == 200, response
    return json.loads(response.body), last_sent_at, hashlib.sha256(body).hexdigest()


def test_slow_client_body_does_not_hold_a_gunicorn_worker(proxy):
    # A phone on a bad connection uploading a small form: 6 pieces over ~3 s.
    chunks = [b"voto=Sim&" * 100 for _ in range(6)]
    seen, last_sent_at, sha = _trickle(proxy, "/echo/trickle-%s" % uuid.uuid4().hex, chunks, 0.5)
    # Django began handling the request only after the client's last byte had left: the
    # worker was never parked waiting on the client.
    assert seen["started_at"] >= last_sent_at
    assert seen["body_sha256"] == sha


def test_slow_client_with_a_body_over_the_memory_buffer_is_still_buffered(proxy):
    chunks = [os.urandom(5 * 1024 * 1024) for _ in range(4)]
    seen, last_sent_at, sha = _trickle(proxy, "/echo/trickle-big-%s" % uuid.uuid4().hex, chunks, 0.5)
    assert seen["started_at"] >= last_sent_at
    assert seen["body_length"] == 20 * 1024 * 1024
    assert seen["body_sha256"] == sha


# --------------------------------------------------------------------------------------
# Upstream failures
# --------------------------------------------------------------------------------------
@pytest.fixture(params=["nginx", "edge"])
def proxy_factory(request):
    """Builds a proxy of either kind with other settings: factory(name, **settings)."""
    if request.param == "nginx":
        factory = request.getfixturevalue("nginx_factory")
    else:
        factory = request.getfixturevalue("edge_factory")
    return factory


def test_gunicorn_down_gives_502_with_the_error_page(proxy_factory, workdir):
    missing = os.path.join(workdir, "sem-gunicorn.sock")
    proxy = proxy_factory("down-%s" % uuid.uuid4().hex[:6], upstream_socket=missing)
    response = rawhttp.fetch(proxy, "GET", "/materia/1")
    assert response.status == 502
    assert ERROR_PAGE_MARKER.encode() in response.body
    # Files need no Gunicorn.
    assert rawhttp.fetch(proxy, "GET", "/static/digitos.txt").body == b"0123456789"


def test_gunicorn_refusing_connections_gives_502(proxy_factory, workdir):
    # A socket file with nobody listening (Gunicorn crashed and left it behind).
    stale = os.path.join(workdir, "stale-%s.sock" % uuid.uuid4().hex[:6])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    proxy = proxy_factory("stale-%s" % uuid.uuid4().hex[:6], upstream_socket=stale)
    response = rawhttp.fetch(proxy, "GET", "/api/materia/materialegislativa/1/")
    assert response.status == 502


def test_view_slower_than_the_read_timeout_gives_504(proxy_factory):
    proxy = proxy_factory("timeout-%s" % uuid.uuid4().hex[:6], read_timeout="2s")
    response = rawhttp.fetch(proxy, "GET", "/slow/?s=6")
    assert response.status == 504
    assert ERROR_PAGE_MARKER.encode() in response.body
    # A view within the timeout still answers.
    fast = rawhttp.fetch(proxy, "GET", "/slow/?s=0.1")
    assert fast.status == 200
    assert json.loads(fast.body) == {"slept": 0.1}


def test_slow_view_within_the_default_timeout_answers(proxy):
    response = rawhttp.fetch(proxy, "GET", "/slow/?s=1.5")
    assert response.status == 200
    assert json.loads(response.body) == {"slept": 1.5}


# --------------------------------------------------------------------------------------
# /api/ CORS
# --------------------------------------------------------------------------------------
def test_api_preflight_is_answered_204_by_the_proxy(proxy, gunicorn):
    target = "/api/preflight-%s/" % uuid.uuid4().hex
    response = rawhttp.fetch(
        proxy,
        "OPTIONS",
        target,
        [
            ("Origin", "https://app.exemplo.org"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type"),
        ],
    )
    assert response.status == 204
    assert response.body == b""
    assert response.get("Access-Control-Allow-Origin") == "*"
    assert response.get("Access-Control-Allow-Credentials") == "true"
    assert response.get("Access-Control-Allow-Methods") == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert response.get("Access-Control-Allow-Headers") == CORS_ALLOW_HEADERS
    assert response.get("Access-Control-Max-Age") == "1728000"
    assert target not in {hit["path"] for hit in gunicorn.hits()}


def test_api_answers_carry_cors_headers(proxy):
    response = rawhttp.fetch(
        proxy, "GET", "/api/materia/materialegislativa/1/", [("Origin", "https://app.exemplo.org")]
    )
    assert response.status == 200
    assert response.get("Access-Control-Allow-Origin") == "*"
    assert response.get("Access-Control-Allow-Credentials") == "true"
    assert json.loads(response.body)["numero"] == 1


def test_pages_outside_the_api_carry_no_cors_headers(proxy):
    response = rawhttp.fetch(proxy, "GET", "/materia/1", [("Origin", "https://app.exemplo.org")])
    assert response.status == 200
    assert response.get("Access-Control-Allow-Origin") is None


# --------------------------------------------------------------------------------------
# Legacy PDF reports (the Django fallback)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        "/relatorios/1/materia-tramitacao",
        "/relatorios/1/etiqueta-materia-legislativa",
        "/relatorios/1/2025/etiqueta-protocolo",
        "/relatorios/1/sessao-plenaria-pdf",
    ],
)
def test_legacy_report_links_answer_a_pdf(proxy, target):
    # Today both proxies hand these to Django; when the edge renders PDFs itself (a `pdf`
    # route), gunicorn.pdf_hits() is how a test proves Django was not asked.
    response = rawhttp.fetch(proxy, "GET", target)
    assert response.status == 200
    assert response.get("Content-Type") == "application/pdf"
    assert response.body.startswith(b"%PDF-")
