"""UFine-Synth generation speed: images per second, captions included, against one worker.

    python benchmarks/synth_speed.py [--identities 1000] [--images-per-id 4] [--size 384x128] [--workers N]

Builds the dataset twice into a temporary folder (with N workers, then with one as the
baseline), prints wall time, images per second and the ratio, and checks that both builds are
byte-identical. The issue's target: >= 200 images/s on 2 cores (1,000 identities x 4 images,
plus the 3C set's held-out-domain images, in under 20 s).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from ufinebench.synth.build import SynthConfig, build


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "CARD.md":  # the card records the build time
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", type=int, default=1000)
    ap.add_argument("--images-per-id", type=int, default=4)
    ap.add_argument("--size", default="384x128")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the one-worker baseline")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    cfg = SynthConfig(identities=args.identities, images_per_id=(args.images_per_id, args.images_per_id), size=(h, w))
    print(f"synth speed: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, {args.identities} identities x "
          f"{args.images_per_id} images at {h}x{w}")
    runs = [args.workers] + ([] if args.skip_baseline or args.workers == 1 else [1])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in runs:
            out = Path(tmp) / f"w{workers}"
            t0 = time.perf_counter()
            s = build(out, cfg, workers=workers)
            dt = time.perf_counter() - t0
            results[workers] = (dt, s["images"], _digest(out))
            print(f"  {workers} worker(s): {dt:6.2f} s for {s['images']} images = {s['images'] / dt:6.0f} images/s")
    if len(results) == 2:
        (dn, _, hn), (d1, _, h1) = results[args.workers], results[1]
        print(f"  speed-up with {args.workers} workers: {d1 / dn:.2f}x; outputs identical: {hn == h1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
