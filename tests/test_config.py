"""Configs: presets load; unknown keys, wrong types and impossible values name the key."""

from __future__ import annotations

import pytest

from ufinebench.cli import main
from ufinebench.config import ConfigError, load_config


@pytest.mark.parametrize("preset", ["synth-cpu-small", "ufine6926-vitb16", "ufine6926-vitl14", "cuhk-pedes-vitb16"])
def test_presets_load(preset):
    cfg = load_config(preset)
    assert cfg.model.image_size[0] % cfg.model.patch_size == 0


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("synth-cpu-small", ["train.lr=1e-4", "model.image_size=64x32", "model.patch_size=16", "data.val_split=null",
                                          "train.lr_multipliers={visual: 0.5}"])
    assert cfg.train.lr == 1e-4 and cfg.model.image_size == (64, 32) and cfg.data.val_split is None
    assert cfg.train.lr_multipliers == {"visual": 0.5}


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lrr=1", "train.lrr"),
        ("train.epochs=ten", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("model.image_size=100x48", "model.image_size"),
        ("model.text_width=130", "model.text_width"),
        ("model.arch=vit", "model.arch"),
        ("data.tokenizer=wordpiece", "data.tokenizer"),
        ("train.amp=fp8", "train.amp"),
        ("train.loss_weights={foo: 1}", "train.loss_weights.foo"),
        ("optim.lr=1", "optim.lr"),
        ("train.learn=true", "train.learn"),
        ("model.learn_temperature=maybe", "model.learn_temperature"),
        ("model.text_local_kernel=2", "model.text_local_kernel"),
        ("data.match_token_shuffle=-1", "data.match_token_shuffle"),
        ("data.match_sentence_drop=1.0", "data.match_sentence_drop"),
        ("data.match_attribute_drop=1.0", "data.match_attribute_drop"),
        ("train.match_negatives=hardest", "train.match_negatives"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config("synth-cpu-small", [override])
    assert key.split(".")[0] in str(exc.value) and key.split(".")[-1].split("[")[0] in str(exc.value)


def test_attribute_pairs_need_the_word_head():
    with pytest.raises(ConfigError, match="data.attribute_pairs"):
        load_config("synth-cpu-small", ["data.attribute_words=false", "data.attribute_pairs=true"])
    assert load_config("synth-cpu-small", ["data.attribute_words=true", "data.attribute_pairs=true"]).data.attribute_pairs


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  widht: 3\n")
    for argv in (["train", "--config", str(bad)], ["train", "--config", "no-such-preset"],
                 ["train", "--config", "synth-cpu-small", "--set", f"data.dataset={tmp_path}/missing.json", "--set", f"train.out_dir={tmp_path}/r"],
                 ["train"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
