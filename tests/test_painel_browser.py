"""The voting panel as a person sees it (issue 5), in a real browser through sapl-edge.

Headless Chromium (Debian's package, driven by Playwright) logs in with Django's own login
form through the edge, which hands it Django's `sessionid` cookie, and opens a panel page
the edge serves from /static/ (testbed/painel/static: the client side of SAPL's WebSocket
branch). The page's script opens `/ws/painel/<sessao_id>/`; the edge checks that cookie
against django_session, sends the snapshot from Django's dados, and then relays what
Django publishes with channels_redis `group_send` (testbed/painel/peer.py in
.venv-channels4) on Redis A DB 2. The assertions read what is on screen: the sessão's
title, the matéria, the vote counts and each parlamentar's vote, and the refusal a viewer
who never logged in gets.

Chromium must be installed (scripts/setup.sh does it): when it is missing the tests fail,
they are not skipped. Each test saves a screenshot of the page in its tmp_path.
"""
import json
import os
import shutil
import subprocess
import time
from urllib.parse import quote

import pytest
import redis
from playwright.sync_api import expect, sync_playwright

import servers

CHROMIUM = "/usr/bin/chromium"
# As root, in a machine with no network but loopback: no sandbox (it needs user
# namespaces), no GPU, and none of the background calls to Google's hosts, which would
# only fail and slow every start.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHANNELS_PYTHON = os.path.join(servers.REPO, ".venv-channels4", "bin", "python")
PEER = os.path.join(servers.REPO, "testbed", "painel", "peer.py")
PAGE_DIR = os.path.join(servers.REPO, "testbed", "painel", "static")

# Sessão 1 of SAPL's sample data, whose votes shared/sapl/painel/*.json show.
SESSAO = 1
SESSAO_TITLE = "5ª Ordinária da 1ª Sessão Legislativa da 19ª Legislatura"
PREFIX = "asgi-cm-painel-browser"
GROUP = "painel_%d" % SESSAO
PAINEL_URL = "/static/painel/painel.html?sessao=%d" % SESSAO

# Playwright's own waits (5 s) are short for two cores that may also be building.
expect.set_options(timeout=20_000)


