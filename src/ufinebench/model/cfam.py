"""CFAM and its baselines as one switchable model.

``arch`` picks a preset of parts; every part can also be switched on its own:

=========  ==========================================================================
clip-sdm   CLIP dual encoder, global SDM alignment only
irra       + cross-modal identity loss (+ IRRA's masked-token head with ``mlm``)
cfam       + shared cross-modal granularity decoder, hard-negative matching, identity loss
=========  ==========================================================================

CFAM as far as the paper (Zuo et al., CVPR 2024) and the authors' replies reveal; our choices
are marked: K learnable granularity queries (16) decoded by a small transformer decoder (2
layers) whose weights are SHARED by both modalities, cross-attending to one modality's tokens;
granularity alignment = SDM on the mean per-query cosine similarity (our choice); a matcher
(text tokens cross-attending to image tokens, then an MLP, binary output) scores image-text
pairs against the hardest in-batch negatives (our choice: sampled in proportion to softmax
similarity, ALBEF-style, same-id candidates excluded, with draws seeded per step so that any
number of processes picks the same negatives).

The model returns named tensors; ``ufinebench.losses`` turns them into losses. Retrieval stays a
dual encoder: ``encode_image`` / ``encode_text`` give global and granularity embeddings that a
gallery can precompute, and ``retrieval_features`` packs them into one vector whose cosine is
the model's similarity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from ufinebench.model.clip import Attention, LayerNorm, QuickGELU, TextTransformer, VisionTransformer, init_clip_like
from ufinebench.model.conv import ConvTower

ARCHS = ("clip-sdm", "irra", "cfam")


class ModelOutputs(TypedDict, total=False):
    """The named tensors :meth:`RetrievalModel.forward` returns for a batch of n pairs (what ``ufinebench.losses`` reads).

    Always: ``image_global`` / ``text_global`` (n, D), ``image_tokens`` (n, 1+N, D), ``text_tokens``
    (n, L, D), ``text_mask`` (n, L), ``text_eot`` (n,), ``logit_scale`` (). With the parts that make
    them: granularity embeddings (n, K, D), the matcher's text side (n, 1+T, D) and mask, the
    attribute-swapped caption's global embedding and matcher inputs, word-head logits (n, G), identity
    logits (n, classes), MLM logits (n, L, V).
    """

    image_global: torch.Tensor
    text_global: torch.Tensor
    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    text_eot: torch.Tensor
    logit_scale: torch.Tensor
    image_granular: torch.Tensor
    text_granular: torch.Tensor
    text_match: torch.Tensor
    text_match_mask: torch.Tensor
    swap_global: torch.Tensor
    swap_match: torch.Tensor
    swap_match_mask: torch.Tensor
    image_word_logits: torch.Tensor
    image_id_logits: torch.Tensor
    text_id_logits: torch.Tensor
    mlm_logits: torch.Tensor


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved inside every checkpoint)."""

    arch: str = "cfam"
    embed_dim: int = 512
    image_size: tuple[int, int] = (384, 128)
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 168
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    eot_id: int | None = None  # None: CLIP's rule (end token = largest id)
    temperature: float = 0.02  # initial SDM temperature (IRRA uses 0.02)
    learn_temperature: bool = False
    # parts (None: as the arch says)
    granularity: bool | None = None
    matching: bool | None = None
    id_loss: bool | None = None
    mlm: bool = False
    num_classes: int = 0  # identities for the identity classifier (set from the data)
    attribute_words: int = 0  # > 0: an image head predicting this many word groups [+ colour-garment pairs] (data.attribute_words / _pairs)
    word_head_input: str = "global"  # the word head reads: global (the image embedding) | map (every image token, flattened: where on the body)
    num_queries: int = 16
    decoder_layers: int = 2
    decoder_heads: int = 8
    matcher_layers: int = 2
    granularity_weight: float = 1.0  # weight of the granularity similarity at retrieval
    grad_checkpointing: bool = False
    vision: str = "vit"  # vit: CLIP's ViT (real weights); conv: ConvTower (from scratch on the CPU)
    vision_stem: int = 1  # conv only: s > 1 folds each s x s pixel block into channels first (a higher resolution at the same cost)
    text_pool: str = "eot"  # eot: CLIP's causal end-token pooling; mean: bidirectional, mean of real tokens
    activation: str = "quick_gelu"  # the encoders' MLP activation: quick_gelu (OpenAI CLIP) | gelu (LAION open_clip)
    # training only: each caption's word positions start at a random offset in [0, jitter], so the
    # text encoder cannot tie a word's meaning to its absolute place (a sentence added in front of
    # a description otherwise shifts every word; docs/training.md). The position table grows by
    # ``jitter`` rows; evaluation uses offset 0.
    text_position_jitter: int = 0
    # > 0: a convolution over this many neighbouring words before the transformer, so each word
    # carries its neighbours ("light blue" + "jacket") into attention and pooling wherever the
    # phrase stands in the text (free descriptions; docs/training.md). 0: off (CLIP's text encoder)
    text_local_kernel: int = 0
    match_text: str = "granular"  # the matcher's text side after the global token: granular (K queries) | tokens (every word)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.vision not in ("vit", "conv"):
            raise ValueError(f"vision must be 'vit' or 'conv', got {self.vision!r}")
        if self.text_pool not in ("eot", "mean"):
            raise ValueError(f"text_pool must be 'eot' or 'mean', got {self.text_pool!r}")
        if self.activation not in ("quick_gelu", "gelu"):
            raise ValueError(f"activation must be 'quick_gelu' or 'gelu', got {self.activation!r}")
        if self.word_head_input not in ("global", "map"):
            raise ValueError(f"word_head_input must be 'global' or 'map', got {self.word_head_input!r}")
        if self.vision_stem < 1 or (self.vision_stem > 1 and self.vision != "conv"):
            raise ValueError(f"vision_stem must be 1, or > 1 with the conv tower, got {self.vision_stem}")
        if self.match_text not in ("granular", "tokens"):
            raise ValueError(f"match_text must be 'granular' or 'tokens', got {self.match_text!r}")
        if self.text_position_jitter < 0:
            raise ValueError(f"text_position_jitter must be >= 0, got {self.text_position_jitter}")
        if self.text_local_kernel < 0 or (self.text_local_kernel and self.text_local_kernel % 2 == 0):
            raise ValueError(f"text_local_kernel must be 0 (off) or an odd width, got {self.text_local_kernel}")

    @property
    def use_granularity(self) -> bool:
        return self.arch == "cfam" if self.granularity is None else self.granularity

    @property
    def use_matching(self) -> bool:
        return self.arch == "cfam" if self.matching is None else self.matching

    @property
    def use_id(self) -> bool:
        return self.arch in ("irra", "cfam") if self.id_loss is None else self.id_loss

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """A config from its saved dict; an unknown key is an error (a model built without it would not be the one saved)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config key {unknown[0]!r} (written by another version of ufinebench?)")
        kw: dict[str, Any] = {k: (tuple(v) if k == "image_size" else v) for k, v in d.items()}
        return cls(**kw)


class DecoderLayer(nn.Module):
    """Queries: self-attention, cross-attention to a token sequence, MLP (pre-norm)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_q = LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.ln_x = LayerNorm(width)
        self.ln_kv = LayerNorm(width)
        self.cross_attn = Attention(width, heads)
        self.ln_mlp = LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None, self_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = q + self.self_attn(self.ln_q(q), key_mask=self_mask)
        q = q + self.cross_attn(self.ln_x(q), self.ln_kv(kv), key_mask=key_mask)
        return q + self.mlp(self.ln_mlp(q))


