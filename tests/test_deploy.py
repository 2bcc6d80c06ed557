"""The container image and the Kubernetes examples, tested without a Docker engine or a cluster.

The Dockerfile's own steps (ENV, WORKDIR, COPY, RUN, ENTRYPOINT, HEALTHCHECK) are run in a fresh venv,
and the manifests are parsed and checked against the config they embed: the keys pass check-config,
and the ports, probes, paths, secrets and volumes agree with it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import otel_bridge
from otel_bridge.config import Settings, load_settings
from otel_bridge.notation import split_endpoint

ROOT = Path(__file__).parent.parent
MANIFESTS = sorted((ROOT / "config" / "kubernetes").glob("*.yaml"))
# Memory model the manifests are sized by (see their header comments): resident memory at idle plus a
# multiple of the queue's bound, measured with the queue full.
IDLE_MIB = 70
BYTES_PER_QUEUED_BYTE = 4.5


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


def _stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name (the last, the image, as "image"), each its steps after FROM."""
    stages: dict[str, list[tuple[str, str]]] = {}
    for kind, args in dockerfile():
        if kind == "FROM":
            base, _, name = args.partition(" AS ")
            steps = stages.setdefault(name.strip() or "image", [])
            steps.append((kind, base.strip()))
        else:
            steps.append((kind, args))
    return stages


