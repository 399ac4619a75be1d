"""A searchable gallery: image embeddings from a checkpoint, their metadata, and a FAISS index.

An index folder holds ``parts/NNNNNN.npz`` (embeddings, paths and thumbnail offsets of one chunk
of images, written atomically after its ``parts/NNNNNN.thumbs``: an interrupted build resumes
after the last finished chunk), ``index.faiss`` and ``index.json`` (checkpoint path and digest,
source, kind, count, dimension). Small galleries get an exact inner-product index; from
``hnsw_threshold`` images on, an HNSW graph (approximate, much faster); ``kind`` overrides the
choice. ``add`` appends images of the same source that are not indexed yet.

An index belongs to one model and one source: its embeddings mean nothing under other weights,
so building into (or adding to) an index made with another checkpoint (by content digest) or
another source is refused, and loading one whose checkpoint changed since is refused too.
Thumbnails (JPEG, at most ``THUMB_MAX`` pixels a side) are stored at indexing time, so the
service answers image requests from the index alone and never opens a path at request time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ufinebench.data.annotations import load_dataset
from ufinebench.data.transforms import load_image
from ufinebench.errors import UFineBenchError
from ufinebench.evaluate import RERANK_TOPK, attribute_check, check_weight_without_matcher, logit_scale
from ufinebench.io import atomic_write_bytes
from ufinebench.limits import read_json
from ufinebench.metrics import unit_rows
from ufinebench.model.checkpoint import LoadedModel, from_checkpoint, resolve_checkpoint
from ufinebench.outputs import add_entries, check_outputs, claim_dir, dataset_inputs, output_lock
from ufinebench.search.normalize import Normalized, normalizer_for
from ufinebench.vocab.tokens import AttributeTable, head_has_pairs, named_groups

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CHUNK = 512
HNSW_THRESHOLD = 50_000
THUMB_MAX = 256  # longest side of a stored thumbnail, pixels
INDEX_VERSION = 2  # 2: checkpoint digest, sources and thumbnails


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
    ann = load_dataset(p, fmt)
    seen: dict[Path, int] = {}
    for s in ann.samples:
        seen.setdefault(s.image_path.resolve(), s.person_id)
    return sorted(seen.items(), key=lambda kv: str(kv[0]))


def _thumbnail(im: Image.Image) -> bytes:
    """A JPEG of at most THUMB_MAX pixels a side (what the service sends for an indexed image)."""
    t = im.copy()
    t.thumbnail((THUMB_MAX, THUMB_MAX))
    buf = io.BytesIO()
    t.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _encode_images(loaded: LoadedModel, paths: Sequence[Path], batch_size: int, device: str) -> tuple[np.ndarray, list[bytes], np.ndarray | None]:
    """Unit embeddings (n, F) of the images, their JPEG thumbnails, and for a model with a word head
    (``data.attribute_words``) each image's log-probability of every attribute word group [and colour-garment
    pair] (n, outputs), else None."""
    model = loaded.model
    feats: list[np.ndarray] = []
    words: list[np.ndarray] = []
    thumbs: list[bytes] = []
    for i in range(0, len(paths), batch_size):
        pics = [load_image(p) for p in paths[i : i + batch_size]]
        thumbs.extend(_thumbnail(im) for im in pics)
        imgs = torch.stack([loaded.transform(im) for im in pics]).to(device)  # (b, 3, H, W)
        with torch.no_grad():
            enc = model.encode_image(imgs)
            f = model.retrieval_features(enc).float().cpu().numpy()
            if model.word_head is not None:
                words.append(model.word_log_probs(enc).cpu().numpy())  # (b, groups)
        feats.append(unit_rows(f))
    return np.concatenate(feats), thumbs, (np.concatenate(words) if words else None)


def checkpoint_digest(checkpoint: str | os.PathLike[str]) -> str:
    """SHA-256 over a checkpoint's weights and meta.json: what an index's embeddings depend on."""
    folder = resolve_checkpoint(checkpoint)
    h = hashlib.sha256()
    for name in ("model.safetensors", "meta.json"):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def build_index(
    checkpoint: str, source: str, out: str | os.PathLike[str], *, fmt: str | None = None, add: bool = False, kind: str = "auto",
    batch_size: int = 64, device: str = "cpu", progress: bool = False, hnsw_threshold: int = HNSW_THRESHOLD, force: bool = False,
) -> dict[str, Any]:
    """Encode the images of ``source`` into the index folder ``out`` (resumable; ``add`` appends).

    ``out`` is the index's own folder: it may not hold the checkpoint or the images, and one
    holding other files needs ``force`` (they are kept).
    """
    check_outputs({"--out": out}, [checkpoint, *dataset_inputs(source, fmt)], folders=["--out"])
    with output_lock(out):
        claim_dir(out, "index", force=force)
        add_entries(out, "index", INDEX_ENTRIES)
        return _build_index(checkpoint, source, Path(out), fmt=fmt, add=add, kind=kind, batch_size=batch_size, device=device,
                            progress=progress, hnsw_threshold=hnsw_threshold)


INDEX_ENTRIES = ("parts", "index.json", "index.faiss")


def _build_index(
    checkpoint: str, source: str, out: Path, *, fmt: str | None, add: bool, kind: str, batch_size: int, device: str,
    progress: bool, hnsw_threshold: int,
) -> dict[str, Any]:
    parts = out / "parts"
    info_path = out / "index.json"
    digest = checkpoint_digest(checkpoint)
    src = str(Path(source).resolve())
    owner_file = info_path if info_path.is_file() else parts / "owner.json"  # a finished index, or an interrupted build
    owner = _read_info(owner_file) if owner_file.is_file() else None
    if owner is None and any(parts.glob("*.npz")):
        owner = {}  # chunks without an owner: written by an older version
    if owner is not None:
        if owner.get("version") != INDEX_VERSION:
            raise IndexError_(f"{out} holds an index of an older format (no checkpoint digest or thumbnails); build a new one in another folder")
        if owner.get("checkpoint_sha256") != digest:
            raise IndexError_(f"{out} was built with another checkpoint ({owner.get('checkpoint')}); its embeddings do not mix with {checkpoint}'s")
        if owner.get("sources") != [src]:
            raise IndexError_(f"{out} indexes {', '.join(owner.get('sources', []))}, not {src}; one index holds one source")
        if owner.get("complete") and not add:
            raise IndexError_(f"{out} already holds an index of {source}; use --add to append images")
    elif add:
        raise IndexError_(f"{out}: no index to add to; build it first without --add")
    loaded = from_checkpoint(checkpoint, device=device)
    items = list_images(source, fmt)
    known = set(_read_parts(parts, embeddings=False)["paths"])  # what earlier (or interrupted) runs indexed
    todo = [(p, pid) for p, pid in items if str(p) not in known]
    parts.mkdir(parents=True, exist_ok=True)
    owned = {"version": INDEX_VERSION, "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": digest, "sources": [src]}
    atomic_write_bytes(parts / "owner.json", json.dumps(owned, indent=1).encode())  # an interrupted build resumes only for its owner
    start = len(list(parts.glob("*.npz")))
    bar = tqdm(total=len(todo), unit="img", desc="indexing", leave=False) if progress else None
    t0 = time.perf_counter()
    for c, i in enumerate(range(0, len(todo), CHUNK)):
        chunk = todo[i : i + CHUNK]
        emb, thumbs, word_logp = _encode_images(loaded, [p for p, _ in chunk], batch_size, device)  # (n, F), n, (n, groups) | None
        atomic_write_bytes(parts / f"{start + c:06d}.thumbs", b"".join(thumbs))  # before the .npz that makes the chunk count
        buf = io.BytesIO()
        extra: dict[str, Any] = {} if word_logp is None else {"word_logp": word_logp.astype(np.float32)}  # the check's image side
        np.savez(buf, embeddings=emb, paths=np.asarray([str(p) for p, _ in chunk]),
                 person_ids=np.asarray([0 if pid is None else pid for _, pid in chunk], dtype=np.int64),
                 person_known=np.asarray([pid is not None for _, pid in chunk]),  # a folder of images has no ids
                 thumb_offsets=np.cumsum([0] + [len(t) for t in thumbs]).astype(np.int64), **extra)
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
    info = {**owned, "source": str(source), "kind": chosen, "count": n,
            "dim": int(allp["embeddings"].shape[1]), "complete": True, "seconds": round(time.perf_counter() - t0, 2),
            "added": len(todo)}
    atomic_write_bytes(info_path, json.dumps(info, indent=1).encode())
    return info


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = read_json(path, "an index description", limit=16 << 20)
    except UFineBenchError as exc:
        raise IndexError_(str(exc)) from None
    if not isinstance(info, dict):
        raise IndexError_(f"{path}: not an index description")
    return info


def _read_parts(parts: Path, embeddings: bool = True) -> dict[str, Any]:
    """Every finished chunk, in order: embeddings, paths, person ids, (part, start, end) of each thumbnail,
    and ``word_logp`` (n, groups) when every chunk has it (models with a word head), else None."""
    embs: list[np.ndarray] = []
    words: list[np.ndarray | None] = []
    paths: list[str] = []
    pids: list[int | None] = []
    thumbs: list[tuple[Path, int, int]] = []
    for f in sorted(parts.glob("*.npz")) if parts.is_dir() else []:
        with np.load(f, allow_pickle=False) as z:
            if embeddings:
                embs.append(z["embeddings"])
                words.append(z["word_logp"] if "word_logp" in z else None)
            paths.extend(z["paths"].tolist())
            ids = z["person_ids"].tolist()
            known = z["person_known"].tolist() if "person_known" in z else [i >= 0 for i in ids]  # older chunks: -1 meant none
            pids.extend(i if k else None for i, k in zip(ids, known, strict=True))
            if "thumb_offsets" in z:
                off = z["thumb_offsets"].tolist()
                thumbs.extend((f.with_suffix(".thumbs"), a, b) for a, b in zip(off[:-1], off[1:], strict=False))
    word_logp = np.concatenate([w for w in words if w is not None]) if words and all(w is not None for w in words) else None
    return {"embeddings": np.concatenate(embs) if embs else np.zeros((0, 0), np.float32), "paths": paths, "person_ids": pids,
            "thumbs": thumbs, "word_logp": word_logp}


def _write_faiss(emb: np.ndarray, kind: str, path: Path) -> None:
    import faiss  # heavy (a second OpenMP runtime): loaded when an index is written or read, not by every command

    d = emb.shape[1]
    index: Any
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
        import faiss  # heavy: see _write_faiss

        self.folder = Path(folder)
        info_path = self.folder / "index.json"
        if not info_path.is_file():
            raise IndexError_(f"{self.folder}: not an index folder (no index.json); build one with `ufinebench index`")
        self.info = _read_info(info_path)
        if self.info.get("version") != INDEX_VERSION:
            raise IndexError_(f"{self.folder}: an index of an older format (no checkpoint digest or thumbnails); rebuild it")
        if not Path(self.info["checkpoint"]).exists():
            raise IndexError_(f"{self.folder}: its checkpoint {self.info['checkpoint']} is gone")
        if checkpoint_digest(self.info["checkpoint"]) != self.info["checkpoint_sha256"]:
            raise IndexError_(f"{self.folder}: its checkpoint {self.info['checkpoint']} has changed since indexing; rebuild the index")
        self.loaded = from_checkpoint(self.info["checkpoint"], device=device)
        self.device = device
        parts = _read_parts(self.folder / "parts")
        self.paths: list[str] = parts["paths"]
        self.person_ids: list[int | None] = parts["person_ids"]
        self._thumbs: list[tuple[Path, int, int]] = parts["thumbs"]
        if len(self._thumbs) != len(self.paths):
            raise IndexError_(f"{self.folder}: thumbnails missing for some images; rebuild the index")
        self.index: Any = faiss.read_index(str(self.folder / "index.faiss"))
        if self.index.ntotal != len(self.paths):
            raise IndexError_(f"{self.folder}: index and metadata disagree ({self.index.ntotal} vs {len(self.paths)}); rebuild it")
        if self.info["kind"] == "hnsw":
            faiss.ParameterSpace().set_index_parameter(self.index, "efSearch", 64)
        # a word-level model's unknown words are replaced by known ones before encoding (search/normalize.py)
        self.normalizer = normalizer_for(self.loaded.tokenizer)
        # the attribute check (evaluate.attribute_check) re-orders the top RERANK_TOPK: the weight val chose for it
        # without the matcher (the service runs no matcher); 0 for models without a word head or older indexes
        self.word_logp: np.ndarray | None = parts["word_logp"] if parts["word_logp"] is not None and len(parts["word_logp"]) == len(
            self.paths) else None
        self.check_weight = check_weight_without_matcher(self.loaded.meta) if self.word_logp is not None else 0.0
        vocab = self.loaded.vocabulary
        self._table = AttributeTable.build(vocab, self.loaded.tokenizer) if self.check_weight > 0 and vocab is not None else None
        self._pairs = vocab is not None and head_has_pairs(self.loaded.model.cfg.attribute_words, vocab)
        if self._table is None:
            self.check_weight = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        m = self.loaded.model
        tokens = self.loaded.tokenizer.encode(list(texts), m.cfg.context_length).to(self.device)
        f = m.retrieval_features(m.encode_text(tokens)).float().cpu().numpy()
        return unit_rows(f)

    def thumbnail(self, i: int) -> bytes:
        """The JPEG stored for image ``i`` at indexing time (read from the index folder only)."""
        part, a, b = self._thumbs[i]
        with open(part, "rb") as f:
            f.seek(a)
            data = f.read(b - a)
        if len(data) != b - a:
            raise IndexError_(f"{part}: truncated; rebuild the index")
        return data

    def read(self, text: str, normalize: bool = True) -> Normalized:
        """How the model will read ``text``: unknown words replaced where the vocabulary has a match."""
        if not normalize or self.normalizer is None:
            return Normalized(text)
        read = self.normalizer(text)
        return read if read.text.strip() else Normalized(text)  # nothing left (fillers only): search it as written

    def checked(self, text: str) -> np.ndarray | None:
        """(1, outputs) float32: the attribute words [and colour-garment pairs] of an (already read)
        description that the check reads, when search re-orders its top ``RERANK_TOPK`` by them;
        None when it does not (no check, or the description names no colour / garment / shoe / bag / headwear)."""
        if self.check_weight <= 0 or self.word_logp is None or self._table is None:
            return None
        tokens = self.loaded.tokenizer.encode([text], self.loaded.model.cfg.context_length)
        named = named_groups(tokens, self._table, self._pairs).numpy()  # (1, groups [+ pairs])
        return named.astype(np.float32) if named.any() else None

    def search(self, text: str, k: int = 10, normalize: bool = True) -> list[Hit]:
        """The ``k`` best images for a description (read through :meth:`read` unless ``normalize`` is off).

        With the attribute check on (``check_weight`` > 0), the top ``RERANK_TOPK`` are re-ordered by
        cos / T + check_weight x the mean log-probability of the description's attribute words [and pairs] (:meth:`checked`);
        each hit keeps its cosine as its score.
        """
        return self.search_checked(text, k, normalize)[0]

    def search_checked(self, text: str, k: int = 10, normalize: bool = True) -> tuple[list[Hit], bool]:
        """:meth:`search`, and whether the attribute check re-ordered this description's top ``RERANK_TOPK``."""
        text = self.read(text, normalize).text
        q = self.encode([text])
        k = max(1, min(k, len(self)))
        depth = max(k, RERANK_TOPK) if self.check_weight > 0 else k
        scores, ids = self.index.search(q, min(depth, len(self)))
        pairs = [(float(sc), int(i)) for sc, i in zip(scores[0], ids[0], strict=False) if i >= 0]
        named = self.checked(text)
        if named is not None and pairs:
            top = pairs[:RERANK_TOPK]
            check = attribute_check(self.word_logp, named, np.asarray([[i for _, i in top]]))
            assert check is not None
            scale = logit_scale(self.loaded.model)
            blend = [scale * sc + self.check_weight * float(c) for (sc, _), c in zip(top, check[0], strict=True)]
            order = sorted(range(len(top)), key=lambda j: -blend[j])  # stable: ties keep the cosine order
            pairs = [top[j] for j in order] + pairs[RERANK_TOPK:]
        hits = [Hit(r + 1, i, self.paths[i], sc, self.person_ids[i]) for r, (sc, i) in enumerate(pairs[:k])]
        return hits, named is not None and bool(pairs)
