"""Views of the test bed: SAPL's shapes answered from SAPL's schema, and probes for tests.

SAPL-shaped views (what a chamber's users and bots hit):
  /materia/<id>                       HTML page of a matéria legislativa
  /api/...                            JSON, like SAPL's REST API
  /painel/<id>/dados                  the panel's polling JSON, login required
  /login/                             Django auth login (two Set-Cookie headers on success)
  /relatorios/...                     the legacy PDF reports, as a tiny PDF ("Django still
                                      renders" fallback: each hit is recorded, see hits.py)
  /metrics                            blocked when REMOTE_ADDR is empty, as in SAPL

Probes for the integration suite:
  /echo/...      what Django saw: method, path, query, headers, REMOTE_ADDR, is_secure, body
  /upload/       size and sha256 of an uploaded file or raw body
  /slow/?s=N     sleeps N seconds (read-timeout tests)
  /redirect/     302 with an absolute Location (proxies must not rewrite it)
  /set-cookies/  two Set-Cookie headers, one with a comma inside its Expires
  /__hits__      every request Django received (hits.py)
  /tiny/         the smallest proxied answer (load tests)
"""
import hashlib
import json
import time

from django.contrib.auth import login as auth_login
from django.contrib.auth.forms import AuthenticationForm
from django.db import connection
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.middleware.csrf import get_token
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt

from saplbed import hits as hits_log

READ_CHUNK = 64 * 1024


