"""Query normalisation: unknown words of a free description become words a word-level model knows."""

from __future__ import annotations

import pytest

from ufinebench.data.tokenizer import TrainedBPETokenizer, TrainedWordTokenizer
from ufinebench.search.normalize import QueryNormalizer, age_word, inflections, normalizer_for
from ufinebench.vocab import load_vocabulary

CAPTIONS = [
    "the young woman wears a blue jacket with horizontal stripes , black jeans and white sneakers .",
    "a middle aged man has short blonde hair , a grey hoodie , checked trousers and black boots .",
    "an elderly slim woman carries a handbag and a paper cup . she wears her sunglasses and leather shoes .",
    "a heavy man in a coloured t - shirt with long sleeves holds a phone , his backpack is black .",
    "a woman in sandals with a bag .",
] * 2

VOCAB = load_vocabulary("ufine-synth-1")  # the attribute vocabulary of UFine-Synth's captions


@pytest.fixture(scope="module")
def tok() -> TrainedWordTokenizer:
    return TrainedWordTokenizer.train(CAPTIONS, vocab_size=500, min_frequency=1)


def _unk(tok: TrainedWordTokenizer, text: str) -> int:
    assert tok.unk_id is not None
    return int((tok.encode([text], 64) == tok.unk_id).sum())


def test_free_description_reads_with_known_words(tok):
    norm = normalizer_for(tok)
    assert norm is not None
    text = "Chubby blond girl (in her twenties) w/ shades, striped jaket, plaid pants; carrying a purse & a coffee"
    r = norm(text)
    assert _unk(tok, text) >= 10
    assert _unk(tok, r.text) == 1 and r.unknown == ["w"]  # "w" of "w/" has no match and is reported
    got = dict(r.replaced)
    assert got["Chubby"] == "heavy" and got["blond"] == "blonde" and got["girl"] == "young woman"
    assert got["twenties"] == "young" and got["shades"] == "sunglasses" and got["striped"] == "stripes"
    assert got["jaket"] == "jacket"  # a one-letter typo
    assert got["plaid"] == "checked" and got["carrying"] == "carries" and got["purse"] == "handbag"
    assert got["("] == "," and got[";"] == "." and got["&"] == "and"


def test_known_words_are_never_replaced(tok):
    norm = QueryNormalizer(tok.words())
    text = "a heavy man , grey hoodie , checked trousers"  # every word known: nothing changes, even words of the table's targets
    assert norm(text).text == text and norm(text).replaced == []
    # a word that the table maps elsewhere stays when the vocabulary has it
    assert QueryNormalizer(["a", "top", "shirt"])("a top").text == "a top"
    assert QueryNormalizer(["a", "shirt"])("a top").text == "a shirt"


def test_ages_from_numbers(tok):
    norm = QueryNormalizer(tok.words())
    assert norm("a 25-year-old woman").text == "a young woman"
    assert norm("a man in his 50s").text == "a man in his middle aged"
    assert norm("a man around seventy").text == "a man elderly"
    assert [age_word(y) for y in (18, 35, 36, 59, 60)] == ["young", "young", "middle aged", "middle aged", "elderly"]
    assert norm("3 bags").unknown == ["3"]  # not an age: left as written


def test_inflections_and_dropped_words(tok):
    assert "carry" in inflections("carrying") and "stripes" in inflections("striped") and "red" in inflections("reddish")
    norm = QueryNormalizer(tok.words())
    assert norm("plain black jeans").text == "black jeans"  # a filler without an attribute is dropped
    assert norm("flip-flops , sleeve").text == "sandals , sleeves"  # and the hyphen left beside it too
    assert norm("a zzyzx backpack").unknown == ["zzyzx"]


def test_only_word_tokenizers_get_a_normalizer():
    bpe = TrainedBPETokenizer.train(CAPTIONS, vocab_size=300)
    assert normalizer_for(bpe) is None  # byte-level BPE has no unknown words


def test_shorten_leaves_out_whole_sentences_and_named_attribute_words_only():
    """lexicon.shorten: what stays is the text's own words in order, less whole sentences and
    colour / garment / shoe / bag / headwear words; never empty; the same for the same draws."""
    import random
    import re

    from ufinebench.vocab.tokens import shorten
    ATTRIBUTE_CLASSES = VOCAB.classes
    NAMED_CLASSES = VOCAB.named_classes

    text = ("A young man with short black hair. He wears a red hoodie and blue jeans. White sneakers on his feet. "
            "He carries a black backpack. He is walking towards the camera.")
    named = {w for c in NAMED_CLASSES for g in ATTRIBUTE_CLASSES[c] for w in g}

    def sentences(t: str) -> list[list[str]]:
        return [s.lower().replace(",", " ").split() for s in re.split(r"[.!?]", t) if s.strip()]

    given = sentences(text)
    shorter = 0
    for seed in range(40):
        out = shorten(text, random.Random(seed), VOCAB)
        assert out and out == shorten(text, random.Random(seed), VOCAB)
        at = 0
        for sent in sentences(out):  # each: a sentence of the text, in order, less some named words
            while at < len(given) and [w for w in given[at] if w not in named] != [w for w in sent if w not in named]:
                at += 1
            assert at < len(given), (seed, out)
            rest = iter(given[at])
            assert all(any(w == g for g in rest) for w in sent)  # a subsequence: only words left out
            at += 1
        shorter += len(out) < len(text)
    assert shorter > 30
    assert shorten(text, random.Random(0), VOCAB, sentence_p=0.0, word_p=0.0) == text
    assert shorten("One sentence.", random.Random(0), VOCAB, sentence_p=0.99) == "One sentence."  # never all
