"""Training losses over the model's named outputs: SDM, granularity SDM, identity, matching, MLM.

All losses see the *global* batch. Each process holds ``n`` local anchors; candidates (the other
modality's embeddings, tokens for hard negatives) are gathered from every process with gradients
(``torch.distributed.nn.functional.all_gather``). A loss returns the sum over local anchors
divided by the global count, so summing it over processes gives exactly the single-process loss;
the trainer multiplies by the number of processes before backward because DDP averages
gradients. With one process nothing is gathered.

SDM (IRRA, Jiang & Ye, CVPR 2023): with p_i = softmax over candidates of scale * cos(a_i, b_j)
and q_i the true-match distribution (same person id = match, normalised),
loss = mean_i KL(p_i || q_i), in both directions (image->text and text->image).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dnn
import torch.nn.functional as F

from ufinebench.model.cfam import ModelOutputs

EPS = 1e-8


@dataclass
class Targets:
    """What the losses compare a batch's model outputs with: the trainer builds it from the batch.

    ``ids`` (n,) raw person ids (define matches); ``labels`` (n,) contiguous classifier labels;
    ``mlm_labels`` (n, L) masked-token targets (-100: not predicted); ``swap_ok`` (n,) bool: the
    caption's attribute-swapped copy differs from it (``data.attribute_swap``); ``word_target`` /
    ``word_known`` (n, G [+ P]): the attribute groups [and colour-garment pairs] the caption names and
    those its classes make known (``data.attribute_words``); ``match_view_groups`` / ``caption_groups``
    (n, G) bool: what the matcher's view and the caption name (``train.match_negatives: contradicting``).
    """

    ids: torch.Tensor
    labels: torch.Tensor
    mlm_labels: torch.Tensor | None = None
    swap_ok: torch.Tensor | None = None
    word_target: torch.Tensor | None = None
    word_known: torch.Tensor | None = None
    match_view_groups: torch.Tensor | None = None
    caption_groups: torch.Tensor | None = None


@dataclass
class DistContext:
    """What the losses need to know about the process group (defaults: a single process)."""

    world_size: int = 1
    rank: int = 0
    seed: int = 0
    step: int = 0
    gather_grad: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    gather: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)

    @classmethod
    def from_process_group(cls, seed: int, step: int) -> DistContext:
        """The context of the current torch.distributed process group."""
        world, rank = dist.get_world_size(), dist.get_rank()

        def gather_grad(t: torch.Tensor) -> torch.Tensor:
            flat = t.reshape(t.shape[0], -1).contiguous()  # gathered as 2-D rows (see tests/test_train.py)
            return torch.cat(dnn.all_gather(flat), dim=0).reshape(-1, *t.shape[1:])

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(parts, t.contiguous())
            return torch.cat(parts, dim=0)

        def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            dist.all_reduce(t)
            return t

        return cls(world, rank, seed, step, gather_grad, gather, all_reduce_sum)


def sdm_from_logits(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Sum over rows of KL(softmax(logits_i) || match_i / sum(match_i)). logits, match: (n, N)."""
    q = match.float() / match.float().sum(dim=1, keepdim=True).clamp_min(EPS)
    logp = F.log_softmax(logits.float(), dim=1)
    return (logp.exp() * (logp - torch.log(q + EPS))).sum()


