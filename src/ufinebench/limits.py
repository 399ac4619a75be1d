"""Bounded parsing: every file a user hands us is read with a size, depth and expansion limit.

A YAML "billion laughs" (a few aliases that expand into billions of nodes), a JSON nested a
million levels deep, an ``.npz`` whose tiny compressed member declares a 100 GB array, or an
image header announcing 50,000 x 50,000 pixels must each end in a one-line error before memory
or time runs out, never in a traceback or an out-of-memory kill. The limits are generous for
real data (UFine6926's annotations are tens of MB) and can be raised through the environment:
``UFINEBENCH_MAX_JSON_MB``, ``UFINEBENCH_MAX_NPZ_MB``, ``UFINEBENCH_MAX_PIXELS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ufinebench.errors import UFineBenchError

MAX_YAML_BYTES = 1 << 20  # configs and prompt files are a few KB
MAX_YAML_ALIASES = 64
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000  # nodes after alias expansion
MAX_QUOTE = 80  # characters of an input quoted in an error message


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UFineBenchError(f"{name}={quote(raw)}: not an integer") from None


def max_json_bytes() -> int:
    return _env_int("UFINEBENCH_MAX_JSON_MB", 2048) << 20


def max_npz_bytes() -> int:
    return _env_int("UFINEBENCH_MAX_NPZ_MB", 16384) << 20


def max_pixels() -> int:
    return _env_int("UFINEBENCH_MAX_PIXELS", 50_000_000)  # an 8,000 x 6,000 photo; person crops are far smaller


def quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """``repr`` of a user's value for an error message: one line, at most ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_size(path: Path, limit: int, what: str) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UFineBenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > limit:
        raise UFineBenchError(f"{path}: {size / 2**20:.1f} MB is more than the {limit / 2**20:.0f} MB allowed for {what}")


MAX_INT_DIGITS = 40  # integers in JSON / YAML inputs: ids, counts, seeds never need more digits


class _LongInteger(ValueError):
    pass


def _parse_int(text: str) -> int:
    """JSON's integer hook: refuses integers of more than ``MAX_INT_DIGITS`` digits (Python would
    refuse past 4,300 with a traceback, and parsing a huge one is quadratic)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _LongInteger(f"an integer of {len(text.lstrip('-')):,} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def read_json(path: str | os.PathLike[str], what: str = "a JSON file", limit: int | None = None) -> Any:
    """Parse a JSON file of at most ``limit`` bytes (default ``max_json_bytes()``); one-line errors."""
    p = Path(path)
    _check_size(p, max_json_bytes() if limit is None else limit, what)
    try:
        with open(p, "rb") as fh:
            return json.load(fh, parse_int=_parse_int)
    except _LongInteger as exc:
        raise UFineBenchError(f"{p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UFineBenchError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise UFineBenchError(f"{p}: not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise UFineBenchError(f"{p}: JSON nested too deeply") from None
    except OSError as exc:
        raise UFineBenchError(f"{p}: cannot read ({exc.strerror or exc})") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and nesting while it composes the document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise UFineBenchError(f"more than {MAX_YAML_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise UFineBenchError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _count_nodes(value: Any, budget: int) -> int:
    """Nodes of a loaded document as a consumer would walk it (aliases expanded), stopping past ``budget``."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > budget:
            return seen
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return seen


class YamlSyntaxError(UFineBenchError):
    """Text that is not YAML at all (as opposed to YAML over a bound)."""


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """A YAML file through ``load_yaml`` (its size checked before it is read)."""
    p = Path(path)
    _check_size(p, MAX_YAML_BYTES, "a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UFineBenchError(f"{p}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise UFineBenchError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return load_yaml(text, str(p))


def load_yaml(text: str, where: str = "YAML") -> Any:
    """``yaml.safe_load`` with bounds on size, aliases, depth and expanded size; one-line errors."""
    if len(text.encode("utf-8", "replace")) > MAX_YAML_BYTES:
        raise UFineBenchError(f"{where}: larger than {MAX_YAML_BYTES >> 10} KB")
    try:
        loader = _BoundedLoader(text)
        try:
            value = loader.get_single_data()
        finally:
            loader.dispose()
    except UFineBenchError as exc:
        raise UFineBenchError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise UFineBenchError(f"{where}: YAML nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4,300-digit limit
        raise UFineBenchError(f"{where}: {str(exc).split(';')[0]}") from None
    if _count_nodes(value, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise UFineBenchError(f"{where}: expands to more than {MAX_YAML_NODES:,} values (aliases)")
    return value


def check_npz_members(zf: Any, path: Path) -> None:
    """Refuse an ``.npz`` whose members declare more than ``max_npz_bytes()`` in total, before reading them."""

    total = 0
    for name in zf.namelist():
        with zf.open(name) as fh:
            try:
                version = np.lib.format.read_magic(fh)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(fh))
            except ValueError as exc:
                raise UFineBenchError(f"{path}: member {quote(name)} is not a .npy array ({exc})") from None
        n = 1
        for d in shape:
            n *= int(d)
        total += n * dtype.itemsize
    if total > max_npz_bytes():
        raise UFineBenchError(f"{path}: its arrays declare {total / 2**30:.1f} GB, more than the "
                              f"{max_npz_bytes() / 2**30:.0f} GB allowed (UFINEBENCH_MAX_NPZ_MB)")


def check_pixels(size: tuple[int, int], path: Any) -> None:
    """Refuse an image whose header announces more than ``max_pixels()`` pixels (before decoding it)."""
    w, h = size
    if w * h > max_pixels():
        raise UFineBenchError(f"{path}: {w} x {h} pixels is more than the {max_pixels():,} allowed (UFINEBENCH_MAX_PIXELS)")
