"""Search latency over a 100,000-image index, and a bounded loopback load on the HTTP service.

    python benchmarks/search_load.py [--checkpoint RUN] [--images 100000] [--requests 2000] [--concurrency 8] [--idle 70]

The index holds random unit embeddings of the model's feature size (only the index size matters
for latency) and the text side is the ``synth-cpu-small`` model: a trained checkpoint if given,
else the preset with random weights. Prints, for the exact (flat) and the HNSW index, the p50/p95
of a description-to-top-10 search (text encoding + index search); then starts the service on
127.0.0.1 and sends ``--requests`` POST /search at ``--concurrency`` in flight: p50/p95 latency,
throughput and errors. Target (issue 9): p50 <= 50 ms over 100,000 images on 2 cores, no errors.
While the load runs, ``--idle`` sockets connect and send nothing, and as many again send their
headers a byte a second (slowloris); a search with a 2,000-letter word is among the hostile
requests. The process's resident memory before and after the load is printed (the server runs in it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ufinebench.io import atomic_write_bytes
from ufinebench.search.index import INDEX_VERSION, SearchIndex, _write_faiss, checkpoint_digest

QUERIES = [
    "a young man with short black hair, a grey hoodie with white stripes, blue jeans and white sneakers with black soles",
    "the woman is wearing a red jacket and a black skirt and carries a brown handbag",
    "subject: middle-aged man, navy coat, black trousers, black leather shoes, black backpack with a yellow label",
    "so there's this lady with long blonde hair in a white t-shirt and light blue jeans, pretty sure",
]


def _checkpoint(tmp: Path) -> str:
    import dataclasses

    import torch

    from ufinebench.config import load_config
    from ufinebench.data.tokenizer import TrainedBPETokenizer
    from ufinebench.model.cfam import RetrievalModel
    from ufinebench.model.checkpoint import save_checkpoint

    cfg = load_config("synth-cpu-small")
    tok = TrainedBPETokenizer.train(QUERIES * 50, vocab_size=400)
    m = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, eot_id=tok.eot_id, num_classes=10)
    torch.manual_seed(0)
    model = RetrievalModel(m)
    cfg = dataclasses.replace(cfg, model=m)
    return str(save_checkpoint(tmp / "ck", model, {"config": cfg.to_dict(), "tokenizer": tok.state(), "epoch": 0, "global_step": 0}))


def _index(tmp: Path, checkpoint: str, n: int, dim: int, kind: str) -> Path:
    """An index in the format `ufinebench index` writes, of n random unit embeddings (one small thumbnail each)."""
    from PIL import Image

    out = tmp / f"ix_{kind}"
    (out / "parts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    jpg = io.BytesIO()
    Image.new("RGB", (48, 128), (120, 90, 60)).save(jpg, format="JPEG")
    atomic_write_bytes(out / "parts" / "000000.thumbs", jpg.getvalue() * n)
    buf = io.BytesIO()
    np.savez(buf, embeddings=emb, paths=np.asarray([f"/nonexistent/{i}.jpg" for i in range(n)]), person_ids=np.full(n, -1),
             thumb_offsets=np.arange(n + 1, dtype=np.int64) * len(jpg.getvalue()))
    atomic_write_bytes(out / "parts" / "000000.npz", buf.getvalue())
    t0 = time.perf_counter()
    _write_faiss(emb, kind, out / "index.faiss")
    build = time.perf_counter() - t0
    (out / "index.json").write_text(json.dumps({"version": INDEX_VERSION, "checkpoint": checkpoint,
                                                "checkpoint_sha256": checkpoint_digest(checkpoint),
                                                "sources": ["random"], "source": "random", "kind": kind, "count": n, "dim": dim,
                                                "complete": True, "build_seconds": build}))
    return out


def _rss_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1000
    return f"p50 {np.percentile(a, 50):6.1f} ms, p95 {np.percentile(a, 95):6.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--queries", type=int, default=200, help="timed searches per index kind")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--idle", type=int, default=70, help="idle sockets, and as many slow-header ones, held open during the load")
    args = ap.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        ck = args.checkpoint or _checkpoint(tmp)
        probe = SearchIndex.__new__(SearchIndex)  # just to learn the feature size
        from ufinebench.model.checkpoint import from_checkpoint

        lm = from_checkpoint(ck)
        probe.loaded, probe.device = lm, "cpu"
        dim = SearchIndex.encode(probe, ["x"]).shape[1]
        weights = "(random weights) " if not args.checkpoint else ""
        print(f"search latency: {args.images:,} images, feature size {dim}, text model {weights}synth-cpu-small")
        folders = {}
        for kind in ("flat", "hnsw"):
            folders[kind] = _index(tmp, ck, args.images, dim, kind)
            idx = SearchIndex(folders[kind])
            idx.search(QUERIES[0], 10)
            times = []
            for i in range(args.queries):
                t0 = time.perf_counter()
                idx.search(QUERIES[i % len(QUERIES)], 10)
                times.append(time.perf_counter() - t0)
            enc = []
            for i in range(50):
                t0 = time.perf_counter()
                idx.encode([QUERIES[i % len(QUERIES)]])
                enc.append(time.perf_counter() - t0)
            print(f"  {kind:4s}: description -> top 10 {_pct(times)} (text encoding alone {_pct(enc)})")
        import httpx
        import uvicorn

        from ufinebench.serve.app import create_app, server_config

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(server_config(create_app(str(folders["hnsw"])), "127.0.0.1", port, log_level="error"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        while not server.started:
            time.sleep(0.05)
        # every 10th request is hostile and must be refused with its own code; every 4th search also
        # fetches its first result's image
        hostile = [("bad host", "POST", "/search", {"json": {"text": "x"}, "headers": {"host": "evil.example"}}, (400,)),
                   ("body too large", "POST", "/search", {"content": b" " * 20000, "headers": {"content-type": "application/json"}}, (413,)),
                   ("malformed JSON", "POST", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, (422,)),
                   ("k out of range", "POST", "/search", {"json": {"text": "x", "k": 100000}}, (422,)),
                   ("no such image", "GET", "/images/99999999", {}, (404,)),
                   ("path in image id", "GET", "/images/..%2F..%2Fetc%2Fpasswd", {}, (404, 422)),
                   ("a 1,900-letter word", "POST", "/search", {"json": {"text": "a man in " + "x" * 1900, "k": 10}}, (200,))]

        async def stall(stop: asyncio.Event) -> int:
            """Idle and slow-header sockets, reopened when the server closes them; returns how many it closed."""
            closed = 0

            async def idle() -> None:
                nonlocal closed
                while not stop.is_set():
                    rd, w = await asyncio.open_connection("127.0.0.1", port)
                    try:
                        closed += await asyncio.wait_for(rd.read(1), 60) == b""  # the server hung up on it
                    except (TimeoutError, ConnectionError):
                        pass
                    w.close()

            async def slow() -> None:
                nonlocal closed
                while not stop.is_set():
                    rd, w = await asyncio.open_connection("127.0.0.1", port)
                    try:
                        for ch in b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                            if stop.is_set():
                                break
                            if rd.at_eof():
                                closed += 1
                                break
                            w.write(bytes([ch]))
                            await w.drain()
                            await asyncio.sleep(1.0)
                    except OSError:  # reset by the server
                        closed += 1
                    w.close()

            tasks = [asyncio.create_task(idle()) for _ in range(args.idle)] + [asyncio.create_task(slow()) for _ in range(args.idle)]
            await stop.wait()
            print(f"  stalling sockets closed by the server during the load: {closed}")
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return closed

        async def load() -> tuple[list[float], list[float], dict[str, int], int, float]:
            lat: list[float] = []
            img_lat: list[float] = []
            refused = {h[0]: 0 for h in hostile}
            errors = 0
            sem = asyncio.Semaphore(args.concurrency)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                async def one(i: int) -> None:
                    nonlocal errors
                    async with sem:
                        t0 = time.perf_counter()
                        try:
                            if i % 10 == 9:
                                name, method, path, kw, want = hostile[(i // 10) % len(hostile)]
                                r = await client.request(method, path, **kw)
                                ok = r.status_code in want
                                refused[name] += ok
                                errors += 0 if ok else 1
                                return
                            r = await client.post("/search", json={"text": QUERIES[i % len(QUERIES)], "k": 10})
                            ok = r.status_code == 200 and len(r.json()["results"]) == 10
                            lat.append(time.perf_counter() - t0)
                            if ok and i % 4 == 0:
                                t1 = time.perf_counter()
                                im = await client.get(r.json()["results"][0]["url"])
                                ok = im.status_code == 200 and im.content[:2] == b"\xff\xd8"
                                img_lat.append(time.perf_counter() - t1)
                        except httpx.HTTPError:
                            ok = False
                        errors += 0 if ok else 1

                stop = asyncio.Event()
                stalling = asyncio.create_task(stall(stop))
                await asyncio.sleep(0.5)  # the idle sockets are in before the first search
                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(args.requests)))
                wall = time.perf_counter() - t0
                stop.set()
                await stalling
                return lat, img_lat, refused, errors, wall

        rss0 = _rss_mb()
        lat, img_lat, refused, errors, wall = asyncio.run(load())
        rss1 = _rss_mb()
        server.should_exit = True
        th.join(timeout=5)
        total = args.requests + len(img_lat)
        print(f"HTTP load (hnsw index, serve's settings): {total} requests at concurrency {args.concurrency} in {wall:.1f} s "
              f"({total / wall:.0f} requests/s): search {_pct(lat)}, image {_pct(img_lat) if img_lat else '-'}; "
              f"hostile requests refused as expected: {sum(refused.values())} ({', '.join(f'{k} {v}' for k, v in refused.items())}); "
              f"{errors} errors; with {args.idle} idle and {args.idle} slow-header sockets open throughout; "
              f"resident memory {rss0:.0f} MB before, {rss1:.0f} MB after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
