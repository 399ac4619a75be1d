"""Losses against naive formulas; negatives never of the same person."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ufinebench.losses import DistContext, Targets, compute_losses, granular_similarity, match_rank_loss, sample_negatives, sdm_loss, swap_losses
from ufinebench.model.cfam import ModelConfig, RetrievalModel


def _naive_sdm(a, b, ids, scale, eps=1e-8):
    total = 0.0
    n = a.shape[0]
    for i in range(n):
        logits = [scale * float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(b.shape[0])]
        m = max(logits)
        z = sum(math.exp(x - m) for x in logits)
        p = [math.exp(x - m) / z for x in logits]
        match = [1.0 if ids[i] == ids[j] else 0.0 for j in range(b.shape[0])]
        q = [x / sum(match) for x in match]
        total += sum(pi * (math.log(pi) - math.log(qi + eps)) for pi, qi in zip(p, q, strict=False))
    return total / n


def test_sdm_matches_naive_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    ids = torch.tensor([1, 1, 2, 3, 3, 3, 4])
    got = sdm_loss(a, b, ids, ids, torch.tensor(10.0), 7)
    assert float(got) == pytest.approx(_naive_sdm(a, b, ids.tolist(), 10.0), rel=1e-5)


def test_sdm_split_over_processes_sums_to_the_whole():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    whole = sdm_loss(a, b, ids, ids, torch.tensor(5.0), 8)
    parts = sum(sdm_loss(a[i : i + 4], b, ids[i : i + 4], ids, torch.tensor(5.0), 8) for i in (0, 4))
    assert torch.allclose(whole, parts, atol=1e-6)


def test_granular_similarity_naive():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 4, 6, generator=g), torch.randn(5, 4, 6, generator=g)
    got = granular_similarity(a, b)
    for i in range(3):
        for j in range(5):
            want = sum(float(F.cosine_similarity(a[i, k], b[j, k], dim=0)) for k in range(4)) / 4
            assert float(got[i, j]) == pytest.approx(want, abs=1e-6)


def test_negatives_follow_the_cdf_and_skip_same_identity():
    sim = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    same = torch.tensor([[True, False, False, True], [True, True, True, True]])
    w = torch.softmax(sim[0], 0) * torch.tensor([0.0, 1.0, 1.0, 0.0])
    cut = float(w[1] / w.sum())
    idx, ok = sample_negatives(sim, same, torch.tensor([cut - 1e-4, 0.5]))
    assert idx[0] == 1 and ok.tolist() == [True, False]
    idx, _ = sample_negatives(sim, same, torch.tensor([cut + 1e-4, 0.5]))
    assert idx[0] == 2


def test_compute_losses_has_every_part_and_id_loss_is_cross_entropy():
    cfg = ModelConfig(arch="cfam", embed_dim=16, image_size=(32, 16), patch_size=16, vision_width=32, vision_layers=1, vision_heads=2,
                      context_length=12, vocab_size=50, text_width=32, text_layers=1, text_heads=2, num_classes=3, num_queries=4,
                      decoder_layers=1, decoder_heads=2, matcher_layers=1, mlm=True)
    torch.manual_seed(0)
    model = RetrievalModel(cfg)
    img = torch.randn(6, 3, 32, 16)
    txt = torch.randint(1, 48, (6, 12))
    txt[:, 8] = 49
    ids = torch.tensor([5, 5, 6, 6, 7, 7])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    mlm_labels = torch.full_like(txt, -100)
    mlm_labels[:, 2] = txt[:, 2]
    out = model(img, txt, txt)
    losses = compute_losses(model, out, Targets(ids, labels, mlm_labels), {"granularity": 0.5, "match": 2.0, "id": 1.0, "mlm": 0.1}, DistContext())
    for k in ("sdm_loss", "granularity_loss", "match_loss", "id_loss", "mlm_loss", "loss"):
        assert torch.isfinite(losses[k]), k
    # IRRA's definition: the mean of the image-side and text-side cross-entropies
    want_id = (F.cross_entropy(out["image_id_logits"], labels) + F.cross_entropy(out["text_id_logits"], labels)) / 2
    assert torch.allclose(losses["id_loss"], want_id, atol=1e-6)
    total = losses["sdm_loss"] + 0.5 * losses["granularity_loss"] + 2.0 * losses["match_loss"] + losses["id_loss"] + 0.1 * losses["mlm_loss"]
    assert torch.allclose(losses["loss"], total, atol=1e-6)
    losses["loss"].backward()
    assert model.matcher.head[0].weight.grad is not None and model.granularity.queries.grad is not None
    base = RetrievalModel(ModelConfig(**{**cfg.__dict__, "arch": "clip-sdm", "mlm": False}))
    assert base.granularity is None and base.matcher is None and base.classifier is None


def _tiny_matcher_model(num_classes: int) -> RetrievalModel:
    """A seeded tiny CFAM (mean-pooled text, end token 49) in eval mode, for the matcher's tests."""
    cfg = ModelConfig(arch="cfam", embed_dim=16, image_size=(32, 16), patch_size=16, vision_width=32, vision_layers=1, vision_heads=2,
                      context_length=12, vocab_size=50, text_width=32, text_layers=1, text_heads=2, num_classes=num_classes, num_queries=4,
                      decoder_layers=1, decoder_heads=2, matcher_layers=1, eot_id=49, text_pool="mean")
    torch.manual_seed(0)
    return RetrievalModel(cfg).eval()


