"""Batch samplers that give N processes exactly the batches one process would see.

Each epoch a sampler builds the *global* batch order from (seed, epoch) alone: the same on every
process. Process ``rank`` of ``world_size`` then takes the rank-th contiguous shard of every
global batch. Concatenating the shards of all processes, batch by batch, gives back the global
batches, so losses computed over the gathered batch see the same examples as a single process
with the same global batch size (``tests/test_data_samplers.py`` checks this for 2 and 3
processes).

Strategies:

* ``random``: a permutation of all items cut into batches.
* ``identity``: identity-balanced batches of P persons x K items (``num_instances`` = K); a person
  with fewer than K items is topped up by sampling its items with replacement.
* ``neighbours``: look-alike batches. Each epoch, persons are visited in a random order and each
  one not yet placed brings along its nearest unplaced neighbours (``neighbours`` lists them, most
  alike first; :func:`caption_neighbours` finds them from the captions alone), groups of
  ``group_size``. Items are then laid out round by round, ``num_instances`` (K) items of every person
  that has some left, in group order, and cut into batches: a batch of B holds about B / K persons
  in look-alike groups, people whom only details tell apart: hard negatives for the retrieval loss
  and the matcher, which random batches from thousands of people almost never contain. Epochs
  before ``neighbours_from`` are random (hard batches from the first step slowed learning).

The sampler yields ``(index, epoch)`` pairs; the datasets in ``ufinebench.data.datasets`` use the
epoch to seed each item's augmentation, so results do not depend on the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class DistributedBatchSampler:
    """Global batches from a strategy, sharded across processes (see module docstring)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        strategy: str = "random",
        labels: Sequence[int] | None = None,
        num_instances: int = 4,
        neighbours: dict[int, list[int]] | None = None,
        group_size: int = 4,
        neighbours_from: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if strategy not in ("random", "identity", "neighbours"):
            raise ValueError(f"strategy must be 'random', 'identity' or 'neighbours', got {strategy!r}")
        if strategy == "neighbours" and (labels is None or len(labels) != num_items or neighbours is None or group_size < 1):
            raise ValueError("the neighbours strategy needs one label per item, each label's neighbours and a group size of 1 or more")
        if batch_size < 1 or num_items < 1:
            raise ValueError("batch_size and num_items must be positive")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} must be a multiple of the {world_size} processes")
        if strategy == "identity":
            if labels is None or len(labels) != num_items:
                raise ValueError("the identity strategy needs one label per item")
            if num_instances < 1 or batch_size % num_instances:
                raise ValueError(f"batch size {batch_size} must be a multiple of num_instances {num_instances}")
            if len(set(labels)) < batch_size // num_instances:
                raise ValueError(
                    f"{len(set(labels))} identities cannot fill batches of {batch_size // num_instances} distinct persons"
                )
        self.num_items = num_items
        self.batch_size = batch_size
        self.strategy = strategy
        self.labels = None if labels is None else np.asarray(labels)
        self.num_instances = num_instances
        self.neighbours = neighbours or {}
        self.group_size = group_size
        self.neighbours_from = neighbours_from  # epochs before it are random (a curriculum: hard batches once the easy part is learnt)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batch order the next iteration yields."""
        self.epoch = int(epoch)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every process's view combined: the batches a single process would see."""
        epoch = self.epoch if epoch is None else epoch
        rng = self._rng(epoch)
        if self.strategy in ("random", "neighbours"):
            random_order = self.strategy == "random" or epoch < self.neighbours_from
            perm = rng.permutation(self.num_items).tolist() if random_order else self._neighbour_order(rng)
            batches = [perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)]
            if batches and len(batches[-1]) < self.batch_size:
                if self.drop_last:
                    batches.pop()
                else:  # top up from the start so every process gets an equal shard
                    need = self.batch_size - len(batches[-1])
                    batches[-1] = batches[-1] + (perm * (need // len(perm) + 1))[:need]
            return batches
        return self._identity_batches(rng)

    def _neighbour_order(self, rng: np.random.Generator) -> list[int]:
        """Every item once, persons in look-alike groups, K items of each person per round (see the
        module docstring)."""
        assert self.labels is not None
        items: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels.tolist()):
            items.setdefault(int(lab), []).append(i)
        placed: set[int] = set()
        people: list[int] = []  # persons in look-alike groups
        for seed_person in rng.permutation(sorted(items)).tolist():
            if seed_person in placed:
                continue
            group = [seed_person] + [p for p in self.neighbours.get(seed_person, []) if p not in placed and p in items][: self.group_size - 1]
            placed.update(group)
            people.extend(group)
        queues = {p: rng.permutation(items[p]).tolist() for p in people}
        k = self.num_instances
        order: list[int] = []
        while queues:  # round by round: K items of every person that has some left, in group order
            for p in [p for p in people if p in queues]:
                order.extend(queues[p][:k])
                queues[p] = queues[p][k:]
                if not queues[p]:
                    del queues[p]
        return order

    def _identity_batches(self, rng: np.random.Generator) -> list[list[int]]:
        assert self.labels is not None
        k = self.num_instances
        p = self.batch_size // k
        chunks: dict[int, list[list[int]]] = {}
        for lab in np.unique(self.labels):  # sorted: the order is reproducible
            idx = np.flatnonzero(self.labels == lab)
            if len(idx) < k:
                idx = rng.choice(idx, size=k, replace=True)
            else:
                idx = rng.permutation(idx)
            n = len(idx) // k
            chunks[int(lab)] = [idx[j * k : (j + 1) * k].tolist() for j in range(n)]
        batches: list[list[int]] = []
        while True:
            ready = sorted(lab for lab, c in chunks.items() if c)
            if len(ready) < p:
                break
            chosen = rng.choice(ready, size=p, replace=False)
            batch: list[int] = []
            for lab in chosen:
                batch.extend(chunks[int(lab)].pop())
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        shard = self.batch_size // self.world_size
        lo = self.rank * shard
        for batch in self.global_batches():
            yield [(i, self.epoch) for i in batch[lo : lo + shard]]

    def __len__(self) -> int:
        if self.strategy in ("random", "neighbours"):
            full, rest = divmod(self.num_items, self.batch_size)
            return full + (1 if rest and not self.drop_last else 0)
        return len(self.global_batches())


def caption_neighbours(texts_by_label: dict[int, list[str]], k: int, block: int = 512) -> dict[int, list[int]]:
    """Each label's ``k`` most alike other labels by what their captions say: cosine similarity of
    TF-IDF word vectors (one per label, all its captions together), so persons described with the
    same rare words (a burgundy cardigan, white soles) are neighbours. The word vectors are held
    sparse and compared ``block`` labels at a time: memory O(block x (labels + words)), neither
    labels squared nor labels x words (11,000 persons x 12,000 words would be half a gigabyte dense)."""
    labels = sorted(texts_by_label)
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for r, lab in enumerate(labels):
        counts: dict[int, int] = {}
        for text in texts_by_label[lab]:
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                j = vocab.setdefault(word, len(vocab))
                counts[j] = counts.get(j, 0) + 1
        rows += [r] * len(counts)
        cols += list(counts)
        vals += list(counts.values())
    n, v = len(labels), len(vocab)
    row, col = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)  # (nnz,) each; rows ascending
    idf = np.log((1 + n) / (1 + np.bincount(col, minlength=v))) + 1.0  # (words,): a (label, word) pair occurs once
    x = np.asarray(vals, dtype=np.float32) * idf[col].astype(np.float32)  # (nnz,)
    x /= np.sqrt(np.bincount(row, weights=x.astype(np.float64) ** 2, minlength=n))[row].astype(np.float32) + 1e-12
    xs = torch.sparse_coo_tensor(torch.from_numpy(np.stack([row, col])), torch.from_numpy(x), (n, v),
                                 check_invariants=True).coalesce()  # (labels, words)
    k = max(0, min(k, n - 1))
    out: dict[int, list[int]] = {}
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        a, b = np.searchsorted(row, [lo, hi])
        dense = np.zeros((hi - lo, v), dtype=np.float32)  # (block, words): this block's vectors
        dense[row[a:b] - lo, col[a:b]] = x[a:b]
        sim = torch.sparse.mm(xs, torch.from_numpy(dense).T).T.numpy()  # (block, labels)
        sim[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # not one's own neighbour
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        for r, row_top in enumerate(top):
            out[labels[lo + r]] = [labels[int(j)] for j in row_top]
    return out
