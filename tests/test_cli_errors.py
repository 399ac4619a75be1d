"""Every command, fed hostile inputs, answers with an exit code and one line: never a traceback.

One table of (command line, what the message must mention) over files made to break things:
malformed, deeply nested and oversized JSON/YAML, alias bombs, an .npz that declares a 4 TB
array, an image header announcing 10^10 pixels, truncated and empty images, wrong types, bad
numbers, missing and unreadable paths. Dataset cases are also run through `validate
--check-images`, which must flag each of them (so a dataset that passes validation does not crash
`train` or `eval` later).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from test_train import TINY_MODEL
from ufinebench.cli import main
from ufinebench.config import load_config
from ufinebench.training import train

FIXTURE = Path(__file__).parent / "fixtures" / "formats" / "UFine6926"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is a few bytes: a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _dataset(root: Path, name: str, entries: list | dict | str, images: dict[str, bytes] | None = None) -> Path:
    d = root / name
    (d / "images").mkdir(parents=True)
    for f in FIXTURE.glob("images/*.jpg"):
        shutil.copy(f, d / "images" / f.name)
    for fname, data in (images or {}).items():
        (d / "images" / fname).write_bytes(data)
    text = entries if isinstance(entries, str) else json.dumps(entries)
    (d / "ann.json").write_text(text)
    return d / "ann.json"


def _entry(**kw: object) -> dict:
    base = {"split": "train", "id": 1, "file_path": "images/1.jpg", "captions": ["a man in a red coat and blue jeans"]}
    return {**base, **kw}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_synth):
    r = tmp_path_factory.mktemp("hostile")
    good = [_entry(id=i, file_path=f"images/{i}.jpg", split=s) for i, s in zip(range(1, 6), ["train", "train", "test", "test", "test"], strict=False)]
    files = {
        "ok": _dataset(r, "ok", good),
        "notjson": _dataset(r, "notjson", "{[ not json"),
        "deep": _dataset(r, "deep", "[" * 100_000 + "]" * 100_000),
        "dict": _dataset(r, "dict", {"a": 1}),
        "empty": _dataset(r, "empty", []),
        "nofields": _dataset(r, "nofields", [{"split": "train"}]),
        "types": _dataset(r, "types", [_entry(id="seven", file_path=5, captions="not a list")]),
        "escape": _dataset(r, "escape", good + [_entry(id=9, file_path="../../../../../../etc/passwd")]),
        "missing_img": _dataset(r, "missing_img", good + [_entry(id=9, file_path="images/nope.jpg")]),
        "pixel_bomb": _dataset(r, "pixel_bomb", good + [_entry(id=9, file_path="images/bomb.png", split="test"),
                                                          _entry(id=10, file_path="images/bomb2.png", split="train")],
                               {"bomb.png": _png_header(100_000, 100_000), "bomb2.png": _png_header(100_000, 100_000)}),
        "truncated": _dataset(r, "truncated", good + [_entry(id=9, file_path="images/cut.jpg", split="test")],
                              {"cut.jpg": (FIXTURE / "images" / "1.jpg").read_bytes()[:200]}),
        "zero": _dataset(r, "zero", good + [_entry(id=9, file_path="images/zero.jpg", split="test")], {"zero.jpg": b""}),
        "notimage": _dataset(r, "notimage", good + [_entry(id=9, file_path="images/text.jpg", split="test")], {"text.jpg": b"hello"}),
        "emptycap": _dataset(r, "emptycap", good + [_entry(id=9, captions=["   "])]),
    }
    (r / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=False)) + "model: {}\n")
    (r / "deep.yaml").write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    (r / "list.yaml").write_text("- model\n- train\n")
    (r / "unknown.yaml").write_text("model:\n  flux_capacitor: 3\n")
    (r / "badvalue.yaml").write_text("train:\n  lr: fast\n")
    (r / "big.yaml").write_text("# padding\n" * 120_000)
    (r / "notyaml.yaml").write_text("model: [unclosed\n")
    (r / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # 10^6 x 10^6 float32 declared, a few bytes stored
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
        z.writestr("similarity.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\x00" * 16)
        for k in ("query_ids", "gallery_ids"):
            b = io.BytesIO()
            np.save(b, np.arange(3))
            z.writestr(f"{k}.npy", b.getvalue())
    (r / "bomb.npz").write_bytes(buf.getvalue())
    np.savez(r / "nan.npz", similarity=np.full((2, 2), np.nan), query_ids=np.arange(2), gallery_ids=np.arange(2))
    np.savez(r / "shape.npz", similarity=np.zeros((2, 3)), query_ids=np.arange(2), gallery_ids=np.arange(2))
    np.savez(r / "strids.npz", similarity=np.zeros((2, 2)), query_ids=np.array(["a", "b"]), gallery_ids=np.arange(2))
    (r / "notzip.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    (r / "garbage.pt").write_bytes(b"\x00\x01garbage" * 100)
    (r / "results.json").write_text('{"no": "models"}')
    (r / "afile").write_text("I am a file")
    (r / "emptydir").mkdir()
    ck = r / "ck_bad"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"garbage")
    (ck / "meta.json").write_text("{")
    run = train(load_config("synth-cpu-small", TINY_MODEL + [
        f"data.dataset={tiny_synth / 'ufine_synth.json'}", f"train.out_dir={r / 'run'}", "data.workers=0", "data.bpe_vocab_size=300",
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=1", "train.eval_every=0", "train.tensorboard=false"]), progress=False)
    return {"root": r, "run": run, **{k: str(v) for k, v in files.items()}}


# (command line with {placeholders}, a word the one-line message must contain)
CASES = [
    # validate and stats on broken annotation files
    ("validate {notjson}", "not valid JSON"), ("validate {deep}", "nested too deeply"), ("validate {dict}", ""),
    ("validate {empty}", ""), ("validate {nofields}", ""), ("validate {types}", ""), ("validate {root}/nothing.json", "no such"),
    ("validate {root}/afile", ""), ("stats {deep}", "nested too deeply"), ("stats {notjson}", "not valid JSON"), ("stats {empty}", ""),
    ("validate --workers -2 --check-images {ok}", "workers"),
    # metrics on hostile .npz files
    ("metrics {root}/bomb.npz", "declare"), ("metrics {root}/nan.npz", "NaN"), ("metrics {root}/shape.npz", "shape"),
    ("metrics {root}/strids.npz", "integer"), ("metrics {root}/notzip.npz", "cannot read"), ("metrics {root}/nothing.npz", "no such"),
    ("metrics {root}/emptydir", "directory"),
    # synth arguments
    ("synth --identities 0 {root}/s1", "identities"), ("synth --identities -3 {root}/s2", "identities"), ("synth --size 0x0 {root}/s3", "size"),
    ("synth --size abc {root}/s4", "size"), ("synth --images-per-id 5:2 {root}/s5", "images-per-id"), ("synth {root}/afile", ""),
    ("synth --identities abc {root}/s6", "invalid int"),
    # train configs: bombs, nesting, size, types, numbers
    ("train --config {root}/bomb.yaml", "aliases"), ("train --config {root}/deep.yaml", "nested"), ("train --config {root}/list.yaml", "sections"),
    ("train --config {root}/unknown.yaml", "flux_capacitor"), ("train --config {root}/badvalue.yaml", "lr"),
    ("train --config {root}/big.yaml", "MB"), ("train --config {root}/notyaml.yaml", "YAML"), ("train --config {root}/binary.yaml", "UTF-8"),
    ("train --config {root}/nothing.yaml", "no such"), ("train --config no-such-preset", "preset"),
    ("train --config synth-cpu-small --set train.lr=inf", "lr"), ("train --config synth-cpu-small --set train.epochs=-1", "epochs"),
    ("train --config synth-cpu-small --set model.temperature=nan", "temperature"), ("train --config synth-cpu-small --set train.lr=abc", "lr"),
    ("train --config synth-cpu-small --set nokey", "KEY=VALUE"), ("train --config synth-cpu-small --set model.flux=1", "flux"),
    ("train --config synth-cpu-small --set data.dataset={deep} --set train.out_dir={root}/t1", "nested too deeply"),
    ("train --config synth-cpu-small --set data.dataset={empty} --set train.out_dir={root}/t2", ""),
    ("train --config synth-cpu-small --set data.dataset={pixel_bomb} --set train.out_dir={root}/t3 --set train.batch_size=2", "pixels"),
    ("train --resume {root}/emptydir", ""),
    # eval
    ("eval --checkpoint {root}/nothing --data {ok}", ""), ("eval --checkpoint {root}/ck_bad --data {ok}", "meta.json"),
    ("eval --checkpoint {run} --data {deep}", "nested too deeply"), ("eval --checkpoint {run} --data {pixel_bomb}", "pixels"),
    ("eval --checkpoint {run} --data {truncated}", "cut.jpg"), ("eval --checkpoint {run} --data {zero}", "zero.jpg"),
    ("eval --checkpoint {run} --data {notimage}", "text.jpg"), ("eval --checkpoint {run} --data {ok} --split nosuch", "nosuch"),
    ("eval --checkpoint {run} --data {ok} --rerank-topk -1", "rerank"), ("eval --checkpoint {run} --data {ok} --batch-size 0", "batch"),
    ("eval --checkpoint {run} --data {missing_img}", "nope.jpg"),
    # compare
    ("compare {notjson}", "not valid JSON"), ("compare {deep}", "nested too deeply"), ("compare {root}/results.json", ""),
    ("compare {root}/nothing.json", ""),
    # import-clip
    ("import-clip {root}/garbage.pt -o {root}/ic1", ""), ("import-clip {root}/nothing.pt -o {root}/ic2", ""),
    ("import-clip {root}/garbage.pt -o {root}/garbage.pt", ""),
    # build-3c
    ("build-3c --from {root}/nothing.json --out {root}/b1.json", ""), ("build-3c --from {notjson} --out {root}/b2.json", "not valid JSON"),
    ("build-3c --from {ok} --out {ok}", ""), ("build-3c --from {ok} --out {root}/b3.json --per-caption 0", "per-caption"),
    # index, search, serve, demo
    ("index --checkpoint {run} --images {root}/emptydir --out {root}/ix1", "no images"),
    ("index --checkpoint {root}/nothing --images {ok} --out {root}/ix2", ""),
    ("index --checkpoint {run} --images {pixel_bomb} --out {root}/ix3", "pixels"),
    ("index --checkpoint {run} --images {ok} --out {root}/ix4 --batch-size 0", "batch"),
    ("search {root}/emptydir hello", "index"), ("search {root}/emptydir ' '", ""), ("search {root}/emptydir hello -k 0", ""),
    ("serve {root}/emptydir", "index"), ("serve {root}/emptydir --port 99999", "port"), ("demo --out {root}/afile", ""),
]
# dataset cases that `validate --check-images` must flag (each would break train or eval)
VALIDATE_FLAGS = ["notjson", "deep", "dict", "empty", "nofields", "types", "escape", "missing_img", "pixel_bomb", "truncated", "zero",
                  "notimage", "emptycap"]


def _argv(line: str, ctx: dict) -> list[str]:
    import shlex

    return shlex.split(line.format(**ctx))


@pytest.mark.parametrize("line,word", CASES, ids=[c[0].split(" {")[0] + f"#{i}" for i, c in enumerate(CASES)])
def test_hostile_input_gets_one_line(hostile, line, word, capsys):
    try:
        code = main(_argv(line, hostile))
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code not in (0, None), (line, out[-500:], err[-500:])
    if line.startswith("validate") and not err:  # validate's answer is its report of problems, on stdout
        assert "Traceback" not in out and word.lower() in out.lower(), (line, out[-2000:])
        return
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, (line, err[-2000:])
    assert lines[0].startswith("ufinebench"), lines[0]
    assert word.lower() in lines[0].lower(), (word, lines[0])
    assert len(lines[0]) <= 800


@pytest.mark.parametrize("name", VALIDATE_FLAGS)
def test_validate_flags_what_would_break_training(hostile, name, capsys):
    code = main(["validate", "--check-images", hostile[name]])
    out, err = capsys.readouterr()
    assert code != 0, (name, out[-1000:])
    assert "Traceback" not in err


def test_validate_passes_the_good_dataset(hostile, capsys):
    assert main(["validate", "--check-images", hostile["ok"]]) == 0
