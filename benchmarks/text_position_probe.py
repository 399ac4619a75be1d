"""How much a model leans on where words sit: R1 with each caption rephrased by fixed rules.

    python benchmarks/text_position_probe.py --run demo_out/run --data demo_out/data/ufine_synth.json [--split val]

Every caption of the split is rewritten four ways that keep its content but move its words:
a spoken prefix ("So there's this "), a short prefix ("Well, "), semicolons for full stops, and
the sentences in reverse order. A text encoder that reads words by their absolute place loses
R1 under the prefixes; one that reads what the words say barely moves. The default split is val,
so the probe can guide training choices without looking at test or at the 3C set. Prints R1 and
mAP per rephrasing beside the captions as written (the baseline, same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable

Rule = Callable[[str], str]


def _sentences(text: str) -> list[str]:
    """The caption's sentences, each without its final full stop."""
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text.strip()) if s.strip()]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


RULES: dict[str, Rule] = {
    "as written": lambda t: t,
    "'So there's this ' prefix": lambda t: "So there's this " + _lower_first(t),
    "'Well, ' prefix": lambda t: "Well, " + _lower_first(t),
    "semicolons for full stops": lambda t: re.sub(r"\.\s+(?=\S)", "; ", t.strip()),
    "sentences reversed": lambda t: " ".join(reversed(_sentences(t))),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder or checkpoint")
    ap.add_argument("--data", required=True, help="annotation file or dataset folder")
    ap.add_argument("--split", default="val", help="split to probe (default val: a development split)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from ufinebench.data.annotations import read_annotations
    from ufinebench.errors import UFineBenchError
    from ufinebench.evaluate import evaluate_checkpoint

    try:
        samples = read_annotations(args.data).split(args.split)
    except UFineBenchError as e:
        print(f"text_position_probe: {e}", file=sys.stderr)
        return 2
    if not samples:
        print(f"text_position_probe: no samples in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    print(f"{args.run} on {args.split} ({len(samples)} images)")
    print(f"{'captions':<28} {'R1':>6} {'mAP':>6}")
    for name, rule in RULES.items():
        rephrased = [dataclasses.replace(s, captions=tuple(rule(c) for c in s.captions)) for s in samples]
        res = evaluate_checkpoint(args.run, rephrased, device=args.device)
        print(f"{name:<28} {res['overall']['R1']:6.1f} {res['overall']['mAP']:6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
