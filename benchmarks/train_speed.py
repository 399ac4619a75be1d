"""Training speed and peak memory of CFAM and the baselines at the same backbone size.

    python benchmarks/train_speed.py [--preset vitb16|synth-cpu-small] [--device cpu|cuda] [--batch 64]
                                     [--steps 20] [--amp bf16|fp16|none] [--archs clip-sdm,irra,cfam]
    python benchmarks/train_speed.py --pipeline DATA.json [--steps 40]
                                     [--variant DATA2.json --set KEY=VALUE ...]

``--pipeline`` times the real ``train()`` of synth-cpu-small on a data set; with ``--variant``
it also times the preset with the ``--set`` overrides on a second data set (e.g. the same persons
rendered at 256 x 96 with ``model.image_size=256x96 model.vision_stem=2``), both in memory, in
the same run, and prints the variant's speed as a ratio to the preset's.

Random images and texts of the preset's shape (ViT-B/16: 384 x 128 images, 168-token texts
whose end token falls between positions 100 and 167, as UFine captions do), two captions per
person so that every loss has positives. Each architecture runs in a fresh process (so peak
memory is its own): warm-up steps, then timed optimizer steps (forward, all losses, backward,
AdamW). Prints steps/s, pairs/s and peak memory, each as a ratio to clip-sdm. CFAM under
synth-cpu-small also encodes the second (matcher-only, noisy) view of the captions its preset asks for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

PRESETS = {
    "vitb16": dict(embed_dim=512, image_size=(384, 128), patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                   context_length=168, vocab_size=49408, text_width=512, text_layers=12, text_heads=8, num_queries=16,
                   decoder_layers=2, decoder_heads=8, matcher_layers=2),
    "synth-cpu-small": None,  # read from the package preset synth-cpu-small
}


def worker(arch: str, preset: str, device: str, batch: int, steps: int, warmup: int, amp: str) -> dict:
    import torch

    from ufinebench.losses import Targets, compute_losses
    from ufinebench.model.cfam import ModelConfig, RetrievalModel

    if PRESETS[preset] is None:
        from ufinebench.config import load_config

        preset_cfg = load_config(preset)
        base = dataclasses.replace(preset_cfg.model, vocab_size=1500, eot_id=3)
        # the preset's word noise on the matcher's view costs a second text pass: time it too
        match_noise = (preset_cfg.data.match_token_drop, preset_cfg.data.match_token_unk)
        mcfg = dataclasses.replace(base, arch=arch, num_classes=1000)
        lo, hi = 80, mcfg.context_length - 1
        eot = 3
    else:
        mcfg = ModelConfig(arch=arch, num_classes=1000, **PRESETS[preset])
        match_noise = (0.0, 0.0)
        lo, hi = 100, mcfg.context_length - 1
        eot = 49407
    torch.manual_seed(0)
    dev = torch.device(device)
    model = RetrievalModel(mcfg).to(dev).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    h, w = mcfg.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g).to(dev)
    tokens = torch.randint(1, min(mcfg.vocab_size, 49405), (batch, mcfg.context_length), generator=g)
    ends = torch.randint(lo, hi + 1, (batch,), generator=g)
    for i, e in enumerate(ends.tolist()):
        tokens[i, e] = eot
        tokens[i, e + 1 :] = 0
    tokens = tokens[:, : int(ends.max()) + 1].to(dev)
    ids = (torch.arange(batch) // 2).to(dev)
    match_text = None
    if max(match_noise) > 0 and model.matcher is not None:  # the trainer's noisy copy, made the trainer's way (id 1 stands for <|unk|>)
        from ufinebench.training.augment import token_noise

        match_text = token_noise(tokens.cpu(), torch.arange(batch), 0, 0, drop=match_noise[0], unk=match_noise[1], unk_id=1,
                                 specials={eot, 0}, salt=3).to(dev)  # (B, L)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    use_amp = dtype is not None and dev.type == "cuda"

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=use_amp):
            out = model(images, tokens, match_text=match_text)
            loss = compute_losses(model, out, Targets(ids, ids), {})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    out = {"arch": arch, "steps_per_s": steps / dt, "pairs_per_s": steps * batch / dt,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if dev.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    else:
        out["peak_mem_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def pipeline(dataset: str, steps: int, variant: str | None = None, overrides: list[str] | None = None) -> int:
    """train() of synth-cpu-small for ``steps`` steps: streaming vs in memory, or the preset vs a variant, in one run."""
    import tempfile

    from ufinebench.config import load_config
    from ufinebench.training import train

    print(f"train() pipeline on {dataset}: synth-cpu-small, {steps} steps (one epoch), no validation")
    if variant:
        runs = [("preset (in memory)", dataset, 2048, []), (f"variant {' '.join(overrides or [])} on {variant}", variant, 2048, overrides or [])]
    else:
        runs = [("streaming (DataLoader, data.workers=2)", dataset, 0, []), ("in memory (decoded once)", dataset, 2048, [])]
    times = {}
    for name, data, mb, extra in runs:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config("synth-cpu-small", [f"data.dataset={data}", f"train.out_dir={tmp}/run", "train.epochs=1",
                                                  f"train.max_steps_per_epoch={steps}", "train.eval_every=0",
                                                  "train.tensorboard=false", f"data.in_memory_mb={mb}", *extra])
            t0 = time.perf_counter()
            train(cfg, progress=False)
            times[name] = time.perf_counter() - t0
        print(f"  {name:40s} {times[name]:6.1f} s  ({steps / times[name]:.2f} steps/s, set-up included)")
    a, b = times.values()
    print(f"  {'variant / preset' if variant else 'in memory / streaming'} speed: {a / b:.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="synth-cpu-small", choices=list(PRESETS))
    ap.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    ap.add_argument("--archs", default="clip-sdm,irra,cfam")
    ap.add_argument("--pipeline", metavar="DATASET", help="instead: time train() on this dataset (e.g. the demo's "
                    "ufine_synth.json), images streamed by DataLoader workers vs decoded once into memory")
    ap.add_argument("--variant", metavar="DATASET2", help="with --pipeline: also time the preset with the --set overrides on this data set")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for --variant (repeatable)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pipeline:
        return pipeline(args.pipeline, args.steps, args.variant, args.set)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            args.device = "cpu"
    if args.worker:
        print(json.dumps(worker(args.worker, args.preset, args.device, args.batch, args.steps, args.warmup, args.amp)))
        return 0
    print(f"train speed: preset {args.preset}, device {args.device}, batch {args.batch}, amp {args.amp if args.device == 'cuda' else 'none'}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    base = None
    for arch in args.archs.split(","):
        cmd = [sys.executable, __file__, "--worker", arch, "--preset", args.preset, "--device", args.device, "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--amp", args.amp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{arch}: failed\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = base or r
        print(f"  {arch:9s} {r['params_m']:7.1f} M params  {r['steps_per_s']:7.2f} steps/s ({r['steps_per_s'] / base['steps_per_s']:.2f}x)  "
              f"{r['pairs_per_s']:8.1f} pairs/s  peak mem {r['peak_mem_gb']:6.2f} GB ({r['peak_mem_gb'] / base['peak_mem_gb']:.2f}x)"
              + (f"  [{r['gpu']}]" if "gpu" in r else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