def infonce_from_logits(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Sum over rows of the cross-entropy -sum_j q_ij log softmax(logits_i)_j, q_i = match_i normalised.

    InfoNCE whose target spreads over every same-identity candidate (CLIP's loss when each row
    has one match). Unlike SDM's KL(p || q) it never takes log(0 + eps) of a target, so its
    gradient stays informative when the model starts from random weights.
    """
    q = match.float() / match.float().sum(dim=1, keepdim=True).clamp_min(EPS)
    return -(q * F.log_softmax(logits.float(), dim=1)).sum()


GLOBAL_LOSSES = {"sdm": sdm_from_logits, "infonce": infonce_from_logits}


def sdm_loss(
    a_local: torch.Tensor, b_all: torch.Tensor, ids_local: torch.Tensor, ids_all: torch.Tensor, scale: torch.Tensor, n_total: int,
    kind: str = "sdm",
) -> torch.Tensor:
    """One direction of the global alignment (SDM, or ``kind="infonce"``): local anchors (n, D)
    against all candidates (N, D); / n_total."""
    logits = scale * F.normalize(a_local.float(), dim=-1) @ F.normalize(b_all.float(), dim=-1).T  # (n, N)
    return GLOBAL_LOSSES[kind](logits, ids_local[:, None] == ids_all[None, :]) / n_total


def granular_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, K, D), (N, K, D) -> (n, N): mean over the K queries of the per-query cosine."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    return torch.einsum("ikd,jkd->ij", a, b) / a.shape[1]


def id_loss(logits: torch.Tensor, labels: torch.Tensor, n_total: int) -> torch.Tensor:
    """Cross-entropy of the identity classifier, summed over local items, / n_total.

    ``compute_losses`` averages this over the image and the text side, as IRRA does (a shared
    classifier; loss = (CE(image) + CE(text)) / 2, IRRA's ``compute_id``).
    """
    return F.cross_entropy(logits.float(), labels, reduction="sum") / n_total


def sample_negatives(sim: torch.Tensor, same: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one negative per row in proportion to softmax(sim), never of the same identity.

    sim, same: (n, N); uniforms: (n,) in [0, 1). Returns (indices (n,), valid (n,) bool): a row
    whose candidates all share its identity has no negative.
    """
    w = torch.softmax(sim.float(), dim=1).masked_fill(same, 0.0)
    total = w.sum(dim=1)
    valid = total > 0
    cdf = torch.cumsum(w, dim=1)
    target = (uniforms * total).unsqueeze(1)
    idx = torch.searchsorted(cdf, target).squeeze(1).clamp_max(sim.shape[1] - 1)
    return idx, valid


def compute_losses(
    model: torch.nn.Module, out: ModelOutputs, targets: Targets, weights: dict[str, float], ctx: DistContext | None = None,
    global_loss: str = "sdm", match_candidates: int = 8,
) -> dict[str, torch.Tensor]:
    """All losses the model's parts call for, plus ``loss`` (their weighted sum).

    ``out``: the model's named outputs (``RetrievalModel.forward``); ``targets``: the batch's :class:`Targets`.
    ``global_loss`` (``sdm`` or ``infonce``) is the form of the global and granularity alignment;
    the key stays ``sdm_loss`` / ``granularity_loss`` either way.
    """
    ctx = ctx or DistContext()
    ids, labels, mlm_labels = targets.ids, targets.labels, targets.mlm_labels
    n = ids.shape[0]
    n_total = n * ctx.world_size
    ids_all = ctx.gather(ids)
    scale = out["logit_scale"]
    img_l, txt_l = out["image_global"], out["text_global"]
    img_all, txt_all = ctx.gather_grad(img_l), ctx.gather_grad(txt_l)
    losses: dict[str, torch.Tensor] = {
        "sdm_loss": sdm_loss(img_l, txt_all, ids, ids_all, scale, n_total, global_loss)
        + sdm_loss(txt_l, img_all, ids, ids_all, scale, n_total, global_loss)
    }
    if "image_granular" in out:
        gi, gt = out["image_granular"], out["text_granular"]
        gi_all, gt_all = ctx.gather_grad(gi), ctx.gather_grad(gt)
        same = ids[:, None] == ids_all[None, :]
        align = GLOBAL_LOSSES[global_loss]
        losses["granularity_loss"] = (
            align(scale * granular_similarity(gi, gt_all), same) + align(scale * granular_similarity(gt, gi_all), same)
        ) / n_total
    if "image_id_logits" in out:
        # as IRRA defines it (objectives.compute_id): the mean of the image and the text cross-entropy
        losses["id_loss"] = (id_loss(out["image_id_logits"], labels, n_total) + id_loss(out["text_id_logits"], labels, n_total)) / 2
    if getattr(model, "matcher", None) is not None:
        losses["match_loss"] = _match_loss(model, out, ids, ids_all, ctx, n_total, targets.match_view_groups, targets.caption_groups)
        if weights.get("match_rank", 0.0) > 0:
            losses["match_rank_loss"] = match_rank_loss(model, out, ids, ids_all, ctx, n_total, match_candidates)
    if "swap_global" in out and targets.swap_ok is not None:
        losses.update(swap_losses(model, out, targets.swap_ok, n_total))
    if "image_word_logits" in out and targets.word_target is not None and targets.word_known is not None:
        # binary cross-entropy of the image's word head, averaged over the groups whose class the caption names
        bce = F.binary_cross_entropy_with_logits(out["image_word_logits"].float(), targets.word_target.float(), reduction="none")  # (n, G)
        known = targets.word_known.float()  # (n, G)
        losses["words_loss"] = ((bce * known).sum(1) / known.sum(1).clamp_min(1.0)).sum() / n_total
    if "mlm_logits" in out and mlm_labels is not None:
        count = ctx.all_reduce_sum((mlm_labels != -100).sum().float()).clamp_min(1.0)
        ce = F.cross_entropy(out["mlm_logits"].float().flatten(0, 1), mlm_labels.flatten(), ignore_index=-100, reduction="sum")
        losses["mlm_loss"] = ce / count
    total = losses["sdm_loss"]
    for name, key in (("granularity", "granularity_loss"), ("match", "match_loss"), ("match_rank", "match_rank_loss"), ("id", "id_loss"),
                      ("mlm", "mlm_loss"), ("swap", "swap_loss"), ("swap_match", "swap_match_loss"),
                      ("words", "words_loss")):
        if key in losses:
            total = total + weights.get(name, 1.0) * losses[key]
    losses["loss"] = total
    return losses


def swap_losses(model: Any, out: ModelOutputs, swap_ok: torch.Tensor, n_total: int) -> dict[str, torch.Tensor]:
    """Losses on each caption's attribute-swapped copy (``data.attribute_swap``), which no longer fits its image.

    ``swap_loss``: the image must prefer its own caption to the copy, softplus(s * (cos(i, swap) -
    cos(i, own))) (a two-way softmax; the batch's other captions are already in the global loss);
    ``swap_match_loss`` (with a matcher): binary cross-entropy of the matcher calling the copy a
    mismatch. Both summed over the captions that have an attribute word (``swap_ok`` (n,) bool), / n_total.
    """
    ok = swap_ok.float()  # (n,)
    img = F.normalize(out["image_global"].float(), dim=-1)  # (n, D)
    own = (img * F.normalize(out["text_global"].float(), dim=-1)).sum(-1)  # (n,)
    swap = (img * F.normalize(out["swap_global"].float(), dim=-1)).sum(-1)  # (n,)
    res = {"swap_loss": (F.softplus(out["logit_scale"].float() * (swap - own)) * ok).sum() / n_total}
    if "swap_match" in out and getattr(model, "matcher", None) is not None:
        logit = model.match_logits(out["swap_match"], out["swap_match_mask"], out["image_tokens"]).float()  # (n,)
        res["swap_match_loss"] = (F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit), reduction="none") * ok).sum() / n_total
    return res


