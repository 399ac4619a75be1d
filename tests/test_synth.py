"""UFine-Synth: format validity, determinism, captions that match their identity, ambiguity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ufinebench.cli import main
from ufinebench.data.annotations import read_annotations
from ufinebench.errors import UFineBenchError
from ufinebench.synth import build as B
from ufinebench.synth.attributes import SLOTS, consistent, draw_identity, draw_population, record_key
from ufinebench.synth.describe import GRANULARITY_WORDS, TRAIN_STYLES, VIEWS, caption, visible
from ufinebench.synth.render import HELD_OUT_DOMAINS, TRAIN_DOMAINS, render

CFG = B.SynthConfig(identities=30, images_per_id=(2, 3), size=(96, 32), seed=7)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    B.build(out, CFG, workers=1)
    return out


def _identities(out: Path) -> dict[int, dict]:
    return {r["id"]: r for r in map(json.loads, (out / B.IDENTITIES_FILE).read_text().splitlines())}


def test_outputs_are_valid_datasets(synth):
    for name, fmt, splits in ((B.FINE_FILE, "ufine6926", {"train", "val", "test"}), (B.COARSE_FILE, "ufine6926", {"train", "val", "test"}),
                              (B.THREEC_FILE, "ufine3c", {"test"})):
        ann = read_annotations(synth / name)
        assert ann.format == fmt and ann.ok, [str(p) for p in ann.problems][:5]
        assert {s.split for s in ann.samples} == splits
        assert all(len(t) and "granularity" in t and "style" in t for s in ann.samples for t in s.caption_tags)
    assert (synth / "preview.png").read_bytes()[:4] == b"\x89PNG" and "Ambiguity" in (synth / "CARD.md").read_text()
    assert not list(synth.parent.glob(".ds.partial-*"))


def test_splits_are_by_identity_and_3c_holds_persons_of_its_own(synth, tiny_synth):
    """standard: the 3C set shows persons of its own (split "3c", about UFine3C's 0.325 per
    identity), in no training-file record; easy: the test split's persons."""
    ids = _identities(synth)
    fine = json.loads((synth / B.FINE_FILE).read_text())
    for r in fine:
        assert r["split"] == ids[r["id"]]["split"]
    assert all(len(r["captions"]) == 2 for r in fine)
    assert [t["style"] for t in fine[0]["caption_tags"]] == list(TRAIN_STYLES)
    threec = json.loads((synth / B.THREEC_FILE).read_text())
    own = {i for i, r in ids.items() if r["split"] == "3c"}
    assert {r["id"] for r in threec} == own and len(own) == round(0.325 * CFG.identities)
    assert not own & {r["id"] for r in fine}
    easy_ids = _identities(tiny_synth)
    easy_3c = {r["id"] for r in json.loads((tiny_synth / B.THREEC_FILE).read_text())}
    assert easy_3c == {i for i, r in easy_ids.items() if r["split"] == "test"}
    sources = {r["source"] for r in threec}
    assert sources & set(TRAIN_DOMAINS) and sources & set(HELD_OUT_DOMAINS)
    styles = {t["style"] for r in threec for t in r["caption_tags"]}
    assert len(styles - set(TRAIN_STYLES) - {"cuhk"}) >= 2
    assert {t["granularity"] for r in threec for t in r["caption_tags"]} == {"fine", "medium", "coarse"}
    coarse = json.loads((synth / B.COARSE_FILE).read_text())
    assert [r["file_path"] for r in coarse] == [r["file_path"] for r in fine]
    assert all(t["granularity"] == "coarse" for r in coarse for t in r["caption_tags"])


