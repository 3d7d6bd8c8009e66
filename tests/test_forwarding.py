"""What each proxy tells Django about the request, and what it hands back to the browser.

Where nginx (SAPL's mainline config) and sapl-edge differ on purpose, each proxy's own
behaviour is asserted: nginx passes a client's X-Forwarded-Proto through (so a client can
flip Django's request.is_secure()), sapl-edge sets it from its listener; only sapl-edge
sets X-Request-ID and drops headers the client named in Connection.
"""
import json
import re
import time
import uuid

import pytest

import rawhttp


def echo(server, target="/echo/", headers=(), **kwargs):
    response = rawhttp.fetch(server, "GET", target, headers, **kwargs)
    assert response.status == 200, response
    return response, json.loads(response.body)


def test_client_address_is_appended_to_x_forwarded_for(proxy):
    _, seen = echo(proxy)
    assert seen["headers"]["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"

    _, seen = echo(proxy, headers=[("X-Forwarded-For", "203.0.113.7, 198.51.100.2")])
    # SAPL reads the first entry (login rate limit, IP stored with each vote): it must
    # still be the client's claim, with the real peer appended after it.
    assert seen["headers"]["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 198.51.100.2, 127.0.0.1"


def test_host_header_reaches_django_verbatim(proxy):
    _, seen = echo(proxy, host="Camara.Exemplo.leg.br:8443")
    assert seen["headers"]["HTTP_HOST"] == "Camara.Exemplo.leg.br:8443"
    assert seen["host"] == "Camara.Exemplo.leg.br:8443"


def test_client_x_forwarded_proto_is_each_proxys_documented_behaviour(proxy):
    _, seen = echo(proxy, headers=[("X-Forwarded-Proto", "https")])
    if proxy.kind == "nginx":
        # SAPL's nginx passes the client's claim on, and Gunicorn believes it from its
        # unix socket: the weakness sapl-edge fixes.
        assert seen["headers"].get("HTTP_X_FORWARDED_PROTO") == "https"
        assert seen["is_secure"] is True
    else:
        assert seen["headers"].get("HTTP_X_FORWARDED_PROTO") == "http"
        assert seen["is_secure"] is False


@pytest.mark.edge_only
def test_edge_believes_x_forwarded_proto_only_from_trusted_hops(edge_factory):
    trusting = edge_factory("edge-trusting", trusted_hops=["127.0.0.1/32"])
    _, seen = echo(trusting, headers=[("X-Forwarded-Proto", "https")])
    assert seen["headers"]["HTTP_X_FORWARDED_PROTO"] == "https"
    assert seen["is_secure"] is True

    _, seen = echo(trusting)
    assert seen["headers"]["HTTP_X_FORWARDED_PROTO"] == "http"


@pytest.mark.edge_only
def test_edge_reuses_the_clients_request_id_and_returns_it(edge):
    response, seen = echo(edge, headers=[("X-Request-ID", "sapl-req-4f2a9c")])
    assert seen["headers"]["HTTP_X_REQUEST_ID"] == "sapl-req-4f2a9c"
    assert response.get("X-Request-ID") == "sapl-req-4f2a9c"


@pytest.mark.edge_only
def test_edge_generates_a_request_id_and_logs_it(edge):
    response, seen = echo(edge, target="/echo/rid-%s" % uuid.uuid4().hex)
    generated = response.get("X-Request-ID")
    assert generated and re.fullmatch(r"[!-~]{8,128}", generated)
    assert seen["headers"]["HTTP_X_REQUEST_ID"] == generated

    # The access log line for this request carries the same id. It is written after the
    # answer went out, so give it a moment to land in the log file.
    assert _log_mentions(edge.process.log_path, generated.encode())


def _log_mentions(path, needle, wait=10.0):
    deadline = time.monotonic() + wait
    while True:
        with open(path, "rb") as f:
            if needle in f.read():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


@pytest.mark.edge_only
def test_edge_replaces_a_request_id_that_could_forge_log_lines(edge):
    response, seen = echo(edge, headers=[("X-Request-ID", "a b\tc")])
    assert response.get("X-Request-ID") not in (None, "", "a b\tc")
    assert seen["headers"]["HTTP_X_REQUEST_ID"] == response.get("X-Request-ID")


def test_keep_alive_and_te_never_reach_gunicorn(proxy):
    _, seen = echo(proxy, headers=[("Keep-Alive", "timeout=5"), ("TE", "trailers")])
    assert "HTTP_KEEP_ALIVE" not in seen["headers"]
    assert "HTTP_TE" not in seen["headers"]


@pytest.mark.edge_only
def test_headers_named_in_connection_never_reach_gunicorn(edge):
    # nginx (mainline) forwards X-Debug here: it does not read Connection's tokens.
    response, closed = rawhttp.fetch(
        edge,
        "GET",
        "/echo/hop",
        [
            ("Connection", "close, X-Debug"),
            ("X-Debug", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Kept", "yes"),
        ],
        check_close=True,
    )
    seen = json.loads(response.body)
    for name in ("HTTP_X_DEBUG", "HTTP_KEEP_ALIVE", "HTTP_TE"):
        assert name not in seen["headers"], name
    assert seen["headers"]["HTTP_X_KEPT"] == "yes"
    # The client asked to close: the edge closes after answering.
    assert closed is True
    # And the edge goes on serving.
    assert rawhttp.fetch(edge, "GET", "/materia/1").status == 200


def test_absolute_location_is_not_rewritten(proxy):
    response = rawhttp.fetch(proxy, "GET", "/redirect/?to=http://10.1.2.3:8000/materia/7")
    assert response.status == 302
    assert response.get_all("Location") == ["http://10.1.2.3:8000/materia/7"]

    response = rawhttp.fetch(proxy, "GET", "/redirect/", host="camara.exemplo.leg.br")
    assert response.get_all("Location") == ["http://camara.exemplo.leg.br/materia/1"]


def test_two_set_cookie_lines_arrive_byte_identical(proxy, gunicorn):
    raw = rawhttp.build("GET", "/set-cookies/")
    direct = rawhttp.unix_raw(gunicorn.socket, raw)
    direct_lines = [
        line for line in direct.split(b"\r\n\r\n")[0].split(b"\r\n")
        if line.lower().startswith(b"set-cookie:")
    ]
    assert len(direct_lines) == 2

    response = rawhttp.fetch(proxy, "GET", "/set-cookies/")
    assert response.raw_lines("Set-Cookie") == direct_lines


def _login(server, username, password):
    """Logs in through the proxy the way a browser does; returns the login answer and the
    cookie jar (name -> value)."""
    form = rawhttp.fetch(server, "GET", "/login/?next=/painel/1/dados")
    assert form.status == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.body).group(1)
    csrf_cookie = re.match(r"csrftoken=([^;]+)", form.get("Set-Cookie")).group(1)
    body = b"csrfmiddlewaretoken=%s&username=%s&password=%s&next=/painel/1/dados" % (
        token, username.encode(), password.encode()
    )
    response = rawhttp.fetch(
        server,
        "POST",
        "/login/",
        [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", "csrftoken=%s" % csrf_cookie),
        ],
        body,
    )
    jar = {}
    for value in response.get_all("Set-Cookie"):
        name, _, rest = value.partition("=")
        jar[name] = rest.split(";")[0]
    return response, jar


def test_login_sets_two_separate_cookies_and_opens_the_painel(proxy, admin_credentials):
    anonymous = rawhttp.fetch(proxy, "GET", "/painel/1/dados")
    assert anonymous.status == 302
    assert anonymous.get("Location") == "/login/?next=/painel/1/dados"

    response, jar = _login(proxy, *admin_credentials)
    assert response.status == 302
    assert response.get("Location") == "/painel/1/dados"
    lines = response.raw_lines("Set-Cookie")
    assert len(lines) == 2
    assert sorted(line.split(b"=")[0].split(b":")[1].strip() for line in lines) == [
        b"csrftoken",
        b"sessionid",
    ]
    # Each line carries exactly one cookie's attributes (never two folded together).
    assert all(line.count(b"Path=/") == 1 for line in lines)

    cookie = "sessionid=%s; csrftoken=%s" % (jar["sessionid"], jar["csrftoken"])
    dados = rawhttp.fetch(proxy, "GET", "/painel/1/dados", [("Cookie", cookie)])
    assert dados.status == 200
    painel = json.loads(dados.body)
    assert painel["sessao_plenaria"] == "5ª Ordinária da 1ª Sessão Legislativa da 19ª Legislatura"
    assert painel["num_presentes"] == len(painel["presentes"]) > 0


def test_django_metrics_stay_blocked_behind_the_proxy(proxy):
    # Gunicorn's unix socket gives Django an empty REMOTE_ADDR, which SAPL refuses.
    response = rawhttp.fetch(proxy, "GET", "/metrics")
    assert response.status == 403
    assert b"saplbed_up" not in response.body


def test_several_requests_share_one_client_connection(proxy):
    with rawhttp.RawConnection(proxy.host, proxy.port) as conn:
        for target in ("/materia/1", "/api/materia/materialegislativa/1/", "/static/digitos.txt"):
            conn.send(rawhttp.build("GET", target))
            assert conn.read_response().status == 200


@pytest.mark.edge_only
def test_edge_exposes_health_and_prometheus_metrics_on_its_own_listener(edge):
    class Metrics:
        host, port = edge.host, edge.metrics_port

    rawhttp.fetch(edge, "GET", "/materia/1")
    assert rawhttp.fetch(Metrics, "GET", "/healthz").status == 200
    assert rawhttp.fetch(Metrics, "GET", "/readyz").status == 200
    metrics = rawhttp.fetch(Metrics, "GET", "/metrics")
    assert metrics.status == 200
    assert b"sapl_edge_" in metrics.body


def test_header_names_with_underscores_never_reach_django(proxy):
    # WSGI turns `-` and `_` alike into HTTP_X_FORWARDED_PROTO: an underscored twin would
    # join the real header's value. nginx drops such names (underscores_in_headers off).
    _, seen = echo(proxy, headers=[("X_Forwarded_Proto", "https"), ("X_Real_IP", "10.9.9.9")])
    if proxy.kind == "edge":
        assert seen["headers"]["HTTP_X_FORWARDED_PROTO"] == "http"
        assert seen["is_secure"] is False
    else:
        assert "https" not in seen["headers"].get("HTTP_X_FORWARDED_PROTO", "")
    assert "HTTP_X_REAL_IP" not in seen["headers"]


@pytest.mark.edge_only
def test_gunicorn_does_not_name_itself_to_clients(edge):
    response, _ = echo(edge)
    assert response.get("Server") == "sapl-edge"
