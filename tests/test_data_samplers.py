"""Batch samplers: N processes together see exactly the single-process batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ufinebench.data.samplers import DistributedBatchSampler, caption_neighbours


def _labels(n_ids=15, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_ids), rng.integers(1, 7, n_ids))  # 1-6 items per identity


@pytest.mark.parametrize("strategy", ["random", "identity", "neighbours"])
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [True, False])
def test_shards_recombine_into_single_process_batches(strategy, world, drop_last):
    labels = _labels()
    ring = {i: [(i + 1) % 15, (i + 2) % 15] for i in range(15)}
    kw = dict(strategy=strategy, labels=labels, num_instances=3, seed=5, drop_last=drop_last, neighbours=ring, group_size=3)
    single = DistributedBatchSampler(len(labels), 12, **kw)
    shards = [DistributedBatchSampler(len(labels), 12, rank=r, world_size=world, **kw) for r in range(world)]
    for epoch in (0, 1, 4):
        single.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        want = [[i for i, _ in b] for b in single]
        per_rank = [list(s) for s in shards]
        assert all(len(p) == len(want) == len(single) for p in per_rank)
        for b, batch in enumerate(want):
            recombined = [i for r in range(world) for i, e in per_rank[r][b]]
            assert recombined == batch
            assert all(e == epoch for r in range(world) for _, e in per_rank[r][b])
            assert all(len(per_rank[r][b]) == 12 // world for r in range(world))


def test_random_strategy_covers_items_and_changes_with_epoch():
    s = DistributedBatchSampler(50, 8, seed=1, drop_last=False)
    e0 = [i for b in s for i, _ in b]
    assert set(e0) == set(range(50)) and len(e0) == 56  # last batch topped up
    s.set_epoch(1)
    e1 = [i for b in s for i, _ in b]
    assert e0 != e1
    s.set_epoch(0)
    assert [i for b in s for i, _ in b] == e0
    assert len(DistributedBatchSampler(50, 8, drop_last=True)) == 6


def test_identity_batches_have_p_distinct_persons_times_k():
    labels = _labels(30, seed=2)
    s = DistributedBatchSampler(len(labels), 16, strategy="identity", labels=labels, num_instances=4, seed=0)
    batches = [[i for i, _ in b] for b in s]
    assert batches
    for b in batches:
        counts = Counter(labels[b].tolist())
        assert len(counts) == 4 and set(counts.values()) == {4}


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="multiple"):
        DistributedBatchSampler(10, 5, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        DistributedBatchSampler(10, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="identities"):
        DistributedBatchSampler(4, 8, strategy="identity", labels=[0, 0, 1, 1], num_instances=2)


def test_neighbour_batches_hold_look_alikes_together_and_every_item_once():
    """Each epoch covers every item once; a person's items sit next to those of its nearest unplaced
    neighbours, so look-alikes share batches far more often than in random batches."""
    labels = np.repeat(np.arange(40), 4)  # 40 persons x 4 items
    pairs = {i: [i ^ 1] for i in range(40)}  # 0-1, 2-3, ... are look-alikes
    s = DistributedBatchSampler(len(labels), 16, strategy="neighbours", labels=labels, neighbours=pairs, group_size=2, seed=3,
                                drop_last=False)
    r = DistributedBatchSampler(len(labels), 16, strategy="random", labels=labels, seed=3, drop_last=False)

    def together(sampler: DistributedBatchSampler) -> float:
        hits = []
        for epoch in range(3):
            batches = sampler.global_batches(epoch)
            if sampler is s:
                assert sorted(i for b in batches for i in b) == list(range(len(labels)))
            where = {int(labels[i]): k for k, b in enumerate(batches) for i in b}
            hits += [where[p] == where[p ^ 1] for p in range(0, 40, 2)]
        return float(np.mean(hits))

    assert together(s) > 0.8 > 0.4 > together(r)
    assert s.global_batches(1) == s.global_batches(1) != s.global_batches(2)


def test_caption_neighbours_are_persons_described_alike():
    texts = {1: ["a man in a burgundy cardigan and white sneakers"], 2: ["a man in a burgundy cardigan and grey sneakers"],
             3: ["a woman in a black coat with a red umbrella"], 4: ["a woman in a black coat holding a red umbrella and a book"]}
    nb = caption_neighbours(texts, k=1, block=3)  # rows in two blocks
    assert nb == {1: [2], 2: [1], 3: [4], 4: [3]}
    assert caption_neighbours({7: ["alone"]}, k=3) == {7: []}
