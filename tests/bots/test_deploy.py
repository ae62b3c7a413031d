"""The deployment files agree with the service: ports, probe paths, the command, settings.

Nothing here runs Docker or Kubernetes: each file is parsed, and what it
names is checked against what the code serves and reads. A renamed route or
setting, or a bot that no longer imports, fails here instead of in a rollout.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from botkit import Bot
from botkit.cli import PORT_ENV, TARGET_ENV
from botkit.service import Settings, create_app, load_bot, load_settings
from botkit.testing import LiveBot
from bots.autoreply import RULES_ENV, parse_rules

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def known_env() -> set[str]:
    """Every BOTKIT_* variable the service reads."""
    settings = {f"BOTKIT_{name.upper()}" for name in Settings.model_fields}
    return settings | {RULES_ENV, TARGET_ENV, PORT_ENV}


def served_paths() -> set[str]:
    """The paths the web service answers."""
    app = create_app(Bot("paths"), load_settings(webhook_token="t" * 24, devino_api_key="k"))
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


def check_env_names(names: set[str], where: str) -> None:
    unknown = {n for n in names if n.startswith("BOTKIT_")} - known_env()
    assert not unknown, f"{where} sets {sorted(unknown)}, which botkit does not read"


def check_target(argv: list[str], where: str, env: dict[str, str] | None = None) -> int:
    """``botkit run [MODULE:ATTR] [--port N]``: the target loads a Bot; return the port.

    Without them on the command line, ``BOTKIT_TARGET`` and ``BOTKIT_PORT`` in
    ``env`` say (as ``botkit run`` reads them).
    """
    env = env or {}
    assert argv[:2] == ["botkit", "run"] or argv[0].endswith("/botkit"), where
    after = argv[argv.index("run") + 1 :]
    target = after[0] if after and not after[0].startswith("-") else env.get(TARGET_ENV)
    assert target, f"{where}: no target on the command line and no {TARGET_ENV}"
    assert isinstance(load_bot(target), Bot), where
    if "--port" in argv:
        return int(argv[argv.index("--port") + 1])
    return int(env.get(PORT_ENV, "8000"))


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
    env = docker_env(final_stage())
    assert "--port" not in cmd, "the port is BOTKIT_PORT, which the health check reads too"
    assert check_target(cmd, "CMD", env) == image_port()
    # bots/ is not installed with botkit: the image copies it into the working
    # directory, which `botkit run` puts on the import path.
    [workdir] = [rest for k, rest in final_stage() if k == "WORKDIR"]
    package = env[TARGET_ENV].split(".")[0]
    copied = [rest.split() for k, rest in final_stage() if k == "COPY" and "--from" not in rest]
    assert [f"{package}/", f"{workdir}/{package}/"] in copied


async def test_the_healthcheck_probes_the_port_botkit_listens_on() -> None:
    # No Docker engine here: the image's health check command is run as is,
    # with the environment the image gives it, against a real server.
    [check] = [rest for k, rest in final_stage() if k == "HEALTHCHECK"]
    command = exec_form(check.split(" CMD ", 1)[1])
    assert "curl" not in command and command[0] == "python", "slim images have no curl"
    assert "/healthz" in command[-1] and "/healthz" in served_paths()
    assert docker_env(final_stage())[PORT_ENV] == str(image_port())

    def probe(port: int) -> int:
        env = {**os.environ, PORT_ENV: str(port)}
        argv = [sys.executable, *command[1:]]
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    async with LiveBot(Bot("health")) as live:
        port = httpx.URL(live.url).port
        assert port is not None
        # In a thread: the server answers from this test's event loop.
        assert await asyncio.to_thread(probe, port) == 0  # the configured port, not 8000
    assert probe(port) != 0  # nothing listens there any more: unhealthy


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


@pytest.mark.parametrize("doc", ["README.md", "deploy/README.md"])
def test_the_documented_image_of_your_own_bot_builds_on_this_image(doc: str) -> None:
    text = (ROOT / doc).read_text()
    [block] = re.findall(r"```dockerfile\n(.*?)```", text, re.S)
    steps = [tuple(line.split(" ", 1)) for line in block.strip().splitlines()]
    tag = compose()["services"]["bot"]["image"]
    assert steps[0] == ("FROM", tag), "FROM the image compose builds from deploy/Dockerfile"
    # COPY . . lands in the base's working directory, which botkit run imports from.
    assert steps[1] == ("COPY", ". .")
    [workdir] = [rest for k, rest in final_stage() if k == "WORKDIR"]
    assert workdir == "/srv/botkit"
    [(keyword, env)] = steps[2:]
    assert keyword == "ENV" and env.startswith(f"{TARGET_ENV}=")
    assert f"docker build -f deploy/Dockerfile -t {tag} ." in text


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
    assert check_target(bot["command"], "compose command", docker_env(final_stage()))
    # Published on the host's loopback, on BOTKIT_PORT (the image's default).
    [published] = bot["ports"]
    default_port = f"${{{PORT_ENV}:-{image_port()}}}"
    assert published == f"127.0.0.1:{default_port}:{default_port}"
    assert bot["environment"][PORT_ENV] == default_port


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


def test_the_deployment_leaves_the_replicas_to_the_hpa_and_probes_served_paths() -> None:
    deployment = one("Deployment", "botkit")
    assert "replicas" not in deployment["spec"], "a fixed count fights the HPA on every apply"
    container = bot_container()
    [port] = container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env[PORT_ENV]) == port["containerPort"], "botkit listens on the container port"
    assert isinstance(load_bot(env[TARGET_ENV]), Bot)
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
    # The HPA's percentage is of the request: a request near the idle use scales
    # out at once, so it must be well above it (a worker idles at a few millicores).
    [metric] = hpa["spec"]["metrics"]
    target = metric["resource"]["target"]["averageUtilization"] / 100
    request = bot_container()["resources"]["requests"]["cpu"]
    millicores = int(request[:-1]) if request.endswith("m") else int(float(request) * 1000)
    assert millicores * target >= 150
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_redis_is_a_persisted_append_only_statefulset_the_secret_points_at() -> None:
    statefulset = one("StatefulSet", "redis")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert statefulset["spec"]["volumeClaimTemplates"]
    service = one("Service", statefulset["spec"]["serviceName"])
    secret = one("Secret", "botkit-secrets")["stringData"]
    url = httpx.URL(secret["BOTKIT_REDIS_URL"])
    assert url.host == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    # A password from the Secret, the same one the bot's URL carries.
    password = args[args.index("--requirepass") + 1]
    assert password == "$(REDIS_PASSWORD)"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        assert env[name] == {"name": "botkit-secrets", "key": "REDIS_PASSWORD"}
    assert url.password == secret["REDIS_PASSWORD"]


def test_only_the_bot_pods_reach_redis() -> None:
    policy = one("NetworkPolicy", "redis")["spec"]
    redis_labels = one("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    bot_labels = one("Deployment", "botkit")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}, "pods of this namespace only, no ipBlock"
    assert source["podSelector"]["matchLabels"].items() <= bot_labels.items()
    assert source["podSelector"]["matchLabels"] != {}, "not every pod"
    assert [p["port"] for p in rule["ports"]] == [6379]


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    # kubernetes-validate (PyPI) checks each object against the Kubernetes
    # OpenAPI schema, strictly (an unknown or misplaced field fails); .ci/run
    # installs it.
    tool = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable))
    if tool is None:
        message = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true, where the manifests must be validated")
        pytest.skip(message)
    files = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml") if p.stem != "kustomization")
    done = subprocess.run(
        [tool, "--strict", "--quiet", *files], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


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
