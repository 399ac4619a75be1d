"""The search service: ``POST /search``, ``GET /images/{id}``, ``GET /healthz`` and a web page.

Only indexed images are served: the thumbnails stored in the index at indexing time, by their
number in the index (no path ever comes from a request, and no image file is opened at request
time). Requests must name an expected Host (DNS rebinding). Inputs are bounded: description
length, k, request body size (counted while the body streams in, so a chunked upload without a
Content-Length cannot grow past it), time to read the body and to answer; violations get clear
4xx/5xx answers, never a 500 for any text. Every asset of the page is inline.
"""

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from ufinebench.errors import UFineBenchError
from ufinebench.search.index import SearchIndex

MAX_TEXT = 2000
MAX_K = 100
MAX_BODY = 16_384
MAX_HEADERS = 16_384  # bytes of request headers (names and values); more is refused (431)
HEADER_TIMEOUT_S = 10.0  # a connection that has not sent a whole request head by then is closed (idle or slow headers)
CONNECTIONS_PER_CLIENT = 256  # open connections of one client address; more are closed at once (one source cannot use up the files)
BODY_TIMEOUT_S = 10.0  # a client that sends its body slower than this is cut off (408)
REQUEST_TIMEOUT_S = 30.0  # a request not answered by then gets 503
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class _TooLarge(Exception):
    pass


class _SlowBody(Exception):
    pass


class GuardMiddleware:
    """Pure ASGI guard: request body counted as it streams (413), body read time (408), total time (503)."""

    def __init__(self, app: Any, max_body: int, body_timeout: float, request_timeout: float) -> None:
        self.app, self.max_body, self.body_timeout, self.request_timeout = app, max_body, body_timeout, request_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) for k, v in raw_headers) > MAX_HEADERS:
            await _answer(send, 431, f"request headers larger than {MAX_HEADERS} bytes")
            return
        headers = dict(raw_headers)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _answer(send, 413, f"request body larger than {self.max_body} bytes")
            return
        received = 0
        started = False
        refusal: tuple[int, str] | None = None  # set when the body breaks a bound

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refusal
            try:
                msg = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                refusal = (408, "request body not received in time")
                raise _SlowBody from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    refusal = (413, f"request body larger than {self.max_body} bytes")
                    raise _TooLarge
            return msg

        async def guarded_send(msg: dict[str, Any]) -> None:
            # FastAPI turns an exception raised while it reads the body into its own 400: the
            # refusal recorded above replaces whatever the application answers then.
            nonlocal started
            if refusal is not None:
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, *refusal)
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, guarded_send), self.request_timeout)
        except (_TooLarge, _SlowBody):
            if not started and refusal is not None:
                await _answer(send, *refusal)
        except TimeoutError:
            if not started:
                await _answer(send, 503, "request took too long")


def check_allowed_hosts(hosts: Sequence[str]) -> list[str]:
    """Host patterns as the service accepts them: a name, "*" (any), or "*.domain"; else a one-line error."""
    out = []
    for h in hosts:
        if not isinstance(h, str) or not h or len(h) > 255 or any(c.isspace() or not c.isprintable() for c in h):
            raise UFineBenchError(f"--allowed-host {h!r}: not a host name")
        if h != "*" and ("*" in h[1:] or (h.startswith("*") and not h.startswith("*."))):
            raise UFineBenchError(f"--allowed-host {h!r}: a wildcard is '*' alone or '*.example.com'")
        out.append(h)
    return out


def server_config(app: Any, host: str, port: int, log_level: str = "warning", header_timeout: float = HEADER_TIMEOUT_S,
                  per_client: int = CONNECTIONS_PER_CLIENT) -> Any:
    """The uvicorn settings `serve` runs with: short keep-alive, bounded concurrency and header size,
    and connections that must send a whole request head within ``header_timeout`` seconds
    (:func:`guarded_protocol`)."""
    import uvicorn  # the web stack is heavy: loaded by the service only

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5, limit_concurrency=64,
                          h11_max_incomplete_event_size=MAX_HEADERS, http=guarded_protocol(header_timeout, per_client))