def test_every_caption_agrees_with_its_identity_and_view(synth):
    ids = _identities(synth)
    for name in (B.FINE_FILE, B.COARSE_FILE, B.THREEC_FILE):
        for r in json.loads((synth / name).read_text()):
            truth = ids[r["id"]]["attributes"]
            for text, tag in zip(r["captions"], r["caption_tags"], strict=False):
                said = dict(tag["mentions"])
                if "mistake" in tag and tag["mistake"]["slot"] in said:  # an annotator's mistake: said as said, the truth in the tag
                    assert said[tag["mistake"]["slot"]] == tag["mistake"]["said"]
                    said[tag["mistake"]["slot"]] = tag["mistake"]["true"]
                assert said and consistent(truth, said), (text, said)
                shown = visible(truth, tag["view"])
                for slot, value in tag["mentions"].items():
                    assert (slot in shown and slot not in tag.get("hidden", ())) or value == "none", (slot, tag["view"], text)
                for value in tag["mentions"].values():  # what is mentioned is written out
                    if isinstance(value, str) and value.isupper():
                        assert f"'{value}'" in text


def test_caption_lengths_per_granularity():
    rng = np.random.default_rng(0)
    pop = draw_population(200, 3)
    for g, (lo, hi) in GRANULARITY_WORDS.items():
        lens = []
        for r in pop:
            for view in VIEWS:
                for style in ("annotator_a", "annotator_b", "narrative", "witness", "colloquial"):
                    lens.append(len(caption(r, view, g, style, rng)[0].split()))
        lens = np.asarray(lens)
        assert lo <= np.mean(lens) <= hi, (g, np.mean(lens))
        assert np.mean((lens >= lo - 5) & (lens <= hi + 5)) > 0.97, g


def test_logo_only_visible_from_the_front():
    rng = np.random.default_rng(1)
    while True:
        r = draw_identity(rng)
        if r["upper_pattern"] == "logo" and r["outer"] == "none":
            break
    assert "logo_text" in visible(r, "front") and "logo_text" not in visible(r, "back")
    texts = {v: caption(r, v, "fine", "annotator_a", rng)[0] for v in VIEWS}
    assert r["logo_text"] in texts["front"] and r["logo_text"] not in texts["back"]
    front = np.asarray(render(r, "front", "standing", "street", (384, 128), np.random.default_rng(0)))
    assert front.shape == (384, 128, 3)


def test_population_unique_and_skewed():
    pop = draw_population(500, 0)
    assert len({record_key(r) for r in pop}) == 500
    assert len(SLOTS) >= 15
    top = max(np.unique([r["upper_color"] for r in pop], return_counts=True)[1]) / 500
    assert top > 0.3  # black dominates, as in street scenes


def test_ambiguity_recomputed_from_identities(synth):
    ids = _identities(synth)
    test_ids = [i for i, r in ids.items() if r["split"] == "3c"]
    threec = json.loads((synth / B.THREEC_FILE).read_text())
    naive: dict[str, list[int]] = {}
    for r in threec:
        for tag in r["caption_tags"]:
            naive.setdefault(tag["granularity"], []).append(sum(consistent(ids[i]["attributes"], tag["mentions"]) for i in test_ids))
    got = B.ambiguity(threec, {i: r["attributes"] for i, r in ids.items()}, test_ids)
    assert got == pytest.approx({g: float(np.mean(v)) for g, v in naive.items()})
    assert got["coarse"] >= got["fine"] >= 1.0


def test_ambiguity_targets_at_1000_identities():
    """The issue's targets, on captions made as the 3C set makes them (no rendering needed)."""
    pop = draw_population(1000, 0)
    splits = B.assign_splits(1000, 0, CFG.split_fractions)
    ids = {i + 1: r for i, r in enumerate(pop)}
    test_ids = [i for i in ids if splits[i - 1] == "test"]
    rng = np.random.default_rng(0)
    recs = []
    for pid in test_ids:
        for view in VIEWS:
            caps = [caption(ids[pid], view, g, s, rng) for g in ("fine", "coarse") for s in B.QUERY_STYLES]
            recs.append({"caption_tags": [{"granularity": g, "mentions": c[1]} for c, g in zip(caps, ["fine"] * 5 + ["coarse"] * 5, strict=False)]})
    amb = B.ambiguity(recs, ids, test_ids)
    assert amb["coarse"] >= 5.0 and amb["fine"] <= 1.1, amb


