"""The deployment assets, checked without an engine or a cluster: compose.yaml against the Compose
Specification and the real Compose loader, the Kubernetes manifests against Kubernetes' schemas, and
both against the code (actors, commands, settings, probe routes, mounted files)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from fastapi import FastAPI

from actors.identity.settings import IdentitySettings
from actors.payments.provider import PaymentSettings
from actors.registry import ACTORS
from brokers.health import probe_router
from brokers.settings import SECRETS_DIR_VARIABLE, Settings
from edge.app import create_app
from ops.cli import app as emporium_app
from ops.payment_provider import create_app as create_payment_provider

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
K8S = ROOT / "ops" / "k8s"
K8S_BASE = K8S / "base"
KUBERNETES_VERSION = "1.30"
# The kinds kubernetes-validate has no schema for (custom resources, kustomize's own file).
CUSTOM_KINDS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
EMPORIUM: click.Group = typer.main.get_command(emporium_app)


def _env_names(settings_class: type, prefix: str = "") -> set[str]:
    return {f"{prefix}{name}".upper() for name in settings_class.model_fields}


KNOWN_VARIABLES = (
    _env_names(Settings)
    | _env_names(IdentitySettings)
    | _env_names(PaymentSettings, "emporium_payment_")
    | {SECRETS_DIR_VARIABLE}
)
# Settings read from files in EMPORIUM_SECRETS_DIR: named after a field of Settings or IdentitySettings.
SECRET_FILE_SETTINGS = set(Settings.model_fields) | set(IdentitySettings.model_fields)


def _routes(api: FastAPI) -> set[str]:
    """The paths an app serves, from its OpenAPI document (the probes are documented)."""
    return set(api.openapi()["paths"])


def _actor_routes() -> set[str]:
    api = FastAPI()
    api.include_router(probe_router({}, Settings()))
    return _routes(api)


# What each process serves, by its command (the first argument after `emporium`).
ROUTES_BY_COMMAND = {
    "actor": _actor_routes(),
    "edge": _routes(create_app(Settings())),
    "payment-provider": _routes(create_payment_provider()),
}


def _port_of(args: list[str]) -> int:
    """The port a command listens on, as the CLI would parse it (its default when not given)."""
    context = _parse(args)
    return int(context.params["port"])


def _parse(args: list[str]) -> click.Context:
    """Parse `emporium ARGS` as the CLI would, without running anything; a wrong command or option
    raises click's UsageError."""
    name, *rest = args
    assert name in EMPORIUM.commands, f"`emporium {name}` is not a command: {sorted(EMPORIUM.commands)}"
    return EMPORIUM.commands[name].make_context(f"emporium {name}", list(rest), resilient_parsing=False)


def _emporium_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the emporium image."""
    return {name: s for name, s in SERVICES.items() if "build" in s}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _k8s_objects() -> Iterator[dict[str, Any]]:
    for path in _k8s_files():
        yield from _documents(path)


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_objects() if d["kind"] == "Deployment"}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _configmap() -> dict[str, str]:
    (config,) = [d for d in _k8s_objects() if d["kind"] == "ConfigMap"]
    return config["data"]


def _kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


# --- compose.yaml --------------------------------------------------------------------------------


def test_compose_yaml_follows_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(COMPOSE)
    ]
    assert not errors


def test_the_schema_check_catches_a_misspelt_key():
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    broken = {"services": {"edge": {"image": "emporium:local", "helthcheck": {}}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def _compose_binary() -> list[str] | None:
    """Docker Compose v2, when the docker CLI has its plugin."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.mark.skipif(_compose_binary() is None, reason="no Docker Compose v2 plugin (docker compose)")
