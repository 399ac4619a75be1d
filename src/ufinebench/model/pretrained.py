"""Importing CLIP weights (ViT-B/16, ViT-B/32, ViT-L/14, ...) into our checkpoint format.

Three sources: OpenAI's TorchScript archives, plain OpenAI-layout state dicts (OpenAI's or
open_clip's), and Hugging Face ``CLIPModel`` folders (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``). None is unpickled with arbitrary code: state dicts go through
``torch.load(weights_only=True)`` or safetensors; a TorchScript archive's ``data.pkl`` is read by
a restricted unpickler that only rebuilds tensors and records the module tree (no TorchScript
code runs), from which the parameter names are recovered.

The MLP activation is not visible in the keys: OpenAI's models use QuickGELU, open_clip's
LAION-trained ones exact GELU. It is read from ``config.json`` (``hidden_act``) for a Hugging Face
folder, is QuickGELU for OpenAI's TorchScript archives, and must be given (``activation`` or an
open_clip ``model_name``) for a plain state dict. Head counts likewise come from
``config.json`` for Hugging Face folders (never from widths); OpenAI layouts use OpenAI's rule
(width / 64).

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
from safetensors.torch import load_file

from ufinebench.config import Config
from ufinebench.errors import UFineBenchError
from ufinebench.limits import read_json
from ufinebench.model.cfam import ModelConfig, RetrievalModel
from ufinebench.model.checkpoint import CHECKPOINT_FILES, save_checkpoint
from ufinebench.outputs import check_free, check_outputs, claim_dir, output_lock, record_entries

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


HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def is_hf_clip_folder(path: str | os.PathLike[str]) -> bool:
    """A Hugging Face ``CLIPModel`` folder: ``config.json`` beside its weights."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and any((p / f).is_file() for f in HF_WEIGHT_FILES)


