"""A second real client of ``WS /v1/realtime``: LiveKit's own OpenAI Realtime plugin (``livekit-plugins-openai``),
its ``RealtimeModel`` pointed at this server, as the LLM of an ``AgentSession`` that hears spoken audio and
plays the reply on a real-time clock. A spoken turn is answered in audio, and talking over a long reply stops it.
Every server event the plugin receives is checked against the ``openai`` SDK's event models (``realtime_events``)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
from helpers import QUESTION_WORDS, until, words
from livekit.agents import Agent, AgentSession
from livekit.plugins import openai as lk_openai
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from realtime_events import event_mismatch

from bench.offline_io import ClipMicrophone, RecordingSpeaker

RATE = 24000
STORYTELLER = "You are a storyteller. Always answer with a long story of at least eight sentences."


def check_events(model: lk_openai.realtime.RealtimeModel) -> tuple[list[str], list[str]]:
    """(every event type the model's sessions receive, what is wrong with those that are not the API's)."""
    received: list[str] = []
    invalid: list[str] = []

    def check(event: dict) -> None:
        received.append(event.get("type"))
        if (mismatch := event_mismatch(event)) is not None:
            invalid.append(mismatch)

    open_session = model.session

    def session(*args, **kwargs):
        opened = open_session(*args, **kwargs)
        opened.on("openai_server_event_received", check)  # the raw JSON event, as the plugin received it
        return opened

    model.session = session
    return received, invalid


def messages(session: AgentSession, role: str) -> list:
    return [m for m in session.history.items if getattr(m, "role", None) == role]


async def test_livekit_realtime_model_holds_a_spoken_turn_and_a_barge_in(server, question_pcm16k):
    async with aiohttp.ClientSession() as http:
        model = lk_openai.realtime.RealtimeModel(
            base_url=f"{server.url}/v1", api_key="not-needed", model="gemma-local", http_session=http,
            modalities=["audio"], input_audio_transcription=AudioTranscription(model="whisper-1", language="en"),
            turn_detection=ServerVad(type="server_vad", threshold=0.5, silence_duration_ms=300, prefix_padding_ms=300,
                                     create_response=True, interrupt_response=True))
        received, invalid = check_events(model)
        session = AgentSession(llm=model)
        session.input.audio = mic = ClipMicrophone(sample_rate=RATE)
        session.output.audio = speaker = RecordingSpeaker()
        await session.start(Agent(instructions=STORYTELLER))
        try:
            # the one spoken turn: heard, transcribed, answered in audio
            mic.play(question_pcm16k, 16000)
            first = await until(lambda: [m for m in messages(session, "assistant") if m.text_content], 120,
                                "an answer to the spoken question")
            users = messages(session, "user")
            assert users and QUESTION_WORDS <= words(users[0].text_content or ""), users
            await until(lambda: speaker.segments and speaker.segments[0].duration, 30, "answer audio played")
            answer = np.frombuffer(bytes(speaker.audio(speaker.segments[0]).data), "<i2")
            assert len(answer) > speaker.audio(speaker.segments[0]).sample_rate // 2 and np.abs(answer).max() > 1000
            assert first[0].text_content.strip()

            # the story goes on for a while; the user talks over it, the reply stops and the question is answered
            await until(lambda: session.agent_state == "listening", 120, "the first answer played out")
            session.generate_reply(user_input="Tell me a long story about a brave knight and a dragon.")
            await until(lambda: session.agent_state == "speaking", 120, "the story starts")
            await asyncio.sleep(2.0)
            story = len(messages(session, "assistant"))
            mic.play(question_pcm16k, 16000)
            [cut] = await until(lambda: [m for m in messages(session, "assistant")[story:] if m.interrupted], 60,
                                "the story interrupted")
            # How soon it stops is bench.realtime_latency's to measure (a bound here measured the machine); what
            # must hold is that the story was cut, and the question answered after it.
            answered = await until(lambda: [m for m in messages(session, "assistant")[story:] if not m.interrupted],
                                   120, "the question after the barge-in answered")
            replies = messages(session, "assistant")
            assert replies.index(cut) < replies.index(answered[0]), [(m.interrupted, m.text_content) for m in replies]
        finally:
            await session.aclose()
    assert "session.created" in received and "response.done" in received, received
    assert not invalid, invalid
