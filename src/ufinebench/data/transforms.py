"""Image pipeline without torchvision: decode, resize, augment (seeded), normalise.

Every random choice draws from a ``numpy.random.Generator`` passed in by the caller, so a
dataset can derive one per (seed, epoch, item) and get the same augmentation whatever the number
of loader workers or processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(path: str | Path) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


@dataclass(frozen=True)
class ImageTransform:
    """Resize to (H, W), optionally augment, normalise: PIL image -> (3, H, W) float32 tensor.

    Training augmentations (all off unless ``train``): horizontal flip (``hflip``, off by default
    because fine-grained texts say "left" and "right"), zero padding then a random crop back to
    (H, W), mild colour jitter, and random erasing (Zhong et al., AAAI 2020).
    """

    size: tuple[int, int] = (384, 128)  # (H, W)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    train: bool = False
    hflip: bool = False
    pad: int = 10
    color_jitter: float = 0.1  # brightness/contrast/saturation factors drawn from [1-j, 1+j]
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 1 or w < 1:
            raise ValueError(f"image size must be positive, got {self.size}")

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        h, w = self.size
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BICUBIC)
        x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
        if self.train:
            if rng is None:
                raise ValueError("training transforms need a random generator (for reproducibility)")
            x = self._augment(x, rng)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.train and self.erase_prob > 0 and rng.random() < self.erase_prob:
            x = _random_erase(x, rng, self.erase_area, self.erase_ratio)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, H, W)

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        if self.hflip and rng.random() < 0.5:
            x = x[:, ::-1]
        if self.pad > 0:
            p = self.pad
            padded = np.zeros((h + 2 * p, w + 2 * p, 3), np.float32)
            padded[p : p + h, p : p + w] = x
            top, left = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
            x = padded[top : top + h, left : left + w]
        j = self.color_jitter
        if j > 0:
            b, c, s = rng.uniform(1 - j, 1 + j, size=3)
            x = x * b
            mean = x.mean()
            x = (x - mean) * c + mean
            gray = x @ np.asarray([0.299, 0.587, 0.114], np.float32)  # (H, W)
            x = (x - gray[..., None]) * s + gray[..., None]
            x = np.clip(x, 0.0, 1.0)
        return x.astype(np.float32, copy=False)


def _random_erase(
    x: np.ndarray, rng: np.random.Generator, area: tuple[float, float], ratio: tuple[float, float]
) -> np.ndarray:
    """Replace a random rectangle of a normalised (H, W, 3) image with noise."""
    h, w, _ = x.shape
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        eh, ew = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            x = x.copy()
            x[top : top + eh, left : left + ew] = rng.standard_normal((eh, ew, 3)).astype(np.float32)
            return x
    return x


def denormalise(x: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> np.ndarray:
    """(3, H, W) normalised tensor -> (H, W, 3) uint8 array, for reports and debugging."""
    arr = x.detach().cpu().numpy().transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
