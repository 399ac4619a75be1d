"""Evaluation: breakdowns recomputed independently, re-ranking touches only the top K, the report."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from reference import reference_metrics
from test_train import TINY_MODEL
from ufinebench.cli import main
from ufinebench.config import load_config
from ufinebench.data.annotations import load_dataset
from ufinebench.evaluate import blend_name, evaluate_checkpoint, matcher_topk, rerank, rerank_from_logits, tune_rerank_weight
from ufinebench.training import train
from ufinebench.vocab import load_vocabulary

VOCAB = load_vocabulary("ufine-synth-1")  # the attribute vocabulary of UFine-Synth's captions


@pytest.fixture(scope="module")
def tiny_run(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run") / "run"
    cfg = load_config("synth-cpu-small", TINY_MODEL + [
        f"data.dataset={tiny_synth / 'ufine_synth.json'}", f"train.out_dir={out}", "data.workers=0", "data.bpe_vocab_size=300",
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=4", "train.eval_every=1", "train.tensorboard=false",
    ])
    return train(cfg, progress=False)


def test_breakdown_counts_and_figures_recomputed(tiny_synth, tiny_run, tmp_path, capsys):
    data = tiny_synth / "ufine_synth_3c.json"
    out_json, npz = tmp_path / "e.json", tmp_path / "f.npz"
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", str(data), "--json", str(out_json), "--save-features", str(npz)]) == 0
    res = json.loads(out_json.read_text())["models"][0]
    records = json.loads(data.read_text())
    tags = [(r["source"], t["granularity"], t["style"], len(c.split()))
            for r in records for c, t in zip(r["captions"], r["caption_tags"], strict=True)]
    assert res["overall"]["queries"] == len(tags)
    for key, pos in (("source", 0), ("granularity", 1), ("style", 2)):
        want = Counter(t[pos] for t in tags)
        assert {v: d["queries"] for v, d in res["breakdown"][key].items()} == dict(want)
    buckets = Counter("<=30" if n <= 30 else "31-60" if n <= 60 else ">60" for *_, n in tags)
    assert {v: d["queries"] for v, d in res["breakdown"]["words"].items()} == dict(buckets)
    # subsets in their natural order (coarse to fine, short to long), the rest by name
    assert list(res["breakdown"]["granularity"]) == [g for g in ("coarse", "medium", "fine") if g in res["breakdown"]["granularity"]]
    assert list(res["breakdown"]["words"]) == [b for b in ("<=30", "31-60", ">60") if b in buckets]
    assert list(res["breakdown"]["style"]) == sorted(res["breakdown"]["style"])
    z = np.load(npz)
    q, g = z["query_features"], z["gallery_features"]
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    ref_all = reference_metrics(sim, z["query_ids"], z["gallery_ids"])["summary"]
    assert res["overall"] == pytest.approx(ref_all, abs=1e-4)
    fine = np.asarray([t[1] == "fine" for t in tags])
    ref_fine = reference_metrics(sim[fine], z["query_ids"][fine], z["gallery_ids"])["summary"]
    assert res["breakdown"]["granularity"]["fine"] == pytest.approx(ref_fine, abs=1e-4)


def test_granularity_weight_rescores_one_run(tiny_synth, tiny_run):
    """``granularity_weight`` W (eval's --granularity-weight): a CFAM run's scores become
    (global cosine + W * mean granularity cosine) / (1 + W), recomputed here from the encoders."""
    from ufinebench.data.transforms import load_image
    from ufinebench.model.checkpoint import from_checkpoint

    samples = load_dataset(tiny_synth / "ufine_synth_3c.json", split="test").split("test")
    loaded = from_checkpoint(tiny_run)
    m = loaded.model.eval()
    unit = torch.nn.functional.normalize
    scores = {}
    for w in (0.0, 0.25, 1.0):
        res = evaluate_checkpoint(str(tiny_run), samples, granularity_weight=w)
        assert res["granularity_weight"] == w
        f = res["_features"]
        q = f.query_features[:2] / np.linalg.norm(f.query_features[:2], axis=1, keepdims=True)  # (2, F)
        g = f.gallery_features[:3] / np.linalg.norm(f.gallery_features[:3], axis=1, keepdims=True)  # (3, F)
        scores[w] = q @ g.T  # (2, 3)
        with torch.no_grad():
            t = m.encode_text(loaded.tokenizer.encode(list(f.query_texts[:2]), loaded.context_length))
            i = m.encode_image(torch.stack([loaded.transform(load_image(p)) for p in f.gallery_paths[:3]]))
        glob = unit(t["global"].float(), dim=-1) @ unit(i["global"].float(), dim=-1).T  # (2, 3)
        gran = torch.einsum("qkd,gkd->qgk", unit(t["granular"].float(), dim=-1), unit(i["granular"].float(), dim=-1)).mean(-1)  # (2, 3)
        assert np.allclose(scores[w], ((glob + w * gran) / (1 + w)).numpy(), atol=2e-3), w
    assert not np.allclose(scores[0.0], scores[1.0], atol=1e-3)  # the weight does change the scores


def test_rerank_reorders_only_the_top_k(tiny_synth, tiny_run):
    samples = load_dataset(tiny_synth / "ufine_synth_3c.json").split("test")
    out = evaluate_checkpoint(str(tiny_run), samples, rerank_topk=3)
    f = out["_features"]
    from ufinebench.model.checkpoint import from_checkpoint

    model = from_checkpoint(tiny_run).model
    rr, secs, top, order = rerank(model, f, 3)
    q, g = f.query_features, f.gallery_features
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = qn @ gn.T
    assert out["rerank"]["overall"]["queries"] == out["overall"]["queries"] and secs >= 0
    for i in range(len(q)):
        assert sorted(order[i].tolist()) == [0, 1, 2]
        first = rr.per_query.first_hit_rank[i]
        hits_top = [j for j in top[i] if f.gallery_ids[j] == f.query_ids[i]]
        if hits_top:  # the first positive stays within the top 3
            assert first <= 3
        else:  # nothing in the top 3: ranks beyond it are the dual encoder's
            assert first == out["_features"].per_query.first_hit_rank[i]
    # the dual encoder's own top 3 is what was re-ordered
    assert all(set(top[i].tolist()) == set(np.argsort(-sim[i], kind="stable")[:3].tolist()) for i in range(len(q)))


def test_rerank_blend_weights_and_tuning(tiny_synth, tiny_run):
    from ufinebench.model.checkpoint import from_checkpoint, read_meta, resolve_checkpoint

    samples = load_dataset(tiny_synth / "ufine_synth_3c.json").split("test")
    out = evaluate_checkpoint(str(tiny_run), samples, rerank_topk=4, rerank_weight=None)
    f, model = out["_features"], from_checkpoint(tiny_run).model
    top, cos, logits = matcher_topk(model, f, 4)
    assert (np.diff(cos, axis=1) <= 1e-6).all()  # the dual encoder's top 4, best first
    # weight 0 keeps the dual encoder's order: exactly the plain metrics
    same, order0 = rerank_from_logits(f, top, cos, logits, 0.0, 10.0)
    assert (order0 == np.arange(4)).all() and same.as_dict() == pytest.approx(out["overall"], abs=1e-6)
    # weight None: the matcher's order alone, as evaluate_checkpoint reported it
    alone, order_m = rerank_from_logits(f, top, cos, logits, None, 10.0)
    assert (order_m == np.argsort(-logits, axis=1, kind="stable")).all() and alone.as_dict() == pytest.approx(out["rerank"]["overall"], abs=1e-6)
    # in between, the blend's order sorts scale * cos + w * logit
    _, order_b = rerank_from_logits(f, top, cos, logits, 1.0, 10.0)
    blend = np.take_along_axis(10.0 * cos + logits, order_b, axis=1)
    assert (np.diff(blend, axis=1) <= 1e-5).all()
    best, grid = tune_rerank_weight(model, f, 4)  # the preset's model has a word head: the check's weights too
    w, v = best.matcher, best.check
    assert best.topk == 4 and all(s.blend.topk == 4 for s in grid)
    table = {s.blend.name: s.R1 for s in grid}
    maps = {s.blend.name: s.mAP for s in grid}
    key = {k: (table[k], maps[k]) for k in table}  # R1, then mAP
    chosen = blend_name(w, v)
    assert chosen == best.name and key[chosen] == max(key.values())
    plain = {k: x for k, x in key.items() if k != "matcher" and "check" not in k}  # full ties -> smaller
    assert all(x < key[chosen] for k, x in plain.items() if w is not None and v == 0 and float(k) < w)
    for name, w_ in (("0", 0.0), ("1", 1.0)):  # the tables are the re-ranked metrics at each weight
        m = rerank_from_logits(f, top, cos, logits, w_, float(model.logit_scale.exp()), per_query=False)[0].as_dict()
        assert (table[name], maps[name]) == pytest.approx((m["R1"], m["mAP"]), abs=1e-3)
    # training tuned a weight on val and kept it in the checkpoint; eval uses it by default
    meta = read_meta(resolve_checkpoint(tiny_run, "last"))
    assert "rerank_weight" in meta and {0.0, 0.25, 0.5, 1.0, 2.0, 4.0, None} <= {e["matcher"] for e in meta["rerank_val"]}
    assert evaluate_checkpoint(str(tiny_run), samples, rerank_topk=4)["rerank"]["weight"] == meta["rerank_weight"]
    # re-ranked R1 per tag value; at weight 0 (order unchanged) the plain breakdown's
    zero = evaluate_checkpoint(str(tiny_run), samples, rerank_topk=4, rerank_weight=0.0, check_weight=0.0)
    for key, rows in zero["breakdown"].items():
        assert zero["rerank"]["R1_by"][key] == pytest.approx({v: d["R1"] for v, d in rows.items()}, abs=1e-9), key


def test_report_is_self_contained(tiny_synth, tiny_run, tmp_path, capsys):
    rep = tmp_path / "rep"
    assert main(["eval", "--checkpoint", str(tiny_run), "--checkpoint", str(tiny_run), "--data", str(tiny_synth / "ufine_synth_3c.json"),
                 "--report", str(rep), "--rerank-topk", "2"]) == 0
    page = (rep / "index.html").read_text()
    assert "<table>" in page and "CMC" in page and "worst by AP" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert page.count("data:image/png;base64,") >= 5 and page.count("data:image/jpeg;base64,") >= 80
    assert "run&#x27;" in page  # the second copy of the same run gets its own name (escaped)


def test_compare_and_errors(tiny_synth, tiny_run, tmp_path, capsys):
    j = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", str(tiny_synth / "ufine_synth.json"), "--json", str(j)]) == 0
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"R1": 1.0, "R5": 2.0, "R10": 3.0, "mAP": 4.0, "mINP": 5.0, "mSD": 6.0, "queries": 7}))
    capsys.readouterr()
    assert main(["compare", str(j), str(m), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| model") and "| m " in out and "run" in out
    for argv in (["eval", "--checkpoint", str(tmp_path / "nope"), "--data", str(tiny_synth)],
                 ["eval", "--checkpoint", str(tiny_run), "--data", str(tmp_path / "none.json")],
                 ["compare", str(tmp_path / "none.json")],
                 ["eval", "--checkpoint", str(tiny_run), "--data", str(tiny_synth), "--granularity-weight", "-1"],
                 ["eval", "--checkpoint", str(tiny_run), "--data", str(tiny_synth), "--granularity-weight", "nan"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _encode_worker(rank: int, world: int, port: int, run: str, data: str, out: str) -> None:
    import os

    import torch.distributed as dist

    from ufinebench.evaluate import extract_features
    from ufinebench.model.checkpoint import from_checkpoint

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    lm = from_checkpoint(run)
    f = extract_features(lm.model, load_dataset(data).split("test"), lm.tokenizer, lm.transform, batch_size=4)
    if rank == 0:
        np.savez(out, q=f.query_features, g=f.gallery_features)
    dist.destroy_process_group()


def test_encoding_shared_by_two_processes_equals_one(tiny_synth, tiny_run, tmp_path):
    import torch.multiprocessing as mp

    from test_train import _free_port
    from ufinebench.evaluate import extract_features
    from ufinebench.model.checkpoint import from_checkpoint

    data = str(tiny_synth / "ufine_synth_3c.json")
    mp.spawn(_encode_worker, args=(2, _free_port(), str(tiny_run), data, str(tmp_path / "two.npz")), nprocs=2, join=True)
    lm = from_checkpoint(tiny_run)
    one = extract_features(lm.model, load_dataset(data).split("test"), lm.tokenizer, lm.transform, batch_size=4)
    two = np.load(tmp_path / "two.npz")
    assert two["g"].shape == one.gallery_features.shape and two["q"].shape == one.query_features.shape
    np.testing.assert_allclose(two["g"], one.gallery_features, atol=1e-5)
    np.testing.assert_allclose(two["q"], one.query_features, atol=1e-5)


def test_attribute_check_is_the_mean_log_probability_of_the_words_the_query_names():
    """The re-ranker's attribute check: per query and top-k image, the mean over the query's named
    attribute groups of the image's log-probability; 0 for a query naming none; None without a word head."""
    from types import SimpleNamespace

    from ufinebench.evaluate import attribute_check

    logp = np.log(np.array([[0.9, 0.1, 0.5, 0.2], [0.2, 0.8, 0.5, 0.6], [0.5, 0.5, 0.1, 0.9]], dtype=np.float32))  # (G=3, groups=4)
    named = np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)  # query 0 names groups 0 and 3; query 1 none
    top = np.array([[0, 1, 2], [1, 2, 0]])
    got = attribute_check(logp, named, top)
    assert got is not None and got.shape == (2, 3)
    want = [[(logp[j, 0] + logp[j, 3]) / 2 for j in top[0]], [0.0, 0.0, 0.0]]
    assert np.allclose(got, want)
    assert attribute_check(None, None, top) is None
    # the blend adds check_weight * check to scale * cos + w * logit
    f = SimpleNamespace(query_features=np.eye(2, 3, dtype=np.float32), gallery_features=np.eye(3, dtype=np.float32),
                        query_ids=np.array([1, 2]), gallery_ids=np.array([1, 2, 3]))
    cos, logits = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]]), np.zeros((2, 3))
    _, plain = rerank_from_logits(f, top, cos, logits, 0.0, 10.0, check=got, check_weight=0.0)
    _, checked = rerank_from_logits(f, top, cos, logits, 0.0, 10.0, check=got, check_weight=8.0)
    assert (plain == np.arange(3)).all()
    assert checked[0].tolist() == np.argsort(-(10.0 * cos[0] + 8.0 * got[0]), kind="stable").tolist() and checked[0][0] == 2  # image 2 has both words
    assert (checked[1] == np.arange(3)).all()  # a query naming nothing keeps the dual encoder's order


