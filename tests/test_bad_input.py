"""Hostile and broken requests: each must end in a clean 4xx or a close, never reach
Gunicorn in an ambiguous form, and never take the proxy down.

Every test ends by checking the proxy still serves a normal page, and looks in Django's
hit record (testbed saplbed/hits.py) for the unique path it sent.
"""
import json
import socket
import time
import uuid

import rawhttp


def unique(prefix):
    return "/echo/%s-%s" % (prefix, uuid.uuid4().hex)


def paths_django_saw(gunicorn):
    return {hit["path"] for hit in gunicorn.hits()}


def assert_still_serving(proxy):
    if proxy.kind == "edge":
        assert proxy.process.alive(), "sapl-edge exited"
    response = rawhttp.fetch(proxy, "GET", "/materia/1")
    assert response.status == 200


def test_content_length_with_chunked_is_refused_and_closed(proxy, gunicorn):
    outer, smuggled = unique("smuggle"), unique("smuggled")
    raw = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nGET %s HTTP/1.1\r\nHost: sapl.test\r\n\r\n" % (outer, smuggled)
    ).encode()
    response, closed = rawhttp.request(proxy.host, proxy.port, raw, check_close=True)
    assert response.status == 400
    assert closed is True
    seen = paths_django_saw(gunicorn)
    assert outer not in seen
    assert smuggled not in seen
    assert_still_serving(proxy)


def test_conflicting_duplicate_content_length_is_refused(proxy, gunicorn):
    target = unique("dup-cl")
    raw = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
        "\r\nhello!" % target
    ).encode()
    response, closed = rawhttp.request(proxy.host, proxy.port, raw, check_close=True)
    assert response.status == 400
    assert closed is True
    assert target not in paths_django_saw(gunicorn)
    assert_still_serving(proxy)


def test_oversized_header_is_refused_before_gunicorn(proxy, gunicorn):
    target = unique("big-header")
    raw = rawhttp.build("GET", target, [("X-Grande", "a" * 64 * 1024)])
    response, _ = rawhttp.request(proxy.host, proxy.port, raw)
    # RFC 6585 names 431 for this; SAPL's nginx answers a plain 400
    # ("Request Header Or Cookie Too Large").
    assert response.status == (400 if proxy.kind == "nginx" else 431)
    assert target not in paths_django_saw(gunicorn)
    assert_still_serving(proxy)


def test_many_headers_adding_up_to_too_much_are_refused(proxy, gunicorn):
    target = unique("many-headers")
    headers = [("X-Parte-%d" % i, "b" * 4000) for i in range(40)]
    response, _ = rawhttp.request(proxy.host, proxy.port, rawhttp.build("GET", target, headers))
    assert response.status == (400 if proxy.kind == "nginx" else 431)
    assert target not in paths_django_saw(gunicorn)
    assert_still_serving(proxy)


def test_nul_byte_in_a_header_value_is_refused(proxy, gunicorn):
    target = unique("nul-header")
    raw = ("GET %s HTTP/1.1\r\nHost: sapl.test\r\nX-Nulo: a\x00b\r\n\r\n" % target).encode()
    response, _ = rawhttp.request(proxy.host, proxy.port, raw)
    assert response.status == 400
    assert target not in paths_django_saw(gunicorn)
    assert_still_serving(proxy)


def test_nul_byte_in_the_request_line_is_refused(proxy, gunicorn):
    target = unique("nul-line")
    raw = ("GET %s\x00x HTTP/1.1\r\nHost: sapl.test\r\n\r\n" % target).encode()
    response, _ = rawhttp.request(proxy.host, proxy.port, raw)
    assert response.status == 400
    assert not any(path.startswith(target) for path in paths_django_saw(gunicorn))
    assert_still_serving(proxy)


def test_garbage_request_line_is_refused(proxy):
    response, _ = rawhttp.request(proxy.host, proxy.port, b"OLA MUNDO\r\n\r\n")
    assert response.status == 400
    assert_still_serving(proxy)


def test_client_that_stops_mid_body_never_reaches_gunicorn(proxy, gunicorn):
    target = unique("mid-body")
    head = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 1000000\r\n\r\n" % target
    ).encode()
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(head + b"x" * 10000)
        time.sleep(0.3)
    # The proxy buffers the body: an incomplete one never occupies a Gunicorn worker.
    assert_still_serving(proxy)
    assert target not in paths_django_saw(gunicorn)


def test_client_that_resets_mid_body_does_not_crash_the_proxy(proxy, gunicorn):
    target = unique("reset-body")
    head = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Length: 50000000\r\n\r\n" % target
    ).encode()
    s = socket.create_connection((proxy.host, proxy.port), timeout=10)
    s.sendall(head + b"y" * 200000)
    # SO_LINGER 0: close with a TCP reset instead of a FIN.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert_still_serving(proxy)
    assert target not in paths_django_saw(gunicorn)


def test_bytes_after_the_declared_body_are_never_part_of_it(proxy, gunicorn):
    outer, pipelined = unique("declared"), unique("pipelined")
    raw = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nContent-Length: 5\r\n\r\nhello"
        "GET %s HTTP/1.1\r\nHost: sapl.test\r\nConnection: close\r\n\r\n" % (outer, pipelined)
    ).encode()
    with rawhttp.RawConnection(proxy.host, proxy.port) as conn:
        conn.send(raw)
        first = conn.read_response()
        assert first.status == 200
        seen = json.loads(first.body)
        assert seen["body_length"] == 5
        # sha256(b"hello")
        assert seen["body_sha256"] == (
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        )
        # A pipelined request is either answered as a request of its own or dropped with
        # the connection (RFC 9112 lets a server close instead); both are safe.
        try:
            second = conn.read_response()
        except rawhttp.ConnectionClosed:
            second = None
    if second is not None:
        assert second.status == 200
        assert json.loads(second.body)["path"] == pipelined
    methods = {hit["path"]: hit["method"] for hit in gunicorn.hits()}
    assert methods[outer] == "POST"
    assert methods.get(pipelined, "GET") == "GET"
    assert_still_serving(proxy)


def test_a_target_that_is_not_a_path_is_refused_not_routed_as_slash(proxy, gunicorn):
    # "wp-login.php" parses as an authority, whose path would be "/": the probe rules and
    # the route table would never see it.
    response, _ = rawhttp.request(
        proxy.host, proxy.port,
        b"GET wp-login.php HTTP/1.1\r\nHost: sapl.test\r\nConnection: close\r\n\r\n")
    assert response.status == 400
    assert_still_serving(proxy)


def test_a_request_line_over_8_kib_is_414(proxy, gunicorn):
    target = unique("long") + "?q=" + "a" * 9000
    response, _ = rawhttp.request(proxy.host, proxy.port, rawhttp.build("GET", target))
    assert response.status == 414
    assert not any(p.startswith(target[:40]) for p in paths_django_saw(gunicorn))
    assert_still_serving(proxy)


def test_a_malformed_chunk_is_the_clients_error(proxy, gunicorn):
    target = unique("bad-chunk")
    raw = (
        "POST %s HTTP/1.1\r\nHost: sapl.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        "zz\r\nhello\r\n0\r\n\r\n" % target
    ).encode()
    response, _ = rawhttp.request(proxy.host, proxy.port, raw)
    assert response.status == 400
    assert target not in paths_django_saw(gunicorn)
    assert_still_serving(proxy)
