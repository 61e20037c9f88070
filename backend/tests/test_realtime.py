"""``WS /v1/realtime`` driven with the official ``openai`` SDK's realtime client (``client.realtime.connect``),
against a real server with the embedded models.

Every server event a test receives is also checked against the SDK's own event models, field for field: the GA API's,
or the beta API's for a beta session (``realtime_events.event_mismatch``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
import websockets
from helpers import QUESTION_WORDS, STRICT_KEY, until, words
from openai import AsyncOpenAI
from realtime_events import event_mismatch

from app.audio.codec import G711_RATE, decode_audio, float_to_pcm16, g711_decode, g711_encode, pcm16_to_float, resample_pcm

RATE = 24000
CHUNK = RATE // 10 * 2  # 100 ms of PCM16
SHORT = "Answer in one short sentence."
STORYTELLER = "You are a storyteller. Always answer with a long story of at least eight sentences."
STORY = "Tell me a long story about a brave knight and a dragon."


class Realtime:
    """The SDK's connection, with a reader that keeps every server event (as a dict, with ``_t``: when it came) and
    lists in ``invalid`` those that are not the API's (the beta API's when ``beta``)."""

    def __init__(self, conn, *, beta: bool = False):
        self.conn = conn
        self.beta = beta
        self.events: list[dict] = []
        self.invalid: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            while True:
                raw = await self.conn.recv_bytes()
                event = json.loads(raw)
                if (mismatch := event_mismatch(event, beta=self.beta)) is not None:
                    self.invalid.append(mismatch)
                if not self.beta:  # the SDK's own parser (GA) reads it as the same event
                    assert self.conn.parse_event(raw).type == event["type"]
                event["_t"] = time.perf_counter()
                self.events.append(event)
        except websockets.ConnectionClosed:
            pass

    def of(self, kind: str, **match) -> list[dict]:
        return [e for e in self.events if e["type"] == kind and all(_get(e, k) == v for k, v in match.items())]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 90, **match) -> list[dict]:
        await until(lambda: len(self.of(kind, **match)) >= count, timeout,
                    lambda: f"{count} {kind!r} {match or ''}; got {self.summary()}")
        return self.of(kind, **match)

    def summary(self) -> list[str]:
        return [e["type"] + (f" ({e['error']['code']})" if e["type"] == "error" else "")
                for e in self.events if not e["type"].endswith(".delta")]

    def index(self, event: dict) -> int:
        return next(i for i, e in enumerate(self.events) if e is event)

    async def speak(self, pcm: bytes, *, speed: float = 1.0, trailing_silence_s: float = 1.0):
        """Microphone audio in 100 ms appends, paced as a microphone would send it (``speed`` times faster)."""
        silence = b"\0" * CHUNK
        for chunk in [pcm[i:i + CHUNK] for i in range(0, len(pcm), CHUNK)] + [silence] * int(trailing_silence_s * 10):
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            await asyncio.sleep(0.1 / speed)

    async def update(self, **session):
        await self.conn.session.update(session={"type": "realtime", **session})
        count = len(self.of("session.updated"))
        return (await self.wait_for("session.updated", count + 1))[-1]["session"]

    async def say(self, text: str):
        count = len(self.of("conversation.item.added"))
        await self.conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
        return (await self.wait_for("conversation.item.added", count + 1))[-1]["item"]

    async def respond(self, **response) -> dict:
        """response.create, then the whole response: its response.done event."""
        count = len(self.of("response.created"))
        await self.conn.response.create(**({"response": response} if response else {}))
        created = (await self.wait_for("response.created", count + 1))[-1]["response"]
        return (await self.wait_for("response.done", timeout=120, **{"response.id": created["id"]}))[0]["response"]

    def close(self):
        self._reader.cancel()


def _get(event: dict, dotted: str):
    value = event
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def connect(server, key: str = "not-needed", **kwargs):
    client = AsyncOpenAI(api_key=key, base_url=f"{server.url}/v1")
    return client.realtime.connect(model="gemma-local", **kwargs)


@pytest.fixture
async def rt(server):
    async with connect(server) as conn:
        client = Realtime(conn)
        await client.wait_for("session.created")
        yield client
        client.close()
    assert not client.invalid, client.invalid  # every event is one the SDK's models accept


@pytest.fixture(scope="session")
def question_pcm24k(question_wav) -> bytes:
    """The spoken question as a Realtime client sends it: PCM16 mono at 24 kHz."""
    return float_to_pcm16(decode_audio(question_wav, target_rate=RATE))


def conversation(server, rt):
    """The server's side of this client's session."""
    return server.app.state.voice_conversations[rt.of("session.created")[0]["session"]["id"]]


def chat_text(server, rt, item_id: str) -> tuple[str | None, bool]:
    """The text (and ``interrupted``) of the item's message in the agent's chat context: what the model reads."""
    conv = conversation(server, rt)
    chat_id = conv.items.by_id[item_id].chat_id
    message = conv.engine.chat_ctx.get_by_id(chat_id) if chat_id else None
    return (message.text_content.strip(), message.interrupted) if message is not None else (None, False)


def response_events(rt, response_id: str) -> list[dict]:
    return [e for e in rt.events if e.get("response_id") == response_id or _get(e, "response.id") == response_id]


def audio_of(rt, response_id: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in rt.of("response.output_audio.delta", response_id=response_id))


async def server_transcribe(server, pcm: bytes, rate: int = RATE) -> str:
    audio = pcm16_to_float(resample_pcm(bytes(pcm), rate, 16000))
    return server.call(server.services.stt.transcribe(audio, language="en"), timeout=60).text


def in_order(rt, *kinds: str) -> list[int]:
    """Where each kind first comes; they must come in this order."""
    types = [e["type"] for e in rt.events]
    missing = [k for k in kinds if k not in types]
    assert not missing, (missing, rt.summary())
    positions = [types.index(k) for k in kinds]
    assert positions == sorted(positions), list(zip(kinds, positions))
    return positions


async def test_session_created_then_updated(rt):
    session = rt.events[0]["session"]
    assert rt.events[0]["type"] == "session.created"
    assert session["type"] == "realtime" and session["model"] == "gemma-local"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] is None
    updated = await rt.update(instructions=SHORT, output_modalities=["text"], max_output_tokens=4096,
                              audio={"input": {"transcription": {"model": "whisper-1", "language": "en"},
                                               "turn_detection": {"type": "server_vad", "threshold": 0.6,
                                                                  "silence_duration_ms": 400}},
                                     "output": {"voice": "marin", "format": {"type": "audio/pcmu"}}})
    assert updated["instructions"] == SHORT and updated["output_modalities"] == ["text"]
    assert updated["max_output_tokens"] == 120  # VOICE_MAX_REPLY_TOKENS: the most the context window keeps room for
    assert updated["audio"]["input"]["transcription"]["language"] == "en"
    assert updated["audio"]["input"]["turn_detection"]["threshold"] == 0.6
    assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert updated["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0}
    vad = await rt.update(audio={"input": {"turn_detection": None}})
    assert vad["audio"]["input"]["turn_detection"] is None and vad["instructions"] == SHORT


async def test_spoken_question_gets_a_spoken_and_transcribed_answer(server, rt, question_pcm24k):
    await rt.update(instructions=SHORT, max_output_tokens=40,
                    audio={"input": {"transcription": {"model": "whisper-1"}}})
    await rt.speak(question_pcm24k, speed=2.0, trailing_silence_s=1.0)
    done = (await rt.wait_for("response.done", timeout=120))[0]["response"]
    assert done["status"] == "completed", done

    in_order(rt, "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added", "response.created",
             "response.output_item.added", "response.content_part.added", "response.output_audio.delta",
             "response.output_audio_transcript.delta", "response.output_audio.done",
             "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
             "response.done")
    # The user item: one id from the end of speech to its transcript.
    committed = rt.of("input_audio_buffer.committed")[0]
    stopped = [e for e in rt.of("input_audio_buffer.speech_stopped") if e["_t"] <= committed["_t"]][-1]
    user_item = rt.of("conversation.item.added")[0]["item"]
    transcript = rt.of("conversation.item.input_audio_transcription.completed")[0]
    assert stopped["item_id"] == committed["item_id"] == user_item["id"] == transcript["item_id"]
    assert user_item["role"] == "user" and user_item["content"][0]["type"] == "input_audio"
    assert QUESTION_WORDS <= words(transcript["transcript"]), transcript["transcript"]

    # The answer: one response, one assistant item after the user's, its audio and the words spoken in it.
    response_id = done["id"]
    item_id = rt.of("response.output_item.added")[0]["item"]["id"]
    assistant = rt.of("conversation.item.added")[1]
    assert assistant["item"]["id"] == item_id and assistant["previous_item_id"] == user_item["id"]
    for event in rt.events[rt.index(rt.of("response.created")[0]):]:
        if event["type"].startswith("response."):
            assert event.get("response_id", response_id) == response_id and event.get("item_id", item_id) == item_id
    said = "".join(e["delta"] for e in rt.of("response.output_audio_transcript.delta"))
    assert said.strip() and said == rt.of("response.output_audio_transcript.done")[0]["transcript"]
    assert done["output"][0]["content"][0] == {"type": "output_audio", "transcript": said}
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    audio = audio_of(rt, response_id)
    assert len(audio) > RATE  # over half a second of PCM16 at 24 kHz
    heard = words(await server_transcribe(server, audio))
    spoken = {w for w in words(said) if len(w) > 2}
    assert len(heard & spoken) >= len(spoken) / 2, (heard, spoken)  # the audio says the transcript's words

    # What the model reads next: the question and the answer.
    assert QUESTION_WORDS <= words(chat_text(server, rt, user_item["id"])[0])
    assert chat_text(server, rt, item_id) == (said.strip(), False)


async def test_text_turn_in_audio_and_in_text(server, rt):
    await rt.update(instructions=SHORT, max_output_tokens=30)
    user = await rt.say("What colour is the sky?")
    assert user["role"] == "user" and user["content"] == [{"type": "input_text", "text": "What colour is the sky?"}]
    first = await rt.respond()
    assert first["status"] == "completed" and first["output_modalities"] == ["audio"]
    assert len(audio_of(rt, first["id"])) > RATE
    spoken = first["output"][0]["content"][0]["transcript"]
    assert spoken

    follow_up = await rt.say("Say it again in other words.")
    second = await rt.respond(output_modalities=["text"], max_output_tokens=20)
    assert second["status"] == "completed" and second["output_modalities"] == ["text"]
    events = response_events(rt, second["id"])
    assert not [e for e in events if e["type"].startswith("response.output_audio")]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text.strip() and rt.of("response.output_text.done", response_id=second["id"])[0]["text"] == text
    assert second["output"][0]["content"] == [{"type": "output_text", "text": text}]
    assert second["usage"]["output_tokens"] <= 20

    # The chat context holds the four turns, in order.
    conv = conversation(server, rt)
    turns = [(m.role, m.text_content.strip()) for m in conv.engine.chat_ctx.items
             if getattr(m, "role", None) in ("user", "assistant")]
    assert turns == [("user", "What colour is the sky?"), ("assistant", spoken.strip()),
                     ("user", "Say it again in other words."), ("assistant", text.strip())]
    assert conv.items.order == [user["id"], first["output"][0]["id"], follow_up["id"], second["output"][0]["id"]]


async def test_items_create_retrieve_and_delete(server, rt, question_pcm24k):
    await rt.update(audio={"input": {"transcription": {"model": "whisper-1"}}})
    name = await rt.say("My name is Ada.")
    await rt.conn.conversation.item.create(item={"type": "message", "role": "assistant",
                                                 "content": [{"type": "output_text", "text": "Hello Ada."}]})
    await rt.conn.conversation.item.create(previous_item_id="root", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "First of all."}]})
    await rt.conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_audio", "audio": base64.b64encode(question_pcm24k).decode()}]})
    transcript = (await rt.wait_for("conversation.item.input_audio_transcription.completed", timeout=60))[0]
    created = rt.of("conversation.item.added")
    assert [e["previous_item_id"] for e in created] == [None, name["id"], None, created[1]["item"]["id"]]
    assert created[3]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert transcript["item_id"] == created[3]["item"]["id"] and QUESTION_WORDS <= words(transcript["transcript"])

    def chat() -> list[tuple[str, str]]:
        return [(m.role, m.text_content) for m in conversation(server, rt).engine.chat_ctx.items
                if getattr(m, "role", None) in ("user", "assistant")]

    assert chat()[:3] == [("user", "First of all."), ("user", "My name is Ada."), ("assistant", "Hello Ada.")]
    assert QUESTION_WORDS <= words(chat()[3][1]) and len(chat()) == 4

    await rt.conn.conversation.item.retrieve(item_id=name["id"])
    assert (await rt.wait_for("conversation.item.retrieved"))[0]["item"] == name
    await rt.conn.conversation.item.delete(item_id=name["id"])
    assert (await rt.wait_for("conversation.item.deleted"))[0]["item_id"] == name["id"]
    assert ("user", "My name is Ada.") not in chat() and len(chat()) == 3
    await rt.conn.conversation.item.retrieve(item_id=name["id"])
    assert (await rt.wait_for("error"))[0]["error"]["code"] == "item_not_found"


async def wait_for_unplayed_audio(rt, response_id: str, seconds: float, timeout: float = 90) -> float:
    """Wait until the client holds ``seconds`` of the reply it has not played yet (it plays from the first
    delta, in real time); returns when the first delta came."""
    first = (await rt.wait_for("response.output_audio.delta", timeout=timeout, response_id=response_id))[0]["_t"]

    def enough_unplayed() -> bool:
        received = len(audio_of(rt, response_id)) / 2 / RATE
        if received - (time.perf_counter() - first) >= seconds:
            return True
        assert not rt.of("response.done", **{"response.id": response_id}), \
            f"the reply was too short for this test: {received:.1f} s"
        return False

    await until(enough_unplayed, timeout, f"{seconds} s of the reply unplayed")
    return first


async def test_barge_in_with_truncate_keeps_only_what_was_played(server, rt, question_pcm24k):
    await rt.update(instructions=STORYTELLER, audio={"input": {"transcription": {"model": "whisper-1"}}})
    await rt.say(STORY)
    await rt.conn.response.create()
    story = (await rt.wait_for("response.created"))[0]["response"]["id"]
    first_audio = await wait_for_unplayed_audio(rt, story, 4.0)
    await asyncio.sleep(1.0)  # a few words played

    # The user talks over the reply; the client stops playing at speech_started and says how far it got.
    speaking = asyncio.create_task(rt.speak(question_pcm24k, trailing_silence_s=1.0))
    started = (await rt.wait_for("input_audio_buffer.speech_started", timeout=30))[0]
    received_ms = len(audio_of(rt, story)) / 2 / RATE * 1000
    played_ms = int(min((started["_t"] - first_audio) * 1000, received_ms))
    item_id = rt.of("response.output_item.added", response_id=story)[0]["item"]["id"]
    await rt.conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played_ms)
    truncated = (await rt.wait_for("conversation.item.truncated"))[0]
    assert truncated["item_id"] == item_id and truncated["audio_end_ms"] == played_ms
    done = (await rt.wait_for("response.done", **{"response.id": story}))[0]["response"]
    assert done["status"] == "cancelled" and done["output"][0]["status"] == "incomplete"
    await speaking

    # The question is heard and answered after the barge-in.
    transcript = (await rt.wait_for("conversation.item.input_audio_transcription.completed", timeout=60))[0]
    assert "spider" in words(transcript["transcript"])
    answer = (await rt.wait_for("response.done", 2, timeout=120))[1]["response"]
    assert answer["status"] == "completed"

    # The model reads only the part of the story that was played: a few words of a long reply.
    kept, interrupted = chat_text(server, rt, item_id)
    sent = "".join(e["delta"] for e in rt.of("response.output_audio_transcript.delta", response_id=story))
    full = await server_transcribe(server, audio_of(rt, story))
    assert interrupted and kept and sent.strip().startswith(kept)
    assert len(kept.split()) < 0.6 * len(full.split()), (kept, full)
    assert conversation(server, rt).items.by_id[item_id].content[0]["transcript"] == kept


async def test_barge_in_without_truncate_is_the_engine_s(server, rt, question_pcm24k):
    """A client that only listens: the engine stops the reply when the user's words are heard, and keeps
    what was played on its own playback clock."""
    await rt.update(instructions=STORYTELLER, audio={"input": {"transcription": {"model": "whisper-1"}}})
    await rt.say(STORY)
    await rt.conn.response.create()
    story = (await rt.wait_for("response.created"))[0]["response"]["id"]
    await wait_for_unplayed_audio(rt, story, 4.0)
    await asyncio.sleep(1.0)
    await rt.speak(question_pcm24k, trailing_silence_s=1.0)
    done_event = (await rt.wait_for("response.done", timeout=60, **{"response.id": story}))[0]
    assert done_event["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert rt.index(rt.of("input_audio_buffer.speech_started")[0]) < rt.index(done_event)
    answer = (await rt.wait_for("response.done", 2, timeout=120))[1]["response"]
    assert answer["status"] == "completed"
    assert "spider" in words(rt.of("conversation.item.input_audio_transcription.completed")[0]["transcript"])
    item_id = done_event["response"]["output"][0]["id"]
    kept, interrupted = chat_text(server, rt, item_id)
    full = await server_transcribe(server, audio_of(rt, story))
    assert interrupted and 0 < len(kept.split()) < 0.6 * len(full.split()), (kept, full)


async def test_response_cancel_stops_the_reply(server, rt):
    await rt.update(instructions=STORYTELLER)
    await rt.say(STORY)
    await rt.conn.response.create()
    story = (await rt.wait_for("response.created"))[0]["response"]["id"]
    await rt.wait_for("response.output_audio.delta", response_id=story)
    await rt.conn.response.cancel()
    done_event = (await rt.wait_for("response.done", **{"response.id": story}))[0]
    done = done_event["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"

    # The session goes on; nothing of the cancelled response comes after its response.done.
    await rt.update(instructions=SHORT, max_output_tokens=20)
    await rt.say("Say hello.")
    assert (await rt.respond(output_modalities=["text"]))["status"] == "completed"
    after = rt.events[rt.index(done_event) + 1:]
    assert not [e["type"] for e in after if e.get("response_id") == story or _get(e, "response.id") == story]
    assert not rt.of("error")
    kept, interrupted = chat_text(server, rt, done["output"][0]["id"])
    assert kept is None or interrupted  # what was heard of it, if anything, is filed as interrupted


async def test_manual_commit_with_server_vad_off(server, rt, question_pcm24k):
    updated = await rt.update(instructions=SHORT, max_output_tokens=30,
                              audio={"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}})
    assert updated["audio"]["input"]["turn_detection"] is None

    # A buffer that is cleared commits nothing.
    await rt.conn.input_audio_buffer.append(audio=base64.b64encode(question_pcm24k[:CHUNK * 5]).decode())
    await rt.conn.input_audio_buffer.clear()
    await rt.wait_for("input_audio_buffer.cleared")
    await rt.conn.input_audio_buffer.commit()
    assert (await rt.wait_for("error"))[0]["error"]["code"] == "input_audio_buffer_commit_empty"

    # The whole question at once, faster than real time; nothing happens until the commit.
    for i in range(0, len(question_pcm24k), CHUNK * 10):
        await rt.conn.input_audio_buffer.append(audio=base64.b64encode(question_pcm24k[i:i + CHUNK * 10]).decode())
    await rt.conn.input_audio_buffer.commit()
    transcript = (await rt.wait_for("conversation.item.input_audio_transcription.completed", timeout=60))[0]
    in_order(rt, "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.input_audio_transcription.completed")
    item = rt.of("conversation.item.added")[0]["item"]
    assert rt.of("input_audio_buffer.committed")[0]["item_id"] == item["id"] == transcript["item_id"]
    assert QUESTION_WORDS <= words(transcript["transcript"])
    assert not rt.of("input_audio_buffer.speech_started") and not rt.of("response.created")

    # The client asks for the answer.
    done = await rt.respond()
    assert done["status"] == "completed" and audio_of(rt, done["id"])
    assert len(rt.of("response.created")) == 1 and len(rt.of("error")) == 1  # no answer of the server's own
    assert QUESTION_WORDS <= words(chat_text(server, rt, item["id"])[0])


async def test_commit_with_server_vad_on_ends_the_turn(server, rt, question_pcm24k):
    """A push-to-talk client that keeps server VAD on: commit ends the turn before the VAD hears a pause."""
    await rt.update(instructions=SHORT, max_output_tokens=20, output_modalities=["text"],
                    audio={"input": {"transcription": {"model": "whisper-1"}}})
    await rt.speak(question_pcm24k[:-RATE // 4 * 2], speed=2.0, trailing_silence_s=0)  # no pause at the end
    await rt.conn.input_audio_buffer.commit()
    done = (await rt.wait_for("response.done", timeout=120))[0]["response"]
    assert done["status"] == "completed"
    in_order(rt, "input_audio_buffer.speech_started", "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.input_audio_transcription.completed", "response.created", "response.done")
    assert QUESTION_WORDS <= words(rt.of("conversation.item.input_audio_transcription.completed")[0]["transcript"])
    assert len(rt.of("response.created")) == 1


async def test_bad_events_get_errors_and_the_session_goes_on(server, rt):
    bad = [
        "not json {",
        "[1, 2]",
        {"type": "dance"},
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}}}}},
        {"type": "session.update", "session": {"type": "transcription"}},
        {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 0}},
        {"type": "input_audio_buffer.append", "audio": "%%%not-base64%%%"},
        {"type": "conversation.item.create", "item": {"type": "function_call", "name": "f", "arguments": "{}"}},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "\ud800"}]}},
        {"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 10},
        {"type": "conversation.item.delete", "item_id": "item_nope"},
        {"type": "response.cancel"},
        {"type": "response.create", "response": {"conversation": "none"}},
        {"type": "dance", "event_id": "evt_mine"},
    ]
    for event in bad:
        await rt.conn.send_raw(event if isinstance(event, str) else json.dumps(event))
    await rt.conn.send_raw(b"\x00\x01binary")
    errors = await rt.wait_for("error", len(bad) + 1)
    assert [e["error"]["code"] for e in errors] == [
        "invalid_json", "invalid_event", "invalid_event", "invalid_value", "invalid_value", "invalid_value",
        "invalid_value", "invalid_value", "bad_text", "item_not_found", "item_not_found",
        "response_cancel_not_active", "invalid_value", "invalid_event", "invalid_event"]
    assert all(e["error"]["type"] == "invalid_request_error" and e["error"]["message"] for e in errors)
    assert errors[3]["error"]["param"] == "session.audio.input.format.rate"
    assert errors[-2]["error"]["event_id"] == "evt_mine"
    assert not rt.of("session.updated")  # a refused update changes nothing

    await rt.update(instructions=SHORT, max_output_tokens=20)
    await rt.say("Say hello.")
    assert (await rt.respond(output_modalities=["text"]))["status"] == "completed"
    assert len(rt.of("error")) == len(bad) + 1


async def test_vanishing_client_leaves_no_work_behind(server):
    llm = server.services.llm
    async with connect(server) as conn:
        client = Realtime(conn)
        await client.wait_for("session.created")
        await conn.session.update(session={"type": "realtime", "instructions": STORYTELLER})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": STORY}]})
        await conn.response.create()
        await client.wait_for("response.output_audio.delta")  # the reply is speaking: now vanish
        conn._connection.transport.abort()
        client.close()
    await until(lambda: not (llm.status()["active"] or server.app.state.voice_conversations), 10,
                "the conversation and its generation to end")
    assert llm.status()["active"] == 0
    assert not server.app.state.voice_conversations
    assert not server.call(_realtime_tasks())
    assert not client.invalid, client.invalid


async def _realtime_tasks():
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("realtime-writer-")]


async def test_bearer_key(strict_server):
    async with connect(strict_server, key=STRICT_KEY) as conn:
        client = Realtime(conn)
        assert (await client.wait_for("session.created"))[0]["session"]["type"] == "realtime"
        client.close()
    assert not client.invalid, client.invalid
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(strict_server, key="wrong-key") as conn:
            await conn.recv()
    assert refused.value.response.status_code == 403


async def test_realtime_and_conversation_ws_share_the_session_limit(server):
    settings = server.services.settings
    limit = settings.max_voice_sessions
    async with connect(server) as conn:
        client = Realtime(conn)
        await client.wait_for("session.created")
        settings.max_voice_sessions = len(server.app.state.voice_conversations)
        try:
            async with websockets.connect(f"{server.ws_url}/v1/conversation/ws") as ws:
                assert json.loads(await ws.recv())["code"] == "too_many_sessions"
            async with connect(server) as second:
                refused = json.loads(await second.recv_bytes())
                assert refused["type"] == "error" and refused["error"]["code"] == "too_many_sessions"
                assert event_mismatch(refused) is None, event_mismatch(refused)
        finally:
            settings.max_voice_sessions = limit
        client.close()
    assert not client.invalid, client.invalid


async def test_beta_clients_get_beta_names_and_g711(server, question_pcm24k):
    headers = {"OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(f"{server.ws_url}/v1/realtime?model=gemma-local", additional_headers=headers,
                                  max_size=None) as ws:
        client = Realtime(_RawConnection(ws), beta=True)
        created = (await client.wait_for("session.created"))[0]["session"]
        assert created["input_audio_format"] == "pcm16" and created["modalities"] == ["text", "audio"]
        await ws.send(json.dumps({"type": "session.update", "session": {
            "instructions": SHORT, "max_response_output_tokens": 20, "output_audio_format": "g711_ulaw",
            "turn_detection": None, "input_audio_transcription": {"model": "whisper-1"}}}))
        updated = (await client.wait_for("session.updated"))[0]["session"]
        assert updated["output_audio_format"] == "g711_ulaw" and updated["turn_detection"] is None
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        done = (await client.wait_for("response.done", timeout=120))[0]["response"]

        # The other events, in their beta shapes: a committed utterance and its transcript, an item retrieved,
        # truncated and deleted, a cleared buffer and a refused event.
        for i in range(0, len(question_pcm24k), CHUNK * 10):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(question_pcm24k[i:i + CHUNK * 10]).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await client.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
        reply = done["output"][0]["id"]
        for event in ({"type": "conversation.item.retrieve", "item_id": reply},
                      {"type": "conversation.item.truncate", "item_id": reply, "content_index": 0, "audio_end_ms": 200},
                      {"type": "conversation.item.delete", "item_id": reply},
                      {"type": "input_audio_buffer.clear"}, {"type": "no.such.event"}):
            await ws.send(json.dumps(event))
        for kind in ("conversation.item.retrieved", "conversation.item.truncated", "conversation.item.deleted",
                     "input_audio_buffer.cleared", "error"):
            await client.wait_for(kind, timeout=30)
        client.close()
    assert not client.invalid, client.invalid  # every event is one the beta SDK's models accept
    assert {"input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"} <= \
        {e["type"] for e in client.events}
    assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "audio"
    types = {e["type"] for e in client.events}
    assert {"response.audio.delta", "response.audio_transcript.delta", "response.audio.done",
            "response.audio_transcript.done"} <= types
    assert not {t for t in types if t.startswith("response.output_audio")}
    assert "conversation.item.created" in types and not {"conversation.item.added", "conversation.item.done"} & types
    ulaw = b"".join(base64.b64decode(e["delta"]) for e in client.of("response.audio.delta"))
    pcm = np.frombuffer(g711_decode(ulaw, "ulaw"), "<i2")
    assert len(pcm) > G711_RATE // 2 and np.abs(pcm).max() > 1000  # over half a second at 8 kHz, not silence


class _RawConnection:
    """A plain websockets connection with the two calls the ``Realtime`` reader uses."""

    def __init__(self, ws):
        self.ws = ws

    async def recv_bytes(self) -> bytes:
        message = await self.ws.recv()
        return message.encode() if isinstance(message, str) else message


def test_g711_matches_the_standard():
    """The app's G.711 (FFmpeg's codecs) against the reference tables of ``audioop`` (the standard library up to
    Python 3.12, audioop-lts after): decoding is the standard's exactly; encoding picks the standard's level for
    nearly every sample, else the level next to it (FFmpeg and the reference round differently at segment edges)."""
    import audioop  # noqa: PLC0415 - audioop-lts on Python 3.13+ (a dev dependency), deprecated stdlib before

    samples = np.arange(-32768, 32768, dtype="<i2")
    codes = bytes(range(256))
    for law, reference_encode, reference_decode in (("ulaw", audioop.lin2ulaw, audioop.ulaw2lin),
                                                    ("alaw", audioop.lin2alaw, audioop.alaw2lin)):
        assert g711_decode(codes, law) == reference_decode(codes, 2), law
        levels = np.frombuffer(reference_decode(codes, 2), "<i2").astype(np.int32)
        ours = np.frombuffer(g711_encode(samples.tobytes(), law), np.uint8)
        standard = np.frombuffer(reference_encode(samples.tobytes(), 2), np.uint8)
        assert len(ours) == len(samples)
        rank = {level: i for i, level in enumerate(sorted(set(levels.tolist())))}
        steps = np.abs(np.vectorize(rank.get)(levels[ours]) - np.vectorize(rank.get)(levels[standard]))
        assert steps.max() <= 1, law
        assert np.mean(ours == standard) > 0.98, law
