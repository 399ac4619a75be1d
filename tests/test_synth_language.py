"""UFine-Synth 2: the everyday language, its annotators, its vocabulary and the camera's framing."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ufinebench.synth import build as B
from ufinebench.synth.attributes import draw_identity, draw_population, record_key
from ufinebench.synth.card import heldout_words
from ufinebench.synth.describe import ALL_VIEWS, QUARTER_VIEWS, caption, visible
from ufinebench.synth.language import COLOUR_WORDS, NOUN_WORDS, PERSONAS, WORDS, write
from ufinebench.synth.render import draw_shot, render
from ufinebench.synth.skeletons import Skeletons
from ufinebench.synth.vocabulary import EVERYDAY_SLOT_TYPES, everyday_vocabulary, synth_vocabulary
from ufinebench.vocab import load_vocabulary

SHOE_WORDS = {p.split()[-1] for t in ("sneakers", "leather shoes", "boots", "sandals") for p in NOUN_WORDS[t][0] + NOUN_WORDS[t][1]}


@pytest.fixture(scope="module")
def everyday(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("everyday") / "ds"
    B.build(out, B.SynthConfig(identities=240, images_per_id=(2, 4), size=(64, 32), seed=5), workers=2)
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)*", re.sub(r"'[^']*'", " ", text.lower())))


def test_many_sentence_skeletons_and_a_length_like_ufine6926(everyday):
    """The everyday language has far more than 1,000 sentence skeletons (the classic one: under 300)
    and fine captions of about 81 words with a spread."""
    fine = json.loads((everyday / B.FINE_FILE).read_text())
    caps = [c for r in fine for c in r["captions"]]
    sk = Skeletons()
    sk.add(caps)
    assert sk.summary()["skeletons"] > 1000 and sk.summary()["top50_share"] < 0.6
    lengths = np.asarray([len(c.split()) for c in caps])
    assert 70 <= lengths.mean() <= 95 and lengths.std() > 8 and lengths.min() >= 35
    card = (everyday / "CARD.md").read_text()
    assert "| UFine6926 (published) | 6,926 | 26,206 | 52,412 | 80.8 |" in card and f"{sk.summary()['skeletons']} over" in card
    assert f"| this set, training file | 240 | {len(fine)} | {len(caps)} |" in card


def test_held_out_words_only_in_3c_queries_of_the_unseen_styles(everyday):
    held = heldout_words()
    assert {"midnight-blue", "anorak", "purse", "specs"} <= held
    training = [c for name in (B.FINE_FILE, B.COARSE_FILE) for r in json.loads((everyday / name).read_text()) for c in r["captions"]]
    assert not set().union(*map(_words, training)) & held
    threec = json.loads((everyday / B.THREEC_FILE).read_text())
    used = {(t["style"], w) for r in threec for c, t in zip(r["captions"], r["caption_tags"], strict=True) for w in _words(c) & held}
    assert {s for s, _ in used} <= {"narrative", "witness", "terse", "colloquial"} and len({w for _, w in used}) > 20
    assert "0 in the training files" in (everyday / "CARD.md").read_text()


def test_annotators_write_with_their_own_habits():
    """Each training annotator has an order, a length and favourite words: for the same people, a
    feet-up writer names the shoes before the hair, a long-winded one writes more words."""
    pop = [r for r in draw_population(60, 1, wider=True) if r["hair_length"] != "bald"]
    by = {p.name: p for p in PERSONAS}

    def captions(name: str) -> list[str]:
        rng = np.random.default_rng(0)
        return [write(visible(r, "front"), "front", "walking", "fine", "annotator_a", rng, by[name])[0] for r in pop]

    def shoes_first(texts: list[str]) -> float:
        hits = []
        for t in texts:
            low = t.lower()
            shoe = min((low.find(w) for w in SHOE_WORDS if low.find(w) >= 0), default=-1)
            hits.append(0 <= shoe < low.find(" hair"))
        return float(np.mean(hits))

    assert shoes_first(captions("a4")) > 0.6 > 0.3 > shoes_first(captions("a1"))
    assert np.mean([len(t.split()) for t in captions("b4")]) > np.mean([len(t.split()) for t in captions("b3")]) + 15
    fine = [t for n in ("a1", "a2") for t in captions(n)]
    assert len({re.sub(r"\W", "", t) for t in fine}) == len(fine)


def test_training_captions_name_only_what_their_image_shows(everyday):
    """Mentions are true (save a tagged mistake) and visible; a barrier that hides the feet silences the shoes."""
    ids = {json.loads(line)["id"]: json.loads(line)["attributes"] for line in (everyday / B.IDENTITIES_FILE).read_text().splitlines()}
    hidden = 0
    for r in json.loads((everyday / B.FINE_FILE).read_text()):
        for text, t in zip(r["captions"], r["caption_tags"], strict=True):
            shown = visible(ids[r["id"]], t["view"])
            assert all(s in shown or v == "none" for s, v in t["mentions"].items())
            if "hidden" in t:
                hidden += 1
                assert not {"shoes_type", "shoes_color", "sole_color"} & set(t["mentions"]) and not _words(text) & SHOE_WORDS
    assert hidden > 0


def test_the_wider_population_keeps_records_apart_and_adds_everyday_values():
    plain, wide = draw_population(800, 2), draw_population(800, 2, wider=True)
    assert len({record_key(r) for r in wide}) == 800
    values = {v for r in wide for v in r.values() if isinstance(v, str)}
    assert {"cardigan", "parka", "charcoal", "burgundy", "floral", "polka-dot"} <= values
    assert not {"cardigan", "parka", "charcoal"} & {v for r in plain for v in r.values() if isinstance(v, str)}


def test_everyday_vocabulary_is_generated_from_the_training_words():
    """ufine-synth-2 reads every colour and garment phrasing the annotators write, "navy" is a colour
    of its own, no top is a dress, and no held-out word is in it."""
    v = everyday_vocabulary()
    assert synth_vocabulary("everyday") == v and synth_vocabulary("classic") == load_vocabulary("ufine-synth-1")
    assert ("navy",) in v.classes["colour"] and not any("dress" in g for g in v.classes["top"])
    colours = set(v.phrase_colours)
    for name, (train, _) in COLOUR_WORDS.items():
        for phrase in train:
            assert colours & set(re.split(r"[\s-]+", phrase)), (name, phrase)
    for slot, types in EVERYDAY_SLOT_TYPES.items():
        for t in types:
            for phrase in NOUN_WORDS[t][0]:
                assert set(re.split(r"[\s-]+", phrase)) & set(v.slots[slot]), (slot, phrase)
    everything = {w for c in v.classes.values() for g in c for w in g} | set(v.phrase_words)
    assert not everything & heldout_words()
    assert all(w in WORDS for w in ("cardigan", "parka", "floral", "polka-dot"))


def test_every_image_written_is_in_an_annotation_file_and_every_path_exists(everyday):
    """A 3C person shown in held-out domains only has no training-domain image on disk (it would be in no file)."""
    named = {r["file_path"] for name in (B.FINE_FILE, B.COARSE_FILE, B.THREEC_FILE) for r in json.loads((everyday / name).read_text())}
    on_disk = {f"images/{p.name}" for p in (everyday / "images").iterdir()}
    assert named == on_disk


def test_three_quarter_views_show_what_they_can_and_are_drawn_apart(everyday):
    """A logo seen at an angle shows, its letters do not; the face (glasses) shows only from the front
    side; a backpack's label from behind; every caption of such an image keeps to that; the drawing
    differs from the view it turns from and by the side it turns to."""
    rng = np.random.default_rng(4)
    r = draw_identity(rng)
    r.update(upper_pattern="logo", pattern_color="red", logo_text="QX", outer="none", glasses="glasses",
             bag_type="backpack", bag_color="black", bag_label_color="red", bag_label_text="K")
    front, fq, bq = visible(r, "front"), visible(r, "front_quarter"), visible(r, "back_quarter")
    assert "logo_text" in front and "logo_text" not in fq and fq["upper_pattern"] == "logo" and "pattern_color" in fq
    assert "glasses" in fq and "glasses" not in bq and "upper_pattern" not in bq
    assert "bag_label_text" in bq and "bag_label_text" not in fq and "bag_side" in fq and "bag_side" in bq
    for view in QUARTER_VIEWS:
        for style in ("annotator_a", "narrative", "witness"):
            text, mentions = caption(r, view, "fine", style, rng)
            assert "QX" not in text and "logo_text" not in mentions
            text, mentions = write(visible(r, view), view, "walking", "fine", "annotator_a", rng, PERSONAS[0])
            assert "QX" not in text and set(mentions) <= set(visible(r, view)) | {"glasses", "headwear", "bag_type"}
    shot = draw_shot(np.random.default_rng(0), (1.0, 1.0, 1.0), r)
    shot = replace(shot, bystander=None, feet_hidden=False)

    def img(view: str, facing: int = 1) -> np.ndarray:
        return np.asarray(render(r, view, "standing", "street", (384, 128), np.random.default_rng(0), replace(shot, facing=facing)), dtype=float)

    assert np.abs(img("front") - img("front_quarter")).mean() > 1.0
    assert np.abs(img("back") - img("back_quarter")).mean() > 1.0
    assert np.abs(img("front_quarter", 1) - img("front_quarter", -1)).mean() > 1.0
    views = {t["view"] for rec in json.loads((everyday / B.FINE_FILE).read_text()) for t in rec["caption_tags"]}
    assert views == set(ALL_VIEWS)  # a standard build uses all five
