"""OpenAI's CLIP model code as shipped in clip-anytorch, loaded by path (the package itself needs
torchvision): the reference the encoders and the weight import are tested against."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from ufinebench.data.tokenizer import find_clip_vocab

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=8, context_length=16,
            vocab_size=100, transformer_width=32, transformer_heads=2, transformer_layers=1)  # import tests: 32 x 32 images, 16 tokens


def reference_clip(seed: int = 0, **sizes: Any) -> torch.nn.Module:
    """A freshly initialised reference CLIP (``torch.manual_seed(seed)`` first) of the given sizes (default :data:`TINY`)."""
    spec = importlib.util.spec_from_file_location("clip_reference_model", find_clip_vocab().parent / "model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(seed)
    return mod.CLIP(**(sizes or TINY))
