"""Cut a streamed reply into speakable pieces as the tokens arrive.

A piece is released as soon as its sentence ends, so its audio can start while the model is still
writing the next one: at the token that ends it when that token can only end it ("?", "Paris."), else
once the next one shows it does ("3." may be "3.5"). The very first piece goes out sooner, since the
first audio is what a listener waits for: at a clause end (a comma) once it has two words, before a word
that opens a phrase ("on", "because") once it has three, or after ``first_piece_max_words`` words when
the first sentence runs on without one.

``SpokenSentenceTokenizer`` is that chunker as a LiveKit Agents sentence tokenizer: the agent speaks a reply
one piece at a time through the non-streaming TTS, and the framework's default tokenizer would wait for a
whole first sentence of 20+ characters. ``speakable`` is also what ``/v1/conversation/dialogue`` speaks.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from livekit.agents import tokenize, utils

_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+|$)")
_CLAUSE_END = re.compile(r"([,;:—])\s+")
# Text that can only end here, with no need to see what follows: "?" or "!", a period after a lowercase word
# of three letters or more (not "3." of "3.5", "Dr.", "U.S." or "..."), a comma after a letter (not "1,000").
_SENTENCE_ENDS_HERE = re.compile(r"(?:[!?…]|(?<=[a-z]{3})\.)[\"')\]]*$")
_CLAUSE_ENDS_HERE = re.compile(r"(?<=[^\W\d_])[,;:—]$")
_MARKUP = re.compile(r"[*_#`>~]|\[(.*?)\]\(.*?\)")
# Emoji and pictographs (with their joiners and variation selectors): the TTS would read their names or stumble.
_EMOJI = re.compile("[\U0001F000-\U0001FBFF\U00002600-\U000027BF\U0000FE0F\U0000200D\U00002B50\U00002B55]")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([,.!?;:])")  # where an emoji was taken out
_WORD = re.compile(r"\S+")
# Words that open a phrase: the first piece may end before one ("Penguins are found | on the island"), a break
# a listener hears as natural, where cutting after a fixed number of words may split "a cup | of tea".
_PHRASE_OPENERS = frozenset(
    "and but or so because since although though while when where which who whose that if unless until before "
    "after in on at for with from to into about during by".split())


def speakable(text: str) -> str:
    """Text as it should be spoken: no markdown, no emoji, single spaces."""
    text = _MARKUP.sub(lambda m: m.group(1) or "", text)
    text = _EMOJI.sub("", text)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACES.sub(" ", text)).strip()


class SentenceChunker:
    def __init__(self, *, first_clause_words: int = 2, first_phrase_words: int = 3, first_piece_max_words: int = 8,
                 min_chars: int = 2):
        self.first_clause_words = first_clause_words
        self.first_phrase_words = first_phrase_words
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
            # A sentence end needs the following whitespace to be sure it isn't "3.5", unless it can only be one.
            ends = [match.end()] if match and (match.group(2) or _SENTENCE_ENDS_HERE.search(self._buffer)) else []
            if self._released == 0 and (clause := self._first_clause()):
                ends.append(clause)  # the first piece: whichever comes first
            if not ends:
                break
            cut = min(ends)
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._emit(piece, pieces)
        return pieces

    def _first_clause(self) -> int | None:
        for clause in _CLAUSE_END.finditer(self._buffer):
            if len(self._buffer[:clause.start()].split()) >= self.first_clause_words:
                return clause.end()
        if (clause := _CLAUSE_ENDS_HERE.search(self._buffer)) and len(self._buffer.split()) >= self.first_clause_words:
            return clause.end()
        words = list(_WORD.finditer(self._buffer))
        # Before a word that opens a phrase, once that word is whole (the text goes on after it).
        for index in range(self.first_phrase_words, min(len(words), self.first_piece_max_words + 1)):
            word = words[index]
            if word.end() < len(self._buffer) and word.group().lower() in _PHRASE_OPENERS:
                return word.start()
        # No clause end yet: cut after the first words, once the word after them has begun (so they are whole).
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
