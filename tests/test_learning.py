"""Training learns: the synth-cpu-small recipe, on a tiny UFine-Synth set, far above chance.

A model that trains is not a model that learns. This test trains the demo's recipe (only the
image size and the number of epochs shrunk, so each of its two trainings runs in about 40 s) and checks the
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

# Measured on this set with this budget (2-core machine with native bf16, 2026-12-02, chance 3.4): the
# recipe of that day (one-layer text encoder with a 3-word convolution in front, word noise on the matcher's
# view, text position jitter 16, bf16 autocast) reached R1 50.5, mAP 55.1 with the test's seed in 10 epochs
# (20 epochs: 60.3 / 66.2); with the retrieval score's granularity weight at 0.25 (sixth sitting; training
# itself unchanged) the same run scores R1 51.0, mAP 56.2, the control 3.1 / 8.8; with the seventh sitting's
# modifier-order augmentation (data.modifier_order 0.5) R1 48.5, mAP 54.5, the control 3.6 / 8.8; with the eighth
# sitting's word head on the token map (data.attribute_words, model.word_head_input: map) R1 47.4, mAP 51.5, the
# control 3.6 / 8.9; with the ninth sitting's colour-garment pairs on that head (data.attribute_pairs) R1 36.6,
# mAP 42.0, the control 2.1 / 8.0 (at this set's 64 x 32 and 10 epochs the head's 75 more outputs cost
# retrieval; on the demo's data test R1 is unchanged, docs/training.md). The recipe without the
# word convolution reached R1 12.4 / mAP 24.3 in 20 epochs, so losing it fails this test (docs/training.md
# lists which broken recipes fail). Training is bit-identical run to run at a fixed thread count
# (docs/reliability.md), so on that machine the test sees these figures exactly; the bounds (half of each)
# leave room for other CPUs (without native bf16 the recipe runs in float32).
RECIPE_R1 = 36.6
RECIPE_MAP = 42.0
EPOCHS = 10


@pytest.fixture(scope="module")
def learn_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("learn") / "ds"
    build(out, SynthConfig(identities=160, images_per_id=(2, 4), size=(64, 32), seed=11), workers=2)
    return out


def _train_and_eval(data_file, run_dir) -> tuple[float, float, float]:
    cfg = load_config("synth-cpu-small", [
        f"data.dataset={data_file}", f"train.out_dir={run_dir}", "model.image_size=64x32", f"train.epochs={EPOCHS}",
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
    assert m_ap >= 1.4 * map_control, (m_ap, map_control)  # the texts, not a leak, carry the recipe mAP (seen: 24.3 vs 7.6)
