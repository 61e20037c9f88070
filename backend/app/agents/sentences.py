"""The project's sentence chunker (``app.voice.sentences``) as a LiveKit Agents sentence tokenizer.

The agent speaks a reply one piece at a time through the non-streaming TTS. The framework's default
tokenizer waits for a whole first sentence of 20+ characters; this one releases a shorter first piece
(``SentenceChunker``'s rules: a clause, a phrase break, or a few words) so the first audio starts sooner.
"""

from __future__ import annotations

from collections.abc import Callable

from livekit.agents import tokenize, utils

from app.voice.sentences import SentenceChunker


class FirstPieceEnd:
    """Fed a reply's text as the model writes it: True once, for the text that completes the reply's first
    spoken piece (the tokenizer's own rules), where the TTS is about to start on it."""

    def __init__(self) -> None:
        self._chunker: SentenceChunker | None = SentenceChunker()

    def __call__(self, text: str) -> bool:
        if self._chunker is None or not self._chunker.push(text):
            return False
        self._chunker = None
        return True


class SpokenSentenceTokenizer(tokenize.SentenceTokenizer):
    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        chunker = SentenceChunker()
        return chunker.push(text) + chunker.flush()

    def stream(self, *, language: str | None = None) -> tokenize.SentenceStream:
        return _SpokenSentenceStream(SentenceChunker)


class _SpokenSentenceStream(tokenize.SentenceStream):
    def __init__(self, new_chunker: Callable[[], SentenceChunker]) -> None:
        super().__init__()
        self._new_chunker = new_chunker
        self._chunker: SentenceChunker = new_chunker()
        self._segment_id = utils.shortuuid()

    def _send(self, pieces: list[str]) -> None:
        for piece in pieces:
            self._event_ch.send_nowait(tokenize.TokenData(segment_id=self._segment_id, token=piece))

    def push_text(self, text: str) -> None:
        self._check_not_closed()
        self._send(self._chunker.push(text))

    def flush(self) -> None:
        """End of a segment: speak what is left; the next text starts afresh (first clause early again)."""
        self._check_not_closed()
        self._send(self._chunker.flush())
        self._chunker = self._new_chunker()
        self._segment_id = utils.shortuuid()

    def end_input(self) -> None:
        self.flush()
        self._do_close()

    async def aclose(self) -> None:
        self._do_close()
