"""Training's per-pair augmentation streams: masking, word noise, attribute swaps and drops, modifier order.

Every draw is a hash of (seed, epoch, pair index, position) or a generator seeded by them, so a
pair is augmented alike in any batch, any number of processes and a resumed run: what makes
``torchrun`` runs equal one process and a resume equal an uninterrupted run.
"""

from __future__ import annotations

import torch

from ufinebench.vocab.tokens import AttributeTable, PhraseWords


def mlm_mask(
    tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, mask_id: int, vocab: int, specials: set[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRRA-style masking (15 %: 80 % mask token, 10 % random, 10 % kept), seeded per item.

    tokens (B, L), index (B,) -> masked tokens (B, L), labels (B, L) (-100: not predicted). Each
    row's draws come from a generator seeded by (seed, epoch, item), so a pair is masked alike in
    any batch, process or resumed run; the work is vectorised over the row.
    """
    b, length = tokens.shape
    u = torch.empty(b, length)  # (B, L) uniforms deciding which tokens are predicted and how
    rand_ids = torch.empty(b, length, dtype=torch.long)
    for r in range(b):
        g = torch.Generator().manual_seed(seed * 7919 + epoch * 104729 + int(index[r]))
        u[r] = torch.rand(length, generator=g)
        rand_ids[r] = torch.randint(0, vocab, (length,), generator=g)
    special = torch.zeros_like(tokens, dtype=torch.bool)
    for sp in specials:
        special |= tokens == sp
    chosen = (u < 0.15) & ~special
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    v = u / 0.15
    masked = torch.where(chosen & (v < 0.8), torch.full_like(tokens, mask_id), tokens)
    masked = torch.where(chosen & (v >= 0.8) & (v < 0.9), rand_ids, masked)
    return masked, labels


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of int64 values (xor-shift-multiply rounds; products stay in int64)."""
    m = 0xFFFFFFFF
    h = x & m
    for _ in range(3):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & m
    return h ^ (h >> 16)


def _pair_hash(index: torch.Tensor, epoch: int, seed: int, salt: int) -> torch.Tensor:
    """(B,) pair indices -> (B,) 32-bit hashes of (seed, epoch, pair, salt)."""
    return _hash32(index.long() * 0x9E3779B1 + seed * 0x85EBCA6B + epoch * 0xC2B2AE35 + salt * 0x27D4EB2F)


def position_offsets(index: torch.Tensor, epoch: int, seed: int, jitter: int) -> torch.Tensor:
    """Each pair's text start position for the position jitter: (B,) ints in [0, jitter].

    A hash of (seed, epoch, pair index), vectorised, so a pair gets the same offset in any batch,
    process or resumed run (as ``mlm_mask``'s draws and the image augmentation).
    """
    return _pair_hash(index, epoch, seed, 1) % (jitter + 1)


def _words(tokens: torch.Tensor, specials: set[int]) -> torch.Tensor:
    """(B, L) ids -> (B, L) bool: True where a caption word stands (not a start, end or padding token)."""
    words = torch.ones_like(tokens, dtype=torch.bool)
    for sp in specials:
        words &= tokens != sp
    return words


def token_noise(
    tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, *, drop: float, unk: float, unk_id: int | None, specials: set[int],
    pad_id: int = 0, salt: int = 2, shuffle: int = 0, sentence_drop: float = 0.0, sentence_end: int | None = None,
) -> torch.Tensor:
    """Word-level caption noise: each word dropped with probability ``drop`` or replaced by the
    unknown token with probability ``unk`` (never the start/end/padding tokens), and with
    ``shuffle`` = k > 0 the remaining words locally shuffled: each moves at most k places (sorted
    by position + a uniform draw in [0, k + 1), the local shuffle of Lample et al., 2018).

    tokens (B, L) -> (B, L): dropped words close up, padding refills the end. Teaches the text
    encoder that a description still matches with words missing or unknown (terse notes, free
    text with words the vocabulary lacks). Per-pair draws hash (seed, epoch, pair, position), as
    ``position_offsets``; ``salt`` tells independent views of one caption apart.

    ``sentence_drop`` > 0 drops each sentence (words up to and including the ``sentence_end``
    token, e.g. ".") with that probability, one draw per pair and sentence, the first sentence
    too (a caption that would lose all keeps its first): a shorter description with whole details
    missing ("no word about the shoes"), which the matcher must still accept as a match, made from
    the training caption alone. Keeping the first sentence always (who: gender, age, hair) taught
    the matcher to lean on it, and descriptions without it (3C's coarse ones) then lost (docs/training.md).
    """
    b, length = tokens.shape
    pos = torch.arange(length)[None, :]  # (1, L)
    u = _hash32(_pair_hash(index, epoch, seed, salt)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L) in [0, 1)
    content = _words(tokens, specials)  # (B, L)
    dropped = content & (u < drop)
    if sentence_drop > 0 and sentence_end is not None:
        ends = (tokens == sentence_end).long()  # (B, L)
        sentence = torch.cumsum(ends, dim=1) - ends  # (B, L): 0 for the first sentence, its "." included
        w = _hash32(_pair_hash(index, epoch, seed, salt + 200)[:, None] * 0x1000193 + sentence).double() / 2**32  # (B, L), one per sentence
        cut = content & (w < sentence_drop)  # (B, L): any sentence, the first too (no detail is always there)
        emptied = ~(content & ~cut).any(dim=1, keepdim=True)  # (B, 1): rows that would lose every sentence keep their first
        dropped = dropped | (cut & ~(emptied & (sentence == 0)))
    out = tokens
    if unk_id is not None and unk > 0:
        out = torch.where(content & ~dropped & (u < drop + unk), torch.full_like(tokens, unk_id), out)
    if drop > 0 or sentence_drop > 0:
        order = torch.sort(dropped.to(torch.int8), dim=1, stable=True).indices  # kept words first, in order
        out = torch.gather(torch.where(dropped, torch.full_like(out, pad_id), out), 1, order)  # the dropped become padding at the end
    if shuffle > 0:
        content = _words(out, specials)  # (B, L): where the words are after dropping
        v = _hash32(_pair_hash(index, epoch, seed, salt + 100)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L), another stream
        # content words: position + U[0, k + 1); the start token before them, end and padding after, in order
        key = torch.where(content, pos + v * (shuffle + 1), torch.where(pos == 0, -1.0, length + pos.double()))  # (B, L)
        out = torch.gather(out, 1, torch.sort(key, dim=1, stable=True).indices)
    return out


def attribute_drop(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, table: AttributeTable, p: float,
                   pad_id: int = 0) -> torch.Tensor:
    """Each word of a named class ("red", "boots", "backpack") dropped with probability ``p``.

    tokens (B, L) -> (B, L): the dropped words close up, padding refills the end; draws hash (seed,
    epoch, pair, position) as :func:`token_noise` does (salt 8: a stream of its own). What is left reads like a description with
    details missing ("navy denim jeans and sandals": the sandals' colour left out), which 3C's
    medium and coarse queries and people's own descriptions are; made from the training caption
    alone (``data.match_attribute_drop``, the matcher's view).
    """
    pos = torch.arange(tokens.shape[1])[None, :]  # (1, L)
    u = _hash32(_pair_hash(index, epoch, seed, 8)[:, None] * 0x1000193 + pos).double() / 2**32  # (B, L) in [0, 1)
    dropped = (table.named_group(tokens) >= 0) & (u < p)  # (B, L)
    order = torch.sort(dropped.to(torch.int8), dim=1, stable=True).indices  # kept words first, in order
    return torch.gather(torch.where(dropped, torch.full_like(tokens, pad_id), tokens), 1, order)


def attribute_swap(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, table: AttributeTable) -> tuple[torch.Tensor, torch.Tensor]:
    """A caption that no longer fits its picture: one attribute word swapped for one of its class
    that means something else ("white sneakers" -> "white boots", "blue jeans" -> "red jeans").

    tokens (B, L) -> (swapped (B, L), ok (B,) bool: False for captions without an attribute word,
    which stay as they were). The word and its replacement are hashed from (seed, epoch, pair), as
    every other per-pair draw. Why: the batch's other captions differ from a caption in many
    words at once; a caption one word away teaches the matcher (and the dual encoder) to check
    every attribute, which partial and free descriptions need (docs/training.md).
    """
    b, length = tokens.shape
    cls = table.cls[tokens.clamp(0, table.cls.shape[0] - 1)]  # (B, L): class of each token, -1 if none
    cand = cls >= 0  # (B, L)
    ok = cand.any(dim=1)  # (B,)
    u = _hash32(_pair_hash(index, epoch, seed, 5)[:, None] * 0x1000193 + torch.arange(length)[None, :])  # (B, L)
    pos = torch.where(cand, u, torch.full_like(u, -1)).argmax(dim=1)  # (B,): a random attribute word of each caption
    word = tokens[torch.arange(b), pos]  # (B,)
    c = table.cls[word].clamp_min(0)  # (B,)
    mem, mem_g = table.members[c], table.member_group[c]  # (B, M)
    other = (mem >= 0) & (mem_g != table.group[word][:, None])  # (B, M): members meaning something else
    v = _hash32(_pair_hash(index, epoch, seed, 6)[:, None] * 0x1000193 + torch.arange(mem.shape[1])[None, :])  # (B, M)
    pick = torch.where(other, v, torch.full_like(v, -1)).argmax(dim=1)  # (B,)
    new = mem[torch.arange(b), pick]  # (B,)
    ok = ok & other.any(dim=1)
    out = tokens.clone()
    out[torch.arange(b)[ok], pos[ok]] = new[ok]
    return out, ok


def modifier_order(tokens: torch.Tensor, index: torch.Tensor, epoch: int, seed: int, words: PhraseWords, p: float) -> torch.Tensor:
    """Move a colour across the shape words beside it within a noun phrase, with probability ``p``
    per phrase: "knee - length beige skirt" <-> "beige knee - length skirt", "grey long - sleeved
    sweater" <-> "long - sleeved grey sweater" (a "dark" / "light" before the colour moves with it).

    tokens (B, L) -> (B, L), same words, same length. The meaning stays; what changes is the order a
    caption generator always uses and a person often does not (a colour that does not stand next to
    its garment was read as another garment's: docs/training.md). Draws hash (seed, epoch, pair, position).
    """
    u = _hash32(_pair_hash(index, epoch, seed, 7)[:, None] * 0x1000193 + torch.arange(tokens.shape[1])[None, :]).double() / 2**32
    out = tokens.clone()
    rows = tokens.tolist()
    draw = (u < p).tolist()  # (B, L): whether the phrase ending at each garment is reordered
    for b, row in enumerate(rows):
        changed = False
        for g, tok in enumerate(row):
            if tok not in words.garments or not draw[b][g]:
                continue
            j = g - 1
            while j >= 0 and row[j] in words.modifiers:
                j -= 1
            mods = row[j + 1 : g]  # shape words right before the garment
            if mods and (mods[0] == words.hyphen or mods[-1] == words.hyphen):
                continue  # "t - shirt" and the like: not a shape word span
            if mods:  # colour, shape words, garment -> shape words, colour, garment
                if j < 0 or row[j] not in words.colours:
                    continue
                c0 = j - 1 if j >= 1 and row[j - 1] in words.tones else j
                row[c0:g] = mods + row[c0 : j + 1]
            else:  # shape words, colour, garment -> colour, shape words, garment
                if g < 1 or row[g - 1] not in words.colours:
                    continue
                c0 = g - 2 if g >= 2 and row[g - 2] in words.tones else g - 1
                k = c0 - 1
                while k >= 0 and row[k] in words.modifiers:
                    k -= 1
                mods = row[k + 1 : c0]
                if not mods or mods[0] == words.hyphen or mods[-1] == words.hyphen:
                    continue
                row[k + 1 : g] = row[c0:g] + mods
            changed = True
        if changed:
            out[b] = torch.tensor(row, dtype=tokens.dtype)
    return out