def test_docker_compose_loads_compose_yaml():
    """The real loader: interpolation, merge keys, references between services, its own schema."""
    command = [*_compose_binary(), "--file", str(COMPOSE_FILE), "config", "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert set(loaded["services"]) == set(SERVICES)
    # It reads the merge keys as PyYAML does, so the checks below see what Compose runs.
    assert loaded["services"]["edge"]["depends_on"].keys() == SERVICES["edge"]["depends_on"].keys()


def test_every_actor_has_a_compose_service_running_it():
    for name in ACTORS:
        assert SERVICES[name]["command"][:2] == ["actor", name], name


def test_every_compose_command_is_an_emporium_command_with_valid_options():
    for name, service in _emporium_services().items():
        context = _parse(service["command"])
        if service["command"][0] == "actor":
            assert context.params["name"] in ACTORS, name


def test_every_emporium_service_sets_only_known_settings():
    for name, service in _emporium_services().items():
        unknown = {
            v
            for v in service.get("environment", {})
            if v not in KNOWN_VARIABLES and not v.startswith("OTEL_")
        }
        assert not unknown, f"{name} sets {unknown}, which no settings class reads"


def test_the_secret_files_of_emporium_services_are_named_after_settings():
    for name, service in _emporium_services().items():
        secrets = service.get("secrets", [])
        if secrets:
            assert service["environment"][SECRETS_DIR_VARIABLE] == "/run/secrets", name
        assert set(secrets) <= SECRET_FILE_SETTINGS, name


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/[\w/-]*", test)
    return url


def test_every_service_has_a_health_check():
    for name, service in SERVICES.items():
        assert service["healthcheck"]["test"][0] == "CMD", name


def test_emporium_health_checks_ask_a_route_the_process_serves_on_its_port():
    for name, service in _emporium_services().items():
        url = urlsplit(_healthcheck_url(service))
        command = service["command"]
        assert url.port == _port_of(command), name
        assert url.path in ROUTES_BY_COMMAND[command[0]], f"{name}: {url.path}"
    # Readiness (dependencies answer), not mere liveness, gates the services that wait on them.
    assert _healthcheck_url(SERVICES["edge"]).endswith("/ready")
    assert all(_healthcheck_url(SERVICES[a]).endswith("/ready") for a in ACTORS)


def test_services_wait_for_the_health_of_what_they_need():
    for name, service in SERVICES.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in SERVICES, f"{name} depends on a missing service {needed}"
            assert condition == {"condition": "service_healthy"}, name
    for actor in ACTORS:
        assert {"rabbitmq", "mongo"} <= SERVICES[actor]["depends_on"].keys(), actor
    # No command is sent before every actor has declared its queues.
    assert set(ACTORS) <= SERVICES["edge"]["depends_on"].keys()
    assert "payment-provider" in SERVICES["payments"]["depends_on"]
    assert "mailpit" in SERVICES["notifications"]["depends_on"]
    assert "prometheus" in SERVICES["grafana"]["depends_on"]


def test_the_services_reach_each_other_by_service_name():
    settings = SERVICES["edge"]["environment"]
    mongo = urlsplit(settings["MONGODB_URL"])
    assert mongo.hostname in SERVICES and "replicaSet=rs0" in mongo.query
    assert "--replSet" in SERVICES[mongo.hostname]["command"]
    assert "rs0" in " ".join(SERVICES[mongo.hostname]["healthcheck"]["test"])
    provider = urlsplit(settings["EMPORIUM_PAYMENT_PROVIDER_URL"])
    assert provider.port == _port_of(SERVICES[provider.hostname]["command"])
    smtp = urlsplit(SERVICES["notifications"]["environment"]["EMPORIUM_SMTP_URL"])
    assert (smtp.scheme, smtp.hostname, smtp.port) == ("smtp", "mailpit", 1025)


def _bind_mounts() -> Iterator[tuple[str, Path, str]]:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":")
            if source.startswith("."):
                yield name, ROOT / source, target


def test_every_mounted_path_is_in_the_repository():
    mounts = list(_bind_mounts())
    assert mounts
    for name, source, _ in mounts:
        assert source.exists(), f"{name} mounts {source}, which does not exist"


def test_rabbitmq_runs_the_management_and_prometheus_plugins():
    # A 4.x series (3.13 and older are out of community support), the management image.
    assert re.fullmatch(r"rabbitmq:4\.\d+-management", SERVICES["rabbitmq"]["image"])
    plugins = (ROOT / "ops" / "rabbitmq" / "compose" / "enabled_plugins").read_text()
    assert re.fullmatch(r"\[rabbitmq_management,rabbitmq_prometheus\]\.\n", plugins)


def test_prometheus_reads_a_mounted_config_whose_targets_are_compose_services():
    mounts = {target: source for name, source, target in _bind_mounts() if name == "prometheus"}
    (flag,) = [a for a in SERVICES["prometheus"]["command"] if a.startswith("--config.file=")]
    in_container = Path(flag.removeprefix("--config.file="))
    config_file = mounts[str(in_container.parent)] / in_container.name
    config = yaml.safe_load(config_file.read_text())
    for rules in config["rule_files"]:
        assert (config_file.parent / rules).is_file(), rules
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.split(":")[0] in SERVICES, f"{job['job_name']}: {target}"
        for dns in job.get("dns_sd_configs", []):
            for service in dns["names"]:
                assert _port_of(SERVICES[service]["command"]) == dns["port"], service


