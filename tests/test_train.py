"""Training: learning, kill-and-resume to identical weights, 2-process DDP equal to 1 process."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import ufinebench.training.step as step_mod
from ufinebench.config import load_config
from ufinebench.model.cfam import ModelConfig, RetrievalModel
from ufinebench.model.checkpoint import from_checkpoint, resolve_checkpoint
from ufinebench.training import NonFiniteLossError, train
from ufinebench.training.augment import attribute_drop, attribute_swap, modifier_order, position_offsets, token_noise
from ufinebench.training.data import held_out_identities
from ufinebench.training.optim import cpu_amp_dtype, deterministic_cpu
from ufinebench.vocab import load_vocabulary
from ufinebench.vocab.tokens import AttributeTable, PhraseWords, attribute_pairs, attribute_targets, named_groups

TINY_MODEL = [
    "model.embed_dim=32", "model.image_size=64x32", "model.patch_size=16", "model.vision_width=32", "model.vision_layers=1",
    "model.vision_heads=2", "model.context_length=112", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
    "model.num_queries=4", "model.decoder_layers=1", "model.decoder_heads=2", "model.matcher_layers=1",
]

VOCAB = load_vocabulary("ufine-synth-1")  # the attribute vocabulary of UFine-Synth's captions


def _cfg(ds, out, *extra):
    return load_config("synth-cpu-small", TINY_MODEL + [
        f"data.dataset={ds / 'ufine_synth.json'}", f"train.out_dir={out}", "data.workers=0", "data.bpe_vocab_size=300",
        "train.batch_size=8", "train.epochs=2", "train.max_steps_per_epoch=3", "train.eval_every=1", "train.log_every=1",
        "data.erase_prob=0.5", "train.tensorboard=false", *extra,
    ])


def _weights(run):
    return load_file(str(resolve_checkpoint(run, "last") / "model.safetensors"))


def test_train_writes_checkpoints_and_rebuilds_from_them(tiny_synth, tmp_path):
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.tensorboard=true"), progress=False)
    ck = run / "checkpoints"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (ck / "last").read_text() == "epoch_0002" and (ck / "best" / "model.safetensors").is_file()
    assert (run / "log.jsonl").read_text().count('"kind": "epoch"') == 2
    loaded = from_checkpoint(run)
    assert loaded.model.cfg.arch == "cfam" and loaded.transform.size == (64, 32)
    toks = loaded.tokenizer.encode(["a man in a black jacket"], loaded.context_length)
    with torch.no_grad():
        assert loaded.model.retrieval_features(loaded.model.encode_text(toks)).shape[0] == 1
    with pytest.raises(Exception, match="already holds a run"):
        train(_cfg(tiny_synth, tmp_path / "run"), progress=False)


def test_kill_and_resume_gives_identical_weights(tiny_synth, tmp_path, monkeypatch):
    full = train(_cfg(tiny_synth, tmp_path / "full"), progress=False)
    real = step_mod.compute_losses

    def dying(*args, **kwargs):
        ctx = args[4] if len(args) > 4 else kwargs.get("ctx")
        if ctx is not None and ctx.step == 4:  # the second step of epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(step_mod, "compute_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_synth, tmp_path / "killed"), progress=False)
    monkeypatch.setattr(step_mod, "compute_losses", real)
    assert (tmp_path / "killed" / "checkpoints" / "last").read_text() == "epoch_0001"
    train(resume=tmp_path / "killed", progress=False)
    a, b = _weights(full), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_threads_gives_bit_identical_weights(tiny_synth, tmp_path):
    """Determinism as stated in docs/reliability.md: at a fixed thread count, a CPU run repeats bit for bit.

    The full recipe path: conv tower, word tokenizer, in-memory image store, batch augmentation
    (flip, shift, erasing) and a data-loading worker process. (Across different thread counts,
    results differ by float summation order; that is not claimed.)
    """
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [train(_cfg(tiny_synth, tmp_path / f"r{i}", "train.eval_every=0", "data.workers=1", "model.vision=conv",
                             "data.tokenizer=word", "data.hflip=true"), progress=False) for i in range(2)]
    finally:
        torch.set_num_threads(before)
    a, b = _weights(runs[0]), _weights(runs[1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = ([json.loads(x) for x in (r / "log.jsonl").read_text().splitlines() if '"kind": "train"' in x] for r in runs)
    assert [x["loss"] for x in la] == [x["loss"] for x in lb] and len(la) == 6


def _demo_size_grads(steps: int) -> list[dict[str, torch.Tensor]]:
    """Gradients of ``steps`` identical backward passes of the demo's model on one batch of 64 pairs."""
    from ufinebench.losses import DistContext, Targets, compute_losses

    cfg = load_config("synth-cpu-small", ["model.image_size=256x96"])
    m = dataclasses.replace(cfg.model, num_classes=40, vocab_size=300, eot_id=2)  # as the trainer completes it
    torch.manual_seed(0)
    model = RetrievalModel(m)
    model.train()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(64, 3, 256, 96, generator=g)
    tokens = torch.randint(3, 300, (64, 80), generator=g)
    tokens[:, 0], tokens[:, 79] = 1, 2
    labels = torch.randint(0, 40, (64,), generator=g)  # repeated identities: repeated hard-negative indices
    mlm_labels = torch.full_like(tokens, -100)
    mlm_labels[:, 5:15] = tokens[:, 5:15]
    mlm_tokens = tokens.masked_fill(mlm_labels >= 0, model.text.mask_id)
    out = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        o = model(images, tokens, mlm_tokens)
        compute_losses(model, o, Targets(labels, labels, mlm_labels), cfg.train.loss_weights, DistContext(seed=0, step=0))["loss"].backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return out


