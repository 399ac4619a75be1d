"""Image pipeline without torchvision: decode, resize, augment (seeded), normalise.

Every random choice draws from a ``numpy.random.Generator`` passed in by the caller, so a
dataset can derive one per (seed, epoch, item) and get the same augmentation whatever the number
of loader workers or processes.
"""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ufinebench.errors import UFineBenchError
from ufinebench.limits import check_pixels, max_pixels

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(path: str | Path) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied: the one guarded loader (a regular
    file only, so a FIFO cannot hang it; the header's pixel count checked before decoding)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UFineBenchError(f"{path}: not a regular file")
        with Image.open(path) as raw:
            check_pixels(raw.size, path)  # the header's claim, before decoding
            im = ImageOps.exif_transpose(raw)
            return im.convert("RGB")
    except Image.DecompressionBombError:  # PIL's own, far higher limit, raised by open()
        raise UFineBenchError(f"{path}: more pixels than the {max_pixels():,} allowed (UFINEBENCH_MAX_PIXELS)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UFineBenchError(f"{path}: cannot decode the image ({reason})") from None


@dataclass(frozen=True)
class ImageTransform:
    """Resize to (H, W), optionally augment, normalise: PIL image -> (3, H, W) float32 tensor.

    Training augmentations (all off unless ``train``): horizontal flip (``hflip``, off by default
    because fine-grained texts say "left" and "right"), zero padding then a random crop back to
    (H, W), mild colour jitter, a camera's degradations (``camera``: the share of images that get
    them, see :class:`CameraDraw`), and random erasing (Zhong et al., AAAI 2020).
    """

    size: tuple[int, int] = (384, 128)  # (H, W)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    train: bool = False
    hflip: bool = False
    pad: int = 10
    color_jitter: float = 0.1  # brightness/contrast/saturation factors drawn from [1-j, 1+j]
    erase_prob: float = 0.5
    camera: float = 0.0  # share of training images seen through a worse camera (CameraDraw); 0: off
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
            img = img.resize((w, h), Image.Resampling.BICUBIC)
        x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
        if self.train:
            if rng is None:
                raise ValueError("training transforms need a random generator (for reproducibility)")
            x = self._augment(x, rng)
        x = ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)
        if self.train and rng is not None and self.erase_prob > 0 and rng.random() < self.erase_prob:
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
        if self.camera > 0:
            cam = CameraDraw.draw(rng, self.camera, h, w)
            if cam is not None:
                x = cam.apply_hwc(x)
        return x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class CameraDraw:
    """One image's camera degradations: what a cheap, badly lit or far camera does to a picture.

    Grey (a monochrome or infrared camera, p 0.3), exposure (gain 0.5-1.1 and gamma 0.8-1.8: dark or washed-out
    scenes), contrast 0.5-1 (haze, rain, a dirty lens), a 3 x 3 blur (p 0.5: focus, motion, low
    resolution) and sensor noise (standard deviation 0-0.06 of full scale). Colour words survive
    every draw but the grey one. Drawn from the item's generator, so an image is degraded alike in
    any batch, process or resume; real cameras differ from the training set in exactly these ways
    (a standard augmentation in person re-identification), and none of it reads the held-out
    domains the UFine-Synth generator draws.
    """

    grey: bool
    gain: float
    gamma: float
    contrast: float
    blur: bool
    noise: np.ndarray | None  # (H, W, 3) float32 standard-normal draws times the noise level, or None

    @classmethod
    def draw(cls, rng: np.random.Generator, p: float, h: int, w: int) -> CameraDraw | None:
        """None (a clean image, with probability 1 - p) or one draw; always consumes the same first number."""
        if rng.random() >= p:
            return None
        grey = bool(rng.random() < 0.3)
        gain, gamma, contrast = float(rng.uniform(0.5, 1.1)), float(rng.uniform(0.8, 1.8)), float(rng.uniform(0.5, 1.0))
        blur = bool(rng.random() < 0.5)
        level = float(rng.uniform(0.0, 0.06))
        noise = (rng.standard_normal((h, w, 3)) * level).astype(np.float32) if level > 0.01 else None
        return cls(grey, gain, gamma, contrast, blur, noise)

    def apply_hwc(self, x: np.ndarray) -> np.ndarray:
        """(H, W, 3) float in [0, 1] -> degraded (H, W, 3) float32 in [0, 1]."""
        t = self.apply(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None])  # (1, 3, H, W)
        return t[0].permute(1, 2, 0).numpy()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) float in [0, 1] -> degraded (1, 3, H, W) in [0, 1] (the one implementation both paths use)."""
        if self.grey:
            x = (x * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        x = (x * self.gain).clamp(0.0, 1.0) ** self.gamma
        mean = x.mean()
        x = (x - mean) * self.contrast + mean
        if self.blur:
            k = torch.tensor([1.0, 2.0, 1.0])
            k2 = (k[:, None] * k[None, :] / 16.0).expand(3, 1, 3, 3).contiguous()  # (3, 1, 3, 3) depthwise
            x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        if self.noise is not None:
            x = x + torch.from_numpy(self.noise).permute(2, 0, 1)[None]
        return x.clamp(0.0, 1.0).contiguous()


def _draw_erase(
    rng: np.random.Generator, h: int, w: int, area: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, np.ndarray] | None:
    """Draw a random-erasing rectangle: (top, left, noise (eh, ew, 3)), or None after 10 misses."""
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        eh, ew = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            return top, left, rng.standard_normal((eh, ew, 3)).astype(np.float32)
    return None


def _random_erase(
    x: np.ndarray, rng: np.random.Generator, area: tuple[float, float], ratio: tuple[float, float]
) -> np.ndarray:
    """Replace a random rectangle of a normalised (H, W, 3) image with noise."""
    e = _draw_erase(rng, x.shape[0], x.shape[1], area, ratio)
    if e is None:
        return x
    top, left, noise = e
    x = x.copy()
    x[top : top + noise.shape[0], left : left + noise.shape[1]] = noise
    return x


def denormalise(x: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> np.ndarray:
    """(3, H, W) normalised tensor -> (H, W, 3) uint8 array, for reports and debugging."""
    arr = x.detach().cpu().numpy().transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def augment_caption(text: str, rng: np.random.Generator, drop: float = 0.0, shuffle: bool = False, keep_first: bool = True) -> str:
    """A training caption with its sentences after the first shuffled and/or dropped.

    The first sentence (who: gender, age, hair) stays first (with ``keep_first`` False it may be
    dropped too, never all sentences). Dropping each later sentence with
    probability ``drop`` makes shorter, coarser descriptions from the fine training captions, and
    shuffling teaches the text encoder that the order of details does not matter: both what
    queries written by other people (other styles and granularities) differ in, made from the
    training captions alone.
    """
    sentences = _SENTENCE_END.split(text.strip())
    if len(sentences) < 2 or (drop <= 0 and not shuffle):
        return text
    first, rest = sentences[0], sentences[1:]
    if shuffle:
        rest = [rest[j] for j in rng.permutation(len(rest))]
    if drop > 0 and not keep_first:  # the first may go too (never all: then the first stays)
        keep = rng.random(len(rest) + 1) >= drop
        kept = [r for r, k in zip([first, *rest], keep, strict=True) if k]
        return " ".join(kept or [first])
    if drop > 0:
        keep = rng.random(len(rest)) >= drop
        rest = [r for r, k in zip(rest, keep, strict=False) if k]
    return " ".join([first, *rest])


def swap_sides(text: str) -> str:
    """The caption of a mirrored image: "left" and "right" exchanged (case kept).

    Fine-grained captions say "a bag on his left shoulder"; a horizontally flipped image shows it
    on the right, so flipping the image without swapping the words would teach a wrong pairing.
    """
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
    return re.sub(r"\b(left|right|Left|Right|LEFT|RIGHT)\b", lambda m: swap[m.group(0)], text)


def augment_batch(images: torch.Tensor, rngs: list[np.random.Generator], tf: ImageTransform) -> tuple[torch.Tensor, np.ndarray]:
    """Training augmentation of a whole batch of decoded images, one generator per item.

    images: (B, 3, H, W) uint8 at ``tf.size``; rngs: B generators (seeded by seed, epoch, item, so
    an item's augmentation is the same whatever the batch, process or resume). The same draws as
    :class:`ImageTransform` (flip, padded crop, colour jitter, erasing), done as tensor operations.
    Returns the normalised (B, 3, H, W) float32 batch and which items were flipped (B,) bool.
    """
    b, _, h, w = images.shape
    x = images.float().div_(255.0)  # (B, 3, H, W)
    flipped = np.zeros(b, dtype=bool)
    p = tf.pad
    offsets = np.zeros((b, 2), dtype=np.int64)
    jitter = np.ones((b, 3), dtype=np.float32)
    erase: list[tuple[int, int, np.ndarray] | None] = [None] * b
    cams: list[CameraDraw | None] = [None] * b
    for i, rng in enumerate(rngs):  # the draws, in ImageTransform's order
        if tf.hflip and rng.random() < 0.5:
            flipped[i] = True
        if p > 0:
            offsets[i] = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
        if tf.color_jitter > 0:
            jitter[i] = rng.uniform(1 - tf.color_jitter, 1 + tf.color_jitter, size=3)
        if tf.camera > 0:
            cams[i] = CameraDraw.draw(rng, tf.camera, h, w)
        if tf.erase_prob > 0 and rng.random() < tf.erase_prob:
            erase[i] = _draw_erase(rng, h, w, tf.erase_area, tf.erase_ratio)
    if flipped.any():
        f = torch.from_numpy(flipped)
        x[f] = x[f].flip(-1)
    if p > 0:
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, 3, H + 2p, W + 2p), zeros
        x = torch.stack([padded[i, :, top : top + h, left : left + w] for i, (top, left) in enumerate(offsets.tolist())])
    if tf.color_jitter > 0:
        bcs = torch.from_numpy(jitter)  # (B, 3): brightness, contrast, saturation
        x = x * bcs[:, 0, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * bcs[:, 1, None, None, None] + mean
        gray = (x * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
        x = ((x - gray) * bcs[:, 2, None, None, None] + gray).clamp_(0.0, 1.0)
    for i, cam in enumerate(cams):
        if cam is not None:
            x[i] = cam.apply(x[i : i + 1])[0]
    mean_t = torch.tensor(tf.mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(tf.std, dtype=torch.float32)[None, :, None, None]
    x = (x - mean_t) / std_t
    for i, e in enumerate(erase):
        if e is not None:
            top, left, noise = e  # noise (eh, ew, 3), as ImageTransform draws it
            x[i, :, top : top + noise.shape[0], left : left + noise.shape[1]] = torch.from_numpy(noise).permute(2, 0, 1)
    return x.contiguous(), flipped


def decode_images(paths: list[Any], size: tuple[int, int], *, workers: int = 1, progress: bool = False) -> torch.Tensor:
    """Decode and resize images once into one uint8 tensor (N, 3, H, W): training's in-memory store."""

    h, w = size

    def one(path: Any) -> np.ndarray:
        img = load_image(path)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BICUBIC)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))  # (3, H, W), a writable copy

    out = torch.empty((len(paths), 3, h, w), dtype=torch.uint8)
    bar = None
    if progress:
        bar = tqdm(total=len(paths), unit="img", desc="decoding images", leave=False)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, arr in enumerate(pool.map(one, paths)):
            out[i] = torch.from_numpy(arr)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