def match_rank_loss(
    model: Any, out: ModelOutputs, ids: torch.Tensor, ids_all: torch.Tensor, ctx: DistContext, n_total: int, candidates: int,
) -> torch.Tensor:
    """Cross-entropy of the matcher over each caption's own image and its ``candidates - 1`` nearest
    other-identity images in the (gathered) batch, nearest by the dual encoder.

    Why: re-ranking asks the matcher to order the dual encoder's top k, a list of look-alikes;
    the binary loss of :func:`_match_loss` sees one sampled negative at a time and falls to ~0.09
    in the demo, while this loss ranks the batch's hardest look-alikes against the truth. Rows
    with fewer other identities than ``candidates - 1`` mask the missing places. Off in the
    preset: on the demo's data it fell to ~0.12 as well and cost val R1 (docs/training.md).
    """
    n = ids.shape[0]
    it, tt, tm = out["image_tokens"], out["text_match"], out["text_match_mask"]  # (n, 1+P, D), (n, L, D), (n, L)
    it_all = ctx.gather_grad(it)  # (N, 1+P, D)
    with torch.no_grad():
        img_all = F.normalize(ctx.gather(out["image_global"].detach()).float(), dim=-1)  # (N, D)
        txt = F.normalize(out["text_global"].detach().float(), dim=-1)  # (n, D)
        same = ids[:, None] == ids_all[None, :]  # (n, N)
        k = max(1, min(candidates - 1, ids_all.shape[0] - 1))
        near, neg = (txt @ img_all.T).masked_fill(same, -math.inf).topk(k, dim=1)  # (n, k) each
        ok = torch.isfinite(near)  # (n, k)
    pos = model.match_logits(tt, tm, it)  # (n,)
    negs = model.match_logits(tt.repeat_interleave(k, 0), tm.repeat_interleave(k, 0), it_all[neg.flatten()]).view(n, k)  # (n, k)
    logits = torch.cat([pos[:, None], negs], dim=1).float().masked_fill(torch.cat([torch.ones_like(ok[:, :1]), ok], 1).logical_not(), -math.inf)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=logits.device), reduction="sum") / n_total