def test_demo_size_backward_repeats_bit_for_bit_under_two_threads():
    """The demo's model at its size, batch 64, 2 threads: gradients repeat exactly inside the trainer's
    ``deterministic_cpu`` (without it, the backward of indexing with repeated indices used atomic
    adds and differed from pass to pass: two demo runs ended at R1 66.3 and 63.0). The setting is
    restored afterwards, so other code in the process is not affected."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert not torch.are_deterministic_algorithms_enabled()
        with deterministic_cpu():
            grads = _demo_size_grads(4)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
    for other in grads[1:]:
        for k in grads[0]:
            assert torch.equal(grads[0][k], other[k]), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, ds: str, out: str, arch: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pathlib import Path

    train(_cfg(Path(ds), out, f"model.arch={arch}", "train.eval_every=0", "train.optimizer=sgd", "train.amp=none"), progress=False)
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["clip-sdm", "irra", "cfam"])
def test_two_processes_reach_the_weights_of_one(tiny_synth, tmp_path, arch):
    """SGD here: AdamW's first steps divide each gradient by its own magnitude, which turns float
    rounding noise on near-zero gradients into steps of order lr, so equal gradients do not give
    weights equal to a meaningful tolerance. With SGD they agree to ~1e-8."""
    torch.set_num_threads(1)
    # float32: under bf16 autocast a shard and the whole batch round differently (2e-6 apart)
    extra = (f"model.arch={arch}", "train.eval_every=0", "train.optimizer=sgd", "train.amp=none")
    single = train(_cfg(tiny_synth, tmp_path / "one", *extra), progress=False)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_synth), str(tmp_path / "two"), arch), nprocs=2, join=True)
    a, b = _weights(single), _weights(tmp_path / "two")
    torch.manual_seed(0)  # the trainer's seed: the weights every run starts from
    meta = json.loads((resolve_checkpoint(single, "last") / "meta.json").read_text())
    start = RetrievalModel(ModelConfig.from_dict(meta["config"]["model"])).state_dict()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a if k in start)
    assert moved > 1e-4  # training changed the weights, so the comparison means something
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), (k, float((a[k] - b[k]).abs().max()))


def test_non_finite_loss_stops_before_the_weights_see_it(tiny_synth, tmp_path, monkeypatch):
    real = step_mod.compute_losses
    calls = {"n": 0}

    def nan_at_fifth(*args, **kwargs):  # epoch 2, step 2 (3 steps per epoch)
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(step_mod, "compute_losses", nan_at_fifth)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step 5.*last good checkpoint is epoch 1"):
        train(_cfg(tiny_synth, run), progress=False)
    last = resolve_checkpoint(run, "last")
    assert last.name == "epoch_0001"  # the epoch before the bad step, complete and finite
    weights = load_file(str(last / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())


def test_cli_reports_non_finite_hyper_parameters_in_one_line(tiny_synth, tmp_path, capsys):
    from ufinebench.cli import main

    for setting in ("train.lr=inf", "model.temperature=nan", "train.loss_weights.id=-inf", "data.color_jitter=nan"):
        code = main(["train", "--config", "synth-cpu-small", "--set", f"data.dataset={tiny_synth / 'ufine_synth.json'}",
                     "--set", f"train.out_dir={tmp_path / 'never'}", "--set", setting])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and "Traceback" not in err, (setting, err)
        assert setting.split("=")[0] in err and "finite" in err, (setting, err)
    assert not (tmp_path / "never").exists()


def test_held_out_identities_validate_and_final_eval_on_test(tiny_synth, tmp_path):
    """UFine6926 has no val split: a fixed slice of training identities validates, never trains."""
    from ufinebench.data.annotations import load_dataset

    cfg = _cfg(tiny_synth, tmp_path / "run", "data.val_split=null", "data.val_identities=3", "train.final_eval=test")
    train_ann = load_dataset(tiny_synth / "ufine_synth.json", split="train").split("train")
    held = held_out_identities(train_ann, 3)
    assert len(held) == 3 and held == held_out_identities(list(reversed(train_ann)), 3)  # the same people every time
    run = train(cfg, progress=False)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    start = next(x for x in log if x["kind"] == "start")
    trained_ids = {s.person_id for s in train_ann} - held
    assert start["pairs"] == sum(len(s.captions) for s in train_ann if s.person_id in trained_ids)  # held-out people never train
    epochs = [x for x in log if x["kind"] == "epoch"]
    assert all("val_R1" in x for x in epochs)
    meta = json.loads((resolve_checkpoint(run, "best") / "meta.json").read_text())
    assert meta["best_value"] == max(x["val_R1"] for x in epochs)  # best epoch chosen on the held-out people
    final = json.loads((run / "final_eval_test.json").read_text())
    test = load_dataset(tiny_synth / "ufine_synth.json", split="test").split("test")
    assert final["overall"]["queries"] == sum(len(s.captions) for s in test)
    with pytest.raises(Exception, match="only"):
        train(_cfg(tiny_synth, tmp_path / "too_many", "data.val_split=null", "data.val_identities=1000"), progress=False)


def test_dry_run_goes_through_validation_and_final_eval_and_keeps_nothing(tiny_synth, tmp_path, capsys, monkeypatch):
    from ufinebench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--config", "synth-cpu-small", "--set", f"data.dataset={tiny_synth / 'ufine_synth.json'}",
                 "--set", "train.batch_size=8", "--set", "data.workers=0", "--dry-run", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "2 steps of batch 8" in out and "validation run" in out and "final evaluation on test" in out
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []  # nothing kept, nothing in the preset's out_dir


def test_cpu_bf16_autocast_only_where_the_cpu_has_it(tiny_synth, tmp_path, monkeypatch):
    """``train.amp: bf16`` on the CPU autocasts to bf16 when the CPU computes bf16 natively and falls
    back to float32 (said in the log's start record) when it does not; fp16 stays CUDA-only."""
    assert cpu_amp_dtype("none") is None and cpu_amp_dtype("fp16") is None
    starts = {}
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert cpu_amp_dtype("bf16") == (torch.bfloat16 if native else None)
        run = train(_cfg(tiny_synth, tmp_path / f"r{native}", "train.eval_every=0", "train.amp=bf16", "model.vision=conv",
                           "data.tokenizer=word", "train.epochs=1"), progress=False)
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        starts[native] = log[0]["autocast"]
        assert all(math.isfinite(x["loss"]) for x in log if x["kind"] == "train")
    assert starts == {True: "bfloat16", False: "none"}


def test_attention_under_cpu_bf16_autocast_matches_float32():
    """Attention runs its softmax in float32 under CPU bf16 autocast (the bf16 CPU kernel's backward
    was ~4x slower); the result is bf16 and its gradients agree with a float32 pass to bf16 precision."""
    from ufinebench.model.clip import Attention

    torch.manual_seed(0)
    attn = Attention(64, 4)
    x = torch.randn(8, 20, 64, requires_grad=True)
    mask = torch.arange(20)[None, :] < torch.tensor([20, 15, 10, 20, 5, 20, 12, 18])[:, None]
    ref = attn(x, key_mask=mask)
    (gx_ref,) = torch.autograd.grad(ref.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, key_mask=mask)
    assert out.dtype == torch.bfloat16
    (gx,) = torch.autograd.grad(out.float().square().sum(), x)
    assert torch.allclose(out.float(), ref, atol=3e-2, rtol=3e-2)
    assert (gx - gx_ref).norm() / gx_ref.norm() < 0.05


def test_position_offsets_are_a_function_of_the_pair_and_epoch_only():
    index = torch.arange(4000)
    off = position_offsets(index, epoch=3, seed=0, jitter=16)  # (B,)
    assert int(off.min()) == 0 and int(off.max()) == 16
    counts = torch.bincount(off, minlength=17).float()
    assert counts.min() > 0.7 * counts.mean()  # every offset drawn, none favoured much
    perm = torch.randperm(4000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(position_offsets(index[perm], 3, 0, 16), off[perm])  # batch order and company do not matter
    assert (position_offsets(index, 4, 0, 16) != off).float().mean() > 0.8  # a new epoch, new offsets
    assert (position_offsets(index, 3, 1, 16) != off).float().mean() > 0.8  # a new seed, too


def test_token_noise_drops_and_hides_words_but_never_the_special_tokens():
    sot, eot, pad, unk = 2, 3, 0, 1
    words = torch.arange(10, 60).repeat(400, 1)  # (400, 50) distinct words in order
    tokens = torch.cat([torch.full((400, 1), sot), words, torch.full((400, 1), eot), torch.full((400, 4), pad)], 1)  # (400, 56)
    index = torch.arange(400)
    out = token_noise(tokens, index, 0, 0, drop=0.2, unk=0.1, unk_id=unk, specials={sot, eot, pad})
    assert out.shape == tokens.shape
    assert bool((out[:, 0] == sot).all()) and bool(((out == eot).sum(1) == 1).all())
    eot_at = (out == eot).int().argmax(1)  # (400,)
    n_words = eot_at - 1
    assert abs(float(n_words.float().mean()) / 50 - 0.8) < 0.02  # 20 % dropped
    inner = out[:, 1:-5]
    kept = inner[(inner >= 10)]
    assert abs(float((inner == unk).sum()) / float(n_words.sum()) - 0.1 / 0.8) < 0.02  # 10 % of all words hidden
    for r in range(400):  # the words kept stay in their order, padding fills the end
        row = out[r, 1 : int(eot_at[r])]
        real = row[row != unk]
        assert bool((real[1:] > real[:-1]).all())
        assert bool((out[r, int(eot_at[r]) + 1 :] == pad).all())
    assert kept.numel() > 0
    again = token_noise(tokens[[5, 2]], index[[5, 2]], 0, 0, drop=0.2, unk=0.1, unk_id=unk, specials={sot, eot, pad})
    assert torch.equal(again, out[[5, 2]])  # a pair is noised alike in any batch
    assert not torch.equal(token_noise(tokens, index, 1, 0, drop=0.2, unk=0.1, unk_id=unk, specials={sot, eot, pad}), out)
    assert torch.equal(token_noise(tokens, index, 0, 0, drop=0.0, unk=0.0, unk_id=unk, specials={sot, eot, pad}), tokens)


def test_token_noise_local_shuffle_moves_each_word_at_most_k_places():
    sot, eot, pad = 2, 3, 0
    words = torch.arange(10, 60).repeat(300, 1)  # (300, 50) distinct words in order
    tokens = torch.cat([torch.full((300, 1), sot), words, torch.full((300, 1), eot), torch.full((300, 4), pad)], 1)  # (300, 56)
    index = torch.arange(300)
    for k in (1, 3):
        out = token_noise(tokens, index, 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad}, shuffle=k)
        assert torch.equal(out[:, [0, 51, 52, 53, 54, 55]], tokens[:, [0, 51, 52, 53, 54, 55]])  # start, end, padding stay
        assert torch.equal(out.sort(1).values, tokens.sort(1).values)  # the same words, reordered
        place = out[:, 1:51] - 10  # (300, 50) each position's word's original place
        moved = (place - torch.arange(50)).abs()
        assert int(moved.max()) <= k  # no word moves more than k places
        assert float((moved > 0).float().mean()) > 0.15  # and many do move (k = 1: adjacent swaps, ~1 word in 4)
        again = token_noise(tokens[[7, 1]], index[[7, 1]], 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad}, shuffle=k)
        assert torch.equal(again, out[[7, 1]])  # a pair is shuffled alike in any batch
    assert torch.equal(token_noise(tokens, index, 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad}, shuffle=0), tokens)


