"""The benchmark scripts run end to end at a tiny size (their real figures are in docs/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ufinebench.vocab import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]

VOCAB = load_vocabulary("ufine-synth-1")  # the attribute vocabulary of UFine-Synth's captions


def _claims(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--tiny", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_claims_script_tiny(tmp_path):
    out = tmp_path / "claims"
    _claims(out)
    md = (out / "claims.md").read_text()
    for section in ("### Effects", "### Arms", "### Arms by separating detail", "### D."):
        assert section in md
    res = json.loads((out / "claims.json").read_text())
    assert set(res["runs"]) == {"global", "gran", "cfam", "irra", "cfam_coarse"}  # without --sdm CLIP-SDM is the global model
    assert res["settings"]["alias"] == {"clip-sdm": "global"}
    q = res["queries"]["101"]["3c"]
    assert {"ids", "granularity", "style", "source", "detail", "gallery"} <= set(q) and len(q["ids"]) == len(q["gallery"])
    assert len(q["ids"]) == len(res["runs"]["cfam"]["101"]["0"]["3c"]["rank"]) == res["runs"]["cfam"]["101"]["0"]["3c"]["overall"]["queries"]
    assert all(set(per_data) == {"101"} and set(per_data["101"]) == {"0", "1"} for per_data in res["runs"].values())
    cfg = yaml.safe_load((out / "runs" / "d101" / "irra_s0" / "config.yaml").read_text())
    assert cfg["model"]["mlm"] is True and cfg["train"]["loss_weights"]["id"] == 1.0  # IRRA with MLM and ID
    assert cfg["data"]["attribute_words"] is False  # the paper's parts only
    glob = yaml.safe_load((out / "runs" / "d101" / "global_s0" / "config.yaml").read_text())["model"]
    assert glob["granularity"] is False and glob["matching"] is False
    rows = {r["effect"]: r for r in res["effects"]}
    row = rows["CFAM - IRRA (SDM + MLM + ID), in-domain"]
    runs = res["runs"]
    r1 = {arm: [100 * np.mean(np.asarray(runs[arm]["101"][s]["test"]["rank"]) == 1) for s in ("0", "1")] for arm in ("cfam", "irra")}
    assert r1["cfam"][0] == pytest.approx(runs["cfam"]["101"]["0"]["test"]["overall"]["R1"])  # per-query ranks agree with the summary
    assert row["pairs"] == 2 and row["t_points"]["mean"] == pytest.approx(np.mean(np.subtract(r1["cfam"], r1["irra"])))
    assert row["verdict"] in {"reproduced", "not reproduced", "open"} and row["kind"] == "confirmatory"
    assert rows["CFAM - CLIP-SDM, in-domain"]["b"] == "global"
    assert any(r["kind"] == "exploratory" and r["effect"].startswith("granularity ") for r in res["effects"])  # A's breakdown
    d = res["D"]
    assert 0 <= d["discordant_pairs"] <= d["pairs"] <= 2 * 10 * 9 // 2  # two sets, ten runs each
    assert d["squash"]["original"]["R1"] == d["squash"]["squashed"]["R1"] and d["squash"]["original"]["mSD"] != d["squash"]["squashed"]["mSD"]
    assert (out / "D_original.png").is_file() and (out / "D_squashed.png").is_file()
    # the report is recomputable from the raw results alone
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--from", str(out / "claims.json")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.strip() == md.strip()
    pilot_seed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--tiny", "--out", str(out), "--data-seeds", "100"],
                                capture_output=True, text=True, timeout=300)
    assert pilot_seed.returncode != 0 and "pilot" in pilot_seed.stderr and "Traceback" not in pilot_seed.stderr


def test_claims_script_resumes(tmp_path):
    out = tmp_path / "claims"
    first = _claims(out, "--claims", "B", "--seeds", "0", "--epochs", "2")
    assert first.stdout.count("trained in") == 3  # cfam, irra, global (standing for CLIP-SDM)
    # put global in the state of a run killed during its second epoch: last checkpoint = epoch 1
    run = out / "runs" / "d101" / "global_s0"
    ck = run / "checkpoints"
    assert (ck / "last").read_text().strip() == "epoch_0002"
    (ck / "epoch_0002").rename(ck / "epoch_0001")
    meta = json.loads((ck / "epoch_0001" / "meta.json").read_text())
    (ck / "epoch_0001" / "meta.json").write_text(json.dumps({**meta, "epoch": 0}))
    (ck / "last").write_text("epoch_0001")
    (run / "claims_eval.json").unlink()
    second = _claims(out, "--claims", "B", "--seeds", "0,1", "--epochs", "2")
    assert "d101 cfam seed 0: training kept" in second.stdout and "d101 irra seed 0: training kept" in second.stdout
    assert "d101 global seed 0: resumed after epoch 1" in second.stdout
    assert second.stdout.count("trained in") == 4  # global 0 finished, then the three runs of seed 1
    assert (ck / "last").read_text().strip() == "epoch_0002"
    res = json.loads((out / "claims.json").read_text())
    assert res["runs"]["global"]["101"]["0"]["test"]["overall"]["queries"] > 0 and set(res["runs"]["cfam"]["101"]) == {"0", "1"}
    wrong = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--tiny", "--out", str(out), "--claims", "B",
                            "--seeds", "0", "--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0 and "trained for 2 epochs" in wrong.stderr and "Traceback" not in wrong.stderr


def test_demo_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ufinebench", "demo", "--quick", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout and (tmp_path / "d" / "report" / "index.html").is_file()
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["CFAM 3C"]["overall"]["queries"] > 0 and "rerank" in res["CFAM 3C"]
    # the miniature learns something: its in-domain R1 is above a random ranking's, which the demo prints
    chance = float(proc.stdout.split("chance R1 (a random ranking): in-domain test ")[1].split(",")[0])
    assert res["CFAM in-domain"]["overall"]["R1"] > chance, (res["CFAM in-domain"]["overall"]["R1"], chance)
    again = subprocess.run([sys.executable, "-m", "ufinebench", "demo", "--quick", "--out", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert json.loads((tmp_path / "d" / "results.json").read_text())["CFAM 3C"]["overall"] == res["CFAM 3C"]["overall"]


def test_search_load_script_small():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_load.py"), "--images", "3000", "--requests", "40",
                           "--queries", "10"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flat:" in proc.stdout and "hnsw:" in proc.stdout and "0 errors" in proc.stdout


def test_text_position_probe_rules_move_words_but_keep_them():
    """Each rephrasing keeps the caption's words (bar the added prefix) and moves them as its name says."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("text_position_probe", ROOT / "benchmarks" / "text_position_probe.py")
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    cap = "A young man in a red coat. He wears blue jeans. He carries a black bag."
    rules = probe.RULES
    assert rules["as written"](cap) == cap
    assert rules["'So there's this ' prefix"](cap) == "So there's this a young man in a red coat. He wears blue jeans. He carries a black bag."
    assert rules["semicolons for full stops"](cap) == "A young man in a red coat; He wears blue jeans; He carries a black bag."
    assert rules["sentences reversed"](cap) == "He carries a black bag. He wears blue jeans. A young man in a red coat."
    words = sorted(cap.replace(".", "").replace(";", "").lower().split())
    for name, rule in rules.items():
        extra = {"'So there's this ' prefix": ["so", "there's", "this"], "'Well, ' prefix": ["well,"]}.get(name, [])
        got = sorted(rule(cap).replace(".", "").replace(";", "").lower().split())
        assert got == sorted(words + extra), name


