"""Checkpoints that rebuild their own model, image transform and tokenizer.

A checkpoint is a folder:

* ``model.safetensors``: the weights (safetensors: no pickle);
* ``meta.json``: the run config (model, data, train sections), the tokenizer's state, epoch,
  global step and metrics;
* ``train_state.pt`` (training checkpoints only): optimizer, scheduler and RNG states, read back
  with ``torch.load(weights_only=True)``.

Folders are written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint. A run folder holds ``checkpoints/epoch_NNNN``, ``checkpoints/last``
(a text file naming the newest) and ``checkpoints/best``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ufinebench.data.tokenizer import tokenizer_from_state
from ufinebench.data.transforms import ImageTransform
from ufinebench.errors import UFineBenchError
from ufinebench.limits import read_json
from ufinebench.model.cfam import ModelConfig, RetrievalModel
from ufinebench.outputs import MARKER, remove_stale_siblings
from ufinebench.vocab import AttributeVocabulary, VocabularyError, checkpoint_vocabulary


class CheckpointError(UFineBenchError):
    """A checkpoint that cannot be found or read."""


@dataclass
class LoadedModel:
    """What a checkpoint rebuilds: the model, its image transform, its tokenizer and its attribute vocabulary."""

    model: RetrievalModel
    transform: ImageTransform  # evaluation mode
    tokenizer: Any  # a tokenizer of ufinebench.data.tokenizer
    meta: dict[str, Any]
    path: Path
    vocabulary: AttributeVocabulary | None = None  # what the word head's outputs mean (None: no head and no vocabulary)

    @property
    def context_length(self) -> int:
        return int(self.model.cfg.context_length)


CHECKPOINT_FILES = ("model.safetensors", "meta.json", "train_state.pt")


def save_checkpoint(folder: str | os.PathLike[str], model: torch.nn.Module, meta: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary folder, then rename).

    A folder that holds only checkpoint files (and the output marker, which is kept) is swapped
    in one rename. A folder that also holds other files (``import-clip --force`` into a folder of
    the user's) keeps them: the checkpoint files are then replaced one by one, each atomically.
    """
    folder = Path(folder)
    remove_stale_siblings(folder)  # temporary folders of a killed earlier writer
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        if not folder.exists():
            os.replace(tmp, folder)
        elif set(os.listdir(folder)) <= {*CHECKPOINT_FILES, MARKER}:
            if (folder / MARKER).is_file():
                shutil.copy2(folder / MARKER, tmp / MARKER)
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            for name in CHECKPOINT_FILES:
                if (tmp / name).exists():
                    os.replace(tmp / name, folder / name)
                elif name == "train_state.pt" and (folder / name).exists():
                    (folder / name).unlink()  # a stale optimizer state must not pair with new weights
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def resolve_checkpoint(path: str | os.PathLike[str], which: str = "best") -> Path:
    """A checkpoint folder from itself, or from a run folder (its best, else its last)."""
    p = Path(path)
    if (p / "model.safetensors").is_file():
        return p
    ck = p / "checkpoints"
    if ck.is_dir():
        order = [which, "last"] if which == "best" else [which]
        for name in order:
            if name == "last" and (ck / "last").is_file():
                target = ck / (ck / "last").read_text().strip()
                if (target / "model.safetensors").is_file():
                    return target
            elif (ck / name / "model.safetensors").is_file():
                return ck / name
    raise CheckpointError(f"{p}: no checkpoint here (expected model.safetensors, or a run folder with checkpoints/)")


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's meta.json (config, tokenizer, vocabulary, epoch, metrics, re-rank blend)."""
    try:
        meta = read_json(folder / "meta.json", "a checkpoint's meta.json", limit=256 << 20)
    except UFineBenchError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder}: meta.json is not a JSON object")
    return meta


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights (safetensors: no pickle)."""
    try:
        return load_file(str(folder / "model.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{folder}: cannot read model.safetensors ({exc})") from None


def from_checkpoint(path: str | os.PathLike[str], *, device: str | torch.device = "cpu", which: str = "best") -> LoadedModel:
    """Rebuild model (eval mode), evaluation transform, tokenizer and attribute vocabulary from a checkpoint alone."""
    folder = resolve_checkpoint(path, which)
    meta = read_meta(folder)
    try:
        mcfg = ModelConfig.from_dict(meta["config"]["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}: meta.json has no usable model config ({exc})") from None
    try:
        vocabulary = checkpoint_vocabulary(meta, mcfg.attribute_words)
    except VocabularyError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    try:
        model = RetrievalModel(mcfg)
        missing, unexpected = model.load_state_dict(load_weights(folder), strict=False)
    except (RuntimeError, ValueError) as exc:  # tensors of other shapes than the saved config says, or a config that builds nothing
        raise CheckpointError(f"{folder}: weights do not fit the model its meta.json describes ({str(exc).splitlines()[-1].strip()[:200]})") from None
    missing = [k for k in missing if k != "text.mask_embedding"]  # only training's MLM reads it (older checkpoints lack it)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device).eval()
    tokenizer = tokenizer_from_state(meta.get("tokenizer", {"kind": "clip"}))
    transform = ImageTransform(size=(mcfg.image_size[0], mcfg.image_size[1]))
    return LoadedModel(model, transform, tokenizer, meta, folder, vocabulary)