def guarded_protocol(header_timeout: float, per_client: int = CONNECTIONS_PER_CLIENT) -> type:
    """uvicorn's HTTP/1.1 protocol with a deadline for every request head.

    uvicorn times out a connection only after a response (keep-alive); one that connects and sends
    nothing, or sends its headers a byte at a time, stays forever and counts toward the concurrency
    limit, so 64 idle sockets made every other client wait for a 503. Here a connection counts
    toward the limit only once a request head has arrived, and one that has not sent a whole head
    within ``header_timeout`` seconds (after connecting, or after its last response) is closed. One
    client address holds at most ``per_client`` connections at a time; more are closed as they open
    (a generous bound: it keeps one source from using up the server's file descriptors, and a client
    that shares an address with an attacker shares its fate either way).
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol  # the web stack: see server_config

    open_per_client: dict[str, int] = {}  # client address -> open connections (one event loop: no lock needed)

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.connections.discard(self)  # counted toward limit_concurrency once it sends a request
            host = self._host()
            if open_per_client.get(host, 0) >= per_client:
                transport.close()
                return
            open_per_client[host] = open_per_client.get(host, 0) + 1
            self._counted = True
            self._arm()

        def data_received(self, data: bytes) -> None:
            scope = self.scope
            super().data_received(data)
            if self.scope is not scope:  # a request head arrived whole
                self._disarm()
                if not self.transport.is_closing():
                    self.connections.add(self)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                host = self._host()
                open_per_client[host] -= 1
                if not open_per_client[host]:
                    del open_per_client[host]
                self._counted = False
            super().connection_lost(exc)

        def _host(self) -> str:
            return str(self.client[0]) if self.client else ""

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

    return GuardedH11Protocol


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ufinebench search</title>
<style>
body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
textarea{width:100%;height:6em;font-size:15px}
#grid{display:flex;flex-wrap:wrap;gap:10px;margin-top:1em}
figure{margin:0;text-align:center;font-size:12px;cursor:zoom-in}
figure img{height:192px;border:1px solid #aaa;background:#eee}
#big{position:fixed;inset:0;background:rgba(0,0,0,.8);display:none;align-items:center;justify-content:center;cursor:zoom-out}
#big img{max-height:90vh}
#status{color:#666;margin-left:1em}
#read{color:#555;font-size:13px}
</style></head><body>
<h1>Find a person by description</h1>
<textarea id="q" placeholder="a middle-aged woman, brown hair below the shoulders, white jacket, dark blue tight pants, black sandals..."></textarea>
<p>Top <select id="k"><option>10</option><option selected>20</option><option>50</option></select>
<button id="go">Search</button><span id="status"></span></p>
<div id="read"></div>
<div id="grid"></div>
<div id="big"><img id="bigimg" alt="enlarged result"></div>
<script>
const q = document.getElementById('q'), grid = document.getElementById('grid'), status = document.getElementById('status');
async function search() {
  const text = q.value.trim();
  if (!text) { status.textContent = 'type a description first'; return; }
  status.textContent = 'searching...';
  const r = await fetch('/search', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({text: text, k: parseInt(document.getElementById('k').value)})});
  const data = await r.json();
  if (!r.ok) { status.textContent = 'error: ' + (data.detail && data.detail[0] ? data.detail[0].msg : data.detail); return; }
  grid.innerHTML = '';
  const changes = data.replaced.map(p => p[0] + ' \u2192 ' + (p[1] || '(dropped)'));
  if (data.unknown.length) changes.push('not understood: ' + data.unknown.join(', '));
  document.getElementById('read').textContent = changes.length ? 'read as: ' + changes.join('; ') : '';
  for (const h of data.results) {
    const f = document.createElement('figure');
    const img = document.createElement('img');
    img.src = h.url; img.alt = 'result ' + h.rank; img.className = 'result';
    const cap = document.createElement('figcaption');
    cap.textContent = '#' + h.rank + '  ' + h.score.toFixed(3);
    f.appendChild(img); f.appendChild(cap);
    f.onclick = () => { document.getElementById('bigimg').src = h.url; document.getElementById('big').style.display = 'flex'; };
    grid.appendChild(f);
  }
  status.textContent = data.results.length + ' results in ' + data.took_ms.toFixed(0) + ' ms'
    + (data.reordered ? '; the top 10 re-ordered by the colours and garments the description names (scores are similarities)' : '');
}
document.getElementById('go').onclick = search;
q.addEventListener('keydown', e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) search(); });
document.getElementById('big').onclick = () => { document.getElementById('big').style.display = 'none'; };
</script></body></html>
"""


def create_app(
    index: "SearchIndex | str", *, max_text: int = MAX_TEXT, max_k: int = MAX_K, max_body: int = MAX_BODY,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS, body_timeout: float = BODY_TIMEOUT_S, request_timeout: float = REQUEST_TIMEOUT_S,
) -> Any:
    """The ASGI application over a loaded (or to-be-loaded) index: FastAPI behind the host and body guards."""
    # the web stack is heavy and only the service needs it: imported here, not when the package loads
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response
    from pydantic import BaseModel, Field
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    idx = index if isinstance(index, SearchIndex) else SearchIndex(index)
    app = FastAPI(title="ufinebench search", docs_url=None, redoc_url=None, openapi_url=None)

    class Query(BaseModel):
        text: str = Field(min_length=1, max_length=max_text)
        k: int = Field(default=10, ge=1, le=max_k)
        normalize: bool = True  # replace words the model does not know by known ones (search/normalize.py)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the whole input back (and fails with a 500 on a lone surrogate):
        # answer with where and what, never the input itself, ASCII-escaped.
        detail = [{"loc": [str(x)[:40] for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200], "type": str(e.get("type", ""))[:60]}
                  for e in exc.errors()[:10]]
        return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422, media_type="application/json")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "images": len(idx), "kind": idx.info["kind"]}

    @app.post("/search")
    def search(q: Query) -> dict[str, Any]:
        text = q.text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates and the like become "?"
        if not text.strip():
            raise HTTPException(status_code=422, detail="text is blank")
        t0 = time.perf_counter()
        read = idx.read(text, q.normalize)
        hits, reordered = idx.search_checked(read.text, q.k, normalize=False)
        return {"query": text, "k": q.k, "took_ms": (time.perf_counter() - t0) * 1000,
                "read_as": read.text, "replaced": [list(p) for p in read.replaced], "unknown": read.unknown,
                "check_weight": idx.check_weight,  # the attribute check's weight (0: search ranks by the cosine alone)
                "reordered": reordered,  # this description's top 10 re-ordered by the check (scores stay cosines)
                "results": [{"rank": h.rank, "id": h.id, "score": h.score, "person_id": h.person_id, "url": f"/images/{h.id}"} for h in hits]}

    @app.get("/images/{image_id}")
    def image(image_id: int) -> Any:
        if not 0 <= image_id < len(idx):
            raise HTTPException(status_code=404, detail="no such image")
        return Response(idx.thumbnail(image_id), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    guarded = TrustedHostMiddleware(app, allowed_hosts=check_allowed_hosts(allowed_hosts))
    return GuardMiddleware(guarded, max_body, body_timeout, request_timeout)