def test_training_with_a_word_head_tunes_the_attribute_check_on_val_and_eval_uses_it(tiny_synth, tmp_path):
    """data.attribute_words: validation tunes (matcher weight, check weight) on val's captions and
    their shortened copies; the checkpoint keeps both and ``evaluate_checkpoint`` uses them."""
    from ufinebench.config import load_config
    from ufinebench.evaluate import CHECK_WEIGHTS, extract_features
    from ufinebench.model.checkpoint import from_checkpoint, read_meta, resolve_checkpoint
    from ufinebench.training import train

    N_ATTRIBUTE_GROUPS, N_ATTRIBUTE_PAIRS = VOCAB.n_groups, VOCAB.n_pairs
    over = [f"data.dataset={tiny_synth / 'ufine_synth.json'}", f"train.out_dir={tmp_path / 'run'}", "train.epochs=1", "train.eval_every=1",
            "train.max_steps_per_epoch=3", "data.attribute_words=true", "data.attribute_pairs=true", "model.word_head_input=map"]
    run = train(load_config("synth-cpu-small", over), progress=False)
    meta = read_meta(resolve_checkpoint(run, "last"))
    assert meta["rerank_check_weight"] in CHECK_WEIGHTS
    assert meta["rerank_topk"] == 10  # the depth the blend was chosen at
    tried = {(e["matcher"], e["check"]) for e in meta["rerank_val"]}
    assert {(0.0, 0.0), (0.0, 4.0), (2.0, 8.0), (None, 0.0)} <= tried and all(e["topk"] == 10 for e in meta["rerank_val"])
    samples = load_dataset(tiny_synth / "ufine_synth_3c.json").split("test")
    out = evaluate_checkpoint(str(run), samples, rerank_topk=4)
    assert out["rerank"]["check_weight"] == meta["rerank_check_weight"]
    assert evaluate_checkpoint(str(run), samples, rerank_topk=4, check_weight=2.0)["rerank"]["check_weight"] == 2.0
    loaded = from_checkpoint(run)
    assert loaded.vocabulary == VOCAB  # UFine-Synth's vocabulary.json, kept in the checkpoint
    f = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, keep_tokens=True, vocabulary=loaded.vocabulary)
    assert f.gallery_word_logp.shape[0] == len(f.gallery_ids) and (f.gallery_word_logp <= 0).all()
    assert f.query_word_groups.shape[0] == len(f.query_ids) and f.query_word_groups.any(1).mean() > 0.5
    n = N_ATTRIBUTE_GROUPS + N_ATTRIBUTE_PAIRS  # data.attribute_pairs: the pairs' outputs follow the words'
    assert f.gallery_word_logp.shape[1] == f.query_word_groups.shape[1] == n
    assert f.query_word_groups[:, N_ATTRIBUTE_GROUPS:].any(1).mean() > 0.5  # fine captions give their garments colours