def sapl_payload(name):
    """A panel payload exactly as SAPL produces it (shared/sapl/painel)."""
    with open(os.path.join(servers.SHARED_SAPL, "painel", name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def painel_edge(workdir, gunicorn, roots, redis_server, sapl_db):
    """sapl-edge with the suite's routes plus the panel socket, `auth = "django"` against
    the test bed's database, and the panel page in its static root."""
    static = os.path.join(workdir, "painel-browser-static")
    shutil.copytree(PAGE_DIR, os.path.join(static, "painel"), dirs_exist_ok=True)

    listen, metrics = servers.free_port(), servers.free_port()
    config = servers.edge_config(listen, metrics, gunicorn.socket, dict(roots, static=static))
    default = next(i for i, r in enumerate(config["route"]) if r["name"] == "default")
    config["route"].insert(default, {
        "name": "painel-ws",
        "regex": "^/ws/painel/(?P<sessao_id>[0-9]+)/$",
        "action": "websocket",
    })
    config["painel"] = {
        "redis_url": "redis://127.0.0.1:%d/2" % redis_server.port,
        "prefix": PREFIX,
        "layer": "core",
        "auth": "django",
    }
    server = servers.Edge(workdir, "edge-painel-browser", config, listen, metrics)
    # The edge reads sessions from the same database and with the same SECRET_KEY as Django.
    server.process.env.update(
        DATABASE_URL="postgresql://%s@%s:%s/%s"
        % (servers.PG_USER, servers.PG_HOST, servers.PG_PORT, sapl_db),
        SECRET_KEY=gunicorn.process.env["SECRET_KEY"],
    )
    server.start()
    server.base = "http://127.0.0.1:%d" % listen
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("%s not found: scripts/setup.sh installs Debian's chromium package"
                    % CHROMIUM)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def page(playwright, tmp_path):
    """A page in a new Chromium with an empty profile; its console is kept for failures."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1000, "height": 900},
        locale="pt-BR",
    )
    page = context.new_page()
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append("%s: %s" % (m.type, m.text)))
    page.on("pageerror", lambda e: page.console_lines.append("pageerror: %s" % e))
    yield page
    try:
        # What the screen showed at the end, to look at when a test fails.
        page.screenshot(path=str(tmp_path / "painel.png"), full_page=True)
    finally:
        context.close()


def wait_for_group_member(redis_port, timeout=20.0):
    """Django's group_send reaches only the members of the group at that moment: wait
    until the edge has joined it in Redis A (it does so when the socket is admitted)."""
    client = redis.Redis(host="127.0.0.1", port=redis_port, db=2)
    key = "%s:group:%s" % (PREFIX, GROUP)
    try:
        deadline = time.monotonic() + timeout
        while not client.zcard(key):
            assert time.monotonic() < deadline, "the edge never joined %s" % key
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture
def django_publishes(gunicorn, sapl_db, redis_server):
    """What SAPL's broadcast helper does after a vote: group_send the full payload, from a
    Django with the test bed's settings and channels_redis 4."""
    if not os.path.exists(CHANNELS_PYTHON):
        pytest.fail("%s missing: run scripts/setup.sh" % CHANNELS_PYTHON)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        SECRET_KEY=gunicorn.process.env["SECRET_KEY"],
        SAPL_DB_NAME=sapl_db,
        SAPL_DB_HOST=servers.PG_HOST,
        SAPL_DB_PORT=servers.PG_PORT,
        SAPL_DB_USER=servers.PG_USER,
        PAINEL_REDIS_URL="redis://127.0.0.1:%d/2" % redis_server.port,
        PAINEL_PREFIX=PREFIX,
        PAINEL_LAYER="core",
    )

    def publish(payload):
        done = subprocess.run(
            [CHANNELS_PYTHON, PEER, "publish", GROUP, json.dumps(payload, ensure_ascii=False)],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    return publish


def log_in(page, base, credentials, next_path):
    """Django's login form, through the edge, as a person fills it in."""
    page.goto(base + "/login/?next=" + quote(next_path, safe=""))
    page.fill("input[name=username]", credentials[0])
    page.fill("input[name=password]", credentials[1])
    page.click("button[type=submit]")
    page.wait_for_url(base + next_path)


def voto_de(page, nome):
    return page.locator("#presentes tr", has_text=nome).locator("td").nth(2)


@pytest.mark.timeout(120)
def test_painel_page_shows_the_votes_django_publishes(
        page, painel_edge, admin_credentials, redis_server, django_publishes):
    log_in(page, painel_edge.base, admin_credentials, PAINEL_URL)
    assert "sessionid" in {c["name"] for c in page.context.cookies()}

    # The snapshot, from Django's dados for this viewer: the sessão, no matéria yet.
    estado = page.locator("body")
    expect(estado).to_have_attribute("data-estado", "conectado")
    expect(page.locator("#sessao-plenaria")).to_have_text(SESSAO_TITLE)
    expect(page.locator("#votacao")).to_be_hidden()
    expect(page.locator("#conexao-perdida")).to_be_hidden()
    assert page.locator("#presentes tr").count() > 0, page.console_lines

    wait_for_group_member(redis_server.port)

    # A nominal vote opens and the first votes come in.
    aberta = sapl_payload("dados-votacao-aberta.json")
    django_publishes(aberta)
    expect(page.locator("#materia-texto")).to_have_text("Projeto de Lei Ordinária nº 3 de 2025")
    expect(page.locator("#tipo-resultado")).to_have_text("Ainda não foi votada.")
    expect(voto_de(page, "Ana Souza")).to_have_text("Sim")
    expect(voto_de(page, "Bruno Lima")).to_have_text("Não")
    expect(voto_de(page, "Fábio Costa")).to_have_text("")
    expect(page.locator("#votacao")).to_be_visible()
    expect(page.locator("#votos-total")).to_have_text("0")

    # The vote closes: the counts and the result replace what was shown.
    encerrada = sapl_payload("dados-votacao-encerrada.json")
    django_publishes(encerrada)
    expect(page.locator("#tipo-resultado")).to_have_text("Aprovado")
    expect(page.locator("#materia-texto")).to_have_text("Projeto de Lei Ordinária nº 1 de 2025")
    expect(page.locator("#votos-sim")).to_have_text("5")
    expect(page.locator("#votos-nao")).to_have_text("2")
    expect(page.locator("#votos-abstencoes")).to_have_text("1")
    expect(page.locator("#votos-total")).to_have_text("8")
    expect(voto_de(page, "Fábio Costa")).to_have_text("Abstenção")
    expect(voto_de(page, "Henrique Farias")).to_have_text("Não")

    # What a person reads on the screen (rendered text, hidden parts left out).
    screen = page.locator("#votacao").inner_text()
    assert screen.split() == ["Sim", "5", "Não", "2", "Abstenções", "1", "Total", "8"], screen
    assert estado.get_attribute("data-estado") == "conectado", page.console_lines


@pytest.mark.timeout(120)
def test_painel_page_without_login_says_so_and_does_not_retry(page, painel_edge):
    page.goto(painel_edge.base + PAINEL_URL)

    expect(page.locator("body")).to_have_attribute("data-estado", "recusado")
    expect(page.locator("#estado")).to_have_text(
        "Você precisa entrar no SAPL para ver o painel.")
    expect(page.locator("#sessao-plenaria")).to_have_text("")
    # A refusal (4401) is final: the page shows no retry banner, and stays refused.
    page.wait_for_timeout(1500)
    expect(page.locator("#conexao-perdida")).to_be_hidden()
    assert page.locator("body").get_attribute("data-estado") == "recusado"
