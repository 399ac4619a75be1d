"""Tokenizers: CLIP ids equal the reference CLIP tokenizer; packing; trained BPE round trip."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ufinebench.data.tokenizer import (
    CLIP_EOT,
    CLIP_SOT,
    ClipTokenizer,
    TokenizerError,
    TrainedBPETokenizer,
    TrainedWordTokenizer,
    find_clip_vocab,
    tokenizer_from_state,
)


@pytest.fixture(scope="module")
def clip_tok():
    return ClipTokenizer()


@pytest.fixture(scope="module")
def reference():
    """OpenAI CLIP's own tokenizer code as shipped in clip-anytorch, loaded by path (its package
    import needs torchvision)."""
    vocab = find_clip_vocab()
    spec = importlib.util.spec_from_file_location("clip_reference_tokenizer", vocab.parent / "simple_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SimpleTokenizer(bpe_path=str(vocab))


SENTENCES = [
    "a photo of a cat",
    "A middle-aged woman, brown hair below the shoulders, white jacket, ankle-length dark blue tight pants, "
    "black sandals, camouflage backpack with a black label…",
    "The man's shoes aren't black; they're WHITE with grey soles (size 42).",
    "Café naïve — “quotes” &amp; &lt;b&gt; 1,234.5 don't I'm we'll they've you'd",
    "日本語の説明と絵文字 😀👜 and ümlauts",
    "   tabs\tand\nnew lines   ",
    "<|startoftext|> special tokens <|endoftext|>",
    "stripes: red/white/blue; logo 'NK' on the left chest!!!",
    "x" * 120,
]


def test_clip_ids_match_reference(clip_tok, reference):
    for s in SENTENCES:
        assert clip_tok.text_ids(s) == reference.encode(s), s


def test_known_ids_and_packing(clip_tok):
    ids = clip_tok.encode(["a photo of a cat"], context_length=77)
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(0).all()
    long = clip_tok.encode([SENTENCES[1] * 6], context_length=168)
    assert long.shape == (1, 168) and long[0, 0] == CLIP_SOT and long[0, -1] == CLIP_EOT  # cut keeps the end
    assert clip_tok.vocab_size == 49408
    with pytest.raises(TokenizerError):
        clip_tok.encode(["x"], context_length=1)


def test_missing_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        ClipTokenizer(tmp_path / "nope.txt.gz")
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(TokenizerError):
        ClipTokenizer(bad)


def test_trained_bpe_round_trip():
    caps = [f"the man in a red jacket carries a {c} backpack with a white label" for c in ("black", "blue", "green")] * 20
    tok = TrainedBPETokenizer.train(caps, vocab_size=400)
    ids = tok.encode(caps[:3], context_length=40)
    assert ids.shape == (3, 40) and (ids[:, 0] == tok.sot_id).all()
    assert tok.decode(ids[1].tolist()).strip() == caps[1]
    again = tokenizer_from_state(tok.state())
    assert torch.equal(again.encode(caps[:3], 40), ids)
    short = tok.encode(caps[:1], context_length=5)
    assert short[0, -1] == tok.eot_id
    assert tokenizer_from_state({"kind": "clip"}).encode(["a cat"], 5)[0, 0] == CLIP_SOT
    with pytest.raises(TokenizerError):
        tokenizer_from_state({"kind": "bpe", "json": "{broken"})


def test_trained_word_tokenizer_whole_words_and_unknown_words():
    caps = [f"The man in a red jacket carries a {c} backpack." for c in ("black", "blue", "green")] * 5
    tok = TrainedWordTokenizer.train(caps, vocab_size=100, min_frequency=2)
    ids = tok.encode(["The man carries a blue backpack."], context_length=12)[0]
    # one id per word and one for the full stop, between sot and eot
    assert ids[:9].tolist()[0] == tok.sot_id and ids[8] == tok.eot_id and (ids[9:] == 0).all()
    assert tok.decode(ids.tolist()) == "the man carries a blue backpack."
    unk = tok._tok.token_to_id("<|unk|>")
    odd = tok.encode(["a zebra-striped 🦓 parka"], context_length=12)[0]
    assert odd[1] == tok._tok.token_to_id("a") and (odd[2:7] == unk).all()  # unseen words and symbols: <|unk|>, no error
    again = tokenizer_from_state(tok.state())
    assert isinstance(again, TrainedWordTokenizer) and torch.equal(again.encode(caps[:3], 12), tok.encode(caps[:3], 12))
    small = TrainedWordTokenizer.train(caps, vocab_size=8, min_frequency=1)
    assert small.vocab_size == 8  # the limit holds (4 specials + the 4 most frequent words)
