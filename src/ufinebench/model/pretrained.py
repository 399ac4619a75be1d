"""Importing OpenAI CLIP weights (ViT-B/16, ViT-L/14, ...) into our checkpoint format.

OpenAI ships TorchScript archives; others save plain state dicts. Neither is unpickled with
arbitrary code: a plain state dict goes through ``torch.load(weights_only=True)``; a TorchScript
archive's ``data.pkl`` is read by a restricted unpickler that only rebuilds tensors and records
the module tree (no TorchScript code runs), from which the parameter names are recovered.

Position embeddings are interpolated to the new image grid (bicubic, 2-D) and text length
(linear, 1-D), e.g. 224 x 224 / 16 -> 384 x 128 and 77 -> 168 tokens.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ufinebench.errors import UFineBenchError

TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


class ImportError_(UFineBenchError):
    """CLIP weights that cannot be read or converted."""


class _Recorded:
    """Stand-in for a TorchScript class: keeps the attributes the archive sets."""

    def __init__(self, *args: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _safe_torchscript_tensors(zf: zipfile.ZipFile) -> dict[str, torch.Tensor]:
    pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
        raise ImportError_("no data.pkl in the archive")
    prefix = pkl[: -len("data.pkl")]
    loaded: dict[str, Any] = {}

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
                return getattr(torch._utils, name)
            if module == "collections" and name == "OrderedDict":
                return OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return getattr(torch, name)
            if module.startswith("__torch__"):
                return type(name, (_Recorded,), {})
            if module == "torch.jit._pickle" and name.startswith("build_"):
                return getattr(__import__("torch.jit._pickle", fromlist=[name]), name)
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

        def persistent_load(self, pid: Any) -> Any:
            kind, storage_type, key, _location, _numel = pid
            if kind != "storage":
                raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
            if key not in loaded:
                data = bytearray(zf.read(f"{prefix}data/{key}"))
                untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # legacy storage classes only name the dtype here
                    dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type
                loaded[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
            return loaded[key]

    with zf.open(pkl) as fh:
        root = Restricted(fh).load()
    out: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> None:
        state = obj.__dict__.get("_state") if isinstance(obj, _Recorded) else None
        if isinstance(state, dict):
            for k, v in state.items():
                name = f"{path}.{k}" if path else str(k)
                if isinstance(v, torch.Tensor):
                    out[name] = v
                elif isinstance(v, _Recorded):
                    walk(v, name)

    walk(root, "")
    if not out:
        raise ImportError_("no tensors found in the TorchScript archive")
    return out


def read_clip_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """OpenAI-layout CLIP weights from a TorchScript archive or a (possibly nested) state dict."""
    p = Path(path)
    if not p.is_file():
        raise ImportError_(f"{p}: no such file")
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                if any("/code/" in n or n.startswith("code/") for n in zf.namelist()):
                    sd = _safe_torchscript_tensors(zf)
                    return {k: v for k, v in sd.items() if not k.endswith("attn_mask")}
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except ImportError_:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's file is bad input, reported in one line
        raise ImportError_(f"{p}: cannot read CLIP weights ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ImportError_(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def clip_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Encoder sizes of a CLIP ViT state dict."""
    try:
        vw = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        vl = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        grid = round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1))
        tw = sd["ln_final.weight"].shape[0]
        tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        return {
            "embed_dim": sd["text_projection"].shape[1],
            "patch_size": patch,
            "vision_width": vw,
            "vision_layers": vl,
            "vision_heads": max(1, vw // 64),
            "grid": grid,
            "context_length": sd["positional_embedding"].shape[0],
            "vocab_size": sd["token_embedding.weight"].shape[0],
            "text_width": tw,
            "text_layers": tl,
            "text_heads": max(1, tw // 64),
        }
    except KeyError as exc:
        raise ImportError_(f"not a CLIP ViT state dict (missing {exc})") from None


def interpolate_image_positions(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, C) -> (1 + GH*GW, C): the class position kept, the grid resized bicubically."""
    cls, grid = pos[:1], pos[1:]
    c = grid.shape[1]
    g = grid.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2).float()  # (1, C, gh, gw)
    g = F.interpolate(g, size=new_grid, mode="bicubic", align_corners=False)
    return torch.cat([cls.float(), g.permute(0, 2, 3, 1).reshape(-1, c)], dim=0).to(pos.dtype)


def interpolate_text_positions(pos: torch.Tensor, length: int) -> torch.Tensor:
    """(L0, C) -> (L, C) by linear interpolation along the sequence."""
    if pos.shape[0] == length:
        return pos
    x = pos.float().T.unsqueeze(0)  # (1, C, L0)
    return F.interpolate(x, size=length, mode="linear", align_corners=False)[0].T.to(pos.dtype)


TEXT_POSITION_MODES = ("stretch", "long-clip", "extend")
LONG_CLIP_KEEP = 20  # Long-CLIP (Zhang et al., ECCV 2024) keeps the first 20 positions, which carry most of CLIP's training


def resize_text_positions(pos: torch.Tensor, length: int, mode: str = "stretch") -> torch.Tensor:
    """(L0, C) text positions -> (L, C), three ways of reaching a longer context than CLIP's 77.

    * ``stretch`` (the paper's): linear interpolation of all L0 positions over L slots.
    * ``long-clip``: the first 20 kept exactly, the remaining L0 - 20 interpolated over L - 20 slots
      (ends aligned): short captions see CLIP's positions unchanged. (At most L0 - 1 are kept, so a
      model with a shorter context still has a position to stretch.)
    * ``extend``: all L0 kept exactly; new slot L0 + j copies source position L0 - m + (j mod m),
      m = min(L - L0, L0) (the last learned positions, repeated). Shorter targets keep the first L.
    """
    if mode not in TEXT_POSITION_MODES:
        raise ImportError_(f"unknown --text-positions {mode!r} (choose from {', '.join(TEXT_POSITION_MODES)})")
    n0 = pos.shape[0]
    if n0 == length:
        return pos
    if mode == "stretch":
        return interpolate_text_positions(pos, length)
    if mode == "long-clip":
        keep = min(LONG_CLIP_KEEP, n0 - 1, length)  # at least one source position is left to stretch
        if length <= keep:
            return pos[:length]
        rest = pos[keep:].float().T.unsqueeze(0)  # (1, C, L0 - keep)
        moved = F.interpolate(rest, size=length - keep, mode="linear", align_corners=True)[0].T.to(pos.dtype)  # (L - keep, C)
        return torch.cat([pos[:keep], moved])
    if length < n0:
        return pos[:length]
    m = min(length - n0, n0)
    src = [n0 - m + (j % m) for j in range(length - n0)]
    return torch.cat([pos, pos[src]])


def to_model_state_dict(
    sd: dict[str, torch.Tensor], image_size: tuple[int, int], context_length: int, text_positions: str = "stretch",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """OpenAI keys -> our RetrievalModel keys (``visual.*``, ``text.*``), positions interpolated."""
    info = clip_config_from_state_dict(sd)
    patch = info["patch_size"]
    if image_size[0] % patch or image_size[1] % patch:
        raise ImportError_(f"image size {image_size[0]}x{image_size[1]} is not a multiple of the patch size {patch}")
    new_grid = (image_size[0] // patch, image_size[1] // patch)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("visual."):
            out[k] = v.float()
        elif k.startswith(TEXT_KEYS):
            out["text." + k] = v.float()
    out["visual.positional_embedding"] = interpolate_image_positions(sd["visual.positional_embedding"].float(), (info["grid"], info["grid"]), new_grid)
    out["text.positional_embedding"] = resize_text_positions(sd["positional_embedding"].float(), context_length, text_positions)
    return out, info


def import_clip(
    weights: str | os.PathLike[str], out: str | os.PathLike[str], image_size: tuple[int, int] = (384, 128),
    context_length: int = 168, *, force: bool = False, text_positions: str = "stretch",
) -> Path:
    """Convert CLIP weights into a checkpoint folder usable as ``train.init_from``.

    ``text_positions`` chooses how CLIP's 77 text positions reach ``context_length``
    (``resize_text_positions``); the choice is recorded in the checkpoint's meta.json.
    ``out`` may not be the weights file nor a folder holding it; a folder with other files needs
    ``force`` (they are kept); a checkpoint this command wrote is replaced.
    """
    from ufinebench.model.checkpoint import CHECKPOINT_FILES, save_checkpoint
    from ufinebench.outputs import add_entries, check_outputs, claim_dir, output_lock

    check_outputs({"-o": out}, [weights], folders=["-o"])
    if text_positions not in TEXT_POSITION_MODES:
        raise ImportError_(f"unknown --text-positions {text_positions!r} (choose from {', '.join(TEXT_POSITION_MODES)})")
    with output_lock(out):
        claim_dir(out, "import-clip", force=force, legacy=(("model.safetensors", "meta.json"), CHECKPOINT_FILES))
        model, meta = _convert_clip(weights, image_size, context_length, text_positions)
        add_entries(out, "import-clip", ("model.safetensors", "meta.json"))
        return save_checkpoint(out, model, meta)


def _convert_clip(
    weights: str | os.PathLike[str], image_size: tuple[int, int], context_length: int, text_positions: str = "stretch",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ufinebench.config import Config
    from ufinebench.model.cfam import ModelConfig, RetrievalModel
    sd = read_clip_state_dict(weights)
    converted, info = to_model_state_dict(sd, image_size, context_length, text_positions)
    mcfg = ModelConfig(
        arch="clip-sdm", embed_dim=info["embed_dim"], image_size=image_size, patch_size=info["patch_size"],
        vision_width=info["vision_width"], vision_layers=info["vision_layers"], vision_heads=info["vision_heads"],
        context_length=context_length, vocab_size=info["vocab_size"], text_width=info["text_width"],
        text_layers=info["text_layers"], text_heads=info["text_heads"],
    )
    model = RetrievalModel(mcfg)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [m for m in missing if m != "logit_scale"]
    if missing or unexpected:
        raise ImportError_(f"{weights}: weights do not fit a CLIP ViT (missing {missing[:3]}, unexpected {unexpected[:3]})")
    cfg = Config(model=mcfg)
    meta = {"config": cfg.to_dict(), "tokenizer": {"kind": "clip"}, "source": str(weights), "epoch": 0, "global_step": 0,
            "text_positions": {"mode": text_positions, "source_length": int(sd["positional_embedding"].shape[0]), "length": context_length}}
    return model, meta
