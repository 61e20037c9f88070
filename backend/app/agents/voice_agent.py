"""The voice agent and its session: silero VAD -> Whisper -> the LLM -> TTS, one clause at a time.

Both work with no arguments (settings and the embedded models), so a session can be driven without
a LiveKit server: give it an ``io.AudioInput`` / ``io.AudioOutput`` of your own (see
``app.agents.offline_io``) or run text turns with ``session.run(user_input=...)``.

Latency (measured with ``python -m bench.agent_latency``): turn detection is plain VAD by default.
A non-streaming STT only has a transcript once the VAD has confirmed the silence, so the end of the
turn is decided by ``VAD_MIN_SILENCE_MS`` + Whisper; the endpointing delay below is shorter than
that silence and so adds nothing. The local end-of-turn model is optional (``turn_detector=True``):
on clean synthetic speech it tends to wait for its maximum delay.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import Agent, AgentSession, tts
from livekit.agents.inference import TurnDetector

from app.agents.plugins import GemmaLLM, OpenAudioTTS, WhisperSTT
from app.agents.runtime import shared_services
from app.agents.sentences import SpokenSentenceTokenizer
from app.audio.vad import load_vad
from app.config.settings import Settings, get_settings
from app.services.container import Services

# From the end of speech; the VAD's own silence wait (250 ms by default) already covers it.
MIN_ENDPOINTING_S = 0.2
# With the turn detector only: how long an "unlikely to be done" turn may wait.
MAX_ENDPOINTING_S = 1.5
# Speech shorter than this during a reply is not a barge-in (coughs, "mm-hm").
MIN_INTERRUPTION_S = 0.5


class GemmaVoiceAgent(Agent):
    def __init__(self, *, instructions: str | None = None, settings: Settings | None = None,
                 **agent_options: Any) -> None:
        """``instructions``: default ``VOICE_INSTRUCTIONS``. Other keywords go to ``Agent``."""
        settings = settings or get_settings()
        super().__init__(instructions=instructions or settings.voice_instructions, **agent_options)


def create_agent_session(services: Services | None = None, *, voice: str | None = None,
                         turn_detector: bool = False, **overrides: Any) -> AgentSession:
    """An ``AgentSession`` over the project's services (default: the process-wide ones).

    ``voice``: TTS voice / reference id. ``turn_detector``: use the local end-of-turn model
    (``turn-detector-v1-mini``) on top of the VAD. Other keywords override ``AgentSession`` arguments.
    """
    services = services or shared_services()
    options: dict[str, Any] = {
        "stt": WhisperSTT(services=services),
        "llm": GemmaLLM(services=services),
        # The TTS synthesizes one piece at a time; the first piece may be a clause.
        "tts": tts.StreamAdapter(tts=OpenAudioTTS(services=services, voice=voice),
                                 sentence_tokenizer=SpokenSentenceTokenizer()),
        "vad": load_vad(services.settings),
        "turn_handling": {
            "turn_detection": TurnDetector(version="v1-mini") if turn_detector else "vad",
            "endpointing": {"min_delay": MIN_ENDPOINTING_S, "max_delay": MAX_ENDPOINTING_S},
            # "vad": the adaptive interruption model is a LiveKit Cloud service.
            "interruption": {"enabled": True, "mode": "vad", "min_duration": MIN_INTERRUPTION_S},
            "preemptive_generation": {"enabled": True},
        },
    }
    options.update(overrides)
    return AgentSession(**options)
