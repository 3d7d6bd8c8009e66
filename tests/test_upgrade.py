"""Binary upgrade and graceful stop of sapl-edge: a new edge takes the listening socket
over from the running one (`--upgrade`, then SIGQUIT to the old process) while clients
keep sending requests, and none of those requests fails."""
import os
import signal
import threading
import time

import requests

import servers


def _upgradable_edge(workdir, gunicorn, roots, name, grace="5s"):
    listen, metrics = servers.free_port(), servers.free_port()
    config = servers.edge_config(listen, metrics, gunicorn.socket, roots)
    home = os.path.join(workdir, name)
    os.makedirs(home, exist_ok=True)
    config["server"].update(
        {
            "pid_file": os.path.join(home, "edge.pid"),
            "upgrade_sock": os.path.join(home, "upgrade.sock"),
            "grace_period": grace,
            "shutdown_timeout": "10s",
        }
    )
    return servers.Edge(workdir, name, config, listen, metrics)


class _Traffic(threading.Thread):
    """Requests one page and one static file in a loop until stopped, counting outcomes.
    Every request uses a new connection, so each one meets whichever process is
    accepting at that moment."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base = base
        self.ok = 0
        self.failures = []
        self.stopping = threading.Event()

    def run(self):
        urls = [self.base + "/materia/1", self.base + "/static/digitos.txt"]
        i = 0
        while not self.stopping.is_set():
            url = urls[i % 2]
            i += 1
            try:
                r = requests.get(url, timeout=30, headers={"Connection": "close"})
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append("%s -> %d" % (url, r.status_code))
            except requests.RequestException as err:
                self.failures.append("%s -> %s" % (url, err))


def test_binary_upgrade_hands_over_the_listener_without_a_failed_request(
    workdir, gunicorn, roots
):
    old = _upgradable_edge(workdir, gunicorn, roots, "upgrade-old").start()
    base = "http://127.0.0.1:%d" % old.port
    traffic = _Traffic(base)
    new_process = None
    try:
        traffic.start()
        while traffic.ok < 20 and not traffic.failures:
            time.sleep(0.05)

        # The new binary waits on the upgrade socket for the listeners...
        new_process = servers.ManagedProcess(
            "upgrade-new",
            [servers.edge_binary(), "-c", old.conf, "--upgrade"],
            old.workdir,
        ).start()
        # ...which the old one hands over when told to quit.
        deadline = time.time() + 30
        while not os.path.exists(old.config["server"]["upgrade_sock"]):
            assert time.time() < deadline, "the new edge never opened the upgrade socket"
            assert new_process.alive(), servers.tail(new_process.log_path)
            time.sleep(0.05)
        served_before = traffic.ok
        old.process.signal(signal.SIGQUIT)
        old.process.proc.wait(60)

        # The old process is gone; the port is still answered, by the new one.
        served_at_handover = traffic.ok
        while traffic.ok < served_at_handover + 20 and not traffic.failures:
            assert new_process.alive(), servers.tail(new_process.log_path)
            time.sleep(0.05)
    finally:
        traffic.stopping.set()
        traffic.join(30)
        old.stop()
        if new_process is not None:
            new_process.stop()

    assert traffic.failures == []
    assert served_before >= 20
    assert traffic.ok >= served_at_handover + 20
    assert old.process.proc.returncode is not None


def test_sigterm_lets_a_request_in_flight_finish(workdir, gunicorn, roots):
    # Pingora serves for the grace period after SIGTERM, then ends what is left.
    edge = _upgradable_edge(workdir, gunicorn, roots, "graceful-stop", grace="5s").start()
    result = {}

    def slow_request():
        try:
            r = requests.get("http://127.0.0.1:%d/slow/?s=2" % edge.port, timeout=30)
            result["status"] = r.status_code
            result["body"] = r.text
        except requests.RequestException as err:
            result["error"] = str(err)

    worker = threading.Thread(target=slow_request)
    worker.start()
    try:
        time.sleep(0.5)  # the request is now waiting on Gunicorn
        edge.process.signal(signal.SIGTERM)
        worker.join(30)
        edge.process.proc.wait(30)
    finally:
        edge.stop()

    assert result.get("status") == 200, result
    assert edge.process.proc.returncode is not None
