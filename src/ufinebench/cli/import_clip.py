"""``ufinebench import-clip``: CLIP weights into a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from ufinebench.cli.common import parse_pair, positive
from ufinebench.model.pretrained import import_clip


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import-clip",
        help="convert CLIP weights (OpenAI TorchScript, state dict, Hugging Face folder) into a checkpoint",
        description="Convert CLIP ViT weights (OpenAI, open_clip or Hugging Face) into our checkpoint format, interpolating image and text "
        "position embeddings. TorchScript archives are read without running their code or unpickling arbitrary objects.",
    )
    p.add_argument("weights", metavar="WEIGHTS", help="OpenAI's ViT-B-16.pt (TorchScript), a plain state dict, or a Hugging Face "
                   "CLIPModel folder (config.json + model.safetensors)")
    p.add_argument("--activation", choices=["quick_gelu", "gelu"],
                   help="the encoders' MLP activation; needed for a plain state dict (OpenAI's: quick_gelu, LAION open_clip: gelu)")
    p.add_argument("--model-name", help="open_clip model name of a plain state dict (e.g. ViT-B-16, ViT-B-16-quickgelu): sets the activation")
    p.add_argument("--image-size", default="384x128", metavar="HxW", help="target image size (default 384x128)")
    p.add_argument("--text-length", type=positive, default=168, help="target text length in tokens (default 168)")
    p.add_argument("--text-positions", choices=["stretch", "long-clip", "extend"], default="stretch",
                   help="how CLIP's 77 text positions reach --text-length: stretch all (the paper's, default), "
                   "long-clip (keep the first 20, stretch the rest), extend (keep all 77, copy the last ones into new slots)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="checkpoint folder to write (not the folder of WEIGHTS.pt)")
    p.add_argument("--force", action="store_true", help="write into OUT although it holds other files (they are kept)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    size = parse_pair(args.image_size, "x", "--image-size")
    out = import_clip(args.weights, args.out, image_size=size, context_length=args.text_length, force=args.force,
                      text_positions=args.text_positions, activation=args.activation, model_name=args.model_name)
    print(f"wrote {out}: CLIP encoders at {size[0]}x{size[1]}, {args.text_length} text positions (use train.init_from={out})")
    return 0
