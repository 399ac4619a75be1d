"""The ``ufinebench`` command line: parses arguments and calls library functions.

Every user-facing failure is a :class:`~ufinebench.errors.UFineBenchError`, printed as one line
on stderr with exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ufinebench import __version__
from ufinebench.errors import UFineBenchError

EXIT_USAGE = 2


def _cmd_metrics(args: argparse.Namespace) -> int:
    from ufinebench.io import load_metrics_npz, write_json
    from ufinebench.metrics import metrics_from_features, metrics_from_similarity
    from ufinebench.outputs import check_outputs
    from ufinebench.tables import format_table

    check_outputs({"--json": args.json}, [args.file])
    arrays = load_metrics_npz(args.file)
    progress = sys.stderr.isatty()
    common = dict(msd=args.msd, direction=args.direction, progress=progress)
    if "similarity" in arrays:
        res = metrics_from_similarity(arrays["similarity"], arrays["query_ids"], arrays["gallery_ids"], **common)
    else:
        res = metrics_from_features(
            arrays["query_features"], arrays["gallery_features"], arrays["query_ids"], arrays["gallery_ids"], **common
        )
    d = res.as_dict()
    label = f"{args.direction} (mSD: {args.msd})"
    print(format_table({label: d}, extra=("queries", "queries_without_positive")))
    if res.msd_note:
        print(f"note: {res.msd_note}", file=sys.stderr)
    if res.num_queries == 0:
        print("warning: no query has a positive in the gallery; every metric is reported as 0", file=sys.stderr)
    elif res.num_without_positive:
        print(
            f"note: {res.num_without_positive} queries have no positive in the gallery and were left out",
            file=sys.stderr,
        )
    if args.json:
        keys = ("R1", "R5", "R10", "mAP", "mINP", "mSD", "queries", "queries_without_positive")
        write_json(args.json, {k: d[k] for k in keys})
        print(f"wrote {args.json}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ufinebench.data.annotations import DataError, check_images, read_annotations

    if not Path(args.dataset).exists():
        raise UFineBenchError(f"{args.dataset}: no such file or folder")
    try:
        ann = read_annotations(args.dataset, args.format)
    except DataError as exc:
        if "unknown format" in str(exc):
            raise
        print(f"{args.dataset}: {exc}")
        print("INVALID: the annotation file cannot be read")
        return 1
    problems = list(ann.problems)
    if args.check_images:
        problems += check_images(ann.samples, workers=args.workers, progress=sys.stderr.isatty())
        problems.sort(key=lambda p: (-1 if p.index is None else p.index))
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    shown = problems if args.max_problems <= 0 else problems[: args.max_problems]
    for p in shown:
        print(f"{ann.path}: {p}")
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more (use --max-problems 0 to list all)")
    checked = "images decoded" if args.check_images else "image files present"
    summary = (
        f"{ann.format}, {ann.num_records:,} records, {len(ann.samples):,} usable, {checked}: "
        f"{len(errors)} error{'s' if len(errors) != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}"
    )
    print(("OK: " if not errors else "INVALID: ") + summary)
    return 0 if not errors else 1


def _cmd_stats(args: argparse.Namespace) -> int:
    from ufinebench.data.annotations import read_annotations
    from ufinebench.data.stats import dataset_stats, format_stats, plot_word_histogram
    from ufinebench.io import write_json
    from ufinebench.outputs import check_outputs, dataset_inputs

    check_outputs({"--json": args.json, "--plot": args.plot}, dataset_inputs(args.dataset, args.format))
    ann = read_annotations(args.dataset, args.format)
    if ann.errors:
        print(
            f"note: {len(ann.errors)} invalid records left out of the figures (see `ufinebench validate {args.dataset}`)",
            file=sys.stderr,
        )
    if not ann.samples:
        raise UFineBenchError(f"{ann.path}: no usable records")
    st = dataset_stats(ann)
    print(format_stats(st))
    if args.json:
        write_json(args.json, st)
        print(f"wrote {args.json}")
    if args.plot:
        plot_word_histogram(st, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    from ufinebench.data.annotations import FORMATS

    p.add_argument("dataset", metavar="DATASET", help="annotation file, or the dataset folder that holds it")
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        help="dataset format when it cannot be inferred from the file name or fields",
    )


def _parse_pair(text: str, sep: str, what: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.lower().split(sep))
    except ValueError:
        raise UFineBenchError(f"{what} must look like N{sep}M, got {text!r}") from None
    return a, b


def _cmd_synth(args: argparse.Namespace) -> int:
    import os

    from ufinebench.synth.build import SynthConfig, build

    cfg = SynthConfig(
        identities=args.identities,
        images_per_id=_parse_pair(args.images_per_id, ":", "--images-per-id"),
        size=_parse_pair(args.size, "x", "--size"),
        seed=args.seed,
        extra_3c_images=args.extra_3c_images,
    )
    workers = args.workers or (os.cpu_count() or 1)
    s = build(args.out, cfg, workers=workers, overwrite=args.overwrite, force=args.force, progress=sys.stderr.isatty())
    print(
        f"UFine-Synth: {s['identities']} identities, {s['images']} images in {s['seconds']} s "
        f"({s['images'] / max(s['seconds'], 1e-9):.0f} images/s with {workers} workers)"
    )
    for split, v in s["splits"].items():
        print(f"  {split:5s} {v['identities']:6d} identities {v['images']:7d} images")
    print(f"  3C set: {s['captions']['3c_images']} images, {s['captions']['3c_queries']} queries")
    amb = ", ".join(f"{g} {v:.2f}" for g, v in s["ambiguity_test_identities"].items())
    print(f"  test identities consistent with a caption, mean by granularity: {amb}")
    print(f"wrote {args.out} (see {args.out}/CARD.md and {args.out}/preview.png)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ufinebench.config import load_config
    from ufinebench.train import train

    if args.resume:
        if args.config or args.set:
            raise UFineBenchError("--resume continues a run with its own config; drop --config/--set")
        run = train(resume=args.resume, progress=sys.stderr.isatty())
    else:
        if not args.config:
            raise UFineBenchError("give --config CONFIG.yaml (or a preset name such as synth-cpu-small), or --resume RUN_DIR")
        if args.dry_run:
            from ufinebench.train import dry_run

            r = dry_run(load_config(args.config, args.set), steps=args.dry_run, progress=sys.stderr.isatty())
            mem = f", peak GPU memory {r['peak_gpu_gb']} GB" if "peak_gpu_gb" in r else ""
            print(f"dry run of {args.config}: {r['steps']} steps of batch {r['batch_size']} at {r['steps_per_s']} steps/s "
                  f"(loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}), validation {'run' if r['validated'] else 'not configured'}, "
                  f"final evaluation on {r['final_eval']['split']} ({r['final_eval']['queries']} queries); "
                  f"peak process memory {r['peak_cpu_rss_gb']} GB{mem}; {r['seconds']} s in all. Nothing was kept.")
            return 0
        run = train(load_config(args.config, args.set), progress=sys.stderr.isatty())
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run finished: {run} (checkpoints in {run}/checkpoints, log in {run}/log.jsonl)")
    return 0


def _cmd_import_clip(args: argparse.Namespace) -> int:
    from ufinebench.model.pretrained import import_clip

    size = _parse_pair(args.image_size, "x", "--image-size")
    out = import_clip(args.weights, args.out, image_size=size, context_length=args.text_length, force=args.force,
                      text_positions=args.text_positions, activation=args.activation, model_name=args.model_name)
    print(f"wrote {out}: CLIP encoders at {size[0]}x{size[1]}, {args.text_length} text positions (use train.init_from={out})")
    return 0


def _nonnegative(value: str, flag: str, also: str = "") -> float:
    """A finite number >= 0 from a command-line value, else a one-line error naming the flag."""
    try:
        x = float(value)
    except ValueError:
        raise UFineBenchError(f"{flag}: a number{also}, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise UFineBenchError(f"{flag}: must be a finite number >= 0, got {value!r}")
    return x


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import evaluate_checkpoint
    from ufinebench.io import save_metrics_npz, write_json
    from ufinebench.outputs import check_outputs, dataset_inputs
    from ufinebench.tables import format_table

    if args.rerank_topk < 0:
        raise UFineBenchError("--rerank-topk must be positive")
    if not (args.checkpoint or args.scores or args.write_order):
        raise UFineBenchError("give --checkpoint RUN (ours), --scores FILE.npz (any model's), or --write-order ORDER.json")
    if len(args.name) > len(args.scores):
        raise UFineBenchError(f"{len(args.name)} --name for {len(args.scores)} --scores")
    if args.save_features and not args.checkpoint:
        raise UFineBenchError("--save-features writes the features a --checkpoint computes; --scores files are saved already")
    weight: float | None | str = args.rerank_weight
    if weight == "matcher":
        weight = None
    elif weight != "checkpoint":
        weight = _nonnegative(args.rerank_weight, "--rerank-weight", ", 'matcher' or 'checkpoint'")
    check_weight: float | str = "checkpoint"
    if args.check_weight != "checkpoint":
        check_weight = _nonnegative(args.check_weight, "--check-weight", " or 'checkpoint'")
    if args.granularity_weight is not None and not (math.isfinite(args.granularity_weight) and args.granularity_weight >= 0):
        raise UFineBenchError(f"--granularity-weight: must be a finite number >= 0, got {args.granularity_weight!r}")
    import os

    check_outputs({"--json": args.json, "--save-features": args.save_features, "--report": args.report, "--write-order": args.write_order},
                  [*dataset_inputs(args.data, args.format), *args.checkpoint, *args.scores], folders=["--report"])

    ann = load_dataset(args.data, args.format, split=args.split, check_files=bool(args.checkpoint))  # scores need no images
    samples = ann.split(args.split)
    if args.write_order:
        from ufinebench.data.datasets import evaluation_keys

        qk, gk = evaluation_keys(samples)
        write_json(args.write_order, {"dataset": str(ann.path), "split": args.split, "query_keys": qk, "gallery_keys": gk})
        print(f"wrote {args.write_order}: {len(qk)} query keys (FILE_PATH#N), {len(gk)} gallery keys (FILE_PATH), in evaluation order")
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank = 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: the processes share the encoding
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank = dist.get_rank()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    results, names = [], []
    for ck in args.checkpoint:
        name = Path(ck).resolve().name
        if name in ("best", "last") or name.startswith("epoch_"):
            name = Path(ck).resolve().parent.parent.name + "/" + name
        while name in names:
            name += "'"
        names.append(name)
        r = evaluate_checkpoint(ck, samples, rerank_topk=args.rerank_topk, msd=args.msd, device=device,
                                batch_size=args.batch_size, progress=sys.stderr.isatty(), rerank_weight=weight,
                                granularity_weight=args.granularity_weight, check_weight=check_weight)
        r["name"] = name
        results.append(r)
    for i, path in enumerate(args.scores):
        from ufinebench.evaluate import evaluate_scores
        from ufinebench.io import load_scores_npz

        z = load_scores_npz(path)
        name = args.name[i] if i < len(args.name) else Path(path).stem
        while name in names:
            name += "'"
        names.append(name)
        try:
            results.append(evaluate_scores(z.get("similarity"), z.get("query_keys"), z.get("gallery_keys"), samples,
                                           query_features=z.get("query_features"), gallery_features=z.get("gallery_features"),
                                           msd=args.msd, name=name))
        except UFineBenchError as exc:
            raise UFineBenchError(f"{path}: {exc}") from None
    if rank != 0:  # only the first process reports
        return 0
    from ufinebench.evaluate import per_query_record

    for r in results:  # per-query results in the JSON: what paired comparisons (`compare`) need
        r["per_query"] = per_query_record(r["_features"])
    rows = {}
    for r in results:
        rows[r["name"]] = r["overall"]
        if "rerank" in r:
            w, v = r["rerank"]["weight"], r["rerank"].get("check_weight", 0.0)
            how = "matcher alone" if w is None else f"weight {w:g}" + (f", attribute check {v:g}" if v else "")
            rows[f"{r['name']} + re-rank top {r['rerank']['topk']}, {how} ({r['rerank']['seconds']:.1f} s)"] = r["rerank"]["overall"]
    print(f"{ann.path} [{args.split}]: {len(samples)} images, text-to-image, mSD {args.msd}\n")
    print(format_table(rows))
    for key in ("source", "granularity", "style", "words"):
        if any(key in r["breakdown"] for r in results):
            table = {f"{r['name']} | {v}": d for r in results for v, d in r["breakdown"].get(key, {}).items()}
            print(f"\nby {key}:")
            print(format_table(table))
    if args.json:
        write_json(args.json, {"dataset": str(ann.path), "split": args.split, "msd_variant": args.msd,
                               "models": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]})
        print(f"\nwrote {args.json}")
    if args.save_features:
        ours = [r for r in results if r["arch"] != "scores"]  # features computed here (--scores files exist already)
        for i, r in enumerate(ours, 1):
            f = r["_features"]
            target = args.save_features if len(ours) == 1 else str(Path(args.save_features).with_suffix("")) + f"_{i}.npz"
            save_metrics_npz(target, query_features=f["query_features"], gallery_features=f["gallery_features"],
                             query_ids=f["query_ids"], gallery_ids=f["gallery_ids"])
            print(f"wrote {target}")
    if args.report:
        from ufinebench.report import write_report

        page = write_report(results, args.report, dataset=str(ann.path), split=args.split, force=args.force)
        print(f"wrote {page}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ufinebench.limits import read_json
    from ufinebench.significance import paired_bootstrap
    from ufinebench.tables import format_table

    if args.bootstrap < 100:
        raise UFineBenchError("--bootstrap: at least 100 resamples")
    rows: dict[str, dict] = {}
    paired: list[tuple[str, dict]] = []  # (model name, per-query results) of every model that has them
    for path in args.files:
        data = read_json(path, "a results file", limit=1 << 30)
        if isinstance(data, dict) and "models" in data:
            for m in data["models"]:
                rows[f"{m.get('name', Path(path).stem)}"] = m["overall"]
                if "rerank" in m:
                    rows[f"{m.get('name', Path(path).stem)} + re-rank"] = m["rerank"]["overall"]
                if "per_query" in m:
                    paired.append((m.get("name", Path(path).stem), m["per_query"]))
        elif isinstance(data, dict) and "R1" in data:
            rows[Path(path).stem] = data
        else:
            raise UFineBenchError(f"{path}: not an output of `ufinebench eval --json` or `ufinebench metrics --json`")
    print(format_table(rows, markdown=args.markdown))
    comparisons = []
    for i, (na, pa) in enumerate(paired):
        for nb, pb in paired[i + 1 :]:
            if pa["query_keys"] != pb["query_keys"]:
                continue  # different queries: no pairing
            row = {"pair": f"{na} - {nb}"}
            for metric, key in (("R1", "R1"), ("mAP", "AP"), ("mSD", "SD")):
                iv = paired_bootstrap(pa[key], pb[key], n_boot=args.bootstrap, seed=args.seed)
                row[f"d{metric}"] = f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]"
            comparisons.append(row)
    if comparisons:
        print(f"\npaired bootstrap over queries ({args.bootstrap} resamples, seed {args.seed}): difference, 95 % interval")
        width = max(len(r["pair"]) for r in comparisons)
        print(f"{'pair':{width}}  {'dR1':>24}  {'dmAP':>24}  {'dmSD':>24}")
        for r in comparisons:
            print(f"{r['pair']:{width}}  {r['dR1']:>24}  {r['dmAP']:>24}  {r['dmSD']:>24}")
    return 0


def _cmd_build_3c(args: argparse.Namespace) -> int:
    from ufinebench.outputs import check_outputs, dataset_inputs
    from ufinebench.threec.build import build_3c
    from ufinebench.threec.rewriters import LLMRewriter, OfflineRewriter

    check_outputs({"--out": args.out, "--cache": args.cache}, [p for src in args.sources for p in dataset_inputs(src)],
                  folders=["--cache"])
    if args.rewriter == "llm":
        if not (args.llm_url and args.llm_model):
            raise UFineBenchError("--rewriter llm needs --llm-url URL and --llm-model NAME (API key from $UFINEBENCH_LLM_API_KEY)")
        rw: LLMRewriter | OfflineRewriter = LLMRewriter(args.llm_url, args.llm_model, cache_dir=args.cache, prompt_version=args.prompt_version,
                         timeout=args.timeout, retries=args.retries, concurrency=args.concurrency)
    else:
        rw = OfflineRewriter(args.prompt_version)
    prov = build_3c(args.sources, args.out, rewriter=rw, granularities=[g.strip() for g in args.granularities.split(",")],
                    styles=[s.strip() for s in args.styles.split(",")], per_caption=args.per_caption, seed=args.seed,
                    progress=sys.stderr.isatty())
    print(f"{args.out}: {prov['images']} images, {prov['identities']} identities, {prov['queries']} queries "
          f"({prov['rewrites']} rewrites by {prov['rewriter']}) from {', '.join(prov['sources'])}")
    for g, v in prov["words_per_granularity"].items():
        print(f"  {g:9s} {v['captions']:6d} captions, {v['mean']:5.1f} words (min {v['min']}, max {v['max']})")
    if "llm" in prov:
        llm = prov["llm"]
        print(f"  LLM: {llm['requests']} requests, {llm['cache_hits']} cached, {llm['retries']} retries, {llm['fallbacks']} fallbacks "
              f"{llm['failures']}")
    print(f"provenance: {args.out}.provenance.json")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from ufinebench.serve.index import build_index

    info = build_index(args.checkpoint, args.images, args.out, fmt=args.format, add=args.add, kind=args.kind,
                       batch_size=args.batch_size, device=args.device, progress=sys.stderr.isatty(), force=args.force)
    print(f"{args.out}: {info['count']} images ({info['added']} encoded now), {info['kind']} index, dimension {info['dim']}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from ufinebench.serve.index import SearchIndex

    if not args.text.strip():
        raise UFineBenchError("the description is empty")
    if args.k < 1:
        raise UFineBenchError("-k must be at least 1")
    index = SearchIndex(args.index, device=args.device)
    read = index.read(args.text, normalize=not args.no_normalize)
    if read.replaced or read.unknown:  # how the model read the description, on stderr so that --json stays parseable
        changes = [f"{a} -> {b or '(dropped)'}" for a, b in read.replaced] + [f"not understood: {', '.join(read.unknown)}"] * bool(read.unknown)
        print("read as: " + "; ".join(changes), file=sys.stderr)
    hits = index.search(read.text, args.k, normalize=False)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>7}  {'person':>6}  image")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:7.4f}  {'-' if h.person_id is None else h.person_id:>6}  {h.path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from ufinebench.serve.app import LOOPBACK_HOSTS, create_app, server_config

    torch.set_num_threads(1)  # requests run side by side in the server's thread pool (61 vs 49 req/s on 2 cores)
    hosts = list(LOOPBACK_HOSTS) + [h for h in [args.host] if h not in ("0.0.0.0", "::")] + list(args.allowed_host or [])
    app = create_app(args.index, allowed_hosts=hosts)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines; Host headers accepted: {', '.join(hosts)}",
              file=sys.stderr)
    print(f"serving {args.index} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.Server(server_config(app, args.host, args.port)).run()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ufinebench.demo import run_demo

    return run_demo(out=args.out, quick=args.quick, fresh=args.fresh, force=args.force)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the full usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used to render --help in the docs)."""
    parser = _Parser(
        prog="ufinebench",
        description="Ultra-fine-grained text-based person retrieval (UFineBench): data, UFine-Synth, metrics "
        "(R@K, mAP, mINP, mSD), CFAM and baselines, training, evaluation, 3C-style sets, search.",
    )
    parser.add_argument("--version", action="version", version=f"ufinebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "metrics",
        help="compute R1 R5 R10 mAP mINP mSD from a .npz of similarities or features",
        description=(
            "Compute retrieval metrics from a .npz holding either `similarity` (Q x G), `query_ids`, "
            "`gallery_ids`, or `query_features` (Q x D), `gallery_features` (G x D), `query_ids`, "
            "`gallery_ids`. Queries are texts, the gallery is images; ranking is by descending "
            "similarity with ties broken by gallery index. Queries without a positive in the gallery "
            "are left out and counted."
        ),
    )
    p.add_argument("file", metavar="FILE.npz", help="similarities or features with person ids")
    p.add_argument(
        "--direction", choices=["t2i", "i2t"], default="t2i", help="t2i: texts query images (default); i2t: images query texts"
    )
    p.add_argument(
        "--msd",
        choices=["paper", "official"],
        default="paper",
        help="paper: mSD as defined in the paper (default); official: reproduce the released script's numbers",
    )
    p.add_argument("--json", metavar="OUT", help="also write R1 R5 R10 mAP mINP mSD queries queries_without_positive as JSON")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser(
        "validate",
        help="check a dataset's annotations (and images) and report every problem",
        description=(
            "Check every record of an annotation file: missing or wrong-typed fields, empty captions, "
            "non-integer ids, unknown splits, one image listed with two ids, missing image files; with "
            "--check-images also unreadable, truncated or zero-size images. Exit 0 when clean, 1 otherwise. "
            "Record numbers are 0-based positions in the file's list."
        ),
    )
    _add_dataset_args(p)
    p.add_argument("--check-images", action="store_true", help="decode every image (slower)")
    p.add_argument("--workers", type=_positive, default=4, help="threads for --check-images (default 4)")
    p.add_argument("--max-problems", type=int, default=200, help="list at most this many problems (0: all; default 200)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "stats",
        help="identities, images, captions per split; words per caption; vocabulary",
        description="Dataset statistics per split: counts, words per caption (mean, median, 5th/95th "
        "percentile, histogram), captions per image, images per identity, vocabulary size.",
    )
    _add_dataset_args(p)
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the word-count histogram")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser(
        "synth",
        help="generate UFine-Synth, the embedded ultra-fine-grained benchmark",
        description=(
            "Generate a UFine-Synth dataset into OUT: images, ufine_synth.json (UFine6926 format, fine captions), "
            "ufine_synth_coarse.json (coarse twin), ufine_synth_3c.json (UFine3C format: held-out domains, "
            "granularities and styles), identities.jsonl, preview.png and CARD.md. Same options, same bytes."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (absent or empty, or a UFine-Synth dataset with --overwrite)")
    p.add_argument("--identities", type=int, default=1000, help="number of persons (default 1000)")
    p.add_argument("--images-per-id", default="2:5", metavar="A:B", help="images per person, drawn from A..B (default 2:5)")
    p.add_argument("--size", default="384x128", metavar="HxW", help="image size (default 384x128, the real aspect)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPU cores)")
    p.add_argument("--extra-3c-images", type=int, default=2, help="held-out-domain images per test person (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace the UFine-Synth dataset this command wrote in OUT (nothing else)")
    p.add_argument("--force", action="store_true", help="write into OUT although it holds other files (they are kept)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "train",
        help="train CFAM or a baseline (torchrun --nproc_per_node N -m ufinebench train ... for DDP)",
        description=(
            "Train from a YAML config (or a preset in configs/: synth-cpu-small, ufine6926-vitb16, "
            "ufine6926-vitl14, cuhk-pedes-vitb16). Under torchrun each process takes its shard of every "
            "global batch; batch-level losses gather the whole batch, so N processes match one."
        ),
    )
    p.add_argument("--config", metavar="CONFIG", help="YAML file or preset name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. train.lr=1e-4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--dry-run", type=_positive, nargs="?", const=5, default=0, metavar="STEPS",
                   help="run STEPS (default 5) training steps on your data and model through validation and the final "
                   "evaluation (at most 64 records each), print steps/s and peak memory, keep nothing")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "import-clip",
        help="convert CLIP weights (OpenAI TorchScript, state dict, Hugging Face folder) into a checkpoint",
        description="Convert CLIP ViT weights (OpenAI, open_clip or Hugging Face) into our checkpoint format, interpolating image and text "
        "position embeddings. TorchScript archives are read without running their code or unpickling arbitrary objects.",
    )
    p.add_argument("weights", metavar="WEIGHTS", help="OpenAI's ViT-B-16.pt (TorchScript), a plain state dict, or a Hugging Face "
                   "CLIPModel folder (config.json + model.safetensors)")
    p.add_argument("--activation", choices=["quick_gelu", "gelu"],
                   help="the encoders' MLP activation; needed for a plain state dict (OpenAI's: quick_gelu, LAION open_clip: gelu)")
    p.add_argument("--model-name", help="open_clip model name of a plain state dict (e.g. ViT-B-16, ViT-B-16-quickgelu): sets the activation")
    p.add_argument("--image-size", default="384x128", metavar="HxW", help="target image size (default 384x128)")
    p.add_argument("--text-length", type=_positive, default=168, help="target text length in tokens (default 168)")
    p.add_argument("--text-positions", choices=["stretch", "long-clip", "extend"], default="stretch",
                   help="how CLIP's 77 text positions reach --text-length: stretch all (the paper's, default), "
                   "long-clip (keep the first 20, stretch the rest), extend (keep all 77, copy the last ones into new slots)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="checkpoint folder to write (not the folder of WEIGHTS.pt)")
    p.add_argument("--force", action="store_true", help="write into OUT although it holds other files (they are kept)")
    p.set_defaults(func=_cmd_import_clip)

    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints on a dataset split: metrics, 3C breakdowns, re-ranking, HTML report",
        description="Encode the gallery (unique images) and queries (every caption) of a split, compute R1 R5 R10 mAP "
        "mINP mSD overall and per source / granularity / style / caption length, optionally re-rank each query's top K "
        "with the matcher, and write JSON, features and a self-contained HTML report.",
    )
    p.add_argument("--checkpoint", action="append", default=[], metavar="RUN_OR_CKPT", help="run folder or checkpoint (repeat to compare)")
    p.add_argument("--scores", action="append", default=[], metavar="FILE.npz",
                   help="scores of a model that is not ours: 'similarity' (Q, G; higher = more similar) or 'query_features' and "
                   "'gallery_features', with 'query_keys' / 'gallery_keys' (FILE_PATH#N / FILE_PATH) or in --write-order's order "
                   "(repeatable; beside --checkpoint)")
    p.add_argument("--name", action="append", default=[], metavar="NAME", help="a name for each --scores, in order (default: the file name)")
    p.add_argument("--write-order", metavar="ORDER.json", help="only write the split's query and gallery keys, in evaluation order, and stop")
    p.add_argument("--data", required=True, metavar="DATASET", help="annotation file, or the dataset folder that holds it")
    from ufinebench.data.annotations import FORMATS

    p.add_argument("--format", choices=list(FORMATS), help="dataset format when it cannot be inferred")
    p.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for every record)")
    p.add_argument("--rerank-topk", type=int, default=0, metavar="K", help="re-rank each query's top K with the matcher")
    p.add_argument("--rerank-weight", default="checkpoint", metavar="W",
                   help="re-rank score = cos / T + W * matcher logit; 'matcher' orders by the matcher alone; "
                        "default: the weight training chose on the val split (kept in the checkpoint)")
    p.add_argument("--check-weight", default="checkpoint", metavar="V",
                   help="re-ranking adds V * the attribute check (mean log-probability of the query's attribute words, from the "
                        "image's word head; models trained with data.attribute_words); default: the weight chosen on val")
    p.add_argument("--granularity-weight", type=float, metavar="W",
                   help="retrieval score = (global cosine + W * granularity cosine) / (1 + W) for CFAM checkpoints; "
                        "default: the checkpoint's model.granularity_weight")
    p.add_argument("--msd", choices=["paper", "official"], default="paper", help="mSD variant (default paper)")
    p.add_argument("--json", metavar="OUT", help="write all figures as JSON (input of `ufinebench compare`)")
    p.add_argument("--report", metavar="DIR", help="write DIR/index.html")
    p.add_argument("--save-features", metavar="OUT.npz", help="write features and ids (input of `ufinebench metrics`)")
    p.add_argument("--force", action="store_true", help="write the report into DIR although it holds other files (they are kept)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("compare", help="paper-style table of several eval/metrics JSON files",
                       description="Put the results of `ufinebench eval --json` (or `metrics --json`) files side by side; for models "
                       "evaluated on the same queries, the difference in R1 / mAP / mSD with a paired bootstrap interval over queries.")
    p.add_argument("files", nargs="+", metavar="FILE.json")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="resamples of the paired bootstrap over queries for each pair of models evaluated on the same queries (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "build-3c",
        help="build a UFine3C-style set (cross domain, granularity, style) from any datasets",
        description="Pool the test images of several datasets (source = dataset) and rewrite every caption at other "
        "granularities and in other styles, offline or with an OpenAI-compatible chat-completions server.",
    )
    p.add_argument("--from", dest="sources", action="append", required=True, metavar="DATASET", help="a source dataset (repeatable)")
    p.add_argument("--out", required=True, metavar="FILE.json")
    p.add_argument("--rewriter", choices=["offline", "llm"], default="offline")
    p.add_argument("--llm-url", metavar="URL", help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--llm-model", metavar="NAME")
    p.add_argument("--granularities", default="fine,medium,coarse")
    p.add_argument("--styles", default="plain,narrative,witness,terse,colloquial")
    p.add_argument("--per-caption", type=_positive, default=2, metavar="N", help="rewrites per original caption (default 2)")
    p.add_argument("--concurrency", type=int, default=4, metavar="C")
    p.add_argument("--cache", metavar="DIR", help="LLM answer cache (a rerun is free; an interrupted build resumes)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per LLM request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="LLM retries before the offline fallback (default 3)")
    p.add_argument("--prompt-version", default="v1")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_build_3c)

    p = sub.add_parser("index", help="encode a gallery of images into a searchable index",
                       description="Encode images (a folder, or a dataset's images) with a checkpoint into an index folder: "
                       "embeddings, metadata and a FAISS index (exact for small galleries, HNSW from 50,000 images). "
                       "Resumable; --add appends new images.")
    p.add_argument("--checkpoint", required=True, metavar="C")
    p.add_argument("--images", required=True, metavar="DIR_OR_DATASET")
    p.add_argument("--format", help="dataset format when --images is an annotation file that needs one")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")
    p.add_argument("--add", action="store_true", help="append images that are not indexed yet")
    p.add_argument("--force", action="store_true", help="write into INDEX_DIR although it holds other files (they are kept)")
    p.add_argument("--kind", choices=["auto", "flat", "hnsw"], default="auto", help="FAISS index type (default auto)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="search an index with a description", description="Rank the indexed images for a description.")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("text", metavar="DESCRIPTION")
    p.add_argument("-k", type=_positive, default=10, help="results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-normalize", action="store_true",
                   help="pass the description to the model as written (by default a word-level model's unknown words, e.g. "
                        "'girl', 'striped', 'in her twenties', are replaced by words it knows; the replacements go to stderr)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("serve", help="web page and JSON API over an index", description="Serve POST /search, GET /images/{id}, "
                       "GET /healthz and a search page at /. Bound to 127.0.0.1 unless told otherwise.")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="also accept requests whose Host header is NAME (repeatable; '*' accepts any). "
                   "Loopback names and --host are always accepted; others are refused (DNS rebinding)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "demo",
        help="the main job: generate UFine-Synth, train CFAM, evaluate in-domain and 3C, write the report",
        description="End to end on the embedded benchmark: generate UFine-Synth, train the synth-cpu-small CFAM, "
        "evaluate in-domain and on the 3C-style set (with re-ranking), write an HTML report, print the tables. "
        "About 8 minutes on 2 CPU cores (an epoch took 22-29 s on the development machine; slower machines "
        "take up to 1.8x that); a rerun reuses the data and a finished training.",
    )
    p.add_argument("--out", metavar="DIR", default="demo_out", help="where the demo writes its files (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="a two-minute miniature (tiny data and model)")
    p.add_argument("--fresh", action="store_true", help="start over: delete what an earlier demo wrote in DIR (nothing else)")
    p.add_argument("--force", action="store_true", help="write into DIR although it holds files the demo did not write (they are kept)")
    p.set_defaults(func=_cmd_demo)
    return parser


def one_line(message: str, limit: int = 600) -> str:
    """An error message as one line of at most ``limit`` characters (inputs quoted in it can be long)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except UFineBenchError as exc:
        print(f"ufinebench {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied, a file vanishing mid-run: the system's reason, in one line
        if isinstance(exc, BrokenPipeError):  # output piped into `head` and the like: not an error
            sys.stderr.close()
            return 0
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"ufinebench {args.command}: error: {one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"ufinebench {args.command}: error: out of memory (try a smaller --batch-size or input)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ufinebench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