def test_grafana_finds_the_mounted_dashboards_and_the_compose_prometheus():
    mounts = {
        source.relative_to(ROOT).as_posix(): target
        for name, source, target in _bind_mounts()
        if name == "grafana"
    }
    provisioning = ROOT / "ops" / "grafana" / "provisioning"
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.yml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers
    for provider in providers:
        assert provider["options"]["path"] == mounts["ops/grafana/dashboards"]
    sources = [
        s
        for f in sorted((provisioning / "datasources").glob("*.yml"))
        for s in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert sources
    for source in sources:
        url = urlsplit(source["url"])
        assert url.hostname == "prometheus" and url.port == 9090


def test_no_secret_is_committed_and_make_secrets_writes_every_one(tmp_path: Path):
    files = {name: ROOT / spec["file"] for name, spec in COMPOSE["secrets"].items()}
    secrets_dir = ROOT / "ops" / "compose" / "secrets"
    assert {f.parent for f in files.values()} == {secrets_dir}
    assert "ops/compose/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    # The script writes next to itself: run a copy.
    script = tmp_path / "make-secrets.sh"
    shutil.copy(ROOT / "ops" / "compose" / "make-secrets.sh", script)
    subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=30)
    written = tmp_path / "secrets"
    assert {p.name for p in written.iterdir()} == {f.name for f in files.values()}
    amqp = urlsplit((written / "rabbitmq_url").read_text().strip())
    conf = dict(
        line.split(" = ") for line in (written / "rabbitmq-default-user.conf").read_text().splitlines()
    )
    assert (amqp.hostname, amqp.port) == ("rabbitmq", 5672)
    assert (conf["default_user"], conf["default_pass"]) == (amqp.username, amqp.password)
    assert re.fullmatch(r"[0-9a-f]{48}", amqp.password)
    # Run again, it keeps what it wrote (RabbitMQ reads its default user only on a first boot).
    before = (written / "rabbitmq_url").read_text()
    subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=30)
    assert (written / "rabbitmq_url").read_text() == before


# --- the image -----------------------------------------------------------------------------------


def test_the_image_runs_emporium_as_a_numeric_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(maxsplit=1) for line in dockerfile.splitlines() if line and line[0] != "#"]
    by_name = [(parts[0], parts[1] if len(parts) > 1 else "") for parts in instructions if parts[0].isupper()]
    assert [arg for name, arg in by_name if name == "FROM"] == [
        "python:3.11-slim AS build",
        "python:3.11-slim",
    ]
    (user,) = [arg for name, arg in by_name if name == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user)
    (entrypoint,) = [arg for name, arg in by_name if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["emporium"]
    assert "HEALTHCHECK" not in {name for name, _ in by_name}
    for name, arg in by_name:
        if name == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"ops/compose/secrets", "ops/k8s/base/secrets", ".venv", ".git"} <= set(ignored)


# --- Kubernetes ----------------------------------------------------------------------------------


def test_every_kubernetes_manifest_follows_the_kubernetes_schemas():
    validated = 0
    for path in _k8s_files():
        for doc in _documents(path):
            if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{path.relative_to(ROOT)} {doc['kind']} {doc['metadata']['name']}: {error.message}"
                )
            validated += 1
    # 8 actors (Deployment + Service), the edge (the same), the HPAs, the ConfigMap, the Namespace.
    assert validated == 2 * len(ACTORS) + 2 + 2 + 1 + 1


