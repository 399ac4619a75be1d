"""Annotation files of every supported format -> plain records, with validation.

One parser with a small field map per format (not a class per dataset). A dataset is named by a
path to its annotation file or to its folder, plus a format name where it cannot be inferred:

=============  ================================  ==========  ==========  ====================
format         annotation file (default names)   image root  image field  splits
=============  ================================  ==========  ==========  ====================
ufine6926      UFine6926_Annotations_1024.json   folder      file_path   train, val*, test
ufine3c        UFine3C_Annotations.json          folder      file_path   test
cuhk-pedes     reid_raw.json                     imgs/       file_path   train, val, test
icfg-pedes     ICFG-PEDES.json, ICFG_PEDES.json  imgs/       file_path   train, test
rstpreid       data_captions.json                imgs/       img_path    train, val, test
=============  ================================  ==========  ==========  ====================

(*) UFine6926 itself has train/test; UFine-Synth files, read as ``ufine6926``, add ``val``.
UFine-Synth's ``ufine_synth*.json`` read as ``ufine6926`` and ``ufine_synth_3c.json`` as ``ufine3c``.

Every record is one image with its captions. Person ids stay as given (metrics compare them);
contiguous labels for classifiers come from :func:`label_map`. Optional per-caption tags live in
the field ``caption_tags`` (a list parallel to ``captions`` of objects such as
``{"granularity": "fine", "style": "narrative"}``); UFine3C's ``source`` is an image tag.
Record numbers in messages are 0-based positions in the file's list.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ufinebench.errors import UFineBenchError
from ufinebench.limits import check_pixels, read_json

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # person ids are stored as int64
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL, lone surrogates


class DataError(UFineBenchError):
    """A dataset that cannot be used: unreadable, unrecognised or invalid."""


@dataclass(frozen=True)
class FormatSpec:
    """How one dataset format lays out its records and images."""

    name: str
    filenames: tuple[str, ...]  # annotation file names looked for in a dataset folder
    image_root: str  # image paths are relative to <dataset folder>/<image_root>
    image_field: str
    splits: tuple[str, ...]
    image_tag_fields: tuple[str, ...] = ()  # required string fields kept as image tags
    ignored_fields: tuple[str, ...] = ()


FORMATS: dict[str, FormatSpec] = {
    "ufine6926": FormatSpec(
        "ufine6926", ("UFine6926_Annotations_1024.json", "ufine_synth.json"), "", "file_path", ("train", "val", "test")
    ),
    "ufine3c": FormatSpec(
        "ufine3c", ("UFine3C_Annotations.json", "ufine_synth_3c.json"), "", "file_path", ("test",), ("source",)
    ),
    "cuhk-pedes": FormatSpec(
        "cuhk-pedes", ("reid_raw.json",), "imgs", "file_path", ("train", "val", "test"), (), ("processed_tokens",)
    ),
    "icfg-pedes": FormatSpec(
        "icfg-pedes", ("ICFG-PEDES.json", "ICFG_PEDES.json"), "imgs", "file_path", ("train", "test"), (), ("processed_tokens",)
    ),
    "rstpreid": FormatSpec("rstpreid", ("data_captions.json",), "imgs", "img_path", ("train", "val", "test")),
}

_NAME_HINTS = (  # (substring of the lower-cased file name, format)
    ("ufine3c", "ufine3c"),
    ("ufine_synth_3c", "ufine3c"),
    ("ufine6926", "ufine6926"),
    ("ufine_synth", "ufine6926"),
    ("reid_raw", "cuhk-pedes"),
    ("icfg", "icfg-pedes"),
    ("data_captions", "rstpreid"),
    ("rstp", "rstpreid"),
)


@dataclass(frozen=True)
class Sample:
    """One image and its captions: the plain record every later stage works from."""

    index: int  # 0-based position of the record in the annotation file
    image_path: Path  # absolute path of the image file
    file_path: str  # the path as written in the annotation file
    person_id: int  # raw id, as given
    split: str
    captions: tuple[str, ...]
    caption_tags: tuple[dict[str, Any], ...]  # one dict per caption (empty dicts when untagged)
    image_tags: dict[str, Any] = field(default_factory=dict)  # e.g. {"source": "CUHK-PEDES"}


@dataclass(frozen=True)
class Problem:
    """One validation finding: where (record index and field) and what."""

    index: int | None  # None: about the file as a whole
    field: str | None
    message: str
    severity: str = "error"  # "error" fails validation; "warning" is reported only

    def __str__(self) -> str:
        where = "file" if self.index is None else f"record {self.index}"
        if self.field:
            where += f", field '{self.field}'"
        tag = "" if self.severity == "error" else " (warning)"
        return f"{where}: {self.message}{tag}"


@dataclass
class Annotations:
    """A parsed annotation file: its samples and every problem found while reading it."""

    path: Path
    format: str
    image_root: Path
    samples: list[Sample]
    problems: list[Problem]
    num_records: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def split(self, name: str) -> list[Sample]:
        """Samples of one split (``"all"`` for every sample)."""
        if name == "all":
            return list(self.samples)
        return [s for s in self.samples if s.split == name]


# --------------------------------------------------------------------------------------------
# Locating a dataset


def resolve_dataset(path: str | os.PathLike[str], fmt: str | None = None) -> tuple[Path, str, Path]:
    """Find (annotation file, format name, image root) from a file or folder path.

    The format comes from ``fmt``, else the file name, else the fields of the first record.
    """
    p = Path(path).expanduser()
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        names = FORMATS[fmt].filenames if fmt else tuple(n for spec in FORMATS.values() for n in spec.filenames)
        found = [p / n for n in dict.fromkeys(names) if (p / n).is_file()]
        if not found:
            jsons = sorted(x.name for x in p.glob("*.json"))
            hint = f" (JSON files here: {', '.join(jsons)}; pass one of them)" if jsons else ""
            raise DataError(f"{p}: no annotation file of a known name found{hint}")
        if len(found) > 1:
            raise DataError(f"{p}: several annotation files ({', '.join(f.name for f in found)}); pass the one you mean")
        ann = found[0]
    else:
        ann = p
    name = fmt or _format_from_name(ann.name) or _format_from_fields(ann)
    spec = FORMATS[name]
    base = ann.resolve().parent
    root = base / spec.image_root if spec.image_root and (base / spec.image_root).is_dir() else base
    return ann, name, root


def _format_from_name(filename: str) -> str | None:
    low = filename.lower()
    for hint, name in _NAME_HINTS:
        if hint in low:
            return name
    return None


def _format_from_fields(ann: Path) -> str:
    data = _read_json(ann)
    first = next((r for r in data if isinstance(r, dict)), None) if isinstance(data, list) else None
    if first is None:
        raise DataError(f"{ann}: cannot infer the format (no record objects); pass --format")
    if "img_path" in first:
        return "rstpreid"
    if "source" in first:
        return "ufine3c"
    if "processed_tokens" in first:
        raise DataError(f"{ann}: CUHK-PEDES or ICFG-PEDES? pass --format cuhk-pedes or --format icfg-pedes")
    if "file_path" in first:
        return "ufine6926"
    raise DataError(f"{ann}: cannot infer the format from its fields; pass --format ({', '.join(FORMATS)})")


def _read_json(path: Path) -> Any:
    try:
        return read_json(path, "an annotation file")
    except UFineBenchError as exc:
        raise DataError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Parsing with validation


def read_annotations(
    path: str | os.PathLike[str], fmt: str | None = None, *, check_files: bool = True
) -> Annotations:
    """Parse a dataset, collecting every problem instead of stopping at the first.

    Invalid records are reported and left out of ``samples``. With ``check_files`` the image
    files are checked for existence (cheap); decoding them is :func:`check_images`.
    """
    ann, name, root = resolve_dataset(path, fmt)
    spec = FORMATS[name]
    data = _read_json(ann)
    problems: list[Problem] = []
    samples: list[Sample] = []
    if not isinstance(data, list):
        problems.append(Problem(None, None, f"expected a JSON list of records, found {type(data).__name__}"))
        return Annotations(ann, name, root, samples, problems, 0)
    if not data:
        problems.append(Problem(None, None, "the file holds no records"))
    seen: dict[str, tuple[int, int]] = {}  # file path -> (record index, person id)
    for i, rec in enumerate(data):
        sample = _parse_record(i, rec, spec, root, problems)
        if sample is None:
            continue
        prev = seen.get(sample.file_path)
        if prev is not None:
            if prev[1] != sample.person_id:
                problems.append(
                    Problem(i, spec.image_field, f"image {sample.file_path!r} is listed with id {prev[1]} in record "
                            f"{prev[0]} and with id {sample.person_id} here")
                )
                continue
            problems.append(
                Problem(i, spec.image_field, f"image {sample.file_path!r} is listed again (also record {prev[0]})", "warning")
            )
        else:
            seen[sample.file_path] = (i, sample.person_id)
        if check_files and not sample.image_path.is_file():
            problems.append(Problem(i, spec.image_field, f"image file not found: {sample.image_path}"))
            continue
        samples.append(sample)
    return Annotations(ann, name, root, samples, problems, len(data))


def _parse_record(i: int, rec: Any, spec: FormatSpec, root: Path, problems: list[Problem]) -> Sample | None:
    if not isinstance(rec, dict):
        problems.append(Problem(i, None, f"expected an object, found {type(rec).__name__}"))
        return None
    n_before = len(problems)

    def bad(fld: str, msg: str) -> None:
        problems.append(Problem(i, fld, msg))

    required = ("id", "split", spec.image_field, "captions") + spec.image_tag_fields
    for fld in required:
        if fld not in rec:
            bad(fld, "missing")
    pid = rec.get("id")
    if "id" in rec and (isinstance(pid, bool) or not isinstance(pid, int)):
        bad("id", f"person ids must be integers, found {json.dumps(pid)}")
    elif isinstance(pid, int) and not INT64_MIN <= pid <= INT64_MAX:
        bad("id", f"person id {pid} is outside the 64-bit integer range")
    split = rec.get("split")
    if "split" in rec:
        if not isinstance(split, str):
            bad("split", f"must be a string, found {json.dumps(split)}")
        elif split not in spec.splits:
            bad("split", f"unknown split {split!r} for {spec.name} (expected {', '.join(spec.splits)})")
    fpath = rec.get(spec.image_field)
    if spec.image_field in rec and (not isinstance(fpath, str) or not fpath.strip()):
        bad(spec.image_field, f"must be a non-empty string, found {json.dumps(fpath)}")
    elif isinstance(fpath, str) and os.path.isabs(fpath):  # '..' is fine: 3C sets point into other datasets
        bad(spec.image_field, f"must be a path relative to the annotation file's folder, found {fpath!r}")
    elif isinstance(fpath, str) and _BAD_TEXT.search(fpath):
        bad(spec.image_field, "holds a NUL or a lone surrogate (not valid Unicode text)")
    caps = rec.get("captions")
    if "captions" in rec:
        if not isinstance(caps, list):
            bad("captions", f"must be a list of strings, found {type(caps).__name__}")
        elif not caps:
            bad("captions", "is empty")
        else:
            for k, c in enumerate(caps):
                if not isinstance(c, str):
                    bad(f"captions[{k}]", f"must be a string, found {json.dumps(c)}")
                elif not c.strip():
                    bad(f"captions[{k}]", "is empty")
                elif _BAD_TEXT.search(c):  # JSON's \ud800 escapes decode to text no file, tokenizer or page can take
                    bad(f"captions[{k}]", "holds a NUL or a lone surrogate (not valid Unicode text)")
    image_tags: dict[str, Any] = {}
    for fld in spec.image_tag_fields:
        v = rec.get(fld)
        if fld in rec and (not isinstance(v, str) or not v.strip()):
            bad(fld, f"must be a non-empty string, found {json.dumps(v)}")
        else:
            image_tags[fld] = v
    tags = rec.get("caption_tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
            bad("caption_tags", "must be a list of objects, one per caption")
        elif isinstance(caps, list) and len(tags) != len(caps):
            bad("caption_tags", f"has {len(tags)} entries for {len(caps)} captions")
    if len(problems) > n_before:
        return None
    assert fpath is not None and caps is not None and pid is not None and split is not None  # checked above, or a problem was recorded
    caption_tags = tuple(dict(t) for t in tags) if tags is not None else tuple({} for _ in caps)
    return Sample(
        index=i,
        image_path=root / fpath,
        file_path=fpath,
        person_id=int(pid),
        split=split,
        captions=tuple(caps),
        caption_tags=caption_tags,
        image_tags=image_tags,
    )


def load_dataset(path: str | os.PathLike[str], fmt: str | None = None, *, split: str | None = None, check_files: bool = True) -> Annotations:
    """Parse a dataset for training or evaluation: refuse invalid data with a one-line summary.

    ``check_files=False`` skips checking that the images exist (scoring given scores needs none).
    """
    ann = read_annotations(path, fmt, check_files=check_files)
    errors = ann.errors
    if errors:
        fmt_opt = f" --format {ann.format}" if fmt else ""
        raise DataError(
            f"{ann.path}: {len(errors)} problem{'s' if len(errors) != 1 else ''} in the annotations "
            f"(first: {errors[0]}); run `ufinebench validate {path}{fmt_opt}` for the full report"
        )
    if split is not None:
        check_split(ann, split)
    return ann


def check_split(ann: Annotations, split: str) -> None:
    """Refuse a split the format does not define, or one with no records (``"all"`` always passes)."""
    if split == "all":
        return
    spec = FORMATS[ann.format]
    if split not in spec.splits:
        raise DataError(f"unknown split {split!r} for {ann.format} (expected {', '.join(spec.splits)} or all)")
    if not ann.split(split):
        raise DataError(f"{ann.path}: the {split} split is empty")


# --------------------------------------------------------------------------------------------
# Image checks and helpers


def check_images(samples: Sequence[Sample], *, workers: int = 4, progress: bool = False) -> list[Problem]:
    """Decode every image fully: zero-size, unreadable and truncated files become problems."""

    def check(s: Sample) -> Problem | None:
        msg = image_problem(s.image_path)
        return Problem(s.index, "image", msg) if msg else None

    unique = list({s.image_path: s for s in samples}.values())
    out: list[Problem] = []
    bar = None
    if progress:
        bar = tqdm(total=len(unique), unit="img", desc="checking images", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for res in pool.map(check, unique):
            if res is not None:
                out.append(res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return sorted(out, key=lambda p: p.index or 0)


def image_problem(path: Path) -> str | None:
    """Why an image file cannot be used, or None when it decodes completely."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever
        return f"not a regular file: {path}"
    size = st.st_size
    if size == 0:
        return f"zero-size file {path}"
    try:
        with Image.open(path) as im:
            check_pixels(im.size, path)  # before anything is decoded
            im.verify()  # structure and checksums
        with Image.open(path) as im:
            im.load()  # full decode: catches truncated data
            if im.width == 0 or im.height == 0:
                return f"image of size 0 x 0: {path}"
    except UnidentifiedImageError:
        return f"not a readable image: {path}"
    except Image.DecompressionBombError:
        return f"{path}: more pixels than allowed (UFINEBENCH_MAX_PIXELS)"
    except UFineBenchError as exc:
        return str(exc)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"broken or truncated image {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


def label_map(person_ids: Iterable[int]) -> dict[int, int]:
    """Raw person id -> contiguous label 0..N-1 (sorted by id), for identity classifiers."""
    return {pid: k for k, pid in enumerate(sorted(set(person_ids)))}


# Breakdown subsets with a natural order (coarse to fine, short to long); tables, JSON and report
# plots list them in it. Any other value (sources, styles) follows, by name.
SUBSET_ORDER = {"coarse": 0, "medium": 1, "fine": 2, "<=30": 0, "31-60": 1, ">60": 2}


def subset_sort_key(value: str) -> tuple[int, str]:
    """Sort key for breakdown subsets: granularities coarse -> fine, word buckets short -> long, the rest by name."""
    return (SUBSET_ORDER.get(value, len(SUBSET_ORDER)), value)


def word_count_bucket(caption: str) -> str:
    """Granularity bucket by length for untagged captions: '<=30', '31-60' or '>60' words."""
    n = len(caption.split())
    return "<=30" if n <= 30 else ("31-60" if n <= 60 else ">60")
