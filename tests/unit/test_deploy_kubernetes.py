"""The Kubernetes manifests of ``deploy/kubernetes``, validated offline.

The core objects against the Kubernetes OpenAPI schemas of ``kubernetes-validate`` (strict: an
unknown field fails); the ServiceMonitor and PrometheusRule against the models generated from the
Prometheus Operator's CRDs (``cloudcoil-models-prometheus-operator``), where a field the model
does not know fails too. Then what the objects must mean: one non-root read-only replica, probes
that never ask the database, the password as a file, selectors that meet, the job the rules
select, and the generated rules and dashboards equal to their sources.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator
from kubernetes_validate.utils import latest_version
from pydantic import BaseModel

from pg_runbook_exporter.config import load_config
from tests.support.kustomize import Object, build
from tests.support.stack import REPO

KUBE = REPO / "deploy" / "kubernetes"
KUBERNETES = latest_version()  # the newest schemas the package ships
CUSTOM_RESOURCES: dict[str, type[BaseModel]] = {
    "ServiceMonitor": operator.ServiceMonitor,
    "PrometheusRule": operator.PrometheusRule,
}
OPERATOR_MODELS = importlib.metadata.version("cloudcoil-models-prometheus-operator")
JOB_IN_RULES = re.compile(r'up\{job="([^"]+)"\}')


def containerfile(instruction: str) -> list[str]:
    """The arguments of the Containerfile's one ``instruction`` line, split at ``:`` and spaces."""
    text = (REPO / "Containerfile").read_text(encoding="utf-8")
    (line,) = re.findall(rf"^{instruction} (.+)$", text, re.MULTILINE)
    return re.split(r"[: ]", line)


def objects_of(documents: list[Object], kind: str) -> list[Object]:
    return [d for d in documents if d["kind"] == kind]


def one(documents: list[Object], kind: str) -> Object:
    (found,) = objects_of(documents, kind)
    return found


@pytest.fixture(scope="module")
def base() -> list[Object]:
    return build(KUBE)


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> list[Object]:
    """The custom-queries overlay, with the bundled queries.yaml put in it as a user would."""
    copied = tmp_path_factory.mktemp("kube") / "kubernetes"
    shutil.copytree(KUBE, copied)
    shutil.copy(REPO / "pg_runbook_exporter" / "queries.yaml", copied / "custom-queries")
    return build(copied / "custom-queries")


@pytest.fixture(scope="module")
def web() -> list[Object]:
    """The web-config overlay: TLS and basic auth on, probes and ServiceMonitor to match."""
    return build(KUBE / "web-config")


@pytest.fixture(scope="module")
def secret() -> Object:
    path = KUBE / "exporter" / "database-secret.example.yaml"
    loaded: Object = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def unknown_fields(given: Any, known: Any, path: str = "") -> Iterator[str]:
    """Paths in ``given`` that the model dropped (pydantic ignores fields it does not know)."""
    if isinstance(given, dict):
        for key, value in given.items():
            if not isinstance(known, dict) or key not in known:
                yield f"{path}.{key}"
            else:
                yield from unknown_fields(value, known[key], f"{path}.{key}")
    elif isinstance(given, list):
        for index, value in enumerate(given):
            yield from unknown_fields(value, known[index], f"{path}[{index}]")


def validate_custom_resource(document: Object) -> None:
    model = CUSTOM_RESOURCES[document["kind"]].model_validate(document)
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = list(unknown_fields(document, dumped))
    if unknown:
        raise ValueError(f"{document['kind']}: fields the CRD does not define: {unknown}")


def test_core_objects_validate_strictly(
    base: list[Object], custom: list[Object], web: list[Object], secret: Object
) -> None:
    core = [d for d in [*base, *custom, *web, secret] if d["kind"] not in CUSTOM_RESOURCES]
    assert {d["kind"] for d in core} == {"Deployment", "Service", "ConfigMap", "Secret"}
    for document in core:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    print(f"\n{len(core)} core objects valid for Kubernetes {KUBERNETES} (kubernetes-validate)")


def test_custom_resources_validate_against_the_operator_crds(
    base: list[Object], web: list[Object]
) -> None:
    custom = [d for d in [*base, *web] if d["kind"] in CUSTOM_RESOURCES]
    assert sorted(d["kind"] for d in custom) == sorted(["PrometheusRule", "ServiceMonitor"] * 2)
    for document in custom:
        validate_custom_resource(document)
    print(f"\n{len(custom)} custom resources valid for prometheus-operator v{OPERATOR_MODELS}")


