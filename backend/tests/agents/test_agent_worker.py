"""The worker: its CLI as the user runs it (no LiveKit server anywhere), and the load it reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import psutil
from helpers import free_port
from livekit.agents import JobExecutorType

from app.agents.worker import FULL, build_server, job_options, room_options, worker_load
from app.config.settings import Settings
from app.services.llm import ChatMessage, GenerationParams, Usage
from bench.livekit_room import BACKEND, WorkerProcess, worker_env

UNREACHABLE = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "APIunreachable", "LIVEKIT_API_SECRET": "s" * 40}


def run_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.agents.worker", *args], cwd=BACKEND, env=env,
                          capture_output=True, text=True, timeout=60)


class JobSlots:
    """A TEST DOUBLE of the AgentServer for the load function: only the running jobs it reads."""

    def __init__(self, busy: int = 0) -> None:
        self.active_jobs = [object()] * busy


def test_help_lists_the_commands():
    result = run_worker("--help", env=worker_env())
    assert result.returncode == 0, result.stderr
    for command in ("dev", "start", "console", "download-files"):
        assert command in result.stdout


def test_start_without_livekit_settings_fails_clearly():
    result = run_worker("start", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" in result.stderr and "LIVEKIT_API_SECRET" in result.stderr


def test_start_with_settings_on_the_command_line_is_not_refused_for_them():
    result = run_worker("start", "--url", "ws://127.0.0.1:9", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" not in result.stderr and "LIVEKIT_API_KEY" in result.stderr


def listening_ports(pid: int, timeout: float = 60) -> set[int]:
    """The IPv4 TCP ports a process listens on, once it listens on any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp4") if c.status == psutil.CONN_LISTEN}
        if ports:
            return ports
        time.sleep(0.1)
    raise AssertionError(f"process {pid} listens on no port after {timeout} s")


def test_two_workers_on_one_host_load_their_models_once_and_stop():
    """The second worker finds the health port taken and uses a free one; the load a worker reports
    is full while its models load and empty once they are ready; SIGTERM ends each cleanly."""
    port = free_port()
    first = WorkerProcess(worker_env(**UNREACHABLE, LIVEKIT_WORKER_PORT=str(port)))
    second = None
    try:
        assert listening_ports(first.proc.pid) == {port}
        loads = []  # what the first worker's own /worker endpoint says, until its models are ready
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (FULL in loads and loads[-1] == 0.0):
            info = httpx.get(f"http://127.0.0.1:{port}/worker", timeout=5).json()
            loads.append(info.get("worker_load", 0.0))  # (JSON leaves out a zero)
            time.sleep(0.1)
        assert FULL in loads and loads[-1] == 0.0, loads
        first.wait_for(r"models ready in")
        # Job threads, not processes: no child process holds another copy of the models.
        assert psutil.Process(first.proc.pid).children(recursive=True) == []

        second = WorkerProcess(worker_env(**UNREACHABLE, LIVEKIT_WORKER_PORT=str(port)))
        second.wait_for(r"health port \d+ is taken")
        (second_port,) = listening_ports(second.proc.pid)
        assert second_port != port
        assert httpx.get(f"http://127.0.0.1:{second_port}/", timeout=5).status_code == 200

        for worker in (first, second):
            worker.stop()
            assert worker.proc.returncode == 0
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.kill()


def test_jobs_run_as_threads_sharing_the_process_models():
    server = build_server(Settings(app_env="test", _env_file=None, livekit_agent_name="test-agent",
                                   livekit_worker_max_jobs=3))
    assert server._job_executor_type is JobExecutorType.THREAD
    assert server._num_idle_processes == 3  # a warm job thread per slot
    assert server._agent_name == "test-agent"


def test_the_agent_reads_the_pre_connect_audio():
    audio = room_options().audio_input
    assert audio.pre_connect_audio and audio.sample_rate == 16000 and audio.frame_size_ms == 20


async def test_load_counts_job_slots_not_the_cpu_the_models_use(services):
    """While a real generation keeps the CPU busy, a worker with a free slot stays below the threshold."""
    settings = Settings(app_env="test", _env_file=None, livekit_worker_max_jobs=2, livekit_job_memory_mb=1)
    threshold = settings.livekit_worker_load_threshold
    process = psutil.Process()
    usage = Usage()

    async def generate() -> None:
        messages = [ChatMessage("user", "Write a long story about a lighthouse keeper and the sea.")]
        async for _ in services.llm.stream_chat(messages, GenerationParams(max_tokens=600, temperature=0.7), usage):
            pass

    generation = asyncio.create_task(generate())
    loads = []
    try:
        while usage.completion_tokens < 5:  # the model is generating
            await asyncio.sleep(0.05)
        tokens_before, cpu_before, started = usage.completion_tokens, process.cpu_times(), time.monotonic()
        psutil.cpu_percent()  # the machine's CPU, as the framework's default load measures it
        for _ in range(30):
            loads.append(await asyncio.to_thread(worker_load, JobSlots(busy=1), settings=settings))
            await asyncio.sleep(0.1)
        machine_cpu = psutil.cpu_percent() / 100
        cpu_after, tokens = process.cpu_times(), usage.completion_tokens - tokens_before
        cores = (sum(cpu_after[:2]) - sum(cpu_before[:2])) / (time.monotonic() - started)
    finally:
        generation.cancel()
    # Real work all along: the model kept generating, on a good part of a core (all of one or two when
    # nothing else runs; other work on a shared machine takes some), while the load was read.
    assert tokens >= 5 and cores > 0.3, f"{tokens} tokens, {cores:.2f} cores, machine CPU {machine_cpu:.0%}"
    assert max(loads) == threshold / 2 < threshold, loads
    assert worker_load(JobSlots(busy=0), settings=settings) == 0.0
    assert worker_load(JobSlots(busy=2), settings=settings) == threshold  # every slot busy: full


async def test_load_is_full_when_memory_for_one_more_conversation_is_missing(services):
    settings = Settings(app_env="test", _env_file=None, livekit_job_memory_mb=10**9)
    assert worker_load(JobSlots(busy=0), settings=settings) == FULL


def test_job_metadata_is_parsed_safely():
    settings = Settings(app_env="test", _env_file=None, max_text_chars=100)
    assert job_options('{"instructions": " Be a pirate. ", "voice": "alice", "x": 1}', settings) == {
        "instructions": "Be a pirate.", "voice": "alice"}
    assert job_options("", settings) == {}
    assert job_options(None, settings) == {}
    assert job_options("not json", settings) == {}
    assert job_options('["a list"]', settings) == {}
    assert job_options('{"instructions": 42, "voice": ""}', settings) == {}
    assert len(job_options(json.dumps({"instructions": "y" * 500}), settings)["instructions"]) == 100
