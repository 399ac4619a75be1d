"""CLIP-compatible encoders: a ViT for non-square images and a causal text transformer.

Parameter names follow OpenAI CLIP's state dict (``visual.conv1.weight``,
``transformer.resblocks.0.attn.in_proj_weight``, ``text_projection``, ...), so CLIP weights load
directly (see ``model/pretrained.py``). Attention uses ``F.scaled_dot_product_attention``; the
outputs match the reference CLIP code to float precision (tests/test_model_clip.py).

Both encoders return the projected global embedding and the projected token sequence: the
granularity decoder and the matcher work on the tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (as CLIP does) and cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head attention with CLIP's parameter layout (in_proj_weight / out_proj)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, *, causal: bool = False, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, Lq, C) queries; kv: (B, Lk, C) keys/values (default x); key_mask: (B, Lk) True = keep."""
        b, lq, c = x.shape
        h = self.heads
        if kv is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            wq, wkv = self.in_proj_weight.split([c, 2 * c])
            bq, bkv = self.in_proj_bias.split([c, 2 * c])
            q = F.linear(x, wq, bq)
            k, v = F.linear(kv, wkv, bkv).chunk(2, dim=-1)
        lk = k.shape[1]
        q = q.view(b, lq, h, c // h).transpose(1, 2)  # (B, H, Lq, C/H)
        k = k.view(b, lk, h, c // h).transpose(1, 2)
        v = v.view(b, lk, h, c // h).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # bf16 autocast on the CPU: PyTorch's CPU flash-attention backward was ~4x slower in bf16
            # than in float32 at the synth-cpu-small size, so attention runs in float32 there
            with torch.autocast("cpu", enabled=False):  # else autocast casts the inputs back to bf16
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal and mask is None)
            out = out.to(q.dtype)  # (B, H, Lq, C/H)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, c))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", make_activation(activation))
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal, key_mask=key_mask)
        return x + self.mlp(self.ln_2(x))


ACTIVATIONS = ("quick_gelu", "gelu")


def make_activation(name: str) -> nn.Module:
    """CLIP's MLP activation: OpenAI's models use QuickGELU, LAION-trained open_clip models exact GELU."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, activation) for _ in range(layers)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C); key_mask (B, L) True = a real token (others are never attended to)."""
        for blk in self.resblocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, causal, key_mask, use_reentrant=False)
            else:
                x = blk(x, causal, key_mask)
        return x


