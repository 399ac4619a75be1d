"""How well a model's word head reads a picture, and what a perfect one would give re-ranking.

    python benchmarks/word_head_probe.py --run demo_out/run --data demo_out/data

The attribute check (docs/evaluation.md) re-ranks with the image's word head (``data.attribute_words``,
``data.attribute_pairs``). This prints, for training images, test images and the 3C gallery, how
often the head names each image's garment, bottom, shoe, bag and headwear right (the highest of the
class's outputs against the one its captions name; images whose captions name exactly one), the
mean AUC of its colour words, and with pairs the colour it gives each slot. Truth is what the
image's own captions name (for 3C: the union over its queries), the same reading training uses.
Then 3C re-ranked with the model's check alone (matcher weight 0) beside a *perfect* check: the
head's outputs replaced by the captions' truth (log 0.95 / log 0.05), all together and one class
at a time. A wide gap between train and test is a head that memorised persons; a class whose
perfect check adds much is where a better image side would pay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the binary labels ``y`` (ties broken by order)."""
    rank = np.argsort(np.argsort(score)) + 1.0
    p = int(y.sum())
    return float((rank[y].sum() - p * (p + 1) / 2) / (p * (len(y) - p)))


def _read(loaded, samples) -> tuple:
    """(features with the word head's log-probabilities, each gallery image's named groups (G, outputs) bool)."""
    from ufinebench.evaluate import extract_features

    f = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, batch_size=64, keep_tokens=True,
                         vocabulary=loaded.vocabulary)
    truth = np.zeros_like(f.gallery_word_logp)  # (G, outputs)
    np.maximum.at(truth, f.query_image_index, f.query_word_groups.astype(np.float32))
    return f, truth > 0


def head_accuracy(f, truth: np.ndarray, vocab) -> str:
    """One line: per class accuracy (majority rate), colour AUC, and per slot colour accuracy with pairs."""
    cls = np.array([c for c, groups in enumerate(vocab.classes.values()) for _ in groups])
    names = list(vocab.classes)
    slots, n_groups = list(vocab.slots), vocab.n_groups
    lp = f.gallery_word_logp
    colour = [j for j in np.flatnonzero(cls == 0) if 0 < truth[:, j].sum() < len(truth)]
    parts = [f"colour words AUC {np.mean([_auc(truth[:, j], lp[:, j]) for j in colour]):.3f}"]
    for c in range(1, 6):
        cols = np.flatnonzero(cls == c)
        one = truth[:, cols].sum(1) == 1
        if one.sum():
            acc = (lp[one][:, cols].argmax(1) == truth[one][:, cols].argmax(1)).mean()
            parts.append(f"{names[c]} {100 * acc:.0f} % ({100 * truth[one][:, cols].sum(0).max() / one.sum():.0f})")
    if lp.shape[1] > n_groups:  # colour x slot pairs
        pl = lp[:, n_groups:].reshape(len(lp), -1, len(slots))
        pt = truth[:, n_groups:].reshape(len(lp), -1, len(slots))
        read = []
        for s, name in enumerate(slots):
            one = pt[:, :, s].sum(1) == 1
            if one.sum():
                read.append(f"{name} {100 * (pl[one, :, s].argmax(1) == pt[one, :, s].argmax(1)).mean():.0f} %")
        parts.append("colour of: " + ", ".join(read))
    return "; ".join(parts)


def perfect_check(loaded, f, truth: np.ndarray) -> list[str]:
    """3C R1 re-ranked by the model's check and by a perfect one (all classes, then one at a time)."""
    from ufinebench.evaluate import attribute_check, logit_scale

    vocab = loaded.vocabulary
    n_groups = vocab.n_groups
    qn = f.query_features / np.linalg.norm(f.query_features, axis=1, keepdims=True)
    gn = f.gallery_features / np.linalg.norm(f.gallery_features, axis=1, keepdims=True)
    sim = qn @ gn.T  # (Q, G)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :10]  # (Q, 10)
    cos = np.take_along_axis(sim, top, 1)
    scale = logit_scale(loaded.model)
    qid, gid = np.asarray(f.query_ids), np.asarray(f.gallery_ids)

    def r1(logp: np.ndarray, v: float) -> float:
        check = attribute_check(logp, f.query_word_groups, top)
        assert check is not None
        first = top[np.arange(len(top)), np.argmax(scale * cos + v * check, axis=1)]
        return 100.0 * float((gid[first] == qid).mean())

    lp = f.gallery_word_logp
    perfect = np.log(np.where(truth, 0.95, 0.05)).astype(np.float32)
    lines = [f"3C R1 {r1(lp, 0.0):.2f}; re-ranked by the model's check (v 1 / 2 / 4 / 8): "
             + " / ".join(f"{r1(lp, v):.2f}" for v in (1, 2, 4, 8)) + f"; by a perfect check (v 4): {r1(perfect, 4.0):.2f}"]
    cls = np.array([c for c, groups in enumerate(vocab.classes.values()) for _ in groups] + [-1] * (lp.shape[1] - n_groups))
    singles = []
    for c, name in enumerate(list(vocab.classes)[:6]):
        mixed = lp.copy()
        mixed[:, cls == c] = perfect[:, cls == c]
        singles.append(f"{name} {r1(mixed, 4.0):.2f}")
    if lp.shape[1] > n_groups:
        mixed = lp.copy()
        mixed[:, n_groups:] = perfect[:, n_groups:]
        singles.append(f"pairs {r1(mixed, 4.0):.2f}")
    lines.append("  the model's check with one class perfect (v 4): " + ", ".join(singles))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run trained with data.attribute_words")
    ap.add_argument("--data", required=True, help="the demo's data folder (ufine_synth.json, ufine_synth_3c.json)")
    args = ap.parse_args(argv)
    from ufinebench.data.annotations import load_dataset
    from ufinebench.errors import UFineBenchError
    from ufinebench.model.checkpoint import from_checkpoint

    torch.set_num_threads(2)
    data = Path(args.data)
    try:
        loaded = from_checkpoint(args.run)
        if getattr(loaded.model, "word_head", None) is None:
            raise UFineBenchError(f"{args.run}: the model has no word head (train with data.attribute_words)")
        sets = [(name, load_dataset(data / file, split=split).split(split))
                for name, file, split in (("train images", "ufine_synth.json", "train"), ("test images", "ufine_synth.json", "test"),
                                          ("3C gallery", "ufine_synth_3c.json", "test"))]
    except (UFineBenchError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, samples in sets:
        f, truth = _read(loaded, samples)
        print(f"{name} ({len(f.gallery_ids)}): {head_accuracy(f, truth, loaded.vocabulary)}", flush=True)
    for line in perfect_check(loaded, f, truth):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