def _match_loss(
    model: Any, out: ModelOutputs, ids: torch.Tensor, ids_all: torch.Tensor, ctx: DistContext, n_total: int,
    view_groups: torch.Tensor | None = None, caption_groups: torch.Tensor | None = None,
) -> torch.Tensor:  # model: a RetrievalModel (its match_logits)
    """BCE of the matcher on positives and on one hard negative per anchor in each direction.

    With ``view_groups`` / ``caption_groups`` (B, G) bool (``train.match_negatives:
    contradicting``): a caption's negative image must be one whose caption lacks a named attribute
    word the matcher's view of it names, and an image's negative caption one whose view names a word
    the image's caption lacks. A shortened view ("a man in sandals") fits every look-alike whose
    caption has all its words; calling those mismatches taught the matcher nothing it could see.
    """
    n = ids.shape[0]
    it, tt, tm = out["image_tokens"], out["text_match"], out["text_match_mask"]
    it_all, tt_all = ctx.gather_grad(it), ctx.gather_grad(tt)
    tm_all = ctx.gather(tm)
    with torch.no_grad():
        img_all = F.normalize(ctx.gather(out["image_global"].detach()).float(), dim=-1)
        txt_all = F.normalize(ctx.gather(out["text_global"].detach()).float(), dim=-1)
        lo = ctx.rank * n
        same = ids[:, None] == ids_all[None, :]  # (n, N)
        same_t = same
        if view_groups is not None and caption_groups is not None:
            view, cap = view_groups, caption_groups  # (n, G) bool each
            view_all, cap_all = ctx.gather(view.to(torch.uint8)).bool(), ctx.gather(cap.to(torch.uint8)).bool()  # (N, G)
            same = same | ~(view[:, None, :] & ~cap_all[None, :, :]).any(-1)  # (n, N): image j's caption has every word text i's view names
            same_t = same_t | ~(view_all[None, :, :] & ~cap[:, None, :]).any(-1)  # (n, N): text k's view names nothing image i's caption lacks
        gen = torch.Generator(device="cpu").manual_seed(ctx.seed * 1_000_003 + ctx.step)
        u = torch.rand(2, n * ctx.world_size, generator=gen)[:, lo : lo + n].to(ids.device)  # same draws on every process
        scale = out["logit_scale"].detach()
        neg_img, ok_i = sample_negatives(scale * txt_all[lo : lo + n] @ img_all.T, same, u[0])  # for each local text
        neg_txt, ok_t = sample_negatives(scale * img_all[lo : lo + n] @ txt_all.T, same_t, u[1])  # for each local image
    pos = model.match_logits(tt, tm, it)
    logit_ti = model.match_logits(tt, tm, it_all[neg_img])
    logit_it = model.match_logits(tt_all[neg_txt], tm_all[neg_txt], it)
    loss = F.binary_cross_entropy_with_logits(pos.float(), torch.ones_like(pos, dtype=torch.float32), reduction="sum")
    zeros_ti = torch.zeros_like(logit_ti, dtype=torch.float32)
    loss = loss + (F.binary_cross_entropy_with_logits(logit_ti.float(), zeros_ti, reduction="none") * ok_i).sum()
    zeros_it = torch.zeros_like(logit_it, dtype=torch.float32)
    loss = loss + (F.binary_cross_entropy_with_logits(logit_it.float(), zeros_it, reduction="none") * ok_t).sum()
    return loss / (3 * n_total)
