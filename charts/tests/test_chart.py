"""Tests of the sharedcare Helm chart, rendered by the real Helm engine.

helm-python-sdk binds Helm's Go SDK as a library (no helm binary, no
cluster): `Chart.render` is `helm template`, `lint` is `helm lint`, and
`validate_schema` checks values against values.schema.json. Every rendered
manifest is validated against the Kubernetes OpenAPI schemas (strict) with
kubernetes-validate, for Kubernetes 1.30 and for the newest version it ships.

Run from the repository root:  .venv/bin/python -m pytest charts/tests -q
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import ipaddress
import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[1] / "sharedcare"
REPO_DIR = CHART_DIR.parents[1]
RELEASE = "care"
NAMESPACE = "sharedcare"
FULLNAME = f"{RELEASE}-sharedcare"
SERVICES = ("identity", "consent", "records", "audit")
PORTS = {"identity": 50051, "consent": 50052, "records": 50053, "audit": 50054}
VALUE_FILES = {
    "default": None,
    # The values tools/kind.sh installs with: one file, tested here.
    "kind": REPO_DIR / "k8s" / "kind-values.yaml",
    "kind-observability": [
        REPO_DIR / "k8s" / "kind-values.yaml",
        REPO_DIR / "k8s" / "kind-observability-values.yaml",
    ],
    "production": CHART_DIR / "ci" / "production-values.yaml",
    # Every monitoring toggle on: ServiceMonitor, PrometheusRule, dashboard, OTEL_*.
    "observability": CHART_DIR / "ci" / "observability-values.yaml",
}
# Who calls whom, from the deploy contract: identity asks consent before it
# serves demographics and audits the read; consent checks organisations with
# identity and audits its changes; audit fetches identity's keys; records
# calls all three.
CALLS = {
    "identity": {"consent", "audit"},
    "consent": {"identity", "audit"},
    "audit": {"identity"},
    "records": {"identity", "consent", "audit"},
}
CAPABILITIES = (
    "assert_relationships", "refer", "record_directives", "privacy_officer",
    "platform_auditor", "trace_patients", "break_glass", "merge_patients",
    "view_restricted",
)
CLASSIFICATION_DIR = "/etc/sharedcare/classification"
REPO_CLASSIFICATION = REPO_DIR / "services" / "records" / "classification.toml"
CHART_CLASSIFICATION = CHART_DIR / "files" / "classification.toml"
METRICS_PORT = 9464
OLDEST_KUBERNETES = "1.30"
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()

# kubernetes-validate re-reads a 1.3 MB definitions file for every manifest;
# the files never change, so read each once.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


# --------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def values_of(name: str) -> dict[str, Any]:
    """A value set's files merged in order, as `helm -f a -f b` would."""
    paths = VALUE_FILES[name]
    if paths is None:
        return {}
    if isinstance(paths, Path):
        paths = [paths]
    out: dict[str, Any] = {}
    for path in paths:
        out = merged(out, yaml.safe_load(path.read_text()) or {})
    return out


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge like Helm's -f then --set: maps merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Rendered:
    """A rendered release: its manifests as dicts, and NOTES.txt."""

    def __init__(self, files: dict[str, str]):
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
        return found[0]

    def maybe(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(owner, pod spec) for every Deployment, Job and bare Pod."""
        specs = []
        for obj in self.objects:
            owner = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] in ("Deployment", "Job"):
                specs.append((owner, obj["spec"]["template"]["spec"]))
            elif obj["kind"] == "Pod":
                specs.append((owner, obj["spec"]))
        return specs


def render_with(chart: helm.Chart, values: dict[str, Any] | None, **kwargs: Any) -> Rendered:
    kwargs.setdefault("name", RELEASE)
    kwargs.setdefault("namespace", NAMESPACE)
    return Rendered(chart.render(values or None, **kwargs))


@functools.lru_cache(maxsize=None)
def _render_set(name: str) -> Rendered:
    with helm.Chart.load(CHART_DIR) as loaded:
        return render_with(loaded, values_of(name))


@pytest.fixture(params=list(VALUE_FILES), scope="session")
def value_set(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def rendered(value_set: str) -> Rendered:
    return _render_set(value_set)


def render_error(chart: helm.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(caught.value)


def name_of(svc: str) -> str:
    return f"{FULLNAME}-{svc}"


def health_name(svc: str) -> str:
    return f"sharedcare.{svc}.v1.{svc.capitalize()}Service"


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def config_toml(r: Rendered, svc: str) -> dict[str, Any]:
    return tomllib.loads(r.get("ConfigMap", name_of(svc))["data"][f"{svc}.toml"])


def url_of(scheme: str, svc: str) -> str:
    return f"{scheme}://{name_of(svc)}:{PORTS[svc]}"


# Value sets that turn TLS on (production does).
TLS_SETS = {"production"}


def scheme_of(value_set: str) -> str:
    return "https" if value_set in TLS_SETS else "http"


# --------------------------------------------------------------------------
# Lint and Kubernetes schemas
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", [None, f"v{OLDEST_KUBERNETES}.0"])
def test_lint_is_clean(value_set: str, kube_version: str | None) -> None:
    report = helm.lint(
        CHART_DIR,
        values_of(value_set) or None,
        strict=True,
        namespace=NAMESPACE,
        kube_version=kube_version,
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]
    assert report["total_charts_linted"] == 1


def test_newest_kubernetes_schemas_are_newer_than_the_oldest_supported() -> None:
    assert tuple(map(int, NEWEST_KUBERNETES.split(".")[:2])) > (1, 30), NEWEST_KUBERNETES


@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_manifests_are_valid_kubernetes(rendered: Rendered, kube_version: str) -> None:
    assert rendered.objects
    for obj in rendered.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] in CRD_KINDS:
            # Not a built-in kind: its CRD's schema (test_..._validate_against_their_crds).
            validate_crd_object(obj)
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is not valid Kubernetes {kube_version}: {e.message} at {list(e.path)}")


def test_the_kinds_each_value_set_renders() -> None:
    kinds = {name: {o["kind"] for o in _render_set(name).objects} for name in VALUE_FILES}
    assert kinds["default"] == {
        "ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service",
        "Deployment", "PodDisruptionBudget", "NetworkPolicy", "Pod",
    }
    assert "PodDisruptionBudget" not in kinds["kind"]
    assert kinds["observability"] == kinds["default"] | {"ServiceMonitor", "PrometheusRule"}
    assert {"HorizontalPodAutoscaler", "Job"} <= kinds["production"]
    assert not {"Secret", "PersistentVolumeClaim"} & kinds["production"]


# --------------------------------------------------------------------------
# Security settings
# --------------------------------------------------------------------------


def test_every_pod_and_container_is_locked_down(rendered: Rendered) -> None:
    specs = rendered.pod_specs()
    assert specs
    for owner, spec in specs:
        assert spec.get("automountServiceAccountToken") is False, owner
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, owner
        assert pod_sc["runAsUser"] != 0, owner
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), owner
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{owner} container {c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where


def test_service_accounts_never_mount_tokens(rendered: Rendered) -> None:
    accounts = rendered.kind("ServiceAccount")
    assert {a["metadata"]["name"] for a in accounts} == {name_of(s) for s in SERVICES}
    for account in accounts:
        assert account["automountServiceAccountToken"] is False
    for svc in SERVICES:
        spec = rendered.get("Deployment", name_of(svc))["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == name_of(svc)


def test_writable_paths_are_only_volumes(rendered: Rendered) -> None:
    for svc in SERVICES:
        spec = rendered.get("Deployment", name_of(svc))["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in container(rendered.get("Deployment", name_of(svc)))["volumeMounts"]}
        assert "/tmp" in mounts and "/var/lib/sharedcare" in mounts
        for path, mount in mounts.items():
            if path.startswith("/etc/sharedcare"):
                assert mount["readOnly"] is True, path
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]


# --------------------------------------------------------------------------
# Deployments, probes, Services, config
# --------------------------------------------------------------------------


def test_probes_are_native_grpc_on_the_service_port(rendered: Rendered, value_set: str) -> None:
    for svc in SERVICES:
        c = container(rendered.get("Deployment", name_of(svc)))
        assert c["command"] == [f"/usr/local/bin/sharedcare-{svc}"]
        assert c["ports"] == [
            {"name": "grpc", "containerPort": PORTS[svc], "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            action = set(c[probe]) - {"periodSeconds", "failureThreshold", "timeoutSeconds"}
            if value_set in TLS_SETS:
                # The kubelet's gRPC probe cannot do TLS: a TCP probe instead.
                assert action == {"tcpSocket"}, probe
                assert c[probe]["tcpSocket"] == {"port": PORTS[svc]}, (svc, probe)
            else:
                assert action == {"grpc"}, probe
                assert c[probe]["grpc"] == {"port": PORTS[svc], "service": health_name(svc)}, (svc, probe)


def test_services_expose_grpc_with_h2c(rendered: Rendered, value_set: str) -> None:
    for svc in SERVICES:
        service = rendered.get("Service", name_of(svc))
        port, metrics = service["spec"]["ports"]
        assert port["name"] == "grpc"
        assert port["port"] == PORTS[svc] and port["targetPort"] == "grpc"
        assert port["appProtocol"] == ("https" if value_set in TLS_SETS else "kubernetes.io/h2c")
        # Prometheus text over plain HTTP, on every value set (metrics.enabled
        # defaults to true).
        assert metrics == {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"}


def test_kind_values_use_fixed_node_ports() -> None:
    r = _render_set("kind")
    for svc in SERVICES:
        service = r.get("Service", name_of(svc))
        assert service["spec"]["type"] == "NodePort"
        assert service["spec"]["ports"][0]["nodePort"] == PORTS[svc] - 50051 + 30051


def test_image_defaults_to_app_version_and_can_be_pinned(chart: helm.Chart) -> None:
    app_version = chart.metadata["appVersion"]
    r = _render_set("default")
    image = container(r.get("Deployment", name_of("records")))["image"]
    assert image == f"ghcr.io/sharedcare/sharedcare:{app_version}"
    digest = "sha256:" + "a" * 64
    pinned = render_with(chart, {"image": {"digest": digest}})
    assert container(pinned.get("Deployment", name_of("records")))["image"] == f"ghcr.io/sharedcare/sharedcare@{digest}"


def test_config_file_is_rendered_mounted_and_named(rendered: Rendered, value_set: str) -> None:
    scheme = scheme_of(value_set)
    for svc in SERVICES:
        deployment = rendered.get("Deployment", name_of(svc))
        c = container(deployment)
        config_file = env_of(c)["SHAREDCARE_CONFIG_FILE"]["value"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
        assert config_file == f"{mount['mountPath']}/{svc}.toml"
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == name_of(svc)
        cfg = config_toml(rendered, svc)
        assert cfg["server"]["listen"] == f"0.0.0.0:{PORTS[svc]}"
        assert cfg["database"]["data_dir"] == "/var/lib/sharedcare"
        assert cfg["auth"]["identity_url"] == f"{scheme}://{name_of('identity')}:{PORTS['identity']}"
    records = config_toml(rendered, "records")
    assert records["records"]["consent_url"] == url_of(scheme, "consent")
    assert records["records"]["audit_url"] == url_of(scheme, "audit")
    assert records["auth"]["client_id"] == "records"
    assert records["auth"]["client_secret"] == {"file": "/etc/sharedcare/auth/records-client-secret"}
    # identity and records each have a key-encryption key of their own.
    assert records["records"]["key_encryption_key"] == {"file": "/etc/sharedcare/auth/records-key-encryption-key"}
    assert "previous_key_encryption_keys_file" not in records["records"]
    assert records["records"]["classification_map"] == f"{CLASSIFICATION_DIR}/classification.toml"
    identity = config_toml(rendered, "identity")
    assert identity["identity"]["signing_key"] == {"file": "/etc/sharedcare/auth/signing-key.pem"}
    assert identity["identity"]["bootstrap_file"] == "/etc/sharedcare/auth/bootstrap.toml"
    assert identity["identity"]["key_encryption_key"] == {"file": "/etc/sharedcare/auth/identity-key-encryption-key"}
    assert identity["identity"]["nhs_index_key"] == {"file": "/etc/sharedcare/auth/nhs-index-key"}
    # identity asks consent before serving demographics, and audits the read.
    assert identity["identity"]["consent_url"] == url_of(scheme, "consent")
    assert identity["identity"]["audit_url"] == url_of(scheme, "audit")
    assert identity["identity"]["call_timeout_ms"] == 5000
    # No roles in values: identity's built-in role map applies untouched.
    assert "roles" not in identity["identity"]
    # consent audits its changes and asks identity as its own principal.
    consent = config_toml(rendered, "consent")
    assert consent["auth"]["client_id"] == "consent"
    assert consent["auth"]["client_secret"] == {"file": "/etc/sharedcare/auth/consent-client-secret"}
    assert consent["consent"] == {
        "audit_url": url_of(scheme, "audit"),
        "call_timeout_ms": 5000,
        "cache_max_patients": 100000,
        "break_glass": {"grant_minutes": 60, "overrides_patient_deny": False},
    }
    for svc in ("identity", "audit"):
        assert "client_id" not in config_toml(rendered, svc)["auth"], svc
    # Every audit replica signs tree heads with the one key, under one name.
    audit = config_toml(rendered, "audit")["audit"]
    assert audit["signing_key"] == {"file": "/etc/sharedcare/auth/audit-log-key.pem"}
    assert audit["log_name"] == f"{FULLNAME}.{NAMESPACE}/audit"
    assert audit["tree_head_interval_ms"] == 5000


def test_the_audit_log_name_can_be_set_and_is_checked(chart: helm.Chart) -> None:
    r = render_with(chart, {"services": {"audit": {"logName": "care.example.org/audit", "treeHeadIntervalMs": 1000}}})
    audit = config_toml(r, "audit")["audit"]
    assert audit["log_name"] == "care.example.org/audit"
    assert audit["tree_head_interval_ms"] == 1000
    for bad in ({"logName": "has space"}, {"logName": "a+b"}, {"treeHeadIntervalMs": 0}):
        render_error(chart, {"services": {"audit": bad}})


def test_secret_files_are_mounted_only_where_needed(rendered: Rendered, value_set: str) -> None:
    secret = "sharedcare-auth" if value_set == "production" else f"{FULLNAME}-auth"
    wanted = {
        "identity": {"signing-key.pem", "bootstrap.toml", "identity-key-encryption-key", "nhs-index-key"},
        "consent": {"consent-client-secret"},
        "records": {"records-client-secret", "records-key-encryption-key"},
        "audit": {"audit-log-key.pem"},
    }
    for svc in SERVICES:
        spec = rendered.get("Deployment", name_of(svc))["spec"]["template"]["spec"]
        auth = [v for v in spec["volumes"] if v["name"] == "auth"]
        if svc not in wanted:
            assert not auth, svc
            continue
        [volume] = auth
        assert volume["secret"]["secretName"] == secret
        assert {i["key"] for i in volume["secret"]["items"]} == wanted[svc]
        # Files readable by the pod's group only.
        assert volume["secret"]["defaultMode"] == 0o440


def test_log_level_and_otlp_endpoint_are_global_with_per_service_overrides() -> None:
    override = {"services": {"records": {"telemetry": {"logLevel": "debug,sqlx=warn,h2=info"}}}}
    with helm.Chart.load(CHART_DIR) as loaded:
        kind = render_with(loaded, merged(values_of("kind"), override))
    assert config_toml(kind, "records")["telemetry"]["log_level"] == "debug,sqlx=warn,h2=info"
    assert config_toml(kind, "audit")["telemetry"]["log_level"] == "info,sqlx=warn"
    assert config_toml(kind, "audit")["telemetry"]["log_format"] == "pretty"
    assert "otlp_endpoint" not in config_toml(kind, "audit")["telemetry"]
    traced = _render_set("kind-observability")
    for svc in SERVICES:
        assert config_toml(traced, svc)["telemetry"]["otlp_endpoint"].startswith("http://")
    production = _render_set("production")
    for svc in SERVICES:
        assert config_toml(production, svc)["telemetry"]["otlp_endpoint"] == "http://otel-collector.observability:4317"


def test_config_checksum_rolls_only_the_changed_service(chart: helm.Chart) -> None:
    def checksums(r: Rendered) -> dict[str, str]:
        return {
            svc: r.get("Deployment", name_of(svc))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for svc in SERVICES
        }

    before = _render_set("default")
    for svc, checksum in checksums(before).items():
        data = before.get("ConfigMap", name_of(svc))["data"][f"{svc}.toml"]
        assert checksum == hashlib.sha256(data.encode()).hexdigest()
    after = render_with(chart, {"services": {"consent": {"telemetry": {"logLevel": "debug"}}}})
    changed = {svc for svc in SERVICES if checksums(before)[svc] != checksums(after)[svc]}
    assert changed == {"consent"}


def test_postgres_url_comes_from_the_existing_secret_as_a_file() -> None:
    r = _render_set("production")
    for svc in SERVICES:
        deployment = r.get("Deployment", name_of(svc))
        c = container(deployment)
        url_file = env_of(c)["SHAREDCARE_DATABASE__URL__FILE"]["value"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "database")
        assert url_file == f"{mount['mountPath']}/url" and mount["readOnly"] is True
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "database")
        assert volume["secret"]["secretName"] == "sharedcare-database"
        assert volume["secret"]["items"] == [{"key": "url", "path": "url"}]
        data = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
        assert data == {"name": "data", "emptyDir": {}}
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_postgres_backend_is_named_in_every_service_and_migration_container(rendered: Rendered, value_set: str) -> None:
    """SHAREDCARE_DATABASE__BACKEND=postgres beside the URL file; nothing with sqlite (the services' default)."""
    backend = values_of(value_set).get("storage", {}).get("backend", "sqlite")
    containers = [
        (owner, c) for owner, spec in rendered.pod_specs() if not owner.startswith("Pod/")
        for c in spec.get("initContainers", []) + spec["containers"]
    ]
    owners = {owner for owner, _ in containers}
    assert {f"Deployment/{name_of(svc)}" for svc in SERVICES} <= owners
    if backend == "postgres":
        assert {f"Job/{name_of(svc)}-migrate" for svc in SERVICES} <= owners
    for owner, c in containers:
        env = env_of(c)
        if backend == "postgres":
            assert env["SHAREDCARE_DATABASE__BACKEND"] == {"name": "SHAREDCARE_DATABASE__BACKEND", "value": "postgres"}, owner
            assert "SHAREDCARE_DATABASE__URL__FILE" in env, owner
        else:
            assert "SHAREDCARE_DATABASE__BACKEND" not in env, owner
            assert "SHAREDCARE_DATABASE__URL__FILE" not in env, owner


def test_sqlite_gets_a_claim_per_service_and_recreate_rollouts(chart: helm.Chart) -> None:
    r = _render_set("kind")
    for svc in SERVICES:
        claim = r.get("PersistentVolumeClaim", f"{name_of(svc)}-data")
        assert claim["spec"]["resources"]["requests"]["storage"] == "256Mi"
        assert "storageClassName" not in claim["spec"]
        deployment = r.get("Deployment", name_of(svc))
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
        assert volume["persistentVolumeClaim"]["claimName"] == f"{name_of(svc)}-data"
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert "SHAREDCARE_DATABASE__URL__FILE" not in env_of(container(deployment))
    classed = render_with(chart, {"storage": {"sqlite": {"persistence": {"storageClass": "fast", "size": "5Gi"}}}})
    claim = classed.get("PersistentVolumeClaim", f"{name_of('audit')}-data")
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


# --------------------------------------------------------------------------
# Labels and selectors
# --------------------------------------------------------------------------


def test_every_object_has_the_standard_labels(rendered: Rendered, chart: helm.Chart) -> None:
    meta = chart.metadata
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "sharedcare", where
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/part-of"] == "sharedcare", where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["helm.sh/chart"] == f"sharedcare-{meta['version']}", where
        assert labels["app.kubernetes.io/version"], where
        assert labels["app.kubernetes.io/component"], where
        assert len(obj["metadata"]["name"]) <= 63, where


def selectors(r: Rendered) -> dict[str, dict[str, str]]:
    out = {}
    for obj in r.objects:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Deployment":
            out[key] = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "Service":
            out[key] = obj["spec"]["selector"]
        elif obj["kind"] == "PodDisruptionBudget":
            out[key] = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "NetworkPolicy":
            out[key] = obj["spec"]["podSelector"]["matchLabels"]
    return out


def test_selectors_are_name_instance_component_and_match_the_pods(rendered: Rendered) -> None:
    found = selectors(rendered)
    assert found
    for key, selector in found.items():
        assert set(selector) == {
            "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
        }, key
    for svc in SERVICES:
        deployment = rendered.get("Deployment", name_of(svc))
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == svc
        assert selector.items() <= pod_labels.items()
        assert rendered.get("Service", name_of(svc))["spec"]["selector"] == selector


def test_selectors_do_not_change_between_releases(chart: helm.Chart) -> None:
    before = selectors(_render_set("default"))
    after = selectors(
        render_with(
            chart,
            {"image": {"tag": "9.9.9"}, "commonLabels": {"team": "platform"}, "defaults": {"podLabels": {"x": "y"}}},
        )
    )
    assert before == after
    # User labels never replace the chart's own (or reach selectors).
    relabelled = render_with(chart, {"commonLabels": {"app.kubernetes.io/component": "x"}, "defaults": {"podLabels": {"app.kubernetes.io/name": "x"}}})
    assert selectors(relabelled) == before
    template_labels = relabelled.get("Deployment", name_of("audit"))["spec"]["template"]["metadata"]["labels"]
    assert template_labels["app.kubernetes.io/name"] == "sharedcare"
    assert template_labels["app.kubernetes.io/component"] == "audit"
    upgraded = render_with(chart, {"image": {"tag": "9.9.9"}})
    labels = upgraded.get("Deployment", name_of("identity"))["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "9.9.9"


def test_migration_pods_are_not_selected_by_services() -> None:
    r = _render_set("production")
    for job in r.kind("Job"):
        labels = job["spec"]["template"]["metadata"]["labels"]
        for service in r.kind("Service"):
            assert not service["spec"]["selector"].items() <= labels.items(), job["metadata"]["name"]


def test_names_respect_the_63_character_limit_and_overrides(chart: helm.Chart) -> None:
    long_release = "a-very-long-release-name-for-testing-the-limits-of-names-x"
    r = render_with(chart, values_of("production"), name=long_release)
    names = [(o["kind"], o["metadata"]["name"]) for o in r.objects]
    assert all(len(n) <= 63 for _, n in names), names
    assert len(set(names)) == len(names)
    for svc in SERVICES:
        assert any(n.endswith(f"-{svc}") and k == "Deployment" for k, n in names), svc
    r = render_with(chart, {"fullnameOverride": "sc"})
    assert r.get("Deployment", "sc-identity")
    r = render_with(chart, {"nameOverride": "platform"})
    deployment = r.get("Deployment", f"{RELEASE}-platform-identity")
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "platform"


# --------------------------------------------------------------------------
# Replicas, autoscaling, disruption budgets, switching services off
# --------------------------------------------------------------------------


def test_default_and_kind_run_one_replica_without_autoscaling() -> None:
    for name in ("default", "kind"):
        r = _render_set(name)
        assert not r.kind("HorizontalPodAutoscaler")
        for svc in SERVICES:
            assert r.get("Deployment", name_of(svc))["spec"]["replicas"] == 1
    default = _render_set("default")
    for svc in SERVICES:
        assert default.get("PodDisruptionBudget", name_of(svc))["spec"]["maxUnavailable"] == 1


def test_production_autoscales_with_budgets() -> None:
    r = _render_set("production")
    for svc in SERVICES:
        assert "replicas" not in r.get("Deployment", name_of(svc))["spec"], "the HPA owns replicas"
        hpa = r.get("HorizontalPodAutoscaler", name_of(svc))
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(svc)}
        assert hpa["spec"]["minReplicas"] == 3
        assert hpa["spec"]["maxReplicas"] == (20 if svc == "records" else 12)
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        pdb = r.get("PodDisruptionBudget", name_of(svc))
        assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]


def test_each_service_scales_on_its_own(chart: helm.Chart) -> None:
    values = merged(
        values_of("production"),
        {
            "defaults": {"autoscaling": {"enabled": False}},
            "services": {"records": {"replicaCount": 5}, "audit": {"replicaCount": 0, "podDisruptionBudget": {"enabled": False}}},
        },
    )
    r = render_with(chart, values)
    replicas = {svc: r.get("Deployment", name_of(svc))["spec"]["replicas"] for svc in SERVICES}
    assert replicas == {"identity": 3, "consent": 3, "records": 5, "audit": 0}
    assert not r.kind("HorizontalPodAutoscaler")
    assert r.maybe("PodDisruptionBudget", name_of("audit")) is None
    assert r.maybe("PodDisruptionBudget", name_of("records")) is not None
    # A false under a service beats a true in defaults.
    only_records_fixed = merged(values_of("production"), {"services": {"records": {"autoscaling": {"enabled": False}}}})
    r = render_with(chart, only_records_fixed)
    assert {h["metadata"]["name"] for h in r.kind("HorizontalPodAutoscaler")} == {
        name_of(s) for s in SERVICES if s != "records"
    }
    assert r.get("Deployment", name_of("records"))["spec"]["replicas"] == 3


def test_each_service_can_be_switched_off(chart: helm.Chart) -> None:
    elsewhere = "http://consent.elsewhere:50052"
    r = render_with(
        chart,
        {"services": {"consent": {"enabled": False}, "records": {"consentUrl": elsewhere}, "identity": {"consentUrl": elsewhere}}},
    )
    assert not [o for o in r.objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "consent"]
    assert config_toml(r, "records")["records"]["consent_url"] == elsewhere
    assert config_toml(r, "identity")["identity"]["consent_url"] == elsewhere
    test_pod = r.kind("Pod")[0]
    assert [c["name"] for c in test_pod["spec"]["containers"]] == ["identity", "records", "audit"]
    message = render_error(chart, {"services": {"consent": {"enabled": False}, "identity": {"consentUrl": elsewhere}}})
    assert "records is enabled but consent is not" in message
    message = render_error(chart, {"services": {"consent": {"enabled": False}, "records": {"consentUrl": elsewhere}}})
    assert "identity is enabled but consent is not" in message and "services.identity.consentUrl" in message
    audit_elsewhere = "http://audit.elsewhere:50054"
    message = render_error(chart, {"services": {"audit": {"enabled": False}, "records": {"auditUrl": audit_elsewhere}, "identity": {"auditUrl": audit_elsewhere}}})
    assert "consent is enabled but audit is not" in message and "services.consent.auditUrl" in message
    message = render_error(chart, {"services": {"audit": {"enabled": False}, "records": {"auditUrl": audit_elsewhere}, "consent": {"auditUrl": audit_elsewhere}}})
    assert "identity is enabled but audit is not" in message
    r = render_with(chart, {"services": {s: {"auditUrl": audit_elsewhere} for s in ("identity", "consent", "records")} | {"audit": {"enabled": False}}})
    assert config_toml(r, "consent")["consent"]["audit_url"] == audit_elsewhere
    assert config_toml(r, "identity")["identity"]["audit_url"] == audit_elsewhere
    r = render_with(chart, {"services": {s: {"enabled": False} for s in SERVICES}})
    assert {o["kind"] for o in r.objects} <= {"Secret"}


def test_sqlite_refuses_more_than_one_replica_or_autoscaling(chart: helm.Chart) -> None:
    message = render_error(chart, {"services": {"records": {"replicaCount": 2}}})
    assert "services.records: replicaCount=2 with storage.backend=sqlite" in message
    message = render_error(chart, {"defaults": {"autoscaling": {"enabled": True}}})
    assert "autoscaling.enabled with storage.backend=sqlite" in message


# --------------------------------------------------------------------------
# NetworkPolicies
# --------------------------------------------------------------------------


def pod_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "sharedcare",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator knows matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_matches(peer: dict[str, Any], who: dict[str, Any]) -> bool:
    """Whether a NetworkPolicyPeer matches `who` (namespace labels, pod labels, ip)."""
    if "ipBlock" in peer:
        return who.get("ip") is not None and ipaddress.ip_address(who["ip"]) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], who["namespace_labels"]):
            return False
    elif who["namespace"] != NAMESPACE:
        return False
    return selector_matches(peer.get("podSelector", {}), who.get("labels", {}))


