"""The main job, ``ufinebench demo``: the whole system on the embedded benchmark.

1. generate UFine-Synth (sized for 2 CPU cores),
2. train the ``synth-cpu-small`` CFAM on its fine captions,
3. evaluate in-domain (the test split) and on the 3C-style set (held-out domains, granularities,
   styles), with matcher re-ranking of the top 10,
4. write the HTML report and print the tables.

A rerun reuses what exists (the data; a finished training, or resumes an interrupted one) unless
``--fresh``. ``--quick`` is a one-to-two-minute miniature used by the tests (it ranks above chance, no more).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.config import load_config
from ufinebench.data.annotations import Sample, load_dataset, subset_sort_key
from ufinebench.evaluate import evaluate_checkpoint
from ufinebench.io import write_json
from ufinebench.model.checkpoint import CheckpointError, read_meta, resolve_checkpoint
from ufinebench.outputs import add_entries, claim_dir, output_lock, remove_owned
from ufinebench.report import write_report
from ufinebench.synth.build import SynthConfig, build, dataset_ceilings
from ufinebench.tables import format_table
from ufinebench.training import train
from ufinebench.vocab import VOCAB_FILE


@dataclass(frozen=True)
class DemoPlan:
    identities: int
    size: str
    epochs: int
    max_steps: int  # 0: whole epochs
    eval_every: int
    rerank_topk: int


# 1,000 identities on UFine-Synth standard: 700 to train on, 200 in the in-domain test gallery, 325 more in
# the 3C set; at 256 x 96, 18 epochs (1,332 steps, bf16 autocast on CPUs that have it) took 422 s on the 2-core
# development machine (~21 s an epoch), the whole demo 452 s, 8 min 42 s with the first-time set-up (2026-12-08).
FULL = DemoPlan(identities=1000, size="256x96", epochs=18, max_steps=0, eval_every=9, rerank_topk=10)
DEMO_DIFFICULTY = "standard"  # look-alike families, annotators who differ, everyday language, a real domain test
QUICK = DemoPlan(identities=100, size="64x32", epochs=4, max_steps=0, eval_every=0, rerank_topk=5)


def chance_r1(samples: list[Sample]) -> float:
    """R1 (%) of a random ranking: the mean over queries (captions) of the share of gallery images that are the query's person's."""
    images: dict[Any, int] = {}
    for sm in samples:
        images.setdefault(sm.image_path, sm.person_id)
    per_person = Counter(images.values())
    queries = [(len(sm.captions), per_person[sm.person_id]) for sm in samples]
    n = sum(q for q, _ in queries)
    return 100.0 * sum(q * k for q, k in queries) / max(1, n) / max(1, len(images))


def _say(msg: str) -> None:
    print(msg, flush=True)


DEMO_ENTRIES = ("data", "run", "report", "results.json", "data.options.json")


def run_demo(out: str | Path = "demo_out", *, quick: bool = False, fresh: bool = False, force: bool = False) -> int:
    """Run (or resume) the demo under ``out``; returns the exit code.

    ``out`` is the demo's own folder: one written by something else needs ``force`` (its files
    are kept), and ``fresh`` deletes only what the demo wrote there.
    """

    with output_lock(out):
        return _run_demo(Path(out), quick=quick, fresh=fresh, force=force)


def _weight_text(weight: float | None, check: float = 0.0) -> str:
    """How the re-ranking blended: the weights training chose on val, or the matcher alone."""
    if weight is None:
        return "matcher alone"
    if weight == 0 and not check:
        return "weight 0 chosen on val: the matcher did not help there, order unchanged"
    parts = ([f"{weight:g} x matcher"] if weight else []) + ([f"{check:g} x attribute check"] if check else [])
    return "cos/T + " + " + ".join(parts) + ", chosen on val"


def _make_data(out: Path, data: Path, plan: DemoPlan, progress: bool) -> bool:
    """Generate the plan's UFine-Synth into ``data`` unless it is there already; whether it was (re)generated."""
    h, w = (int(x) for x in plan.size.split("x"))
    stamp = out / "data.options.json"
    wanted = json.dumps({"identities": plan.identities, "size": plan.size, "seed": 0, "difficulty": DEMO_DIFFICULTY})
    if (data / "ufine_synth.json").is_file() and (data / VOCAB_FILE).is_file() and stamp.is_file() and stamp.read_text() == wanted:
        _say(f"[1/4] data: reusing {data}")
        return False
    _say(f"[1/4] data: generating UFine-Synth ({DEMO_DIFFICULTY}), {plan.identities} identities at {plan.size} ...")
    synth_cfg = SynthConfig(identities=plan.identities, images_per_id=(2, 5), size=(h, w), seed=0, difficulty=DEMO_DIFFICULTY)
    s = build(data, synth_cfg, workers=os.cpu_count() or 1, overwrite=True, progress=progress)
    stamp.write_text(wanted)
    amb = ", ".join(f"{g} {v:.2f}" for g, v in sorted(s["ambiguity_test_identities"].items(), key=lambda gv: subset_sort_key(gv[0])))
    _say(f"      {s['images']} images in {s['seconds']:.1f} s; test identities fitting a caption: {amb}")
    return True