def test_token_noise_sentence_drop_removes_whole_sentences_but_never_all():
    sot, eot, pad, stop = 2, 3, 0, 4
    n = 2000
    sentences = [torch.arange(10 + 10 * j, 15 + 10 * j) for j in range(5)]  # 5 sentences of 5 distinct words
    one = torch.cat([torch.tensor([sot]), *[torch.cat([s_, torch.tensor([stop])]) for s_ in sentences], torch.tensor([eot])])  # (32,)
    tokens = torch.cat([one.repeat(n, 1), torch.full((n, 3), pad)], 1)  # (n, 35)
    index = torch.arange(n)
    out = token_noise(tokens, index, 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad}, sentence_drop=0.4, sentence_end=stop)
    assert out.shape == tokens.shape and bool((out[:, 0] == sot).all())
    kept = torch.zeros(n, 5, dtype=torch.bool)
    for r in range(n):
        row = out[r]
        e = int((row == eot).nonzero()[0])
        assert bool((row[e + 1 :] == pad).all()) and int((row == eot).sum()) == 1  # padding refills the end
        words = row[1:e]
        for j, s_ in enumerate(sentences):
            present = torch.isin(s_, words)
            assert bool(present.all()) or not bool(present.any())  # a sentence goes whole or not at all
            kept[r, j] = bool(present.all())
        assert int((words == stop).sum()) == int(kept[r].sum())  # each kept sentence keeps its own "."
        real = words[words != stop]
        assert bool((real[1:] > real[:-1]).all())  # order kept
    assert bool(kept.any(1).all())  # never all: a row whose draws drop every sentence keeps the first
    assert abs(float(kept[:, 1:].float().mean()) - 0.6) < 0.03  # each sentence dropped with p 0.4,
    assert abs(float(kept[:, 0].float().mean()) - (0.6 + 0.4**5)) < 0.03  # the first too (it alone comes back when all went)
    both = float((kept[:, 1] & kept[:, 2]).float().mean())
    assert abs(both - 0.36) < 0.04  # independent draws per sentence, not one per caption
    again = token_noise(tokens[[9, 4]], index[[9, 4]], 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad},
                          sentence_drop=0.4, sentence_end=stop)
    assert torch.equal(again, out[[9, 4]])  # a pair is cut alike in any batch
    assert not torch.equal(token_noise(tokens, index, 1, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad},
                                         sentence_drop=0.4, sentence_end=stop), out)  # a new epoch, new cuts
    assert torch.equal(token_noise(tokens, index, 0, 0, drop=0.0, unk=0.0, unk_id=None, specials={sot, eot, pad},
                                     sentence_drop=0.4, sentence_end=None), tokens)  # no sentence end known: unchanged


