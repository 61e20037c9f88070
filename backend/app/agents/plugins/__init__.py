"""LiveKit Agents plugins: thin adapters over the project's services."""

from app.agents.plugins.gemma_llm import GemmaLLM, GemmaLLMStream
from app.agents.plugins.openaudio_tts import OpenAudioTTS
from app.agents.plugins.speculative_stt import SpeculativeSTT
from app.agents.plugins.whisper_stt import WhisperSTT

__all__ = ["GemmaLLM", "GemmaLLMStream", "OpenAudioTTS", "SpeculativeSTT", "WhisperSTT"]
