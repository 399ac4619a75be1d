"""Image pipeline: decode with EXIF orientation, resize, normalise, seeded augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ufinebench.data.transforms import CLIP_MEAN, CLIP_STD, ImageTransform, augment_caption, denormalise, load_image


def _gradient(w=64, h=160):
    x = np.zeros((h, w, 3), np.uint8)
    x[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]  # red grows to the right
    x[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]  # green grows downwards
    return Image.fromarray(x)


def test_eval_transform_shape_and_normalisation():
    t = ImageTransform(size=(96, 32))
    img = Image.new("RGB", (20, 50), (255, 0, 128))
    x = t(img)
    assert x.shape == (3, 96, 32) and x.dtype == torch.float32
    want = [(255 / 255 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (128 / 255 - CLIP_MEAN[2]) / CLIP_STD[2]]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(want), atol=1e-3)
    assert np.array_equal(denormalise(x)[0, 0], [255, 0, 128])


def test_exif_orientation_is_applied(tmp_path):
    img = _gradient(40, 100)  # portrait
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    loaded = load_image(p)
    assert loaded.size == (100, 40) and loaded.mode == "RGB"
    p2 = tmp_path / "gray.png"
    Image.new("L", (10, 20), 7).save(p2)
    assert load_image(p2).mode == "RGB"


def test_augmentations_are_seeded_and_keep_left_right_by_default():
    t = ImageTransform(size=(80, 32), train=True)
    img = _gradient()
    a = t(img, np.random.default_rng(1))
    b = t(img, np.random.default_rng(1))
    c = t(img, np.random.default_rng(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = ImageTransform(size=(80, 32))(img)
    no_aug = ImageTransform(size=(80, 32), train=True, pad=0, color_jitter=0, erase_prob=0)
    assert torch.equal(no_aug(img, np.random.default_rng(0)), plain)
    # without hflip, red still grows to the right in every augmented sample
    for seed in range(10):
        x = ImageTransform(size=(80, 32), train=True, erase_prob=0, pad=2)(img, np.random.default_rng(seed))
        red = x[0].mean(dim=0)
        assert red[-4:].mean() > red[:4].mean()
    tf = ImageTransform(size=(80, 32), train=True, hflip=True, pad=0, color_jitter=0, erase_prob=0)
    flipped = [tf(img, np.random.default_rng(s)) for s in range(20)]
    assert any(torch.equal(f, plain.flip(-1)) for f in flipped) and any(torch.equal(f, plain) for f in flipped)


def test_random_erasing_changes_a_rectangle():
    t = ImageTransform(size=(80, 32), train=True, pad=0, color_jitter=0, erase_prob=1.0)
    img = Image.new("RGB", (32, 80), (100, 100, 100))
    x = t(img, np.random.default_rng(3))
    base = ImageTransform(size=(80, 32))(img)
    changed = (x != base).any(dim=0)
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert 0 < changed.sum() < 80 * 32
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box == changed.sum()  # one filled rectangle


def test_training_transform_needs_rng_and_sizes_are_checked():
    with pytest.raises(ValueError):
        ImageTransform(train=True)(Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError):
        ImageTransform(size=(0, 10))


def test_augment_caption_keeps_first_sentence_and_is_seeded():
    text = "A tall man with short hair. He wears a red coat. His jeans are blue. He carries a bag; it is black."
    rest = ["He wears a red coat.", "His jeans are blue.", "He carries a bag;", "it is black."]
    assert augment_caption(text, np.random.default_rng(0)) == text  # nothing asked: unchanged
    seen = set()
    for seed in range(40):
        out = augment_caption(text, np.random.default_rng(seed), shuffle=True)
        assert out.startswith("A tall man with short hair. ")
        assert sorted(out[len("A tall man with short hair. "):].split(" ")) == sorted(" ".join(rest).split(" "))
        seen.add(out)
        dropped = augment_caption(text, np.random.default_rng(seed), drop=0.5)
        kept = dropped[len("A tall man with short hair."):].strip()
        assert dropped.startswith("A tall man with short hair.")
        assert kept == " ".join(r for r in rest if r in kept)  # order kept, whole sentences only
        seen.add(dropped)
    assert len(seen) > 10  # it does vary
    assert augment_caption(text, np.random.default_rng(7), 0.3, True) == augment_caption(text, np.random.default_rng(7), 0.3, True)
    assert augment_caption("One sentence only.", np.random.default_rng(0), 0.9, True) == "One sentence only."


def test_augment_caption_without_keep_first_may_drop_any_sentence_but_never_all():
    text = "A tall man with short hair. He wears a red coat. His jeans are blue. He carries a bag."
    sentences = ["A tall man with short hair.", "He wears a red coat.", "His jeans are blue.", "He carries a bag."]
    first_gone = 0
    for seed in range(200):
        out = augment_caption(text, np.random.default_rng(seed), drop=0.5, keep_first=False)
        parts = [s for s in sentences if s in out]
        assert out == " ".join(parts) and parts  # whole sentences, in order, never none
        first_gone += sentences[0] not in out
    assert 60 < first_gone < 140  # the first goes about half the time (p 0.5), not never
    assert augment_caption(text, np.random.default_rng(1), drop=0.999, keep_first=False) == sentences[0]  # all drawn: the first stays


def test_camera_degradation_is_seeded_alike_in_both_paths_and_degrades():
    """The per-item transform and the in-memory batch path draw and apply the same degradations; off
    leaves every other draw as it was; grey draws make the channels equal; p 0.5 degrades about half."""
    from ufinebench.data.transforms import CameraDraw, augment_batch

    img = _gradient()
    arr = torch.from_numpy(np.asarray(img.resize((32, 80))).transpose(2, 0, 1).copy())[None].expand(6, -1, -1, -1).contiguous()
    tf = ImageTransform(size=(80, 32), train=True, pad=2, color_jitter=0.2, erase_prob=0.5, camera=1.0)
    one = torch.stack([tf(img, np.random.default_rng(s)) for s in range(6)])
    batch, _ = augment_batch(arr, [np.random.default_rng(s) for s in range(6)], tf)
    assert torch.allclose(one, batch, atol=1e-5)
    clean = ImageTransform(size=(80, 32), train=True, pad=2, color_jitter=0.2, erase_prob=0)
    degraded = ImageTransform(size=(80, 32), train=True, pad=2, color_jitter=0.2, erase_prob=0, camera=1.0)
    assert not torch.equal(clean(img, np.random.default_rng(0)), degraded(img, np.random.default_rng(0)))
    draws = [CameraDraw.draw(np.random.default_rng(s), 0.5, 80, 32) for s in range(400)]
    assert 150 < sum(d is not None for d in draws) < 250
    grey = next(d for d in draws if d is not None and d.grey)
    x = grey.apply(torch.rand(1, 3, 80, 32))
    assert torch.allclose(x[0, 0], x[0, 1], atol=0.2) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_conv_tower_stem_reads_twice_the_resolution_at_the_same_grid():
    """A space-to-depth stem keeps the 8 x 3 token grid at 256 x 96 and loses no pixel: a one-pixel
    change (a belt's row) changes the stem's output, and sizes that do not divide are refused."""
    from ufinebench.model.cfam import ModelConfig, RetrievalModel
    from ufinebench.model.conv import ConvTower

    tower = ConvTower((256, 96), 32, 16, base=8, stem=2)
    x = torch.rand(2, 3, 256, 96)
    glob, tokens = tower(x)
    assert glob.shape == (2, 16) and tokens.shape == (2, 1 + 8 * 3, 16)
    y = x.clone()
    y[:, :, 101, 40] += 0.5
    assert not torch.equal(tower.stem(x), tower.stem(y)) and tower.stem(x).shape == (2, 12, 128, 48)
    with pytest.raises(ValueError, match="multiple of 32"):
        ConvTower((128, 48), 32, 16, stem=2)
    cfg = ModelConfig(arch="cfam", vision="conv", vision_stem=2, image_size=(256, 96), embed_dim=32, vision_width=32, context_length=16,
                      vocab_size=50, text_width=32, text_layers=1, text_heads=2, num_queries=2, decoder_layers=1, decoder_heads=2,
                      matcher_layers=1, id_loss=False)
    assert RetrievalModel(cfg).image_token_count() == 24
    with pytest.raises(ValueError, match="vision_stem"):
        ModelConfig(vision="vit", vision_stem=2)
