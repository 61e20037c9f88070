"""The engine's door (``app.engine.VoiceEngine``): options that stand, and one response's options that undo
themselves, on the real session and plugins the socket transports use."""

from __future__ import annotations

import asyncio

from app.engine import ListenerPlayout, VoiceEngine


async def test_an_override_lasts_one_response_and_undo_returns_to_the_options_that_stand(services):
    engine = VoiceEngine(services, name="engine-test", speaker=ListenerPlayout(label="engine-test-speaker"),
                         on_text=lambda _text: None)
    llm, tts, stt = engine._session.llm, engine._tts(), engine._stt()
    standing_instructions = engine._agent.instructions
    await engine.configure(temperature=0.3, max_tokens=40, voice="standing-voice", language="de",
                           stt_prompt="Gemma")
    assert (llm.temperature, llm.max_tokens, tts.voice) == (0.3, 40, "standing-voice")
    assert (stt._options.language, stt._options.prompt) == ("de", "Gemma")

    override = await engine.override(temperature=1.5, max_tokens=5, voice="one-response-voice",
                                     instructions="Answer in one word.")
    assert (llm.temperature, llm.max_tokens, tts.voice) == (1.5, 5, "one-response-voice")
    assert engine._agent.instructions == "Answer in one word."

    # The conversation changes what stands while that response runs: undo returns to the new options.
    await engine.configure(temperature=0.7)
    override.undo()
    await asyncio.gather(*engine._tasks)  # (the instructions go back in a task: undo runs in a callback)
    assert (llm.temperature, llm.max_tokens, tts.voice) == (0.7, 40, "standing-voice")
    assert engine._agent.instructions == standing_instructions
    assert stt._options.language == "de"  # an override leaves the STT alone

    override.undo()  # a second undo changes nothing
    assert (llm.temperature, llm.max_tokens, tts.voice) == (0.7, 40, "standing-voice")
    await engine.aclose()


async def test_an_override_of_nothing_changes_nothing(services):
    engine = VoiceEngine(services, name="engine-test", speaker=ListenerPlayout(label="engine-test-speaker"),
                         on_text=lambda _text: None)
    llm, tts = engine._session.llm, engine._tts()
    before = (llm.temperature, llm.max_tokens, tts.voice, engine._agent.instructions)
    (await engine.override()).undo()
    assert (llm.temperature, llm.max_tokens, tts.voice, engine._agent.instructions) == before
    await engine.aclose()
