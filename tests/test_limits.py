"""Bounded parsing helpers (ufinebench.limits)."""

from __future__ import annotations

import numpy as np
import pytest

from ufinebench.errors import UFineBenchError
from ufinebench.limits import MAX_YAML_NODES, check_pixels, load_yaml, quote, read_json


def test_yaml_of_a_config_loads():
    assert load_yaml("model:\n  arch: cfam\ntrain:\n  lr: 0.001\n") == {"model": {"arch": "cfam"}, "train": {"lr": 0.001}}


def test_yaml_expansion_is_bounded_even_with_few_aliases():
    # 5 levels of 12 aliases: 60 aliases (under the alias cap) expanding to 12^5 = 248,832 leaves
    doc = "a: &a [" + ", ".join(["x"] * 12) + "]\n"
    for prev, cur in zip("abcd", "bcde", strict=False):
        doc += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 12) + "]\n"
    with pytest.raises(UFineBenchError, match="expands to more than"):
        load_yaml(doc)
    assert 12**5 > MAX_YAML_NODES


def test_yaml_alias_count_and_depth():
    with pytest.raises(UFineBenchError, match="aliases"):
        load_yaml("a: &a 1\nb: [" + ", ".join(["*a"] * 100) + "]\n")
    with pytest.raises(UFineBenchError, match="nested deeper"):
        load_yaml("a: " + "[" * 40 + "]" * 40)


def test_json_limits(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    p.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(UFineBenchError, match="nested too deeply"):
        read_json(p)
    p.write_text("[1, 2, 3]" + " " * 3000)
    assert read_json(p) == [1, 2, 3]
    with pytest.raises(UFineBenchError, match="allowed"):
        read_json(p, limit=100)
    monkeypatch.setenv("UFINEBENCH_MAX_JSON_MB", "0")
    with pytest.raises(UFineBenchError, match="allowed"):
        read_json(p)


def test_pixels_and_quotes(monkeypatch):
    check_pixels((4000, 3000), "photo.jpg")
    with pytest.raises(UFineBenchError, match="pixels"):
        check_pixels((100_000, 100_000), "bomb.png")
    monkeypatch.setenv("UFINEBENCH_MAX_PIXELS", "100")
    with pytest.raises(UFineBenchError, match="UFINEBENCH_MAX_PIXELS"):
        check_pixels((20, 20), "small.png")
    q = quote("x" * 10_000)
    assert len(q) <= 80 and q.endswith("…")
    assert quote("ab") == "'ab'"


def test_npz_members_within_limit_load(tmp_path):
    from ufinebench.io import load_metrics_npz

    np.savez(tmp_path / "ok.npz", similarity=np.eye(3), query_ids=np.arange(3), gallery_ids=np.arange(3))
    assert load_metrics_npz(tmp_path / "ok.npz")["similarity"].shape == (3, 3)
