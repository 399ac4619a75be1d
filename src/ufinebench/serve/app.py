"""The search service: ``POST /search``, ``GET /images/{id}``, ``GET /healthz`` and a web page.

Only indexed images are served, by their number in the index (no path ever comes from a
request). Inputs are bounded: description length, k, request body size; violations get clear
4xx answers. Every asset of the page is inline: nothing is fetched from elsewhere.
"""


import time
from pathlib import Path
from typing import Any

from ufinebench.serve.index import SearchIndex

MAX_TEXT = 2000
MAX_K = 100
MAX_BODY = 16_384

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
</style></head><body>
<h1>Find a person by description</h1>
<textarea id="q" placeholder="a middle-aged woman, brown hair below the shoulders, white jacket, dark blue tight pants, black sandals..."></textarea>
<p>Top <select id="k"><option>10</option><option selected>20</option><option>50</option></select>
<button id="go">Search</button><span id="status"></span></p>
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
  status.textContent = data.results.length + ' results in ' + data.took_ms.toFixed(0) + ' ms';
}
document.getElementById('go').onclick = search;
q.addEventListener('keydown', e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) search(); });
document.getElementById('big').onclick = () => { document.getElementById('big').style.display = 'none'; };
</script></body></html>
"""


def create_app(index: "SearchIndex | str", *, max_text: int = MAX_TEXT, max_k: int = MAX_K, max_body: int = MAX_BODY) -> Any:
    """The FastAPI application over a loaded (or to-be-loaded) index."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field

    idx = index if isinstance(index, SearchIndex) else SearchIndex(index)
    app = FastAPI(title="ufinebench search", docs_url=None, redoc_url=None, openapi_url=None)

    class Query(BaseModel):
        text: str = Field(min_length=1, max_length=max_text)
        k: int = Field(default=10, ge=1, le=max_k)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return JSONResponse({"detail": f"request body larger than {max_body} bytes"}, status_code=413)
        if request.method == "POST" and length is None:
            body = await request.body()
            if len(body) > max_body:
                return JSONResponse({"detail": f"request body larger than {max_body} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "images": len(idx), "kind": idx.info["kind"]}

    @app.post("/search")
    def search(q: Query) -> dict[str, Any]:
        if not q.text.strip():
            raise HTTPException(status_code=422, detail="text is blank")
        t0 = time.perf_counter()
        hits = idx.search(q.text, q.k)
        return {"query": q.text, "k": q.k, "took_ms": (time.perf_counter() - t0) * 1000,
                "results": [{"rank": h.rank, "id": h.id, "score": h.score, "person_id": h.person_id, "url": f"/images/{h.id}"} for h in hits]}

    @app.get("/images/{image_id}")
    def image(image_id: int) -> Any:
        if not 0 <= image_id < len(idx):
            raise HTTPException(status_code=404, detail="no such image")
        path = Path(idx.paths[image_id])
        if not path.is_file():
            raise HTTPException(status_code=404, detail="image file missing")
        return FileResponse(path)

    return app