def read_hf_clip(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A Hugging Face ``CLIPModel`` folder -> (OpenAI-layout state dict, heads and activation from config.json)."""

    p = Path(folder)
    try:
        cfg = read_json(p / "config.json", "a model config", limit=16 << 20)
    except UFineBenchError as exc:
        raise ImportError_(str(exc)) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vision_config"), dict) or not isinstance(cfg.get("text_config"), dict):
        raise ImportError_(f"{p}/config.json: not a CLIPModel config (no vision_config / text_config)")
    vc, tc = cfg["vision_config"], cfg["text_config"]
    acts = set()
    for side, c in (("vision", vc), ("text", tc)):
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "hidden_act"):
            if key not in c:
                raise ImportError_(f"{p}/config.json: {side}_config has no {key}")
        if c["hidden_act"] not in _HF_ACTIVATIONS:
            raise ImportError_(f"{p}/config.json: {side} activation {c['hidden_act']!r} is not supported (quick_gelu or gelu)")
        if c["intermediate_size"] != 4 * c["hidden_size"]:
            raise ImportError_(f"{p}/config.json: {side} MLP width {c['intermediate_size']} is not 4 x {c['hidden_size']} as in CLIP")
        acts.add(_HF_ACTIVATIONS[c["hidden_act"]])
    if len(acts) != 1:
        raise ImportError_(f"{p}/config.json: vision and text use different activations ({', '.join(sorted(acts))})")
    weights = next(p / f for f in HF_WEIGHT_FILES if (p / f).is_file())
    try:
        if weights.suffix == ".safetensors":
            hf = load_file(str(weights))
        else:
            hf = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read a user's file is bad input, reported in one line
        raise ImportError_(f"{weights}: cannot read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return hf_to_openai_layout(hf), {"vision_heads": int(vc["num_attention_heads"]), "text_heads": int(tc["num_attention_heads"]),
                                     "activation": acts.pop()}


def hf_to_openai_layout(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPModel`` keys -> OpenAI's (q/k/v projections fused, projections transposed)."""
    sd: dict[str, torch.Tensor] = {}
    hf = {k.removeprefix("clip."): v for k, v in hf.items()}
    try:
        sd["visual.class_embedding"] = hf["vision_model.embeddings.class_embedding"]
        sd["visual.conv1.weight"] = hf["vision_model.embeddings.patch_embedding.weight"]
        sd["visual.positional_embedding"] = hf["vision_model.embeddings.position_embedding.weight"]
        sd["visual.proj"] = hf["visual_projection.weight"].T.contiguous()
        sd["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
        sd["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
        sd["text_projection"] = hf["text_projection.weight"].T.contiguous()
        for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                             ("ln_final", "text_model.final_layer_norm")):
            sd[f"{ours}.weight"], sd[f"{ours}.bias"] = hf[f"{theirs}.weight"], hf[f"{theirs}.bias"]
        if "logit_scale" in hf:
            sd["logit_scale"] = hf["logit_scale"]
        for ours, theirs in (("visual.transformer", "vision_model.encoder"), ("transformer", "text_model.encoder")):
            n = len({k.split(".")[3] for k in hf if k.startswith(f"{theirs}.layers.")})
            for i in range(n):
                a, b = f"{theirs}.layers.{i}", f"{ours}.resblocks.{i}"
                for part in ("weight", "bias"):
                    sd[f"{b}.attn.in_proj_{part}"] = torch.cat([hf[f"{a}.self_attn.{x}_proj.{part}"] for x in "qkv"])
                    sd[f"{b}.attn.out_proj.{part}"] = hf[f"{a}.self_attn.out_proj.{part}"]
                    sd[f"{b}.ln_1.{part}"] = hf[f"{a}.layer_norm1.{part}"]
                    sd[f"{b}.ln_2.{part}"] = hf[f"{a}.layer_norm2.{part}"]
                    sd[f"{b}.mlp.c_fc.{part}"] = hf[f"{a}.mlp.fc1.{part}"]
                    sd[f"{b}.mlp.c_proj.{part}"] = hf[f"{a}.mlp.fc2.{part}"]
    except KeyError as exc:
        raise ImportError_(f"not a Hugging Face CLIPModel state dict (missing {exc})") from None
    return sd


def activation_for_open_clip(model_name: str) -> str:
    """open_clip's convention: OpenAI-pretrained and ``*-quickgelu`` models use QuickGELU, the rest GELU."""
    name = model_name.lower()
    return "quick_gelu" if "quickgelu" in name or "openai" in name else "gelu"


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
    grid = (info["grid"], info["grid"])
    out["visual.positional_embedding"] = interpolate_image_positions(sd["visual.positional_embedding"].float(), grid, new_grid)
    out["text.positional_embedding"] = resize_text_positions(sd["positional_embedding"].float(), context_length, text_positions)
    return out, info


def _is_torchscript(p: Path) -> bool:
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as zf:
        return any("/code/" in n or n.startswith("code/") for n in zf.namelist())


def load_clip_source(
    weights: str | os.PathLike[str], activation: str | None = None, model_name: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(OpenAI-layout state dict, what the keys cannot tell: heads/activation, source kind) of any supported source."""
    p = Path(weights)
    if activation is not None and activation not in ("quick_gelu", "gelu"):
        raise ImportError_(f"--activation must be quick_gelu or gelu, got {activation!r}")
    if is_hf_clip_folder(p):
        sd, ov = read_hf_clip(p)
        if activation is not None and activation != ov["activation"]:
            raise ImportError_(f"{p}: config.json says hidden_act {ov['activation']}, not --activation {activation}")
        return sd, ov, "huggingface"
    if p.is_dir():
        raise ImportError_(f"{p}: a folder, but not a Hugging Face CLIPModel (config.json with {' or '.join(HF_WEIGHT_FILES)})")
    torchscript = p.is_file() and _is_torchscript(p)
    sd = read_clip_state_dict(p)
    clip_config_from_state_dict(sd)  # a CLIP ViT at all? (before asking for what its keys cannot tell)
    if torchscript:
        return sd, {"activation": activation or "quick_gelu"}, "openai-torchscript"  # OpenAI's own models: QuickGELU
    if activation is None and model_name is None:
        raise ImportError_(f"{p}: a plain state dict does not say its activation (OpenAI's models use quick_gelu, LAION "
                           "open_clip models gelu); give --activation or --model-name (the open_clip name)")
    return sd, {"activation": activation or activation_for_open_clip(model_name or "")}, "state-dict"


def import_clip(
    weights: str | os.PathLike[str], out: str | os.PathLike[str], image_size: tuple[int, int] = (384, 128),
    context_length: int = 168, *, force: bool = False, text_positions: str = "stretch", activation: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Convert CLIP weights into a checkpoint folder usable as ``train.init_from``.

    ``weights``: an OpenAI TorchScript archive, a plain state dict (then ``activation`` or
    ``model_name`` is required) or a Hugging Face ``CLIPModel`` folder.
    ``text_positions`` chooses how CLIP's 77 text positions reach ``context_length``
    (``resize_text_positions``); the choice is recorded in the checkpoint's meta.json.
    ``out`` may not be the weights file nor a folder holding it; a folder with other files needs
    ``force`` (they are kept); a checkpoint this command wrote is replaced.
    """

    check_outputs({"-o": out}, [weights], folders=["-o"])
    if text_positions not in TEXT_POSITION_MODES:
        raise ImportError_(f"unknown --text-positions {text_positions!r} (choose from {', '.join(TEXT_POSITION_MODES)})")
    with output_lock(out):
        claim_dir(out, "import-clip", force=force)
        check_free(out, "import-clip", CHECKPOINT_FILES)  # a file of the user's with a checkpoint's name is never replaced
        try:
            model, meta = _convert_clip(weights, image_size, context_length, text_positions, activation, model_name)
        except (RuntimeError, ValueError, IndexError, KeyError) as exc:  # tensors whose shapes disagree with each other
            reason = " ".join(str(exc).split())[:240]
            raise ImportError_(f"{weights}: the tensors do not form one CLIP ViT ({reason})") from None
        bad = next((k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise ImportError_(f"{weights}: {bad} holds NaN or infinite values; not saved")
        path = save_checkpoint(out, model, meta)
        record_entries(out, "import-clip", ("model.safetensors", "meta.json"))  # marked only once written: a failed import claims nothing
        return path


def _convert_clip(
    weights: str | os.PathLike[str], image_size: tuple[int, int], context_length: int, text_positions: str = "stretch",
    activation: str | None = None, model_name: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    sd, known, kind = load_clip_source(weights, activation, model_name)
    converted, info = to_model_state_dict(sd, image_size, context_length, text_positions)
    info.update(known)
    mcfg = ModelConfig(
        arch="clip-sdm", embed_dim=info["embed_dim"], image_size=image_size, patch_size=info["patch_size"],
        vision_width=info["vision_width"], vision_layers=info["vision_layers"], vision_heads=info["vision_heads"],
        context_length=context_length, vocab_size=info["vocab_size"], text_width=info["text_width"],
        text_layers=info["text_layers"], text_heads=info["text_heads"], activation=info["activation"],
    )
    model = RetrievalModel(mcfg)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [m for m in missing if m != "logit_scale"]
    if missing or unexpected:
        raise ImportError_(f"{weights}: weights do not fit a CLIP ViT (missing {missing[:3]}, unexpected {unexpected[:3]})")
    cfg = Config(model=mcfg)
    meta = {"config": cfg.to_dict(), "tokenizer": {"kind": "clip"}, "source": str(weights), "source_format": kind, "epoch": 0, "global_step": 0,
            "text_positions": {"mode": text_positions, "source_length": int(sd["positional_embedding"].shape[0]), "length": context_length}}
    return model, meta