def test_a_misspelt_field_fails_both_validators(base: list[Object]) -> None:
    deployment = copy.deepcopy(one(base, "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    monitor = copy.deepcopy(one(base, "ServiceMonitor"))
    endpoint = monitor["spec"]["endpoints"][0]
    endpoint["relabellings"] = endpoint.pop("relabelings")
    with pytest.raises(ValueError, match=r"\.spec\.endpoints\[0\]\.relabellings"):
        validate_custom_resource(monitor)


def test_one_non_root_read_only_replica_without_capabilities(base: list[Object]) -> None:
    deployment = one(base, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    # The image's numeric user and port (the Containerfile's USER and EXPOSE).
    user, group = containerfile("USER")
    context = pod["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (user, group)
    (exposed,) = containerfile("EXPOSE")
    assert container["ports"] == [{"name": "http", "containerPort": int(exposed)}]


def test_probes_ask_only_whether_the_process_serves(base: list[Object]) -> None:
    container = one(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        # /readyz answers 503 while the database is down: as readiness it would take the
        # target out of the endpoints and hide pgrb_up 0.
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    service = one(base, "Service")
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_with_basic_auth_on_the_probes_need_no_password(web: list[Object]) -> None:
    pod = one(web, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    text = (REPO / "Containerfile").read_text(encoding="utf-8")
    healthcheck = re.search(r"^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", text, re.MULTILINE)
    assert healthcheck, "the Containerfile's HEALTHCHECK … CMD [...] is not where it was"
    assert container["livenessProbe"]["exec"]["command"] == json.loads(healthcheck.group(1))
    assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}
    (config,) = [e["value"] for e in container["env"] if e["name"] == "PGRB_WEB_CONFIG_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["defaultMode"] == 0o440
    (endpoint,) = one(web, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert set(endpoint["basicAuth"]) == {"username", "password"}
    assert "ca" in endpoint["tlsConfig"]


def test_the_password_is_a_0440_file_read_with_password_file(
    base: list[Object], secret: Object
) -> None:
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o440
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert f"--database.password-file={mount['mountPath']}/password" in container["args"]
    (url,) = [e for e in container["env"] if e["name"] == "PGRB_DATABASE_URL"]
    reference = url["valueFrom"]["secretKeyRef"]
    assert reference == {"name": volume["secret"]["secretName"], "key": "url"}
    assert secret["metadata"]["name"] == reference["name"]
    assert set(secret["stringData"]) == {"url", "password"}
    assert ":" not in secret["stringData"]["url"].split("://")[1].split("@")[0]  # no password


def test_the_service_and_the_service_monitor_reach_the_exporter(base: list[Object]) -> None:
    pod = one(base, "Deployment")["spec"]["template"]
    service, monitor = one(base, "Service"), one(base, "ServiceMonitor")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == pod["spec"]["containers"][0]["ports"][0]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")


def test_the_service_monitor_sets_the_job_the_rules_select(base: list[Object]) -> None:
    rules = (REPO / "alerts" / "pg-runbook-exporter.rules.yml").read_text(encoding="utf-8")
    jobs = set(JOB_IN_RULES.findall(rules))
    assert len(jobs) == 1, jobs
    relabelings = one(base, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"]
    setting_job = [r for r in relabelings if r["targetLabel"] == "job"]
    assert setting_job == [{"action": "replace", "targetLabel": "job", "replacement": jobs.pop()}]


def test_the_prometheus_rule_has_the_rule_files_groups(base: list[Object]) -> None:
    rules = yaml.safe_load((REPO / "alerts" / "pg-runbook-exporter.rules.yml").read_text())
    assert one(base, "PrometheusRule")["spec"]["groups"] == rules["groups"]


def test_every_dashboard_is_a_config_map_for_grafanas_sidecar(base: list[Object]) -> None:
    maps = {m["metadata"]["name"]: m for m in objects_of(base, "ConfigMap")}
    boards = sorted((REPO / "dashboards").glob("*.json"))
    assert sorted(maps) == [f"{b.stem}-dashboard" for b in boards]
    for board in boards:
        config_map = maps[f"{board.stem}-dashboard"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["data"] == {board.name: board.read_text(encoding="utf-8")}
        json.loads(config_map["data"][board.name])


def test_a_custom_queries_yaml_is_mounted_and_read_with_config(
    custom: list[Object], tmp_path: Path
) -> None:
    deployment = one(custom, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    generated = [m for m in objects_of(custom, "ConfigMap") if "queries.yaml" in m["data"]]
    (config_map,) = generated
    (volume,) = [v for v in pod["volumes"] if v.get("configMap")]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert f"--config={mount['mountPath']}/queries.yaml" in pod["containers"][0]["args"]
    written = tmp_path / "queries.yaml"
    written.write_text(config_map["data"]["queries.yaml"], encoding="utf-8")
    assert load_config(written).checks


def test_every_manifest_is_in_a_kustomization() -> None:
    listed = set()
    for kustomization in KUBE.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text())["resources"]:
            listed.add((kustomization.parent / entry).resolve())
    manifests = {
        p.resolve()
        for p in KUBE.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith((".example.yaml", "-patch.yaml"))
    }
    assert manifests - listed == set()
