"""Whole agent sessions over the real models, driven without a LiveKit server.

Audio goes in through a real-time microphone stand-in and comes out into a recording speaker
(``app.agents.offline_io``): VAD -> Whisper -> LLM -> TTS run exactly as they would in a room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent_helpers import transcribe
from helpers import QUESTION, QUESTION_WORDS, words

from app.agents.offline_io import ClipMicrophone, RecordingSpeaker
from app.agents.plugins import GemmaLLM
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def messages(session, role: str):
    return [item for item in session.history.items if item.type == "message" and item.role == role]


async def test_text_turn_with_no_arguments(services):
    async with create_agent_session() as session:
        await session.start(GemmaVoiceAgent())
        result = await session.run(user_input=QUESTION)

    reply = result.expect.next_event().is_message(role="assistant")
    assert reply.event().item.text_content.strip()
    result.expect.no_more_events()


async def test_spoken_question_gets_a_spoken_answer(services, question_pcm):
    # Greedy decoding: the same (English) answer every time.
    session = create_agent_session(services, llm=GemmaLLM(services=services, temperature=0.0))
    session.input.audio = mic = ClipMicrophone(sample_rate=48000)
    session.output.audio = speaker = RecordingSpeaker(speed=4.0)  # nothing to listen to here
    async with session:
        await session.start(GemmaVoiceAgent())
        await asyncio.sleep(0.5)  # an open microphone: silence before the user speaks
        mic.play(*question_pcm)
        await until(lambda: speaker.segments and speaker.segments[0].interrupted is not None, 120,
                    "the reply to be spoken")

        assert speaker.segments[0].interrupted is False
        assert QUESTION_WORDS <= words(messages(session, "user")[0].text_content)
        # The framework files the reply in the history after the playout ends, a moment later.
        await until(lambda: messages(session, "assistant"), 30, "the reply in the history")
        reply_text = messages(session, "assistant")[0].text_content

    heard = await transcribe(services, speaker.segments[0].audio())
    assert len(words(heard)) >= 2, heard  # real speech came out, not noise
    # What was said is what the LLM wrote.
    assert len(words(heard) & words(reply_text)) >= 0.5 * len(words(heard)), (heard, reply_text)


async def test_user_speech_interrupts_the_reply(services, question_pcm):
    story_request = await services.tts.synthesize("Tell me a long story about a brave little dragon.")
    # No echo to guard against here, so barge-in works from the first word of the reply.
    # Greedy decoding: a long story every time, so the reply is surely still playing.
    session = create_agent_session(services, llm=GemmaLLM(services=services, temperature=0.0),
                                   aec_warmup_duration=None)
    session.input.audio = mic = ClipMicrophone()
    session.output.audio = speaker = RecordingSpeaker()
    async with session:
        await session.start(GemmaVoiceAgent(
            instructions="You are a storyteller. Always answer with a long story of at least eight sentences."))
        await asyncio.sleep(0.5)
        mic.play(story_request, services.tts.sample_rate)
        await until(lambda: speaker.segments, 120, "the reply to start")
        # Let a few words play first: a reply cut before any of it was heard leaves nothing in the history.
        await asyncio.sleep(1.0)
        mic.play(*question_pcm)  # the user talks over the agent
        await until(lambda: speaker.segments[0].interrupted is not None, 60, "the reply to stop")

        assert speaker.segments[0].interrupted is True
        assert speaker.clear_count >= 1
        await until(lambda: messages(session, "assistant"), 30, "the cut reply in the history")
        assert messages(session, "assistant")[0].interrupted
        # What interrupted it is the user's next turn.
        await until(lambda: len(messages(session, "user")) == 2, 60, "the interruption to be transcribed")
        assert QUESTION_WORDS <= words(messages(session, "user")[1].text_content)
