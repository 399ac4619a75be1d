"""`eval --scores`: any model's scores, matched to the dataset by keys, scored like ours.

The "model that is not ours" is a toy encoder written here (colour histograms of the images,
hashed bag of words for the texts, one random projection each) whose features are exported the
way a user would: by reading the annotation file with `json`, not through ufinebench.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from reference import reference_metrics
from ufinebench.cli import main
from ufinebench.data.annotations import load_dataset
from ufinebench.evaluate import evaluate_scores
from ufinebench.significance import paired_bootstrap

DIM = 16


def _toy_image(path) -> np.ndarray:
    with Image.open(path) as im:
        x = np.asarray(im.convert("RGB").resize((16, 32)), dtype=np.float32) / 255.0
    hist = [np.histogram(x[..., c], bins=4, range=(0, 1))[0] for c in range(3)]  # top and bottom would be better; it is a toy
    return np.concatenate(hist).astype(np.float32)


def _toy_text(text: str) -> np.ndarray:
    v = np.zeros(64, np.float32)
    for w in re.findall(r"[a-z]+", text.lower()):
        v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    return v


@pytest.fixture(scope="module")
def exported(tiny_synth, tmp_path_factory):
    """Query/gallery features of the 3C-style test split, in the annotation's own order, and their keys."""
    ann_path = tiny_synth / "ufine_synth_3c.json"
    records = [r for r in json.loads(ann_path.read_text()) if r["split"] == "test"]
    rng = np.random.default_rng(0)
    pi, pt = rng.standard_normal((12, DIM)), rng.standard_normal((64, DIM))
    gkeys, gfeat, seen = [], [], set()
    for r in records:
        if r["file_path"] not in seen:
            seen.add(r["file_path"])
            gkeys.append(r["file_path"])
            gfeat.append(_toy_image(tiny_synth / r["file_path"]) @ pi)
    qkeys = [f"{r['file_path']}#{n}" for r in records for n in range(len(r["captions"]))]
    qfeat = [_toy_text(c) @ pt for r in records for c in r["captions"]]
    ids_q = np.asarray([r["id"] for r in records for _ in r["captions"]])
    ids_g = np.asarray([next(r["id"] for r in records if r["file_path"] == k) for k in gkeys])
    return {"ann": ann_path, "records": records, "qkeys": qkeys, "gkeys": gkeys, "q": np.asarray(qfeat, np.float32),
            "g": np.asarray(gfeat, np.float32), "ids_q": ids_q, "ids_g": ids_g, "dir": tmp_path_factory.mktemp("scores")}


