"""The deployment files agree with the service: ports, probe paths, the command, settings.

Nothing here runs Docker or Kubernetes: each file is parsed, and what it
names is checked against what the code serves and reads. A renamed route or
setting, or a bot that no longer imports, fails here instead of in a rollout.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from botkit import Bot
from botkit.service._app import create_app
from botkit.service._cli import load_bot
from botkit.service._settings import Settings, load_settings
from botkit.testing import LiveBot
from bots.autoreply import RULES_ENV, parse_rules

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def known_env() -> set[str]:
    """Every BOTKIT_* variable the service reads."""
    return {f"BOTKIT_{name.upper()}" for name in Settings.model_fields} | {RULES_ENV}


def served_paths() -> set[str]:
    """The paths the web service answers."""
    app = create_app(Bot("paths"), load_settings(webhook_token="t" * 24, devino_api_key="k"))
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


def check_env_names(names: set[str], where: str) -> None:
    unknown = {n for n in names if n.startswith("BOTKIT_")} - known_env()
    assert not unknown, f"{where} sets {sorted(unknown)}, which botkit does not read"


def check_target(argv: list[str], where: str) -> int:
    """``botkit run MODULE:ATTR ... --port N``: the target loads a Bot; return the port."""
    assert argv[:2] == ["botkit", "run"] or argv[0].endswith("/botkit"), where
    run = argv.index("run")
    assert isinstance(load_bot(argv[run + 1]), Bot), where
    return int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000


# -- Dockerfile ------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, ``(INSTRUCTION, arguments)``, continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"use the exec form (a JSON list): {arguments}"
    return [str(a) for a in parsed]


def docker_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            env.update(dict(part.split("=", 1) for part in shlex.split(rest)))
    return env


def image_port() -> int:
    [port] = [int(rest.split("/")[0]) for k, rest in final_stage() if k == "EXPOSE"]
    return port


def test_the_image_is_slim_python_311_and_runs_as_a_non_root_user() -> None:
    steps = dockerfile()
    assert all(rest.split()[0] == "python:3.11-slim" for k, rest in steps if k == "FROM"), (
        "every stage starts from python:3.11-slim"
    )
    [user] = [rest for k, rest in final_stage() if k == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert user.split(":")[0].isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert any("--no-cache-dir" in rest for k, rest in steps if k == "RUN")


def test_the_image_command_runs_a_bot_that_imports_on_the_exposed_port() -> None:
    [cmd] = [exec_form(rest) for k, rest in final_stage() if k == "CMD"]
    assert check_target(cmd, "CMD") == image_port()
    # bots/ is not installed with botkit: the image copies it into the working
    # directory, which `botkit run` puts on the import path.
    [workdir] = [rest for k, rest in final_stage() if k == "WORKDIR"]
    package = cmd[cmd.index("run") + 1].split(".")[0]
    copied = [rest.split() for k, rest in final_stage() if k == "COPY" and "--from" not in rest]
    assert [f"{package}/", f"{workdir}/{package}/"] in copied


def test_the_healthcheck_probes_a_served_path_on_the_exposed_port() -> None:
    [check] = [rest for k, rest in final_stage() if k == "HEALTHCHECK"]
    command = exec_form(check.split(" CMD ", 1)[1])
    assert "curl" not in command and command[0] == "python", "slim images have no curl"
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(command))
    assert url is not None
    assert int(url[1]) == image_port()
    assert url[2] == "/healthz" and url[2] in served_paths()


def test_the_image_environment_is_read_by_botkit_and_the_rules_file_is_shipped() -> None:
    stage = final_stage()
    env = docker_env(stage)
    check_env_names(set(env), "the Dockerfile")
    copied = [rest.split() for k, rest in stage if k == "COPY" and "--from" not in rest]
    assert [str(ROOT / src) for src, dest in copied if dest == env[RULES_ENV]] == [
        str(ROOT / "bots/autoreply/rules.example.toml")
    ]
    for src, _ in copied:
        assert (ROOT / src).exists(), src


def test_the_build_context_lets_in_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "a whitelist: secrets and caches stay out of the context"
    for needed in ("!pyproject.toml", "!botkit/", "!bots/"):
        assert needed in ignore


# -- compose ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def test_compose_runs_the_bot_with_redis_persisted_append_only() -> None:
    services = compose()["services"]
    bot, redis = services["bot"], services["redis"]
    assert bot["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / bot["build"]["context"] / bot["build"]["dockerfile"]).exists()
    assert bot["environment"]["BOTKIT_REDIS_URL"].startswith("redis://redis:6379")
    assert "redis" in bot["depends_on"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert [p.split(":")[-1] for p in bot["ports"]] == [str(image_port())]


def test_compose_and_the_env_example_set_only_settings_botkit_reads() -> None:
    bot = compose()["services"]["bot"]
    check_env_names(set(bot["environment"]), "compose.yaml")
    example = env_file(DEPLOY / "botkit.env.example")
    check_env_names(set(example), "botkit.env.example")
    required = {"BOTKIT_DEVINO_API_KEY", "BOTKIT_SENDER", "BOTKIT_WEBHOOK_TOKEN"}
    assert required <= set(example)
    [rules] = [v for v in bot["volumes"] if v["target"] == bot["environment"][RULES_ENV]]
    default = re.fullmatch(r"\$\{\w+:-(.+)\}", rules["source"])
    assert default is not None and rules["read_only"]
    assert (DEPLOY / default[1]).resolve() == ROOT / "bots/autoreply/rules.example.toml"


# -- Kubernetes --------------------------------------------------------------------


def manifests() -> Iterator[dict[str, Any]]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield document


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests()
        if m["kind"] == kind and name in (None, m.get("metadata", {}).get("name"))
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def bot_container() -> dict[str, Any]:
    pod = one("Deployment", "botkit")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return container  # type: ignore[no-any-return]


def test_every_manifest_parses_and_kustomization_lists_them_but_the_secret_template() -> None:
    kinds = {m["kind"] for m in manifests()}
    assert {
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "StatefulSet",
    } <= kinds
    kustomization = one("Kustomization")
    listed = set(kustomization["resources"])
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {"secret.example.yaml"}


def test_the_deployment_runs_three_replicas_with_probes_on_served_paths() -> None:
    deployment = one("Deployment", "botkit")
    assert deployment["spec"]["replicas"] == 3
    container = bot_container()
    [port] = container["ports"]
    assert port["containerPort"] == image_port()
    paths = served_paths()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in paths
        assert get["port"] in (port["name"], port["containerPort"])
    limits = container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_deployment_reads_known_settings_from_the_secret_and_config() -> None:
    container = bot_container()
    env = {e["name"]: e for e in container["env"]}
    check_env_names(set(env), "deployment.yaml")
    assert "BOTKIT_REDIS_URL" in env, "3 replicas need a shared Redis"
    secret = one("Secret", "botkit-secrets")["stringData"]
    config = one("ConfigMap", "botkit-config")["data"]
    for name, entry in env.items():
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == "botkit-secrets" and ref["key"] in secret, name
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == "botkit-config" and ref["key"] in config, name
    for token in ("BOTKIT_WEBHOOK_TOKEN", "BOTKIT_DEVINO_API_KEY", "BOTKIT_API_TOKEN"):
        assert "secretKeyRef" in env[token]["valueFrom"], f"{token} comes from the Secret"


def test_the_rules_are_mounted_where_the_bot_reads_them_and_are_valid() -> None:
    container = bot_container()
    rules_file = Path(next(e["value"] for e in container["env"] if e["name"] == RULES_ENV))
    pod = one("Deployment", "botkit")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(rules_file.parent)]
    config_map = volumes[mount["name"]]["configMap"]
    [item] = [i for i in config_map["items"] if i["path"] == rules_file.name]
    rules = parse_rules(one("ConfigMap", config_map["name"])["data"][item["key"]])
    assert rules.rules


def test_the_service_hpa_and_pdb_point_at_the_bot_pods() -> None:
    deployment = one("Deployment", "botkit")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "botkit")
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in ("http", image_port())
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "botkit"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_redis_is_a_persisted_append_only_statefulset_the_secret_points_at() -> None:
    statefulset = one("StatefulSet", "redis")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert statefulset["spec"]["volumeClaimTemplates"]
    service = one("Service", statefulset["spec"]["serviceName"])
    url = httpx.URL(one("Secret", "botkit-secrets")["stringData"]["BOTKIT_REDIS_URL"])
    assert url.host == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]


# -- systemd ---------------------------------------------------------------------


def test_the_systemd_unit_runs_a_bot_that_imports_as_an_unprivileged_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "botkit.service")
    service = unit["Service"]
    assert service["User"] not in ("root", "0")
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/botkit")
    check_target(argv, "ExecStart")
    assert service["EnvironmentFile"] == "/etc/botkit/botkit.env"
    env = dict(pair.split("=", 1) for pair in shlex.split(service["Environment"]))
    check_env_names(set(env), "botkit.service")
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# -- an env file with an empty token -----------------------------------------------


@pytest.mark.parametrize("token", ["", None])
async def test_an_empty_or_unset_api_token_disables_the_send_api(token: str | None) -> None:
    # "BOTKIT_API_TOKEN=" in an env file must not open /api/send to an empty bearer token.
    async with LiveBot(Bot("no-api"), api_token=token) as live:
        async with httpx.AsyncClient(base_url=live.url) as http:
            answer = await http.post(
                "/api/send",
                json={"to": "79031234567", "template": {"id": "hello"}},
                headers={"Authorization": "Bearer"},
            )
        assert answer.status_code == 404
