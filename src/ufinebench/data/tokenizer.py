"""Text tokenizers: OpenAI CLIP's byte-level BPE, and a BPE trained on a dataset's captions.

Both turn a batch of texts into a (N, L) int64 tensor: start token, the text's ids, end token,
zero padding. A text longer than L is cut and its last kept position becomes the end token, so
end-token pooling always finds one. ``state()`` / :func:`tokenizer_from_state` save a tokenizer
with a checkpoint so that it always travels with its model.

The CLIP tokenizer reproduces the ids of OpenAI CLIP's tokenizer exactly (tested against the
reference code). It needs CLIP's merges file ``bpe_simple_vocab_16e6.txt.gz``, which ships with
CLIP weights and inside PyPI's ``clip-anytorch`` (installed ``--no-deps`` by ``run.sh``; its
import needs torchvision, so only the file is read). Pass ``vocab_path`` or set
``UFINEBENCH_CLIP_BPE`` to use another copy.
"""

from __future__ import annotations

import gzip
import html
import importlib.metadata as md
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ftfy
import regex
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ufinebench.errors import UFineBenchError

CLIP_SOT = 49406
CLIP_EOT = 49407
_CLIP_NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP: vocab size minus bytes and specials


class TokenizerError(UFineBenchError):
    """A tokenizer that cannot be built or loaded."""


