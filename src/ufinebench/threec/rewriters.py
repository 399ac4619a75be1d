"""Rewriting a caption at another granularity and in another style: offline and LLM rewriters.

Both return a :class:`Rewrite` (text + tags). The offline rewriter needs no model: granularity by
keeping the most salient clauses of the original (so nothing is invented), style by lexical and
syntactic paraphrase. The LLM rewriter speaks the OpenAI-compatible chat-completions protocol
(vLLM, llama.cpp server, Ollama and hosted APIs all do), with bounded concurrency, timeouts,
retries with backoff, an on-disk cache keyed by model, prompt version and input, validation of
every answer, and a recorded fallback to the offline rewriter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ufinebench.errors import UFineBenchError
from ufinebench.limits import read_json, read_yaml_file

WORDS = {"fine": (60, 100), "medium": (30, 50), "coarse": (12, 30)}
STYLES = ("plain", "narrative", "witness", "terse", "colloquial")
PROMPT_DIR = Path(__file__).parent / "prompts"
REFUSAL = re.compile(r"\b(i can(?:no|')t|i am unable|i'm unable|as an ai|i'm sorry|i am sorry|cannot help|can't help)\b", re.I)

_COLOURS = ("black", "white", "gray", "grey", "blue", "navy", "red", "green", "yellow", "orange", "pink", "purple", "brown",
            "beige", "khaki", "olive", "dark", "light", "camouflage", "blonde")
_GARMENTS = ("jacket", "coat", "shirt", "t-shirt", "tee", "sweater", "hoodie", "top", "vest", "jeans", "trousers", "pants",
             "shorts", "skirt", "dress", "shoes", "sneakers", "boots", "sandals", "trainers", "backpack", "bag", "handbag", "hat",
             "cap", "beanie", "glasses", "sunglasses", "belt", "hair", "umbrella", "phone")
_PERSON = ("man", "woman", "person", "boy", "girl", "lady", "guy", "male", "female", "pedestrian")


class RewriteError(UFineBenchError):
    """A rewriter that cannot be set up (bad URL, missing prompt file)."""


@dataclass
class Rewrite:
    text: str
    tags: dict[str, Any] = field(default_factory=dict)


def word_count(text: str) -> int:
    return len(text.split())


def load_prompts(version: str = "v1") -> dict[str, Any]:
    path = PROMPT_DIR / f"{version}.yaml"
    if not path.is_file():
        raise RewriteError(f"no prompt file {path.name} (available: {', '.join(p.stem for p in PROMPT_DIR.glob('*.yaml'))})")

    return read_yaml_file(path)


# --------------------------------------------------------------------------------------------
# offline


def _clauses(caption: str) -> list[str]:
    """Sentences split further at commas/semicolons: each a statement that stands on its own."""
    parts = []
    for sent in re.split(r"(?<=[.!?;])\s+", caption.strip()):
        for piece in re.split(r",\s+|;\s+", sent.strip().rstrip(".!?;")):
            if piece.strip():
                parts.append(piece.strip())
    return parts


def _salience(clause: str, first: bool) -> float:
    low = clause.lower()
    words = re.findall(r"[a-z\-']+", low)
    score = sum(w in _COLOURS for w in words) * 2 + sum(w in _GARMENTS for w in words) * 2 + sum(w in _PERSON for w in words) * 3
    return score + (2 if first else 0) - 0.05 * len(words)


class OfflineRewriter:
    """Deterministic rewriting without a model (granularity by clause selection, style by paraphrase)."""

    name = "offline"
    model = "none"

    def __init__(self, prompt_version: str = "v1") -> None:
        self.prompt_version = prompt_version

    STYLE_WORDS = 6  # room left for the words a style adds ("Person of interest:", "pretty sure")

    def select(self, caption: str, granularity: str) -> str:
        """The most salient clauses, in their original order, within the granularity's word range."""
        if granularity == "fine":
            return caption.strip()
        lo, hi = WORDS[granularity]
        hi -= self.STYLE_WORDS
        clauses = _clauses(caption)
        order = sorted(range(len(clauses)), key=lambda i: -_salience(clauses[i], i == 0))
        keep: list[int] = []
        n = 0
        for i in order:
            w = word_count(clauses[i])
            if n + w > hi:
                continue
            keep.append(i)
            n += w
            if n >= lo and n >= (lo + hi) // 2:
                break
        if not keep:  # one long clause: its first hi words
            return " ".join(clauses[order[0]].split()[:hi])
        return ". ".join(clauses[i] for i in sorted(keep))

    def restyle(self, text: str, style: str, rng: np.random.Generator) -> str:
        clauses = [c for c in re.split(r"\.\s*", text) if c.strip()]
        if style == "plain":
            return ". ".join(c[:1].upper() + c[1:] for c in clauses) + "."
        if style == "terse":
            items = [re.sub(r"^(he|she|they|the person|this person|it)\s+(is\s+wearing|wears|has|is|carries)\s+", "", c.strip(), flags=re.I)
                     for c in clauses]
            items = [re.sub(r"\b(a|an|the)\s+", "", i, flags=re.I) for i in items]
            return "; ".join(i.strip() for i in items if i.strip()) + "."
        if style == "witness":
            lead = rng.choice(["Subject", "Description of subject", "Person of interest"])
            return f"{lead}: " + "; ".join(c.strip() for c in clauses) + "."
        if style == "narrative":
            past = [re.sub(r"\b(is wearing|wears)\b", "was wearing", c) for c in clauses]
            past = [re.sub(r"\bis\b", "was", re.sub(r"\bhas\b", "had", re.sub(r"\bcarries\b", "was carrying", c))) for c in past]
            lead = rng.choice(["I saw someone go by.", "Earlier today a person walked past.", "Someone walked by me."])
            return lead + " " + ". ".join(c[:1].upper() + c[1:] for c in past) + "."
        if style == "colloquial":
            lead = rng.choice(["So, like,", "Okay so", "Basically"])
            body = ", and ".join(c.strip()[:1].lower() + c.strip()[1:] for c in clauses)
            return f"{lead} {body}, pretty sure."
        raise RewriteError(f"unknown style {style!r} (known: {', '.join(STYLES)})")

    def rewrite(self, caption: str, granularity: str, style: str, rng: np.random.Generator) -> Rewrite:
        text = self.restyle(self.select(caption, granularity), style, rng)
        return Rewrite(text, {"rewriter": self.name, "model": self.model, "prompt_version": self.prompt_version})


