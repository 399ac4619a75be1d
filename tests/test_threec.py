"""3C-style set building: offline rewriter, and the LLM path against a local faulty server."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from formats_fixture import make_dataset
from ufinebench.cli import main
from ufinebench.data.annotations import read_annotations
from ufinebench.data.datasets import eval_sets
from ufinebench.data.tokenizer import ClipTokenizer
from ufinebench.data.transforms import ImageTransform
from ufinebench.evaluate import Features, breakdown
from ufinebench.threec.build import build_3c
from ufinebench.threec.rewriters import LLMRewriter

STYLE_VOCAB = {"subject", "description", "of", "person", "interest", "i", "saw", "someone", "go", "by", "earlier", "today", "a", "walked",
               "past", "me", "so", "like", "okay", "basically", "and", "pretty", "sure", "was", "had", "wearing", "carrying", "is", "the"}


@pytest.fixture()
def two_sources(tiny_synth, tmp_path):
    return [str(tiny_synth / "ufine_synth.json"), str(make_dataset(tmp_path / "cuhk", "cuhk-pedes"))]


def test_offline_build_is_valid_distinct_and_invents_nothing(two_sources, tmp_path, capsys):
    out = tmp_path / "set.json"
    assert main(["build-3c", "--from", two_sources[0], "--from", two_sources[1], "--out", str(out), "--per-caption", "3"]) == 0
    ann = read_annotations(out)
    assert ann.ok and ann.format == "ufine3c", [str(p) for p in ann.problems][:3]
    records = json.loads(out.read_text())
    by_source = {}
    for r in records:
        by_source.setdefault(r["source"], set()).add(r["id"])
    assert len(by_source) == 2 and not set.intersection(*by_source.values())  # raw ids 1..4 exist in both
    for r in records:
        originals = [c for c, t in zip(r["captions"], r["caption_tags"], strict=False) if t["rewriter"] == "none"]
        rewrites = [(c, t) for c, t in zip(r["captions"], r["caption_tags"], strict=False) if t["rewriter"] != "none"]
        assert len(rewrites) == 3 * len(originals)
        for c, t in rewrites:
            src_words = set(re.findall(r"[a-z0-9\-']+", originals[t["from_caption"]].lower()))
            new = set(re.findall(r"[a-z0-9\-']+", c.lower())) - src_words - STYLE_VOCAB
            assert not new, (new, c)
            n, n0 = len(c.split()), len(originals[t["from_caption"]].split())
            if t["granularity"] == "coarse":
                assert n <= 30
            if t["granularity"] == "medium" and n0 >= 50:
                assert 30 - 6 <= n <= 50
    prov = json.loads(Path(str(out) + ".provenance.json").read_text())
    assert prov["rewriter"] == "offline" and set(prov["words_per_granularity"]) >= {"fine", "medium", "coarse"}
    # the evaluation breakdown reads the tags
    gallery, queries = eval_sets(ann.samples, ClipTokenizer(), ImageTransform(size=(32, 16)), 20)
    rng = np.random.default_rng(0)
    feats = Features.of_split(ann.samples, rng.standard_normal((len(queries), 8)), rng.standard_normal((len(gallery), 8)))
    assert feats.query_tags == [q.tags for q in queries.queries] and (feats.gallery_ids == gallery.person_ids).all()
    bd = breakdown(feats)
    assert set(bd["source"]) == set(by_source) and {"medium", "coarse"} <= set(bd["granularity"]) and "witness" in bd["style"]


class _Faulty(BaseHTTPRequestHandler):
    """A chat-completions server whose first answer per input is a chosen fault."""

    counts: Counter = Counter()
    lock = threading.Lock()

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        caption = user.split("Description:\n", 1)[1]
        key = hashlib.md5(user.encode()).hexdigest()
        with self.lock:
            self.counts[key] += 1
            attempt = self.counts[key]
        fault = ["500", "slow", "malformed", "refusal", "long", "ok", "ok", "always500"][int(key, 16) % 8]
        if fault == "always500" or (attempt == 1 and fault == "500"):
            self.send_response(500)
            self.end_headers()
            return
        if attempt == 1 and fault == "slow":
            time.sleep(0.6)
        if attempt == 1 and fault == "malformed":
            self._send(b"{not json")
            return
        words = caption.split()
        if "Length: 12 to 30" in user:
            text = " ".join(words[:20])
        elif "Length: 30 to 50" in user:
            text = " ".join(words[:40])
        else:
            text = caption
        if attempt == 1 and fault == "refusal":
            text = "I'm sorry, but I can't help with that request."
        if attempt == 1 and fault == "long":
            text = " ".join(words * 10)
        self._send(json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode())

    def _send(self, data: bytes):
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): expected
            pass


@pytest.fixture()
def server():
    _Faulty.counts = Counter()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _llm(url, cache):
    return LLMRewriter(url, "fake-model", cache_dir=cache, timeout=0.3, retries=2, backoff=0.01, concurrency=4)


def test_llm_build_handles_every_fault_and_reruns_for_free(two_sources, tmp_path, server):
    out, cache = tmp_path / "llm.json", tmp_path / "cache"
    rw = _llm(server, cache)
    prov = build_3c(two_sources, out, rewriter=rw, per_caption=2)
    assert read_annotations(out).ok
    tags = [t for r in json.loads(out.read_text()) for t in r["caption_tags"] if t["rewriter"] != "none"]
    assert len(tags) == prov["rewrites"] > 0
    kinds = Counter(t["rewriter"] for t in tags)
    assert kinds["llm"] > 0 and kinds["offline-fallback"] > 0
    assert all(t["fallback_reason"] == "http 500" for t in tags if t["rewriter"] == "offline-fallback")
    assert all(t["model"] == "fake-model" and t["prompt_version"] == "v1" for t in tags)
    fails = prov["llm"]["failures"]
    for reason in ("http 500", "timeout", "malformed", "refusal", "length"):
        assert fails.get(reason, 0) > 0, (reason, fails)
    before = sum(_Faulty.counts.values())
    again = build_3c(two_sources, tmp_path / "again.json", rewriter=_llm(server, cache), per_caption=2)
    assert sum(_Faulty.counts.values()) == before and again["llm"]["cache_hits"] == prov["rewrites"]
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(out.read_text())


def test_interrupted_build_resumes_without_repeating_requests(two_sources, tmp_path, server, monkeypatch):
    cache = tmp_path / "cache"
    rw = _llm(server, cache)
    real = LLMRewriter._one
    done = {"n": 0}

    async def dying(self, *args):
        res = await real(self, *args)
        done["n"] += 1
        if done["n"] == 10:
            raise KeyboardInterrupt
        return res

    monkeypatch.setattr(LLMRewriter, "_one", dying)
    with pytest.raises(KeyboardInterrupt):
        build_3c(two_sources, tmp_path / "x.json", rewriter=rw, per_caption=2)
    assert not (tmp_path / "x.json").exists()  # nothing half-written
    import gc
    import warnings

    with warnings.catch_warnings():  # connections cut by the interrupt: collected here, not at exit
        warnings.simplefilter("ignore")
        gc.collect()
    monkeypatch.setattr(LLMRewriter, "_one", real)
    done_before = []  # server keys of the inputs whose answers were stored before the kill
    for f in cache.glob("*.json"):
        job = json.loads(f.read_text())["input"]
        user = rw._messages(job["caption"], job["granularity"], job["style"])[-1]["content"]
        done_before.append(hashlib.md5(user.encode()).hexdigest())
    assert len(done_before) >= 10
    counts_before = dict(_Faulty.counts)
    prov = build_3c(two_sources, tmp_path / "x.json", rewriter=_llm(server, cache), per_caption=2)
    assert prov["llm"]["cache_hits"] == len(done_before)
    assert all(_Faulty.counts[k] == counts_before[k] for k in done_before)  # none of them asked again
    assert len(list(cache.glob("*.json"))) == prov["rewrites"] and read_annotations(tmp_path / "x.json").ok


def test_cli_errors(tmp_path, capsys, tiny_synth):
    for argv in (["build-3c", "--from", str(tmp_path / "none"), "--out", str(tmp_path / "o.json")],
                 ["build-3c", "--from", str(tiny_synth), "--out", str(tmp_path / "o.json"), "--rewriter", "llm"],
                 ["build-3c", "--from", str(tiny_synth / "ufine_synth.json"), "--out", str(tmp_path / "o.json"), "--styles", "pirate"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_truncated_cache_entries_and_deeply_nested_answers_are_asked_again_or_fall_back(two_sources, tmp_path, server):
    """A cache entry cut short (a killed write of an older version, a hand edit) is a miss, not a
    traceback: it is asked again; an answer nested past Python's recursion limit is a malformed
    answer (retried, then the offline fallback)."""
    cache = tmp_path / "cache"
    build_3c(two_sources, tmp_path / "a.json", rewriter=_llm(server, cache), per_caption=2)
    entries = sorted(cache.glob("*.json"))
    for f in entries[:5]:
        f.write_text(f.read_text()[:20])  # truncated
    entries[5].write_text(json.dumps({"text": ["not", "text"]}))  # the wrong shape
    before = sum(_Faulty.counts.values())
    prov = build_3c(two_sources, tmp_path / "b.json", rewriter=_llm(server, cache), per_caption=2)
    assert prov["llm"]["cache_hits"] == len(entries) - 6 and sum(_Faulty.counts.values()) > before
    assert read_annotations(tmp_path / "b.json").ok

    class Deep(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = b"[" * 200_000 + b"]" * 200_000
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        rw = LLMRewriter(f"http://127.0.0.1:{srv.server_address[1]}/v1", "m", retries=0, backoff=0.01, concurrency=2, timeout=5)
        prov = build_3c(two_sources, tmp_path / "c.json", rewriter=rw, per_caption=1)
        assert prov["llm"]["failures"].get("malformed", 0) > 0 and prov["llm"]["fallbacks"] == prov["rewrites"] > 0
    finally:
        srv.shutdown()
