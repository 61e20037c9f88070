"""Cut a streamed reply into speakable pieces as the tokens arrive.

A piece is released as soon as its sentence ends, so its audio can start while the model is still
writing the next one. The very first piece goes out sooner, since the first audio is what a listener
waits for: at a clause end (a comma) once it has two words, or after ``first_piece_max_words``
words when the first sentence runs on without one.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+|$)")
_CLAUSE_END = re.compile(r"([,;:—])\s+")
_MARKUP = re.compile(r"[*_#`>~]|\[(.*?)\]\(.*?\)")
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\U00002700-\U000027BF\U0001F000-\U0001F02F]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\S+")


def speakable(text: str) -> str:
    """Text as it should be spoken: no markdown, no emoji, single spaces."""
    text = _MARKUP.sub(lambda m: m.group(1) or "", text)
    text = _EMOJI.sub("", text)
    return _SPACES.sub(" ", text).strip()


class SentenceChunker:
    def __init__(self, *, first_clause_words: int = 2, first_piece_max_words: int = 8, min_chars: int = 2):
        self.first_clause_words = first_clause_words
        self.first_piece_max_words = first_piece_max_words
        self.min_chars = min_chars
        self._buffer = ""
        self._released = 0

    def push(self, delta: str) -> list[str]:
        """Add generated text; return the pieces that are now complete."""
        self._buffer += delta
        pieces: list[str] = []
        while True:
            match = _SENTENCE_END.search(self._buffer)
            # A sentence end needs the following whitespace (or more text) to be sure it isn't "3.5".
            if match and match.group(2):
                cut = match.end()
            elif self._released == 0 and (clause := self._first_clause()):
                cut = clause
            else:
                break
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._emit(piece, pieces)
        return pieces

    def _first_clause(self) -> int | None:
        for clause in _CLAUSE_END.finditer(self._buffer):
            if len(self._buffer[:clause.start()].split()) >= self.first_clause_words:
                return clause.end()
        # No clause end yet: cut after the first words, once the word after them has begun (so they are whole).
        words = list(_WORD.finditer(self._buffer))
        if len(words) > self.first_piece_max_words:
            return words[self.first_piece_max_words].start()
        return None

    def flush(self) -> list[str]:
        pieces: list[str] = []
        self._emit(self._buffer, pieces)
        self._buffer = ""
        return pieces

    def _emit(self, piece: str, out: list[str]) -> None:
        text = speakable(piece)
        if len(text) >= self.min_chars and any(ch.isalnum() for ch in text):
            out.append(text)
            self._released += 1