def rules_allow(rules: list[dict[str, Any]], peer_key: str, who: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
    for rule in rules or []:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        peers = rule.get(peer_key)
        if not peers or any(peer_matches(p, who) for p in peers):
            return True
    return False


def in_release(component: str) -> dict[str, Any]:
    return {
        "namespace": NAMESPACE,
        "namespace_labels": {"kubernetes.io/metadata.name": NAMESPACE},
        "labels": pod_labels(component),
    }


def policy_for(r: Rendered, component: str) -> dict[str, Any]:
    [policy] = [p for p in r.kind("NetworkPolicy") if p["spec"]["podSelector"]["matchLabels"] == pod_labels(component)]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    return policy["spec"]


def can_call(r: Rendered, caller: str, callee: str) -> bool:
    """Both the caller's egress and the callee's ingress must allow it."""
    egress = policy_for(r, caller)["egress"]
    ingress = policy_for(r, callee)["ingress"]
    port = PORTS[callee]
    return rules_allow(egress, "to", in_release(callee), port) and rules_allow(ingress, "from", in_release(caller), port)


def test_network_policies_follow_who_calls_whom(rendered: Rendered) -> None:
    for caller in SERVICES:
        for callee in SERVICES:
            if caller != callee:
                assert can_call(rendered, caller, callee) == (callee in CALLS[caller]), f"{caller} -> {callee}"
    assert can_call(rendered, "records", "consent") and can_call(rendered, "records", "audit")
    # identity asks consent and audits demographic reads; consent audits its
    # changes and asks identity about organisations.
    assert can_call(rendered, "identity", "consent") and can_call(rendered, "identity", "audit")
    assert can_call(rendered, "consent", "audit") and can_call(rendered, "consent", "identity")
    assert not can_call(rendered, "consent", "records") and not can_call(rendered, "identity", "records")
    assert not can_call(rendered, "audit", "consent")
    assert all(can_call(rendered, s, "identity") for s in SERVICES if s != "identity")


def test_a_disabled_callee_leaves_no_rule_behind(chart: helm.Chart) -> None:
    elsewhere = "http://consent.elsewhere:50052"
    r = render_with(chart, {"services": {"consent": {"enabled": False}, "records": {"consentUrl": elsewhere}, "identity": {"consentUrl": elsewhere}}})
    for svc in ("identity", "records"):
        assert not rules_allow(policy_for(r, svc)["egress"], "to", in_release("consent"), PORTS["consent"]), svc
    assert can_call(r, "identity", "audit")


def test_network_policies_allow_dns_and_the_test_pod(rendered: Rendered) -> None:
    dns = {
        "namespace": "kube-system",
        "namespace_labels": {"kubernetes.io/metadata.name": "kube-system"},
        "labels": {"k8s-app": "kube-dns"},
    }
    for svc in SERVICES:
        policy = policy_for(rendered, svc)
        assert rules_allow(policy["egress"], "to", dns, 53, "UDP"), svc
        assert rules_allow(policy["egress"], "to", dns, 53, "TCP"), svc
        assert rules_allow(policy["ingress"], "from", in_release("test"), PORTS[svc]), svc
        assert not rules_allow(policy["ingress"], "from", in_release(svc), PORTS[svc] + 100), svc


def test_outside_callers_get_in_only_where_configured() -> None:
    stranger = {
        "namespace": "elsewhere",
        "namespace_labels": {"kubernetes.io/metadata.name": "elsewhere"},
        "labels": {"app": "anything"},
    }
    client_ns = {
        "namespace": "gp-system",
        "namespace_labels": {"kubernetes.io/metadata.name": "gp-system", "sharedcare.io/client": "true"},
        "labels": {"app": "gp"},
    }
    epr = {
        "namespace": "epr",
        "namespace_labels": {"kubernetes.io/metadata.name": "epr"},
        "labels": {"app": "epr"},
    }
    default, kind, production = (_render_set(n) for n in ("default", "kind", "production"))
    for svc in SERVICES:
        assert not rules_allow(policy_for(default, svc)["ingress"], "from", stranger, PORTS[svc]), svc
        assert rules_allow(policy_for(kind, svc)["ingress"], "from", stranger, PORTS[svc]), svc
        assert not rules_allow(policy_for(production, svc)["ingress"], "from", stranger, PORTS[svc]), svc
        assert rules_allow(policy_for(production, svc)["ingress"], "from", client_ns, PORTS[svc]), svc
        assert rules_allow(policy_for(production, svc)["ingress"], "from", epr, PORTS[svc]) == (svc == "records"), svc


def test_egress_to_postgres_and_otlp_only_where_configured() -> None:
    database = {"namespace": "-", "namespace_labels": {}, "ip": "10.20.3.4"}
    elsewhere = {"namespace": "-", "namespace_labels": {}, "ip": "192.0.2.10"}
    collector = {
        "namespace": "observability",
        "namespace_labels": {"kubernetes.io/metadata.name": "observability"},
        "labels": {"app": "otel-collector"},
    }
    default, production = _render_set("default"), _render_set("production")
    for svc in SERVICES:
        egress = policy_for(production, svc)["egress"]
        assert rules_allow(egress, "to", database, 5432), svc
        assert not rules_allow(egress, "to", elsewhere, 5432), svc
        assert rules_allow(egress, "to", collector, 4317), svc
        assert not rules_allow(egress, "to", elsewhere, 443), svc
        egress = policy_for(default, svc)["egress"]
        assert not rules_allow(egress, "to", database, 5432), svc
        assert not rules_allow(egress, "to", collector, 4317), svc


def test_migration_jobs_have_their_own_narrow_policy() -> None:
    r = _render_set("production")
    for svc in SERVICES:
        policy = policy_for(r, f"{svc}-migrate")
        assert policy["ingress"] == []
        assert rules_allow(policy["egress"], "to", {"namespace": "-", "namespace_labels": {}, "ip": "10.20.0.9"}, 5432)
        assert not rules_allow(policy["egress"], "to", in_release("identity"), PORTS["identity"])


# --------------------------------------------------------------------------
# Migration hook Jobs
# --------------------------------------------------------------------------


def test_migration_jobs_only_for_postgres() -> None:
    assert not _render_set("default").kind("Job")
    assert not _render_set("kind").kind("Job")
    jobs = _render_set("production").kind("Job")
    assert {j["metadata"]["name"] for j in jobs} == {f"{name_of(s)}-migrate" for s in SERVICES}


def test_migration_jobs_use_only_what_exists_before_install() -> None:
    r = _render_set("production")
    release_made = {(o["kind"], o["metadata"]["name"]) for o in r.objects if "helm.sh/hook" not in o["metadata"].get("annotations", {})}
    for svc in SERVICES:
        job = r.get("Job", f"{name_of(svc)}-migrate")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        [c] = spec["containers"]
        assert c["command"] == [f"/usr/local/bin/sharedcare-{svc}"] and c["args"] == ["migrate"]
        assert ("ServiceAccount", spec.get("serviceAccountName", "default")) not in release_made
        for volume in spec["volumes"]:
            if "configMap" in volume:
                hook_cm = r.get("ConfigMap", volume["configMap"]["name"])
                hook_annotations = hook_cm["metadata"]["annotations"]
                assert hook_annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
                assert int(hook_annotations["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
                # The same config as the service (and the same classification map).
                release_cm = name_of(svc) if volume["name"] == "config" else f"{name_of(svc)}-classification"
                assert hook_cm["data"] == r.get("ConfigMap", release_cm)["data"], volume["name"]
            elif "secret" in volume:
                # Existing Secrets only: the database, auth and TLS ones.
                assert volume["secret"]["secretName"] in {"sharedcare-database", "sharedcare-auth", f"sharedcare-{svc}-tls"}
                assert ("Secret", volume["secret"]["secretName"]) not in release_made
            else:
                assert set(volume) == {"name", "emptyDir"}, volume
        deployment = container(r.get("Deployment", name_of(svc)))
        assert env_of(c) == env_of(deployment)
        assert c["volumeMounts"] == deployment["volumeMounts"]


def test_migration_jobs_with_generated_dev_secrets_do_not_mount_them(chart: helm.Chart) -> None:
    values = merged(
        values_of("production"),
        {"auth": {"existingSecret": "", "generateDevSecrets": True, "allowDevSecretsWithPostgres": True}},
    )
    r = render_with(chart, values)
    generated = r.get("Secret", f"{FULLNAME}-auth")["metadata"]["name"]
    for svc in SERVICES:
        job = r.get("Job", f"{name_of(svc)}-migrate")
        spec = job["spec"]["template"]["spec"]
        assert generated not in {v.get("secret", {}).get("secretName") for v in spec["volumes"]}
        config = tomllib.loads(r.get("ConfigMap", f"{name_of(svc)}-migrate")["data"][f"{svc}.toml"])
        assert "client_secret" not in config["auth"]
        assert "signing_key" not in config.get("identity", {})
    for svc in ("consent", "records"):
        env = env_of(r.get("Job", f"{name_of(svc)}-migrate")["spec"]["template"]["spec"]["containers"][0])
        assert env["SHAREDCARE_AUTH__CLIENT_SECRET__VALUE"]["value"].startswith("unused"), svc
    for svc in ("identity", "audit"):
        env = env_of(r.get("Job", f"{name_of(svc)}-migrate")["spec"]["template"]["spec"]["containers"][0])
        assert "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE" not in env, svc
    # The Deployments still mount the generated Secret.
    assert any(v.get("secret", {}).get("secretName") == generated
               for v in r.get("Deployment", name_of("records"))["spec"]["template"]["spec"]["volumes"])


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------


def generated_secrets(r: Rendered) -> dict[str, str]:
    [secret] = r.kind("Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def pem_body(pem: str, label: str) -> bytes:
    """The DER inside one PEM block with this label (asserting the framing)."""
    lines = pem.strip().splitlines()
    assert lines[0] == f"-----BEGIN {label}-----" and lines[-1] == f"-----END {label}-----", lines[0]
    return base64.b64decode("".join(lines[1:-1]), validate=True)


def test_dev_secrets_are_usable_by_the_services() -> None:
    secrets = generated_secrets(_render_set("default"))
    assert set(secrets) == {
        "signing-key.pem", "audit-log-key.pem", "bootstrap.toml", "records-client-secret",
        "consent-client-secret", "identity-key-encryption-key", "records-key-encryption-key",
        "nhs-index-key", "admin-client-secret",
    }
    for key in ("signing-key.pem", "audit-log-key.pem"):
        der = pem_body(secrets[key], label="PRIVATE KEY")
        # PKCS#8 PrivateKeyInfo, algorithm 1.3.101.112 (Ed25519), 32-byte seed.
        assert der[:16] == bytes.fromhex("302e020100300506032b657004220420") and len(der) == 48, key
    assert secrets["signing-key.pem"] != secrets["audit-log-key.pem"]
    for key in ("identity-key-encryption-key", "records-key-encryption-key"):
        assert len(base64.b64decode(secrets[key], validate=True)) == 32, key
    # A fresh install: two independent keys.
    assert secrets["identity-key-encryption-key"] != secrets["records-key-encryption-key"]
    assert len(base64.b64decode(secrets["nhs-index-key"], validate=True)) == 32
    bootstrap = tomllib.loads(secrets["bootstrap.toml"])
    assert bootstrap["organisations"] == [{"ods_code": "X26", "name": "sharedcare platform"}]
    principals = {p["client_id"]: p for p in bootstrap["principals"]}
    assert principals["admin"]["kind"] == "admin"
    assert principals["admin"]["client_secret"] == secrets["admin-client-secret"]
    assert principals["records"]["kind"] == "service"
    assert principals["records"]["client_secret"] == secrets["records-client-secret"]
    assert principals["consent"]["kind"] == "service"
    assert principals["consent"]["client_secret"] == secrets["consent-client-secret"]
    assert secrets["consent-client-secret"] != secrets["records-client-secret"]
    assert set(principals) == {"admin", "records", "consent"}
    for p in principals.values():
        assert len(p["client_secret"]) >= 32 and p["organisation"] == "X26"


def test_dev_bootstrap_names_each_service_by_its_client_id(chart: helm.Chart) -> None:
    r = render_with(chart, {"services": {"consent": {"clientId": "consent-svc"}, "records": {"clientId": "records-svc"}}})
    secrets = generated_secrets(r)
    principals = {p["client_id"]: p for p in tomllib.loads(secrets["bootstrap.toml"])["principals"]}
    assert principals["consent-svc"]["client_secret"] == secrets["consent-client-secret"]
    assert principals["records-svc"]["client_secret"] == secrets["records-client-secret"]
    assert config_toml(r, "consent")["auth"]["client_id"] == "consent-svc"
    message = render_error(chart, {"services": {"consent": {"clientId": "records"}}})
    assert "services.consent.clientId and services.records.clientId" in message


def all_env_values(r: Rendered) -> list[tuple[str, str, str]]:
    out = []
    for owner, spec in r.pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if "value" in e:
                    out.append((owner, e["name"], e["value"]))
    return out


def test_no_secret_material_in_config_maps_or_env(rendered: Rendered) -> None:
    secrets = generated_secrets(rendered) if rendered.kind("Secret") else {}
    needles = [v.strip() for v in secrets.values()]
    patterns = re.compile(r"BEGIN [A-Z ]*PRIVATE KEY|postgres(ql)?://|client_secret\s*=\s*\"|password", re.I)
    for cm in rendered.kind("ConfigMap"):
        for key, text in cm["data"].items():
            assert not patterns.search(text), (cm["metadata"]["name"], key)
            for needle in needles:
                assert needle not in text, (cm["metadata"]["name"], key)
    for owner, name, value in all_env_values(rendered):
        assert not re.search(r"SECRET|PASSWORD|TOKEN", name) or name.endswith("__FILE"), (owner, name)
        assert not patterns.search(value), (owner, name)
        for needle in needles:
            assert needle not in value, (owner, name)


def test_generated_secrets_are_looked_up_to_stay_stable() -> None:
    template = next(t for t in helm.Chart.load(CHART_DIR).templates if t["name"].endswith("secret-auth.yaml"))
    assert 'lookup "v1" "Secret"' in template["data"]
    assert 'genPrivateKey "ed25519"' in template["data"]
    # Every generated key is among those looked up, so none changes on upgrade
    # (bootstrap.toml is made from them).
    # The old shared key-encryption-key is looked up too (it seeds both new
    # keys on upgrade and is kept) but never generated.
    [looked_up] = re.findall(r'range \$key := list ([^}]*)\}\}', template["data"])
    generated = set(generated_secrets(_render_set("default"))) - {"bootstrap.toml"}
    assert set(re.findall(r'"([^"]+)"', looked_up)) == generated | {"key-encryption-key"}


def test_existing_secret_keys_are_documented() -> None:
    """Every key a pod mounts from auth.existingSecret is in the docs that tell operators what to put there."""
    r = _render_set("production")
    mounted = set()
    for _, spec in r.pod_specs():
        for volume in spec.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == "sharedcare-auth":
                mounted |= {i["key"] for i in volume["secret"]["items"]}
    assert "consent-client-secret" in mounted
    readme = (CHART_DIR / "README.md").read_text()
    values = (CHART_DIR / "values.yaml").read_text()
    production = (CHART_DIR / "ci" / "production-values.yaml").read_text()
    for key in mounted:
        assert f"| `{key}` |" in readme, key
        assert f"#   {key}" in values, key
        assert f"--from-file={key}" in production, key


# How secret-auth.yaml asks the cluster for the Secret it generated before.
SECRET_LOOKUP = '(lookup "v1" "Secret" .Release.Namespace $name)'


def render_upgrade_over(tmp_path: Path, old_data: dict[str, str], values: dict[str, Any] | None = None) -> Rendered:
    """Render as an upgrade would when the cluster holds the generated Secret with `old_data` (plain text).

    helm-python-sdk renders offline, where `lookup` finds nothing. So this
    renders a copy of the chart whose one `lookup` of the auth Secret is
    replaced by that Secret (data base64-encoded, as the API returns it);
    the rest of the template runs unchanged through Helm's engine.
    """
    copied = tmp_path / "sharedcare"
    shutil.copytree(CHART_DIR, copied)
    template = copied / "templates" / "secret-auth.yaml"
    text = template.read_text()
    assert text.count(SECRET_LOOKUP) == 1, "secret-auth.yaml no longer looks the Secret up as these tests expect"
    pairs = " ".join(
        f'"{key}" "{base64.b64encode(value.encode()).decode()}"' for key, value in old_data.items()
    )
    template.write_text(text.replace(SECRET_LOOKUP, f'(dict "data" (dict {pairs}))'))
    with helm.Chart.load(copied) as loaded:
        return render_with(loaded, values)


def test_the_lookup_stand_in_keeps_what_the_cluster_holds(tmp_path: Path) -> None:
    """The harness itself: a re-render over the Secret of an install gives back that Secret."""
    installed = generated_secrets(_render_set("default"))
    upgraded = generated_secrets(render_upgrade_over(tmp_path, installed))
    assert upgraded == installed


def test_an_upgrade_from_one_shared_kek_gives_both_services_its_value(tmp_path: Path) -> None:
    """A Secret generated before identity and records had a key each: both new keys start as the old one."""
    installed = generated_secrets(_render_set("default"))
    old_kek = base64.b64encode(b"k" * 32).decode()
    old = {k: v for k, v in installed.items() if not k.endswith("key-encryption-key")}
    old["key-encryption-key"] = old_kek
    r = render_upgrade_over(tmp_path, old)
    upgraded = generated_secrets(r)
    assert upgraded["identity-key-encryption-key"] == old_kek
    assert upgraded["records-key-encryption-key"] == old_kek
    # Everything else is kept as it was, the old key too: mounted by nobody,
    # it is there for a downgrade to a chart that reads only that name.
    assert upgraded == old | {"identity-key-encryption-key": old_kek, "records-key-encryption-key": old_kek}
    for svc in SERVICES:
        for volume in r.get("Deployment", name_of(svc))["spec"]["template"]["spec"]["volumes"]:
            assert "key-encryption-key" not in {i["key"] for i in volume.get("secret", {}).get("items", [])}, svc


def test_keys_of_their_own_win_over_the_old_shared_kek(tmp_path: Path) -> None:
    old_kek = base64.b64encode(b"o" * 32).decode()
    records_kek = base64.b64encode(b"r" * 32).decode()
    # Only records has its own key yet: identity still takes the old one.
    upgraded = generated_secrets(render_upgrade_over(
        tmp_path, {"key-encryption-key": old_kek, "records-key-encryption-key": records_kek},
    ))
    assert upgraded["identity-key-encryption-key"] == old_kek
    assert upgraded["records-key-encryption-key"] == records_kek


def test_consent_relationship_categories_reach_its_config(chart: helm.Chart) -> None:
    default = config_toml(render_with(chart, {}), "consent")["consent"]
    assert "relationship_categories" not in default
    r = render_with(
        chart,
        {"services": {"consent": {"relationshipCategories": {
            "care_home_placement": ["general", "social_care", "mental_health"],
            "social_care_team": [],
        }}}},
    )
    assert config_toml(r, "consent")["consent"]["relationship_categories"] == {
        "care_home_placement": ["general", "social_care", "mental_health"],
        "social_care_team": [],
    }


def test_consent_break_glass_settings_reach_its_config(chart: helm.Chart) -> None:
    default = config_toml(render_with(chart, {}), "consent")["consent"]
    assert default["break_glass"] == {"grant_minutes": 60, "overrides_patient_deny": False}
    r = render_with(
        chart,
        {"services": {"consent": {"breakGlass": {"grantMinutes": 15, "overridesPatientDeny": True}}}},
    )
    assert config_toml(r, "consent")["consent"]["break_glass"] == {
        "grant_minutes": 15,
        "overrides_patient_deny": True,
    }


def test_records_previous_keys_are_mounted_and_named_with_an_existing_secret(chart: helm.Chart) -> None:
    production = _render_set("production")
    r = render_with(chart, merged(values_of("production"), {"services": {"records": {"previousKeyEncryptionKeys": True}}}))
    path = "/etc/sharedcare/auth/records-previous-key-encryption-keys"
    records = config_toml(r, "records")["records"]
    assert records["previous_key_encryption_keys_file"] == path
    assert records["key_encryption_key"] == {"file": "/etc/sharedcare/auth/records-key-encryption-key"}
    # Mounted into records (Deployment and migration Job) and nowhere else.
    for owner, spec in r.pod_specs():
        items = {
            i["key"]: i["path"]
            for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") == "sharedcare-auth"
            for i in v["secret"]["items"]
        }
        if owner in (f"Deployment/{name_of('records')}", f"Job/{name_of('records')}-migrate"):
            assert items["records-previous-key-encryption-keys"] == "records-previous-key-encryption-keys", owner
            [c] = spec["containers"]
            mount = next(m for m in c["volumeMounts"] if m["name"] == "auth")
            assert f"{mount['mountPath']}/records-previous-key-encryption-keys" == path
        else:
            assert "records-previous-key-encryption-keys" not in items, owner
    migrate = tomllib.loads(r.get("ConfigMap", f"{name_of('records')}-migrate")["data"]["records.toml"])
    assert migrate["records"]["previous_key_encryption_keys_file"] == path
    for svc in ("identity", "consent", "audit"):
        assert config_toml(r, svc) == config_toml(production, svc), svc
    # Turning it on changes records' config, so records' pods (only) roll.
    def checksum(x: Rendered, svc: str) -> str:
        return x.get("Deployment", name_of(svc))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert {svc for svc in SERVICES if checksum(r, svc) != checksum(production, svc)} == {"records"}


def test_records_previous_keys_need_an_existing_secret(chart: helm.Chart) -> None:
    message = render_error(chart, {"services": {"records": {"previousKeyEncryptionKeys": True}}})
    assert "services.records.previousKeyEncryptionKeys=true needs auth.existingSecret" in message
    assert "records-previous-key-encryption-keys" in message
    # The key is documented where operators look, with the rotation procedure.
    readme = (CHART_DIR / "README.md").read_text()
    values = (CHART_DIR / "values.yaml").read_text()
    assert "| `records-previous-key-encryption-keys` |" in readme
    assert "#   records-previous-key-encryption-keys" in values
    assert "## Rotating records' key-encryption key" in readme
    assert "sharedcare records rewrap" in readme
    assert "Rotating records' key-encryption key" in message


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"storage": {"postgres": {"url": "postgres://app:hunter2@db:5432/care"}}}, "storage.postgres.url"),
        ({"storage": {"postgres": {"password": "hunter2"}}}, "storage.postgres.password"),
        ({"auth": {"signingKey": "any key material at all"}}, "auth.signingKey"),
        ({"auth": {"keyEncryptionKey": "AAAA"}}, "auth.keyEncryptionKey"),
        ({"auth": {"adminClientSecret": "x" * 40}}, "auth.adminClientSecret"),
        ({"services": {"records": {"clientSecret": "x" * 40}}}, "services.records.clientSecret"),
        ({"services": {"consent": {"clientSecret": "x" * 40}}}, "services.consent.clientSecret"),
        ({"auth": {"consentClientSecret": "x" * 40}}, "auth.consentClientSecret"),
        ({"defaults": {"podAnnotations": {"dbPassword": "hunter2"}}}, "defaults.podAnnotations.dbPassword"),
    ],
)
def test_plain_text_secrets_in_values_fail_the_render(chart: helm.Chart, values: dict[str, Any], path: str) -> None:
    message = render_error(chart, values)
    assert "plain-text secret in values" in message and path in message
    assert "existingSecret" in message


