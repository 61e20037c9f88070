"""Models on servers of their own, with real servers on loopback: llama-cpp-python's OpenAI-compatible server
for the LLM (``bench.model_servers.LlamaCppServer``) and a second GemmaVoice API process for STT and TTS.

A "light" API (every model remote, none loaded) answers spoken turns over the WebSocket and the Realtime
socket, and a light worker in a real LiveKit room. Faults use real signals on the real servers; what a real
server cannot be made to do on cue (a 500, a broken stream, a stall) comes from ``MisbehavingChatServer``, a
test double.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from agent_helpers import until, voice_env, worker_in
from doubles.chat_server import MisbehavingChatServer
from helpers import QUESTION, QUESTION_WORDS, TEST_VOICE, free_port, start_server, stop_server, words
from test_conversation_ws import VoiceClient
from test_realtime import Realtime, connect

from app.audio.codec import WHISPER_RATE, decode_audio, float_to_pcm16, resample_pcm
from app.config.settings import Settings
from app.services.livekit_tokens import user_token
from bench.livekit_room import RoomUser
from bench.model_servers import GemmaVoiceAPIProcess, LlamaCppServer

STORYTELLER = "Whatever the user says, answer with a long story of at least ten sentences."
# Quick to notice a server that went away or came back; one retry keeps a dead server's turn short.
FAST_FAULTS = {"remote_retries": 1, "remote_probe_interval_s": 0.5, "remote_connect_timeout_s": 2.0}


@pytest.fixture(scope="module")
def llama_server():
    with LlamaCppServer() as server:
        yield server


@pytest.fixture(scope="module")
def speech_server():
    """A second GemmaVoice API: the STT and TTS server (its own LLM is loaded but unused)."""
    with GemmaVoiceAPIProcess(env=voice_env()) as server:
        yield server


def light_settings(llm_url: str, speech_url: str, **extra) -> Settings:
    return Settings(app_env="test", _env_file=None, **TEST_VOICE, **{**FAST_FAULTS, **extra}, llm_base_url=llm_url,
                    stt_base_url=speech_url, tts_base_url=speech_url, livekit_local_server=False,
                    rate_limit_enabled=False)


@pytest.fixture(scope="module")
def light_api(llama_server, speech_server):
    # Room for a long story: the stream is surely still open when the reply's first audio arrives.
    running = start_server(light_settings(llama_server.url, speech_server.url, voice_max_reply_tokens=400))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def spoken_question(speech_server) -> bytes:
    """QUESTION as a microphone sends it (PCM s16le, 16 kHz), spoken by the speech server."""
    response = httpx.post(f"{speech_server.url}/audio/speech", json={"input": QUESTION, "response_format": "wav"},
                          timeout=60)
    response.raise_for_status()
    silence = b"\0\0" * (WHISPER_RATE // 4)
    return silence + float_to_pcm16(decode_audio(response.content)) + silence


async def voice_client(api) -> VoiceClient:
    client = VoiceClient(await websockets.connect(f"{api.ws_url}/v1/conversation/ws", max_size=None))
    await client.wait_for("ready")
    return client


def test_a_light_api_loads_no_model_and_says_where_each_one_runs(light_api, llama_server, speech_server):
    models = httpx.get(f"{light_api.url}/v1/models", timeout=10).json()["data"]
    assert {m["kind"]: (m["backend"], m["url"], m["ready"]) for m in models} == {
        "llm": ("remote", llama_server.url, True), "stt": ("remote", speech_server.url, True),
        "tts": ("remote", speech_server.url, True)}
    health = httpx.get(f"{light_api.url}/health", timeout=10).json()["components"]
    assert {name: (c["backend"], c["engine"]) for name, c in health.items()} == dict.fromkeys(
        ("llm", "stt", "tts"), ("remote", "openai-compatible"))
    assert {name: c.get("path") for name, c in health.items()} == dict.fromkeys(("llm", "stt", "tts"))  # no file


async def test_a_spoken_turn_over_the_websocket_streams_end_to_end(light_api, spoken_question):
    llm = light_api.services.llm
    client = await voice_client(light_api)
    try:
        await client.send({"type": "config", "instructions": STORYTELLER})
        await client.wait_for("config")
        await client.speak(spoken_question, speed=2.0)
        transcript = (await client.wait_for("transcript"))[0]
        assert QUESTION_WORDS <= words(transcript["text"]), transcript["text"]
        await until(lambda: client.audio_times, 60, "the reply's first audio")
        # The reply is spoken while the server still writes it: the LLM's stream is open at its first audio.
        assert llm.status()["active"] == 1, llm.status()
        end = (await client.wait_for("response_end", timeout=120))[0]
        assert len(end["text"].split()) > 20 and not client.of("error"), (end, client.of("error"))
    finally:
        await client.close()


async def test_barge_in_closes_the_remote_stream_and_the_server_stops_generating(light_api, llama_server):
    client = await voice_client(light_api)
    try:
        await client.send({"type": "config", "instructions": STORYTELLER, "vad": False})
        await client.wait_for("config")
        before = llama_server.disconnects()
        await client.send({"type": "text", "text": "Tell me a long story about a dragon."})
        await until(lambda: client.audio_times, 60, "the reply's first audio")
        assert light_api.services.llm.status()["active"] == 1
        await client.send({"type": "interrupt"})
        await client.wait_for("interrupted")
        # The server's own log: it saw its client go and stopped generating.
        await asyncio.to_thread(llama_server.wait_for_log, llama_server.DISCONNECT_TEXT, 10, before + 1)
        await until(lambda: light_api.services.llm.status()["active"] == 0, 10, "the stream closed here too")
    finally:
        await client.close()


async def test_a_spoken_turn_over_the_realtime_socket(light_api, spoken_question):
    async with connect(light_api) as conn:
        rt = Realtime(conn)
        try:
            await rt.wait_for("session.created")
            await rt.update(instructions="Answer in one short sentence.", max_output_tokens=40,
                            audio={"input": {"transcription": {"model": "whisper-1"}}})
            await rt.speak(resample_pcm(spoken_question, WHISPER_RATE, 24000), speed=2.0)
            done = (await rt.wait_for("response.done", timeout=120))[0]["response"]
            assert done["status"] == "completed", done
            heard = rt.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
            assert QUESTION_WORDS <= words(heard), heard
            assert rt.of("response.output_audio.delta") and not rt.invalid
        finally:
            rt.close()


async def test_a_light_worker_answers_in_a_livekit_room(livekit_server, livekit_settings, llama_server,
                                                        speech_server, spoken_question):
    remote = {"LLM_BASE_URL": llama_server.url, "STT_BASE_URL": speech_server.url,
              "TTS_BASE_URL": speech_server.url}
    started = time.monotonic()
    with worker_in(livekit_server, ready_log="registered worker", **remote) as worker:
        registered_s = time.monotonic() - started
        await until(lambda: asyncio.to_thread(worker.idle), 30, "the light worker idle and ready")
        user = RoomUser(livekit_settings.livekit_url, user_token(livekit_settings).token)
        await user.connect()
        try:
            await user.wait_for_agent(10)
            said = await user.say(spoken_question, WHISPER_RATE)
            await user.agent_voice_after(said.end, 30)
            await until(lambda: user.texts(user.agent_identity), 10, "the agent's transcript")
            heard = " ".join(user.texts(user.room.local_participant.identity))
            assert QUESTION_WORDS <= words(heard), heard
        finally:
            await user.close()
        import psutil

        rss_mb = psutil.Process(worker.proc.pid).memory_info().rss / 1e6
    print(f"light worker: registered {registered_s:.1f} s after its start, {rss_mb:.0f} MB resident")
    assert rss_mb < 300


async def test_a_worker_whose_model_server_is_down_takes_no_room_until_it_answers(livekit_server, speech_server):
    port = free_port()  # nothing listens here yet
    remote = {"LLM_BASE_URL": f"http://127.0.0.1:{port}/v1", "STT_BASE_URL": speech_server.url,
              "TTS_BASE_URL": speech_server.url, "REMOTE_PROBE_INTERVAL_S": "0.5"}
    with worker_in(livekit_server, ready_log="registered worker", **remote) as worker:
        # Its log says why it takes no room (the API's /health says the same).
        await asyncio.to_thread(worker.wait_for, "taking no room: llm loading: the LLM server at "
                                f"http://127.0.0.1:{port}/v1 is not answering", 30)
        await asyncio.to_thread(worker.wait_for, "marking as unavailable", 15)
        assert worker.info().get("worker_load") == 1.0  # full: LiveKit sends it no room
        with LlamaCppServer(port=port):
            await asyncio.to_thread(worker.wait_for, "marking as available", 20)
            await asyncio.to_thread(worker.wait_for, "every model is ready: taking rooms", 5)


async def test_a_server_that_dies_mid_conversation_gets_an_apology_and_the_next_turn_works(speech_server):
    with LlamaCppServer() as llm_server:
        api = start_server(light_settings(llm_server.url, speech_server.url))
        client = await voice_client(api)
        try:
            await client.send({"type": "config", "vad": False, "instructions": "Answer in one short sentence."})
            await client.wait_for("config")
            await client.send({"type": "text", "text": "Say hello."})
            await client.wait_for("response_end", timeout=60)

            llm_server.kill()  # SIGKILL: a crash
            await client.send({"type": "text", "text": "What colour is the sky?"})
            error = (await client.wait_for("error", timeout=30))[0]
            assert error["code"] == "model_server_unavailable", error
            assert f"LLM server at {llm_server.url}" in error["message"] and "Traceback" not in error["message"]
            apology = (await client.wait_for("response_end", 2, timeout=30))[1]
            assert "sorry" in apology["text"].lower(), apology
            health = httpx.get(f"{api.url}/health", timeout=10).json()["components"]["llm"]
            assert health["state"] == "unreachable" and llm_server.url in health["error"], health
            assert httpx.get(f"{api.url}/health/ready", timeout=10).status_code == 503
            # A conversation that starts now (a LiveKit job's get_services) neither reloads nor waits for it.
            api.call(asyncio.wait_for(api.services.start(), 1))
            api.call(asyncio.wait_for(api.services.llm.wait_usable(600), 1))
            assert api.services.llm.state == "unreachable"

            llm_server.restart()
            await until(lambda: api.services.llm.state == "ready", 20, "the server noticed back")
            await client.send({"type": "text", "text": "What colour is the sky?"})
            answer = (await client.wait_for("response_end", 3, timeout=60))[2]
            assert answer["text"] and "sorry" not in answer["text"].lower(), answer
            assert len(client.of("error")) == 1

            # Now it dies in the middle of a reply: what was said stands, the client is told, and the
            # session goes on once the server is back.
            await client.send({"type": "config", "instructions": STORYTELLER})
            await client.wait_for("config", 2)
            heard = len(client.audio_times)
            await client.send({"type": "text", "text": "Tell me a long story about a dragon."})
            await until(lambda: len(client.audio_times) > heard, 60, "the story's first audio")
            llm_server.kill()
            error = (await client.wait_for("error", 2, timeout=30))[1]
            assert error["code"] == "model_server_unavailable" and llm_server.url in error["message"], error
            cut = (await client.wait_for("response_end", 4, timeout=30))[3]
            assert cut["text"] and "sorry" not in cut["text"].lower(), cut  # the story so far, no apology on top
            assert api.services.llm.status()["active"] == 0
            llm_server.restart()
            await client.send({"type": "config", "instructions": "Answer in one short sentence."})
            await client.wait_for("config", 3)
            await client.send({"type": "text", "text": "What colour is grass?"})
            last = (await client.wait_for("response_end", 5, timeout=60))[4]
            assert last["text"] and "sorry" not in last["text"].lower(), last
        finally:
            await client.close()
            stop_server(api)


@pytest.fixture(scope="module")
def double():
    with MisbehavingChatServer(slow_seconds=4.0) as server:
        yield server


@pytest.fixture(scope="module")
def double_api(double, speech_server):
    running = start_server(light_settings(double.url, speech_server.url, remote_retries=2,
                                          remote_read_timeout_s=6.0, llm_first_token_timeout_s=8.0))
    yield running
    stop_server(running)


def chat(api, text: str, *, stream: bool = False, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/chat/completions", timeout=timeout,
                      json={"messages": [{"role": "user", "content": text}], "stream": stream})


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_status_is_retried_a_bounded_number_of_times_then_named(double, double_api, stream):
    double.reset("error_status")
    try:
        response = chat(double_api, "Hello there", stream=stream)
        tries = len(double.requests)
    finally:
        double.reset("ok")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "model_server_error"
    assert error["message"] == f"the LLM server at {double.url} answered 500: model crashed"
    assert tries == 3  # the first try and REMOTE_RETRIES=2 more, no more


def test_a_malformed_stream_gets_a_clear_error_naming_the_server(double, double_api):
    double.reset("malformed")
    try:
        response = chat(double_api, "Hello there", stream=True)
    finally:
        double.reset("ok")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "model_server_error" and double.url in error["message"], error
    assert "Traceback" not in response.text


def test_a_stream_that_stalls_ends_within_the_read_timeout(double, double_api):
    double.reset("hang_after_first")
    try:
        started = time.monotonic()
        response = chat(double_api, "Hello there")
        took = time.monotonic() - started
        double.wait_for_disconnects(1)
    finally:
        double.reset("ok")
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_server_unavailable"
    assert took < 20, took  # REMOTE_READ_TIMEOUT_S=6: nothing hangs (a loose bound, not a benchmark)


async def test_one_slow_server_response_does_not_hold_other_sessions_back(double, double_api):
    double.reset("slow")
    async with httpx.AsyncClient(timeout=30) as http:
        async def ask(text: str) -> tuple[str, float]:
            response = await http.post(f"{double_api.url}/v1/chat/completions",
                                       json={"messages": [{"role": "user", "content": text}]})
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"], time.monotonic()

        slow = asyncio.create_task(ask("a slow question"))
        await until(lambda: double.requests, 10, "the slow question at the model server")  # it waits there
        quick_text, quick_done = await ask("a quick question")
        slow_text, slow_done = await slow
    assert quick_text == "a quick question" and slow_text == "a slow question"
    assert quick_done < slow_done  # answered while the slow one still waited for its first token
