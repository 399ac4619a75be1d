"""Search: index building (resumable, --add, kind choice), the API with bad input, and the page in
a real headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from test_train import TINY_MODEL
from ufinebench.cli import main
from ufinebench.config import load_config
from ufinebench.model.checkpoint import resolve_checkpoint
from ufinebench.search import index as I
from ufinebench.search.index import SearchIndex, build_index
from ufinebench.serve.app import LOOPBACK_HOSTS, GuardMiddleware, create_app
from ufinebench.training import train
from ufinebench.vocab import load_vocabulary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

VOCAB = load_vocabulary("ufine-synth-1")  # the attribute vocabulary of UFine-Synth's captions


@pytest.fixture(scope="module")
def run(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_run") / "run"
    cfg = load_config("synth-cpu-small", TINY_MODEL + [
        f"data.dataset={tiny_synth / 'ufine_synth.json'}", f"train.out_dir={out}", "data.workers=0", "data.bpe_vocab_size=300",
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=2", "train.eval_every=0", "train.tensorboard=false"])
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def index_dir(run, tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("ix") / "ix"
    build_index(str(run), str(tiny_synth / "ufine_synth.json"), out)
    return out


def test_index_matches_direct_encoding_and_add_resume(run, tiny_synth, tmp_path, monkeypatch):
    out = tmp_path / "ix"
    imgs = tiny_synth / "images"
    subset = tmp_path / "imgs"
    subset.mkdir()
    files = sorted(imgs.glob("*.jpg"))
    for f in files[:10]:
        shutil.copy(f, subset / f.name)
    monkeypatch.setattr(I, "CHUNK", 4)
    info = build_index(str(run), str(subset), out)
    assert info["count"] == 10 and info["kind"] == "flat"
    with pytest.raises(I.IndexError_, match="--add"):
        build_index(str(run), str(subset), out)
    for f in files[10:15]:
        shutil.copy(f, subset / f.name)
    calls = []
    real = I._encode_images
    monkeypatch.setattr(I, "_encode_images", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    info = build_index(str(run), str(subset), out, add=True)
    assert info["count"] == 15 and info["added"] == 5 and sum(calls) == 5  # only the new images were encoded
    (out / "index.faiss").unlink()  # a build cut off after its chunks: resumes without encoding again
    calls.clear()
    info = build_index(str(run), str(subset), out, add=True)
    assert sum(calls) == 0 and info["count"] == 15
    assert build_index(str(run), str(subset), tmp_path / "h", hnsw_threshold=5)["kind"] == "hnsw"
    idx = SearchIndex(out)
    hits = idx.search("a woman in a red coat", k=15)
    assert len(hits) == 15 and all(a.score >= b.score - 1e-6 for a, b in zip(hits, hits[1:], strict=False))
    q = idx.encode(["a woman in a red coat"])[0]
    import torch

    from ufinebench.data.transforms import load_image
    from ufinebench.model.checkpoint import from_checkpoint

    lm = from_checkpoint(run)
    img = torch.stack([lm.transform(load_image(hits[0].path))])
    f = lm.model.retrieval_features(lm.model.encode_image(img)).detach().numpy()[0]
    assert hits[0].score == pytest.approx(float(q @ (f / np.linalg.norm(f))), abs=1e-4)


HOSTS = [*LOOPBACK_HOSTS, "testserver"]  # TestClient's Host


def test_api_and_bad_input(index_dir):
    client = TestClient(create_app(str(index_dir), allowed_hosts=HOSTS))
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/search", json={"text": "a man with a black backpack", "k": 5})
    assert r.status_code == 200
    res = r.json()["results"]
    assert len(res) == 5 and [h["rank"] for h in res] == [1, 2, 3, 4, 5]
    img = client.get(res[0]["url"])
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
    # words the model does not know are read as words it knows, and the answer says so
    body = client.post("/search", json={"text": "a girl in a striped hoody", "k": 3}).json()
    assert body["replaced"] == [["girl", "young woman"], ["striped", "stripes"], ["hoody", "hoodie"]], body
    assert body["read_as"] == "a young woman in a stripes hoodie" and body["unknown"] == []
    assert body["check_weight"] == 0.0 and body["reordered"] is False  # this run never validated: no attribute check, the cosine's order
    same = client.post("/search", json={"text": "a young woman in a stripes hoodie", "k": 3}).json()
    assert [h["id"] for h in same["results"]] == [h["id"] for h in body["results"]] and same["replaced"] == []
    raw = client.post("/search", json={"text": "a girl in a striped hoody", "k": 3, "normalize": False}).json()
    assert raw["read_as"] == "a girl in a striped hoody" and raw["replaced"] == []
    assert [h["score"] for h in raw["results"]] != [h["score"] for h in body["results"]]
    only_fillers = client.post("/search", json={"text": "really plain", "k": 3}).json()
    assert only_fillers["read_as"] == "really plain" and len(only_fillers["results"]) == 3  # nothing dropped to an empty query
    for body, code in (({"text": "", "k": 5}, 422), ({"text": "x", "k": 0}, 422), ({"text": "x", "k": 1000}, 422),
                       ({"text": "x" * 3000}, 422), ({"k": 3}, 422), ({"text": "   "}, 422)):
        assert client.post("/search", json=body).status_code == code, body
    assert client.post("/search", content=b"{" + b" " * 20000 + b"}", headers={"content-type": "application/json"}).status_code == 413
    for path in ("/images/999999", "/images/-1", "/images/..%2F..%2Fetc%2Fpasswd", "/images/../../etc/passwd", "/images/abc"):
        assert client.get(path).status_code in (404, 422), path
    page = client.get("/").text
    assert "<textarea" in page and "http://" not in page and "https://" not in page


def test_index_belongs_to_one_checkpoint_and_source(run, tiny_synth, tmp_path):
    import json

    imgs = sorted((tiny_synth / "images").glob("*.jpg"))
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, files in ((a, imgs[:6]), (b, imgs[6:9])):
        folder.mkdir()
        for f in files:
            shutil.copy(f, folder / f.name)
    out = tmp_path / "ix"
    info = build_index(str(run), str(a), out)
    assert len(info["checkpoint_sha256"]) == 64 and info["sources"] == [str(a.resolve())]
    other = tmp_path / "other_run"
    shutil.copytree(run, other)
    ck = I.checkpoint_digest(other)
    assert ck == info["checkpoint_sha256"]  # same content, same identity
    last = resolve_checkpoint(other)
    meta = json.loads((last / "meta.json").read_text())
    (last / "meta.json").write_text(json.dumps({**meta, "epoch": 5}))  # another checkpoint (the digest covers meta.json)
    with pytest.raises(I.IndexError_, match="another checkpoint"):
        build_index(str(other), str(a), out, add=True)
    with pytest.raises(I.IndexError_, match="one index holds one source"):
        build_index(str(run), str(b), out, add=True)
    with pytest.raises(I.IndexError_, match="no index to add to"):
        build_index(str(run), str(b), tmp_path / "fresh", add=True)
    # the service answers from the stored thumbnails: the images may move away
    idx = SearchIndex(out)
    for f in a.iterdir():
        f.unlink()
    client = TestClient(create_app(idx, allowed_hosts=HOSTS))
    r = client.get("/images/0")
    assert r.status_code == 200 and r.content == idx.thumbnail(0) and r.content[:2] == b"\xff\xd8"
    import io

    from PIL import Image

    with Image.open(io.BytesIO(r.content)) as im:
        assert max(im.size) <= I.THUMB_MAX
    # the checkpoint changing under the index is caught when the index is loaded
    ck_dir = resolve_checkpoint(run)
    saved = (ck_dir / "meta.json").read_bytes()
    try:
        (ck_dir / "meta.json").write_bytes(saved.replace(b'"epoch"', b'"epoch" ', 1))
        with pytest.raises(I.IndexError_, match="has changed since indexing"):
            SearchIndex(out)
    finally:
        (ck_dir / "meta.json").write_bytes(saved)


def test_service_bounds(index_dir, monkeypatch):
    idx = SearchIndex(index_dir)
    client = TestClient(create_app(idx, allowed_hosts=HOSTS))
    assert client.get("/healthz", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    assert client.get("/healthz", headers={"host": "127.0.0.1:8000"}).status_code == 200

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(40):
            yield b" " * 1000

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/search", content=b"{}", headers={"content-type": "application/json", "content-length": "abc"}).status_code in (400, 413)
    texts = ["\x00", "a\x00b man", "👩🏽‍🦱 red coat", "رجل يرتدي معطفا", "<script>alert(1)</script>", "?!.,;:" * 50, "a" * 2000,
             "word " * 400, "\u202e reversed", "tab\tand\nnewline", "ÀÉÎÕÜ ß ø"]
    for t in texts:
        r = client.post("/search", json={"text": t, "k": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3, (t, r.text)
    r = client.post("/search", content=b'{"text": "\\ud800 man in black", "k": 2}', headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), r.text  # a lone surrogate: answered, never a 500
    for body in (b"not json", b'{"text": 5}', b'{"text": ["a"]}', b'{"text": "x", "k": "many"}', b'[]', b'{"text": "x", "k": 1e309}',
                 b'\xff\xfe'):
        assert client.post("/search", content=body, headers={"content-type": "application/json"}).status_code == 422, body

    slow = create_app(idx, allowed_hosts=HOSTS, request_timeout=0.2)
    monkeypatch.setattr(idx, "search_checked", lambda *a, **k: time.sleep(1.0) or ([], False))  # what POST /search calls
    assert TestClient(slow).post("/search", json={"text": "x"}).status_code == 503


def test_guard_times_out_a_slow_body():
    import asyncio

    async def app(scope, receive, send):  # reads the body, then answers
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"x", "more_body": False}

    sent = []

    async def send(msg):
        sent.append(msg)

    guard = GuardMiddleware(app, max_body=100, body_timeout=0.05, request_timeout=10)
    asyncio.run(guard({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 408


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(index_dir, **settings):
    """A real uvicorn server over the index on a free loopback port, with `serve`'s settings (``settings``
    changing some of them, e.g. a shorter header deadline); yields the port, stops the server after."""
    import uvicorn

    from ufinebench.serve.app import server_config

    port = _free_port()
    server = uvicorn.Server(server_config(create_app(str(index_dir)), "127.0.0.1", port, **settings))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(timeout=5)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_page_in_a_real_browser(index_dir):
    from playwright.sync_api import sync_playwright

    outside = []
    with _serving(index_dir) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("request", lambda req: None if req.url.startswith(f"http://127.0.0.1:{port}") else outside.append(req.url))
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#q", "a young guy with short black hair, a grey hoodie, blue jeans and white sneakers")
        page.select_option("#k", "10")
        page.click("#go")
        page.wait_for_selector("img.result")
        page.wait_for_function("Array.from(document.querySelectorAll('img.result')).every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("img.result").count() == 10
        assert "10 results" in page.inner_text("#status")
        assert page.inner_text("#read") == "read as: guy \u2192 man"  # how the unknown word was read
        page.locator("figure").first.click()
        assert page.locator("#big").is_visible()
        browser.close()
    assert not outside, outside


def test_cli_search_and_errors(index_dir, tmp_path, capsys):
    assert main(["search", str(index_dir), "a person in black", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert main(["search", str(index_dir), "a chubby guy in black", "-k", "3", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err.strip() == "read as: chubby -> heavy; guy -> man" and len(json.loads(out.out)) == 3
    assert main(["search", str(index_dir), "a chubby guy in black", "-k", "3", "--no-normalize"]) == 0
    assert capsys.readouterr().err == ""
    for argv in (["search", str(tmp_path), "x"], ["search", str(index_dir), "  "],
                 ["index", "--checkpoint", str(tmp_path / "no"), "--images", str(tmp_path), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_search_reorders_its_top_10_by_the_attribute_check(index_dir, monkeypatch):
    """A model with a word head (the preset's): the index keeps each image's word log-probabilities,
    and search re-orders the top 10 by cos / T + v x the mean log-probability of the query's
    attribute words, v = the check's weight val chose with the matcher at 0; scores stay cosines."""
    N_ATTRIBUTE_GROUPS = VOCAB.n_groups
    N_ATTRIBUTE_PAIRS = VOCAB.n_pairs
    from ufinebench.vocab.tokens import AttributeTable, named_groups

    plain = SearchIndex(index_dir)
    assert plain.word_logp is not None and plain.word_logp.shape[0] == len(plain) and (plain.word_logp <= 0).all()
    assert plain.check_weight == 0.0  # this run never validated: no grid, no check
    monkeypatch.setattr(I, "check_weight_without_matcher", lambda meta: 4.0)
    checked = SearchIndex(index_dir)
    assert checked.check_weight == 4.0
    text = "a woman in a red coat, black trousers and white sneakers with a black backpack"
    before, after = plain.search(text, k=12), checked.search(text, k=12)
    assert [h.id for h in after[10:]] == [h.id for h in before[10:]]  # only the top 10 move
    assert sorted(h.id for h in after[:10]) == sorted(h.id for h in before[:10])
    lm = checked.loaded
    table = AttributeTable.build(VOCAB, lm.tokenizer)
    named = named_groups(lm.tokenizer.encode([text], lm.model.cfg.context_length), table, pairs=True)[0].numpy().astype(np.float32)
    assert named.any() and checked.word_logp.shape[1] == named.shape[0] == N_ATTRIBUTE_GROUPS + N_ATTRIBUTE_PAIRS  # the preset's pairs
    assert named[N_ATTRIBUTE_GROUPS:].sum() == 4  # red x top, black x bottom, white x shoes, black x bag
    scale = float(lm.model.logit_scale.exp())
    blend = {h.id: scale * h.score + 4.0 * float(checked.word_logp[h.id] @ named / named.sum()) for h in before[:10]}
    assert [h.id for h in after[:10]] == sorted(blend, key=lambda i: -blend[i])
    assert [h.id for h in after[:10]] != [h.id for h in before[:10]]  # the check did move something here
    client = TestClient(create_app(str(index_dir), allowed_hosts=HOSTS))
    body = client.post("/search", json={"text": text, "k": 12}).json()
    assert body["check_weight"] == 4.0 and [h["id"] for h in body["results"]] == [h.id for h in after]  # the API says so
    assert body["reordered"] is True and "re-ordered" in client.get("/").text  # and the page tells the user
    bare = client.post("/search", json={"text": "a person walking", "k": 12}).json()  # names nothing the check reads
    assert bare["reordered"] is False and checked.checked("a person walking") is None
    assert [h["id"] for h in bare["results"]] == [h.id for h in plain.search("a person walking", k=12)]
    assert {h.id: h.score for h in after} == pytest.approx({h.id: h.score for h in before})


def test_check_weight_without_matcher_reads_the_val_grid():
    meta = {"rerank_val_R1": {"0": 90.0, "0 + check 1": 91.0, "0 + check 4": 91.0, "0.5 + check 2": 99.0, "matcher": 95.0},
            "rerank_val_mAP": {"0": 80.0, "0 + check 1": 85.0, "0 + check 4": 84.0, "0.5 + check 2": 90.0, "matcher": 88.0}}
    assert I.check_weight_without_matcher(meta) == 1.0  # R1 ties broken by mAP; rows with the matcher are not the service's
    assert I.check_weight_without_matcher({}) == 0.0
    grid = [{"matcher": 0.0, "check": 0.0, "topk": 10, "R1": 90.0, "mAP": 80.0}, {"matcher": 0.0, "check": 1.0, "topk": 10, "R1": 91.0, "mAP": 85.0},
            {"matcher": 0.0, "check": 4.0, "topk": 10, "R1": 91.0, "mAP": 84.0}, {"matcher": 0.5, "check": 2.0, "topk": 10, "R1": 99.0, "mAP": 90.0},
            {"matcher": None, "check": 0.0, "topk": 10, "R1": 95.0, "mAP": 88.0}]
    assert I.check_weight_without_matcher({"rerank_val": grid}) == 1.0  # the grid as checkpoints keep it now: the same choice


def test_idle_connections_and_slow_headers_cannot_stall_the_service(index_dir):
    """Seventy sockets that connect and send nothing, and one that sends its headers a byte at a time,
    do not make a searching client wait or get 503; the server closes them after the header deadline;
    request headers over the documented 16 KB are refused (431); a long 'word' costs the normaliser
    nothing (no one-letter-typo candidates for it)."""
    import httpx

    from ufinebench.search.normalize import QueryNormalizer
    from ufinebench.serve.app import MAX_HEADERS

    with _serving(index_dir, header_timeout=1.0) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(70)]
        slow = socket.create_connection(("127.0.0.1", port))
        try:
            slow.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
                for _ in range(5):  # a client keeps searching while the idle sockets are open
                    t0 = time.perf_counter()
                    r = client.post("/search", json={"text": "a man in a black jacket", "k": 3})
                    assert r.status_code == 200 and len(r.json()["results"]) == 3 and time.perf_counter() - t0 < 2.0
                big = client.get("/healthz", headers={"x-filler": "a" * (MAX_HEADERS + 100)})
                assert big.status_code in (400, 431)  # over the limit: refused (h11 itself, or the guard)
                assert client.get("/healthz").status_code == 200
            for s in [*idle, slow]:  # closed by the server once the 1-second deadline passed
                s.settimeout(5.0)
                assert s.recv(1) == b""
        finally:
            for s in [*idle, slow]:
                s.close()
    words = {"black", "jacket", "woman"}
    t0 = time.perf_counter()
    assert QueryNormalizer(words)("a woman in a " + "x" * 2000 + " jaket").text.endswith("jacket")
    assert time.perf_counter() - t0 < 0.5  # was 0.3-0.9 s and hundreds of MB for the 2,000 letters alone


def test_one_client_address_holds_a_bounded_number_of_connections(index_dir):
    """Past ``per_client`` open connections of one address, new ones are closed as they open; the
    open ones stay (until their header deadline), and closing some lets the client search again."""
    import httpx

    socks = []
    with _serving(index_dir, header_timeout=30.0, per_client=20) as port:
        try:
            for _ in range(25):
                socks.append(socket.create_connection(("127.0.0.1", port)))
                time.sleep(0.02)
            closed = []
            for s in socks:
                s.settimeout(0.3)
                try:
                    closed.append(s.recv(1) == b"")
                except TimeoutError:
                    closed.append(False)
            assert closed == [False] * 20 + [True] * 5
            for s in socks[:5]:
                s.close()
            time.sleep(0.2)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
                assert client.post("/search", json={"text": "a man in a black jacket", "k": 2}).status_code == 200
        finally:
            for s in socks:
                s.close()
