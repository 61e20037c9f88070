"""The TTS interface both engines implement (the choice between them is ``create_tts_engine`` in
``app.services.container``).

Engines stream PCM s16le mono at ``sample_rate`` as it is synthesized, so callers can send the first
audio before the whole text is done.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from app.config.settings import Settings
from app.services.base import BadRequest, ModelService


class TTSEngine(ModelService):
    component = "tts"
    engine = "base"
    sample_rate = 22050
    speaks_at_speeds = False  # whether stream() takes speed= (OpenAI's `speed`: 1.0 normal, 2.0 twice as fast)

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings

    def check_text(self, text: str) -> str:
        text = (text or "").strip()
        if not text:
            raise BadRequest("the text to speak is empty")
        if len(text) > self.settings.max_text_chars:
            raise BadRequest(f"the text is longer than {self.settings.max_text_chars} characters")
        return text

    def stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def synthesize(self, text: str, **options) -> bytes:
        """The whole utterance; ``options`` are the engine's own ``stream()`` keywords (voice, references...)."""
        return b"".join([chunk async for chunk in self.stream(text, **options)])

    @property
    def model_name(self) -> str:
        """What speaks, as /v1/models names it."""
        return self.engine

    def voices(self) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {**super().status(), "engine": self.engine, "sample_rate": self.sample_rate}