def _rows(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _drain(request):
    """Reads the request body as a stream: (length, sha256 hex, time the last byte came)."""
    digest = hashlib.sha256()
    length = 0
    while True:
        chunk = request.read(READ_CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    return length, digest.hexdigest(), time.time()


def home(request):
    return HttpResponse("<!DOCTYPE html><html><body><h1>SAPL test bed</h1></body></html>")


# --------------------------------------------------------------------------------------
# Matérias and API
# --------------------------------------------------------------------------------------
MATERIA_SQL = """
    SELECT m.id, m.numero, m.ano, m.ementa, m.data_apresentacao, m.em_tramitacao,
           t.sigla, t.descricao AS tipo
      FROM materia_materialegislativa m
      JOIN materia_tipomaterialegislativa t ON t.id = m.tipo_id
"""


def _materia_json(row):
    return {
        "id": row["id"],
        "__str__": "%s nº %s de %s" % (row["tipo"], row["numero"], row["ano"]),
        "numero": row["numero"],
        "ano": row["ano"],
        "sigla": row["sigla"],
        "ementa": row["ementa"],
        "data_apresentacao": row["data_apresentacao"].isoformat(),
        "em_tramitacao": row["em_tramitacao"],
    }


def materia(request, pk):
    rows = _rows(MATERIA_SQL + " WHERE m.id = %s", [pk])
    if not rows:
        raise Http404("matéria não encontrada")
    m = rows[0]
    title = escape("%s nº %s de %s" % (m["tipo"], m["numero"], m["ano"]))
    # Repeated paragraphs give the page the size of a real matéria page, so that gzip has
    # something to do.
    filler = "".join(
        "<p>Tramitação %d: %s</p>\n" % (i, escape(m["ementa"])) for i in range(40)
    )
    page = (
        "<!DOCTYPE html>\n<html lang=\"pt-br\"><head><meta charset=\"utf-8\">"
        "<title>%s</title><link rel=\"stylesheet\" href=\"/static/sapl.css\"></head>\n"
        "<body><h1>%s</h1>\n<p class=\"ementa\">%s</p>\n%s</body></html>\n"
        % (title, title, escape(m["ementa"]), filler)
    )
    return HttpResponse(page, content_type="text/html; charset=utf-8")


def api_root(request):
    return JsonResponse({"materia": "/api/materia/materialegislativa/"})


def api_materias(request):
    rows = _rows(MATERIA_SQL + " ORDER BY m.ano, m.numero")
    return JsonResponse({"count": len(rows), "results": [_materia_json(r) for r in rows]})


def api_materia(request, pk):
    rows = _rows(MATERIA_SQL + " WHERE m.id = %s", [pk])
    if not rows:
        return JsonResponse({"detail": "Não encontrado."}, status=404)
    return JsonResponse(_materia_json(rows[0]))


def api_blob(request, size):
    """A JSON document of about `size` bytes (the 100 KB proxied response of the load test)."""
    size = max(0, min(size, 16 * 1024 * 1024))
    return JsonResponse({"data": "x" * size})


def api_not_found(request):
    return JsonResponse({"detail": "Não encontrado."}, status=404)


def tiny(request):
    return HttpResponse(b"ok\n", content_type="text/plain")


# --------------------------------------------------------------------------------------
# Painel and login
# --------------------------------------------------------------------------------------
SESSAO_SQL = """
    SELECT s.id, s.numero, s.data_inicio, s.hora_inicio, s.tema_solene, s.finalizada,
           s.painel_aberto, t.nome AS tipo, sl.numero AS sessao_legislativa,
           l.numero AS legislatura
      FROM sessao_sessaoplenaria s
      JOIN sessao_tiposessaoplenaria t ON t.id = s.tipo_id
      JOIN parlamentares_sessaolegislativa sl ON sl.id = s.sessao_legislativa_id
      JOIN parlamentares_legislatura l ON l.id = s.legislatura_id
     WHERE s.id = %s
"""

PRESENTES_SQL = """
    SELECT pr.id, p.id AS parlamentar_id, p.nome_parlamentar AS nome,
           COALESCE((SELECT pa.sigla FROM parlamentares_filiacao f
                       JOIN parlamentares_partido pa ON pa.id = f.partido_id
                      WHERE f.parlamentar_id = p.id
                      ORDER BY f.data DESC LIMIT 1), '') AS partido
      FROM sessao_sessaoplenariapresenca pr
      JOIN parlamentares_parlamentar p ON p.id = pr.parlamentar_id
     WHERE pr.sessao_plenaria_id = %s
     ORDER BY p.nome_parlamentar
"""


def painel_dados(request, pk):
    if not request.user.is_authenticated:
        return HttpResponseRedirect("/login/?next=" + request.path)
    if not request.user.has_module_perms("painel"):
        return HttpResponseForbidden("sem permissão para o painel")

    rows = _rows(SESSAO_SQL, [pk])
    if not rows:
        return JsonResponse({"detail": "sessão não encontrada"}, status=404)
    s = rows[0]
    config = _rows("SELECT mostrar_voto FROM base_appconfig ORDER BY id DESC LIMIT 1")
    presentes = _rows(PRESENTES_SQL, [pk])
    for p in presentes:
        p["voto"] = ""

    return JsonResponse(
        {
            "sessao_plenaria": "%sª %s da %sª Sessão Legislativa da %sª Legislatura"
            % (s["numero"], s["tipo"], s["sessao_legislativa"], s["legislatura"]),
            "sessao_plenaria_data": s["data_inicio"].strftime("%d/%m/%Y"),
            "sessao_plenaria_hora_inicio": s["hora_inicio"],
            "sessao_solene": s["tipo"] == "Solene",
            "sessao_finalizada": bool(s["finalizada"]),
            "tema_solene": s["tema_solene"],
            # The four cronômetros live in the caller's Django session, as in SAPL.
            "cronometro_aparte": request.session.get("aparte", ""),
            "cronometro_discurso": request.session.get("discurso", ""),
            "cronometro_ordem": request.session.get("ordem", ""),
            "cronometro_consideracoes": request.session.get("consideracoes", ""),
            "status_painel": s["painel_aberto"],
            "brasao": None,
            "mostrar_voto": bool(config and config[0]["mostrar_voto"]),
            "presentes": presentes,
            "num_presentes": len(presentes),
            "oradores": [],
            "msg_painel": "",
        },
        json_dumps_params={"ensure_ascii": False},
    )


LOGIN_FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Entrar - SAPL</title></head><body>
<form method="post" action="/login/">
<input type="hidden" name="csrfmiddlewaretoken" value="%(token)s">
<input type="hidden" name="next" value="%(next)s">
%(errors)s
<label>Usuário <input name="username"></label>
<label>Senha <input name="password" type="password"></label>
<button type="submit">Entrar</button>
</form></body></html>
"""


def _safe_next(value):
    # Only same-site paths: "//host" would be an open redirect.
    if value.startswith("/") and not value.startswith("//"):
        return value
    return "/"


def login_view(request):
    next_url = _safe_next(request.POST.get("next") or request.GET.get("next") or "/")
    errors = ""
    if request.method == "POST":
        form = AuthenticationForm(request, data=request.POST)
        if form.is_valid():
            # login() rotates the session key and the CSRF token: the response carries
            # both cookies, which is what the Set-Cookie parity test needs.
            auth_login(request, form.get_user())
            return HttpResponseRedirect(next_url)
        errors = '<p class="erro">Usuário ou senha inválidos.</p>'
    page = LOGIN_FORM % {
        "token": get_token(request),
        "next": escape(next_url),
        "errors": errors,
    }
    return HttpResponse(page, status=200 if not errors else 401)


# --------------------------------------------------------------------------------------
# Relatórios (the PDF fallback Django still renders)
# --------------------------------------------------------------------------------------
def _tiny_pdf(text):
    """A valid one-page PDF showing `text` (ASCII), with a correct xref table."""
    stream = ("BT /F1 14 Tf 72 760 Td (%s) Tj ET" % text).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def relatorio_pdf(request, **kwargs):
    kind = request.path.rstrip("/").rsplit("/", 1)[-1]
    ident = " ".join("%s=%s" % item for item in sorted(kwargs.items()))
    response = HttpResponse(_tiny_pdf("Django %s %s" % (kind, ident)), content_type="application/pdf")
    response["Content-Disposition"] = 'inline; filename="%s.pdf"' % kind
    return response


def metrics(request):
    # SAPL refuses /metrics to clients without an address: over Gunicorn's unix socket
    # REMOTE_ADDR is empty, so only direct TCP scrapes inside the pod get through.
    if not request.META.get("REMOTE_ADDR"):
        return HttpResponseForbidden("metrics are not public\n")
    return HttpResponse("saplbed_up 1\n", content_type="text/plain; version=0.0.4")


# --------------------------------------------------------------------------------------
# Probes for the integration suite
# --------------------------------------------------------------------------------------
@csrf_exempt
def echo(request):
    started = time.time()
    length, sha256, body_done = _drain(request)
    headers = {k: v for k, v in request.META.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        if request.META.get(key):
            headers[key] = request.META[key]
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "raw_uri": request.META.get("RAW_URI", ""),
            "query": request.META.get("QUERY_STRING", ""),
            "headers": headers,
            "remote_addr": request.META.get("REMOTE_ADDR", ""),
            "is_secure": request.is_secure(),
            "host": request.get_host(),
            "body_length": length,
            "body_sha256": sha256,
            # Wall-clock times on this machine: when Gunicorn handed the request to Django
            # and when the last body byte was read. Tests compare them with the client's
            # own clock to learn whether the proxy buffered the body first.
            "started_at": started,
            "body_done_at": body_done,
            "pid": __import__("os").getpid(),
        }
    )


@csrf_exempt
def upload(request):
    if request.method != "POST":
        return JsonResponse({"detail": "POST a file"}, status=405)
    content_type = request.META.get("CONTENT_TYPE", "")
    if content_type.startswith("multipart/form-data"):
        files = []
        for field, f in request.FILES.items():
            digest = hashlib.sha256()
            for chunk in f.chunks():
                digest.update(chunk)
            files.append(
                {"field": field, "name": f.name, "size": f.size, "sha256": digest.hexdigest()}
            )
        if not files:
            return JsonResponse({"detail": "no file in the form"}, status=400)
        first = files[0]
        return JsonResponse({"size": first["size"], "sha256": first["sha256"], "files": files})
    length, sha256, _ = _drain(request)
    return JsonResponse({"size": length, "sha256": sha256, "files": []})


def slow(request):
    try:
        seconds = float(request.GET.get("s", "1"))
    except ValueError:
        return JsonResponse({"detail": "s must be a number"}, status=400)
    seconds = max(0.0, min(seconds, 600.0))
    time.sleep(seconds)
    return JsonResponse({"slept": seconds})


def redirect(request):
    target = request.GET.get("to") or "http://%s/materia/1" % request.get_host()
    response = HttpResponse(status=302)
    response["Location"] = target
    return response


def set_cookies(request):
    response = JsonResponse({"cookies": 2})
    response.set_cookie("sapl_a", "primeiro", path="/", httponly=True)
    # The comma inside Expires is why two cookies can never be folded into one line.
    response.set_cookie("sapl_b", "segundo", expires="Wed, 21 Oct 2037 07:28:00 GMT", path="/")
    return response


def hits(request):
    """Every request Django received, and how many were legacy PDF reports: with the edge
    rendering PDFs itself, `relatorios` stays 0."""
    recorded = hits_log.read_all()
    relatorios = sum(1 for hit in recorded if hit["path"].startswith("/relatorios/"))
    return JsonResponse(
        {"hits": recorded, "counts": {"total": len(recorded), "relatorios": relatorios}}
    )