def test_the_matchers_noisy_view_reaches_the_matcher_only():
    """``forward(..., match_text=...)``: the matcher's inputs are the encoding of the noisy captions,
    the retrieval side keeps the clean ones."""
    model = _tiny_matcher_model(num_classes=3)
    img = torch.randn(5, 3, 32, 16)
    txt = torch.randint(1, 48, (5, 12))
    txt[:, 9] = 49
    noisy = txt.clone()
    noisy[:, 2:5] = 1  # three words hidden
    with torch.no_grad():
        clean = model(img, txt)
        out = model(img, txt, match_text=noisy)
        want_seq, want_mask = model.text_match_inputs(model.encode_text(noisy, trim=False))
    for k in ("text_global", "text_tokens", "text_granular", "image_global"):  # retrieval side untouched
        assert torch.equal(out[k], clean[k]), k
    assert torch.allclose(out["text_match"], want_seq, atol=1e-6) and torch.equal(out["text_match_mask"], want_mask)
    assert not torch.allclose(out["text_match"], clean["text_match"], atol=1e-3)  # the noise reached the matcher


def test_match_rank_loss_is_cross_entropy_over_the_true_image_and_its_nearest_look_alikes():
    """Naive recomputation: for each caption, the matcher's logits for its own image and for the
    k - 1 other-identity images nearest by the dual encoder; cross-entropy with the own image first."""
    model = _tiny_matcher_model(num_classes=4)
    img = torch.randn(8, 3, 32, 16)
    txt = torch.randint(1, 48, (8, 12))
    txt[:, 9] = 49
    ids = torch.tensor([1, 1, 2, 2, 3, 3, 4, 5])
    out = model(img, txt)
    for k in (2, 4, 20):  # 20: more candidates than other identities (6 at most): the rest masked
        got = match_rank_loss(model, out, ids, ids, DistContext(), 8, k)
        ti = F.normalize(out["text_global"], dim=-1) @ F.normalize(out["image_global"], dim=-1).T  # (8, 8)
        total = 0.0
        for i in range(8):
            others = [j for j in range(8) if ids[j] != ids[i]]
            near = sorted(others, key=lambda j: -float(ti[i, j].detach()))[: min(k - 1, 7)]
            cand = [i, *near]
            lg = torch.stack([model.match_logits(out["text_match"][i : i + 1], out["text_match_mask"][i : i + 1],
                                                 out["image_tokens"][j : j + 1])[0] for j in cand]).float()
            total += float(-torch.log_softmax(lg, 0)[0])
        assert abs(float(got) - total / 8) < 1e-4, k
    got.backward()
    assert model.matcher.head[0].weight.grad is not None  # it trains the matcher
    weights = {"granularity": 1.0, "match": 1.0, "id": 0.0, "mlm": 0.0}
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert "match_rank_loss" not in compute_losses(model, model(img, txt), Targets(ids, labels), weights)  # off unless weighted
    both = compute_losses(model, model(img, txt), Targets(ids, labels), {**weights, "match_rank": 0.5}, match_candidates=4)
    assert torch.allclose(both["match_rank_loss"], match_rank_loss(model, model(img, txt), ids, ids, DistContext(), 8, 4), atol=1e-5)
    want = both["sdm_loss"] + both["granularity_loss"] + both["match_loss"] + 0.5 * both["match_rank_loss"]
    assert torch.allclose(both["loss"], want, atol=1e-5)


