"""The deploy files (deploy/k8s, deploy/systemd, deploy/Dockerfile) checked offline.

Every Kubernetes manifest is validated against the API schemas of the Kubernetes versions
below (kubernetes-validate ships them; no cluster is contacted), in strict mode so a
misspelt field fails instead of being dropped by the API server. Beyond the schema, the
tests hold the values an operator relies on: the ConfigMaps carry exactly the files the
rest of the suite tests, probes hit the edge's metrics listener, pods stop within their
grace period, memory fits the fleet's 1600 Mi pod, and the systemd units load.
"""
import glob
import os
import re
import shutil
import subprocess
import tomllib

import kubernetes_validate
import pytest
import yaml

import servers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(REPO, "deploy", "k8s")
SYSTEMD = os.path.join(REPO, "deploy", "systemd")
EDGE_TOML = os.path.join(REPO, "conf", "sapl-edge.toml")
REDIS_B_CONF = os.path.join(REPO, "deploy", "redis-b.conf")

# The newest schemas the validator ships, and an older release still common in fleets:
# the manifests must be accepted by both.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]

# plan.md, "Fleet constraints" and "Jobs".
POD_MEMORY_LIMIT_MIB = 1600
POD_CPU_LIMIT_MILLI = 1000
WORKER_ENVELOPE_MIB = 400  # a Gunicorn worker, and the renderer
GUNICORN_MIN_WORKERS = 2

GENERATED = "run deploy/k8s/render-configmap.sh and commit the result"


# --- loading -----------------------------------------------------------------------------


def manifest_files():
    """Every YAML file under deploy/k8s except the kustomizations (not Kubernetes objects)."""
    paths = sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True))
    return [p for p in paths if os.path.basename(p) != "kustomization.yaml"]


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def documents():
    return [
        (os.path.relpath(path, REPO), i, doc)
        for path in manifest_files()
        for i, doc in enumerate(load_docs(path))
    ]


def find(kind, name, namespace=None):
    for _, _, doc in documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name and (
            namespace is None or doc["metadata"].get("namespace") == namespace
        ):
            return doc
    raise AssertionError("no %s named %s under deploy/k8s" % (kind, name))


def container(pod_spec, name):
    for c in pod_spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError("no container %s" % name)


def mebibytes(quantity):
    """A Kubernetes memory quantity ("448Mi", "4Gi", "500M") in MiB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    assert m, "not a memory quantity: %r" % quantity
    factor = {
        None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    }[m.group(2)]
    return float(m.group(1)) * factor / 2**20


def millicores(quantity):
    q = str(quantity)
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


def seconds(duration):
    """A sapl-edge or renderer duration ("5s", "500ms", "3m") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, "not a duration: %r" % duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def flag(args, name):
    """The value of `--name=value` (or `--name value`) in a container's command line."""
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    raise AssertionError("%s not given in %r" % (name, args))


