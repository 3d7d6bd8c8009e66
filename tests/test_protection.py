"""Ingress protection (issue 6): rate zones, real client IP, scanner probes, bot rules and
the Redis A blocklist.

The rate-zone tests send the same request sequence to nginx running `limit_req` with an
equivalent configuration (testbed/nginx/limit-req.conf.tmpl) and to sapl-edge, and
compare which requests got 429: nginx's leaky bucket is the reference. Rates are chosen
so that nothing leaks during a test (1r/m leaks one request per minute), which makes the
expected statuses independent of how fast this machine is. Where pacing is involved the
tests assert order, and only a lower bound on time that pacing guarantees.

The blocklist tests run a private redis-server, write SAPL's keys with redis-cli and wait
(polling, up to a few refresh intervals) for the edge to act on them.
"""
import json
import os
import re
import subprocess
import threading
import time
import uuid

import pytest

import rawhttp
import servers

FORGED_CLIENTS = ["203.0.113.%d" % n for n in range(1, 51)]
PROBE_PATHS = ["/wp-login.php", "/.env", "/backup.sql", "/cgi-bin/test.CGI", "/deploy.sh"]


# --------------------------------------------------------------------------------------
# Starting nginx and sapl-edge with matching rules
# --------------------------------------------------------------------------------------
def _name(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


def zone_toml(rate, burst, nodelay, name="general"):
    return '[protection.zones.%s]\nrate = "%s"\nburst = %d\nnodelay = %s\n' % (
        name, rate, burst, "true" if nodelay else "false")


def edge_text(config, protection):
    """The edge's TOML: the test bed's usual file plus a [protection] section."""
    return servers.to_toml(config) + "\n" + protection


@pytest.fixture
def launch(workdir, gunicorn, roots):
    """Starts nginx (limit-req template) or sapl-edge (with [protection]); stops them after."""
    started = []

    def edge(protection, trusted_hops=(), routes_extra=None):
        """`trusted_hops=None` leaves `[forwarding]` out: the edge's defaults apply."""
        listen, metrics = servers.free_port(), servers.free_port()
        config = servers.edge_config(
            listen, metrics, gunicorn.socket, roots, trusted_hops=trusted_hops or ())
        if trusted_hops is None:
            del config["forwarding"]
        if routes_extra:
            config["route"] = routes_extra + config["route"]
        server = servers.Edge(workdir, _name("edge-prot"), config, listen, metrics)
        with open(server.conf, "w") as f:
            f.write(edge_text(config, protection))
        server.protection = protection
        server.kind = "edge"
        started.append(server)
        return server.start()

    def nginx(rate, burst, nodelay, trusted=False):
        server = servers.Nginx(workdir, _name("nginx-prot"), gunicorn.socket, roots,
                               template="limit-req.conf.tmpl")
        http_rules = "limit_req_zone $binary_remote_addr zone=general:1m rate=%s;\n" % rate
        http_rules += "limit_req_status 429;\n"
        if trusted:
            networks = ["127.0.0.1"] if trusted is True else trusted
            http_rules += "".join("set_real_ip_from %s;\n" % n for n in networks)
            http_rules += "real_ip_header X-Forwarded-For;\nreal_ip_recursive on;\n"
        with open(os.path.join(server.workdir, "limits-http.conf"), "w") as f:
            f.write(http_rules)
        with open(os.path.join(server.workdir, "limits-location.conf"), "w") as f:
            # nginx refuses "burst=0"; leaving it out means the same.
            f.write("limit_req zone=general%s%s;\n" % (
                " burst=%d" % burst if burst else "", " nodelay" if nodelay else ""))
        server.kind = "nginx"
        started.append(server)
        return server.start()

    yield type("Launch", (), {"edge": staticmethod(edge), "nginx": staticmethod(nginx)})
    for server in started:
        server.stop()


def both(launch, rate, burst, nodelay, trusted=False):
    """nginx and sapl-edge with the same zone on `/`."""
    protection = "[protection]\n" + zone_toml(rate, burst, nodelay)
    hops = ["127.0.0.1"] if trusted else []
    return [launch.nginx(rate, burst, nodelay, trusted=trusted),
            launch.edge(protection, trusted_hops=hops)]


def statuses(server, count, path="/tiny/", forwarded_for=None):
    """Statuses of `count` requests sent one after another, each on a new connection."""
    out = []
    for i in range(count):
        headers = []
        if forwarded_for is not None:
            headers.append(("X-Forwarded-For", forwarded_for(i)))
        out.append(rawhttp.fetch(server, "GET", path, headers=headers).status)
    return out


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+)$')