class GranularityDecoder(nn.Module):
    """K learnable queries decoded against either modality's tokens, with shared weights."""

    def __init__(self, dim: int, num_queries: int, layers: int, heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads) for _ in range(layers)])
        self.ln_out = LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, D), key_mask (B, N) True = real token -> (B, K, D)."""
        q = self.queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, tokens, key_mask)
        return self.ln_out(q)


class Matcher(nn.Module):
    """Image-text matching head: a text sequence cross-attends to image tokens; MLP on its first token.

    The text sequence is the text's global embedding followed by its granularity embeddings
    (K + 1 tokens: cheap) or by all its tokens (``ModelConfig.match_text``). The head
    also sees the element-wise product of the two normalised global embeddings (whose sum is
    their cosine), so it starts from what the dual encoder already knows and the cross-attention
    only has to learn the corrections; without it the matcher stayed at chance from scratch
    (docs/training.md).
    """

    def __init__(self, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(dim, heads) for _ in range(layers)])
        self.ln = LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, text_seq: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """(P, T, D), (P, T) True = real, (P, N, D) -> (P,) logits that the pair matches.

        ``text_seq[:, 0]`` and ``image_tokens[:, 0]`` are the global embeddings.
        """
        x = text_seq
        for layer in self.layers:
            x = layer(x, image_tokens, None, self_mask=text_mask)
        d = text_seq.shape[-1]
        prod = F.normalize(text_seq[:, 0].float(), dim=-1) * F.normalize(image_tokens[:, 0].float(), dim=-1) * d  # (P, D)
        return self.head(torch.cat([self.ln(x[:, 0]), prod.to(x.dtype)], dim=-1)).squeeze(-1)


class RetrievalModel(nn.Module):
    """CLIP dual encoder plus CFAM's optional parts (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.visual: nn.Module
        if cfg.vision == "conv":
            self.visual = ConvTower(cfg.image_size, cfg.vision_width, d, stem=cfg.vision_stem)
        else:
            self.visual = VisionTransformer(cfg.image_size, cfg.patch_size, cfg.vision_width, cfg.vision_layers, cfg.vision_heads, d,
                                            activation=cfg.activation)
        self.text = TextTransformer(cfg.context_length, cfg.vocab_size, cfg.text_width, cfg.text_layers, cfg.text_heads, d, cfg.eot_id,
                                    pool=cfg.text_pool, mask_token=cfg.mlm, activation=cfg.activation,
                                    position_jitter=cfg.text_position_jitter, local_kernel=cfg.text_local_kernel)
        init_clip_like(self.visual, self.text)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)), requires_grad=cfg.learn_temperature)
        self.granularity = GranularityDecoder(d, cfg.num_queries, cfg.decoder_layers, cfg.decoder_heads) if cfg.use_granularity else None
        self.matcher = Matcher(d, cfg.matcher_layers, cfg.decoder_heads) if cfg.use_matching else None
        if cfg.use_id:
            if cfg.num_classes < 1:
                raise ValueError("the identity loss needs num_classes (the number of training identities)")
            self.classifier: nn.Linear | None = nn.Linear(d, cfg.num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        else:
            self.classifier = None
        # which attribute words (of the run's vocabulary, ufinebench.vocab) the image's caption names, from the image's global
        # feature or from its whole token map (a linear map of the flattened map sees where each thing is)
        n_in = d * self.image_token_count() if cfg.word_head_input == "map" else d
        self.word_head = nn.Linear(n_in, cfg.attribute_words) if cfg.attribute_words > 0 else None
        if cfg.mlm:  # IRRA's implicit relation reasoning: masked text attends to the image, predicts tokens
            self.mlm_fusion: nn.ModuleList | None = nn.ModuleList([DecoderLayer(d, cfg.decoder_heads) for _ in range(cfg.matcher_layers)])
            self.mlm_head: nn.Sequential | None = nn.Sequential(LayerNorm(d), nn.Linear(d, d), QuickGELU(), nn.Linear(d, cfg.vocab_size))
        else:
            self.mlm_fusion = None
            self.mlm_head = None
        self.set_grad_checkpointing(cfg.grad_checkpointing)

    def set_grad_checkpointing(self, on: bool) -> None:
        if isinstance(self.visual, VisionTransformer):
            self.visual.transformer.grad_checkpointing = on
        self.text.transformer.grad_checkpointing = on

    # --- per-modality encoders (what a gallery or a query needs) ---------------------------
    def encode_image(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"global": (B, D), "tokens": (B, 1+N, D), ["granular": (B, K, D)]}."""
        glob, tokens = self.visual(images)
        out = {"global": glob, "tokens": tokens}
        if self.granularity is not None:
            out["granular"] = self.granularity(tokens[:, 1:])
        return out

    def encode_text(self, text: torch.Tensor, trim: bool = True, offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, L) ids -> {"global": (B, D), "tokens": (B, L', D), "mask": (B, L'), "eot": (B,), ["granular"]}.

        With ``trim`` the padding after the batch's longest text is dropped first (L' <= L): the
        causal encoder's outputs up to each end token do not change, and the work shrinks.
        ``offset`` (B,): where each text's positions start (training's position jitter; None: 0).
        """
        if trim:
            text = text[:, : int(self.text.eot_index(text).max()) + 1]
        glob, tokens = self.text(text, offset)
        eot = self.text.eot_index(text)
        mask = torch.arange(text.shape[1], device=text.device)[None, :] <= eot[:, None]  # (B, L) up to the end token
        out = {"global": glob, "tokens": tokens, "mask": mask, "eot": eot}
        if self.granularity is not None:
            out["granular"] = self.granularity(tokens, key_mask=mask)
        return out

    def retrieval_features(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """One vector per item whose cosine = (cos_global + w * mean_k cos_k) / (1 + w)."""
        g = F.normalize(enc["global"].float(), dim=-1)  # (B, D)
        if "granular" not in enc:
            return g
        w = self.cfg.granularity_weight
        k = enc["granular"].shape[1]
        q = F.normalize(enc["granular"].float(), dim=-1).flatten(1) * math.sqrt(w / k)  # (B, K*D)
        return torch.cat([g, q], dim=1) / math.sqrt(1.0 + w)

    # --- training forward ---------------------------------------------------------------------
    def forward(
        self, images: torch.Tensor, text: torch.Tensor, mlm_text: torch.Tensor | None = None, text_offset: torch.Tensor | None = None,
        match_text: torch.Tensor | None = None, swap_text: torch.Tensor | None = None,
    ) -> ModelOutputs:
        """Both modalities of a batch of matching pairs -> named tensors (:class:`ModelOutputs`) for ``ufinebench.losses``.

        ``text_offset`` (B,): the position jitter's start positions (``position_offsets``), or None.
        ``match_text`` (B, L): the matcher's own view of the captions (training's word noise on
        the matcher's side only), encoded in a second pass; None: the matcher reads ``text``'s
        encoding. Its gradient reaches the text encoder through the matcher's loss alone.
        ``swap_text`` (B, L): each caption with one attribute word swapped (``train.attribute_swap``),
        encoded in another pass: ``swap_global`` (and ``swap_match`` / ``swap_match_mask`` for the matcher).
        """
        img = self.encode_image(images)
        txt = self.encode_text(text, trim=False, offset=text_offset)  # the trainer trims to the global batch's longest text
        out: ModelOutputs = {
            "image_global": img["global"],
            "text_global": txt["global"],
            "image_tokens": img["tokens"],
            "text_tokens": txt["tokens"],
            "text_mask": txt["mask"],
            "text_eot": txt["eot"],
            "logit_scale": self.logit_scale.exp(),
        }
        if "granular" in img:
            out["image_granular"] = img["granular"]
            out["text_granular"] = txt["granular"]
        if self.matcher is not None:
            mtxt = txt if match_text is None else self.encode_text(match_text, trim=False, offset=text_offset)
            out["text_match"], out["text_match_mask"] = self.text_match_inputs(mtxt)  # (B, 1 + T, D), (B, 1 + T)
        if swap_text is not None:
            stxt = self.encode_text(swap_text, trim=False, offset=text_offset)
            out["swap_global"] = stxt["global"]  # (B, D)
            if self.matcher is not None:
                out["swap_match"], out["swap_match_mask"] = self.text_match_inputs(stxt)  # (B, 1 + T, D), (B, 1 + T)
        if self.word_head is not None:
            out["image_word_logits"] = self.word_logits(img)  # (B, G)
        if self.classifier is not None:
            out["image_id_logits"] = self.classifier(img["global"].float())
            out["text_id_logits"] = self.classifier(txt["global"].float())
        if self.mlm_head is not None and self.mlm_fusion is not None and mlm_text is not None:
            _, fused = self.text(mlm_text, text_offset)
            for layer in self.mlm_fusion:
                fused = layer(fused, img["tokens"], None)
            out["mlm_logits"] = self.mlm_head(fused)  # (B, L, V)
        return out

    def image_token_count(self) -> int:
        """N: the image tokens after the global one (conv: the feature map's positions; ViT: the patches)."""
        h, w = self.cfg.image_size
        if self.cfg.vision == "conv":
            stride = 16 * self.cfg.vision_stem
            return (h // stride) * (w // stride)
        return (h // self.cfg.patch_size) * (w // self.cfg.patch_size)

    def word_logits(self, img: dict[str, torch.Tensor]) -> torch.Tensor:
        """``encode_image``'s output -> (B, G) logits that the image's caption names each attribute word group."""
        if self.word_head is None:
            raise RuntimeError("this model has no word head (data.attribute_words)")
        x = img["tokens"][:, 1:].flatten(1) if self.cfg.word_head_input == "map" else img["global"]  # (B, N * D) or (B, D)
        return self.word_head(x.float())

    def word_log_probs(self, img: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, G) float32 log-probabilities of :meth:`word_logits`: the image side of re-ranking's attribute check."""
        return F.logsigmoid(self.word_logits(img).float())

    def text_match_inputs(self, txt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The matcher's text side from ``encode_text``: global then granular (or all) tokens, and its mask.

        (B, 1 + T, D), (B, 1 + T) True = real. Granular when the model has the decoder and
        ``match_text`` is granular (K + 1 tokens: cheap), else every word of the text.
        """
        granular = "granular" in txt and self.cfg.match_text == "granular"
        seq = txt["granular"] if granular else txt["tokens"]
        mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device) if granular else txt["mask"]
        seq = torch.cat([txt["global"][:, None], seq], dim=1)  # (B, 1 + T, D)
        return seq, torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def match_logits(self, text_seq: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Matcher scores of given (text, image) pairs: (P,) logits (inputs from ``forward``)."""
        if self.matcher is None:
            raise RuntimeError("this model has no matcher")
        return self.matcher(text_seq, text_mask, image_tokens)


def config_json(cfg: ModelConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


__all__ = ["ARCHS", "ModelConfig", "ModelOutputs", "RetrievalModel", "GranularityDecoder", "Matcher", "config_json"]