def prestop_seconds(c):
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def edge_toml():
    with open(EDGE_TOML, "rb") as f:
        return tomllib.load(f)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def redis_directives(text):
    """redis.conf as (directive, value) pairs, comments and blank lines left out."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((key.lower(), value.strip()))
    return out


def sapl_pod():
    return find("Deployment", "sapl")["spec"]["template"]["spec"]


# --- schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_kubernetes_schema(version):
    docs = documents()
    assert len(docs) >= 12, "expected the Redis B and chamber objects, found %d" % len(docs)
    failures = []
    for path, i, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append("%s (document %d, %s): %s at %s" % (
                path, i, doc.get("kind"), e.message, "/".join(map(str, e.path))))
    assert not failures, "\n".join(failures)


def test_kustomizations_list_every_manifest_but_the_secret_template():
    listed = set()
    for kfile in glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True):
        folder = os.path.dirname(kfile)
        with open(kfile) as f:
            k = yaml.safe_load(f)
        for resource in k["resources"]:
            path = os.path.normpath(os.path.join(folder, resource))
            assert os.path.isfile(path), "%s lists missing %s" % (kfile, resource)
            listed.add(path)
    unlisted = {p for p in manifest_files() if p not in listed}
    # The template holds placeholders: applying it with the rest would overwrite a
    # chamber's real Secret.
    assert unlisted == {os.path.join(K8S, "chamber", "secret.template.yaml")}


# --- Redis B -----------------------------------------------------------------------------


def test_redis_b_configmap_is_deploy_redis_b_conf():
    cm = find("ConfigMap", "redis-b-config")
    with open(REDIS_B_CONF) as f:
        source = f.read()
    assert redis_directives(cm["data"]["redis.conf"]) == redis_directives(source), GENERATED

    conf = dict(redis_directives(cm["data"]["redis.conf"]))
    # plan.md: jobs are never evicted and survive a restart.
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["save"].strip('"') == "900 1"
    assert conf["databases"] == "2"  # DB 0 broker, DB 1 results
    assert conf["port"] == "6379"


def test_redis_b_runs_one_replica_on_its_volume_with_a_memory_cap():
    dep = find("Deployment", "redis-b")
    spec = dep["spec"]
    # Two servers on one append-only file would corrupt it.
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"

    pod = spec["template"]["spec"]
    redis = container(pod, "redis")
    cmd = redis["command"] + redis.get("args", [])
    assert cmd[:2] == ["redis-server", "/etc/redis/redis.conf"]
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/redis"]]["configMap"]["name"] == "redis-b-config"

    # redis-b.conf leaves `dir` to the command line; it must be the persistent volume.
    assert flag(cmd, "--dir") == "/data"
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert find("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]

    # noeviction only acts under maxmemory; half the limit leaves room for the fork of
    # an AOF rewrite or RDB save.
    maxmemory = flag(cmd, "--maxmemory")
    m = re.fullmatch(r"(\d+)(mb|gb)", maxmemory)
    assert m, maxmemory
    maxmemory_mib = int(m.group(1)) * (2**30 if m.group(2) == "gb" else 2**20) / 2**20
    limit_mib = mebibytes(redis["resources"]["limits"]["memory"])
    assert maxmemory_mib <= limit_mib / 2

    assert redis["readinessProbe"]["exec"]["command"][-1].endswith("= PONG")
    assert redis["startupProbe"]["failureThreshold"] * redis["startupProbe"]["periodSeconds"] >= 300


def test_redis_b_is_reachable_only_inside_the_cluster_on_6379():
    svc = find("Service", "redis-b", namespace="sapl-redis")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in svc["spec"]["ports"]] == [6379]
    # The name every chamber's Secret uses resolves to it.
    alias = [d for _, _, d in documents()
             if d["kind"] == "Service" and d["spec"].get("type") == "ExternalName"
             and d["metadata"]["name"] == "redis-b"]
    assert alias and alias[0]["spec"]["externalName"] == "redis-b.sapl-redis.svc.cluster.local"


# --- the Secret --------------------------------------------------------------------------


def test_secret_template_has_the_plan_variables():
    secret = find("Secret", "sapl-env")["stringData"]
    assert secret["CELERY_BROKER_URL"] == "redis://redis-b:6379/0"
    assert secret["CELERY_RESULT_BACKEND"] == "redis://redis-b:6379/1"
    # Redis A must never carry the jobs.
    assert "redis-b" not in secret["REDIS_URL"]
    assert secret["DATABASE_URL"].startswith("postgresql://")
    assert "CHANGE-ME" in secret["SECRET_KEY"]


# --- the edge in the chamber's pod -------------------------------------------------------


def test_edge_configmap_is_conf_sapl_edge_toml():
    cm = find("ConfigMap", "sapl-edge-config")
    with open(EDGE_TOML) as f:
        assert cm["data"]["sapl-edge.toml"] == f.read(), GENERATED


def test_edge_configmap_passes_sapl_edge_test(tmp_path):
    binary = servers.edge_binary()
    if not os.path.exists(binary):
        if os.environ.get("CI"):
            pytest.fail("sapl-edge binary missing at %s" % binary)
        pytest.skip("sapl-edge not built at %s (cargo build -p sapl-edge)" % binary)
    cm = find("ConfigMap", "sapl-edge-config")
    path = tmp_path / "sapl-edge.toml"
    path.write_text(cm["data"]["sapl-edge.toml"])
    # What the pod's environment gives the edge (downward API and the Secret).
    env = dict(os.environ, POD_NAMESPACE="cm-teste",
               CELERY_BROKER_URL="redis://redis-b:6379/0",
               CELERY_RESULT_BACKEND="redis://redis-b:6379/1",
               DATABASE_URL="postgresql://sapl@localhost/sapl", SECRET_KEY="x" * 50)
    done = subprocess.run([binary, "--test", "-c", str(path)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "successful" in done.stderr + done.stdout


def test_edge_mounts_its_config_where_its_command_reads_it():
    pod = sapl_pod()
    edge = container(pod, "sapl-edge")
    assert edge["command"] == ["sapl-edge", "-c", "/etc/sapl-edge/sapl-edge.toml"]
    mounts = {m["mountPath"]: m for m in edge["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # A directory mount (not subPath), so an edited ConfigMap reaches the file and
    # SIGHUP picks it up.
    assert "subPath" not in mounts["/etc/sapl-edge"]
    assert volumes[mounts["/etc/sapl-edge"]["name"]]["configMap"]["name"] == "sapl-edge-config"


def test_edge_ports_and_probes_match_its_listeners():
    conf = edge_toml()
    edge = container(sapl_pod(), "sapl-edge")
    ports = {p["name"]: p["containerPort"] for p in edge["ports"]}
    assert ports["http"] == port_of(conf["listener"][0]["address"]) == 80
    assert ports["metrics"] == port_of(conf["metrics"]["address"]) == 9145

    live = edge["livenessProbe"]["httpGet"]
    ready = edge["readinessProbe"]["httpGet"]
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")

    # Numbers, not port names: the nginx pod spec a rollback brings back has port 80 too.
    svc = find("Service", "sapl")
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        (80, 80), (9145, 9145)}


def test_edge_binds_port_80_without_root():
    pod = sapl_pod()
    edge = container(pod, "sapl-edge")
    assert edge["securityContext"]["runAsNonRoot"] is True
    assert edge["securityContext"]["allowPrivilegeEscalation"] is False
    sysctls = {s["name"]: s["value"] for s in pod["securityContext"]["sysctls"]}
    assert sysctls["net.ipv4.ip_unprivileged_port_start"] == "0"


def test_pod_outlives_the_edge_drain_and_the_renderer_shutdown():
    conf = edge_toml()["server"]
    pod = sapl_pod()
    edge = container(pod, "sapl-edge")
    sapl = container(pod, "sapl")
    renderer = container(pod, "sapl-renderer")

    edge_stop = prestop_seconds(edge) + seconds(conf["grace_period"]) \
        + seconds(conf["shutdown_timeout"])
    renderer_stop = seconds(flag(renderer["args"], "--shutdown-grace"))
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > edge_stop, "kubelet would SIGKILL the edge mid-drain"
    assert grace > renderer_stop, "kubelet would SIGKILL jobs before they return to the queue"
    # Gunicorn keeps its socket open while the edge still forwards requests in flight.
    assert prestop_seconds(sapl) > prestop_seconds(edge) + seconds(conf["grace_period"])


def test_containers_share_the_socket_static_and_media_the_toml_names():
    conf = edge_toml()
    pod = sapl_pod()

    def mount_for(c, path):
        for m in c["volumeMounts"]:
            if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
                return m["name"]
        raise AssertionError("%s has no volume holding %s" % (c["name"], path))

    sapl, edge, renderer = (container(pod, n) for n in ("sapl", "sapl-edge", "sapl-renderer"))
    socket = conf["upstream"]["address"].removeprefix("unix:")
    assert mount_for(edge, socket) == mount_for(sapl, socket) == "run"
    assert "--bind=unix:" + socket in sapl["command"]

    roots = {r["name"]: r["root"] for r in conf["route"] if r.get("action") == "files"}
    assert mount_for(edge, roots["static"]) == mount_for(sapl, roots["static"]) == "static"
    assert mount_for(edge, roots["media"]) == mount_for(sapl, roots["media"]) == "media"

    # The renderer writes where the edge serves /media/pdf/ from.
    pdf_dir = flag(renderer["args"], "--pdf-dir")
    assert pdf_dir == os.path.join(roots["media"], "pdf")
    assert mount_for(renderer, pdf_dir) == "media"
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["media"]["persistentVolumeClaim"]["claimName"]
    find("PersistentVolumeClaim", claim)


def test_edge_and_renderer_know_their_tenant_and_redis_b():
    pod = sapl_pod()
    for name in ("sapl-edge", "sapl-renderer"):
        env = {e["name"]: e for e in container(pod, name)["env"]}
        # Every key, queue and channel on the shared Redis is prefixed with the namespace.
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("sapl-env", var)


def test_pod_fits_the_fleet_memory_and_cpu_envelope():
    pod = sapl_pod()
    limits = {c["name"]: c["resources"]["limits"] for c in pod["containers"]}
    requests = {c["name"]: c["resources"]["requests"] for c in pod["containers"]}

    total_mib = sum(mebibytes(l["memory"]) for l in limits.values())
    total_cpu = sum(millicores(l["cpu"]) for l in limits.values())
    assert total_mib <= POD_MEMORY_LIMIT_MIB, "pod memory %d Mi > %d Mi" % (
        total_mib, POD_MEMORY_LIMIT_MIB)
    assert total_cpu <= POD_CPU_LIMIT_MILLI
    for name in limits:
        assert mebibytes(requests[name]["memory"]) <= mebibytes(limits[name]["memory"])

    # Gunicorn keeps room for its workers at the plan's 400 MB each.
    sapl = container(pod, "sapl")
    workers = int(flag(sapl["command"], "--workers"))
    assert workers >= GUNICORN_MIN_WORKERS
    assert mebibytes(limits["sapl"]["memory"]) >= workers * 400 * 10**6 / 2**20

    # The renderer: the plan's 400 MB worker envelope. It exits by itself at
    # --memory-limit-mb; the kernel's limit sits above that, at most the plan's hard 450 MB
    # plus a sampling margin.
    renderer = container(pod, "sapl-renderer")
    envelope = int(flag(renderer["args"], "--memory-limit-mb"))
    assert envelope == WORKER_ENVELOPE_MIB
    assert mebibytes(requests["sapl-renderer"]["memory"]) == WORKER_ENVELOPE_MIB
    assert envelope < mebibytes(limits["sapl-renderer"]["memory"]) <= 450
    assert seconds(flag(renderer["args"], "--hard-time-limit")) == 180
    assert seconds(flag(renderer["args"], "--soft-time-limit")) == 120


def test_renderer_probes_and_flags():
    renderer = container(sapl_pod(), "sapl-renderer")
    port = port_of(flag(renderer["args"], "--metrics-address"))
    ports = {p["name"]: p["containerPort"] for p in renderer["ports"]}
    assert ports[renderer["livenessProbe"]["httpGet"]["port"]] == port
    assert ports[renderer["readinessProbe"]["httpGet"]["port"]] == port
    assert renderer["command"] == ["sapl-renderer", "work"]

    # Every flag the manifest passes exists in the binary, when it is built.
    binary = os.path.join(os.path.dirname(servers.edge_binary()), "sapl-renderer")
    if not os.path.exists(binary):
        pytest.skip("sapl-renderer not built at %s: flags not checked" % binary)
    done = subprocess.run([binary, "work", "--help"], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        pytest.skip("this sapl-renderer build has no `work` subcommand yet")
    for arg in renderer["args"]:
        name = arg.split("=", 1)[0]
        assert name in done.stdout, "%s is not a flag of `sapl-renderer work`" % name


# --- systemd -----------------------------------------------------------------------------


def unit(name):
    """A unit file as {section: {key: [values]}}."""
    sections, current = {}, None
    with open(os.path.join(SYSTEMD, name)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            else:
                key, _, value = line.partition("=")
                current.setdefault(key, []).append(value)
    return sections


def test_systemd_edge_unit_reloads_drains_and_binds_80_unprivileged():
    conf = edge_toml()["server"]
    s = unit("sapl-edge.service")["Service"]
    assert s["ExecStart"] == ["/usr/local/bin/sapl-edge -c /etc/sapl-edge/sapl-edge.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"]
    drain = seconds(conf["grace_period"]) + seconds(conf["shutdown_timeout"])
    assert seconds(s["TimeoutStopSec"][0]) > drain
    assert s["User"][0] != "root"
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]


def test_systemd_renderer_unit_restarts_after_its_memory_exit():
    s = unit("sapl-renderer.service")["Service"]
    assert s["ExecStart"][0].startswith("/usr/local/bin/sapl-renderer work")
    assert s["Restart"] == ["always"]
    grace = seconds(flag(s["ExecStart"][0].split(), "--shutdown-grace"))
    assert seconds(s["TimeoutStopSec"][0]) > grace
    assert mebibytes(s["MemoryMax"][0]) <= 450 * 10**6 / 2**20 + 1
    assert s["ReadWritePaths"] == ["/var/interlegis/sapl/media/pdf"]


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd): units not verified")
    # verify insists that ExecStart names an executable: point the copies at stand-ins,
    # since the binaries are not installed under /usr/local/bin here.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sapl-edge", "sapl-renderer"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    copies = []
    for path in sorted(glob.glob(os.path.join(SYSTEMD, "*.service"))):
        with open(path) as f:
            text = f.read().replace("/usr/local/bin/", str(bin_dir) + "/")
        copy = tmp_path / os.path.basename(path)
        copy.write_text(text)
        copies.append(str(copy))
    assert len(copies) == 2
    done = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True,
                          timeout=60)
    # Unknown or misspelt keys only warn, with status 0: any output is a failure.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), \
        done.stdout + done.stderr


def test_environment_file_example_names_every_variable_the_units_need():
    with open(os.path.join(SYSTEMD, "sapl-edge.env.example")) as f:
        names = {line.split("=", 1)[0] for line in f
                 if line.strip() and not line.startswith("#")}
    assert {"POD_NAMESPACE", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL",
            "DATABASE_URL", "SECRET_KEY", "SAPL_PDF_DIR", "SAPL_MEDIA_ROOT"} <= names
    for unit_name in ("sapl-edge.service", "sapl-renderer.service"):
        assert unit(unit_name)["Service"]["EnvironmentFile"] == ["/etc/sapl-edge/sapl-edge.env"]


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_builds_both_binaries_and_runs_unprivileged():
    with open(os.path.join(REPO, "deploy", "Dockerfile")) as f:
        text = f.read()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert stages == [("rust:1.95-bookworm", "builder"), ("debian:bookworm-slim", "")]
    assert "cmake" in text and "ca-certificates" in text
    assert re.search(r"-p sapl-edge -p sapl-renderer", text)
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r"^EXPOSE 80 9145$", text, re.M)
    # The uid the Kubernetes securityContext declares is the image's user.
    edge = container(sapl_pod(), "sapl-edge")
    assert edge["securityContext"]["runAsUser"] == 10001


# --- the operations doc ------------------------------------------------------------------


def test_every_metric_the_operations_doc_names_exists():
    with open(os.path.join(REPO, "deploy", "README.md")) as f:
        named = set(re.findall(r"\bsapl_edge_[a-z_]*[a-z]\b", f.read()))
    assert len(named) >= 15
    source = ""
    for path in glob.glob(os.path.join(REPO, "*", "src", "**", "*.rs"), recursive=True):
        with open(path) as f:
            source += f.read()
    registered = set(re.findall(r'"(sapl_edge_[a-z_]+)"', source))
    # An alert on a name nobody exports never fires.
    assert named <= registered, "named in deploy/README.md, exported nowhere: %s" % sorted(
        named - registered)
