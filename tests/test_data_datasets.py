"""torch Datasets: training pairs, gallery/queries, and worker-independent augmentation."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch.utils.data import DataLoader

from formats_fixture import make_dataset
from ufinebench.data.annotations import load_dataset
from ufinebench.data.datasets import TrainPairs, collate, eval_sets
from ufinebench.data.samplers import DistributedBatchSampler
from ufinebench.data.tokenizer import ClipTokenizer
from ufinebench.data.transforms import ImageTransform


def _train(tmp_path):
    path = make_dataset(tmp_path / "d", "ufine6926", n_images_per_id=3)
    ann = load_dataset(path)
    return ann, TrainPairs(
        ann.split("train"), ClipTokenizer(), ImageTransform(size=(64, 24), train=True), context_length=32, seed=3
    )


def test_train_pairs_items(tmp_path):
    ann, ds = _train(tmp_path)
    train = ann.split("train")
    assert len(ds) == sum(len(s.captions) for s in train) == 12
    assert ds.num_classes == 2
    item = ds[(5, 0)]
    assert item["image"].shape == (3, 64, 24) and item["tokens"].shape == (32,)
    assert item["label"] in (0, 1) and item["person_id"] in (1, 2)
    assert int(item["tokens"][0]) == 49406
    si, ci = ds.pairs[5]
    assert torch.equal(item["tokens"], ClipTokenizer().encode([train[si].captions[ci]], 32)[0])
    # same (index, epoch) -> same augmentation; another epoch -> another one
    assert torch.equal(ds[(5, 0)]["image"], item["image"])
    assert not torch.equal(ds[(5, 1)]["image"], item["image"])


def test_loader_output_independent_of_workers(tmp_path):
    _, ds = _train(tmp_path)

    def run(workers):
        sampler = DistributedBatchSampler(len(ds), 4, seed=0)
        sampler.set_epoch(2)
        dl = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
        return [b for b in dl]

    a, b = run(0), run(2)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=False):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["index"], y["index"])
        assert x["label"].dtype == torch.long


def test_eval_sets_gallery_unique_and_query_tags(tmp_path):
    path = make_dataset(tmp_path / "d", "ufine3c")
    records = json.loads(path.read_text())
    records[0]["caption_tags"] = [{"granularity": "fine", "style": "plain"}, {"granularity": "coarse", "style": "terse"}]
    records.append(dict(records[1]))  # same image listed twice (a warning): one gallery entry
    path.write_text(json.dumps(records))
    ann = load_dataset(path)
    gallery, queries = eval_sets(ann.samples, ClipTokenizer(), ImageTransform(size=(32, 16)), context_length=20)
    assert len(gallery) == 8 and len(queries) == 18
    assert gallery[0]["image"].shape == (3, 32, 16)
    q0 = queries.queries[0]
    assert q0.tags["granularity"] == "fine" and q0.tags["source"] in ("UFine6926", "CUHK-PEDES")
    assert q0.tags["words"] == "<=30"
    assert all(gallery.person_ids[q.image_index] == q.person_id for q in queries.queries)
    assert queries.tokens.shape == (18, 20)
    assert np.array_equal(queries.person_ids, [q.person_id for q in queries.queries])


def test_sentence_augmented_captions_per_epoch_and_same_in_both_paths(tmp_path):
    path = make_dataset(tmp_path / "d", "ufine6926", n_images_per_id=3)
    records = json.loads(path.read_text())
    for r in records:  # several sentences per caption, one of them saying "left"
        r["captions"] = [c + ". A bag on the left shoulder. Black shoes. A grey cap. No glasses." for c in r["captions"]]
    path.write_text(json.dumps(records))
    train = load_dataset(path).split("train")
    tok = ClipTokenizer()
    tf = ImageTransform(size=(64, 24), train=True, hflip=True)
    ds = TrainPairs(train, tok, tf, context_length=48, seed=3, in_memory=True, sentence_drop=0.5, sentence_shuffle=True)
    assert ds.text_augmented
    keys = [(i, e) for e in range(3) for i in range(len(ds))]
    batch = ds.batch(keys)
    for k, key in enumerate(keys):  # the batch path and the per-item path give the same tokens
        assert torch.equal(batch["tokens"][k], ds[key]["tokens"])
    per_epoch = batch["tokens"].view(3, len(ds), -1)
    assert not torch.equal(per_epoch[0], per_epoch[1])  # captions change with the epoch
    plain = TrainPairs(train, tok, ImageTransform(size=(64, 24), train=False), context_length=48, seed=3, sentence_drop=0.5)
    assert not plain.text_augmented and torch.equal(plain[(0, 1)]["tokens"], plain.tokens[0])  # evaluation: no text change