def _cos(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T


def test_scores_by_keys_in_any_order_equal_written_order_and_the_reference(exported, capsys):
    e, d = exported, exported["dir"]
    sim = _cos(e["q"], e["g"]).astype(np.float32)  # (Q, G)
    assert main(["eval", "--data", str(e["ann"]), "--write-order", str(d / "order.json")]) == 0
    order = json.loads((d / "order.json").read_text())
    assert order["query_keys"] == e["qkeys"] and order["gallery_keys"] == e["gkeys"]  # the annotation's order
    np.savez(d / "ordered.npz", similarity=sim)
    rng = np.random.default_rng(1)
    pq, pg = rng.permutation(len(e["qkeys"])), rng.permutation(len(e["gkeys"]))
    np.savez(d / "shuffled.npz", similarity=sim[pq][:, pg], query_keys=np.asarray(e["qkeys"])[pq], gallery_keys=np.asarray(e["gkeys"])[pg])
    np.savez(d / "features.npz", query_features=e["q"][pq], gallery_features=e["g"], query_keys=np.asarray(e["qkeys"])[pq],
             gallery_keys=np.asarray(e["gkeys"]))
    for name in ("ordered", "shuffled", "features"):
        assert main(["eval", "--data", str(e["ann"]), "--scores", str(d / f"{name}.npz"), "--json", str(d / f"{name}.json")]) == 0
    capsys.readouterr()
    res = {n: json.loads((d / f"{n}.json").read_text())["models"][0] for n in ("ordered", "shuffled", "features")}
    for n in ("shuffled", "features"):
        assert res[n]["overall"] == pytest.approx(res["ordered"]["overall"], abs=1e-5), n
        for key, cells in res["ordered"]["breakdown"].items():
            for value, m in cells.items():
                assert res[n]["breakdown"][key][value]["R1"] == pytest.approx(m["R1"], abs=1e-5), (n, key, value)
    ref = reference_metrics(sim, e["ids_q"], e["ids_g"], ks=(1, 5, 10))["summary"]
    for k, v in ref.items():
        assert res["ordered"]["overall"][k] == pytest.approx(v, abs=1e-4), k
    # breakdown counts against the annotation
    by_gran: dict[str, int] = {}
    for r in e["records"]:
        for t in r["caption_tags"]:
            by_gran[t["granularity"]] = by_gran.get(t["granularity"], 0) + 1
    got = {g: v["queries"] + v["queries_without_positive"] for g, v in res["shuffled"]["breakdown"]["granularity"].items()}
    assert got == by_gran
    # per-query results are saved, keyed, and average to the summary
    pq_rec = res["shuffled"]["per_query"]
    assert pq_rec["query_keys"] == e["qkeys"]
    r1 = [x for x in pq_rec["R1"] if x is not None]
    assert np.mean(r1) == pytest.approx(res["shuffled"]["overall"]["R1"], abs=1e-6)


def test_key_mismatches_are_named(exported, capsys):
    e, d = exported, exported["dir"]
    sim = _cos(e["q"], e["g"]).astype(np.float32)
    keys = list(e["qkeys"])
    keys[0] = "images/not_there.jpg#0"
    np.savez(d / "bad.npz", similarity=sim, query_keys=np.asarray(keys), gallery_keys=np.asarray(e["gkeys"]))
    assert main(["eval", "--data", str(e["ann"]), "--scores", str(d / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "1 missing" in err and e["qkeys"][0] in err and "not_there.jpg#0" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--data", str(e["ann"]), "--scores", str(d / "bad.npz"), "--save-features", str(d / "f.npz")]) == 2
    assert "--save-features" in capsys.readouterr().err and not (d / "f.npz").exists()
    np.savez(d / "short.npz", similarity=sim[:-1])
    assert main(["eval", "--data", str(e["ann"]), "--scores", str(d / "short.npz")]) == 2
    assert "--write-order" in capsys.readouterr().err
    with pytest.raises(Exception, match="repeat"):
        samples = load_dataset(e["ann"], split="test").split("test")
        evaluate_scores(sim, [e["qkeys"][0]] * len(keys), e["gkeys"], samples)


def test_report_and_compare_from_scores_alone(exported, tmp_path, capsys):
    e = exported
    # the annotation without its images: the report still renders, with a note instead of thumbnails
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(e["ann"], lone / "ufine_synth_3c.json")
    sim_a = _cos(e["q"], e["g"]).astype(np.float32)
    rng = np.random.default_rng(5)
    sim_b = (sim_a + rng.normal(0, 0.3, sim_a.shape)).astype(np.float32)  # a worse model
    np.savez(tmp_path / "a.npz", similarity=sim_a)
    np.savez(tmp_path / "b.npz", similarity=sim_b)
    args = ["eval", "--data", str(lone / "ufine_synth_3c.json"), "--scores", str(tmp_path / "a.npz"), "--scores", str(tmp_path / "b.npz"),
            "--name", "toy", "--name", "noisy", "--json", str(tmp_path / "ab.json"), "--report", str(tmp_path / "rep")]
    assert main(args) == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "toy" in page and "noisy" in page and "are not where the annotation says" in page
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ab.json"), "--bootstrap", "500"]) == 0
    out = capsys.readouterr().out
    assert "paired bootstrap" in out and "toy - noisy" in out
    models = json.loads((tmp_path / "ab.json").read_text())["models"]
    a, b = models[0]["per_query"], models[1]["per_query"]
    iv = paired_bootstrap(a["R1"], b["R1"], n_boot=500, seed=0)
    assert f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]" in out  # recomputable from the saved per-query results
    assert iv.mean == pytest.approx(models[0]["overall"]["R1"] - models[1]["overall"]["R1"], abs=1e-6)


def test_paired_bootstrap_basics():
    a = [1.0, 0.0, 1.0, 1.0, None, 0.0]
    iv = paired_bootstrap(a, a, n_boot=200)
    assert iv.mean == iv.low == iv.high == 0.0 and iv.n == 5
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 400)
    iv = paired_bootstrap(x.tolist(), [0.0] * 400, n_boot=1000, seed=3)
    assert iv.low < 1.0 < iv.high and iv.high - iv.low == pytest.approx(2 * 1.96 * 1.0 / 20, rel=0.2)
    assert paired_bootstrap(x.tolist(), [0.0] * 400, n_boot=1000, seed=3) == iv  # seeded: reproducible


def test_the_documented_example_runs(tiny_synth, tmp_path, capsys):
    """examples/own_model_scores.py (the worked example of docs/evaluation.md), then `eval --scores` on its output."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "own_model_scores.py"
    out = tmp_path / "mine.npz"
    proc = subprocess.run([sys.executable, str(script), str(tiny_synth / "ufine_synth_3c.json"), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(["eval", "--data", str(tiny_synth / "ufine_synth_3c.json"), "--scores", str(out), "--name", "mine",
                 "--json", str(tmp_path / "mine.json")]) == 0
    res = json.loads((tmp_path / "mine.json").read_text())["models"][0]
    records = [r for r in json.loads((tiny_synth / "ufine_synth_3c.json").read_text()) if r["split"] == "test"]
    total = res["overall"]["queries"] + res["overall"]["queries_without_positive"]
    assert res["name"] == "mine" and total == sum(len(r["captions"]) for r in records)
