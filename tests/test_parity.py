"""Parity between nginx (SAPL's mainline config) and sapl-edge, request by request.

Each case goes once through nginx and once through sapl-edge, both in front of the same
Gunicorn. What Django saw (the /echo/ view) and what the client got must be the same,
except for what must differ:
  - the client gets its own Server, Date, connection-management headers, and sapl-edge
    adds X-Request-ID;
  - Django sees X-Request-ID and X-Forwarded-Proto only from sapl-edge (nginx's mainline
    config sets neither), and each proxy manages its own upstream connection.
Those differences are asserted on their own in test_forwarding.py.
"""
import gzip
import json
import re

import pytest

import rawhttp

# Django-side headers each proxy handles on purpose differently (see module docstring).
UPSTREAM_HEADERS_THAT_DIFFER = {
    "HTTP_X_REQUEST_ID",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_CONNECTION",
    "HTTP_KEEP_ALIVE",
}
# Echo fields that describe the moment or the worker, not the request.
ECHO_FIELDS_THAT_DIFFER = {"started_at", "body_done_at", "pid"}

# Client-side headers that may differ between any two servers.
RESPONSE_HEADERS_THAT_DIFFER = {"server", "date", "x-request-id", "connection", "keep-alive"}


def send(server, raw, head_request=False):
    response, _ = rawhttp.request(server.host, server.port, raw, head_request=head_request)
    return response


def what_django_saw(server, raw):
    response = send(server, raw)
    assert response.status == 200, response
    seen = json.loads(response.body)
    for field in ECHO_FIELDS_THAT_DIFFER:
        seen.pop(field)
    for name in UPSTREAM_HEADERS_THAT_DIFFER:
        seen["headers"].pop(name, None)
    return seen


ECHO_CASES = {
    "plain GET with a query": rawhttp.build("GET", "/echo/materia?ano=2025&tipo=PL"),
    "encoded path and query": rawhttp.build(
        "GET", "/echo/ata%20sess%C3%A3o/%7Eitem?q=vota%C3%A7%C3%A3o&x=a%2Fb"
    ),
    "browser-like headers and cookies": rawhttp.build(
        "GET",
        "/echo/painel",
        [
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
            ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
            ("Accept-Language", "pt-BR,pt;q=0.8"),
            ("Cookie", "sessionid=abc123; csrftoken=def456"),
            ("Referer", "https://camara.example.gov.br/sessao/1"),
            ("X-Requested-With", "XMLHttpRequest"),
        ],
    ),
    "Host with a port, kept verbatim": rawhttp.build(
        "GET", "/echo/host", host="Camara.Example.gov.br:8443"
    ),
    "repeated header lines": rawhttp.build(
        "GET", "/echo/repeat", [("X-Votante", "1"), ("X-Votante", "2")]
    ),
    "POST form body": rawhttp.build(
        "POST",
        "/echo/voto-individual/",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"voto=Sim&parlamentar=3&csrfmiddlewaretoken=x",
    ),
    "PUT JSON body": rawhttp.build(
        "PUT",
        "/echo/api/materia/1/",
        [("Content-Type", "application/json")],
        json.dumps({"ementa": "Dispõe sobre hortas comunitárias"}).encode(),
    ),
    "DELETE without body": rawhttp.build("DELETE", "/echo/api/materia/1/"),
    "chunked request body": (
        b"POST /echo/chunked HTTP/1.1\r\nHost: sapl.test\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    "client X-Forwarded-For is kept and extended": rawhttp.build(
        "GET", "/echo/xff", [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")]
    ),
    "Authorization header": rawhttp.build(
        "GET", "/echo/api/auth", [("Authorization", "Token 0123456789abcdef")]
    ),
}


@pytest.mark.parametrize("case", sorted(ECHO_CASES))
def test_django_sees_the_same_request_through_both_proxies(case, nginx, edge):
    raw = ECHO_CASES[case]
    through_nginx = what_django_saw(nginx, raw)
    through_edge = what_django_saw(edge, raw)
    assert through_edge == through_nginx


def test_chunked_body_arrives_with_its_length_and_hash(proxy):
    seen = json.loads(send(proxy, ECHO_CASES["chunked request body"]).body)
    assert seen["body_length"] == 11
    # sha256(b"hello world")
    assert seen["body_sha256"] == (
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    )
    assert seen["headers"]["CONTENT_LENGTH"] == "11"


def comparable_response(response):
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers
        if name.lower() not in RESPONSE_HEADERS_THAT_DIFFER and name.lower() != "vary"
    )
    # Vary lists header names, which are case-insensitive, and may be split over lines.
    vary = sorted(
        {token.strip().lower() for value in response.get_all("Vary") for token in value.split(",")}
        - {""}
    )
    if vary:
        headers.append(("vary", ", ".join(vary)))
    body = response.body
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    # Framing depends on whether the proxy compressed: compare content, not framing.
    if response.get("Content-Encoding"):
        headers = [h for h in headers if h[0] not in ("content-length", "transfer-encoding")]
    return response.status, headers, body


CLIENT_CASES = {
    "matéria page": ("GET", "/materia/1", []),
    "missing matéria": ("GET", "/materia/999999", []),
    "API JSON": ("GET", "/api/materia/materialegislativa/2/", []),
    "API JSON gzip asked": ("GET", "/api/materia/materialegislativa/", [("Accept-Encoding", "gzip")]),
    "painel anonymous": ("GET", "/painel/1/dados", []),
    "login form": ("GET", "/login/", []),
    "absolute redirect": ("GET", "/redirect/?to=http://10.1.2.3:8000/materia/1", []),
    "two cookies": ("GET", "/set-cookies/", []),
    "legacy PDF report": ("GET", "/relatorios/1/etiqueta-materia-legislativa", []),
    "metrics blocked": ("GET", "/metrics", []),
    "static file": ("GET", "/static/digitos.txt", []),
    "media file with accent": ("GET", "/media/ata%20sess%C3%A3o.pdf", []),
}


@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_client_gets_the_same_answer_through_both_proxies(case, nginx, edge):
    method, target, headers = CLIENT_CASES[case]
    raw = rawhttp.build(method, target, headers)
    through_nginx = comparable_response(send(nginx, raw))
    through_edge = comparable_response(send(edge, raw))
    if case == "login form":
        # A fresh CSRF token per request: compare everything but the token's value.
        through_nginx = _without_csrf(through_nginx)
        through_edge = _without_csrf(through_edge)
    if case in ("static file", "media file with accent"):
        # Validators are the server's own choice (nginx's ETag is mtime-size in hex);
        # test_files.py checks that each proxy's validators work.
        through_nginx = _without(through_nginx, {"etag", "accept-ranges"})
        through_edge = _without(through_edge, {"etag", "accept-ranges"})
    assert through_edge == through_nginx


def _without(comparable, names):
    status, headers, body = comparable
    return status, [h for h in headers if h[0] not in names], body


def _without_csrf(comparable):
    status, headers, body = comparable
    headers = [
        (n, re.sub(r"expires=[^;]+", "expires=X", re.sub(r"csrftoken=[A-Za-z0-9]+", "csrftoken=X", v)))
        for n, v in headers
    ]
    body = re.sub(rb'value="[A-Za-z0-9]{32,}"', b'value="X"', body)
    return status, headers, body
