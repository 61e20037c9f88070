"""Sentence cutting for the spoken reply."""

from app.agents.sentences import SentenceChunker, speakable


def feed(chunker, text, step=3):
    out = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i:i + step])
    return out + chunker.flush()


def test_sentences_are_released_as_soon_as_they_end():
    chunker = SentenceChunker(first_clause_words=99, first_piece_max_words=99)
    assert chunker.push("Paris is the capital") == []
    assert chunker.push(" of France. It is") == ["Paris is the capital of France."]
    assert chunker.flush() == ["It is"]


def test_a_piece_goes_with_the_token_that_can_only_end_it():
    """The TTS may start a token sooner: the model needn't write the next word first."""
    chunker = SentenceChunker()
    assert chunker.push("The capital of France is Paris") == []
    assert chunker.push(".") == ["The capital of France is Paris."]
    assert chunker.push(" Is it?") == ["Is it?"]
    assert SentenceChunker().push("Well,") == []  # one word before the comma: no clause yet
    chunker = SentenceChunker()
    assert chunker.push("Of course") == []
    assert chunker.push(",") == ["Of course,"]
    for unsure in ("It costs 3.", "About 1,", "I saw Dr.", "Made in the U.S.", "Well..."):
        chunker = SentenceChunker(first_clause_words=1, first_piece_max_words=99)
        assert chunker.push(unsure) == [], unsure  # may go on: "3.50", "1,000", "Dr. Who", "U.S. today", "Well..."


def test_first_clause_goes_early_then_whole_sentences():
    pieces = feed(SentenceChunker(first_clause_words=4), "Well, as far as I know, Paris is lovely, truly. Bye now!")
    assert pieces == ["Well, as far as I know,", "Paris is lovely, truly.", "Bye now!"]


def test_a_long_first_sentence_is_cut_after_a_few_whole_words():
    pieces = feed(SentenceChunker(first_piece_max_words=5), "I do not really know the answer to that one. Sorry.")
    assert pieces == ["I do not really know", "the answer to that one.", "Sorry."]
    chunker = SentenceChunker(first_piece_max_words=2)
    assert chunker.push("Absolutely wond") == []  # the second word may still be growing
    assert chunker.push("erful day") == ["Absolutely wonderful"]


def test_a_long_first_sentence_is_cut_before_a_phrase():
    pieces = feed(SentenceChunker(), "Penguins are found on the islands of the far south. They swim.")
    assert pieces == ["Penguins are found", "on the islands of the far south.", "They swim."]
    chunker = SentenceChunker()
    assert chunker.push("I'd love to help you with") == []  # "with" may still be growing ("without")
    assert chunker.push(" that") == ["I'd love to help you"]  # not before "to": only two words before it
    assert feed(SentenceChunker(), "A cup of tea is nice.") == ["A cup of tea is nice."]  # "of" opens no cut


def test_decimal_points_do_not_cut():
    assert feed(SentenceChunker(), "It costs 3.50 euros today. Yes.") == ["It costs 3.50 euros today.", "Yes."]


def test_markup_and_emoji_are_not_spoken():
    assert speakable("**Hello** _there_ 👋 [link](http://x) `code`") == "Hello there link code"
    assert speakable("Sunny ☀️ and warm 🌡️, a star ⭐ for you 👩‍🍳!") == "Sunny and warm, a star for you!"
    assert feed(SentenceChunker(), "*** ... ") == []