def test_free_text_wordings_name_the_attributes_and_shares_count_them():
    """Each wording of search_free_text.py names the person's gender, top and bottom in its own words
    (never the generator's sentences), and the top-10 shares count what the hits get right."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("search_free_text", ROOT / "benchmarks" / "search_free_text.py")
    assert spec is not None and spec.loader is not None
    free = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(free)
    a = {"gender": "woman", "age": "young", "hair_length": "long", "hair_color": "brown", "outer": "jacket", "outer_color": "red",
         "upper_type": "t-shirt", "upper_color": "white", "lower_type": "jeans", "lower_color": "blue", "shoes_type": "boots",
         "shoes_color": "black", "has_bag": "no", "headwear": "none", "glasses": "none"}
    for name, wording in free.WORDINGS.items():
        text = wording(a, random.Random(0))
        assert "woman" in text and "red jacket" in text and "blue jeans" in text, (name, text)  # the outer layer is the top seen
        assert "She is dressed in" not in text and "complete the outfit" not in text
    b = dict(a, gender="man", outer="none", upper_color="red")  # a man, red t-shirt, blue jeans
    c = dict(a, lower_color="black")  # the same woman in black jeans
    shares = free.attribute_shares(a, [a, b, c, b])
    assert shares == {"gender": 0.5, "top colour": 1.0, "bottom colour": 0.75}


def test_threec_ceiling_counts_the_images_that_fit_every_mention():
    """threec_ceiling.py: a query's ceiling R1 is its person's share of the gallery images whose
    person has every attribute the query mentions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("threec_ceiling", ROOT / "benchmarks" / "threec_ceiling.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    people = {1: {"gender": "man", "top_color": "red"}, 2: {"gender": "man", "top_color": "blue"}, 3: {"gender": "woman", "top_color": "red"}}

    def rec(pid, *mentions):
        return {"id": pid, "caption_tags": [{"granularity": g, "mentions": m} for g, m in mentions]}

    records = [
        rec(1, ("coarse", {"top_color": "red"}), ("fine", {"gender": "man", "top_color": "red"})),  # coarse: 1, 1, 3 fit -> 2/3
        rec(1, ("coarse", {"gender": "man"})),  # 1, 1, 2 fit -> 2/3
        rec(2, ("coarse", {"top_color": "blue"})),  # only 2 -> 1
        rec(3, ("fine", {"gender": "woman", "top_color": "red"})),  # only 3 -> 1
    ]
    got = mod.ceiling(records, people)
    assert got["fine"] == (2, 100.0)  # person 1's two images fit the first fine query: 2/2
    n, r1 = got["coarse"]
    assert n == 3 and abs(r1 - 100 * (2 / 3 + 2 / 3 + 1) / 3) < 1e-9
    # a perfect matcher re-ranking a top k: the first image that fits, in the model's order; none fits: the model's first
    assert mod.perfect_rerank_first([7, 3, 9, 4], [False, False, True, True]) == 9
    assert mod.perfect_rerank_first([7, 3], [False, False]) == 7 and mod.perfect_rerank_first([7, 3], [True, True]) == 7


def test_free_text_queries_file_is_an_annotation_file_eval_reads(tiny_synth, tmp_path):
    """search_free_text.py --write-queries: the split's images, four free descriptions each (one per
    wording, tagged as its granularity), loadable by the annotation reader with paths that resolve; the
    detailed wording puts a shape word on either side of its colour."""
    import importlib.util
    import random

    from ufinebench.data.annotations import load_dataset

    spec = importlib.util.spec_from_file_location("search_free_text", ROOT / "benchmarks" / "search_free_text.py")
    assert spec is not None and spec.loader is not None
    free = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(free)
    records = [r for r in json.loads((tiny_synth / "ufine_synth.json").read_text()) if r["split"] == "test"]
    attrs = {json.loads(line)["id"]: json.loads(line)["attributes"] for line in (tiny_synth / "identities.jsonl").read_text().splitlines()}
    out = tmp_path / "elsewhere" / "free.json"
    out.parent.mkdir()
    assert free._write_queries(records, attrs, tiny_synth, out, seed=0) == 0
    samples = load_dataset(out, split="test").split("test")
    assert len(samples) == len(records) and all(s.image_path.is_file() for s in samples)
    assert all([t["granularity"] for t in s.caption_tags] == list(free.EVAL_WORDINGS) for s in samples)
    a = {"gender": "woman", "age": "young", "hair_length": "long", "hair_color": "brown", "outer": "none", "upper_type": "skirt",
         "upper_color": "white", "upper_sleeve": "long", "lower_type": "skirt", "lower_color": "beige", "lower_length": "knee-length",
         "shoes_type": "boots", "shoes_color": "black"}
    texts = {free.describe_detailed(a, random.Random(s)) for s in range(20)}
    assert any("beige knee-length skirt" in t for t in texts) and any("knee-length beige skirt" in t for t in texts)


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_word_head_probe_scores_each_class_against_the_captions_truth():
    """word_head_probe.py: a class is right when the head's highest output of the class is the group
    the captions name (images naming exactly one), the majority rate beside it; colour words by AUC;
    with pairs, the colour of each slot."""
    from types import SimpleNamespace

    import numpy as np

    ATTRIBUTE_CLASSES = VOCAB.classes
    ATTRIBUTE_SLOTS = tuple(VOCAB.slots)
    N_ATTRIBUTE_GROUPS = VOCAB.n_groups
    N_ATTRIBUTE_PAIRS = VOCAB.n_pairs

    mod = _load_script("word_head_probe")
    assert mod._auc(np.array([True, False, True, False]), np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert mod._auc(np.array([True, False, True, False]), np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    start = {c: sum(len(g) for g in list(ATTRIBUTE_CLASSES.values())[:i]) for i, c in enumerate(ATTRIBUTE_CLASSES)}
    n = N_ATTRIBUTE_GROUPS + N_ATTRIBUTE_PAIRS
    truth = np.zeros((4, n), bool)
    logp = np.full((4, n), -3.0, np.float32)
    for i in range(4):
        truth[i, i % 2] = True  # colour: black / white
        logp[i, i % 2] = -0.1  # colour words read right: AUC 1
        truth[i, start["top"] + i % 2] = True  # hoodie / sweater
        logp[i, start["top"] + i % 2] = -0.1  # top right in all four
        truth[i, start["bottom"]] = True  # jeans for everyone
        logp[i, start["bottom"] + 1] = -0.1  # the head says trousers: bottom wrong in all four
        truth[i, N_ATTRIBUTE_GROUPS + (i % 2) * len(ATTRIBUTE_SLOTS) + 0] = True  # black / white x top
        logp[i, N_ATTRIBUTE_GROUPS + 0] = -0.1  # the head says black x top for all: right for half
    line = mod.head_accuracy(SimpleNamespace(gallery_word_logp=logp), truth, VOCAB)
    assert "colour words AUC 1.000" in line and "top 100 % (50)" in line and "bottom 0 % (100)" in line
    assert "colour of: top 50 %" in line and "shoes" not in line  # a slot no caption gives a colour is left out


def test_word_head_probe_runs_on_a_run_with_a_word_head(tiny_synth, tmp_path):
    """End to end on a tiny run of the preset (word head with pairs): every set gets its line, and a
    perfect check does not lower 3C R1 (a query's own image fits every word the query names, so
    when the model found it first it stays first); a missing run is a one-line error."""
    import re

    from ufinebench.config import load_config
    from ufinebench.training import train

    run = train(load_config("synth-cpu-small", [
        f"data.dataset={tiny_synth / 'ufine_synth.json'}", f"train.out_dir={tmp_path / 'run'}", "model.image_size=64x32", "train.epochs=1",
        "train.max_steps_per_epoch=3", "train.eval_every=0", "train.tensorboard=false", "data.workers=0", "train.batch_size=8"]), progress=False)
    script = str(ROOT / "benchmarks" / "word_head_probe.py")
    proc = subprocess.run([sys.executable, script, "--run", str(run), "--data", str(tiny_synth)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for name in ("train images", "test images", "3C gallery", "colour of:", "one class perfect"):
        assert name in out, out
    m = re.search(r"3C R1 ([\d.]+);.*by a perfect check \(v 4\): ([\d.]+)", out)
    assert m is not None and float(m.group(2)) >= float(m.group(1)), out
    bad = subprocess.run([sys.executable, script, "--run", str(tmp_path / "none"), "--data", str(tiny_synth)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
