"""`ufinebench metrics`: output, JSON keys, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from reference import reference_metrics
from ufinebench.cli import main
from ufinebench.metrics import metrics_from_similarity

KEYS = ["R1", "R5", "R10", "mAP", "mINP", "mSD", "queries", "queries_without_positive"]


@pytest.fixture()
def sim_npz(tmp_path):
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, (30, 20)).astype(np.float32)
    qids, gids = rng.integers(0, 7, 30), rng.integers(0, 6, 20)
    path = tmp_path / "sim.npz"
    np.savez(path, similarity=sim, query_ids=qids, gallery_ids=gids)
    return path, sim, qids, gids


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_exactly_the_documented_keys(sim_npz, tmp_path, capsys):
    path, sim, qids, gids = sim_npz
    out_json = tmp_path / "sub" / "m.json"
    code, out, err = _run(["metrics", str(path), "--json", str(out_json)], capsys)
    assert code == 0
    data = json.loads(out_json.read_text())
    assert list(data) == KEYS
    ref = reference_metrics(sim, qids, gids)["summary"]
    for k in KEYS:
        assert data[k] == pytest.approx(ref[k], abs=1e-6)
    assert isinstance(data["mSD"], float) and isinstance(data["queries"], int)
    assert data["queries_without_positive"] == ref["queries_without_positive"] > 0
    assert "mSD" in out and f"{ref['R1']:.2f}" in out
    assert "left out" in err


def test_direction_and_msd_options(sim_npz, tmp_path, capsys):
    path, sim, qids, gids = sim_npz
    j = tmp_path / "i2t.json"
    assert _run(["metrics", str(path), "--direction", "i2t", "--msd", "official", "--json", str(j)], capsys)[0] == 0
    want = metrics_from_similarity(sim.T, gids, qids, msd="official").as_dict()
    assert json.loads(j.read_text()) == pytest.approx({k: want[k] for k in KEYS})


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_scores_outside_cosine_range_keep_rank_metrics_but_no_msd(sim_npz, tmp_path, capsys, backend):
    path, sim, qids, gids = sim_npz
    cos = metrics_from_similarity(sim, qids, gids, backend=backend)
    logits = metrics_from_similarity(sim * 20.0, qids, gids, backend=backend)  # same order, not cosines
    a, b = cos.as_dict(), logits.as_dict()
    assert cos.msd_note is None and isinstance(a["mSD"], float)
    assert b["mSD"] is None and "outside [-1, 1]" in logits.msd_note
    assert {k: v for k, v in b.items() if k != "mSD"} == pytest.approx({k: v for k, v in a.items() if k != "mSD"})
    rounding = metrics_from_similarity(np.clip(sim * 1.00005, -1.00005, 1.00005), qids, gids, backend=backend)
    assert rounding.msd_note is None  # a cosine rounded past 1 is still a cosine
    big = tmp_path / "logits.npz"
    np.savez(big, similarity=sim * 20.0, query_ids=qids, gallery_ids=gids)
    out_json = tmp_path / "m.json"
    code, out, err = _run(["metrics", str(big), "--json", str(out_json)], capsys)
    assert code == 0 and "not reported" in err and "Traceback" not in err
    data = json.loads(out_json.read_text())
    assert data["mSD"] is None and data["R1"] == pytest.approx(a["R1"])
    row = [line for line in out.splitlines() if line.startswith("t2i")][0]
    assert row.split()[-3] == "-"  # mSD column shows '-' (then queries, queries without positive)


def test_features_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    q, g = rng.choice([-1.0, 1.0], (12, 16)), rng.choice([-1.0, 1.0], (9, 16))  # 1/sqrt(16) is exact
    qids, gids = rng.integers(0, 4, 12), rng.integers(0, 4, 9)
    path = tmp_path / "f.npz"
    np.savez(path, query_features=q.astype(np.float16), gallery_features=g.astype(np.float16), query_ids=qids, gallery_ids=gids)
    j = tmp_path / "f.json"
    assert _run(["metrics", str(path), "--json", str(j)], capsys)[0] == 0
    ref = reference_metrics(q @ g.T / 16.0, qids, gids)["summary"]
    assert json.loads(j.read_text()) == pytest.approx(ref, abs=1e-6)


def _write(tmp_path, name, **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


BAD_CASES = {
    "missing keys": (dict(similarity=np.zeros((2, 2)), query_ids=np.arange(2)), "expected keys"),
    "shape mismatch": (dict(similarity=np.zeros((2, 3)), query_ids=np.arange(2), gallery_ids=np.arange(2)), "shape"),
    "nan": (dict(similarity=np.array([[np.nan, 1.0]]), query_ids=[1], gallery_ids=[1, 2]), "NaN"),
    "inf features": (
        dict(query_features=np.array([[np.inf, 1.0]]), gallery_features=np.ones((2, 2)), query_ids=[1], gallery_ids=[1, 2]),
        "NaN or inf",
    ),
    "empty": (dict(similarity=np.zeros((0, 2)), query_ids=np.array([], int), gallery_ids=[1, 2]), "empty"),
    "string ids": (dict(similarity=np.zeros((1, 2)), query_ids=np.array(["a"]), gallery_ids=[1, 2]), "integer"),
    "fractional ids": (dict(similarity=np.zeros((1, 2)), query_ids=[0.5], gallery_ids=[1, 2]), "integer"),
    "2-D ids": (dict(similarity=np.zeros((1, 2)), query_ids=[[1]], gallery_ids=[1, 2]), "1-D"),
    "feature dims": (
        dict(query_features=np.ones((1, 3)), gallery_features=np.ones((2, 2)), query_ids=[1], gallery_ids=[1, 2]),
        "dimension",
    ),
    "int similarity": (dict(similarity=np.zeros((1, 2), int), query_ids=[1], gallery_ids=[1, 2]), "floating"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_npz_gives_one_line_error_exit_2(case, tmp_path, capsys):
    arrays, message = BAD_CASES[case]
    path = _write(tmp_path, "bad.npz", **arrays)
    code, out, err = _run(["metrics", str(path)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_unreadable_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    for target, message in [(garbage, "cannot read"), (tmp_path / "nope.npz", "no such file"), (tmp_path, "directory")]:
        code, _, err = _run(["metrics", str(target)], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, similarity=np.array([object()], dtype=object), query_ids=[1], gallery_ids=[1])
    code, _, err = _run(["metrics", str(pickled)], capsys)
    assert code == 2 and "cannot read" in err


def test_console_script_prints_no_traceback(tmp_path):
    bad = _write(tmp_path, "bad.npz", similarity=np.zeros((2, 3)), query_ids=[1, 2], gallery_ids=[1, 2])
    proc = subprocess.run(
        [sys.executable, "-m", "ufinebench", "metrics", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ufinebench metrics: error:")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["metrics", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--direction", "--msd", "--json", "FILE.npz"):
        assert opt in out