class TextTokenizer(Protocol):
    """What models and datasets need of a tokenizer."""

    vocab_size: int
    sot_id: int
    eot_id: int
    pad_id: int

    def encode(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """(N,) texts -> (N, L) int64 ids."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-serialisable description from which :func:`tokenizer_from_state` rebuilds it."""
        ...


def _pack(ids_list: Iterable[list[int]], context_length: int, sot: int, eot: int, pad: int) -> torch.Tensor:
    """Wrap each id list in start/end tokens, cut to L keeping the end token, pad. -> (N, L)."""
    if context_length < 2:
        raise TokenizerError(f"context length must be at least 2, got {context_length}")
    rows = list(ids_list)
    out = torch.full((len(rows), context_length), pad, dtype=torch.long)
    for i, ids in enumerate(rows):
        seq = [sot] + ids[: context_length - 2] + [eot]
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


# --------------------------------------------------------------------------------------------
# CLIP's byte-level BPE


def _byte_to_char() -> dict[int, str]:
    """CLIP's reversible byte -> printable-unicode map (printable Latin-1 bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def find_clip_vocab(vocab_path: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz``: argument, $UFINEBENCH_CLIP_BPE, clip-anytorch."""
    candidates: list[Path] = []
    if vocab_path:
        candidates.append(Path(vocab_path))
    elif os.environ.get("UFINEBENCH_CLIP_BPE"):
        candidates.append(Path(os.environ["UFINEBENCH_CLIP_BPE"]))
    else:
        try:
            for f in md.files("clip-anytorch") or []:
                if f.name == "bpe_simple_vocab_16e6.txt.gz":
                    candidates.append(Path(str(f.locate())))
        except md.PackageNotFoundError:
            pass
    for c in candidates:
        if c.is_file():
            return c
    where = str(candidates[0]) if candidates else "the clip-anytorch package (pip install --no-deps clip-anytorch)"
    raise TokenizerError(f"CLIP's BPE vocabulary bpe_simple_vocab_16e6.txt.gz not found in {where}")


class ClipTokenizer:
    """OpenAI CLIP's tokenizer: ftfy + HTML unescape, lower-case, regex split, byte-level BPE."""

    sot_id = CLIP_SOT
    eot_id = CLIP_EOT
    pad_id = 0

    def __init__(self, vocab_path: str | os.PathLike[str] | None = None) -> None:
        path = find_clip_vocab(vocab_path)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{path}: cannot read CLIP's BPE vocabulary ({exc})") from None
        merges = [tuple(line.split()) for line in lines[1 : _CLIP_NUM_MERGES + 1]]
        if len(merges) != _CLIP_NUM_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path}: not CLIP's BPE vocabulary (expected {_CLIP_NUM_MERGES} merges)")
        self._byte_char = _byte_to_char()
        chars = list(self._byte_char.values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self._ids = {tok: i for i, tok in enumerate(vocab)}
        self._rank = {m: i for i, m in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}
        self.vocab_size = len(vocab)
        self._split = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._vocab_path = str(path)

    @staticmethod
    def clean(text: str) -> str:
        """CLIP's text clean-up: fix mojibake, unescape HTML (twice), collapse whitespace, lower."""

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _word_ids(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        if word in ("<|startoftext|>", "<|endoftext|>"):
            ids = [self._ids[word]]
        else:
            symbols = [self._byte_char[b] for b in word.encode("utf-8")]
            symbols[-1] += "</w>"
            while len(symbols) > 1:
                best, best_rank = None, None
                for pair in zip(symbols, symbols[1:], strict=False):
                    r = self._rank.get(pair)
                    if r is not None and (best_rank is None or r < best_rank):
                        best, best_rank = pair, r
                if best is None:
                    break
                merged: list[str] = []
                i = 0
                while i < len(symbols):
                    if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                        merged.append(symbols[i] + symbols[i + 1])
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
            ids = [self._ids[s] for s in symbols]
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def text_ids(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens."""
        out: list[int] = []
        for word in self._split.findall(self.clean(text)):
            out.extend(self._word_ids(word))
        return out

    def encode(self, texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
        """(N,) texts -> (N, L) int64: [49406, ids..., 49407, 0, ...]."""
        if isinstance(texts, str):
            texts = [texts]
        return _pack((self.text_ids(t) for t in texts), context_length, self.sot_id, self.eot_id, self.pad_id)

    def state(self) -> dict[str, Any]:
        return {"kind": "clip"}


# --------------------------------------------------------------------------------------------
# BPE trained on captions (HF tokenizers)

SPECIALS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")


class TrainedBPETokenizer:
    """A byte-level BPE learnt from training captions, for models trained from scratch."""

    pad_id = 0

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.sot_id = tokenizer.token_to_id("<|startoftext|>")
        self.eot_id = tokenizer.token_to_id("<|endoftext|>")
        self.unk_id: int | None = tokenizer.token_to_id("<|unk|>")
        if self.sot_id is None or self.eot_id is None or tokenizer.token_to_id("<|pad|>") != 0:
            raise TokenizerError("not a ufinebench BPE tokenizer (special tokens missing)")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> TrainedBPETokenizer:
        """Learn merges from ``texts`` (lower-cased, NFKC-normalised, byte-level)."""

        tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def text_ids(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode(self, texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
        """(N,) texts -> (N, L) int64: [sot, ids..., eot, 0, ...]."""
        if isinstance(texts, str):
            texts = [texts]
        batch = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return _pack((e.ids for e in batch), context_length, self.sot_id, self.eot_id, self.pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        special = {self.pad_id, self.sot_id, self.eot_id}
        return self._tok.decode([i for i in ids if i not in special])

    def state(self) -> dict[str, Any]:
        return {"kind": "bpe", "json": self._tok.to_str()}


class TrainedWordTokenizer(TrainedBPETokenizer):
    """A word-level vocabulary learnt from training captions; unseen words become ``<|unk|>``.

    Whole words make shorter sequences than BPE pieces and the same word always maps to one
    embedding, which a from-scratch text encoder learns faster and which transfers better to
    paraphrased queries (docs/training.md). Lower-cased, NFKC-normalised, split into runs of
    letters/digits and of punctuation.
    """

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> TrainedWordTokenizer:
        """Keep the ``vocab_size`` most frequent words seen at least ``min_frequency`` times."""

        tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS), show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def words(self) -> list[str]:
        """The vocabulary's words (special tokens left out), most frequent first."""
        vocab = self._tok.get_vocab()
        return [w for w in sorted(vocab, key=vocab.__getitem__) if w not in SPECIALS]

    def state(self) -> dict[str, Any]:
        return {"kind": "word", "json": self._tok.to_str()}


def tokenizer_from_state(state: dict[str, Any]) -> TextTokenizer:
    """Rebuild a tokenizer saved with :meth:`state` (e.g. from a checkpoint)."""
    kind = state.get("kind")
    if kind == "clip":
        return ClipTokenizer(state.get("vocab_path"))
    if kind in ("bpe", "word"):
        cls = TrainedBPETokenizer if kind == "bpe" else TrainedWordTokenizer
        try:
            return cls(Tokenizer.from_str(state["json"]))
        except Exception as exc:  # noqa: BLE001 - a corrupt saved tokenizer is bad input
            raise TokenizerError(f"cannot rebuild the saved {kind} tokenizer ({exc})") from None
    raise TokenizerError(f"unknown tokenizer kind {kind!r}")
