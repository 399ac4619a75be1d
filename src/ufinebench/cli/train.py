"""``ufinebench train``: train from a config or a preset, resume a run, or dry-run a config."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ufinebench.cli.common import positive
from ufinebench.config import load_config, preset_names
from ufinebench.distributed import env_ranks
from ufinebench.errors import UFineBenchError
from ufinebench.training import dry_run, train


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train CFAM or a baseline (torchrun --nproc_per_node N -m ufinebench train ... for DDP)",
        description=(
            f"Train from a YAML config or a preset shipped with the package ({', '.join(preset_names())}). "
            "Under torchrun each process takes its shard of every global batch; batch-level losses gather the whole batch, "
            "so N processes match one."
        ),
    )
    p.add_argument("--config", metavar="CONFIG", help="YAML file or preset name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. train.lr=1e-4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--dry-run", type=positive, nargs="?", const=5, default=0, metavar="STEPS",
                   help="run STEPS (default 5) training steps on your data and model through validation and the final "
                   "evaluation (at most 64 records each), print steps/s and peak memory, keep nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty()
    if args.resume:
        if args.config or args.set:
            raise UFineBenchError("--resume continues a run with its own config; drop --config/--set")
        run_dir = train(resume=args.resume, progress=progress)
    elif not args.config:
        raise UFineBenchError("give --config CONFIG.yaml (or a preset name such as synth-cpu-small), or --resume RUN_DIR")
    elif args.dry_run:
        r = dry_run(load_config(args.config, args.set), steps=args.dry_run, progress=progress)
        mem = f", peak GPU memory {r['peak_gpu_gb']} GB" if "peak_gpu_gb" in r else ""
        print(f"dry run of {args.config}: {r['steps']} steps of batch {r['batch_size']} at {r['steps_per_s']} steps/s "
              f"(loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}), validation {'run' if r['validated'] else 'not configured'}, "
              f"final evaluation on {r['final_eval']['split']} ({r['final_eval']['queries']} queries); "
              f"peak process memory {r['peak_cpu_rss_gb']} GB{mem}; {r['seconds']} s in all. Nothing was kept.")
        return 0
    else:
        run_dir = train(load_config(args.config, args.set), progress=progress)
    if env_ranks()[1] == 0:
        print(f"run finished: {run_dir} (checkpoints in {run_dir}/checkpoints, log in {run_dir}/log.jsonl)")
    return 0
