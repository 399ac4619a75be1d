"""``ufinebench index``: encode a gallery into a searchable index."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ufinebench.cli.common import positive
from ufinebench.search.index import build_index


def add_parser(sub: Any) -> None:
    p = sub.add_parser("index", help="encode a gallery of images into a searchable index",
                       description="Encode images (a folder, or a dataset's images) with a checkpoint into an index folder: "
                       "embeddings, metadata and a FAISS index (exact for small galleries, HNSW from 50,000 images). "
                       "Resumable; --add appends new images.")
    p.add_argument("--checkpoint", required=True, metavar="C")
    p.add_argument("--images", required=True, metavar="DIR_OR_DATASET")
    p.add_argument("--format", help="dataset format when --images is an annotation file that needs one")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")
    p.add_argument("--add", action="store_true", help="append images that are not indexed yet")
    p.add_argument("--force", action="store_true", help="write into INDEX_DIR although it holds other files (they are kept)")
    p.add_argument("--kind", choices=["auto", "flat", "hnsw"], default="auto", help="FAISS index type (default auto)")
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = build_index(args.checkpoint, args.images, args.out, fmt=args.format, add=args.add, kind=args.kind,
                       batch_size=args.batch_size, device=args.device, progress=sys.stderr.isatty(), force=args.force)
    print(f"{args.out}: {info['count']} images ({info['added']} encoded now), {info['kind']} index, dimension {info['dim']}")
    return 0