def test_the_schema_check_catches_a_misspelt_probe():
    deployment = _deployments()["orders"]
    container = _container(deployment)
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_actor_has_a_deployment_running_it_and_a_metrics_service():
    deployments = _deployments()
    services = {s["metadata"]["name"]: s for s in _k8s_objects() if s["kind"] == "Service"}
    for name in ACTORS:
        container = _container(deployments[name])
        assert container["args"][:2] == ["actor", name], name
        (port,) = container["ports"]
        assert (port["name"], port["containerPort"]) == ("metrics", _port_of(container["args"]))
        (service_port,) = services[name]["spec"]["ports"]
        assert service_port["targetPort"] == "metrics"
        assert services[name]["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
    assert services["edge"]["spec"]["selector"] == deployments["edge"]["spec"]["selector"]["matchLabels"]


def test_every_deployment_probes_routes_its_process_serves_and_is_locked_down():
    for name, deployment in _deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        _parse(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        routes = ROUTES_BY_COMMAND[container["args"][0]]
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and path in routes, f"{name} {probe}"
            assert ports[get["port"]] == _port_of(container["args"]), f"{name} {probe}"
        assert {"requests", "limits"} <= container["resources"].keys(), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_every_process_takes_the_shared_settings_and_its_own_secret():
    deployments = _deployments()
    generated = {g["name"]: g["files"] for g in _kustomization(K8S_BASE)["secretGenerator"]}
    for name, deployment in deployments.items():
        container = _container(deployment)
        assert container["envFrom"] == [{"configMapRef": {"name": "emporium-settings"}}], name
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        secret = volumes["secrets"]["secret"]["secretName"]
        assert secret == f"emporium-{name}", name
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["secrets"] == _configmap()[SECRETS_DIR_VARIABLE], name
        files = {Path(f).name for f in generated[secret]}
        assert {"rabbitmq_url", "emporium_metrics_token"} <= files, name
        # Every file is a setting, except identity's key, which its own setting names.
        named = {Path(v["value"]).name for v in container.get("env", []) if v["name"].endswith("_FILE")}
        assert files - named <= SECRET_FILE_SETTINGS, name
    assert "mongodb_url" not in {Path(f).name for f in generated["emporium-edge"]}


def test_identity_is_given_its_signing_key_file():
    env = {v["name"]: v["value"] for v in _container(_deployments()["identity"])["env"]}
    key = Path(env["EMPORIUM_IDENTITY_SIGNING_KEY_FILE"])
    assert str(key.parent) == _configmap()[SECRETS_DIR_VARIABLE]
    generated = {g["name"]: g["files"] for g in _kustomization(K8S_BASE)["secretGenerator"]}
    assert key.name in {Path(f).name for f in generated["emporium-identity"]}


def test_the_kubernetes_settings_are_production_and_least_privilege():
    config = _configmap()
    assert config["EMPORIUM_ENV"] == "production"
    assert config["EMPORIUM_DECLARE_TOPOLOGY"] == "false"
    variables = set(config) | {
        v["name"] for d in _deployments().values() for v in _container(d).get("env", [])
    }
    unknown = {v for v in variables if v not in KNOWN_VARIABLES and not v.startswith("OTEL_")}
    assert not unknown
    for name, deployment in _deployments().items():
        settings = {**config, **{v["name"]: v["value"] for v in _container(deployment).get("env", [])}}
        # What the environment sets must be acceptable in production; credentials come from files.
        Settings.model_validate(
            {k.lower(): v for k, v in settings.items() if k.lower() in Settings.model_fields}
            | {
                "rabbitmq_url": f"amqp://{name}:secret@rabbitmq:5672/emporium",
                "mongodb_url": settings.get("MONGODB_URL", "mongodb://u:p@mongo/?replicaSet=rs0"),
                "emporium_metrics_token": "t" * 32,
            }
        )


def test_the_kustomization_lists_every_manifest_and_keeps_secrets_out_of_git():
    kustomization = _kustomization(K8S_BASE)
    listed = {K8S_BASE / r for r in kustomization["resources"]}
    assert listed == set(K8S_BASE.rglob("*.yaml")) - {K8S_BASE / "kustomization.yaml"}
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"ops/k8s/base/secrets/", "ops/k8s/keda/secrets/"} <= set(ignored)
    for generator in kustomization["secretGenerator"]:
        assert all(f.startswith("secrets/") for f in generator["files"]), generator["name"]


def test_the_edge_and_orders_scale_on_cpu():
    autoscalers = {h["metadata"]["name"]: h for h in _k8s_objects() if h["kind"] == "HorizontalPodAutoscaler"}
    deployments = _deployments()
    for name in ("edge", "orders"):
        spec = autoscalers[name]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # The autoscaler owns the count: a replicas field would reset it on every apply.
        assert "replicas" not in deployments[name]["spec"]
        assert "cpu" in _container(deployments[name])["resources"]["requests"]


def test_the_keda_overlay_scales_orders_on_its_queue_instead_of_cpu():
    folder = K8S / "keda"
    kustomization = _kustomization(folder)
    assert "../base" in kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (folder / resource).exists(), resource
    (patch,) = kustomization["patches"]
    removed = yaml.safe_load(patch["patch"])
    assert (removed["$patch"], removed["kind"], removed["metadata"]["name"]) == (
        "delete",
        "HorizontalPodAutoscaler",
        "orders",
    )
    objects = {d["kind"]: d for d in _documents(folder / "scaledobject.yaml")}
    scaled = objects["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] in _deployments()
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == scaled["scaleTargetRef"]["name"] in ACTORS
    authentication = objects["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
    (reference,) = authentication["spec"]["secretTargetRef"]
    (generator,) = kustomization["secretGenerator"]
    # The custom resource names the Secret literally: kustomize must not add a hash to it.
    assert generator["name"] == reference["name"] and generator["options"]["disableNameSuffixHash"] is True
    assert reference["key"] in {Path(f).name for f in generator["files"]}