def _spy_text_views(monkeypatch, swaps: list | None = None) -> list:
    """Record (captions, matcher's captions) of every model forward during training; with ``swaps``,
    also the attribute-swapped captions there."""
    seen: list = []
    real = RetrievalModel.forward

    def spy(self, images, text, mlm_text=None, text_offset=None, match_text=None, swap_text=None):
        seen.append((text.clone(), None if match_text is None else match_text.clone()))
        if swaps is not None:
            swaps.append(None if swap_text is None else swap_text.clone())
        return real(self, images, text, mlm_text, text_offset, match_text, swap_text)

    monkeypatch.setattr(RetrievalModel, "forward", spy)
    return seen


def test_the_matchers_second_text_pass_gets_the_captions_with_words_dropped_and_hidden(tiny_synth, tmp_path, monkeypatch):
    """data.match_token_*: the trainer hands the model a second copy of each batch's captions with words
    hidden and dropped (that only the matcher reads it: tests/test_losses.py; that the draws do not
    depend on the process: the DDP test, whose preset turns the noise on)."""
    seen = _spy_text_views(monkeypatch)
    train(_cfg(tiny_synth, tmp_path / "run", "train.eval_every=0", "data.match_token_drop=0.3", "data.match_token_unk=0.2"), progress=False)
    assert len(seen) == 6
    for text, match_text in seen:
        assert match_text is not None and match_text.shape == text.shape
        assert not torch.equal(match_text, text)  # words hidden
        assert int((match_text == 0).sum()) > int((text == 0).sum())  # and words dropped (padding, id 0, refills the end)


