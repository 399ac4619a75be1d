"""Training learns: the synth-cpu-small recipe, on a tiny UFine-Synth set, far above chance.

A model that trains is not a model that learns. This test trains the demo's recipe (only the
image size, with the stem off, and the number of epochs shrunk, so each of its two trainings runs in about 65 s) and checks the
test-split R1 against two references measured in the same way:

* ``RECIPE_R1``: what the recipe reached on this set when the test was written (see
  docs/training.md). A change that loses half of it fails here.
* a control run with the captions shuffled across identities, which must stay near chance:
  if it does not, the evaluation leaks (e.g. test images in training) rather than the model
  learning from the texts.
"""

from __future__ import annotations

import json
import random

import pytest

from ufinebench.config import load_config
from ufinebench.data.annotations import load_dataset
from ufinebench.evaluate import evaluate_checkpoint
from ufinebench.synth.build import SynthConfig, build
from ufinebench.training import train

# Measured on this set with this budget (UFine-Synth standard, the default since 2026-12-06: look-alike
# families, annotators who differ, everyday language, five views; 400 identities at 64 x 32 with the stem off,
# 10 epochs, 2-core machine with native bf16), with the preset of 2026-12-08 (the matcher reads the clean
# caption): R1 18.9, mAP 26.1, chance R1 1.4; the control 1.1 / 3.6 (the preset before, with the matcher's
# noised second text pass: 24.0 / 28.2, control 1.1 / 3.9; with three views: 24.3 / 32.8, control 3.0 / 4.5). (At 160 identities the everyday
# language left the recipe at R1 9.6 in 10 epochs and 9.0 in 20, too close to chance to tell a broken recipe
# apart; on the classic `easy` set of 160 identities the same recipe reached 36.6 / 42.0.) Training is
# bit-identical run to run at a fixed thread count (docs/reliability.md), so on that machine the test sees
# these figures exactly; the bounds (half of each) leave room for other CPUs (without native bf16 the recipe
# runs in float32).
RECIPE_R1 = 18.9
RECIPE_MAP = 26.1
EPOCHS = 10


@pytest.fixture(scope="module")
def learn_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("learn") / "ds"
    build(out, SynthConfig(identities=400, images_per_id=(2, 4), size=(64, 32), seed=11), workers=2)
    return out


def _train_and_eval(data_file, run_dir) -> tuple[float, float, float]:
    cfg = load_config("synth-cpu-small", [
        f"data.dataset={data_file}", f"train.out_dir={run_dir}", "model.image_size=64x32", "model.vision_stem=1", f"train.epochs={EPOCHS}",
        "train.eval_every=0", "train.tensorboard=false", "data.workers=1", "train.batch_size=32",
    ])
    run = train(cfg, progress=False)
    test = load_dataset(data_file, split="test").split("test")
    res = evaluate_checkpoint(str(run), test)
    gallery = len({s.image_path for s in test})
    positives = sum(len(s.captions) * sum(t.person_id == s.person_id for t in test) for s in test) / sum(len(s.captions) for s in test)
    # R1, mAP, and chance R1 (mean positives / gallery size)
    return res["overall"]["R1"], res["overall"]["mAP"], 100.0 * positives / gallery


def test_recipe_learns_far_above_chance_and_shuffled_captions_do_not(learn_set, tmp_path):
    fine = learn_set / "ufine_synth.json"
    r1, m_ap, chance = _train_and_eval(fine, tmp_path / "run")
    print(f"learning test: R1 {r1:.1f}, mAP {m_ap:.1f}, chance R1 {chance:.1f}")
    assert r1 >= 0.5 * RECIPE_R1, f"R1 {r1:.1f}: less than half of what the recipe reached ({RECIPE_R1})"
    assert m_ap >= 0.5 * RECIPE_MAP, f"mAP {m_ap:.1f}: less than half of what the recipe reached ({RECIPE_MAP})"
    assert r1 >= 1.5 * chance, (r1, chance)

    records = json.loads(fine.read_text())
    train_idx = [i for i, r in enumerate(records) if r["split"] == "train"]
    caps = [records[i]["captions"] for i in train_idx]
    random.Random(0).shuffle(caps)  # every training image gets another person's captions
    for i, c in zip(train_idx, caps, strict=False):
        records[i]["captions"] = c
    shuffled = learn_set / "ufine_synth_shuffled.json"
    shuffled.write_text(json.dumps(records))
    r1_control, map_control, _ = _train_and_eval(shuffled, tmp_path / "control")
    print(f"control: R1 {r1_control:.1f}, mAP {map_control:.1f}")
    assert r1_control <= 2 * chance + 1.0, (r1_control, chance, r1)
    assert m_ap >= 1.4 * map_control, (m_ap, map_control)  # the texts, not a leak, carry the recipe mAP (seen: 28.2 vs 3.9)