class VisionTransformer(nn.Module):
    """ViT on (H, W) images: patches + class token + learned positions -> transformer."""

    def __init__(
        self, image_size: tuple[int, int], patch_size: int, width: int, layers: int, heads: int, output_dim: int, activation: str = "quick_gelu",
    ) -> None:
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
        self.image_size = (h, w)
        self.grid = (h // patch_size, w // patch_size)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid[0] * self.grid[1] + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> global (B, D) and tokens (B, 1 + N, D), both projected."""
        x = self.conv1(x.to(self.conv1.weight.dtype))  # (B, C, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1 + N, C)
        x = self.transformer(self.ln_pre(x))
        tokens = self.ln_post(x) @ self.proj  # (B, 1 + N, D)
        return tokens[:, 0], tokens


class TextTransformer(nn.Module):
    """CLIP's text encoder: token + position embeddings, causal transformer, end-token pooling.

    ``pool="mean"`` is the from-scratch variant: attention in both directions over the real tokens
    (start to end token, padding masked out) and the global embedding is their mean. It learns
    faster from little data (docs/training.md); CLIP weights need the default ``"eot"``.

    ``local_kernel`` > 0 adds a residual convolution over that many neighbouring word embeddings
    (padding zeroed) before the positions are added: every word then carries its phrase, e.g.
    "blue" knows it precedes "jacket", which one attention layer over absolute positions
    learns only for the phrase orders of the training captions (docs/training.md).
    """

    def __init__(
        self, context_length: int, vocab_size: int, width: int, layers: int, heads: int, output_dim: int, eot_id: int | None,
        pool: str = "eot", mask_token: bool = False, activation: str = "quick_gelu", position_jitter: int = 0,
        local_kernel: int = 0,
    ) -> None:
        super().__init__()
        if pool not in ("eot", "mean"):
            raise ValueError(f"text pooling must be 'eot' or 'mean', got {pool!r}")
        self.pool = pool
        self.context_length = context_length
        self.eot_id = eot_id  # None: pool at the largest id, as CLIP does (its end token is the largest)
        self.token_embedding = nn.Embedding(vocab_size, width)
        # MLM's [MASK]: one learned embedding for the id just past the vocabulary (neither CLIP's
        # vocabulary nor ours has one, and borrowing a real token would teach it two meanings)
        self.mask_id = vocab_size
        self.mask_embedding = nn.Parameter(torch.randn(width) * 0.02) if mask_token else None
        # jitter > 0: rows past the context length, reached only by training's shifted positions
        self.positional_embedding = nn.Parameter(torch.empty(context_length + position_jitter, width))
        self.local: nn.Conv1d | None = None
        if local_kernel:
            conv = nn.Conv1d(width, width, local_kernel, padding=local_kernel // 2)
            nn.init.normal_(conv.weight, std=(width * local_kernel) ** -0.5)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # Conv1d has a bias unless told otherwise
            self.local = conv
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def eot_index(self, text: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B,) position of the end token."""
        if self.eot_id is None:
            if self.mask_embedding is not None:
                text = text.masked_fill(text == self.mask_id, 0)  # the mask id is larger than CLIP's end token
            return text.argmax(dim=-1)
        return (text == self.eot_id).int().argmax(dim=-1)

    def forward(self, text: torch.Tensor, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> global (B, D) at the end token and tokens (B, L, D), both projected.

        ``offset`` (B,) int: text b's positions are offset[b] .. offset[b] + L - 1 (position
        jitter while training); None: 0 .. L - 1.
        """
        if text.shape[1] > self.context_length:
            raise ValueError(f"texts of {text.shape[1]} tokens exceed the context length {self.context_length}")
        if self.mask_embedding is not None:
            is_mask = (text == self.mask_id)[..., None]  # (B, L, 1)
            emb = self.token_embedding(text.masked_fill(is_mask[..., 0], 0))  # (B, L, C)
            emb = torch.where(is_mask, self.mask_embedding.to(emb.dtype), emb)
        else:
            emb = self.token_embedding(text)  # (B, L, C)
        eot = self.eot_index(text)  # (B,)
        real = torch.arange(text.shape[1], device=text.device)[None, :] <= eot[:, None]  # (B, L): start to end token
        if self.local is not None:
            emb = emb * real[..., None].to(emb.dtype)  # padding contributes nothing to a neighbour
            emb = emb + F.gelu(self.local(emb.transpose(1, 2)).transpose(1, 2))  # (B, L, C)
        if offset is None:
            x = emb + self.positional_embedding[: text.shape[1]]  # (B, L, C)
        else:
            if int(offset.max()) + text.shape[1] > self.positional_embedding.shape[0]:
                raise ValueError("position offsets run past the position table (text_position_jitter too small)")
            pos = offset.to(text.device)[:, None] + torch.arange(text.shape[1], device=text.device)  # (B, L)
            x = emb + F.embedding(pos, self.positional_embedding)  # (B, L, C)
        if self.pool == "mean":
            x = self.transformer(x, key_mask=real)
            tokens = self.ln_final(x) @ self.text_projection  # (B, L, D)
            w = real.to(tokens.dtype)[..., None]  # (B, L, 1)
            return (tokens * w).sum(1) / w.sum(1), tokens
        x = self.transformer(x, causal=True)
        tokens = self.ln_final(x) @ self.text_projection  # (B, L, D)
        glob = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot]
        return glob, tokens


def init_clip_like(visual: nn.Module, text: TextTransformer) -> None:
    """CLIP's initialisation of the transformer weights (std scaled by depth)."""
    towers = [getattr(m, "transformer", None) for m in (visual, text)]
    for tr in [t for t in towers if isinstance(t, Transformer)]:
        width, layers = tr.width, len(tr.resblocks)
        proj_std = (width**-0.5) * ((2 * layers) ** -0.5)
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for blk in tr.resblocks:
            assert isinstance(blk, ResidualAttentionBlock)
            nn.init.normal_(blk.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            c_fc, c_proj = blk.mlp[0], blk.mlp[2]
            assert isinstance(c_fc, nn.Linear) and isinstance(c_proj, nn.Linear)
            nn.init.normal_(c_fc.weight, std=fc_std)
            nn.init.normal_(c_proj.weight, std=proj_std)


def logit_scale_init(temperature: float = 0.07) -> torch.Tensor:
    return torch.tensor(math.log(1.0 / temperature))