def test_the_matchers_view_drops_whole_sentences_of_the_real_captions(tiny_synth, tmp_path, monkeypatch):
    """data.match_sentence_drop: the matcher's copy of a caption is the caption with some whole
    sentences (up to and including their ".") left out."""
    seen = _spy_text_views(monkeypatch)
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.eval_every=0", "data.match_sentence_drop=0.5",
                       "data.match_token_drop=0", "data.match_token_unk=0"), progress=False)  # sentence cuts alone
    tok = from_checkpoint(run).tokenizer
    stop = tok.text_ids(".")[0]
    shorter = 0
    for text, match_text in seen:
        assert match_text is not None
        for full, cut in zip(text.tolist(), match_text.tolist(), strict=True):
            full_s = [s.strip() for s in tok.decode(full).split(".") if s.strip()]
            cut_s = [s.strip() for s in tok.decode(cut).split(".") if s.strip()]
            assert cut_s  # never empty
            it = iter(full_s)
            assert all(any(c == f for f in it) for c in cut_s)  # the rest: whole sentences of the caption, in order
            assert cut.count(stop) in (len(cut_s), len(cut_s) - 1)  # each its own "." (the last may be cut off by the context length)
            shorter += len(cut_s) < len(full_s)
    assert shorter > 0.5 * sum(len(t) for t, _ in seen)  # most captions lost something