def test_secret_literals_in_extra_env_fail(chart: helm.Chart) -> None:
    message = render_error(chart, {"defaults": {"extraEnv": [{"name": "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "value": "x"}]}})
    assert "literal value" in message and "secretKeyRef" in message
    r = render_with(chart, {"defaults": {"extraEnv": [
        {"name": "SHAREDCARE_SERVER__CONCURRENCY_LIMIT", "value": "64"},
        {"name": "EXTRA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]}})
    assert env_of(container(r.get("Deployment", name_of("audit"))))["SHAREDCARE_SERVER__CONCURRENCY_LIMIT"]["value"] == "64"


def test_production_refuses_generated_secrets_unless_allowed(chart: helm.Chart) -> None:
    values = merged(values_of("production"), {"auth": {"existingSecret": "", "generateDevSecrets": True}})
    message = render_error(chart, values)
    assert "auth.generateDevSecrets=true with storage.backend=postgres" in message
    message = render_error(chart, merged(values_of("production"), {"auth": {"generateDevSecrets": True}}))
    assert "auth.existingSecret and auth.generateDevSecrets are both set" in message
    message = render_error(chart, merged(values_of("production"), {"storage": {"postgres": {"existingSecret": ""}}}))
    assert "storage.postgres.existingSecret" in message
    message = render_error(chart, {"auth": {"generateDevSecrets": False}})
    assert "no auth secrets" in message


# --------------------------------------------------------------------------
# values.schema.json
# --------------------------------------------------------------------------


def test_schema_accepts_the_shipped_values(chart: helm.Chart, value_set: str) -> None:
    chart.validate_schema(chart.merge_values(values_of(value_set)))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"defaults": {"replicaCount": "3"}}, "/defaults/replicaCount"),
        ({"services": {"records": {"replicaCount": "3"}}}, "/services/records/replicaCount"),
        ({"defaults": {"replicaCount": -1}}, "/defaults/replicaCount"),
        ({"storage": {"backend": "mysql"}}, "/storage/backend"),
        ({"services": {"records": {"port": 70000}}}, "/services/records/port"),
        ({"services": {"billing": {"enabled": True}}}, "billing"),
        ({"defaults": {"telemetry": {"logFormat": "xml"}}}, "/defaults/telemetry/logFormat"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"services": {"identity": {"roles": {"R8000": ["refer", "root"]}}}}, "/services/identity/roles/R8000/1"),
        ({"services": {"identity": {"roles": {"R8000": "refer"}}}}, "/services/identity/roles/R8000"),
        ({"services": {"identity": {"consentUrl": "consent:50052"}}}, "/services/identity/consentUrl"),
        ({"services": {"consent": {"auditUrl": "audit:50054"}}}, "/services/consent/auditUrl"),
        ({"services": {"consent": {"callTimeoutMs": 0}}}, "/services/consent/callTimeoutMs"),
        ({"services": {"consent": {"clientId": ""}}}, "/services/consent/clientId"),
        ({"services": {"records": {"classificationMap": ["not", "text"]}}}, "/services/records/classificationMap"),
        ({"services": {"records": {"previousKeyEncryptionKeys": "yes"}}}, "/services/records/previousKeyEncryptionKeys"),
        ({"services": {"identity": {"previousKeyEncryptionKeys": True}}}, "previousKeyEncryptionKeys"),
        ({"services": {"consent": {"relationshipCategories": {"care_home": ["general"]}}}}, "'social_care_team'"),
        ({"services": {"consent": {"breakGlass": {"grantMinutes": 0, "overridesPatientDeny": False}}}}, "grantMinutes"),
        ({"services": {"consent": {"cacheMaxPatients": 0}}}, "/services/consent/cacheMaxPatients"),
        ({"services": {"consent": {"breakGlass": {"grantMinutes": 60, "overridesPatientDeny": "yes"}}}}, "overridesPatientDeny"),
        (
            {"services": {"consent": {"relationshipCategories": {"care_home_placement": ["secrets"]}}}},
            "/services/consent/relationshipCategories/care_home_placement/0",
        ),
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(caught.value)


def schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def test_every_service_accepts_every_default_setting(chart: helm.Chart) -> None:
    schema = chart.schema
    defaults = set(schema["properties"]["defaults"]["properties"])
    for svc in SERVICES:
        assert defaults <= set(schema["properties"]["services"]["properties"][svc]["properties"]), svc
    assert defaults == set(chart.values["defaults"])


def test_every_value_is_documented_where_declared(chart: helm.Chart) -> None:
    """Each key the schema declares has a comment right above it in values.yaml."""
    schema = chart.schema
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        node: dict[str, Any] | None = schema
        for part in path:
            props = schema_node(schema, node).get("properties", {}) if node else {}
            node = props.get(part)
        if node is None:
            continue  # free-form content of a documented value (e.g. resources.requests)
        previous = lines[n - 1].strip() if n else ""
        if not previous.startswith("#"):
            undocumented.append(".".join(path))
    assert not undocumented, ", ".join(undocumented)


# --------------------------------------------------------------------------
# helm test pod and NOTES
# --------------------------------------------------------------------------


def test_helm_test_pod_probes_every_enabled_service(rendered: Rendered) -> None:
    [pod] = rendered.kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert list(containers) == list(SERVICES)
    for svc, c in containers.items():
        assert c["image"].startswith("ghcr.io/grpc-ecosystem/grpc-health-probe:")
        assert f"-addr={name_of(svc)}:{PORTS[svc]}" in c["args"]
        assert f"-service={health_name(svc)}" in c["args"]


def test_helm_test_image_is_configurable(chart: helm.Chart) -> None:
    r = render_with(chart, {"tests": {"image": {"repository": "registry.local/probe", "tag": "v1"}, "command": ["/bin/grpc_health_probe"]}})
    for c in r.kind("Pod")[0]["spec"]["containers"]:
        assert c["image"] == "registry.local/probe:v1" and c["command"] == ["/bin/grpc_health_probe"]
    r = render_with(chart, {"tests": {"enabled": False}})
    assert not r.kind("Pod")
    ingress = policy_for(r, "records")["ingress"]
    assert not rules_allow(ingress, "from", in_release("test"), PORTS["records"])


def test_notes_tell_how_to_reach_the_services(rendered: Rendered, value_set: str) -> None:
    notes = rendered.notes
    for svc in SERVICES:
        assert f"kubectl -n {NAMESPACE} port-forward svc/{name_of(svc)} {PORTS[svc]}:{PORTS[svc]}" in notes
    assert "sharedcare token --client-id admin" in notes
    assert "grpcurl -plaintext" in notes
    assert f"helm test {RELEASE}" in notes
    if value_set == "production":
        assert "get secret sharedcare-auth" in notes
    else:
        assert f"get secret {FULLNAME}-auth -o jsonpath='{{.data.admin-client-secret}}'" in notes
        assert "WARNING" in notes


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

TLS_ON = {"tls": {"enabled": True}}
TLS_DIR = "/etc/sharedcare/tls"


def test_tls_is_off_by_default_and_on_in_production() -> None:
    for svc in SERVICES:
        assert "tls" not in config_toml(_render_set("default"), svc)
        assert config_toml(_render_set("production"), svc)["tls"]["enabled"] is True


def test_tls_sets_the_config_keys_and_mounts_each_services_secret(chart: helm.Chart) -> None:
    r = render_with(chart, TLS_ON)
    for svc in SERVICES:
        assert config_toml(r, svc)["tls"] == {
            "enabled": True,
            "cert_file": f"{TLS_DIR}/tls.crt",
            "key_file": f"{TLS_DIR}/tls.key",
            "ca_file": f"{TLS_DIR}/ca.crt",
            "client_auth": "required",
            "reload_interval_ms": 10000,
        }
        spec = r.get("Deployment", name_of(svc))["spec"]["template"]["spec"]
        [volume] = [v for v in spec["volumes"] if v["name"] == "tls"]
        # cert-manager's kubernetes.io/tls layout, readable by the group only.
        assert volume["secret"]["secretName"] == f"{FULLNAME}-{svc}-tls"
        assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key", "ca.crt"}
        assert volume["secret"]["defaultMode"] == 0o440
        [mount] = [m for m in container(r.get("Deployment", name_of(svc)))["volumeMounts"] if m["name"] == "tls"]
        # No subPath: a renewed Secret reaches the running pod.
        assert mount == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}


def test_tls_switches_every_service_url_to_https(chart: helm.Chart) -> None:
    r = render_with(chart, TLS_ON)
    for svc in SERVICES:
        assert config_toml(r, svc)["auth"]["identity_url"] == url_of("https", "identity")
    records = config_toml(r, "records")
    assert records["records"]["consent_url"] == url_of("https", "consent")
    assert records["records"]["audit_url"] == url_of("https", "audit")
    identity = config_toml(r, "identity")
    assert identity["identity"]["consent_url"] == url_of("https", "consent")
    assert identity["identity"]["audit_url"] == url_of("https", "audit")
    assert config_toml(r, "consent")["consent"]["audit_url"] == url_of("https", "audit")


def test_production_takes_tls_from_named_secrets() -> None:
    r = _render_set("production")
    for svc in SERVICES:
        spec = r.get("Deployment", name_of(svc))["spec"]["template"]["spec"]
        [volume] = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == f"sharedcare-{svc}-tls"
    # The migration Jobs validate the same config, so they mount it too.
    for job in r.kind("Job"):
        assert any(v["name"] == "tls" for v in job["spec"]["template"]["spec"]["volumes"]), job["metadata"]["name"]


def test_helm_test_checks_health_over_mutual_tls(chart: helm.Chart) -> None:
    r = render_with(chart, merged(TLS_ON, {"tls": {"testSecret": "probe-tls", "clientAuth": "optional"}}))
    [pod] = r.kind("Pod")
    assert pod["spec"]["securityContext"]["fsGroup"] == 65532
    [volume] = pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "probe-tls"
    for c in pod["spec"]["containers"]:
        svc = c["name"]
        assert "-tls" in c["args"]
        assert f"-tls-ca-cert={TLS_DIR}/ca.crt" in c["args"]
        assert f"-tls-client-cert={TLS_DIR}/tls.crt" in c["args"]
        assert f"-tls-client-key={TLS_DIR}/tls.key" in c["args"]
        assert f"-tls-server-name={name_of(svc)}" in c["args"]
        assert c["volumeMounts"] == [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    assert config_toml(r, "records")["tls"]["client_auth"] == "optional"


def test_tls_values_are_checked_by_the_schema(chart: helm.Chart) -> None:
    assert "clientAuth" in render_error(chart, {"tls": {"enabled": True, "clientAuth": "sometimes"}})
    assert "reloadIntervalMs" in render_error(chart, {"tls": {"reloadIntervalMs": 5}})


# --------------------------------------------------------------------------
# The trust model: identity's role map, records' classification map
# --------------------------------------------------------------------------


def test_identity_roles_are_rendered_from_values(chart: helm.Chart) -> None:
    roles = {
        "R8000": ["record_directives", "refer"],
        "R0001": ["trace_patients"],
        "privacy-officer": [],
        "local.role": list(CAPABILITIES),
    }
    r = render_with(chart, {"services": {"identity": {"roles": roles, "callTimeoutMs": 1500}}})
    identity = config_toml(r, "identity")["identity"]
    assert identity["roles"] == roles
    assert identity["call_timeout_ms"] == 1500
    # Only identity gets a role map; the change rolls identity alone.
    for svc in ("consent", "records", "audit"):
        assert "roles" not in config_toml(r, svc).get(svc, {}), svc
    before = _render_set("default")
    changed = {
        svc for svc in SERVICES
        if before.get("Deployment", name_of(svc))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        != r.get("Deployment", name_of(svc))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    }
    assert changed == {"identity"}


def test_identity_roles_schema_names_the_capabilities(chart: helm.Chart) -> None:
    roles = chart.schema["properties"]["services"]["properties"]["identity"]["properties"]["roles"]
    items = schema_node(chart.schema, roles["additionalProperties"]["items"])
    assert tuple(items["enum"]) == CAPABILITIES
    message = render_error(chart, {"services": {"identity": {"roles": {"R8001": ["break-glass"]}}}})
    assert "/services/identity/roles/R8001/0" in message


def test_identity_and_consent_call_timeouts_reach_their_config(chart: helm.Chart) -> None:
    r = render_with(chart, {"services": {"consent": {"callTimeoutMs": 2500, "clientId": "consent-svc"}}})
    consent = config_toml(r, "consent")
    assert consent["consent"]["call_timeout_ms"] == 2500
    assert consent["auth"]["client_id"] == "consent-svc"


def classification_volume(spec: dict[str, Any]) -> dict[str, Any]:
    [volume] = [v for v in spec["volumes"] if v["name"] == "classification"]
    return volume


def test_the_charts_classification_map_is_the_repository_default() -> None:
    # Byte for byte: records compiles services/records/classification.toml in,
    # and the chart ships the same map so a deployment starts where a binary does.
    assert CHART_CLASSIFICATION.read_bytes() == REPO_CLASSIFICATION.read_bytes()


def test_classification_map_is_rendered_mounted_and_named(rendered: Rendered) -> None:
    cm = rendered.get("ConfigMap", f"{name_of('records')}-classification")
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "records"
    assert cm["data"] == {"classification.toml": REPO_CLASSIFICATION.read_text()}
    tomllib.loads(cm["data"]["classification.toml"])
    deployment = rendered.get("Deployment", name_of("records"))
    spec = deployment["spec"]["template"]["spec"]
    assert classification_volume(spec)["configMap"] == {"name": cm["metadata"]["name"]}
    [mount] = [m for m in container(deployment)["volumeMounts"] if m["name"] == "classification"]
    assert mount == {"name": "classification", "mountPath": CLASSIFICATION_DIR, "readOnly": True}
    path = config_toml(rendered, "records")["records"]["classification_map"]
    assert path == f"{mount['mountPath']}/classification.toml"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/classification"] == hashlib.sha256(cm["data"]["classification.toml"].encode()).hexdigest()
    # Nobody else mounts it or names it.
    for svc in ("identity", "consent", "audit"):
        other = rendered.get("Deployment", name_of(svc))
        assert not [v for v in other["spec"]["template"]["spec"]["volumes"] if v["name"] == "classification"], svc
        assert "checksum/classification" not in other["spec"]["template"]["metadata"]["annotations"], svc
        assert "classification_map" not in config_toml(rendered, svc).get(svc, {}), svc


def test_a_classification_map_from_values_replaces_the_default_and_rolls_records(chart: helm.Chart) -> None:
    local = (
        "# A local map.\n\n[[rule]]\ncategory = \"sexual_health\"\nlabel = \"HIV\"\n"
        "system = \"http://snomed.info/sct\"\ncodes = [\"86406008\"]\n"
    )
    before = _render_set("default")
    r = render_with(chart, {"services": {"records": {"classificationMap": local}}})
    assert r.get("ConfigMap", f"{name_of('records')}-classification")["data"] == {"classification.toml": local}

    def annotations(x: Rendered, svc: str) -> dict[str, str]:
        return x.get("Deployment", name_of(svc))["spec"]["template"]["metadata"]["annotations"]

    assert annotations(r, "records")["checksum/classification"] != annotations(before, "records")["checksum/classification"]
    for svc in SERVICES:
        # The config file is the same (it names the path, not the content).
        assert annotations(r, svc)["checksum/config"] == annotations(before, svc)["checksum/config"], svc
    # Text that is awkward in YAML reaches the file unchanged.
    awkward = "  # indented first line\n\n\ttab: \"quotes\" & <angles>\n\n\n"
    r = render_with(chart, {"services": {"records": {"classificationMap": awkward}}})
    assert r.get("ConfigMap", f"{name_of('records')}-classification")["data"]["classification.toml"] == awkward


def test_migration_job_validates_records_with_the_same_classification_map(chart: helm.Chart) -> None:
    r = _render_set("production")
    job = r.get("Job", f"{name_of('records')}-migrate")
    spec = job["spec"]["template"]["spec"]
    hook_cm = r.get("ConfigMap", classification_volume(spec)["configMap"]["name"])
    assert hook_cm["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hook_cm["data"] == r.get("ConfigMap", f"{name_of('records')}-classification")["data"]
    [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "classification"]
    migrate_config = tomllib.loads(r.get("ConfigMap", f"{name_of('records')}-migrate")["data"]["records.toml"])
    assert migrate_config["records"]["classification_map"] == f"{mount['mountPath']}/classification.toml"
    for svc in ("identity", "consent", "audit"):
        other = r.get("Job", f"{name_of(svc)}-migrate")["spec"]["template"]["spec"]
        assert not [v for v in other["volumes"] if v["name"] == "classification"], svc


# --------------------------------------------------------------------------
# The services read what the chart renders
# --------------------------------------------------------------------------

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("svc", SERVICES)
def test_rendered_configs_are_the_golden_files_the_services_load(value_set: str, svc: str) -> None:
    """Each value set's config file, byte for byte, is a file under golden/
    that a Rust test (tests/tests/chart_configs.rs) loads through the
    service's own configuration loader: a value the service refuses fails
    there.
    SHAREDCARE_BLESS=1 rewrites the files."""
    text = _render_set(value_set).get("ConfigMap", name_of(svc))["data"][f"{svc}.toml"]
    golden = GOLDEN_DIR / value_set / f"{svc}.toml"
    if os.environ.get("SHAREDCARE_BLESS") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: run with SHAREDCARE_BLESS=1"
    assert golden.read_text() == text, f"{golden} differs from the rendered config: run with SHAREDCARE_BLESS=1"



# --------------------------------------------------------------------------
# Metrics, dashboard, alerts and traces (issue 11)
# --------------------------------------------------------------------------

CRD_DIR = Path(__file__).resolve().parent / "crds"
# apiVersion -> kind -> the vendored openAPIV3Schema (prometheus-operator).
CRD_KINDS = {
    "monitoring.coreos.com/v1": {
        "ServiceMonitor": "servicemonitors.monitoring.coreos.com.v1.json",
        "PrometheusRule": "prometheusrules.monitoring.coreos.com.v1.json",
    },
}
# The services' metrics contract: name -> (type, labels besides `service`).
METRICS = {
    "sharedcare_rpc_requests_total": ("counter", {"method", "code"}),
    "sharedcare_rpc_duration_seconds": ("histogram", {"method"}),
    "sharedcare_outbox_pending_events": ("gauge", set()),
    "sharedcare_outbox_oldest_event_age_seconds": ("gauge", set()),
    "sharedcare_outbox_delivery_failing_seconds": ("gauge", set()),
    "sharedcare_audit_batch_size": ("histogram", set()),
    "sharedcare_audit_commit_duration_seconds": ("histogram", set()),
    "sharedcare_audit_tree_size": ("gauge", set()),
    "sharedcare_consent_cache_lookups_total": ("counter", {"result"}),
    "sharedcare_db_pool_connections": ("gauge", {"state"}),
    "sharedcare_token_verifications_total": ("counter", {"result"}),
}
SERIES = {
    series
    for name, (kind, _) in METRICS.items()
    for series in ([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name])
}
# Labels a query may name: the series' own, `le`, and what a scrape adds.
QUERY_LABELS = {"service", "le", "namespace", "job", "pod", "instance"} | {
    label for _, labels in METRICS.values() for label in labels
}
MONITORING_ON = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "dashboard": {"enabled": True},
        "rules": {"enabled": True},
    }
}


def _strict(node: Any) -> Any:
    """An openAPIV3Schema made strict like kubernetes-validate's: objects with
    declared properties accept no others (the API server would prune them
    silently, which hides a typo)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.lru_cache(maxsize=None)
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((CRD_DIR / CRD_KINDS[api_version][kind]).read_text())
    schema = _strict({k: v for k, v in schema.items() if k not in ("$comment", "x-source")})
    return jsonschema.Draft4Validator(schema)


def validate_crd_object(obj: dict[str, Any]) -> None:
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    errors = sorted(crd_validator(obj["apiVersion"], obj["kind"]).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, f"{where}: " + "; ".join(f"{e.message} at {list(e.path)}" for e in errors)
    # metadata is free-form in a CRD's schema: check what the API server would.
    meta = obj["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]) and len(meta["name"]) <= 253, where
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["namespace"]), where
    for key, value in {**meta.get("labels", {}), **meta.get("annotations", {})}.items():
        assert isinstance(key, str) and isinstance(value, str), (where, key)


def test_the_vendored_crd_schemas_say_where_they_come_from() -> None:
    for files in CRD_KINDS.values():
        for name in files.values():
            schema = json.loads((CRD_DIR / name).read_text())
            assert schema["x-source"]["repository"] == "https://github.com/prometheus-operator/prometheus-operator"
            assert re.fullmatch(r"[0-9a-f]{40}", schema["x-source"]["commit"])
            assert schema["type"] == "object" and "spec" in schema["properties"]


def test_the_crd_validation_catches_mistakes() -> None:
    """The vendored schemas do refuse a wrong ServiceMonitor and PrometheusRule."""
    r = _render_set("observability")
    monitor = copy.deepcopy(r.kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["prot"] = "metrics"
    with pytest.raises(AssertionError, match="prot"):
        validate_crd_object(monitor)
    rule = copy.deepcopy(r.kind("PrometheusRule")[0])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    with pytest.raises(AssertionError, match="for"):
        validate_crd_object(rule)


def test_defaults_serve_metrics_with_scrape_annotations_and_a_port() -> None:
    r = _render_set("default")
    for svc in SERVICES:
        deployment = r.get("Deployment", name_of(svc))
        c = container(deployment)
        assert env_of(c)["SHAREDCARE_TELEMETRY__METRICS_ADDR"] == {
            "name": "SHAREDCARE_TELEMETRY__METRICS_ADDR", "value": f"0.0.0.0:{METRICS_PORT}",
        }
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in c["ports"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(METRICS_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = {p["name"]: p for p in r.get("Service", name_of(svc))["spec"]["ports"]}
        assert ports["metrics"]["port"] == METRICS_PORT and ports["metrics"]["targetPort"] == "metrics"
        # No OTEL_* unless asked for.
        assert not [name for name in env_of(c) if name.startswith("OTEL_")], svc
    # Nothing that needs a CRD or Grafana by default.
    assert not r.kind("ServiceMonitor") and not r.kind("PrometheusRule")
    assert not [cm for cm in r.kind("ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]]


def test_metrics_port_and_path_are_configurable(chart: helm.Chart) -> None:
    r = render_with(chart, merged(MONITORING_ON, {"metrics": {"port": 9100, "path": "/prom"}}))
    for svc in SERVICES:
        deployment = r.get("Deployment", name_of(svc))
        assert env_of(container(deployment))["SHAREDCARE_TELEMETRY__METRICS_ADDR"]["value"] == "0.0.0.0:9100"
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9100"
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/prom"
        assert rules_allow(policy_for(r, svc)["ingress"], "from", PROMETHEUS, 9100), svc
    [endpoint] = r.kind("ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/prom"
    message = render_error(chart, {"metrics": {"port": PORTS["audit"]}})
    assert "metrics.port=50054 is services.audit.port too" in message


def test_metrics_can_be_switched_off(chart: helm.Chart) -> None:
    r = render_with(chart, merged(MONITORING_ON, {"metrics": {"enabled": False}}))
    for svc in SERVICES:
        deployment = r.get("Deployment", name_of(svc))
        c = container(deployment)
        assert "SHAREDCARE_TELEMETRY__METRICS_ADDR" not in env_of(c)
        assert [p["name"] for p in c["ports"]] == ["grpc"]
        assert not [a for a in deployment["spec"]["template"]["metadata"]["annotations"] if a.startswith("prometheus.io/")]
        assert [p["name"] for p in r.get("Service", name_of(svc))["spec"]["ports"]] == ["grpc"]
        assert not rules_allow(policy_for(r, svc)["ingress"], "from", PROMETHEUS, METRICS_PORT), svc
    # The monitoring objects need the metrics: they go with them.
    assert not r.kind("ServiceMonitor") and not r.kind("PrometheusRule")
    assert not [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"].endswith("-dashboard")]
    for kube_version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        for obj in r.objects:
            kubernetes_validate.validate(obj, kube_version, strict=True)


def test_scrape_annotations_can_be_left_off_for_a_service_monitor() -> None:
    r = _render_set("observability")
    for svc in SERVICES:
        deployment = r.get("Deployment", name_of(svc))
        assert not [a for a in deployment["spec"]["template"]["metadata"]["annotations"] if a.startswith("prometheus.io/")]
        # The port is still served and exposed for the ServiceMonitor.
        assert "metrics" in [p["name"] for p in r.get("Service", name_of(svc))["spec"]["ports"]]


PROMETHEUS = {
    "namespace": "monitoring",
    "namespace_labels": {"kubernetes.io/metadata.name": "monitoring"},
    "labels": {"app.kubernetes.io/name": "prometheus"},
}
STRANGER = {
    "namespace": "elsewhere",
    "namespace_labels": {"kubernetes.io/metadata.name": "elsewhere"},
    "labels": {"app": "anything"},
}


def test_network_policy_lets_scrapers_reach_only_the_metrics_port() -> None:
    default, observability, production = (_render_set(n) for n in ("default", "observability", "production"))
    for svc in SERVICES:
        # Empty networkPolicy.metrics.from: the metrics port from anywhere,
        # the gRPC port still only from the callers.
        ingress = policy_for(default, svc)["ingress"]
        assert rules_allow(ingress, "from", STRANGER, METRICS_PORT), svc
        assert not rules_allow(ingress, "from", STRANGER, PORTS[svc]), svc
        assert rules_allow(policy_for(production, svc)["ingress"], "from", PROMETHEUS, METRICS_PORT), svc
        # Named scrapers: only they.
        ingress = policy_for(observability, svc)["ingress"]
        assert rules_allow(ingress, "from", PROMETHEUS, METRICS_PORT), svc
        assert not rules_allow(ingress, "from", STRANGER, METRICS_PORT), svc
        assert not rules_allow(ingress, "from", PROMETHEUS, PORTS[svc]), svc
        assert not rules_allow(ingress, "from", in_release("records"), METRICS_PORT), svc
    # allowExternal opens the gRPC port, not the metrics port.
    kind_obs = _render_set("kind-observability")
    for svc in SERVICES:
        ingress = policy_for(kind_obs, svc)["ingress"]
        assert rules_allow(ingress, "from", STRANGER, PORTS[svc]), svc
        assert not rules_allow(ingress, "from", STRANGER, METRICS_PORT), svc


def test_the_service_monitor_selects_every_service_and_keeps_their_service_label() -> None:
    r = _render_set("observability")
    [monitor] = r.kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["jobLabel"] == "app.kubernetes.io/component"
    for svc in SERVICES:
        service = r.get("Service", name_of(svc))
        labels = service["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), svc
        [expression] = spec["selector"]["matchExpressions"]
        assert expression["operator"] == "In" and labels[expression["key"]] in expression["values"], svc
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s" and endpoint["scrapeTimeout"] == "10s"
    # The operator's target label `service` (the Kubernetes Service's name)
    # would push the series' own `service` aside into exported_service.
    assert endpoint["relabelings"][0] == {"action": "labeldrop", "regex": "service"}
    # Nothing else in the release is selected by it (the test pod has no Service).
    selected = [
        o for o in r.kind("Service")
        if spec["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
        and o["metadata"]["labels"]["app.kubernetes.io/component"] in spec["selector"]["matchExpressions"][0]["values"]
    ]
    assert len(selected) == len(SERVICES)


def test_monitoring_objects_validate_against_their_crds(chart: helm.Chart) -> None:
    values = merged(
        MONITORING_ON,
        {"metrics": {
            "serviceMonitor": {
                "namespace": "monitoring", "labels": {"release": "prom"}, "interval": "", "scrapeTimeout": "",
                "relabelings": [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
                "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "sharedcare_db_.*"}],
            },
            "rules": {"namespace": "monitoring", "latency": {"excludeMethods": ""}},
        }},
    )
    r = render_with(chart, values)
    objects = r.kind("ServiceMonitor") + r.kind("PrometheusRule")
    assert len(objects) == 2
    for obj in objects:
        validate_crd_object(obj)
        assert obj["metadata"]["namespace"] == "monitoring"
    [endpoint] = r.kind("ServiceMonitor")[0]["spec"]["endpoints"]
    assert "interval" not in endpoint and "scrapeTimeout" not in endpoint
    assert endpoint["relabelings"][1]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    [latency] = [rule for rule in prometheus_rules(r) if rule["alert"] == "SharedcareLatencyHigh"]
    assert "method!~" not in latency["expr"]


def prometheus_rules(r: Rendered) -> list[dict[str, Any]]:
    return [rule for obj in r.kind("PrometheusRule") for group in obj["spec"]["groups"] for rule in group["rules"]]


def dashboard_of(r: Rendered) -> dict[str, Any]:
    [cm] = [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"].endswith("-dashboard")]
    return json.loads(cm["data"]["sharedcare.json"])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"])
    return exprs


def test_the_dashboard_is_a_sidecar_configmap_of_the_charts_file() -> None:
    r = _render_set("observability")
    [cm] = [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"] == f"{FULLNAME}-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "sharedcare"}
    assert set(cm["data"]) == {"sharedcare.json"}
    # Byte for byte the chart's file (loaded with .Files.Get, not templated).
    assert cm["data"]["sharedcare.json"] == (CHART_DIR / "files" / "grafana-dashboard.json").read_text()
    dashboard = json.loads(cm["data"]["sharedcare.json"])
    assert dashboard["uid"] == "sharedcare-overview" and dashboard["title"] == "sharedcare"
    # Any Prometheus data source: the panels name the dashboard's variable.
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    dashboard = dashboard_of(_render_set("observability"))
    by_title = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]}
    wanted = {
        "Request rate by service and method": ["sharedcare_rpc_requests_total", "by (service, method)"],
        "Error rate (non-OK) by service": ['code!="OK"', "by (service)"],
        "Latency p50 and p99 by service": ["histogram_quantile(0.5,", "histogram_quantile(0.99,", "sharedcare_rpc_duration_seconds_bucket"],
        "Outbox pending events": ["sharedcare_outbox_pending_events"],
        "Oldest undelivered event age": ["sharedcare_outbox_oldest_event_age_seconds"],
        "Audit delivery failing for": ["sharedcare_outbox_delivery_failing_seconds"],
        "Batch size": ["sharedcare_audit_batch_size_bucket"],
        "Commit latency": ["sharedcare_audit_commit_duration_seconds_bucket"],
        "Tree size": ["sharedcare_audit_tree_size"],
    }
    for title, fragments in wanted.items():
        assert title in by_title, title
        for fragment in fragments:
            assert fragment in by_title[title], (title, fragment)
    # Every series of the contract is on the dashboard somewhere.
    used = {name for expr in dashboard_exprs(dashboard) for name in re.findall(r"sharedcare_[a-z_]+", expr)}
    for name, (kind, _) in METRICS.items():
        assert (f"{name}_bucket" if kind == "histogram" else name) in used, name


def promql_problems(expr: str) -> list[str]:
    """A light PromQL check: brackets balance outside string literals, every
    range function has a [range], matchers are `label op "string"`, and
    every label named (matchers, by/without) is one the series have."""
    problems = []
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    code = []  # the expression with string literals blanked
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch in "\"'`":
            end = i + 1
            while end < len(expr) and expr[end] != ch:
                end += 2 if expr[end] == "\\" and ch != "`" else 1
            if end >= len(expr):
                return [f"unterminated string at {i}"]
            code.append('""')
            i = end + 1
            continue
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                problems.append(f"unbalanced {ch!r} at {i}")
        code.append(ch)
        i += 1
    if stack:
        problems.append(f"unclosed {stack}")
    text = "".join(code)
    if "()" in text.replace(" ", "").replace("sum()", ""):
        problems.append("empty parentheses")
    for fn in re.finditer(r"\b(rate|irate|increase|deriv|delta|idelta|avg_over_time|max_over_time)\s*\(", text):
        rest = text[fn.end():]
        depth, j = 1, 0
        while depth and j < len(rest):
            depth += {"(": 1, ")": -1}.get(rest[j], 0)
            j += 1
        if not re.search(r"\[\s*(\d+(ms|s|m|h|d|w|y))+\s*\]|\[\$\w+\]", rest[:j]):
            problems.append(f"{fn.group(1)}() without a range")
    for selector in re.findall(r"\{([^{}]*)\}", text):
        for matcher in filter(None, (m.strip() for m in selector.split(","))):
            m = re.fullmatch(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*""', matcher)
            if not m:
                problems.append(f"bad matcher {matcher!r}")
            elif m.group(1) not in QUERY_LABELS:
                problems.append(f"unknown label {m.group(1)!r}")
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^()]*)\)", text):
        for label in filter(None, (l.strip() for l in grouping.split(","))):
            if label not in QUERY_LABELS:
                problems.append(f"unknown label {label!r} in by()")
    return problems


def test_the_promql_check_finds_mistakes() -> None:
    assert not promql_problems('sum by (service) (rate(sharedcare_rpc_requests_total{code!="OK"}[5m])) > 0.05')
    assert promql_problems("sum(rate(sharedcare_rpc_requests_total[5m])")
    assert promql_problems("rate(sharedcare_rpc_requests_total)")
    assert promql_problems('sharedcare_rpc_requests_total{code="OK}')
    assert promql_problems('sharedcare_rpc_requests_total{patient="x"}')
    assert promql_problems("sum by (patient) (sharedcare_audit_tree_size)")


def all_promql(r: Rendered) -> list[tuple[str, str]]:
    out = [(f"rule {rule['alert']}", rule["expr"]) for rule in prometheus_rules(r)]
    out += [("dashboard", expr) for expr in dashboard_exprs(dashboard_of(r))]
    return out


def test_every_query_names_only_the_services_metrics_and_parses() -> None:
    r = _render_set("observability")
    exprs = all_promql(r)
    assert len([w for w, _ in exprs if w.startswith("rule")]) == 5
    for where, expr in exprs:
        names = re.findall(r"sharedcare_[a-z_]+", expr)
        assert names, (where, expr)
        unknown = set(names) - SERIES
        assert not unknown, (where, unknown)
        assert not promql_problems(expr), (where, expr, promql_problems(expr))


def test_alerts_cover_what_an_operator_must_know() -> None:
    rules = {rule["alert"]: rule for rule in prometheus_rules(_render_set("observability"))}
    assert set(rules) == {
        "SharedcareAuditUnreachable", "SharedcareOutboxBacklog", "SharedcareOutboxGrowing",
        "SharedcareServerErrors", "SharedcareLatencyHigh",
    }
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["labels"]["team"] == "platform", name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule["for"]), name
    assert rules["SharedcareAuditUnreachable"]["labels"]["severity"] == "critical"
    assert rules["SharedcareAuditUnreachable"]["expr"].endswith("(sharedcare_outbox_delivery_failing_seconds) > 60")
    assert rules["SharedcareOutboxBacklog"]["expr"].endswith("(sharedcare_outbox_oldest_event_age_seconds) > 300")
    assert "deriv(sharedcare_outbox_pending_events[15m])" in rules["SharedcareOutboxGrowing"]["expr"]
    # Server-side failures page; refusals that are the platform working do not.
    errors = rules["SharedcareServerErrors"]["expr"]
    assert rules["SharedcareServerErrors"]["labels"]["severity"] == "critical"
    [codes] = re.findall(r'code=~"([^"]+)"', errors)
    assert set(codes.split("|")) == {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS"}
    for refusal in ("PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT", "UNAUTHENTICATED", "FAILED_PRECONDITION"):
        assert refusal not in errors
    assert "> 0.05" in errors and "> 0.1" in errors
    latency = rules["SharedcareLatencyHigh"]["expr"]
    assert latency.startswith("histogram_quantile(0.99,") and latency.endswith("> 1")
    assert 'method!~".*Watch.*"' in latency


def test_alert_thresholds_come_from_values(chart: helm.Chart) -> None:
    r = render_with(chart, merged(MONITORING_ON, {"metrics": {"rules": {
        "auditUnreachable": {"failingSeconds": 30, "for": "30s"},
        "outboxBacklog": {"oldestEventAgeSeconds": 900, "for": "2m"},
        "outboxGrowing": {"minPending": 50, "window": "30m", "for": "30m"},
        "errorRate": {"codes": ["INTERNAL"], "ratio": 0.01, "minRequestsPerSecond": 1, "window": "10m", "for": "5m"},
        "latency": {"p99Seconds": 0.25, "window": "10m", "for": "20m"},
        "alertLabels": {"severity": "none", "team": "care"},
    }}}))
    rules = {rule["alert"]: rule for rule in prometheus_rules(r)}
    assert rules["SharedcareAuditUnreachable"]["expr"].endswith("> 30") and rules["SharedcareAuditUnreachable"]["for"] == "30s"
    assert rules["SharedcareOutboxBacklog"]["expr"].endswith("> 900") and rules["SharedcareOutboxBacklog"]["for"] == "2m"
    assert "[30m]" in rules["SharedcareOutboxGrowing"]["expr"] and "> 50" in rules["SharedcareOutboxGrowing"]["expr"]
    errors = rules["SharedcareServerErrors"]["expr"]
    assert 'code=~"INTERNAL"' in errors and "[10m]" in errors and "> 0.01" in errors and "> 1" in errors
    assert rules["SharedcareLatencyHigh"]["expr"].endswith("> 0.25") and rules["SharedcareLatencyHigh"]["for"] == "20m"
    # The chart's severity stands; other alert labels are added.
    assert rules["SharedcareAuditUnreachable"]["labels"] == {"severity": "critical", "team": "care"}
    for _, expr in all_promql(render_with(chart, merged(MONITORING_ON, {}))):
        assert not promql_problems(expr), expr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"metrics": {"port": 0}}, "/metrics/port"),
        ({"metrics": {"path": "metrics"}}, "/metrics/path"),
        ({"metrics": {"rules": {"errorRate": {"codes": ["OK"]}}}}, "/metrics/rules/errorRate/codes/0"),
        ({"metrics": {"rules": {"errorRate": {"ratio": 2}}}}, "/metrics/rules/errorRate/ratio"),
        ({"metrics": {"rules": {"latency": {"for": "ten minutes"}}}}, "/metrics/rules/latency/for"),
        ({"metrics": {"serviceMonitor": {"interval": "30"}}}, "/metrics/serviceMonitor/interval"),
        ({"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}}, "/metrics/dashboard/labels/grafana_dashboard"),
        ({"metrics": {"alerts": {}}}, "alerts"),
        ({"otel": {"protocol": "http/json"}}, "/otel/protocol"),
        ({"otel": {"sampler": "sometimes"}}, "/otel/sampler"),
        ({"otel": {"samplerArg": "1.5"}}, "/otel/samplerArg"),
        ({"otel": {"endpoint": "collector:4317"}}, "/otel/endpoint"),
        ({"otel": {"resourceAttributes": {"team": "a,b"}}}, "/otel/resourceAttributes/team"),
        ({"networkPolicy": {"metrics": {"from": {}}}}, "/networkPolicy/metrics/from"),
    ],
)
def test_schema_rejects_bad_monitoring_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(caught.value)


def test_otel_env_is_rendered_on_every_service() -> None:
    r = _render_set("observability")
    for svc in SERVICES:
        env = env_of(container(r.get("Deployment", name_of(svc))))
        values = {name: e.get("value") for name, e in env.items()}
        assert values["OTEL_SERVICE_NAME"] == f"sharedcare-{svc}"
        assert values["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert values["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert values["OTEL_TRACES_EXPORTER"] == "otlp"
        assert values["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert values["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
        assert env["K8S_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        # $(K8S_POD_NAME) is expanded by the kubelet only if defined earlier.
        names = list(env)
        assert names.index("K8S_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
        attributes = dict(pair.split("=", 1) for pair in values["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attributes == {
            "service.namespace": "sharedcare",
            "service.version": "0.1.0",
            "k8s.namespace.name": NAMESPACE,
            "k8s.deployment.name": name_of(svc),
            "k8s.pod.name": "$(K8S_POD_NAME)",
            "deployment.environment.name": "staging",
            "team": "platform",
        }
        # The trace exporter may reach the collector (and only on its port).
        egress = policy_for(r, svc)["egress"]
        collector = {"namespace": "observability", "namespace_labels": {"kubernetes.io/metadata.name": "observability"}, "labels": {}}
        assert rules_allow(egress, "to", collector, 4317), svc
        assert not rules_allow(egress, "to", STRANGER, 4317), svc
        # The config file keeps telemetry.otlpEndpoint's own way (unset here).
        assert "otlp_endpoint" not in config_toml(r, svc)["telemetry"]


def test_otel_is_off_by_default_and_needs_an_endpoint_on_the_allowed_port(chart: helm.Chart) -> None:
    assert "OTEL_SERVICE_NAME" not in env_of(container(_render_set("production").get("Deployment", name_of("records"))))
    assert "otel.enabled=true needs otel.endpoint" in render_error(chart, {"otel": {"enabled": True}})
    message = render_error(chart, {"otel": {"enabled": True, "endpoint": "http://collector:4318", "protocol": "http/protobuf"}})
    assert "set networkPolicy.otlp.port=4318" in message
    message = render_error(chart, {"defaults": {"telemetry": {"otlpEndpoint": "http://collector:55680"}}})
    assert re.search(r"services\.[a-z]+\.telemetry\.otlpEndpoint \(http://collector:55680\) is on port 55680", message), message
    r = render_with(chart, {
        "otel": {"enabled": True, "endpoint": "http://collector:4318", "protocol": "http/protobuf", "samplerArg": ""},
        "networkPolicy": {"otlp": {"port": 4318}},
    })
    env = env_of(container(r.get("Deployment", name_of("audit"))))
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    assert "OTEL_TRACES_SAMPLER_ARG" not in env
    assert rules_allow(policy_for(r, "audit")["egress"], "to", STRANGER, 4318)
    # No port in the URL: the scheme's, which the chart cannot check.
    render_with(chart, {"otel": {"enabled": True, "endpoint": "https://otel.example.net"}})


def test_migration_jobs_carry_the_same_telemetry_env() -> None:
    values = merged(values_of("production"), values_of("observability"))
    with helm.Chart.load(CHART_DIR) as loaded:
        r = render_with(loaded, values)
    for job in r.kind("Job"):
        svc = job["metadata"]["labels"]["app.kubernetes.io/component"].removesuffix("-migrate")
        assert env_of(job["spec"]["template"]["spec"]["containers"][0]) == env_of(container(r.get("Deployment", name_of(svc))))


# --------------------------------------------------------------------------
# tools/kind.sh: what it installs, rendered and validated here (it cannot run
# without a container engine)
# --------------------------------------------------------------------------

KIND_SH = REPO_DIR / "tools" / "kind.sh"
K8S_DIR = REPO_DIR / "k8s"


@functools.lru_cache(maxsize=None)
def kind_sh() -> dict[str, str]:
    """kind.sh's `readonly NAME=value` constants, ${...} expanded."""
    consts: dict[str, str] = {}
    for name, value in re.findall(r"^readonly (\w+)=(.*)$", KIND_SH.read_text(), re.M):
        value = value.strip().strip('"')
        consts[name] = re.sub(r"\$\{(\w+)\}", lambda m: consts[m.group(1)], value)
    return consts


def kind_install(with_observability: bool) -> Rendered:
    """The chart as `tools/kind.sh up [--with-observability]` installs it:
    its release, namespace, value files and --set-string image.tag."""
    consts = kind_sh()
    text = KIND_SH.read_text()
    assert 'hc upgrade --install "$RELEASE" "$CHART"' in text
    assert '--namespace "$NAMESPACE"' in text and '--set-string "image.tag=${tag}"' in text
    assert 'local values=(-f "$VALUES")' in text and 'values+=(-f "$OBSERVABILITY_VALUES")' in text
    files = [consts["VALUES"]] + ([consts["OBSERVABILITY_VALUES"]] if with_observability else [])
    values: dict[str, Any] = {}
    for f in files:
        values = merged(values, yaml.safe_load((REPO_DIR / f).read_text()))
    values = merged(values, {"image": {"tag": "dev-0123456789ab"}})
    assert (REPO_DIR / consts["CHART"] / "Chart.yaml").exists()
    with helm.Chart.load(REPO_DIR / consts["CHART"]) as loaded:
        return Rendered(loaded.render(values, name=consts["RELEASE"], namespace=consts["NAMESPACE"]))


def kind_observability_objects() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k k8s/observability` applies."""
    kustomization = yaml.safe_load((K8S_DIR / "observability" / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in (K8S_DIR / "observability").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "a manifest in k8s/observability is not in its kustomization"
    return [doc for name in listed for doc in yaml.safe_load_all((K8S_DIR / "observability" / name).read_text()) if doc]


def assert_restricted(obj: dict[str, Any]) -> None:
    """The restricted Pod Security Standard both namespaces enforce."""
    spec = obj["spec"]["template"]["spec"]
    pod = spec.get("securityContext", {})
    for c in spec["containers"]:
        where = f"{obj['metadata']['name']}/{c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert (sc.get("seccompProfile") or pod.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
        assert not sc.get("privileged"), where


@pytest.mark.parametrize("with_observability", [False, True])
@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_everything_kind_sh_applies_is_valid_kubernetes(with_observability: bool, kube_version: str) -> None:
    objects = list(kind_install(with_observability).objects)
    objects += list(yaml.safe_load_all((K8S_DIR / "namespace.yaml").read_text()))
    if with_observability:
        objects += kind_observability_objects()
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is not valid Kubernetes {kube_version}: {e.message} at {list(e.path)}")
        if obj["kind"] == "Deployment":
            assert_restricted(obj)


@pytest.mark.parametrize("with_observability", [False, True])
def test_kind_sh_steps_match_the_chart(with_observability: bool) -> None:
    consts = kind_sh()
    r = kind_install(with_observability)
    release, namespace = consts["RELEASE"], consts["NAMESPACE"]
    assert yaml.safe_load((K8S_DIR / "namespace.yaml").read_text())["metadata"]["name"] == namespace
    # The auth Secret kind.sh tells the user to read.
    secret = r.get("Secret", consts["AUTH_SECRET"])
    assert "admin-client-secret" in secret["data"]
    # The image it builds, loads and pins by tag; never pulled.
    deployments = r.kind("Deployment")
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments} == set(SERVICES)
    for d in deployments:
        # kind.sh waits for the Deployments by this label.
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        c = container(d)
        assert c["image"] == f"{consts['IMAGE_REPO']}:dev-0123456789ab"
        assert c["imagePullPolicy"] == "Never"
    assert consts["IMAGE"] == f"{consts['IMAGE_REPO']}:dev"
    # The ports it prints are the host ports kind maps to the Services' node ports.
    cluster = yaml.safe_load((K8S_DIR / "kind-cluster.yaml").read_text())
    assert cluster["name"] == consts["CLUSTER"]
    mapping = {m["containerPort"]: m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    printed = re.findall(r"^  (\w+) +localhost:(\d+)$", KIND_SH.read_text(), re.M)
    assert {svc for svc, _ in printed} == set(SERVICES)
    for svc, host_port in printed:
        service = r.get("Service", f"{release}-{svc}")
        [grpc] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert mapping[grpc["nodePort"]] == int(host_port) == PORTS[svc], svc
    # `helm test` has its pod.
    assert r.kind("Pod")


def test_kind_observability_stack_matches_the_chart() -> None:
    consts = kind_sh()
    r = kind_install(True)
    objects = kind_observability_objects()
    by_kind = lambda kind: {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
    deployments = by_kind("Deployment")
    # kind.sh waits for each of them, and for nothing else.
    assert consts["OBSERVABILITY_DEPLOYMENTS"].split() == list(deployments)
    pod_labels_of = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    ns_labels = {"kubernetes.io/metadata.name": "observability"}

    # Traces: OTEL_* and the config file's otlp_endpoint both name the collector's Service.
    collector = by_kind("Service")["otel-collector"]
    [otlp] = collector["spec"]["ports"]
    url = f"http://otel-collector.observability.svc.cluster.local:{otlp['port']}"
    for svc in SERVICES:
        env = {e["name"]: e.get("value") for e in container(r.get("Deployment", f"{consts['RELEASE']}-{svc}"))["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == url
        assert config_toml_of(r, consts["RELEASE"], svc)["telemetry"]["otlp_endpoint"] == url
        policy = [p for p in r.kind("NetworkPolicy") if p["metadata"]["name"] == f"{consts['RELEASE']}-{svc}"][0]["spec"]
        collector_pod = {"namespace": "observability", "namespace_labels": ns_labels, "labels": pod_labels_of["otel-collector"]}
        assert rules_allow(policy["egress"], "to", collector_pod, otlp["port"]), svc
        # Metrics: the Prometheus pod may scrape, the rest of the stack may not.
        prometheus_pod = {"namespace": "observability", "namespace_labels": ns_labels, "labels": pod_labels_of["prometheus"]}
        grafana_pod = {"namespace": "observability", "namespace_labels": ns_labels, "labels": pod_labels_of["grafana"]}
        assert rules_allow(policy["ingress"], "from", prometheus_pod, METRICS_PORT), svc
        assert not rules_allow(policy["ingress"], "from", grafana_pod, METRICS_PORT), svc
        annotations = r.get("Deployment", f"{consts['RELEASE']}-{svc}")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(METRICS_PORT)

    # Prometheus discovers pods in the release's namespace, with a Role there.
    config = yaml.safe_load(by_kind("ConfigMap")["prometheus-config"]["data"]["prometheus.yml"])
    [job] = config["scrape_configs"]
    [sd] = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == [consts["NAMESPACE"]]
    keep_port = [rc for rc in job["relabel_configs"] if rc.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]]
    assert keep_port and keep_port[0]["regex"] == "metrics"
    # The series keep their own `service` label: no relabelling writes it.
    assert not [rc for rc in job["relabel_configs"] if rc.get("target_label") == "service"]
    role = by_kind("Role")["prometheus-discovery"]
    assert role["metadata"]["namespace"] == consts["NAMESPACE"]
    binding = by_kind("RoleBinding")["prometheus-discovery"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "observability"}]
    assert deployments["prometheus"]["spec"]["template"]["spec"]["serviceAccountName"] == "prometheus"
    # kind.sh applies the namespace before k8s/observability (the Role lives there).
    text = KIND_SH.read_text()
    assert text.index("kc apply -f k8s/namespace.yaml") < text.index("kc apply -k k8s/observability")

    # Grafana mounts the dashboard ConfigMap the chart renders into its namespace.
    [dashboard] = [cm for cm in r.kind("ConfigMap") if cm["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["namespace"] == "observability"
    volumes = {v["name"]: v for v in deployments["grafana"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dashboards"]["configMap"] == {"name": dashboard["metadata"]["name"], "optional": True}
    provisioning = by_kind("ConfigMap")["grafana-provisioning"]["data"]
    [datasource] = yaml.safe_load(provisioning["datasources.yaml"])["datasources"]
    prometheus_service = by_kind("Service")["prometheus"]
    assert datasource["url"] == f"http://prometheus.observability.svc.cluster.local:{prometheus_service['spec']['ports'][0]['port']}"
    [provider] = yaml.safe_load(provisioning["dashboards.yaml"])["providers"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployments["grafana"])["volumeMounts"]}
    assert provider["options"]["path"] == mounts["dashboards"]
    # Jaeger's UI node port is mapped on the host.
    cluster = yaml.safe_load((K8S_DIR / "kind-cluster.yaml").read_text())
    mapping = {m["containerPort"]: m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    [ui] = by_kind("Service")["jaeger-ui"]["spec"]["ports"]
    assert mapping[ui["nodePort"]] == 16686


def config_toml_of(r: Rendered, release: str, svc: str) -> dict[str, Any]:
    return tomllib.loads(r.get("ConfigMap", f"{release}-{svc}")["data"][f"{svc}.toml"])
