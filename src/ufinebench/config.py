"""Run configuration: frozen dataclasses read from YAML, with checked types and clear errors.

A config file has three sections, ``model`` (``ModelConfig``), ``data`` and ``train``. Presets
ship inside the package (``ufinebench/presets/NAME.yaml``, package data, so an installed package
has them); ``--config NAME`` finds one by name. ``--set train.lr=1e-4``
overrides one key (the value is parsed as YAML). Unknown keys, wrong types and impossible values
raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ufinebench.errors import UFineBenchError
from ufinebench.limits import YamlSyntaxError, load_yaml, read_yaml_file
from ufinebench.model.cfam import ARCHS, ModelConfig

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class ConfigError(UFineBenchError):
    """A configuration that cannot be used; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "data/ufine_synth/ufine_synth.json"
    format: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation (or val_identities)
    val_identities: int = 0  # >0: hold out this many training identities as validation (UFine6926 has no val split)
    tokenizer: str = "clip"  # clip | bpe | word (bpe and word are learnt from the training captions)
    bpe_vocab_size: int = 4000  # the vocabulary limit of a learnt tokenizer (bpe or word)
    hflip: bool = False
    pad: int = 10
    color_jitter: float = 0.1
    erase_prob: float = 0.5
    camera: float = 0.0  # share of training images seen through a worse camera: grey, dark, low contrast, blur, noise (CameraDraw)
    sentence_drop: float = 0.0  # each caption sentence after the first dropped with this probability (per epoch)
    sentence_shuffle: bool = False  # caption sentences after the first in a random order (per epoch)
    sentence_keep_first: bool = True  # sentence_drop never drops the first sentence (False: any sentence, never all)
    token_drop: float = 0.0  # each caption word dropped with this probability (per epoch; train.token_noise)
    token_unk: float = 0.0  # each caption word replaced by the unknown token with this probability (learnt tokenizers)
    match_token_drop: float = 0.0  # word noise on the matcher's own view of the caption only (a second text pass;
    match_token_unk: float = 0.0  # the dual encoder's view keeps token_drop / token_unk); models without a matcher ignore it
    match_token_shuffle: int = 0  # > 0: the matcher's view also shuffled locally, each word moving at most this many places
    match_sentence_drop: float = 0.0  # the matcher's view also drops each sentence (never all) with this probability
    match_attribute_drop: float = 0.0  # the matcher's view also drops each visible attribute word ("red", "boots") with this probability
    attribute_swap: bool = False  # each caption also gets a copy with one attribute word swapped (a negative for its own image)
    modifier_order: float = 0.0  # each colour moves across the shape words beside it ("beige knee-length skirt") with this probability
    attribute_words: bool = False  # the image predicts which attribute words (of the run's vocabulary) its caption names
    attribute_pairs: bool = False  # with attribute_words: the word head also predicts which colour goes with which garment ("grey hoodie")
    # the attribute vocabulary (ufinebench.vocab): a JSON file or a built-in name (ufine-synth-1); None: the one the
    # dataset ships beside its annotation (vocabulary.json), if any. Needed by the attribute options above; without
    # one, validation reads val's captions as they are (no shortened copies)
    vocabulary: str | None = None
    sampler: str = "random"  # random | identity | neighbours (look-alike batches: persons whose captions read alike together)
    num_instances: int = 4
    neighbour_group: int = 4  # neighbours sampler: persons per look-alike group
    neighbours_from: int = 0  # neighbours sampler: random batches before this epoch
    workers: int = 2
    in_memory_mb: int = 2048  # training images decoded once and held in memory up to this size; larger sets stream


