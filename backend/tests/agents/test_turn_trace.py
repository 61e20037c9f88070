"""The agent's turn trace (``app.agents.turn_trace``), which bench.room_latency's hop table reads: one line per
answered turn, its moments in the order a turn makes them, on the clock the benchmark's user keeps."""

from __future__ import annotations

import asyncio
import json
import time

from agent_helpers import until

from app.agents.plugins import GemmaLLM
from app.agents.turn_trace import TurnTrace
from app.agents.voice_agent import GemmaVoiceAgent, create_agent_session
from bench.offline_io import ClipMicrophone, RecordingSpeaker


async def test_each_answered_turn_writes_its_moments_in_order(services, question_pcm, tmp_path):
    path = tmp_path / "turns.jsonl"
    session = create_agent_session(services, llm=GemmaLLM(services=services, temperature=0.0))
    session.input.audio = mic = ClipMicrophone(sample_rate=48000)
    session.output.audio = speaker = RecordingSpeaker(speed=4.0)
    trace = TurnTrace(session, path)
    agent = GemmaVoiceAgent()
    agent.on_moment = trace.mark
    async with session:
        await session.start(agent)
        trace.tap_input()
        await asyncio.sleep(0.5)  # an open microphone: silence before the user speaks
        clip = mic.play(*question_pcm)
        await until(lambda: path.exists() and path.read_text().strip(), 120, "the turn's trace line")
        await until(lambda: speaker.segments, 30, "the reply's first frame")

    (line,) = path.read_text().splitlines()
    moments = json.loads(line)
    order = ["last_voiced_received", "vad_end", "final_transcript", "audio_to_track"]
    assert [moments[m] for m in order] == sorted(moments[m] for m in order), moments
    assert moments["llm_first_token"] <= moments["llm_first_piece"] <= moments["tts_first_audio"] \
        <= moments["audio_to_track"], moments
    # On the harness's own clock (perf_counter, as a benchmark's user in another process keeps it): the user's
    # voice ended, then the agent heard it end, then its reply went out, all before now.
    assert clip.speech_ended_at < moments["vad_end"] < moments["audio_to_track"] <= time.perf_counter()
