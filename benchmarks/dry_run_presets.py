"""Every real preset at full width and depth, a few steps through validation and the final evaluation.

    python benchmarks/dry_run_presets.py [--presets ufine6926-vitb16,ufine6926-vitl14,cuhk-pedes-vitb16] [--steps 2]

The presets need CLIP weights and licensed data that cannot be downloaded here, so each runs on
random CLIP-layout weights (``train.init_from`` unset: the same shapes and code paths) and on a
tiny UFine-Synth set rendered at the preset's own image size, with ``ufinebench train --dry-run``'s
function: batch 4 on a CPU, 64 on a GPU (with the preset's autocast). Prints steps/s, peak
memory and what ran, one line per preset: a preset that cannot survive its first validation and
final evaluation fails here in minutes, not at epoch 5 of a 60-epoch job.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ufinebench.config import load_config
from ufinebench.synth.build import SynthConfig, build
from ufinebench.training import dry_run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="ufine6926-vitb16,ufine6926-vitl14,cuhk-pedes-vitb16")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0, help="default 4 on a CPU, 64 on a GPU")
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    batch = args.batch_size or (64 if gpu else 4)
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"dry runs on {where}, batch {batch}, {args.steps} steps, random CLIP-layout weights, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        data: dict[tuple[int, int], Path] = {}
        for name in args.presets.split(","):
            cfg = load_config(name)
            size = tuple(cfg.model.image_size)
            if size not in data:  # 60 persons: every split holds a batch of 64 pairs
                data[size] = Path(tmp) / f"synth_{size[0]}x{size[1]}"
                build(data[size], SynthConfig(identities=60, size=size, seed=0), workers=2)
            over = [f"data.dataset={data[size] / 'ufine_synth.json'}", "data.format=null", "train.init_from=null",
                    f"train.batch_size={batch}", "data.workers=0"]
            if cfg.data.val_identities:
                over.append("data.val_identities=5")
            elif cfg.data.val_split:
                over.append("data.val_split=val")
            t0 = time.perf_counter()
            r = dry_run(load_config(name, over), steps=args.steps)
            mem = f"peak GPU {r['peak_gpu_gb']} GB, " if "peak_gpu_gb" in r else ""
            print(f"  {name}: {r['steps_per_s']} steps/s, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}, "
                  f"validation {'ran' if r['validated'] else 'none'}, final eval {r['final_eval']['queries']} queries, "
                  f"{mem}peak process RSS {r['peak_cpu_rss_gb']} GB, {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
