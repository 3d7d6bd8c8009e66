"""Static and media files as browsers, PDF viewers and bots fetch them, through each proxy.

Expected values come from RFC 9110 (ranges, conditional requests) and from what SAPL's
nginx serves today: `Cache-Control: public, max-age=5400` on /static/, no directory
listing, nothing from outside the two roots.
"""
import gzip

import pytest

import rawhttp
from conftest import CSS, MIL_BYTES, OUTSIDE_MARKER, SESSAO_PDF

ETC_PASSWD_MARKER = b"root:x:0:0"


# --------------------------------------------------------------------------------------
# Range requests (cases from the field, issue 2)
# --------------------------------------------------------------------------------------
def test_range_past_the_end_of_a_1000_byte_file_returns_the_whole_file_as_206(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/mil.bin", [("Range", "bytes=0-3145727")])
    assert response.status == 206
    assert response.get("Content-Range") == "bytes 0-999/1000"
    assert response.body == MIL_BYTES


def test_range_starting_at_the_file_length_is_416(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/mil.bin", [("Range", "bytes=1000-")])
    assert response.status == 416
    assert response.get("Content-Range") == "bytes */1000"
    assert MIL_BYTES[:16] not in response.body


def test_suffix_range_returns_the_last_bytes(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/digitos.txt", [("Range", "bytes=-4")])
    assert response.status == 206
    assert response.get("Content-Range") == "bytes 6-9/10"
    assert response.body == b"6789"


def test_empty_suffix_range_is_416(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/digitos.txt", [("Range", "bytes=-0")])
    assert response.status == 416
    assert response.get("Content-Range") == "bytes */10"


def test_suffix_longer_than_the_file_returns_the_whole_file(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/digitos.txt", [("Range", "bytes=-20")])
    assert response.body == b"0123456789"
    # 206 with the full range, or a plain 200: both give the viewer the whole file.
    assert response.status in (200, 206)
    if response.status == 206:
        assert response.get("Content-Range") == "bytes 0-9/10"


def test_pdf_viewer_reads_the_first_block_of_an_ata(proxy):
    response = rawhttp.fetch(
        proxy, "GET", "/media/ata%20sess%C3%A3o.pdf", [("Range", "bytes=0-99")]
    )
    assert response.status == 206
    assert response.get("Content-Range") == "bytes 0-99/%d" % len(SESSAO_PDF)
    assert response.body == SESSAO_PDF[:100]


# --------------------------------------------------------------------------------------
# Names and roots
# --------------------------------------------------------------------------------------
def test_percent_encoded_utf8_name_serves_the_ata_file(proxy):
    response = rawhttp.fetch(proxy, "GET", "/media/ata%20sess%C3%A3o.pdf")
    assert response.status == 200
    assert response.body == SESSAO_PDF
    assert response.get("Content-Type") == "application/pdf"


TRAVERSALS = [
    "/static/%2e%2e/%2e%2e/segredo.txt",
    "/static/%2e%2e/segredo.txt",
    "/static/..%2f..%2fsegredo.txt",
    "/static/%2e%2e%2f%2e%2e%2fsegredo.txt",
    "/static/subdir/../../segredo.txt",
    "/static/..%5c..%5csegredo.txt",
    "/media/..%2f..%2fetc/passwd",
    "/media/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc/passwd",
    "/media/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/media/%252e%252e/%252e%252e/segredo.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_byte_from_outside_the_roots(proxy, target):
    response = rawhttp.fetch(proxy, "GET", target)
    assert response.status in (400, 404)
    assert OUTSIDE_MARKER not in response.body
    assert ETC_PASSWD_MARKER not in response.body


@pytest.mark.edge_only
def test_symlink_leaving_the_media_root_is_not_followed(edge):
    # nginx (mainline, disable_symlinks off) follows it; sapl-edge must not.
    response = rawhttp.fetch(edge, "GET", "/media/atalho-fora/segredo.txt")
    assert response.status in (403, 404)
    assert OUTSIDE_MARKER not in response.body


def test_no_directory_listing(proxy):
    for target in ("/static/", "/static/subdir/", "/media/", "/media/sapl/"):
        response = rawhttp.fetch(proxy, "GET", target)
        assert response.status in (403, 404), target
        assert b"dentro.txt" not in response.body
        assert b"private" not in response.body


def test_missing_static_file_is_404(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/nao-existe.css")
    assert response.status == 404


def test_nul_byte_in_a_file_path_is_refused_cleanly(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/digitos.txt%00.css")
    assert response.status in (400, 404)
    assert rawhttp.fetch(proxy, "GET", "/static/digitos.txt").body == b"0123456789"


# --------------------------------------------------------------------------------------
# Headers, validators, HEAD
# --------------------------------------------------------------------------------------
def test_static_files_are_cacheable_for_90_minutes(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/sapl.css")
    assert response.status == 200
    assert response.get_all("Cache-Control") == ["public, max-age=5400"]
    assert response.get("Content-Type").startswith("text/css")


def test_media_files_carry_no_static_cache_policy(proxy):
    response = rawhttp.fetch(proxy, "GET", "/media/ata%20sess%C3%A3o.pdf")
    assert response.get_all("Cache-Control") == []


def test_etag_revalidation_answers_304_without_body(proxy):
    first = rawhttp.fetch(proxy, "GET", "/static/sapl.css")
    etag = first.get("ETag")
    assert etag
    again = rawhttp.fetch(proxy, "GET", "/static/sapl.css", [("If-None-Match", etag)])
    assert again.status == 304
    assert again.body == b""
    assert again.get("ETag") == etag

    other = rawhttp.fetch(proxy, "GET", "/static/sapl.css", [("If-None-Match", '"outro"')])
    assert other.status == 200
    assert other.body == CSS


def test_last_modified_revalidation_answers_304(proxy):
    first = rawhttp.fetch(proxy, "GET", "/static/sapl.css")
    last_modified = first.get("Last-Modified")
    assert last_modified and last_modified.endswith("GMT")
    again = rawhttp.fetch(
        proxy, "GET", "/static/sapl.css", [("If-Modified-Since", last_modified)]
    )
    assert again.status == 304
    assert again.body == b""

    stale = rawhttp.fetch(
        proxy, "GET", "/static/sapl.css", [("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")]
    )
    assert stale.status == 200
    assert stale.body == CSS


def test_head_of_a_static_file_sends_headers_only(proxy):
    with rawhttp.RawConnection(proxy.host, proxy.port) as conn:
        conn.send(rawhttp.build("HEAD", "/static/sapl.css"))
        head = conn.read_response(head_request=True)
        assert head.status == 200
        assert head.get("Content-Length") == str(len(CSS))
        # Had the server sent a body after the HEAD answer, this second answer on the
        # same connection would be garbled.
        conn.send(rawhttp.build("GET", "/static/digitos.txt"))
        after = conn.read_response()
        assert after.status == 200
        assert after.body == b"0123456789"


def test_head_of_a_proxied_page_sends_headers_only(proxy):
    with rawhttp.RawConnection(proxy.host, proxy.port) as conn:
        conn.send(rawhttp.build("HEAD", "/materia/1"))
        head = conn.read_response(head_request=True)
        assert head.status == 200
        assert head.get("Content-Type") == "text/html; charset=utf-8"
        conn.send(rawhttp.build("GET", "/static/digitos.txt"))
        assert conn.read_response().body == b"0123456789"


# --------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------
def _vary_tokens(response):
    return {
        token.strip().lower()
        for value in response.get_all("Vary")
        for token in value.split(",")
    }


def test_static_css_is_gzipped_with_vary(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/sapl.css", [("Accept-Encoding", "gzip")])
    assert response.status == 200
    assert response.get("Content-Encoding") == "gzip"
    assert "accept-encoding" in _vary_tokens(response)
    assert gzip.decompress(response.body) == CSS


def test_static_css_is_plain_for_clients_without_gzip(proxy):
    response = rawhttp.fetch(proxy, "GET", "/static/sapl.css")
    assert response.get("Content-Encoding") is None
    assert response.body == CSS


def test_django_html_is_gzipped_with_vary(proxy):
    response = rawhttp.fetch(proxy, "GET", "/materia/1", [("Accept-Encoding", "gzip, deflate")])
    assert response.status == 200
    assert response.get("Content-Encoding") == "gzip"
    assert "accept-encoding" in _vary_tokens(response)
    assert "Projeto de Lei Ordinária nº 1 de 2025" in gzip.decompress(response.body).decode()


def test_json_is_never_gzipped(proxy):
    api = rawhttp.fetch(
        proxy, "GET", "/api/materia/materialegislativa/", [("Accept-Encoding", "gzip")]
    )
    assert api.status == 200
    assert api.get("Content-Encoding") is None
    assert api.body.startswith(b'{"count": ')

    static = rawhttp.fetch(proxy, "GET", "/static/dados.json", [("Accept-Encoding", "gzip")])
    assert static.status == 200
    assert static.get("Content-Encoding") is None
