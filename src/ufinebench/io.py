"""Small file helpers: atomic writes and the feature/similarity ``.npz`` exchange format.

The ``.npz`` format read by ``ufinebench metrics`` (and written by evaluation with
``--save-features``) holds either

* ``similarity`` (Q, G) float, ``query_ids`` (Q,), ``gallery_ids`` (G,), or
* ``query_features`` (Q, D), ``gallery_features`` (G, D), ``query_ids``, ``gallery_ids``.

Queries are texts and the gallery is images; ``--direction i2t`` swaps the roles.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ufinebench.errors import UFineBenchError
from ufinebench.limits import check_npz_members

SIMILARITY_KEYS = ("similarity", "query_ids", "gallery_ids")
FEATURE_KEYS = ("query_features", "gallery_features", "query_ids", "gallery_ids")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN is refused: it is not JSON)."""
    data = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise UFineBenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_npz(p: Path, choose: Callable[[set[str]], Sequence[str]]) -> dict[str, np.ndarray]:
    """The arrays ``choose(keys present)`` names from an ``.npz``, read with bounds; one-line errors.

    The declared array sizes are checked before anything is inflated, nothing is unpickled, and
    ``choose`` raises UFineBenchError when the keys it needs are missing.
    """

    if not p.exists():
        raise UFineBenchError(f"{p}: no such file")
    if p.is_dir():
        raise UFineBenchError(f"{p}: is a directory, expected an .npz file")
    try:
        with zipfile.ZipFile(p) as zf:
            check_npz_members(zf, p)  # declared array sizes, before anything is inflated
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in choose(set(z.files))}
    except UFineBenchError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UFineBenchError(f"{p}: cannot read as .npz ({reason})") from None


def load_metrics_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read and check a metrics ``.npz``; raise UFineBenchError with a one-line reason.

    Returns the arrays of whichever layout the file holds (similarity takes precedence when
    a file holds both). Shapes, dtypes, finiteness and ids are checked here so that the error
    names the file's key.
    """
    p = Path(path)

    def choose(keys: set[str]) -> Sequence[str]:
        if set(SIMILARITY_KEYS) <= keys:
            return SIMILARITY_KEYS
        if set(FEATURE_KEYS) <= keys:
            return FEATURE_KEYS
        raise UFineBenchError(
            f"{p}: expected keys {', '.join(SIMILARITY_KEYS)} or {', '.join(FEATURE_KEYS)}; "
            f"found {', '.join(sorted(keys)) or 'none'}"
        )

    arrays = _read_npz(p, choose)
    _check_arrays(p, arrays)
    return arrays


def _check_arrays(p: Path, arrays: dict[str, np.ndarray]) -> None:
    for key in ("query_ids", "gallery_ids"):
        ids = arrays[key]
        if ids.ndim != 1:
            raise UFineBenchError(f"{p}: {key} must be 1-D, has shape {ids.shape}")
        if ids.size == 0:
            raise UFineBenchError(f"{p}: {key} is empty")
        if ids.dtype.kind not in "iuf":
            raise UFineBenchError(f"{p}: {key} must hold integer person ids, has dtype {ids.dtype}")
        if ids.dtype.kind == "f" and (not np.isfinite(ids).all() or not np.all(ids == np.round(ids))):
            raise UFineBenchError(f"{p}: {key} must hold integer person ids, found non-integral values")
        if ids.dtype.kind == "f" and np.abs(ids).max() > 2 ** (np.finfo(ids.dtype).nmant + 1):
            raise UFineBenchError(f"{p}: {key} holds ids too large to be exact as {ids.dtype} (different ids may have become one); "
                                  "store them as integers")
        if ids.dtype.kind == "u" and ids.max() > np.iinfo(np.int64).max:
            raise UFineBenchError(f"{p}: {key} holds ids beyond the 64-bit integer range")
    nq, ng = len(arrays["query_ids"]), len(arrays["gallery_ids"])
    mats = ["similarity"] if "similarity" in arrays else ["query_features", "gallery_features"]
    for key in mats:
        a = arrays[key]
        if a.ndim != 2:
            raise UFineBenchError(f"{p}: {key} must be 2-D, has shape {a.shape}")
        if a.size == 0:
            raise UFineBenchError(f"{p}: {key} is empty (shape {a.shape})")
        if a.dtype.kind != "f":
            raise UFineBenchError(f"{p}: {key} must be floating-point, has dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise UFineBenchError(f"{p}: {key} contains NaN or inf")
    if "similarity" in arrays:
        s = arrays["similarity"]
        if s.shape != (nq, ng):
            raise UFineBenchError(
                f"{p}: similarity has shape {s.shape} but query_ids has {nq} and gallery_ids {ng} entries"
            )
    else:
        qf, gf = arrays["query_features"], arrays["gallery_features"]
        if qf.shape[0] != nq:
            raise UFineBenchError(f"{p}: query_features has {qf.shape[0]} rows but query_ids has {nq} entries")
        if gf.shape[0] != ng:
            raise UFineBenchError(f"{p}: gallery_features has {gf.shape[0]} rows but gallery_ids has {ng} entries")
        if qf.shape[1] != gf.shape[1]:
            raise UFineBenchError(
                f"{p}: query_features has dimension {qf.shape[1]} but gallery_features {gf.shape[1]}"
            )


def load_scores_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Scores of a model that is not ours (``eval --scores``): ``similarity`` (Q, G) or
    ``query_features`` (Q, F) + ``gallery_features`` (G, F), optional ``query_keys`` / ``gallery_keys``
    string arrays. Ids are not read: they come from the annotation. One-line errors."""
    p = Path(path)

    def choose(keys: set[str]) -> Sequence[str]:
        optional = [k for k in ("query_keys", "gallery_keys") if k in keys]
        if "similarity" in keys:
            return ["similarity", *optional]
        if {"query_features", "gallery_features"} <= keys:
            return ["query_features", "gallery_features", *optional]
        found = ", ".join(sorted(keys)) or "none"
        raise UFineBenchError(f"{p}: expected 'similarity', or 'query_features' and 'gallery_features'; found {found}")

    out: dict[str, Any] = _read_npz(p, choose)
    for k in ("query_keys", "gallery_keys"):
        if k in out:
            arr = out[k]
            if arr.ndim != 1 or arr.dtype.kind not in "US":
                raise UFineBenchError(f"{p}: {k} must be a 1-D array of strings, has dtype {arr.dtype} and shape {arr.shape}")
            out[k] = [str(x) for x in arr.tolist()]
    for k in ("similarity", "query_features", "gallery_features"):
        if k in out:
            a = out[k]
            if a.ndim != 2 or a.dtype.kind != "f" or a.size == 0:
                raise UFineBenchError(f"{p}: {k} must be a non-empty 2-D floating-point array, has dtype {a.dtype} and shape {a.shape}")
            if not np.isfinite(a).all():
                raise UFineBenchError(f"{p}: {k} contains NaN or inf")
    if "query_features" in out and out["query_features"].shape[1] != out["gallery_features"].shape[1]:
        raise UFineBenchError(f"{p}: query_features has dimension {out['query_features'].shape[1]} but gallery_features "
                              f"{out['gallery_features'].shape[1]}")
    return out


def save_metrics_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Atomically write arrays in the layout ``load_metrics_npz`` reads."""

    buf = _io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    atomic_write_bytes(path, buf.getvalue())