def metric(edge, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    class Metrics:
        host, port = edge.host, edge.metrics_port

    body = rawhttp.fetch(Metrics, "GET", "/metrics").body.decode()
    total = 0.0
    for line in body.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_until(predicate, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --------------------------------------------------------------------------------------
# Rate zones against nginx's limit_req
# --------------------------------------------------------------------------------------
def test_forged_forwarded_for_from_an_untrusted_peer_bypasses_nothing(launch):
    # 50 requests, each claiming another client: the peer (127.0.0.1, untrusted here) is
    # the client, so rate=1r/m burst=5 lets exactly six through, as nginx does.
    expected = [200] * 6 + [429] * 44
    for server in both(launch, "1r/m", 5, nodelay=True, trusted=False):
        got = statuses(server, 50, forwarded_for=lambda i: FORGED_CLIENTS[i])
        assert got == expected, server.kind


def test_clients_behind_a_trusted_hop_are_limited_one_by_one(launch):
    # Through a trusted hop the X-Forwarded-For entry is the client: three clients,
    # interleaved, each get 1 + burst requests.
    clients = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    expected = [200] * 6 + [429] * 3
    for server in both(launch, "1r/m", 1, nodelay=True, trusted=True):
        got = statuses(server, 9, forwarded_for=lambda i: "%s, 127.0.0.1" % clients[i % 3])
        assert got == expected, server.kind


PRIVATE_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1"]


def access_lines(edge):
    """The edge's access-log lines so far (stdout and stderr share the log file)."""
    with open(edge.process.log_path, errors="replace") as f:
        return [line for line in f if " uri=" in line and " status=" in line]


def test_default_trusted_networks_are_walked_right_to_left_like_nginx(launch):
    # No [forwarding] section: the edge trusts 10/8, 172.16/12, 192.168/16 and 127.0.0.1,
    # the list nginx's set_real_ip_from carries here. The client is the rightmost entry
    # that is not one of those hops; anything left of it is only a claim.
    sequence = [
        ("6.6.6.1, 198.51.100.7, 10.0.0.9, 192.168.1.2", 200),
        ("6.6.6.2, 198.51.100.7, 172.16.5.5", 429),     # same client, other hops, forged left
        ("198.51.100.8", 200),
        ("198.51.100.7, 10.9.9.9", 429),
        ("6.6.6.3, 198.51.100.8, 127.0.0.1", 429),
        ("172.32.0.1, 10.0.0.1", 200),                  # 172.32/16 is outside 172.16/12
        ("172.32.0.1, 172.31.255.255", 429),
        (None, 200),                                    # no header: the peer is the client
        (None, 429),
    ]
    expected = [status for _, status in sequence]
    protection = "[protection]\n" + zone_toml("1r/m", 0, True)
    servers_ = [launch.nginx("1r/m", 0, True, trusted=PRIVATE_NETWORKS),
                launch.edge(protection, trusted_hops=None)]
    for server in servers_:
        got = []
        for forwarded_for, _ in sequence:
            headers = [("X-Forwarded-For", forwarded_for)] if forwarded_for else []
            got.append(rawhttp.fetch(server, "GET", "/tiny/", headers=headers).status)
        assert got == expected, server.kind

    # The access log names the real client, and the hop it came through.
    edge = servers_[1]
    assert wait_until(lambda: len(access_lines(edge)) == len(sequence), 5)
    first = access_lines(edge)[0]
    assert "client=198.51.100.7" in first, first
    assert "peer=127.0.0.1" in first, first


def test_route_zones_are_counted_apart(launch):
    # The default zones: /relatorios/ in `heavy` (10r/m burst 20 nodelay), the rest in
    # `general`. Exhausting heavy leaves the rest of the site alone.
    heavy_route = {"name": "relatorios", "prefix": "/relatorios/", "action": "upstream",
                   "zone": "heavy"}
    edge = launch.edge("[protection]\n", routes_extra=[heavy_route])
    got = statuses(edge, 22, path="/relatorios/1/etiqueta-materia-legislativa")
    assert 429 not in got[:21], got
    assert got[21] == 429
    assert rawhttp.fetch(edge, "GET", "/tiny/").status == 200
    assert metric(edge, "sapl_edge_protection_refusals_total", rule="zone", zone="heavy") == 1
    assert metric(edge, "sapl_edge_protection_refusals_total", zone="general") == 0


@pytest.mark.parametrize("rate,burst,count,passed", [
    ("1r/m", 0, 4, 1),
    ("1r/m", 3, 7, 4),
    # The heavy zone's defaults (PDF routes): 10r/m burst 20 nodelay.
    ("10r/m", 20, 25, 21),
])
def test_nodelay_zone_refuses_the_same_requests_as_nginx(launch, rate, burst, count, passed):
    expected = [200] * passed + [429] * (count - passed)
    results = {s.kind: statuses(s, count) for s in both(launch, rate, burst, nodelay=True)}
    assert results["nginx"] == expected
    assert results["edge"] == results["nginx"]


def simultaneous(server, count, path="/tiny/"):
    """Sends `count` requests at once on separate connections; (seconds, status) in the
    order the answers completed."""
    conns = [rawhttp.RawConnection(server.host, server.port, timeout=30) for _ in range(count)]
    results = [None] * count
    raw = rawhttp.build("GET", path)
    start = time.monotonic()
    for conn in conns:
        conn.send(raw)

    def read(i):
        status = conns[i].read_response().status
        results[i] = (time.monotonic() - start, status)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for conn in conns:
        conn.close()
    return sorted(r for r in results if r is not None)


def test_seven_simultaneous_requests_without_nodelay_are_paced_then_refused(launch):
    # rate=1r/s burst=5: the first at once, five held back to ~1..5 s, the seventh refused
    # at once. Asserted by order; the only time bound is a floor the pacing guarantees.
    for server in both(launch, "1r/s", 5, nodelay=False):
        done = simultaneous(server, 7)
        order = [status for _, status in done]
        assert len(done) == 7, server.kind
        assert sorted(order[:2]) == [200, 429], (server.kind, done)
        assert order[2:] == [200] * 5, (server.kind, done)
        assert done[-1][0] >= 3.0, (server.kind, done)
        if server.kind == "edge":
            assert metric(server, "sapl_edge_protection_delayed_total", zone="general") == 5


def test_seven_simultaneous_requests_with_nodelay_six_pass_the_seventh_is_refused(launch):
    # The same seven with nodelay: six forwarded at once (none held back), one refused.
    for server in both(launch, "1r/s", 5, nodelay=True):
        done = simultaneous(server, 7)
        assert sorted(status for _, status in done) == [200] * 6 + [429], (server.kind, done)
        if server.kind == "edge":
            assert metric(server, "sapl_edge_protection_delayed_total") == 0
            assert metric(server, "sapl_edge_protection_refusals_total",
                          rule="zone", zone="general") == 1


def test_exempt_live_vote_paths_are_never_limited(launch):
    for server in both(launch, "1r/m", 0, nodelay=True):
        for path in ("/painel/1/dados", "/sessao/7/votacao", "/voto-individual/3"):
            got = statuses(server, 5, path=path)
            assert 429 not in got, (server.kind, path, got)
        # The limited part of the site is still limited.
        assert statuses(server, 2) == [200, 429], server.kind


@pytest.mark.edge_only
def test_a_zone_refusal_says_when_to_retry_and_is_counted(launch):
    edge = launch.edge("[protection]\n" + zone_toml("1r/m", 0, True))
    assert rawhttp.fetch(edge, "GET", "/tiny/").status == 200
    refused = rawhttp.fetch(edge, "GET", "/tiny/")
    assert refused.status == 429
    # 1r/m leaks a request every 62.5 s (nginx's integer arithmetic).
    assert refused.get("Retry-After") == "63"
    assert json.loads(refused.body) == {"detail": "Too Many Requests"}
    assert metric(edge, "sapl_edge_protection_refusals_total", rule="zone", zone="general") == 1


@pytest.mark.edge_only
def test_each_refusal_is_logged_once_with_its_reason(launch, tmp_path):
    agents = tmp_path / "bots-ua.txt"
    agents.write_text("GPTBot\n")
    edge = launch.edge("[protection]\nuser_agents_file = \"%s\"\n" % agents
                       + zone_toml("1r/m", 0, True))
    assert rawhttp.fetch(edge, "GET", "/tiny/").status == 200
    assert rawhttp.fetch(edge, "GET", "/tiny/").status == 429
    assert rawhttp.fetch(edge, "GET", "/tiny/", headers=[("User-Agent", "GPTBot/1.2")]).status == 429
    with pytest.raises(rawhttp.ConnectionClosed):
        rawhttp.fetch(edge, "GET", "/wp-login.php")

    assert wait_until(lambda: len(access_lines(edge)) == 4, 5), access_lines(edge)
    lines = access_lines(edge)
    reasons = [re.search(r'refusal="?(\w+)', line) for line in lines]
    assert [r.group(1) if r else None for r in reasons] == [None, "zone", "user_agent", "probe"]
    assert "status=444" in lines[3]
    # Nothing else in the log speaks of those requests a second time.
    with open(edge.process.log_path, errors="replace") as f:
        assert sum("wp-login" in line for line in f) == 1


@pytest.mark.edge_only
def test_zone_state_survives_a_reload_unless_the_zone_changes(launch):
    edge = launch.edge("[protection]\n" + zone_toml("1r/m", 1, True))
    assert statuses(edge, 3) == [200, 200, 429]

    # Another route, same zone: the client's bucket is kept.
    extra = [{"name": "extra", "prefix": "/extra/", "action": "upstream"}]
    config = dict(edge.config)
    config["route"] = extra + config["route"]
    with open(edge.conf, "w") as f:
        f.write(edge_text(config, edge.protection))
    edge.reload()
    assert wait_until(lambda: metric(edge, "sapl_edge_config_reloads_total", result="ok") == 1, 10)
    assert statuses(edge, 1) == [429]

    # A new rate is a new zone: everyone starts afresh.
    with open(edge.conf, "w") as f:
        f.write(edge_text(config, "[protection]\n" + zone_toml("2r/m", 1, True)))
    edge.reload()
    assert wait_until(lambda: metric(edge, "sapl_edge_config_reloads_total", result="ok") == 2, 10)
    assert statuses(edge, 3) == [200, 200, 429]


# --------------------------------------------------------------------------------------
# Scanner probes and bots
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PROBE_PATHS)
def test_scanner_probes_are_closed_without_an_answer(launch, path):
    for server in both(launch, "60r/m", 100, nodelay=True):
        with rawhttp.RawConnection(server.host, server.port, timeout=10) as conn:
            conn.send(rawhttp.build("GET", path))
            with pytest.raises(rawhttp.ConnectionClosed) as closed:
                conn.read_response()
            assert "0 bytes pending" in str(closed.value), server.kind
        # An ordinary path mentioning php is answered.
        assert rawhttp.fetch(server, "GET", "/phpinfo").status == 404, server.kind


@pytest.mark.edge_only
def test_probe_drops_are_counted(launch):
    edge = launch.edge("[protection]\n")
    for path in PROBE_PATHS:
        with pytest.raises(rawhttp.ConnectionClosed):
            rawhttp.fetch(edge, "GET", path)
    assert metric(edge, "sapl_edge_protection_refusals_total", rule="probe") == len(PROBE_PATHS)


@pytest.mark.edge_only
def test_user_agent_and_network_files_refuse_bots(launch, tmp_path):
    agents = tmp_path / "bots-ua.txt"
    agents.write_text("# AI crawlers\nGPTBot\nClaudeBot\nChrome/98\\.0\\.4758\n")
    networks = tmp_path / "bots-networks.txt"
    networks.write_text("# a cloud provider\n192.0.2.0/24\n")
    edge = launch.edge(
        '[protection]\nuser_agents_file = "%s"\nnetworks_file = "%s"\n' % (agents, networks),
        trusted_hops=["127.0.0.1"],
    )

    def get(user_agent, client):
        return rawhttp.fetch(edge, "GET", "/tiny/", headers=[
            ("User-Agent", user_agent), ("X-Forwarded-For", client)])

    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    bot = get("Mozilla/5.0 AppleWebKit/537.36 (compatible; GPTBot/1.2)", "198.51.100.9")
    assert bot.status == 429
    assert json.loads(bot.body) == {"detail": "Too Many Requests"}
    assert get("Mozilla/5.0 Chrome/98.0.4758.102 Safari/537.36", "198.51.100.9").status == 429
    assert get(browser, "192.0.2.44").status == 429
    assert get(browser, "192.0.20.44").status == 200
    assert get(browser, "198.51.100.9").status == 200
    assert metric(edge, "sapl_edge_protection_refusals_total", rule="user_agent") == 2
    assert metric(edge, "sapl_edge_protection_refusals_total", rule="network") == 1


# --------------------------------------------------------------------------------------
# The Redis A blocklist
# --------------------------------------------------------------------------------------
def redis_cli(redis, *args):
    out = subprocess.run(["redis-cli", "-h", redis.host, "-p", str(redis.port), "-n", "1", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def blocklist_edge(launch, redis, **settings):
    values = {"refresh_interval": "1s", "cache_ttl": "1s", "namespace": "camara-teste"}
    values.update(settings)
    protection = ("[protection]\ndefault_zone = \"off\"\n[protection.blocklist]\n"
                  "redis_url = \"redis://%s:%d/1\"\n" % (redis.host, redis.port))
    protection += "".join('%s = "%s"\n' % item for item in values.items())
    edge = launch.edge(protection, trusted_hops=["127.0.0.1"])
    assert wait_until(
        lambda: metric(edge, "sapl_edge_protection_blocklist_refreshes_total", result="ok") >= 1,
        15), "the edge never read the prefix set from Redis"
    return edge


def get_as(edge, client, path="/tiny/"):
    return rawhttp.fetch(edge, "GET", path, headers=[("X-Forwarded-For", client)])


def test_blocked_ip_key_written_with_redis_cli_takes_effect(launch, redis_server):
    edge = blocklist_edge(launch, redis_server)
    assert get_as(edge, "198.51.100.10").status == 200

    redis_cli(redis_server, "SET", "rl:ip:198.51.100.10:blocked", "1", "EX", "300")
    assert wait_until(lambda: get_as(edge, "198.51.100.10").status == 429, 5)
    refused = get_as(edge, "198.51.100.10")
    assert refused.get("Retry-After") == "300"
    assert refused.get("Content-Type") == "application/json"
    assert json.loads(refused.body) == {"detail": "Too Many Requests"}
    # Only that client.
    assert get_as(edge, "198.51.100.11").status == 200

    redis_cli(redis_server, "DEL", "rl:ip:198.51.100.10:blocked")
    assert wait_until(lambda: get_as(edge, "198.51.100.10").status == 200, 5)


def test_blocked_prefixes_match_at_a_dot(launch, redis_server):
    edge = blocklist_edge(launch, redis_server)
    redis_cli(redis_server, "SADD", "rl:ip_prefix:blocked", "192.0.2", "198.18.")
    try:
        assert wait_until(lambda: get_as(edge, "192.0.2.44").status == 429, 5)
        assert get_as(edge, "198.18.7.1").status == 429
        assert get_as(edge, "192.0.20.44").status == 200
        assert get_as(edge, "198.180.0.1").status == 200
        assert metric(edge, "sapl_edge_protection_blocklist_prefixes") == 2
    finally:
        redis_cli(redis_server, "DEL", "rl:ip_prefix:blocked")


def test_api_block_key_applies_to_api_paths_only(launch, redis_server):
    edge = blocklist_edge(launch, redis_server)
    redis_cli(redis_server, "SET", "rl:api:ns:camara-teste:ip:198.51.100.20:blocked", "1",
              "EX", "300")
    api = "/api/materia/materialegislativa/"
    assert wait_until(lambda: get_as(edge, "198.51.100.20", api).status == 429, 5)
    assert get_as(edge, "198.51.100.20", "/tiny/").status == 200
    # Another tenant's key does not block here.
    redis_cli(redis_server, "SET", "rl:api:ns:outra-camara:ip:198.51.100.21:blocked", "1")
    assert get_as(edge, "198.51.100.21", api).status == 200


def test_steady_state_costs_one_redis_lookup_per_client_per_cache_ttl(launch, redis_server):
    edge = blocklist_edge(launch, redis_server, cache_ttl="60s")
    for _ in range(20):
        assert get_as(edge, "198.51.100.30").status == 200
    assert metric(edge, "sapl_edge_protection_blocklist_lookups_total", source="redis") == 1
    assert metric(edge, "sapl_edge_protection_blocklist_lookups_total", source="cache") == 19


def test_redis_over_its_200ms_budget_fails_open_and_is_counted(launch, workdir):
    redis = servers.Redis(workdir, name=_name("redis-slow")).start()
    try:
        edge = blocklist_edge(launch, redis)
        # Redis holds every command for 3 s: far past the lookup budget.
        redis_cli(redis, "CLIENT", "PAUSE", "3000", "ALL")
        assert get_as(edge, "198.51.100.60").status == 200
        assert metric(edge, "sapl_edge_protection_blocklist_fail_open_total", cause="timeout") == 1

        # Once Redis answers again, blocks take effect again.
        redis_cli(redis, "SET", "rl:ip:198.51.100.61:blocked", "1")
        assert wait_until(lambda: get_as(edge, "198.51.100.61").status == 429, 10)
    finally:
        redis.stop()


def test_redis_down_fails_open_and_is_counted(launch, workdir):
    redis = servers.Redis(workdir, name=_name("redis-down")).start()
    try:
        edge = blocklist_edge(launch, redis)
        assert get_as(edge, "198.51.100.40").status == 200
    finally:
        redis.stop()

    clients = ["198.51.100.%d" % n for n in range(41, 51)]
    assert [get_as(edge, c).status for c in clients] == [200] * len(clients)
    assert metric(edge, "sapl_edge_protection_blocklist_fail_open_total") == len(clients)