# --------------------------------------------------------------------------------------------
# LLM


@dataclass
class LLMStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    fallbacks: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


class LLMRewriter:
    """OpenAI-compatible chat completions with cache, retries, validation and offline fallback."""

    name = "llm"

    def __init__(
        self, url: str, model: str, *, cache_dir: str | os.PathLike[str] | None = None, prompt_version: str = "v1",
        timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, concurrency: int = 4, api_key_env: str = "UFINEBENCH_LLM_API_KEY",
    ) -> None:
        if not re.match(r"^https?://", url):
            raise RewriteError(f"--llm-url must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.model = model
        self.prompts = load_prompts(prompt_version)
        self.prompt_version = str(self.prompts.get("version", prompt_version))
        self.cache = Path(cache_dir) if cache_dir else None
        if self.cache:
            self.cache.mkdir(parents=True, exist_ok=True)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency = max(1, concurrency)
        self.api_key = os.environ.get(api_key_env) or os.environ.get("OPENAI_API_KEY")
        self.fallback = OfflineRewriter(self.prompt_version)
        self.stats = LLMStats()

    def _key(self, caption: str, granularity: str, style: str) -> str:
        raw = json.dumps([self.model, self.prompt_version, granularity, style, caption], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def _messages(self, caption: str, granularity: str, style: str) -> list[dict[str, str]]:
        p = self.prompts
        user = p["user"].format(granularity_instruction=p["granularity"][granularity], style_instruction=p["style"][style], caption=caption)
        return [{"role": "system", "content": p["system"]}, {"role": "user", "content": user}]

    @staticmethod
    def check(text: str, granularity: str, original: str) -> str | None:
        """Why an answer is unusable, or None."""
        if not text.strip():
            return "empty"
        if REFUSAL.search(text):
            return "refusal"
        lo, hi = WORDS[granularity]
        n = word_count(text)
        if granularity == "fine":
            lo = min(lo, word_count(original))
            hi = max(hi, int(word_count(original) * 1.3))
        if n > hi or n < min(lo, word_count(original)):
            return "length"
        return None

    async def _one(self, client: Any, sem: asyncio.Semaphore, caption: str, granularity: str, style: str, rng: np.random.Generator) -> Rewrite:
        key = self._key(caption, granularity, style)
        tags = {"rewriter": self.name, "model": self.model, "prompt_version": self.prompt_version}
        hit = self._cached(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return Rewrite(hit["text"], {**tags, **hit["tags"]})
        body = {"model": self.model, "messages": self._messages(caption, granularity, style), "temperature": 0.2}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        reason = "unknown"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with sem:
                    self.stats.requests += 1
                    resp = await client.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout)
                if resp.status_code != 200:
                    reason = f"http {resp.status_code}"
                    self.stats.fail(reason)
                    continue
                text = resp.json()["choices"][0]["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not text")
            except httpx.TimeoutException:
                reason = "timeout"
                self.stats.fail(reason)
                continue
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:  # an answer nested too deeply too
                reason = "malformed" if not isinstance(exc, httpx.HTTPError) else type(exc).__name__
                self.stats.fail(reason)
                continue
            text = text.strip().strip('"').strip()
            bad = self.check(text, granularity, caption)
            if bad:
                reason = bad
                self.stats.fail(bad)
                continue
            self._store(key, text, {}, (caption, granularity, style))
            return Rewrite(text, tags)
        self.stats.fallbacks += 1
        fb = self.fallback.rewrite(caption, granularity, style, rng)
        fb.tags.update({"rewriter": "offline-fallback", "fallback_reason": reason, "model": self.model})
        self._store(key, fb.text, fb.tags, (caption, granularity, style))  # a rerun is free; delete the cache to ask again
        return fb

    def _cached(self, key: str) -> dict[str, Any] | None:
        """A cached answer ({"text", "tags"}), or None: no cache, no entry, or an entry that is truncated,
        not JSON or not of this shape (a killed write of an older version, a hand edit): then it is asked again."""
        path = self.cache / f"{key}.json" if self.cache else None
        if path is None or not path.is_file():
            return None
        try:
            hit = read_json(path, "an LLM cache entry", limit=1 << 20)
        except UFineBenchError:
            return None
        if not isinstance(hit, dict) or not isinstance(hit.get("text"), str) or not isinstance(hit.get("tags", {}), dict):
            return None
        return {"text": hit["text"], "tags": hit.get("tags", {})}

    def _store(self, key: str, text: str, tags: dict[str, Any], job: tuple[str, str, str]) -> None:
        if self.cache:
            tmp = self.cache / f".{key}.tmp"
            tmp.write_text(json.dumps({"text": text, "tags": tags, "model": self.model, "prompt_version": self.prompt_version,
                                       "input": {"caption": job[0], "granularity": job[1], "style": job[2]}}))
            os.replace(tmp, self.cache / f"{key}.json")

    async def rewrite_many(self, jobs: list[tuple[str, str, str, np.random.Generator]], progress: Any = None) -> list[Rewrite]:
        """Rewrite every (caption, granularity, style, rng) job, at most ``concurrency`` at a time, in order."""

        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient() as client:
            async def run(job: tuple[str, str, str, np.random.Generator]) -> Rewrite:
                res = await self._one(client, sem, *job)
                if progress is not None:
                    progress.update(1)
                return res

            return list(await asyncio.gather(*(run(j) for j in jobs)))