def test_bad_blend_weights_are_one_line_errors_naming_the_flag(tiny_synth, tiny_run, capsys):
    data = str(tiny_synth / "ufine_synth_3c.json")
    for flag, value in (("--rerank-weight", "-1"), ("--rerank-weight", "lots"), ("--check-weight", "nan"), ("--check-weight", "x")):
        assert main(["eval", "--checkpoint", str(tiny_run), "--data", data, "--rerank-topk", "4", flag, value]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err, err


def test_rerank_at_another_depth_than_the_tuned_one_says_so(tiny_synth, tiny_run, capsys):
    """The checkpoint keeps the depth its blend was chosen at (10); re-ranking another top K with that
    blend carries a note (and ``eval`` prints it); the tuned depth, or weights given by hand, do not."""
    from ufinebench.evaluate import RerankBlend
    from ufinebench.model.checkpoint import read_meta, resolve_checkpoint

    meta = read_meta(resolve_checkpoint(tiny_run))
    assert RerankBlend.from_meta(meta).topk == 10 and RerankBlend.from_meta({}) == RerankBlend(None, 0.0, 10)
    samples = load_dataset(tiny_synth / "ufine_synth_3c.json").split("test")
    assert "note" not in evaluate_checkpoint(str(tiny_run), samples, rerank_topk=10)["rerank"]
    assert "chosen on val at top 10; re-ranking top 4" in evaluate_checkpoint(str(tiny_run), samples, rerank_topk=4)["rerank"]["note"]
    assert "note" not in evaluate_checkpoint(str(tiny_run), samples, rerank_topk=4, rerank_weight=1.0, check_weight=0.0)["rerank"]
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", str(tiny_synth / "ufine_synth_3c.json"), "--rerank-topk", "4"]) == 0
    assert "re-ranking top 4 uses it unchanged" in capsys.readouterr().err
