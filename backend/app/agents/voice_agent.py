"""The voice agent and its session: silero VAD -> Whisper -> the LLM -> TTS, one clause at a time.

Both work with no arguments (settings and the embedded models), so a session can be driven without
a LiveKit server: give it an ``io.AudioInput`` / ``io.AudioOutput`` of your own (see
``app.agents.offline_io``) or run text turns with ``session.run(user_input=...)``.

Where a turn's time goes (``python -m bench.agent_latency``): the VAD notices the pause; Whisper
transcribes the utterance, starting at the first silent VAD windows (``SpeculativeSTT``) so that it
overlaps the silence the VAD still waits for; the LLM writes a first clause and the TTS speaks it
(``SpokenSentenceTokenizer``). The endpointing delay is shorter than the VAD's silence wait and so
adds nothing. The local end-of-turn model is optional (``turn_detector=True``): on clean synthetic
speech it tends to wait for its maximum delay, which is capped here.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import Agent, AgentSession, tts
from livekit.agents.inference import TurnDetector

from app.agents.plugins import GemmaLLM, OpenAudioTTS, SpeculativeSTT, WhisperSTT
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
                         language: str | None = None, turn_detector: bool = False,
                         **overrides: Any) -> AgentSession:
    """An ``AgentSession`` over the project's services (default: the process-wide ones).

    ``voice``: TTS voice / reference id. ``language``: what the user speaks (ISO code); unset, Whisper
    detects it on every turn, which costs a second encoder pass. ``turn_detector``: use the local
    end-of-turn model (``turn-detector-v1-mini``) on top of the VAD. Other keywords override
    ``AgentSession`` arguments.
    """
    services = services or shared_services()
    vad = load_vad(services.settings)
    options: dict[str, Any] = {
        # Whisper starts on an utterance at the first pause, while the VAD still confirms the silence.
        "stt": SpeculativeSTT(stt=WhisperSTT(services=services, language=language), vad=vad),
        "llm": GemmaLLM(services=services),
        # The TTS synthesizes one piece at a time; the first piece may be a clause.
        "tts": tts.StreamAdapter(tts=OpenAudioTTS(services=services, voice=voice),
                                 sentence_tokenizer=SpokenSentenceTokenizer()),
        "vad": vad,
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