def test_byte_identical_whatever_the_workers(tmp_path, synth):
    other = tmp_path / "ds2"
    B.build(other, CFG, workers=2)
    skip = ("CARD.md", ".ufinebench.json")  # timings and the output marker's date
    files = sorted(p.relative_to(synth) for p in synth.rglob("*") if p.is_file() and p.name not in skip)
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file() and p.name not in skip)
    for f in files:
        assert (synth / f).read_bytes() == (other / f).read_bytes(), f
    B.build(tmp_path / "ds3", B.SynthConfig(**{**CFG.__dict__, "seed": 8}), workers=1)
    assert (tmp_path / "ds3" / B.FINE_FILE).read_bytes() != (synth / B.FINE_FILE).read_bytes()


def test_refuses_to_clobber_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # a folder the toolkit did not write is never replaced, --overwrite or not
        with pytest.raises(UFineBenchError, match="--force"):
            B.build(out, CFG, overwrite=overwrite)
    assert (out / "keep.txt").read_text() == "mine" and sorted(os.listdir(out)) == ["keep.txt"]

    def boom(*a, **k):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(B, "render", boom)
    with pytest.raises(RuntimeError):
        B.build(tmp_path / "new", CFG)
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.partial-*"))


def test_cli_synth_and_bad_options(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--identities", "6", "--images-per-id", "2:2", "--size", "64x32", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "UFine-Synth: 6 identities" in out and (tmp_path / "s" / B.FINE_FILE).exists()
    for argv, msg in ((["--size", "64-32"], "--size"), (["--images-per-id", "5:2"], "--images-per-id"), (["--identities", "2"], "at least 3")):
        assert main(["synth", str(tmp_path / "t"), *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    out = tmp_path_factory.mktemp("std") / "ds"
    B.build(out, B.SynthConfig(identities=150, images_per_id=(2, 3), size=(64, 32), seed=2, difficulty="standard"), workers=1)
    return out


def test_easy_is_the_generator_without_families_and_knobs_override_levels(tmp_path):
    """``easy`` builds exactly what a ``standard`` build (the default) with its knobs turned off builds:
    the levels only set knobs, and with the knobs off no draw of the old generator moves."""
    cfg = dict(identities=12, images_per_id=(2, 2), size=(64, 32), seed=4)
    assert B.SynthConfig().difficulty == "standard"
    assert B.SynthConfig(**cfg, difficulty="easy").knobs() == B.Knobs(1, 1, 0.0, 0.0, 0.0, 1.0, "classic", "fixed", 0.0)
    B.build(tmp_path / "a", B.SynthConfig(**cfg, difficulty="easy"), workers=1)
    B.build(tmp_path / "b", B.SynthConfig(**cfg, family_size=1, heldout_only=0.0, omit=0.0, mistake=0.0, language="classic",
                                          camera="fixed", threec_persons=0.0), workers=1)
    for name in ("ufine_synth.json", "ufine_synth_3c.json", "identities.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    imgs = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert all((tmp_path / "a" / "images" / n).read_bytes() == (tmp_path / "b" / "images" / n).read_bytes() for n in imgs)
    assert '"family"' not in (tmp_path / "a" / "identities.jsonl").read_text() and '"detail"' not in (tmp_path / "a" / "ufine_synth.json").read_text()


def test_look_alike_families_differ_only_in_their_separating_details(standard):
    """standard: about 40 % of the identities in families of 3, each family in one split; a variant
    differs from its family's base exactly in the details its tags name, the base's tags name every
    detail its siblings changed, a person without a family has detail "none"; every caption carries
    the family and its detail; records stay pairwise different."""
    ids = [json.loads(line) for line in (standard / "identities.jsonl").read_text().splitlines()]
    fams: dict[int, list[dict]] = {}
    for r in ids:
        fams.setdefault(r["family"]["family"], []).append(r)
    assert {len(v) for v in fams.values()} == {1, 3} and 0.3 <= sum(len(v) == 3 for v in fams.values()) * 3 / len(ids) <= 0.5
    assert all(v[0]["family"]["detail"] == "none" for v in fams.values() if len(v) == 1)
    fams = {f: v for f, v in fams.items() if len(v) == 3}
    assert all(len({m["split"] for m in v}) == 1 for v in fams.values())
    coarse = {"top_color", "lower_group", "has_bag"}  # derived from the fine slots
    for members in fams.values():
        base = members[0]["attributes"]
        for m in members[1:]:
            diff = {k for k in SLOTS if base[k] != m["attributes"][k]} - coarse
            assert diff == set(m["family"]["detail"].split("+")) and len(diff) == 1
        assert set(members[0]["family"]["detail"].split("+")) == {d for m in members[1:] for d in m["family"]["detail"].split("+")}
    assert len({record_key(r["attributes"]) for r in ids}) == len(ids)
    by_id = {r["id"]: r for r in ids}
    for rec in json.loads((standard / "ufine_synth.json").read_text()):
        for tag in rec["caption_tags"]:
            assert tag["family"] == by_id[rec["id"]]["family"]["family"] and tag["detail"] == by_id[rec["id"]]["family"]["detail"]


def test_held_out_only_persons_are_a_real_domain_test(standard):
    """About half of the 3C test persons appear in its gallery only in held-out domains (tag
    ``gallery``), so the per-source breakdown measures a domain shift the gallery cannot bypass."""
    threec = json.loads((standard / "ufine_synth_3c.json").read_text())
    gallery = {}
    for rec in threec:
        for tag in rec["caption_tags"]:
            gallery.setdefault(rec["id"], set()).add(tag["gallery"])
        if rec["caption_tags"][0]["gallery"] == "held-out only":
            assert rec["source"] in HELD_OUT_DOMAINS
    assert all(len(v) == 1 for v in gallery.values())
    held = [i for i, v in gallery.items() if v == {"held-out only"}]
    assert 0.2 < len(held) / len(gallery) < 0.8
    mixed_sources = {rec["source"] for rec in threec if rec["caption_tags"][0]["gallery"] == "mixed"}
    assert mixed_sources & set(TRAIN_DOMAINS)


def test_look_alikes_make_fine_captions_ambiguous_only_where_the_detail_is_unseen(standard):
    """A family member's fine caption fits only itself when its image shows the separating detail;
    the card's ambiguity is above 1 for fine queries (views that hide the detail) and the coarse
    ones fit a whole family."""
    card = (standard / "CARD.md").read_text()
    assert "Difficulty `standard`: 40 % of the identities in look-alike families of 3" in card
    ids = {json.loads(line)["id"]: json.loads(line) for line in (standard / "identities.jsonl").read_text().splitlines()}
    test = [i for i, r in ids.items() if r["split"] == "3c"]
    threec = json.loads((standard / "ufine_synth_3c.json").read_text())
    amb = B.ambiguity(threec, {i: r["attributes"] for i, r in ids.items()}, test)
    assert 1.0 < amb["fine"] < amb["medium"] <= amb["coarse"]
    family_of = {i: r["family"]["family"] for i, r in ids.items()}
    coarse = [(rec["id"], t) for rec in threec for t in rec["caption_tags"] if t["granularity"] == "coarse" and t["family_size"] > 1]
    assert coarse
    for pid, t in coarse:  # a coarse query never separates a family: every member fits it (unless its annotator erred)
        members = [i for i in ids if family_of[i] == family_of[pid]]
        assert "mistake" in t or all(consistent(ids[i]["attributes"], t["mentions"]) for i in members)


def test_evaluation_breaks_down_by_separating_detail_and_gallery(standard):
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import Features, evaluate_scores

    samples = load_dataset(standard / "ufine_synth_3c.json", split="test").split("test")
    n_q, n_g = len(Features.of_split(samples).query_ids), len(Features.of_split(samples).gallery_ids)
    res = evaluate_scores(np.random.default_rng(0).random((n_q, n_g)), None, None, samples)
    assert set(res["breakdown"]["gallery"]) == {"held-out only", "mixed"}
    assert "sole_color" in res["breakdown"]["detail"] or "glasses" in res["breakdown"]["detail"]
    assert sum(v["queries"] for v in res["breakdown"]["detail"].values()) == res["overall"]["queries"]


def test_cli_difficulty_and_knob_errors(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "a"), "--identities", "6", "--size", "64x32", "--family-size", "0"]) == 2
    assert "--family-size must be" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "b"), "--identities", "6", "--size", "64x32", "--heldout-only", "2"]) == 2
    assert "--heldout-only" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "d"), "--identities", "6", "--size", "64x32", "--threec-persons", "5"]) == 2
    err = capsys.readouterr().err
    assert "--threec-persons must be" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "c"), "--difficulty", "extreme"])
    assert "invalid choice" in capsys.readouterr().err


