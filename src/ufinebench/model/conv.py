"""A small convolutional image tower for from-scratch training on the CPU.

The heads (SDM, granularity decoder, matcher, identity classifier) need from an image encoder
only a global embedding and a token sequence (see ``model/cfam.py``). This tower gives both:
its final feature map (an 8 x 3 grid for 128 x 48 images) is projected position by position
into tokens, and the global embedding is a linear map of the *flattened* map, so "grey hoodie,
blue jeans" keeps the top and the bottom of the body apart instead of averaging them away.

At a higher resolution (``stem`` = 2: 256 x 96 read as 128 x 48 x 12) the first step folds each
2 x 2 block of pixels into channels (space-to-depth, lossless), so the tower keeps its cost and its
8 x 3 grid while a belt's row, a sole or a label's letter keeps every pixel it was drawn with
(at 128 x 48 they are one to three pixels, often blended away; docs/training.md).

GroupNorm rather than BatchNorm: a sample's features never depend on the rest of its batch, so
``torchrun`` with N processes still equals one process and evaluation equals training mode.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout // 4), cout),
        nn.ReLU(inplace=True),
    )


class ConvTower(nn.Module):
    """Seven conv-norm-ReLU layers, four of them halving the resolution (stride 16 overall).

    The first layer already halves the resolution: at 128 x 48 (or 256 x 96 with ``stem`` 2) the
    tower costs about 60 M multiply-adds per image, so a batch of 64 trains at a few steps per second on 2 CPU cores.

    ``(B, 3, H, W) -> global (B, D), tokens (B, 1 + N, D)``: token 0 is the global embedding,
    the others are the N = (H/16s)(W/16s) map positions (s = ``stem``) (what the granularity decoder and the
    matcher attend to).
    """

    def __init__(self, image_size: tuple[int, int], width: int, output_dim: int, base: int = 32, stem: int = 1) -> None:
        super().__init__()
        h, w = image_size
        stride = 16 * stem
        if stem < 1 or h % stride or w % stride:
            raise ValueError(f"image size {h}x{w} must be a multiple of {stride} for the conv tower (stem {stem})")
        self.image_size = (h, w)
        self.grid = (h // stride, w // stride)
        c1, c2, c3 = base, 2 * base, 4 * base
        # stem > 1: (B, 3, H, W) -> (B, 3 s^2, H/s, W/s), every pixel kept
        self.stem = nn.PixelUnshuffle(stem) if stem > 1 else nn.Identity()
        self.features = nn.Sequential(
            _block(3 * stem * stem, c1, 2), _block(c1, c1, 1), _block(c1, c2, 2), _block(c2, c2, 1), _block(c2, c3, 2),
            _block(c3, c3, 1), _block(c3, width, 2),
        )
        n = self.grid[0] * self.grid[1]
        self.token_proj = nn.Linear(width, output_dim)
        self.global_proj = nn.Linear(width * n, output_dim)
        self.positional_embedding = nn.Parameter(torch.zeros(n, output_dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> global (B, D) and tokens (B, 1 + N, D)."""
        f = self.features(self.stem(x))  # (B, C, gh, gw)
        glob = self.global_proj(f.flatten(1))  # (B, D)
        tokens = self.token_proj(f.flatten(2).transpose(1, 2)) + self.positional_embedding  # (B, N, D)
        return glob, torch.cat([glob[:, None], tokens], dim=1)
