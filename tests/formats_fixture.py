"""Tiny datasets written in each public format, for the data-layer tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

FORMAT_LAYOUT = {
    # format: (annotation file name, image folder under the dataset root, image field)
    "ufine6926": ("UFine6926_Annotations_1024.json", "", "file_path"),
    "ufine3c": ("UFine3C_Annotations.json", "", "file_path"),
    "cuhk-pedes": ("reid_raw.json", "imgs", "file_path"),
    "icfg-pedes": ("ICFG-PEDES.json", "imgs", "file_path"),
    "rstpreid": ("data_captions.json", "imgs", "img_path"),
}
SPLITS = {
    "ufine6926": ["train", "train", "test", "test"],
    "ufine3c": ["test"] * 4,
    "cuhk-pedes": ["train", "val", "test", "test"],
    "icfg-pedes": ["train", "train", "test", "test"],
    "rstpreid": ["train", "val", "test", "test"],
}


def write_image(path: Path, colour=(200, 30, 30), size=(48, 128), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def make_dataset(root: Path, fmt: str, records: list[dict] | None = None, n_images_per_id: int = 2) -> Path:
    """Write a 4-identity dataset in ``fmt`` under ``root``; return the annotation file path."""
    ann_name, img_dir, field = FORMAT_LAYOUT[fmt]
    root.mkdir(parents=True, exist_ok=True)
    if records is None:
        records = []
        k = 0
        for pid in range(1, 5):
            for j in range(n_images_per_id):
                rel = f"p{pid}/{k}.jpg" if fmt != "rstpreid" else f"{pid:04d}_c1_{k:04d}.jpg"
                rec = {
                    "id": pid,
                    "split": SPLITS[fmt][pid - 1],
                    field: rel,
                    "captions": [f"person {pid} image {j} wears a red coat and blue jeans", f"another text for {pid} {j}"],
                }
                if fmt == "ufine3c":
                    rec["source"] = "UFine6926" if pid % 2 else "CUHK-PEDES"
                if fmt in ("cuhk-pedes", "icfg-pedes"):
                    rec["processed_tokens"] = [c.split() for c in rec["captions"]]
                records.append(rec)
                k += 1
    for rec in records:
        rel = rec.get(field)
        if isinstance(rel, str) and rel and not rel.startswith("MISSING"):
            write_image(root / img_dir / rel, colour=(40 * (rec.get("id", 1) if isinstance(rec.get("id"), int) else 1) % 255, 80, 120))
    path = root / ann_name
    path.write_text(json.dumps(records))
    return path
