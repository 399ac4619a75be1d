"""Hostile inputs, each bounded where it enters: a one-line error (never a traceback), or the right
number (never a silently wrong one). Every case names the bound it checks (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ufinebench.cli import main

SYNTH = ["--identities", "6", "--images-per-id", "2:2", "--size", "64x32", "--workers", "1"]


def _one_line_error(argv: list[str], capsys, match: str, code: int = 2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    text = err or captured.out.strip()
    assert "Traceback" not in captured.err and match in text, text
    if code == 2:
        assert len(err.splitlines()) == 1, err
    return text


def _annotation(tmp_path: Path, body: str) -> str:
    (tmp_path / "a.jpg").write_bytes(b"")
    p = tmp_path / "x_ufine6926.json"
    p.write_text(body)
    return str(p)


def test_ids_beyond_int64_and_integers_of_any_length_are_refused_where_they_enter(tmp_path, capsys):
    """validate says INVALID for an id past int64 (eval used to crash on it) and for a 5,000-digit
    integer (a traceback before); a YAML config with one is a one-line error."""
    big = _annotation(tmp_path, json.dumps([{"split": "test", "id": 2**70, "file_path": "a.jpg", "captions": ["x"]}]))
    _one_line_error(["validate", big, "--format", "ufine6926"], capsys, "outside the 64-bit integer range", code=1)
    long = _annotation(tmp_path, '[{"split":"test","id":' + "9" * 5000 + ',"file_path":"a.jpg","captions":["x"]}]')
    _one_line_error(["validate", long, "--format", "ufine6926"], capsys, "an integer of 5,000 digits", code=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  seed: " + "9" * 5000 + "\n")
    _one_line_error(["train", "--config", str(cfg), "--dry-run", "1"], capsys, "digits")


@pytest.mark.parametrize("key, value, words", [
    ("model.text_heads", "0", "at least 1"), ("model.num_queries", "0", "between 1 and 4,096"), ("model.text_layers", "0", "between 1"),
    ("model.decoder_layers", "-1", "between 1"), ("model.patch_size", "0", "at least 1"), ("data.bpe_vocab_size", "0", "between 8"),
    ("train.seed", "-1", "between 0 and 2,147,483,647"), ("train.seed", "99999999999999999999", "between 0"),
    ("train.warmup_epochs", "-1", "at least 0"), ("train.weight_decay", "-0.1", "at least 0"), ("train.grad_clip", "-1", "at least 0"),
    ("train.loss_weights.match", "-1", "at least 0"), ("data.erase_prob", "2", "between 0 and 1"), ("train.min_lr_ratio", "1.5", "between 0 and 1"),
])
def test_config_values_out_of_range_are_one_line_errors_naming_the_key(key, value, words, capsys):
    err = _one_line_error(["train", "--config", "synth-cpu-small", "--dry-run", "1", "--set", f"{key}={value}"], capsys, words)
    assert key in err


def test_float_ids_that_would_collapse_and_features_of_any_scale(tmp_path, capsys):
    """Float ids past 2^53 are not exact (two persons become one, R1 100 where the truth is 0):
    refused. Cosines are scale-free: features scaled to 1e-35 or 1e30 give the figures of the
    unscaled ones (they gave ties, or 'contains inf')."""
    bad = tmp_path / "ids.npz"
    np.savez(bad, similarity=np.array([[0.1, 0.9]]), query_ids=np.array([2.0**60 + 1]), gallery_ids=np.array([2.0**60, 2.0**60 + 2]))
    _one_line_error(["metrics", str(bad)], capsys, "too large to be exact")
    from ufinebench.metrics import metrics_from_features

    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((20, 8)), rng.standard_normal((15, 8))
    qid, gid = rng.integers(0, 5, 20), rng.integers(0, 5, 15)
    plain = metrics_from_features(q, g, qid, gid).as_dict()
    for scale in (1e-35, 1e30):
        for backend in ("numba", "torch"):
            got = metrics_from_features((q * scale).astype(np.float32), (g * scale).astype(np.float32), qid, gid, backend=backend).as_dict()
            assert got == pytest.approx(plain, abs=1e-3), (scale, backend)


@pytest.mark.parametrize("body, words", [
    ({"models": [{"name": "x"}]}, "models[0].overall"),
    ({"models": [{"name": "x", "overall": {"R1": "high"}}]}, "overall.R1: expected a number"),
    ({"models": "nope"}, "models must be a list"),
    ({"models": [{"name": "x", "overall": {"R1": 1.0, "queries": "many"}}]}, "queries: expected a whole number"),
    ({"models": [{"name": "x", "overall": {"R1": 1.0}, "per_query": {"query_keys": ["a"], "R1": [1, 2], "AP": [1], "SD": [1]}}]},
     "per_query.R1"),
    ([1, 2, 3], "not an output of"),
])
def test_hand_edited_results_given_to_compare_are_one_line_errors(tmp_path, capsys, body, words):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(body))
    _one_line_error(["compare", str(f)], capsys, words)


def test_synth_seed_and_allowed_host_patterns(tmp_path, capsys):
    _one_line_error(["synth", str(tmp_path / "s"), *SYNTH, "--seed", "-1"], capsys, "--seed must be")
    from ufinebench.errors import UFineBenchError
    from ufinebench.serve.app import check_allowed_hosts

    assert check_allowed_hosts(["*", "*.example.com", "lab-box"]) == ["*", "*.example.com", "lab-box"]
    for bad in ("ex*ample.com", "*example.com", "two words", ""):
        with pytest.raises(UFineBenchError, match="--allowed-host"):
            check_allowed_hosts([bad])


def test_a_checkpoint_whose_tensors_do_not_fit_its_meta_is_a_one_line_error(tiny_synth, tmp_path, capsys):
    from test_train import _cfg
    from ufinebench.model.checkpoint import resolve_checkpoint
    from ufinebench.training import train

    run = train(_cfg(tiny_synth, tmp_path / "run", "train.epochs=1", "train.eval_every=0"), progress=False)
    ck = resolve_checkpoint(run)
    meta = json.loads((ck / "meta.json").read_text())
    meta["config"]["model"]["embed_dim"] = 48  # the saved tensors are 32 wide
    (ck / "meta.json").write_text(json.dumps(meta))
    _one_line_error(["eval", "--checkpoint", str(ck), "--data", str(tiny_synth / "ufine_synth.json")], capsys, "weights do not fit")


def test_a_run_that_stopped_before_its_first_checkpoint_starts_again_and_resume_says_why(tiny_synth, tmp_path, capsys):
    """After a full disk (or a kill) before the first epoch ended, the run folder has checkpoints/
    but no checkpoint: --resume says there is nothing to resume, and --config trains in place (it
    said 'already holds a run; use --resume', and --resume said 'no checkpoint here')."""
    from test_train import _cfg
    from ufinebench.outputs import add_entries
    from ufinebench.training import TRAIN_ENTRIES, train

    run = tmp_path / "run"
    add_entries(run, "train", TRAIN_ENTRIES)
    (run / "checkpoints" / ".epoch_0001.tmp-999999999").mkdir(parents=True)  # what a write that failed half-way left
    _one_line_error(["train", "--resume", str(run)], capsys, "no finished epoch to resume from")
    assert train(_cfg(tiny_synth, run, "train.epochs=1", "train.eval_every=0"), progress=False) == run
    assert (run / "checkpoints" / "last").read_text() == "epoch_0001"
    assert not (run / "checkpoints" / ".epoch_0001.tmp-999999999").exists()  # the dead writer's temporary folder went


@pytest.mark.parametrize("key, shape", [("visual.proj", (63, 32)), ("text_projection", (32, 31)), ("ln_final.weight", (31,)),
                                        ("transformer.resblocks.0.attn.in_proj_weight", (33, 32)), ("visual.positional_embedding", (3, 64)),
                                        ("positional_embedding", (16,)), ("nan", None)])
def test_import_clip_refuses_weights_of_wrong_shapes_or_with_nan(tmp_path, capsys, key, shape):
    from clip_reference import reference_clip

    sd = dict(reference_clip().state_dict())
    if shape is None:
        sd["visual.proj"][0, 0] = float("nan")
    else:
        sd[key] = torch.zeros(shape)
    torch.save(sd, tmp_path / "w.pt")
    out = tmp_path / "ck"
    _one_line_error(["import-clip", str(tmp_path / "w.pt"), "--image-size", "32x32", "--text-length", "16", "--activation",
                     "quick_gelu", "-o", str(out)], capsys, "NaN or infinite" if shape is None else "do not form one CLIP ViT")
    assert not (out / "model.safetensors").exists()


def test_a_fifo_never_hangs_the_image_readers(tmp_path):
    """An image path that is a FIFO: the report's thumbnail, the guarded loader and validate's check
    answer at once (opening it would block until someone writes)."""
    from ufinebench.data.annotations import image_problem
    from ufinebench.data.transforms import load_image
    from ufinebench.errors import UFineBenchError
    from ufinebench.report import _thumb

    fifo = tmp_path / "img.jpg"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    assert _thumb(str(fifo)) == ""
    with pytest.raises(UFineBenchError, match="not a regular file"):
        load_image(fifo)
    assert "not a regular file" in (image_problem(fifo) or "")
    assert time.perf_counter() - t0 < 5


def test_search_keeps_negative_person_ids_and_older_chunks_still_read(tmp_path):
    """A dataset's negative id is an id (search reported it as null); chunks written before ids were
    marked known read -1 as 'no id', as they meant."""
    from ufinebench.search.index import _read_parts

    parts = tmp_path / "parts"
    parts.mkdir()
    np.savez(parts / "000000.npz", embeddings=np.zeros((2, 3), np.float32), paths=np.array(["a", "b"]),
             person_ids=np.array([-5, 0]), person_known=np.array([True, False]))
    np.savez(parts / "000001.npz", embeddings=np.zeros((2, 3), np.float32), paths=np.array(["c", "d"]), person_ids=np.array([-1, 3]))
    assert _read_parts(parts)["person_ids"] == [-5, None, None, 3]


def test_duplicate_score_keys_are_found_in_linear_time():
    """Score files' keys are matched to the split; a repeat among 200,000 keys is named at once (the
    check was quadratic: minutes)."""
    from ufinebench.errors import UFineBenchError
    from ufinebench.evaluate.run import _align

    keys = [f"img{i}.jpg" for i in range(200_000)]
    t0 = time.perf_counter()
    with pytest.raises(UFineBenchError, match="repeat: img5.jpg"):
        _align(keys[:-1] + ["img5.jpg"], keys, len(keys), "gallery")
    assert time.perf_counter() - t0 < 10


def test_captions_and_paths_with_lone_surrogates_or_nul_are_refused_where_they_enter(tmp_path, capsys):
    r"""JSON's "\ud800" escapes decode to text that no file, tokenizer or web page can take: validate
    flags the record (it said OK) and build-3c refuses it in one line (it crashed writing its output)."""
    body = json.dumps([{"split": "test", "id": 1, "file_path": "a.jpg", "captions": ["a man \udc00 in red"]},
                       {"split": "test", "id": 2, "file_path": "b\u0000.jpg", "captions": ["a woman"]}])
    ann = _annotation(tmp_path, body)
    out = _one_line_error(["validate", ann, "--format", "ufine6926"], capsys, "lone surrogate", code=1)
    assert "field 'file_path'" in out and "field 'captions[0]'" in out
    _one_line_error(["build-3c", "--from", ann, "--out", str(tmp_path.parent / f"{tmp_path.name}-3c.json")], capsys, "lone surrogate")


def test_paths_with_nul_are_one_line_errors(tmp_path, capsys):
    """A NUL in an output path reached os.stat and ended in a traceback ('embedded null byte')."""
    npz = tmp_path / "m.npz"
    np.savez(npz, similarity=np.eye(2), query_ids=np.arange(2), gallery_ids=np.arange(2))
    _one_line_error(["metrics", str(npz), "--json", str(tmp_path / "x\x00.json")], capsys, "cannot hold a NUL")
    _one_line_error(["validate", str(tmp_path / "a\x00b.json")], capsys, "no such file")
