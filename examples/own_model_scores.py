"""Evaluate a model written anywhere with ufinebench's metrics, breakdowns and report.

    python examples/own_model_scores.py DATASET.json OUT.npz [--split test]
    ufinebench eval --data DATASET.json --scores OUT.npz --name my-model --json my.json --report my_report

The "model" here is a toy pair of encoders in plain PyTorch (a colour-statistics image encoder and
a bag-of-words text encoder, random weights): put yours in their place. All the script needs from
the dataset is its annotation file, read with `json`: every image's `file_path` is its key, every
caption is `FILE_PATH#N` (N: the caption's index in its record). Rows and columns may come in any
order; the keys say which is which.
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

torch.manual_seed(0)
image_encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 16, 64))  # (B, 3, 32, 16) -> (B, 64)
text_encoder = torch.nn.EmbeddingBag(4096, 64)  # word ids -> mean of their embeddings, (B, 64)


def encode_image(path: Path) -> torch.Tensor:
    im = Image.open(path).convert("RGB").resize((16, 32))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]  # (1, 3, 32, 16)
    return image_encoder(x)[0]


def encode_text(text: str) -> torch.Tensor:
    ids = torch.tensor([zlib.crc32(w.encode()) % 4096 for w in re.findall(r"[a-z]+", text.lower())] or [0])
    return text_encoder(ids[None])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    root = Path(args.dataset).parent
    records = [r for r in json.loads(Path(args.dataset).read_text()) if r["split"] == args.split]
    with torch.no_grad():
        gallery_keys = sorted({r["file_path"] for r in records})
        gallery = torch.stack([encode_image(root / k) for k in gallery_keys])  # (G, 64)
        query_keys = [f"{r['file_path']}#{n}" for r in records for n in range(len(r["captions"]))]
        queries = torch.stack([encode_text(c) for r in records for c in r["captions"]])  # (Q, 64)
    np.savez(args.out, query_features=queries.numpy(), gallery_features=gallery.numpy(),
             query_keys=np.asarray(query_keys), gallery_keys=np.asarray(gallery_keys))
    # or a similarity matrix of any scoring you like: np.savez(out, similarity=S (Q, G), query_keys=..., gallery_keys=...)
    print(f"wrote {args.out}: {len(query_keys)} queries x {len(gallery_keys)} images")


if __name__ == "__main__":
    main()
