"""Attribute vocabularies as data: the file format, its checks, a vocabulary through a checkpoint,
datasets with and without one, and UFine-Synth's vocabulary held against its generator."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from test_train import _cfg
from ufinebench.cli import main
from ufinebench.config import ConfigError
from ufinebench.data.annotations import load_dataset
from ufinebench.model.checkpoint import CheckpointError, from_checkpoint, read_meta, resolve_checkpoint
from ufinebench.synth.vocabulary import synth_vocabulary, uncovered_words
from ufinebench.training import train
from ufinebench.vocab import VOCAB_FILE, AttributeVocabulary, VocabularyError, load_vocabulary
from ufinebench.vocab.tokens import AttributeTable, named_groups

VOCAB = load_vocabulary("ufine-synth-1")

# a small vocabulary for someone's own captions: other classes, other order, no pairs phrase parts
SMALL = {
    "format": "ufinebench-attribute-vocabulary/1", "name": "small",
    "classes": [{"name": "shoes", "groups": [["sneakers", "trainers"], ["boots"], ["sandals"]]},
                {"name": "colour", "groups": [["black"], ["white"], ["grey", "gray"], ["blue"], ["red"]]},
                {"name": "top", "groups": [["hoodie"], ["sweater"], ["shirt"], ["jacket"], ["coat"]]}],
    "named_classes": ["shoes", "colour", "top"], "colour_class": "colour", "colour_aliases": {"navy": "blue"},
    "slots": [{"name": "top", "nouns": ["hoodie", "sweater", "shirt", "jacket", "coat"]}, {"name": "shoes", "nouns": ["sneakers", "boots"]}],
    "phrase": {"tones": ["dark", "light"], "garments": ["hoodie", "sweater", "shirt", "jacket", "coat", "sneakers", "boots"],
               "modifiers": ["long", "short", "-"]},
}


def test_file_round_trips_and_keeps_its_order_through_sorted_json():
    """The file's text reads back to the same vocabulary, and so does its dict after a JSON writer
    that sorts keys (as checkpoints' meta.json does): the word head's output order is the file's."""
    assert AttributeVocabulary.from_dict(json.loads(VOCAB.to_json())) == VOCAB
    resorted = AttributeVocabulary.from_dict(json.loads(json.dumps(VOCAB.to_dict(), sort_keys=True)))
    assert resorted == VOCAB and list(resorted.classes) == list(VOCAB.classes) and list(resorted.slots) == list(VOCAB.slots)
    small = AttributeVocabulary.from_dict(SMALL)
    assert list(small.classes) == ["shoes", "colour", "top"] and small.n_groups == 13 and small.n_pairs == 10
    assert small.head_outputs(False) == 13 and small.head_outputs(True) == 23
    assert "navy" in small.phrase_colours and {"dark", "-", "navy", "sneakers"} <= small.phrase_words
    assert VOCAB.n_groups == 52 and VOCAB.n_pairs == 75  # the legacy head sizes


@pytest.mark.parametrize("change, words", [
    ({"format": "v0"}, "format"),
    ({"colour": 1}, "unknown field 'colour'"),
    ({"classes": {"colour": [["black"]]}}, "classes"),
    ({"classes": [{"name": "colour", "groups": [["black"], ["black"]]}]}, "two groups"),
    ({"named_classes": ["bags"]}, "'bags' is not a class"),
    ({"colour_class": "top", "colour_aliases": {}}, None),  # allowed: any class may be the colour class
    ({"colour_aliases": {"navy": "purple"}}, "colour_aliases.navy"),
    ({"slots": [{"name": "top", "nouns": ["Hoodie"]}]}, "one lower-case word"),
    ({"slots": [{"name": "top", "nouns": ["hoodie"]}, {"name": "top", "nouns": ["shirt"]}]}, "appears twice"),
    ({"phrase": {"colours": ["red"]}}, "phrase: unknown field"),
])
def test_bad_files_name_the_field(change, words):
    d = {**SMALL, **change}
    if words is None:
        AttributeVocabulary.from_dict(d)
        return
    with pytest.raises(VocabularyError, match=words):
        AttributeVocabulary.from_dict(d, "my.json")


def test_table_follows_the_files_classes_not_the_code():
    """The token table and what a caption names come from the file: another order, other outputs."""
    from ufinebench.data.tokenizer import TrainedWordTokenizer

    small = AttributeVocabulary.from_dict(SMALL)
    caps = ["a man in a grey hoodie and black boots .", "a navy coat , white sneakers ."]
    tok = TrainedWordTokenizer.train(caps, vocab_size=60, min_frequency=1)
    table = AttributeTable.build(small, tok)
    assert table is not None
    both = named_groups(tok.encode(caps, 16), table, pairs=True)  # (2, 13 + 10)
    assert both.shape == (2, 23)
    names = [words[0] for _, words in small.group_names()]
    assert [{names[i] for i in r[:13].nonzero().flatten().tolist()} for r in both] == [{"grey", "hoodie", "black", "boots"},
                                                                                        {"coat", "white", "sneakers"}]  # an alias pairs only
    pairs = [{(i // 2, i % 2) for i in r[13:].nonzero().flatten().tolist()} for r in both]  # (colour group, slot)
    assert pairs == [{(2, 0), (0, 1)}, {(3, 0), (1, 1)}]  # grey x top, black x shoes; navy = blue x top, white x shoes


def test_a_vocabulary_file_travels_through_training_into_the_checkpoint(tiny_synth, tmp_path):
    """data.vocabulary=FILE: the word head's size comes from the file, the checkpoint keeps it, and
    evaluation reads it back from the checkpoint alone; the dataset's own is used when none is given."""
    path = tmp_path / "small.json"
    path.write_text(AttributeVocabulary.from_dict(SMALL).to_json())
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.epochs=1", f"data.vocabulary={path}"), progress=False)
    loaded = from_checkpoint(run)
    assert loaded.vocabulary == load_vocabulary(path)
    assert loaded.model.cfg.attribute_words == 23  # the preset has words and pairs: 13 + 5 colours x 2 slots
    meta = read_meta(resolve_checkpoint(run, "last"))
    assert AttributeVocabulary.from_dict(meta["vocabulary"]) == loaded.vocabulary
    own = train(_cfg(tiny_synth, tmp_path / "own", "train.epochs=1"), progress=False)  # the dataset ships vocabulary.json
    assert (tiny_synth / VOCAB_FILE).is_file() and from_checkpoint(own).vocabulary == VOCAB
    assert from_checkpoint(own).model.cfg.attribute_words == VOCAB.n_groups + VOCAB.n_pairs


def test_older_checkpoints_read_the_legacy_vocabulary_and_a_misfit_head_is_refused(tiny_synth, tmp_path):
    """A checkpoint written before vocabularies were stored has none in its meta.json: its head was
    trained on the legacy lexicon, which is what it gets; a head of another size is an error, not a misreading."""
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.epochs=1", "train.eval_every=0"), progress=False)
    ck = resolve_checkpoint(run, "last")
    meta = json.loads((ck / "meta.json").read_text())
    del meta["vocabulary"]
    (ck / "meta.json").write_text(json.dumps(meta))
    assert from_checkpoint(ck).vocabulary == load_vocabulary("ufine-synth-1")
    meta["vocabulary"] = SMALL  # 13 + 10 outputs: not this head's 127
    (ck / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="word head has 127 outputs"):
        from_checkpoint(ck)
    meta["vocabulary"] = VOCAB.to_dict()
    meta["config"]["model"]["word_head_layers"] = 2  # a key this version does not know
    (ck / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown model config key 'word_head_layers'"):
        from_checkpoint(ck)


def test_a_dataset_without_a_vocabulary(tiny_synth, tmp_path, monkeypatch, capsys):
    """No vocabulary.json and none given: the attribute options are a one-line config error, and a
    CFAM run without them validates on val's own captions only (no shortened copies)."""
    bare = tmp_path / "bare"
    shutil.copytree(tiny_synth, bare)
    (bare / VOCAB_FILE).unlink()
    with pytest.raises(ConfigError, match="ships no attribute vocabulary"):
        train(_cfg(bare, tmp_path / "r1", "train.epochs=1"), progress=False)
    import ufinebench.training.validation as V

    seen: list[int] = []
    real = V.extract_features
    monkeypatch.setattr(V, "extract_features", lambda model, samples, *a, **k: (seen.append(sum(len(s.captions) for s in samples)),
                                                                                   real(model, samples, *a, **k))[1])
    off = ["data.attribute_words=false", "data.attribute_pairs=false", "data.modifier_order=0", "data.attribute_swap=false",
           "data.match_attribute_drop=0", "train.match_negatives=any"]
    run = train(_cfg(bare, tmp_path / "r2", "train.epochs=1", *off), progress=False)
    val = load_dataset(bare / "ufine_synth.json", split="val").split("val")
    assert seen == [sum(len(s.captions) for s in val)]  # val's captions, no shortened copies beside them
    assert from_checkpoint(run).vocabulary is None and read_meta(resolve_checkpoint(run, "last"))["vocabulary"] is None
    assert main(["train", "--config", "synth-cpu-small", "--set", f"data.dataset={bare / 'ufine_synth.json'}",
                 "--set", f"train.out_dir={tmp_path / 'r3'}", "--set", f"data.vocabulary={tmp_path / 'missing.json'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing.json: no such vocabulary file" in err and "Traceback" not in err


def test_ufine_synth_ships_its_vocabulary_and_it_covers_what_the_generator_writes(tiny_synth):
    """UFine-Synth writes vocabulary.json beside its annotation; every colour and every garment, shoe,
    bag and headwear noun its captions can use is in it (a caption language change the vocabulary does
    not follow fails here); a vocabulary that lacks one is caught."""
    assert load_vocabulary(tiny_synth / VOCAB_FILE) == synth_vocabulary() == VOCAB
    assert uncovered_words(VOCAB) == []
    d = VOCAB.to_dict()
    d["slots"] = [{"name": e["name"], "nouns": [n for n in e["nouns"] if n != "sneakers"]} for e in d["slots"]]
    d["classes"] = [e for e in d["classes"] if e["name"] != "colour"] + [{"name": "colour", "groups": [["black"], ["white"], ["blue"]]}]
    missing = uncovered_words(AttributeVocabulary.from_dict(d))
    assert "shoes 'sneakers'" in missing and "colour 'beige'" in missing and "shoes 'trainers'" not in missing


def test_attribute_targets_read_through_the_vocabulary_match_the_word_heads_size(tiny_synth):
    """What a checkpoint's vocabulary says a caption names has the word head's size (words + pairs)."""
    from ufinebench.data.tokenizer import TrainedWordTokenizer
    from ufinebench.vocab.tokens import attribute_targets

    caps = [c for s in load_dataset(tiny_synth / "ufine_synth.json").samples[:6] for c in s.captions]
    tok = TrainedWordTokenizer.train(caps, vocab_size=400, min_frequency=1)
    table = AttributeTable.build(VOCAB, tok)
    assert table is not None
    target, known = attribute_targets(tok.encode(caps, 120), table, pairs=True)
    assert target.shape == known.shape == (len(caps), VOCAB.head_outputs(True))
    assert bool((target[:, : VOCAB.n_groups].sum(1) > 0).all()) and torch.equal(target[~known], torch.zeros_like(target[~known]))