def test_attribute_swap_changes_one_attribute_word_for_one_that_means_something_else(tiny_synth, tmp_path, monkeypatch):
    """data.attribute_swap: the model gets each caption once more with exactly one attribute word
    swapped within its class, never for a synonym ("grey" -> "gray"), a hash of (seed, epoch, pair)."""
    ATTRIBUTE_CLASSES = VOCAB.classes

    swaps: list = []
    seen = _spy_text_views(monkeypatch, swaps)
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.eval_every=0", "data.attribute_swap=true"), progress=False)
    tok = from_checkpoint(run).tokenizer
    where = {w: (c, g) for c, groups in ATTRIBUTE_CLASSES.items() for g, words in enumerate(groups) for w in words}
    changed = 0
    for (text, _), swap in zip(seen, swaps, strict=True):
        assert swap is not None and swap.shape == text.shape
        for row, srow in zip(text.tolist(), swap.tolist(), strict=True):
            diff = [(a, b) for a, b in zip(row, srow, strict=True) if a != b]
            assert len(diff) <= 1
            if diff:
                old, new = (tok.decode([i]).strip() for i in diff[0])
                assert where[old][0] == where[new][0] and where[old][1] != where[new][1], (old, new)
                changed += 1
    assert changed == sum(len(t) for t, _ in seen)  # every synth caption has an attribute word
    table = AttributeTable.build(VOCAB, tok)
    assert table is not None
    tokens, index = seen[0][0], torch.arange(len(seen[0][0]))
    a, _ = attribute_swap(tokens, index, 0, 0, table)
    assert torch.equal(a, attribute_swap(tokens, index, 0, 0, table)[0])
    assert not torch.equal(a, attribute_swap(tokens, index, 1, 0, table)[0])  # another epoch, other swaps


def test_attribute_targets_name_the_groups_of_the_caption_and_only_the_classes_it_mentions():
    """data.attribute_words: the word head's targets come from the caption alone: 1 for each group
    named (synonyms one group), 0 for the other groups of a class the caption names, unknown otherwise."""
    ATTRIBUTE_CLASSES = VOCAB.classes
    N_ATTRIBUTE_GROUPS = VOCAB.n_groups
    from ufinebench.data.tokenizer import TrainedWordTokenizer

    caps = ["a man in grey jeans and black trainers .", "a woman in a gray skirt with a red backpack and sneakers ."]
    tok = TrainedWordTokenizer.train(caps + ["boots sandals shorts handbag white"], vocab_size=100, min_frequency=1)
    table = AttributeTable.build(VOCAB, tok)
    assert table is not None
    target, known = attribute_targets(tok.encode(caps, 16), table)
    names = [(c, words) for c, groups in ATTRIBUTE_CLASSES.items() for words in groups]
    assert target.shape == known.shape == (2, N_ATTRIBUTE_GROUPS)
    named = [{names[i][1][0] for i in row.nonzero().flatten().tolist()} for row in target]
    assert named == [{"grey", "black", "jeans", "sneakers"}, {"grey", "red", "skirt", "backpack", "sneakers"}]
    classes = [{names[i][0] for i in row.nonzero().flatten().tolist()} for row in known]
    assert classes == [{"colour", "bottom", "shoes"}, {"colour", "bottom", "shoes", "bag"}]
    assert int(known[0].sum()) == sum(len(ATTRIBUTE_CLASSES[c]) for c in classes[0])  # every group of a named class