def test_the_card_states_the_ceiling_a_perfect_attribute_reader_reaches(standard, tiny_synth):
    """Ceiling R1 = the mean over captions of 1 / (test identities consistent with the caption),
    recomputed here by brute force from identities.jsonl; 100 for fine captions without look-alikes."""
    ids = {json.loads(line)["id"]: json.loads(line) for line in (standard / "identities.jsonl").read_text().splitlines()}
    test = [i for i, r in ids.items() if r["split"] == "3c"]
    threec = json.loads((standard / "ufine_synth_3c.json").read_text())
    fine = [(r["id"], t["mentions"]) for r in threec for t in r["caption_tags"] if t["granularity"] == "fine"]
    want = 100 * np.mean([consistent(ids[own]["attributes"], m) / max(1, sum(consistent(ids[i]["attributes"], m) for i in test))
                          for own, m in fine])
    got = B.ceiling(threec, {i: r["attributes"] for i, r in ids.items()}, test)
    assert got["fine"] == pytest.approx(want) and 40 < got["fine"] < 100
    card = (standard / "CARD.md").read_text()
    assert f"| 3C fine | {got['fine']:.2f} |" in card and "| in-domain test |" in card
    easy_ids = {json.loads(line)["id"]: json.loads(line) for line in (tiny_synth / "identities.jsonl").read_text().splitlines()}
    easy_test = [i for i, r in easy_ids.items() if r["split"] == "test"]
    easy = B.ceiling(json.loads((tiny_synth / "ufine_synth_3c.json").read_text()), {i: r["attributes"] for i, r in easy_ids.items()}, easy_test)
    assert easy["fine"] == 100.0