LOSS_NAMES = ("granularity", "match", "match_rank", "id", "mlm", "swap", "swap_match", "words")  # the keys of train.loss_weights


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64  # global: split across processes
    lr: float = 1e-5
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    adam_eps: float = 1e-8
    weight_decay: float = 4e-5
    warmup_epochs: float = 5.0
    min_lr_ratio: float = 0.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> multiplier
    grad_clip: float = 0.0  # 0: off
    amp: str = "none"  # none | bf16 (CUDA, or a CPU with native bf16: else float32) | fp16 (CUDA only)
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"granularity": 1.0, "match": 1.0, "id": 1.0, "mlm": 1.0})
    init_from: str | None = None  # a checkpoint (e.g. from `ufinebench import-clip`) to start from
    out_dir: str = "runs/run"
    eval_every: int = 1  # epochs; 0: never
    best_metric: str = "R1"
    log_every: int = 20  # steps
    tensorboard: bool = True  # when the tensorboard package is installed
    max_steps_per_epoch: int = 0  # 0: whole epoch (for quick tests and benchmarks)
    global_loss: str = "sdm"  # sdm (IRRA's) | infonce (soft-target cross-entropy: learns from scratch)
    match_negatives: str = "any"  # any | contradicting: the matcher's negative for a caption must lack a visible attribute word its view names
    match_candidates: int = 8  # loss_weights.match_rank > 0: the matcher ranks each caption's image among this many (the rest: nearest look-alikes)
    final_eval: str | None = None  # a split to evaluate the best checkpoint on after the last epoch (e.g. test)
    eval_limit: int = 0  # >0: validation and final evaluation read only the first N records (dry runs)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and lightly convert) a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) and "x" in value:  # "384x128"
            value = value.lower().split("x")
            try:
                value = [int(v) for v in value]
            except ValueError:
                raise ConfigError(f"{key}: expected HxW, got {value!r}") from None
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=False)))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    return value


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            raise ConfigError(f"{section}.{k}: unknown key (known: {', '.join(sorted(names))})")
    kw = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    try:
        return cls(**kw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{section}: {exc}") from None


def _set_dotted(tree: dict[str, Any], dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"{dotted}: --set keys look like model.KEY, data.KEY or train.KEY")
    try:
        value = load_yaml(raw, f"--set {dotted}") if raw != "" else ""
    except YamlSyntaxError:
        value = raw
    node = tree.setdefault(parts[0], {})
    for p in parts[1:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set inside a non-mapping")
    node[parts[-1]] = value


def preset_names() -> list[str]:
    """The presets shipped with the package, by name."""
    return sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a preset shipped with the package."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        return p
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {', '.join(preset_names())})")
    return preset


def load_config(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Read a config (YAML path, preset name or dict), apply ``KEY=VALUE`` overrides, check it."""
    if source is None:
        tree: dict[str, Any] = {}
    elif isinstance(source, dict):
        tree = {k: dict(v) for k, v in source.items()}
    else:
        path = resolve_config_path(str(source))
        try:
            tree = read_yaml_file(path) or {}
        except UFineBenchError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected sections model, data, train")
    for k in tree:
        if k not in _SECTIONS:
            raise ConfigError(f"{k}: unknown section (expected model, data, train)")
        if not isinstance(tree[k], dict):
            raise ConfigError(f"{k}: expected a mapping of keys")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{item}: --set expects KEY=VALUE")
        k, v = item.split("=", 1)
        _set_dotted(tree, k.strip(), v.strip())
    cfg = Config(
        model=_build(ModelConfig, tree.get("model", {}), "model"),
        data=_build(DataConfig, tree.get("data", {}), "data"),
        train=_build(TrainConfig, tree.get("train", {}), "train"),
    )
    check_config(cfg)
    return cfg


SEED_MAX = 2**31 - 1  # seeds enter int64 hash arithmetic (training's per-pair streams) and numpy generators
# inclusive ranges of the numeric keys whose values the code can run with (None: no bound on that side)
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "model.embed_dim": (1, None), "model.patch_size": (1, None), "model.vision_width": (1, None), "model.vision_layers": (1, 256),
    "model.vision_heads": (1, None), "model.context_length": (4, 8192), "model.vocab_size": (1, None), "model.text_width": (1, None),
    "model.text_layers": (1, 256), "model.text_heads": (1, None), "model.num_queries": (1, 4096), "model.decoder_layers": (1, 256),
    "model.decoder_heads": (1, None), "model.matcher_layers": (1, 256), "model.num_classes": (0, None), "model.attribute_words": (0, None),
    "model.granularity_weight": (0, None), "model.text_position_jitter": (0, 8192), "model.vision_stem": (1, 8),
    "data.bpe_vocab_size": (8, 10_000_000), "data.pad": (0, 4096), "data.color_jitter": (0, 1), "data.erase_prob": (0, 1), "data.camera": (0, 1),
    "data.num_instances": (1, None), "data.neighbour_group": (1, 1024), "data.neighbours_from": (0, None),
    "data.workers": (0, 256), "data.val_identities": (0, None), "data.in_memory_mb": (0, None),
    "train.epochs": (1, 1_000_000), "train.batch_size": (2, None), "train.adam_eps": (1e-30, 1), "train.weight_decay": (0, None),
    "train.warmup_epochs": (0, None), "train.min_lr_ratio": (0, 1), "train.grad_clip": (0, None), "train.seed": (0, SEED_MAX),
    "train.eval_every": (0, None), "train.log_every": (1, None), "train.max_steps_per_epoch": (0, None), "train.match_candidates": (2, None),
    "train.eval_limit": (0, None),
}


def _num(x: float | None) -> str:
    """A bound as people write it: 10,000,000 and 2,147,483,647, 1e-30."""
    return f"{int(x):,}" if x is not None and float(x).is_integer() else f"{x:g}"


def _check_bounds(cfg: Config) -> None:
    """Every key of :data:`BOUNDS` within its range, and loss weights / lr multipliers not negative."""
    for key, (lo, hi) in BOUNDS.items():
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"at least {_num(lo)}" if hi is None else f"between {_num(lo)} and {_num(hi)}" if lo is not None else f"at most {_num(hi)}"
            raise ConfigError(f"{key}: must be {rng}, got {v}")
    for group in ("loss_weights", "lr_multipliers"):
        for k, w in getattr(cfg.train, group).items():
            if w < 0:
                raise ConfigError(f"train.{group}.{k}: must be at least 0, got {w}")


def check_config(cfg: Config) -> None:
    """Values that parse but cannot work."""
    m, d, t = cfg.model, cfg.data, cfg.train
    for section, obj in (("model", m), ("data", d), ("train", t)):  # inf / nan parse as floats but train to NaN
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            numbers = value.items() if isinstance(value, dict) else [("", value)]
            for key, v in numbers:
                if isinstance(v, float) and not math.isfinite(v):
                    name = f"{section}.{f.name}" + (f".{key}" if key else "")
                    raise ConfigError(f"{name}: must be a finite number, got {v}")
    if m.arch not in ARCHS:
        raise ConfigError(f"model.arch: must be one of {', '.join(ARCHS)}")
    _check_bounds(cfg)
    h, w = m.image_size
    if m.vision not in ("vit", "conv"):
        raise ConfigError("model.vision: must be vit or conv")
    if m.text_pool not in ("eot", "mean"):
        raise ConfigError("model.text_pool: must be eot or mean")
    if m.vision_stem < 1 or (m.vision_stem > 1 and m.vision != "conv"):
        raise ConfigError(f"model.vision_stem: must be 1, or more with model.vision=conv, got {m.vision_stem}")
    stride = 16 * m.vision_stem
    if m.vision == "conv" and (h <= 0 or w <= 0 or h % stride or w % stride):
        raise ConfigError(f"model.image_size: {h}x{w} must be positive multiples of {stride} for model.vision=conv"
                          + (f" with model.vision_stem={m.vision_stem} (set model.vision_stem=1 for smaller images)" if m.vision_stem > 1 else ""))
    if m.vision == "vit" and (h <= 0 or w <= 0 or h % m.patch_size or w % m.patch_size):
        raise ConfigError(f"model.image_size: {h}x{w} must be positive multiples of model.patch_size ({m.patch_size})")
    encoders = [("text", m.text_width, m.text_heads)] + ([("vision", m.vision_width, m.vision_heads)] if m.vision == "vit" else [])
    for key, width, heads in encoders:
        if width <= 0 or heads <= 0 or width % heads:
            raise ConfigError(f"model.{key}_width: {width} must be a positive multiple of model.{key}_heads ({heads})")
    if m.embed_dim <= 0 or m.embed_dim % m.decoder_heads:
        raise ConfigError(f"model.embed_dim: {m.embed_dim} must be a positive multiple of model.decoder_heads ({m.decoder_heads})")
    if m.context_length < 4:
        raise ConfigError("model.context_length: must be at least 4")
    if m.temperature <= 0:
        raise ConfigError("model.temperature: must be positive")
    if d.tokenizer not in ("clip", "bpe", "word"):
        raise ConfigError("data.tokenizer: must be clip, bpe or word")
    if d.sampler not in ("random", "identity", "neighbours"):
        raise ConfigError("data.sampler: must be random, identity or neighbours")
    if t.epochs < 1:
        raise ConfigError("train.epochs: must be at least 1")
    if t.batch_size < 2:
        raise ConfigError("train.batch_size: must be at least 2")
    if d.sampler == "identity" and (d.num_instances < 1 or t.batch_size % d.num_instances):
        raise ConfigError(f"data.num_instances: {d.num_instances} must divide train.batch_size ({t.batch_size})")
    if t.lr <= 0:
        raise ConfigError("train.lr: must be positive")
    if t.global_loss not in ("sdm", "infonce"):
        raise ConfigError("train.global_loss: must be sdm or infonce")
    if t.match_candidates < 2:
        raise ConfigError("train.match_candidates: must be at least 2 (the true image and one look-alike)")
    for key in ("token_drop", "token_unk", "match_token_drop", "match_token_unk"):
        if not 0.0 <= getattr(d, key) < 0.5:
            raise ConfigError(f"data.{key}: must be in [0, 0.5)")
    if d.match_token_shuffle < 0:
        raise ConfigError("data.match_token_shuffle: must be at least 0 (0: off)")
    if t.match_negatives not in ("any", "contradicting"):
        raise ConfigError("train.match_negatives: must be any or contradicting")
    for key in ("sentence_drop", "match_sentence_drop", "match_attribute_drop", "modifier_order"):
        if not 0.0 <= getattr(d, key) < 1.0:
            raise ConfigError(f"data.{key}: must be in [0, 1)")
    if d.attribute_pairs and not d.attribute_words:
        raise ConfigError("data.attribute_pairs: needs data.attribute_words (the pairs are outputs of the word head)")
    if d.in_memory_mb < 0:
        raise ConfigError("data.in_memory_mb: must be at least 0")
    if t.optimizer not in ("adamw", "sgd"):
        raise ConfigError("train.optimizer: must be adamw or sgd")
    if t.amp not in ("none", "bf16", "fp16"):
        raise ConfigError("train.amp: must be none, bf16 or fp16")
    if t.best_metric not in ("R1", "R5", "R10", "mAP", "mINP", "mSD"):
        raise ConfigError("train.best_metric: must be one of R1 R5 R10 mAP mINP mSD")
    if d.val_identities < 0:
        raise ConfigError("data.val_identities: must be at least 0")
    if d.val_identities and d.val_split:
        raise ConfigError("data.val_identities: hold out training identities only when data.val_split is null")
    for k in t.loss_weights:
        if k not in LOSS_NAMES:
            raise ConfigError(f"train.loss_weights.{k}: unknown loss ({', '.join(LOSS_NAMES)})")


def dump_config(cfg: Config) -> str:
    """YAML text of a config (tuples as lists)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
