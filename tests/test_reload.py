"""sapl-edge's configuration life cycle: `--test` checks a file like `nginx -t`, and SIGHUP
applies a new route table without dropping open connections (nginx's `reload`).
"""
import copy
import os
import subprocess
import time

import pytest

import rawhttp
import servers
from conftest import SESSAO_PDF

pytestmark = pytest.mark.edge_only


def wait_for_status(server, target, status, wait=15.0):
    """Polls until `target` answers `status` (a reload is applied asynchronously)."""
    deadline = time.monotonic() + wait
    while True:
        response = rawhttp.fetch(server, "GET", target)
        if response.status == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_sighup_applies_a_new_route_and_keeps_open_connections(edge_factory, roots):
    edge = edge_factory("edge-reload")
    with rawhttp.RawConnection(edge.host, edge.port) as kept:
        kept.send(rawhttp.build("GET", "/materia/1"))
        assert kept.read_response().status == 200
        assert rawhttp.fetch(edge, "GET", "/atas/ata%20sess%C3%A3o.pdf").status == 404

        config = copy.deepcopy(edge.config)
        atas = {"name": "atas", "prefix": "/atas/", "action": "files", "root": roots["media"]}
        config["route"].insert(0, atas)
        edge.write_config(config)
        edge.reload()

        response = wait_for_status(edge, "/atas/ata%20sess%C3%A3o.pdf", 200)
        assert response.status == 200
        assert response.body == SESSAO_PDF

        # The connection opened before the reload still works.
        kept.send(rawhttp.build("GET", "/static/digitos.txt"))
        after = kept.read_response()
        assert after.status == 200
        assert after.body == b"0123456789"
    assert edge.process.alive()


def test_sighup_with_a_broken_file_keeps_the_running_configuration(edge_factory):
    edge = edge_factory("edge-bad-reload")
    good = copy.deepcopy(edge.config)
    with open(edge.conf, "w") as f:
        f.write("[upstream\naddress = 'unix:/nowhere'\n")
    edge.reload()
    time.sleep(1.0)
    assert edge.process.alive()
    assert rawhttp.fetch(edge, "GET", "/materia/1").status == 200
    assert rawhttp.fetch(edge, "GET", "/static/digitos.txt").body == b"0123456789"

    # A good file afterwards is applied again.
    good["route"][0]["prefix"] = "/estatico/"
    edge.write_config(good)
    edge.reload()
    assert wait_for_status(edge, "/estatico/digitos.txt", 200).body == b"0123456789"


def _check(conf_path):
    return subprocess.run(
        [servers.edge_binary(), "--test", "-c", conf_path], capture_output=True, text=True
    )


def test_config_check_accepts_the_test_bed_config(workdir, gunicorn, roots):
    path = os.path.join(workdir, "check-good.toml")
    config = servers.edge_config(
        servers.free_port(), servers.free_port(), gunicorn.socket, roots
    )
    with open(path, "w") as f:
        f.write(servers.to_toml(config))
    result = _check(path)
    assert result.returncode == 0, result.stderr


def test_config_check_names_file_line_and_key_of_a_mistake(workdir, gunicorn, roots):
    path = os.path.join(workdir, "check-bad.toml")
    config = servers.edge_config(
        servers.free_port(), servers.free_port(), gunicorn.socket, roots
    )
    config["upstream"]["read_timeout"] = "trezentos segundos"
    text = servers.to_toml(config)
    with open(path, "w") as f:
        f.write(text)
    line = 1 + text.splitlines().index('read_timeout = "trezentos segundos"')

    result = _check(path)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert path in message
    assert "read_timeout" in message
    assert str(line) in message