def test_attribute_pairs_bind_each_colour_to_the_garment_of_its_phrase():
    """data.attribute_pairs: "grey hoodie, black jeans" and "black hoodie, grey jeans" name the same
    words (``named_groups`` cannot tell them apart) but other pairs; a colour pairs only with the
    garment of its own noun phrase ("with red soles" is no shoe colour); "navy" reads as blue."""
    ATTRIBUTE_CLASSES = VOCAB.classes
    ATTRIBUTE_SLOTS = tuple(VOCAB.slots)
    N_ATTRIBUTE_GROUPS = VOCAB.n_groups
    N_ATTRIBUTE_PAIRS = VOCAB.n_pairs
    from ufinebench.data.tokenizer import TrainedWordTokenizer

    caps = ["a grey hoodie , black jeans .", "a black hoodie , grey jeans .",
            "a grey long - sleeved hooded sweatshirt and white sneakers with red soles , a navy knit hat ."]
    tok = TrainedWordTokenizer.train(caps, vocab_size=100, min_frequency=1)
    table = AttributeTable.build(VOCAB, tok)
    assert table is not None
    x = tok.encode(caps, 24)
    colours = [words[0] for words in ATTRIBUTE_CLASSES["colour"]]

    def read(row: torch.Tensor) -> set[tuple[str, str]]:
        return {(colours[i // len(ATTRIBUTE_SLOTS)], ATTRIBUTE_SLOTS[i % len(ATTRIBUTE_SLOTS)]) for i in row.nonzero().flatten().tolist()}

    pairs = attribute_pairs(x, table)
    assert pairs.shape == (3, N_ATTRIBUTE_PAIRS)
    assert [read(r) for r in pairs] == [{("grey", "top"), ("black", "bottom")}, {("black", "top"), ("grey", "bottom")},
                                        {("grey", "top"), ("white", "shoes"), ("blue", "headwear")}]
    words = named_groups(x, table)
    assert words.shape == (3, N_ATTRIBUTE_GROUPS) and torch.equal(words[0], words[1])  # the words alone: the same person
    both = named_groups(x, table, pairs=True)
    assert torch.equal(both, torch.cat([words, pairs], 1)) and not torch.equal(both[0], both[1])
    target, known = attribute_targets(x, table, pairs=True)
    assert target.shape == known.shape == (3, N_ATTRIBUTE_GROUPS + N_ATTRIBUTE_PAIRS)
    assert torch.equal(target[:, N_ATTRIBUTE_GROUPS:], pairs.float())
    slots = [{ATTRIBUTE_SLOTS[i % len(ATTRIBUTE_SLOTS)] for i in r.nonzero().flatten().tolist()} for r in known[:, N_ATTRIBUTE_GROUPS:]]
    assert slots == [{"top", "bottom"}, {"top", "bottom"}, {"top", "shoes", "headwear"}]  # every colour of a slot given one
    assert int(known[0, N_ATTRIBUTE_GROUPS:].sum()) == 2 * len(colours)


def test_modifier_order_moves_a_colour_across_its_shape_words_and_keeps_every_word():
    """data.modifier_order: "knee - length beige skirt" <-> "beige knee - length skirt" (a tone word moves
    with its colour); "t - shirt" is no shape-word span; p = 0 changes nothing; draws per (seed, epoch, pair)."""
    from ufinebench.data.tokenizer import TrainedWordTokenizer

    caps = ["her knee - length beige skirt and black t - shirt .", "a grey long - sleeved sweater and dark blue cropped jeans ."]
    tok = TrainedWordTokenizer.train(caps, vocab_size=100, min_frequency=1)
    words = PhraseWords.build(VOCAB, tok)
    x = tok.encode(caps, 24)
    index = torch.arange(2)
    y = modifier_order(x, index, 0, 0, words, 1.0)
    assert [tok.decode(r.tolist()) for r in y] == ["her beige knee - length skirt and black t - shirt.",
                                                   "a long - sleeved grey sweater and cropped dark blue jeans."]
    assert torch.equal(modifier_order(y, index, 0, 0, words, 1.0), x)  # and back
    assert torch.equal(y.sort(dim=1).values, x.sort(dim=1).values)  # the same words
    assert torch.equal(modifier_order(x, index, 0, 0, words, 0.0), x)
    many = tok.encode(caps * 50, 24)
    a = modifier_order(many, torch.arange(100), 0, 0, words, 0.5)
    assert torch.equal(a, modifier_order(many, torch.arange(100), 0, 0, words, 0.5))
    assert not torch.equal(a, modifier_order(many, torch.arange(100), 1, 0, words, 0.5))  # another epoch, other draws
    moved = (a != many).any(dim=1).float().mean()
    assert 0.5 < float(moved) < 0.95  # two phrases per caption, each moved with p 0.5: 75 % of captions expected


def test_attribute_drop_removes_only_named_attribute_words_and_named_groups_reads_them():
    """data.match_attribute_drop: each colour / garment / shoe / bag / headwear word dropped with
    probability p (the rest close up, in order), a hash of (seed, epoch, pair); ``named_groups``
    gives the groups of those classes a caption names (synonyms one group; "left", "short" none)."""
    ATTRIBUTE_CLASSES = VOCAB.classes
    NAMED_CLASSES = VOCAB.named_classes
    from ufinebench.data.tokenizer import TrainedWordTokenizer

    caps = ["a man in grey jeans and black trainers , bag on the left .", "a woman with short hair , a gray skirt and sneakers ."] * 8
    tok = TrainedWordTokenizer.train(caps + ["boots sandals shorts handbag white"], vocab_size=100, min_frequency=1)
    table = AttributeTable.build(VOCAB, tok)
    assert table is not None
    tokens, index = tok.encode(caps, 20), torch.arange(len(caps))
    named = {w for c in NAMED_CLASSES for group in ATTRIBUTE_CLASSES[c] for w in group}
    assert torch.equal(attribute_drop(tokens, index, 0, 0, table, 0.0, pad_id=tok.pad_id), tokens)
    out = attribute_drop(tokens, index, 0, 0, table, 0.5, pad_id=tok.pad_id)
    assert torch.equal(out, attribute_drop(tokens, index, 0, 0, table, 0.5, pad_id=tok.pad_id))
    assert not torch.equal(out, attribute_drop(tokens, index, 1, 0, table, 0.5, pad_id=tok.pad_id))  # another epoch
    dropped = 0
    for row, new in zip(tokens.tolist(), out.tolist(), strict=True):
        words = [tok.decode([i]).strip() for i in row if i != tok.pad_id]
        kept = [tok.decode([i]).strip() for i in new if i != tok.pad_id]
        j, gone = 0, []
        for w in words:  # kept must be words with some left out, in order
            if j < len(kept) and kept[j] == w:
                j += 1
            else:
                gone.append(w)
        assert j == len(kept) and all(w in named for w in gone), gone  # only named attribute words go
        assert [w for w in words if w not in named] == [w for w in kept if w not in named]  # the rest stay, in order
        dropped += len(words) - len(kept)
    assert 0 < dropped < sum(sum(w in named for w in c.split()) for c in caps)
    groups = named_groups(tok.encode(caps[:2], 20), table)  # (2, G)
    names = [words for c, gs in ATTRIBUTE_CLASSES.items() for words in gs]
    got = [{names[g][0] for g in range(len(names)) if row[g]} for row in groups.tolist()]
    assert got == [{"grey", "jeans", "black", "sneakers"}, {"grey", "skirt", "sneakers"}]


def test_contradicting_negatives_reach_the_matchers_loss_with_the_groups_of_its_view(tiny_synth, tmp_path, monkeypatch):
    """train.match_negatives: contradicting with data.match_attribute_drop: the trainer hands the loss
    the named groups of the matcher's (shortened) view and of the clean caption; the view's are a
    subset of the caption's and smaller for some captions."""

    seen = _spy_text_views(monkeypatch)
    got: list = []
    real = step_mod.compute_losses
    monkeypatch.setattr(step_mod, "compute_losses", lambda model, out, targets, *a, **k: (got.append(targets), real(model, out, targets, *a, **k))[1])
    run = train(_cfg(tiny_synth, tmp_path / "run", "train.eval_every=0", "data.match_attribute_drop=0.5", "data.match_token_drop=0",
                       "data.match_token_unk=0", "train.match_negatives=contradicting"), progress=False)
    table = AttributeTable.build(VOCAB, from_checkpoint(run).tokenizer)
    assert table is not None and len(got) == len(seen) > 0
    fewer = 0
    for targets, (text, match_text) in zip(got, seen, strict=True):
        view, cap = targets.match_view_groups, targets.caption_groups
        assert torch.equal(view, named_groups(match_text, table)) and torch.equal(cap, named_groups(text, table))
        assert not (view & ~cap).any()  # a view names nothing its caption does not
        fewer += int((view.sum(1) < cap.sum(1)).sum())
    assert fewer > 0
