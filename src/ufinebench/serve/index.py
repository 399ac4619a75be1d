"""A searchable gallery: image embeddings from a checkpoint, their metadata, and a FAISS index.

An index folder holds ``parts/NNNNNN.npz`` (embeddings and paths of one chunk of images, written
atomically: an interrupted build resumes after the last finished chunk), ``index.faiss`` and
``index.json`` (checkpoint, kind, count, dimension). Small galleries get an exact inner-product
index; from ``hnsw_threshold`` images on, an HNSW graph (approximate, much faster); ``kind``
overrides the choice. ``add`` appends images that are not indexed yet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ufinebench.errors import UFineBenchError
from ufinebench.io import atomic_write_bytes
from ufinebench.metrics import unit_rows

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CHUNK = 512
HNSW_THRESHOLD = 50_000


class IndexError_(UFineBenchError):
    """An index that cannot be built or read."""


def list_images(source: str | os.PathLike[str], fmt: str | None = None) -> list[tuple[Path, int | None]]:
    """(image path, person id or None) from a folder of images or an annotated dataset."""
    p = Path(source)
    if p.is_dir() and not any(p.glob("*.json")):
        files = sorted(f.resolve() for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise IndexError_(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        return [(f, None) for f in files]
    from ufinebench.data.annotations import load_dataset

    ann = load_dataset(p, fmt)
    seen: dict[Path, int] = {}
    for s in ann.samples:
        seen.setdefault(s.image_path.resolve(), s.person_id)
    return sorted(seen.items(), key=lambda kv: str(kv[0]))


def _encode_images(loaded: Any, paths: Sequence[Path], batch_size: int, device: str) -> np.ndarray:
    from ufinebench.data.transforms import load_image

    feats = []
    for i in range(0, len(paths), batch_size):
        imgs = torch.stack([loaded.transform(load_image(p)) for p in paths[i : i + batch_size]]).to(device)
        with torch.no_grad():
            f = loaded.model.retrieval_features(loaded.model.encode_image(imgs)).float().cpu().numpy()
        feats.append(unit_rows(f))
    return np.concatenate(feats)


def build_index(
    checkpoint: str, source: str, out: str | os.PathLike[str], *, fmt: str | None = None, add: bool = False, kind: str = "auto",
    batch_size: int = 64, device: str = "cpu", progress: bool = False, hnsw_threshold: int = HNSW_THRESHOLD, force: bool = False,
) -> dict[str, Any]:
    """Encode the images of ``source`` into the index folder ``out`` (resumable; ``add`` appends).

    ``out`` is the index's own folder: it may not hold the checkpoint or the images, and one
    holding other files needs ``force`` (they are kept).
    """
    from ufinebench.outputs import add_entries, check_outputs, claim_dir, dataset_inputs, output_lock

    check_outputs({"--out": out}, [checkpoint, *dataset_inputs(source, fmt)], folders=["--out"])
    with output_lock(out):
        claim_dir(out, "index", force=force, legacy=(INDEX_ENTRIES, INDEX_ENTRIES))
        add_entries(out, "index", INDEX_ENTRIES)
        return _build_index(checkpoint, source, Path(out), fmt=fmt, add=add, kind=kind, batch_size=batch_size, device=device,
                            progress=progress, hnsw_threshold=hnsw_threshold)


INDEX_ENTRIES = ("parts", "index.json", "index.faiss")


def _build_index(
    checkpoint: str, source: str, out: Path, *, fmt: str | None, add: bool, kind: str, batch_size: int, device: str,
    progress: bool, hnsw_threshold: int,
) -> dict[str, Any]:
    from ufinebench.model.checkpoint import from_checkpoint

    parts = out / "parts"
    info_path = out / "index.json"
    if info_path.is_file() and not add:
        info = json.loads(info_path.read_text())
        if info.get("complete") and info.get("source") == str(source):
            raise IndexError_(f"{out} already holds an index of {source}; use --add to append images")
    loaded = from_checkpoint(checkpoint, device=device)
    items = list_images(source, fmt)
    known = set(_read_parts(parts, embeddings=False)["paths"])  # what earlier (or interrupted) runs indexed
    todo = [(p, pid) for p, pid in items if str(p) not in known]
    parts.mkdir(parents=True, exist_ok=True)
    start = len(list(parts.glob("*.npz")))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="indexing", leave=False)
    t0 = time.perf_counter()
    for c, i in enumerate(range(0, len(todo), CHUNK)):
        chunk = todo[i : i + CHUNK]
        emb = _encode_images(loaded, [p for p, _ in chunk], batch_size, device)  # (n, F)
        import io

        buf = io.BytesIO()
        np.savez(buf, embeddings=emb, paths=np.asarray([str(p) for p, _ in chunk]),
                 person_ids=np.asarray([-1 if pid is None else pid for _, pid in chunk], dtype=np.int64))
        atomic_write_bytes(parts / f"{start + c:06d}.npz", buf.getvalue())
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    allp = _read_parts(parts)
    n = len(allp["paths"])
    if n == 0:
        raise IndexError_(f"{source}: nothing to index")
    chosen = kind if kind != "auto" else ("hnsw" if n >= hnsw_threshold else "flat")
    _write_faiss(allp["embeddings"], chosen, out / "index.faiss")
    info = {"checkpoint": str(Path(checkpoint).resolve()), "source": str(source), "kind": chosen, "count": n,
            "dim": int(allp["embeddings"].shape[1]), "complete": True, "seconds": round(time.perf_counter() - t0, 2),
            "added": len(todo)}
    atomic_write_bytes(info_path, json.dumps(info, indent=1).encode())
    return info


def _read_parts(parts: Path, embeddings: bool = True) -> dict[str, Any]:
    embs, paths, pids = [], [], []
    for f in sorted(parts.glob("*.npz")) if parts.is_dir() else []:
        with np.load(f, allow_pickle=False) as z:
            if embeddings:
                embs.append(z["embeddings"])
            paths.extend(z["paths"].tolist())
            pids.extend(z["person_ids"].tolist())
    return {"embeddings": np.concatenate(embs) if embs else np.zeros((0, 0), np.float32), "paths": paths, "person_ids": pids}


def _write_faiss(emb: np.ndarray, kind: str, path: Path) -> None:
    import faiss

    d = emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        raise IndexError_(f"unknown index kind {kind!r} (auto, flat, hnsw)")
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


@dataclass
class Hit:
    rank: int
    id: int
    path: str
    score: float
    person_id: int | None


class SearchIndex:
    """A loaded index: encode a description with the checkpoint's text side, search FAISS."""

    def __init__(self, folder: str | os.PathLike[str], device: str = "cpu") -> None:
        import faiss

        from ufinebench.model.checkpoint import from_checkpoint

        self.folder = Path(folder)
        info_path = self.folder / "index.json"
        if not info_path.is_file():
            raise IndexError_(f"{self.folder}: not an index folder (no index.json); build one with `ufinebench index`")
        self.info = json.loads(info_path.read_text())
        if not Path(self.info["checkpoint"]).exists():
            raise IndexError_(f"{self.folder}: its checkpoint {self.info['checkpoint']} is gone")
        self.loaded = from_checkpoint(self.info["checkpoint"], device=device)
        self.device = device
        parts = _read_parts(self.folder / "parts")
        self.paths: list[str] = parts["paths"]
        self.person_ids: list[int] = parts["person_ids"]
        self.index = faiss.read_index(str(self.folder / "index.faiss"))
        if self.index.ntotal != len(self.paths):
            raise IndexError_(f"{self.folder}: index and metadata disagree ({self.index.ntotal} vs {len(self.paths)}); rebuild it")
        if self.info["kind"] == "hnsw":
            self.index.hnsw.efSearch = 64

    def __len__(self) -> int:
        return len(self.paths)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        m = self.loaded.model
        tokens = self.loaded.tokenizer.encode(list(texts), m.cfg.context_length).to(self.device)
        f = m.retrieval_features(m.encode_text(tokens)).float().cpu().numpy()
        return unit_rows(f)

    def search(self, text: str, k: int = 10) -> list[Hit]:
        q = self.encode([text])
        k = max(1, min(k, len(self)))
        scores, ids = self.index.search(q, k)
        return [Hit(r + 1, int(i), self.paths[int(i)], float(s), None if self.person_ids[int(i)] < 0 else int(self.person_ids[int(i)]))
                for r, (s, i) in enumerate(zip(scores[0], ids[0])) if i >= 0]