def _run_demo(out: Path, *, quick: bool, fresh: bool, force: bool) -> int:
    plan = QUICK if quick else FULL
    claim_dir(out, "demo", force=force)
    if fresh:
        remove_owned(out, "demo")
    add_entries(out, "demo", DEMO_ENTRIES)
    data, run = out / "data", out / "run"
    t_start = time.perf_counter()
    progress = sys.stderr.isatty()

    # 1. data ----------------------------------------------------------------------------------
    if _make_data(out, data, plan, progress):
        remove_owned(run, "train")  # a run trained on other data (another plan, an older generator) starts over

    # 2. training -------------------------------------------------------------------------------
    overrides = [f"data.dataset={data / 'ufine_synth.json'}", f"train.out_dir={run}", f"train.epochs={plan.epochs}",
                 f"train.max_steps_per_epoch={plan.max_steps}", f"train.eval_every={plan.eval_every}", f"model.image_size={plan.size}"]
    if quick:
        overrides += ["model.vision_stem=1", "model.embed_dim=64", "model.vision_width=64", "model.text_width=64", "model.text_layers=1",
                      "data.bpe_vocab_size=400", "data.workers=1", "train.batch_size=16"]
    cfg = load_config("synth-cpu-small", overrides)
    try:
        last = read_meta(resolve_checkpoint(run, "last"))
        done = int(last["epoch"]) + 1
    except CheckpointError:
        done = 0
    t0 = time.perf_counter()
    if done >= plan.epochs:
        _say(f"[2/4] training: reusing the finished run {run}")
    elif done > 0:
        _say(f"[2/4] training: resuming {run} after epoch {done} ...")
        train(resume=run, progress=progress)
    else:
        remove_owned(run, "train")  # an interrupted start with no checkpoint yet
        _say(f"[2/4] training CFAM (synth-cpu-small) for {plan.epochs} epochs on the train split ...")
        train(cfg, progress=progress)
    if done < plan.epochs:
        _say(f"      trained in {time.perf_counter() - t0:.0f} s; checkpoints in {run / 'checkpoints'}")

    # 3. evaluation -----------------------------------------------------------------------------
    _say("[3/4] evaluating in-domain (test split) and on the 3C-style set ...")
    indomain_samples = load_dataset(data / "ufine_synth.json", split="test").split("test")
    threec_samples = load_dataset(data / "ufine_synth_3c.json", split="test").split("test")
    indomain = evaluate_checkpoint(str(run), indomain_samples, rerank_topk=plan.rerank_topk, progress=progress)
    threec = evaluate_checkpoint(str(run), threec_samples, rerank_topk=plan.rerank_topk, progress=progress)
    indomain["name"], threec["name"] = "CFAM in-domain", "CFAM 3C"
    write_json(out / "results.json", {k["name"]: {kk: v for kk, v in k.items() if not kk.startswith("_")} for k in (indomain, threec)})

    # 4. report ---------------------------------------------------------------------------------
    threec["name"] = "CFAM (synth-cpu-small)"
    page = write_report([threec], out / "report", dataset=str(data / "ufine_synth_3c.json"), split="test")
    _say("[4/4] report written\n")
    blend = _weight_text(threec["rerank"]["weight"], threec["rerank"].get("check_weight", 0.0))
    rows = {
        f"in-domain test ({indomain['overall']['queries']} queries)": indomain["overall"],
        f"in-domain + re-rank top {plan.rerank_topk}": indomain["rerank"]["overall"],
        f"3C set ({threec['overall']['queries']} queries)": threec["overall"],
        f"3C set + re-rank top {plan.rerank_topk} ({blend})": threec["rerank"]["overall"],
    }
    print(format_table(rows, extra=()))
    print(f"\nchance R1 (a random ranking): in-domain test {chance_r1(indomain_samples):.1f}, 3C set {chance_r1(threec_samples):.1f}"
          + ("; a miniature (--quick): its figures show the pipeline runs, not what the recipe reaches" if quick else ""))
    ceilings = dataset_ceilings(data)
    print("\nceiling R1 (a perfect attribute reader; read R1 against it): " + ", ".join(f"{k} {v:.1f}" for k, v in ceilings.items()))
    detail = indomain["breakdown"].get("detail", {})
    if detail:
        single = {k: v["R1"] for k, v in detail.items() if "+" not in k}
        inside = sorted(v for k, v in single.items() if k != "none")
        median = f"; median inside families {float(np.median(inside)):.1f}" if inside else ""
        print("in-domain R1 by separating detail (look-alike families; 'none': no look-alike): "
              + ", ".join(f"{k} {r1:.1f}" for k, r1 in sorted(single.items(), key=lambda kv: -kv[1])) + median)
    for key in ("granularity", "style", "source", "gallery"):
        table = {f"3C {key} = {v}": d for v, d in threec["breakdown"].get(key, {}).items()}
        if table:
            print()
            print(format_table(table))
            rr = threec["rerank"].get("R1_by", {}).get(key, {})
            if key == "granularity" and rr:
                print("re-ranked R1: " + ", ".join(f"{v} {r1:.2f}" for v, r1 in rr.items()))
    print(f"\nreport: {page}\nresults: {out / 'results.json'}\ntotal time: {time.perf_counter() - t_start:.0f} s")
    return 0