def test_swap_losses_push_each_image_away_from_its_swapped_caption():
    """data.attribute_swap: ``swap_loss`` = softplus(s (cos(i, swap) - cos(i, own))) and ``swap_match_loss`` =
    BCE(matcher(swap, i), 0), over the captions that had a word to swap; a step on them lowers both."""
    model = _tiny_matcher_model(num_classes=3)  # eval mode: no dropout, gradients still flow
    img = torch.randn(4, 3, 32, 16)
    txt = torch.randint(1, 48, (4, 12))
    txt[:, 9] = 49
    swap = txt.clone()
    swap[:, 3] = (swap[:, 3] + 7) % 48 + 1  # one word changed
    ok = torch.tensor([True, True, False, True])
    out = model(img, txt, swap_text=swap)
    got = swap_losses(model, out, ok, n_total=4)
    i = F.normalize(out["image_global"].float(), dim=-1)
    own = (i * F.normalize(out["text_global"].float(), dim=-1)).sum(-1)
    sw = (i * F.normalize(out["swap_global"].float(), dim=-1)).sum(-1)
    want = sum(math.log1p(math.exp(float(out["logit_scale"]) * float(sw[r] - own[r]))) for r in (0, 1, 3)) / 4
    assert abs(float(got["swap_loss"]) - want) < 1e-5
    logit = model.match_logits(out["swap_match"], out["swap_match_mask"], out["image_tokens"]).float()
    want_m = sum(math.log1p(math.exp(float(logit[r]))) for r in (0, 1, 3)) / 4
    assert abs(float(got["swap_match_loss"]) - want_m) < 1e-5
    total = compute_losses(model, out, Targets(torch.arange(4), torch.arange(4) % 3, swap_ok=ok), {"swap": 1.0, "swap_match": 1.0},
                           global_loss="infonce")
    assert "swap_loss" in total and "swap_match_loss" in total
    for key in ("swap_loss", "swap_match_loss"):  # a small step on either lowers it
        model = _tiny_matcher_model(num_classes=3)
        out = model(img, txt, swap_text=swap)
        before = swap_losses(model, out, ok, n_total=4)[key]
        before.backward()
        torch.optim.SGD(model.parameters(), lr=0.02).step()
        after = model(img, txt, swap_text=swap)
        assert float(swap_losses(model, after, ok, n_total=4)[key]) < float(before), key


def test_words_loss_is_the_mean_bce_over_the_groups_of_named_classes():
    """data.attribute_words: per caption, the mean binary cross-entropy over the groups whose class
    it names (the rest masked), summed over captions / n_total; a model config sets the head's size."""
    model = RetrievalModel(dataclasses.replace(_tiny_matcher_model(num_classes=3).cfg, attribute_words=6)).eval()
    img = torch.randn(2, 3, 32, 16)
    txt = torch.randint(1, 48, (2, 12))
    txt[:, 9] = 49
    out = model(img, txt)
    assert out["image_word_logits"].shape == (2, 6)
    target = torch.tensor([[1.0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])
    known = torch.tensor([[True, True, True, True, False, False], [True, True, False, False, False, False]])
    got = compute_losses(model, out, Targets(torch.arange(2), torch.arange(2), word_target=target, word_known=known), {"words": 1.0},
                         global_loss="infonce")["words_loss"]
    z = out["image_word_logits"].float()
    bce = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    want = (bce[0, :4].mean() + bce[1, :2].mean()) / 2
    assert abs(float(got) - float(want)) < 1e-6


def test_contradicting_negatives_exclude_look_alikes_that_fit_a_shortened_view(monkeypatch):
    """train.match_negatives: contradicting: a caption's negative image must be one whose caption lacks
    a named word the caption's view names (and an image's negative caption one whose view names a
    word the image's caption lacks); without the groups only the identity rules."""
    import ufinebench.losses as L

    model = _tiny_matcher_model(num_classes=4)
    img = torch.randn(5, 3, 32, 16)
    txt = torch.randint(1, 48, (5, 12))
    txt[:, 9] = 49
    ids = torch.tensor([1, 2, 3, 4, 4])
    cap = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)  # (5, G): what each caption names
    view = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)  # (5, G): its shortened view
    masks: list[torch.Tensor] = []
    real = L.sample_negatives
    monkeypatch.setattr(L, "sample_negatives", lambda sim, same, u: (masks.append(same.clone()), real(sim, same, u))[1])
    out = model(img, txt)
    L._match_loss(model, out, ids, ids, DistContext(), 5)
    assert torch.equal(masks[0], ids[:, None] == ids[None, :]) and torch.equal(masks[1], masks[0])  # identity only
    masks.clear()
    L._match_loss(model, out, ids, ids, DistContext(), 5, view, cap)
    for i in range(5):
        for j in range(5):
            fits = all(cap[j, g] or not view[i, g] for g in range(3))  # image j's caption has every word text i's view names
            assert bool(masks[0][i, j]) == bool(ids[i] == ids[j] or fits), ("text", i, j)
            fits_t = all(cap[i, g] or not view[j, g] for g in range(3))  # text j's view names nothing image i's caption lacks
            assert bool(masks[1][i, j]) == bool(ids[i] == ids[j] or fits_t), ("image", i, j)
    assert masks[0][0].tolist() == [True, False, True, True, True]  # "names group 1": only image 1's caption lacks it
    assert masks[0][4].all()  # an empty view contradicts nobody: no negative image for text 4
    assert masks[1][3].all()  # image 3's caption names every group: no view contradicts it
