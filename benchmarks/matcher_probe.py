"""Can the model tell look-alikes apart, and where does it fail: in the pixels or in the matcher?

    python benchmarks/matcher_probe.py --run demo_out/run --data demo_out/data [--run R2 --data D2 ...]
                                       [--probe-epochs 40] [--seed 0] [--json out.json]

For every caption of a look-alike family member (UFine-Synth ``standard``: persons differing from
the rest of their family in one small detail), a *pair*: the image the caption describes against
the image of another member of its family that the model's cosine ranks highest for that caption
(``hardest``: the cosine, having chosen it as the maximum of several, starts handicapped there), and
against a random image of a random other member (``any``: no scorer chose it). Pairwise accuracy (chance 50 %) of three scorers:

- ``cosine``: the dual encoder's retrieval similarity;
- ``matcher``: the model's cross-attention matcher as trained;
- ``fresh``: a new matcher of the same shape trained on both kinds of pairs of *training* persons with the
  encoders frozen (their image tokens and text inputs as evaluation computes them), then read on
  the others. It asks whether the frozen features carry the detail at all.

On training and test persons, by separating detail (the attribute slots in which the two persons
differ), and over the pairs whose caption names a value the look-alike does not have (``decidable``:
a perfect reader of the words could pick the right image; the rest are coin flips for anyone).
Several ``--run`` / ``--data`` pairs (e.g. the demo's 128 x 48 model and a 256 x 96 one) print side
by side. How to read it: ``fresh`` near ``cosine`` and both low on decidable pairs = the encoder
does not see the detail (no head can recover it); ``fresh`` far above ``matcher`` = the matcher
could learn it but its training did not teach it; high on training persons and low on test ones =
the features memorised persons.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Pairs:
    """One split's probe pairs: for pair i, query q[i] against its own image pos[i] and a look-alike's image neg[i]."""

    q: np.ndarray  # (P,) query rows
    pos: np.ndarray  # (P,) gallery rows
    neg: np.ndarray  # (P,) gallery rows
    detail: list[str]  # (P,) the slots in which the two persons differ, joined by "+"
    decidable: np.ndarray  # (P,) bool: the caption names a value the look-alike does not have


def read_identities(data: Path) -> dict[int, dict[str, Any]]:
    """identities.jsonl of a UFine-Synth folder: person id -> {"attributes", "family"}."""
    path = data / "identities.jsonl"
    if not path.is_file():
        sys.exit(f"matcher_probe: {path} not found (the probe reads UFine-Synth's identity records)")
    out = {}
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            out[int(r["id"])] = r
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def make_pairs(feats: Any, qn: np.ndarray, gn: np.ndarray, samples: list[Any], ids: dict[int, dict[str, Any]], hardest: bool = True,
               seed: int = 0) -> Pairs:
    """The probe's pairs from a split's features (``qn`` (Q, F) / ``gn`` (G, F): its unit query and gallery
    rows): against each caption's hardest look-alike image by the cosine (``hardest``), or against a
    random image of a random other member (``hardest`` False: no scorer chose it, so no scorer is
    handicapped by the choice)."""
    rng = np.random.default_rng(seed)
    fam_of = {pid: (r.get("family") or {}).get("family") for pid, r in ids.items() if (r.get("family") or {}).get("family_size", 1) > 1}
    members: dict[int, list[int]] = defaultdict(list)
    for pid, f in fam_of.items():
        members[f].append(pid)
    rows_of: dict[int, list[int]] = defaultdict(list)
    for g, pid in enumerate(feats.gallery_ids.tolist()):
        rows_of[pid].append(g)
    mentions = _mentions(samples, feats.query_keys)
    q, pos, neg, detail, dec = [], [], [], [], []
    for i, pid in enumerate(feats.query_ids.tolist()):
        if pid not in fam_of:
            continue
        others = [m for m in members[fam_of[pid]] if m != pid and rows_of.get(m)]
        if not others:
            continue
        cand = np.array([g for m in others for g in rows_of[m]])
        if hardest:
            g_neg = int(cand[np.argmax(gn[cand] @ qn[i])])
        else:
            pick = rows_of[others[int(rng.integers(len(others)))]]
            g_neg = int(pick[int(rng.integers(len(pick)))])
        other = int(feats.gallery_ids[g_neg])
        a, b = ids[pid]["attributes"], ids[other]["attributes"]
        q.append(i)
        pos.append(int(feats.query_image_index[i]))
        neg.append(g_neg)
        detail.append("+".join(_diff(a, b)) or "none")
        named = mentions.get(feats.query_keys[i], {})
        dec.append(any(k in b and str(b.get(k)) != str(v) for k, v in named.items()))
    return Pairs(np.array(q, dtype=np.int64), np.array(pos, dtype=np.int64), np.array(neg, dtype=np.int64), detail, np.array(dec, dtype=bool))


def _mentions(samples: list[Any], keys: list[str]) -> dict[str, dict[str, Any]]:
    """Query key (FILE_PATH#N) -> the attribute values its caption names (UFine-Synth's ``mentions`` caption tag)."""
    out = {f"{s.file_path}#{j}": (tags or {}).get("mentions", {}) for s in samples for j, tags in enumerate(s.caption_tags)}
    return {k: out.get(k, {}) for k in keys}


def cosine_scores(qn: np.ndarray, gn: np.ndarray, p: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """(P,), (P,): the retrieval cosine (unit rows ``qn`` / ``gn``) of each pair's own and look-alike image."""
    return (qn[p.q] * gn[p.pos]).sum(1), (qn[p.q] * gn[p.neg]).sum(1)


def _pad(seqs: list[torch.Tensor], masks: list[torch.Tensor], rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    seq = torch.nn.utils.rnn.pad_sequence([seqs[i].float() for i in rows], batch_first=True)  # (b, T, D)
    mask = torch.nn.utils.rnn.pad_sequence([masks[i] for i in rows], batch_first=True)  # (b, T)
    return seq, mask


@torch.no_grad()
def matcher_scores(matcher: torch.nn.Module, feats: Any, p: Pairs, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(P,), (P,): a matcher's logit for each pair's own and look-alike image."""
    matcher.eval()
    out = []
    for img in (p.pos, p.neg):
        part = []
        for i0 in range(0, len(p.q), batch):
            seq, mask = _pad(feats.query_match_seq, feats.query_match_mask, p.q[i0 : i0 + batch])
            part.append(matcher(seq, mask, feats.gallery_tokens[torch.from_numpy(img[i0 : i0 + batch])].float()).float())
        out.append(torch.cat(part).numpy() if part else np.zeros(0, np.float32))
    return out[0], out[1]


def train_fresh(template: torch.nn.Module, feats: Any, p: Pairs, epochs: int, seed: int, batch: int = 128) -> torch.nn.Module:
    """A new matcher shaped like ``template`` trained on the pairs with BCE (own image 1, look-alike 0), features frozen."""
    torch.manual_seed(seed)
    m = type(template)(template.ln.normalized_shape[0], len(template.layers), template.layers[0].cross_attn.heads)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    g = np.random.default_rng(seed)
    m.train()
    for _ in range(epochs):
        order = g.permutation(len(p.q))
        for i0 in range(0, len(order), batch):
            rows = order[i0 : i0 + batch]
            seq, mask = _pad(feats.query_match_seq, feats.query_match_mask, p.q[rows])
            imgs = feats.gallery_tokens[torch.from_numpy(np.concatenate([p.pos[rows], p.neg[rows]]))].float()
            logits = m(torch.cat([seq, seq]), torch.cat([mask, mask]), imgs)  # (2b,)
            target = torch.cat([torch.ones(len(rows)), torch.zeros(len(rows))])
            loss = F.binary_cross_entropy_with_logits(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m


def accuracy_rows(p: Pairs, scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Pairwise accuracy (%) of each scorer: all pairs, decidable ones, and decidable ones by separating detail."""
    groups: dict[str, np.ndarray] = {"all": np.ones(len(p.q), bool), "decidable": p.decidable}
    details = np.array(p.detail)
    for d in sorted(set(p.detail)):
        sel = p.decidable & (details == d)
        if sel.sum() >= 10 and "+" not in d:
            groups[d] = sel
    rows = {}
    for name, sel in groups.items():
        row: dict[str, Any] = {"pairs": int(sel.sum())}
        for s, (a, b) in scores.items():
            row[s] = round(100.0 * float(((a[sel] > b[sel]) + 0.5 * (a[sel] == b[sel])).mean()), 1) if sel.any() else None
        rows[name] = row
    return rows


def probe(run: str, data: Path, epochs: int, seed: int) -> dict[str, Any]:
    from ufinebench.data.annotations import load_dataset
    from ufinebench.evaluate import extract_features
    from ufinebench.metrics import unit_rows
    from ufinebench.model.checkpoint import from_checkpoint

    loaded = from_checkpoint(run)
    if loaded.model.matcher is None:
        sys.exit(f"matcher_probe: {run} has no matcher")
    ids = read_identities(data)
    ann = data / "ufine_synth.json"
    family_ids = {pid for pid, r in ids.items() if (r.get("family") or {}).get("family_size", 1) > 1}
    out: dict[str, Any] = {"run": run, "data": str(data), "image_size": list(loaded.model.cfg.image_size)}
    split_feats = {}
    for split in ("train", "test"):
        samples = [s for s in load_dataset(ann, split=split).split(split) if s.person_id in family_ids]
        feats = extract_features(loaded.model, samples, loaded.tokenizer, loaded.transform, batch_size=64, keep_tokens=True)
        qn, gn = unit_rows(feats.query_features), unit_rows(feats.gallery_features)  # (Q, F), (G, F)
        hard = make_pairs(feats, qn, gn, samples, ids)
        split_feats[split] = (feats, qn, gn, hard, make_pairs(feats, qn, gn, samples, ids, hardest=False, seed=seed))
    feats, _, _, hard, rand = split_feats["train"]
    both = Pairs(*(np.concatenate([getattr(hard, f), getattr(rand, f)]) for f in ("q", "pos", "neg")), hard.detail + rand.detail,
                 np.concatenate([hard.decidable, rand.decidable]))
    fresh = train_fresh(loaded.model.matcher, feats, both, epochs=epochs, seed=seed)
    for split, (feats, qn, gn, hard, rand) in split_feats.items():
        for kind, p in (("hardest", hard), ("any", rand)):
            scores = {"cosine": cosine_scores(qn, gn, p), "matcher": matcher_scores(loaded.model.matcher, feats, p),
                      "fresh": matcher_scores(fresh, feats, p)}
            out[f"{split} {kind}"] = accuracy_rows(p, scores)
    return out


def print_probe(r: dict[str, Any]) -> None:
    h, w = r["image_size"]
    print(f"\n{r['run']} ({h} x {w}) on {r['data']}: pairwise accuracy %, own image vs a look-alike's (chance 50)")
    print("  hardest: the look-alike image the cosine ranks highest (the cosine is handicapped by its own choice); any: a random one")
    print(f"{'pairs of':30s} {'n':>5s} {'cosine':>7s} {'matcher':>8s} {'fresh':>6s}")
    for block in ("train hardest", "train any", "test hardest", "test any"):
        for name, row in r[block].items():
            cells = " ".join(f"{row[s]:>{n}.1f}" if row[s] is not None else " " * n for s, n in (("cosine", 7), ("matcher", 8), ("fresh", 6)))
            print(f"{block + ' ' + name:30s} {row['pairs']:5d} {cells}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a run folder or checkpoint (repeatable)")
    ap.add_argument("--data", action="append", required=True, type=Path, help="the UFine-Synth folder of each --run, in the same order")
    ap.add_argument("--probe-epochs", type=int, default=40, help="epochs of the fresh matcher on the training pairs (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    if len(args.run) != len(args.data):
        sys.exit("matcher_probe: give one --data per --run")
    results = [probe(run, data, args.probe_epochs, args.seed) for run, data in zip(args.run, args.data, strict=True)]
    for r in results:
        print_probe(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