def test_dockerfile_is_a_small_non_root_image_with_a_healthcheck():
    stages = _stages()
    assert list(stages) == ["build", "image"], "a build stage, then the image"
    # The compiler stays in the build stage: only the wheel it makes is copied out of it.
    assert any("apt-get install" in args and "gcc" in args for kind, args in stages["build"] if kind == "RUN")
    steps = stages["image"]
    kinds = [kind for kind, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert not any("apt-get" in args for kind, args in steps if kind == "RUN")
    # Dependencies before the package: a code change does not reinstall them.
    copies = [args for kind, args in steps if kind == "COPY"]
    assert copies[0].startswith("pyproject.toml") and copies[1].startswith("--from=build")
    first_pip = next(i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "pip install -r" in args)
    assert first_pip < kinds.index("COPY", kinds.index("COPY") + 1)
    user = dict(steps)["USER"]
    assert user.isdigit() and int(user) != 0
    assert kinds.index("USER") > max(i for i, kind in enumerate(kinds) if kind == "RUN")
    settings = Settings()
    ports = {split_endpoint(e)[1] for e in (settings.receiver.grpc.endpoint, settings.receiver.http.endpoint,
                                            settings.telemetry.endpoint)}
    assert {int(p) for p in dict(steps)["EXPOSE"].split()} == ports
    health = dict(steps)["HEALTHCHECK"]
    assert f"127.0.0.1:{split_endpoint(settings.telemetry.endpoint)[1]}/healthz" in health
    assert _exec_form(dict(steps)["ENTRYPOINT"]) == ["otel-bridge", "serve"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# RUN steps that change the machine rather than the image's Python: skipped, each for its reason.
SKIPPED_RUN = {
    "useradd": "creates a system user: needs root and changes this machine",
    "apt-get": "installs the compiler system-wide; this machine has one (the tests build the extension too)",
}


def test_image_steps_install_and_start_in_a_fresh_venv(tmp_path):
    """Run the Dockerfile's steps with tmp_path as the filesystem root and a fresh venv as the image's Python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    roots: dict[str, Path] = {}  # stage -> its filesystem root
    entrypoint: list[str] = []
    healthcheck = ""
    for stage, steps in _stages().items():
        root = cwd = roots[stage] = tmp_path / stage
        cwd.mkdir()
        for kind, args in steps[1:]:
            if kind == "ENV":
                env.update(item.split("=", 1) for item in shlex.split(args))
            elif kind == "WORKDIR":
                cwd = root / args.lstrip("/")
                cwd.mkdir(parents=True, exist_ok=True)
            elif kind == "COPY":
                *sources, target = args.split()
                source_root = ROOT
                if sources[0].startswith("--from="):
                    source_root = roots[sources.pop(0).removeprefix("--from=")]
                for source in sources:
                    origin = source_root / source.lstrip("/")
                    destination = cwd / target / origin.name if target.endswith("/") else cwd / target
                    if origin.is_dir():
                        shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
                    else:
                        shutil.copy(origin, destination)
            elif kind == "RUN":
                if args.split()[0] in SKIPPED_RUN:
                    continue
                done = subprocess.run(["bash", "-c", args], cwd=cwd, env=env, capture_output=True, text=True, timeout=540)
                assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            elif kind == "ENTRYPOINT":
                entrypoint = _exec_form(args)
            elif kind == "HEALTHCHECK":
                healthcheck = args
    installed = subprocess.run(
        ["python", "-c", "import otel_bridge, otel_bridge.decode as d; print(otel_bridge.__file__, otel_bridge.__version__, d.NATIVE)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert installed[0].startswith(str(venv)) and installed[1] == otel_bridge.__version__
    assert installed[2] == "True", "the image runs the C decoder"

    # `docker run IMAGE --config FILE`: the ENTRYPOINT plus the user's arguments, as the Kubernetes examples do.
    grpc_port, http_port, telemetry_port = _free_ports(3)
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"receiver: {{grpc: {{endpoint: '127.0.0.1:{grpc_port}'}}, http: {{endpoint: '127.0.0.1:{http_port}'}}}}\n"
        f"telemetry: {{endpoint: '127.0.0.1:{telemetry_port}'}}\n"
    )
    proc = subprocess.Popen([*entrypoint, "--config", str(config)], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        # HEALTHCHECK CMD, with the port mapped as `docker run -p` would.
        check = _exec_form(healthcheck.split(" CMD ", 1)[1].strip())
        check = [part.replace(":13133/", f":{telemetry_port}/") for part in check]
        deadline = time.monotonic() + 30
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "HEALTHCHECK never passed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert f"OTLP/HTTP receiver listening on 127.0.0.1:{http_port}" in log


# --- Kubernetes -------------------------------------------------------------------------------------------


def _docs(path: Path) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _bridge(pod: dict) -> dict:
    (bridge,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["image"].startswith("otel-bridge:")]
    return bridge


def _config_env(container: dict) -> dict[str, str]:
    """The container's environment as the bridge sees it; values from Secrets become placeholders."""
    return {e["name"]: e.get("value", f"from-secret-{e['name'].lower()}") for e in container.get("env", [])}


def _embedded(path: Path, tmp_path: Path) -> tuple[dict, dict, Path]:
    docs = _docs(path)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    bridge = _bridge(pod)
    config_path = Path(bridge["args"][bridge["args"].index("--config") + 1])
    (mount,) = [m for m in bridge["volumeMounts"] if config_path.parent == Path(m["mountPath"])]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    local = tmp_path / config_path.name
    local.write_text(docs["ConfigMap"]["data"][config_path.name])
    return pod, bridge, local


def _written_paths(settings: Settings) -> list[Path]:
    """Where the bridge writes, as the image resolves relative paths (against its WORKDIR): the durable
    queue's directory, the dead-letter file (any refused call), and the file sink when there is no API key."""
    workdir = Path(dict(dockerfile())["WORKDIR"])  # the last one: the image's
    paths = [workdir / settings.exporter.dead_letter.path]
    if settings.exporter.queue.directory:
        paths.append(workdir / settings.exporter.queue.directory)
    if not settings.exporter.weave.api_key.get_secret_value():
        paths.append(workdir / settings.exporter.file.path)
    return paths


def _mount_of(container: dict, path: Path) -> dict | None:
    """The volume mount that holds `path` (the deepest one), or None: the image's own filesystem."""
    holding = [m for m in container.get("volumeMounts", []) if Path(m["mountPath"]) in (path, *path.parents)]
    return max(holding, key=lambda m: len(Path(m["mountPath"]).parts), default=None)


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_embedded_config_passes_check_config(path, tmp_path):
    _, bridge, config = _embedded(path, tmp_path)
    env = {**os.environ, **_config_env(bridge)}
    result = subprocess.run(
        [sys.executable, "-m", "otel_bridge", "check-config", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "from-secret" not in result.stdout  # secrets are masked in what it prints


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_agrees_with_its_config(path, tmp_path, monkeypatch):
    pod, bridge, config = _embedded(path, tmp_path)
    referenced = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)", config.read_text()))
    assert referenced <= set(_config_env(bridge)), "every ${env:...} of the config is set on the container"
    for name, value in _config_env(bridge).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)

    # The API key (and any token) comes from a Secret, never a literal.
    secret_env = {e["name"] for e in bridge["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert "WANDB_API_KEY" in secret_env
    assert settings.exporter.weave.api_key.get_secret_value() == "from-secret-wandb_api_key"

    assert bridge["image"] == f"otel-bridge:{otel_bridge.__version__}"
    ports = {p["name"]: p["containerPort"] for p in bridge["ports"]}
    telemetry_port = split_endpoint(settings.telemetry.endpoint)[1]
    configured = {split_endpoint(r.endpoint)[1] for r in (settings.receiver.grpc, settings.receiver.http) if r}
    assert set(ports.values()) <= configured | {telemetry_port}
    for probe, path_ in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = bridge[probe]["httpGet"]
        assert get["path"] == path_ and ports.get(get["port"], get["port"]) == telemetry_port
    assert split_endpoint(settings.telemetry.endpoint)[0] == "0.0.0.0"  # the kubelet probes the pod's IP

    # Every file the bridge writes is on a writable volume (the root filesystem is read-only), the
    # durable queue's on one that outlives the container.
    for written in _written_paths(settings):
        mount = _mount_of(bridge, written)
        assert mount is not None and not mount.get("readOnly"), f"{written} is on the read-only root filesystem"
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume

    resources = bridge["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    needed = IDLE_MIB + BYTES_PER_QUEUED_BYTE * settings.exporter.queue_max_bytes / 2**20
    assert _mib(resources["limits"]["memory"]) >= needed, "memory limit below the sizing model"
    assert _mib(resources["requests"]["memory"]) >= IDLE_MIB
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout

    uid = int(dict(dockerfile())["USER"])
    security = bridge["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == uid and security["readOnlyRootFilesystem"]


def test_sidecar_shares_the_pod_with_the_app_and_starts_first(tmp_path, monkeypatch):
    pod, bridge, config = _embedded(ROOT / "config" / "kubernetes" / "sidecar.yaml", tmp_path)
    assert bridge in pod["initContainers"] and bridge["restartPolicy"] == "Always"  # a native sidecar
    (app,) = pod["containers"]
    for name, value in _config_env(bridge).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    http_port = split_endpoint(settings.receiver.http.endpoint)[1]
    assert _config_env(app)["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://localhost:{http_port}"
    assert f"--otlp-endpoint=localhost:{http_port}" in app["args"]
    # Loopback receivers; readiness that a slow upstream or a full queue cannot fail.
    assert split_endpoint(settings.receiver.grpc.endpoint)[0] == split_endpoint(settings.receiver.http.endpoint)[0] == "127.0.0.1"
    assert settings.telemetry.readiness.upstream_grace == 0 and settings.telemetry.readiness.queue_high_water == 1


def test_gateway_service_reaches_the_receivers_which_require_a_token(tmp_path, monkeypatch):
    docs = _docs(ROOT / "config" / "kubernetes" / "gateway.yaml")
    pod, bridge, config = _embedded(ROOT / "config" / "kubernetes" / "gateway.yaml", tmp_path)
    for name, value in _config_env(bridge).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    service, deployment = docs["Service"], docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in bridge["ports"]}
    targets = {ports[p["targetPort"]] for p in service["spec"]["ports"]}
    assert targets == {split_endpoint(settings.receiver.grpc.endpoint)[1], split_endpoint(settings.receiver.http.endpoint)[1]}
    assert settings.receiver.grpc.auth and settings.receiver.http.auth
    assert settings.receiver.http.auth.bearer_token.get_secret_value() == "from-secret-otel_bridge_token"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == split_endpoint(settings.telemetry.endpoint)[1]


def test_kafka_replicas_consume_a_topic_and_commit_only_what_weave_accepted(tmp_path, monkeypatch):
    docs = _docs(ROOT / "config" / "kubernetes" / "kafka.yaml")
    pod, bridge, config = _embedded(ROOT / "config" / "kubernetes" / "kafka.yaml", tmp_path)
    for name, value in _config_env(bridge).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    assert set(docs) == {"ConfigMap", "Deployment"}, "no Service: the replicas listen for no client"
    assert docs["Deployment"]["spec"]["replicas"] >= 2
    assert settings.receiver.grpc is None and settings.receiver.http is None and settings.receiver.kafka
    assert [p["containerPort"] for p in bridge["ports"]] == [split_endpoint(settings.telemetry.endpoint)[1]]
    assert settings.receiver.kafka.sasl and settings.receiver.kafka.sasl.password.get_secret_value() == "from-secret-kafka_password"
    # The topic is the durable buffer: offsets are committed once Weave accepted the calls (a queue in
    # memory), and an outage never ends in the dead-letter file (retries never give up).
    assert settings.exporter.queue.directory is None and settings.exporter.max_elapsed_time == 0
    # Ready = in the group: no Service routes to the pods, so a full queue or an outage must not fail it.
    assert settings.telemetry.readiness.upstream_grace == 0 and settings.telemetry.readiness.queue_high_water == 1
