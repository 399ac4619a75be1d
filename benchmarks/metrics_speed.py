"""Wall time and peak memory of the metrics engine on benchmark-sized problems.

Two problems with random d-dimensional features and person ids cycling like the real sets:

* ``cuhk``    CUHK-PEDES test size: 6,148 text queries x 3,074 images, 1,000 identities
* ``ufine3c`` UFine3C size: 37,939 text queries x 7,446 images, 2,250 identities

Each implementation runs in its own fresh process (so peak RSS is its own), from features to
all of its metrics. Ours computes R1/R5/R10/mAP/mINP/mSD; with ``--official PATH`` (the released
``mSD_Calculator.py``) and/or ``--irra PATH`` (IRRA's ``utils/metrics.py``) those files, which
you supply, are run the way their repositories run them (full similarity matrix, then their
ranking function) and the ratios to ours are printed. Nothing of theirs is shipped here.

    python benchmarks/metrics_speed.py [--problems cuhk,ufine3c] [--official PATH] [--irra PATH]

Our timing is the median of ``--repeat`` runs and excludes the one-time numba compilation
(cached on disk after the first run); a cold first call is printed for reference. Peers run once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import types

PROBLEMS = {
    "cuhk": (6148, 3074, 1000),
    "ufine3c": (37939, 7446, 2250),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _load_by_path(path: str, name: str) -> types.ModuleType:
    # Their files import prettytable only to print tables; stub it if it is not installed.
    try:
        import prettytable  # noqa: F401
    except ImportError:
        stub = types.ModuleType("prettytable")
        stub.PrettyTable = object  # type: ignore[attr-defined]
        sys.modules["prettytable"] = stub
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the released mSD file runs an example on import
        spec.loader.exec_module(mod)
    return mod


def worker(impl: str, problem: str, dim: int, seed: int, path: str | None, repeat: int = 1) -> dict:
    """Run one implementation once on one problem, in this process; return figures as a dict."""
    import numpy as np
    import torch

    nq, ng, nid = PROBLEMS[problem]
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, dim, generator=gen)  # (Q, D) text features
    g = torch.randn(ng, dim, generator=gen)  # (G, D) image features
    qids = torch.arange(nq) % nid
    gids = torch.arange(ng) % nid
    rss_data = _peak_rss_mb()
    out: dict = {"impl": impl, "problem": problem}

    if impl.startswith("ours"):
        from ufinebench.metrics import metrics_from_features

        if impl == "ours-cuda":
            args = (q.cuda(), g.cuda(), qids.cuda(), gids.cuda())
        elif impl == "ours-numpy":
            args = (q.numpy(), g.numpy(), qids.numpy(), gids.numpy())
        else:
            args = (q, g, qids, gids)
        t0 = time.perf_counter()
        metrics_from_features(*[a[:64] for a in args[:2]], args[2][:64], args[3][:64])  # load/compile kernels
        out["first_call_s"] = time.perf_counter() - t0
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = metrics_from_features(*args)
            times.append(time.perf_counter() - t0)
        out["wall_s"] = float(np.median(times))
        out["wall_min_s"] = float(np.min(times))
        out["metrics"] = res.as_dict()
        t0 = time.perf_counter()
        off = metrics_from_features(*args, msd="official")
        out["official_wall_s"] = time.perf_counter() - t0
        out["official_mSD"] = off.mSD
    elif impl == "official":
        mod = _load_by_path(path, "msd_official")  # type: ignore[arg-type]
        t0 = time.perf_counter()
        qn = torch.nn.functional.normalize(q, p=2, dim=1)
        gn = torch.nn.functional.normalize(g, p=2, dim=1)
        sim = qn @ gn.t()
        cmc, msd, m_ap = mod.mSD_rank(similarity=sim, q_pids=qids, g_pids=gids, max_rank=10)
        out["wall_s"] = time.perf_counter() - t0
        out["metrics"] = {"R1": float(cmc[0]), "R5": float(cmc[4]), "R10": float(cmc[9]), "mAP": float(m_ap), "mSD": float(msd)}
    elif impl == "irra":
        mod = _load_by_path(path, "irra_metrics")  # type: ignore[arg-type]
        t0 = time.perf_counter()
        qn = torch.nn.functional.normalize(q, p=2, dim=1)
        gn = torch.nn.functional.normalize(g, p=2, dim=1)
        sim = qn @ gn.t()
        cmc, m_ap, m_inp, _ = mod.rank(similarity=sim, q_pids=qids, g_pids=gids, max_rank=10, get_mAP=True)
        out["wall_s"] = time.perf_counter() - t0
        out["metrics"] = {"R1": float(cmc[0]), "R5": float(cmc[4]), "R10": float(cmc[9]), "mAP": float(m_ap), "mINP": float(m_inp)}
    else:
        raise SystemExit(f"unknown implementation {impl}")
    out["peak_rss_mb"] = _peak_rss_mb()
    if impl == "ours-cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["data_rss_mb"] = rss_data
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="cuhk,ufine3c", help="comma-separated: cuhk, ufine3c")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of ours; the median is reported (default 7)")
    ap.add_argument("--official", metavar="PATH", help="the released mSD_Calculator.py, to time against")
    ap.add_argument("--irra", metavar="PATH", help="IRRA's utils/metrics.py, to time against")
    ap.add_argument("--numpy-too", action="store_true", help="also time ours with numpy inputs")
    ap.add_argument("--cuda", action="store_true", help="also time ours with CUDA tensors (needs a GPU)")
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "PROBLEM"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.dim, args.seed, args.path, args.repeat)))
        return 0

    impls: list[tuple[str, str | None]] = [("ours", None)]
    if args.numpy_too:
        impls.append(("ours-numpy", None))
    if args.cuda:
        impls.append(("ours-cuda", None))
    for name, path in (("official", args.official), ("irra", args.irra)):
        if path:
            if not os.path.isfile(path):
                raise SystemExit(f"{name}: no such file {path}")
            impls.append((name, os.path.abspath(path)))

    print(f"metrics speed: {os.cpu_count()} CPUs, d={args.dim}, python {sys.version.split()[0]}")
    rows = []
    for problem in args.problems.split(","):
        if problem not in PROBLEMS:
            raise SystemExit(f"unknown problem {problem}; choose from {', '.join(PROBLEMS)}")
        base = None
        for impl, path in impls:
            cmd = [sys.executable, __file__, "--worker", impl, problem, "--dim", str(args.dim), "--seed", str(args.seed),
                   "--repeat", str(args.repeat)]
            if path:
                cmd += ["--path", path]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{impl} on {problem} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if impl == "ours":
                base = r
            rows.append(r)
            ratio_t = f"{r['wall_s'] / base['wall_s']:.1f}x" if base else "-"
            ratio_m = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.1f}x" if base else "-"
            m = r["metrics"]
            extra = (
                f"  [median of {args.repeat}, min {r['wall_min_s']:.3f} s; first call {r['first_call_s']:.2f} s; "
                f"official-variant run {r['official_wall_s']:.2f} s]"
                if "first_call_s" in r
                else ""
            )
            print(
                f"{problem:8s} {impl:11s} wall {r['wall_s']:7.3f} s ({ratio_t:>6s})  peak RSS {r['peak_rss_mb']:7.0f} MB "
                f"({ratio_m:>5s}, data alone {r['data_rss_mb']:.0f} MB)  R1 {m['R1']:.3f} mAP {m['mAP']:.3f}"
                + (f" mSD {m['mSD']:.4f}" if "mSD" in m else "")
                + (f" [our official variant {r['official_mSD']:.4f}]" if "official_mSD" in r else "")
                + extra
                + (f" GPU peak {r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r else "")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