def test_annotators_leave_details_out_and_now_and_then_misname_one(standard):
    """standard: each caption's tags list the details its annotator left out (never mentioned) and
    a mistake with the true value (mentioned as said, so the true person may not fit it); annotator_b
    leaves out more than annotator_a; about the level's rates."""
    from ufinebench.synth.annotators import OMITTABLE

    ids = {json.loads(line)["id"]: json.loads(line)["attributes"] for line in (standard / "identities.jsonl").read_text().splitlines()}
    tags = [(rec["id"], t) for rec in json.loads((standard / "ufine_synth.json").read_text()) for t in rec["caption_tags"]]
    omittable = {s for g in OMITTABLE for s in g}
    omitted = {"annotator_a": 0, "annotator_b": 0}
    mistakes = 0
    for pid, t in tags:
        for slot in t.get("omitted", []):
            assert slot in omittable and slot not in t["mentions"]
        omitted[t["style"]] += len(t.get("omitted", []))
        if "mistake" in t:
            mistakes += 1
            m = t["mistake"]
            assert ids[pid][m["slot"]] == m["true"] != m["said"] and t["mentions"].get(m["slot"]) in (m["said"], None)
        else:
            assert all(ids[pid].get(k) == v for k, v in t["mentions"].items())  # no mistake: every mention is true
    assert 0 < omitted["annotator_a"] < omitted["annotator_b"]
    assert 0 < mistakes / len(tags) < 0.08  # the level's 3 %


def test_ceiling_counts_a_caption_whose_mistake_rules_out_its_own_person_as_a_miss():
    recs = [{"id": 1, "caption_tags": [{"granularity": "fine", "mentions": {"upper_color": "black"}},
                                        {"granularity": "fine", "mentions": {"upper_color": "dark blue"}}]}]
    people = {1: {"upper_color": "black"}, 2: {"upper_color": "black"}, 3: {"upper_color": "red"}}
    assert B.ceiling(recs, people, [1, 2, 3])["fine"] == pytest.approx(100 * (0.5 + 0.0) / 2)
