"""Parsing every format into records, validation of planted faults, `validate` and `stats`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from formats_fixture import FORMAT_LAYOUT, make_dataset, write_image
from ufinebench.cli import main
from ufinebench.data.annotations import (
    FORMATS,
    DataError,
    check_images,
    label_map,
    load_dataset,
    read_annotations,
    resolve_dataset,
    word_count_bucket,
)
from ufinebench.data.stats import dataset_stats, words

# the sample files of each public format, shipped with the tests (copied from the project's shared samples)
SHARED = Path(__file__).resolve().parent / "fixtures" / "formats"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_parses_from_folder_and_file(tmp_path, fmt):
    ann_path = make_dataset(tmp_path / fmt, fmt)
    for target in (tmp_path / fmt, ann_path):
        ann = read_annotations(target)
        assert ann.format == fmt and ann.ok, ann.problems
        assert len(ann.samples) == 8 and ann.num_records == 8
        assert sorted({s.person_id for s in ann.samples}) == [1, 2, 3, 4]
        assert all(s.image_path.is_file() for s in ann.samples)
        assert all(len(s.captions) == 2 for s in ann.samples)
    if fmt == "ufine3c":
        assert {s.image_tags["source"] for s in ann.samples} == {"UFine6926", "CUHK-PEDES"}
    if FORMAT_LAYOUT[fmt][1] == "imgs":
        assert all("imgs" in s.image_path.parts for s in ann.samples)


def test_shared_sample_files_parse_with_expected_counts():
    expected = {  # folder: (format, records, identities, captions, splits)
        "UFine6926": ("ufine6926", 8, 4, 16, {"train", "test"}),
        "UFine3C": ("ufine3c", 8, 4, 24, {"test"}),
        "CUHK-PEDES": ("cuhk-pedes", 4, 4, 8, {"train", "val", "test"}),
        "ICFG-PEDES": ("icfg-pedes", 4, 4, 4, {"train", "test"}),
        "RSTPReid": ("rstpreid", 4, 4, 8, {"train", "val", "test"}),
    }
    assert SHARED.is_dir(), f"the format samples are expected at {SHARED}"
    for folder, (fmt, n, ids, caps, splits) in expected.items():
        ann = read_annotations(SHARED / folder)
        assert ann.ok, (folder, [str(p) for p in ann.problems])
        assert ann.format == fmt and ann.num_records == n == len(ann.samples)
        assert len({s.person_id for s in ann.samples}) == ids
        assert sum(len(s.captions) for s in ann.samples) == caps
        assert {s.split for s in ann.samples} == splits


def test_icfg_alternative_file_name_and_format_inference(tmp_path):
    path = make_dataset(tmp_path / "icfg", "icfg-pedes")
    alt = path.with_name("ICFG_PEDES.json")
    path.rename(alt)
    assert read_annotations(tmp_path / "icfg").format == "icfg-pedes"
    # an unrecognised file name falls back to the fields; CUHK and ICFG look alike -> ask
    renamed = alt.with_name("annotations.json")
    alt.rename(renamed)
    with pytest.raises(DataError, match="--format"):
        read_annotations(renamed)
    assert read_annotations(renamed, "icfg-pedes").ok
    ufine = make_dataset(tmp_path / "u", "ufine6926")
    other = ufine.with_name("mine.json")
    ufine.rename(other)
    assert read_annotations(other).format == "ufine6926"


def test_folder_with_two_annotation_files_asks_for_one(tmp_path):
    make_dataset(tmp_path / "d", "cuhk-pedes")
    (tmp_path / "d" / "data_captions.json").write_text("[]")
    with pytest.raises(DataError, match="several annotation files"):
        read_annotations(tmp_path / "d")


PLANTED = [
    # (record index, field substring, how to break the record)
    (0, "id", lambda r: r.update(id="7")),
    (1, "captions", lambda r: r.pop("captions")),
    (2, "captions[1]", lambda r: r["captions"].__setitem__(1, "   ")),
    (3, "split", lambda r: r.update(split="dev")),
    (4, "captions[0]", lambda r: r["captions"].__setitem__(0, 42)),
    (5, "file_path", lambda r: r.update(file_path="MISSING/nothing.jpg")),
    (6, "id", lambda r: r.update(id=3.0)),
    (7, "captions", lambda r: r.update(captions="just a string")),
]


def test_validate_finds_each_planted_fault_with_index_and_field(tmp_path, capsys):
    path = make_dataset(tmp_path / "d", "ufine6926", n_images_per_id=3)  # 12 records
    records = json.loads(path.read_text())
    for idx, _, breaker in PLANTED:
        breaker(records[idx])
    records.append("not an object")  # record 12
    dup = dict(records[10])  # record 13: the image of record 10 with another person id
    dup["id"] = 99
    records.append(dup)
    path.write_text(json.dumps(records))
    ann = read_annotations(path)
    found = {(p.index, p.field) for p in ann.errors}
    for idx, fld, _ in PLANTED:
        assert any(i == idx and f and fld in f for i, f in found), (idx, fld, found)
    assert (12, None) in found
    assert any(p.index == 13 and "with id" in p.message for p in ann.errors)
    assert not any(p.index in (8, 9, 10, 11) for p in ann.errors)
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert code == 1 and "INVALID" in out
    assert "record 3, field 'split'" in out and "record 5, field 'file_path'" in out
    with pytest.raises(DataError, match="ufinebench validate") as exc:
        load_dataset(path)
    assert "\n" not in str(exc.value)


def test_validate_clean_dataset_exits_zero(tmp_path, capsys):
    path = make_dataset(tmp_path / "d", "rstpreid")
    assert main(["validate", str(path), "--check-images"]) == 0
    assert capsys.readouterr().out.strip().startswith("OK")


def test_check_images_finds_broken_files(tmp_path, capsys):
    path = make_dataset(tmp_path / "d", "cuhk-pedes")
    ann = read_annotations(path)
    imgs = sorted({s.image_path for s in ann.samples})
    imgs[0].write_bytes(b"")  # zero-size
    data = imgs[1].read_bytes()
    imgs[1].write_bytes(data[: len(data) // 2])  # truncated JPEG
    imgs[2].write_bytes(b"definitely not an image")  # unreadable
    write_image(imgs[3], fmt="PNG")  # a PNG under a .jpg name is fine: content decides
    problems = check_images(ann.samples, workers=2)
    msgs = {p.index: p.message for p in problems}
    by_path = {s.image_path: s.index for s in ann.samples}
    assert "zero-size" in msgs[by_path[imgs[0]]]
    assert "truncated" in msgs[by_path[imgs[1]]] or "broken" in msgs[by_path[imgs[1]]]
    assert "not a readable image" in msgs[by_path[imgs[2]]]
    assert by_path[imgs[3]] not in msgs
    assert main(["validate", str(path)]) == 0  # files exist: fine without --check-images
    capsys.readouterr()
    assert main(["validate", str(path), "--check-images"]) == 1
    out = capsys.readouterr().out
    assert "zero-size" in out and "INVALID" in out


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not valid JSON"), ('{"a": 1}', "expected a JSON list"), ("[]", "no records")],
)
def test_unreadable_annotation_files(tmp_path, capsys, content, message):
    p = tmp_path / "UFine6926_Annotations_1024.json"
    p.write_text(content)
    assert main(["validate", str(p)]) == 1
    out = capsys.readouterr().out
    assert message in out
    with pytest.raises(DataError):
        load_dataset(p)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    for argv in (["validate", str(tmp_path / "nope.json")], ["stats", str(tmp_path / "nope")]):
        proc = subprocess.run([sys.executable, "-m", "ufinebench", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_load_dataset_split_checks(tmp_path):
    path = make_dataset(tmp_path / "d", "icfg-pedes")
    assert len(load_dataset(path, split="train").split("train")) == 4
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset(path, split="val")


def test_duplicate_image_same_id_is_a_warning(tmp_path):
    path = make_dataset(tmp_path / "d", "ufine6926")
    records = json.loads(path.read_text())
    records.append(dict(records[0]))
    path.write_text(json.dumps(records))
    ann = read_annotations(path)
    assert ann.ok and any(p.severity == "warning" and p.index == 8 for p in ann.problems)


def test_stats_figures_recomputed_independently(tmp_path, capsys):
    path = make_dataset(tmp_path / "d", "ufine6926", n_images_per_id=3)
    records = json.loads(path.read_text())
    records[0]["captions"].append("Short one.")
    path.write_text(json.dumps(records))
    out_json = tmp_path / "s.json"
    plot = tmp_path / "h.png"
    assert main(["stats", str(path), "--json", str(out_json), "--plot", str(plot)]) == 0
    st = json.loads(out_json.read_text())
    train = [r for r in records if r["split"] == "train"]
    caps = [c for r in train for c in r["captions"]]
    lens = sorted(len(c.split()) for c in caps)
    tr = st["splits"]["train"]
    assert tr["identities"] == len({r["id"] for r in train}) == 2
    assert tr["images"] == len(train) == 6 and tr["captions"] == len(caps) == 13
    assert tr["words_per_caption"]["mean"] == pytest.approx(sum(lens) / len(lens))
    assert tr["words_per_caption"]["median"] == lens[len(lens) // 2]
    assert tr["captions_per_image"]["mean"] == pytest.approx(13 / 6)
    assert tr["images_per_identity"]["mean"] == 3
    assert tr["vocabulary"] == len({w.lower().strip(".") for c in caps for w in c.split()})
    assert sum(tr["word_histogram"].values()) == 13
    assert st["all"]["captions"] == sum(len(r["captions"]) for r in records)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert dataset_stats(read_annotations(path))["all"]["identities"] == 4


def test_helpers():
    assert label_map([30, 10, 30, 20]) == {10: 0, 20: 1, 30: 2}
    assert word_count_bucket("a " * 30) == "<=30" and word_count_bucket("a " * 31) == "31-60"
    assert word_count_bucket("a " * 61) == ">60"
    assert words("Don't wear the RED coat, ok?") == ["don't", "wear", "the", "red", "coat", "ok"]
    with pytest.raises(DataError, match="unknown format"):
        resolve_dataset(".", "bogus")
