"""The benchmark scripts run end to end at a tiny size (their real figures are in docs/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_claims_script_tiny(tmp_path):
    out = tmp_path / "claims"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "claims.md").read_text()
    for section in ("### A.", "### B/C.", "### D."):
        assert section in md
    res = json.loads((out / "claims.json").read_text())
    assert len(res["claims"]["A"]["trained on fine texts"]["overall"]) == 2  # two seeds
    assert set(res["claims"]["BC"]) == {"cfam", "irra", "clip-sdm", "cfam without granularity", "cfam without matching"}
    d = res["claims"]["D"]
    assert d["original"]["R1"] == d["squashed"]["R1"] and d["original"]["mAP"] == d["squashed"]["mAP"]
    assert d["original"]["mSD"] != d["squashed"]["mSD"]
    assert (out / "D_original.png").is_file() and (out / "D_squashed.png").is_file()


def test_demo_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ufinebench", "demo", "--quick", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout and (tmp_path / "d" / "report" / "index.html").is_file()
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["CFAM 3C"]["overall"]["queries"] > 0 and "rerank" in res["CFAM 3C"]
    again = subprocess.run([sys.executable, "-m", "ufinebench", "demo", "--quick", "--out", str(tmp_path / "d")],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert json.loads((tmp_path / "d" / "results.json").read_text())["CFAM 3C"]["overall"] == res["CFAM 3C"]["overall"]


def test_search_load_script_small():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_load.py"), "--images", "3000", "--requests", "40",
                           "--queries", "10"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flat:" in proc.stdout and "hnsw:" in proc.stdout and "0 errors" in proc.stdout
