"""One optimisation step: the batch's views of its captions, the model's outputs, the losses, the update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ufinebench.config import Config
from ufinebench.distributed import all_reduce_max
from ufinebench.errors import UFineBenchError
from ufinebench.losses import DistContext, Targets, compute_losses
from ufinebench.training.augment import attribute_drop, attribute_swap, mlm_mask, modifier_order, position_offsets, token_noise
from ufinebench.training.data import TrainData
from ufinebench.training.state import TrainState
from ufinebench.vocab.tokens import attribute_targets, named_groups


class NonFiniteLossError(UFineBenchError):
    """Training met a NaN or infinite loss; the weights were not updated with it."""


def stop_if_not_finite(loss: torch.Tensor, st: TrainState) -> None:
    """Stop before a NaN / inf loss reaches the weights (every process stops together).

    The last epoch checkpoint (``checkpoints/last``) stays as it was: checkpoints are only
    written at the end of an epoch, from weights that never saw the bad step.
    """
    bad = all_reduce_max(torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0).to(loss.device))
    if float(bad) > 0:
        kept = f"the last good checkpoint is epoch {st.epoch}" if st.epoch > 0 else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"train: the loss became {float(loss.detach()):g} at epoch {st.epoch + 1}, step {st.global_step + 1}; "
            f"stopped before updating the weights ({kept}); try a lower train.lr, or check the data"
        )


@dataclass
class Views:
    """The batch's captions as each part of the model reads them (token ids, on the model's device)."""

    tokens: torch.Tensor  # (B, L) the dual encoder's (with word noise)
    match: torch.Tensor | None = None  # (B, L) the matcher's own noisy view
    swap: torch.Tensor | None = None  # (B, L) one attribute word swapped: a negative for its own image
    mlm: torch.Tensor | None = None  # (B, L) masked for IRRA's MLM
    offset: torch.Tensor | None = None  # (B,) position jitter's start positions


def _match_view(st: TrainState, data: TrainData, cfg: Config, tokens: torch.Tensor, index: torch.Tensor,
                noise: dict[str, Any]) -> torch.Tensor | None:
    """The matcher's own noisy view of the captions (None: it reads the dual encoder's)."""
    d, t = cfg.data, cfg.train
    if st.model.matcher is None or not (d.match_token_drop > 0 or d.match_token_unk > 0 or d.match_token_shuffle > 0
                                        or d.match_sentence_drop > 0 or d.match_attribute_drop > 0):
        return None
    view = token_noise(tokens, index, st.epoch, t.seed, drop=d.match_token_drop, unk=d.match_token_unk, salt=3,
                       shuffle=d.match_token_shuffle, sentence_drop=d.match_sentence_drop, sentence_end=data.sentence_end, **noise)
    if d.match_attribute_drop > 0:
        assert data.attribute_table is not None  # checked when the data was set up
        view = attribute_drop(view, index, st.epoch, t.seed, data.attribute_table, d.match_attribute_drop, pad_id=noise["pad_id"])
    return view


def batch_views(st: TrainState, data: TrainData, cfg: Config, batch: dict[str, Any], targets: Targets) -> Views:
    """Every view of the batch's captions the model reads, and the caption-derived targets (filled into ``targets``)."""
    d, t, tok, device = cfg.data, cfg.train, data.tokenizer, st.device
    index = batch["index"]
    noise = {"unk_id": getattr(tok, "unk_id", None), "specials": {tok.sot_id, tok.eot_id, tok.pad_id}, "pad_id": tok.pad_id}
    tokens = batch["tokens"]
    if d.modifier_order > 0:  # before every other view, so all of them read the reordered caption
        tokens = modifier_order(tokens, index, st.epoch, t.seed, data.phrase_words, d.modifier_order)
    match = _match_view(st, data, cfg, tokens, index, noise)
    table = data.attribute_table
    if st.model.matcher is not None and t.match_negatives == "contradicting":  # what each view names, what each caption names
        assert table is not None
        targets.match_view_groups = named_groups(tokens if match is None else match, table).to(device)
        targets.caption_groups = named_groups(tokens, table).to(device)
    if d.attribute_words:  # the attribute words of the clean caption, for the image's word head
        assert table is not None
        target, known = attribute_targets(tokens, table, d.attribute_pairs)
        targets.word_target, targets.word_known = target.to(device), known.to(device)
    views = Views(tokens)
    if d.attribute_swap:  # the clean caption with one attribute word swapped: a negative for its own image
        assert table is not None  # checked when the data was set up
        swap, ok = attribute_swap(tokens, index, st.epoch, t.seed, table)
        views.swap, targets.swap_ok = swap.to(device), ok.to(device)
    if d.token_drop > 0 or d.token_unk > 0:
        tokens = token_noise(tokens, index, st.epoch, t.seed, drop=d.token_drop, unk=d.token_unk, **noise)
    views.tokens = tokens.to(device, non_blocking=True)
    views.match = match.to(device) if match is not None else None
    if cfg.model.mlm:
        masked, labels = mlm_mask(tokens, index, st.epoch, t.seed, st.model.text.mask_id, tok.vocab_size,  # its own [MASK]
                                  {tok.sot_id, tok.eot_id, tok.pad_id})
        views.mlm, targets.mlm_labels = masked.to(device), labels.to(device)
    jitter = st.model.cfg.text_position_jitter
    views.offset = position_offsets(index, st.epoch, t.seed, jitter).to(device) if jitter > 0 else None  # (B,)
    return views


def train_step(st: TrainState, data: TrainData, cfg: Config, batch: dict[str, Any], world: int) -> dict[str, torch.Tensor]:
    """One optimisation step on one (local share of a global) batch; returns the losses."""
    t, model, device = cfg.train, st.model, st.device
    images = batch["image"].to(device, non_blocking=True)
    length = all_reduce_max(torch.tensor(int(model.text.eot_index(batch["tokens"]).max()) + 1))  # every process trims to one length
    batch["tokens"] = batch["tokens"][:, : int(length)]
    targets = Targets(batch["person_id"].to(device), batch["label"].to(device))
    views = batch_views(st, data, cfg, batch, targets)
    ctx = DistContext.from_process_group(t.seed, st.global_step) if world > 1 else DistContext(seed=t.seed, step=st.global_step)
    with torch.autocast(device_type=device.type, dtype=st.amp_dtype, enabled=st.amp_dtype is not None):
        out = st.ddp(images, views.tokens, views.mlm, views.offset, views.match, views.swap)
        losses = compute_losses(model, out, targets, t.loss_weights, ctx, global_loss=t.global_loss, match_candidates=t.match_candidates)
    stop_if_not_finite(losses["loss"], st)
    st.opt.zero_grad(set_to_none=True)
    st.scaler.scale(losses["loss"] * world).backward()
    if t.grad_clip > 0:
        st.scaler.unscale_(st.opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    st.scaler.step(st.opt)
    st.scaler.update()
    st.sched.step()
    st.global_step += 1
    return losses
