"""Output safety: no command deletes or overwrites what it did not create.

Rules every writing command follows (and the tests check):

* **An output is never an input.** An output path that resolves to an input, lies inside an input
  folder (a checkpoint's files, a dataset's images), or is a folder that holds an input, is refused
  with a one-line error; so is an output named twice (derived names such as ``f_1.npz`` included),
  one that exists as anything but a regular file or folder (a FIFO, ``/dev/null``), and an existing
  file without ``force`` (:func:`check_outputs`).
* **Every output folder carries a marker**, ``.ufinebench.json``: which command wrote it and the
  top-level entries it created there (its manifest). A folder written by the same command may be
  resumed, extended or replaced by that command as before; a foreign or unmarked non-empty folder
  is refused unless the user passes ``--force`` (:func:`claim_dir`). A folder is adopted only by its
  marker, never by the names of the files in it; a marker's entries are plain names inside the
  folder (anything else in a marker is ignored when it is read).
* **Removing only removes what the toolkit wrote**: ``--overwrite`` / ``--fresh`` / ``--force``
  delete the manifest's entries and nothing else (:func:`remove_owned`), and a new tree replaces
  an old one in one rename when the folder holds nothing foreign (:func:`publish_dir`).
* **One writer per output**: :func:`output_lock` takes an exclusive ``flock`` on a lock file
  beside the output and refuses a second process at once; while it holds the lock, the temporary
  siblings a killed earlier run left (``.NAME.partial-PID``, ``.NAME.tmp-PID``, ``.NAME.old-PID``)
  are removed (:func:`remove_stale_siblings`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ufinebench import __version__
from ufinebench.data.annotations import resolve_dataset
from ufinebench.errors import UFineBenchError
from ufinebench.io import atomic_write_bytes

MARKER = ".ufinebench.json"
PathLike = str | os.PathLike[str]


class OutputError(UFineBenchError):
    """An output that would destroy an input or a file the toolkit did not write."""


def _resolved(p: PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_outputs(outputs: dict[str, PathLike | None], inputs: Iterable[PathLike | None], *, folders: Iterable[str] = (),
                  force: bool = False) -> None:
    """Refuse outputs that are inputs, lie inside an input folder, hold an input, name one path twice,
    exist as a special file, or (file outputs, without ``force``) exist already.

    ``outputs`` maps a label (the option's name, shown in the error) to a path; ``folders`` names
    the labels whose output is a folder (a folder may not hold an input either; its own contents
    are guarded by :func:`claim_dir`). A file output that exists is replaced only with ``force``,
    and only when it is a regular file.
    """
    for label, path in [*outputs.items(), *(("an input", p) for p in inputs)]:
        if path is not None and "\0" in str(path):
            raise OutputError(f"{label} {str(path)!r}: a path cannot hold a NUL character")
    ins = [(str(p), _resolved(p)) for p in inputs if p is not None and str(p) != ""]
    dirs = set(folders)
    seen: dict[Path, str] = {}
    for label, out in outputs.items():
        if out is None or str(out) == "":
            continue
        o = _resolved(out)
        for raw, i in ins:
            if o == i:
                raise OutputError(f"{label} {out} is also an input ({raw}); choose another output path")
        for raw, i in ins:
            if label in dirs and _is_within(i, o):
                raise OutputError(f"{label} {out} holds the input {raw}; choose an output folder outside the inputs")
            if _is_within(o, i) and i.is_dir():
                raise OutputError(f"{label} {out} lies inside the input folder {raw}; choose an output outside the inputs")
        if o in seen:
            raise OutputError(f"{label} and {seen[o]} name the same path {out}")
        seen[o] = label
        _check_existing(label, out, o, folder=label in dirs, force=force)


def _check_existing(label: str, raw: PathLike, o: Path, *, folder: bool, force: bool) -> None:
    """An existing output must be a regular file (or, for a folder output, a folder); a file only with ``force``."""
    try:
        mode = os.stat(o).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{label} {raw}: {exc.strerror or exc}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(f"{label} {raw} is a special file (device, pipe or socket); write to a regular file")
    if folder:
        return
    if stat.S_ISDIR(mode):
        raise OutputError(f"{label} {raw} is a folder; give a file path")
    if not force:
        raise OutputError(f"{label} {raw} exists; pass --force to replace it, or choose another path")


def dataset_inputs(path: PathLike | None, fmt: str | None = None) -> list[Path]:
    """A dataset argument as inputs to protect: the path itself, the annotation file it names and
    the folder its images live in (so no output lands on an image)."""
    if path is None or str(path) == "":
        return []
    found = [Path(path)]
    try:
        ann, _, root = resolve_dataset(path, fmt)
        found += [ann, root]
    except UFineBenchError:
        pass
    return found


def read_marker(folder: PathLike) -> dict[str, Any] | None:
    """The marker of an output folder, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("written_by"), str):
        return None
    entries = data.get("entries")
    data["entries"] = [e for e in entries if _plain_name(e)] if isinstance(entries, list) else []
    return data


def _plain_name(entry: object) -> bool:
    """A marker entry may only name something directly inside its folder (never "..", "x/y" or "/x")."""
    return isinstance(entry, str) and entry not in ("", ".", "..", MARKER) and "/" not in entry and "\0" not in entry


def write_marker(folder: PathLike, command: str, entries: Iterable[str]) -> None:
    """Write (atomically) the marker saying ``command`` wrote ``entries`` in ``folder``."""

    names = sorted({e for e in entries if _plain_name(e)})
    old = read_marker(folder)
    created = old["created"] if old and old.get("written_by") == command and "created" in old else time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = {"written_by": command, "version": __version__, "created": created, "entries": names}
    atomic_write_bytes(Path(folder) / MARKER, (json.dumps(data, indent=1) + "\n").encode())


def _foreign_entries(folder: Path, owned: set[str]) -> list[str]:
    return sorted(e for e in os.listdir(folder) if e != MARKER and e not in owned)


def claim_dir(folder: PathLike, command: str, *, force: bool = False, accept: Iterable[str] = ()) -> dict[str, Any] | None:
    """Check that ``command`` may write into ``folder``; return its marker (None when new).

    Absent or empty folders are free. A folder marked by ``command`` (or by one of ``accept``)
    is its own output. A non-empty folder marked by another command, or not marked at all, is
    refused unless ``force``: then the command writes beside what is there and removes nothing.
    Files that look like this command's outputs do not make a folder its own: only a marker does.
    """
    p = Path(folder)
    if not p.exists():
        return None
    if not p.is_dir():
        raise OutputError(f"{p} exists and is not a folder")
    marker = read_marker(p)
    if marker is not None and marker["written_by"] in {command, *accept}:
        return marker
    if not any(e != MARKER for e in os.listdir(p)):
        return marker
    if force:
        return marker
    who = f"was written by `ufinebench {marker['written_by']}`" if marker else "was not written by ufinebench"
    hint = "--force writes beside its files and deletes none of them" if command not in ("train",) else "choose another train.out_dir"
    raise OutputError(f"{p} is not empty and {who}; {hint}")


def check_free(folder: PathLike, command: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that ``command`` does not own yet in ``folder``; refused if one of them exists
    (it belongs to someone else)."""
    p = Path(folder)
    marker = read_marker(p) if p.is_dir() else None
    owned = set(marker["entries"]) if marker and marker["written_by"] == command else set()
    new = [n for n in names if n not in owned]
    for n in new:
        if (p / n).exists() or (p / n).is_symlink():
            raise OutputError(f"{p / n} exists and was not written by ufinebench {command}; move it away first")
    return new


def record_entries(folder: PathLike, command: str, names: Iterable[str]) -> None:
    """Add ``names`` to the manifest of ``command`` in ``folder`` (creating the marker as needed),
    without the check of :func:`check_free`: for outputs recorded after they were written."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    marker = read_marker(p)
    owned = set(marker["entries"]) if marker and marker["written_by"] == command else set()
    if not set(names) <= owned or marker is None or marker["written_by"] != command:
        write_marker(p, command, owned | set(names))


def add_entries(folder: PathLike, command: str, names: Iterable[str]) -> None:
    """Record that ``command`` creates ``names`` in ``folder`` (creating the marker as needed).

    A name already present in the folder but not in the manifest belongs to someone else: refused.
    """
    names = list(names)
    check_free(folder, command, names)
    record_entries(folder, command, names)


def owned_entries(folder: PathLike, command: str) -> list[str]:
    """The entries of ``folder`` that ``command`` recorded as its own (and that still exist)."""
    marker = read_marker(folder)
    if marker is None or marker["written_by"] != command:
        return []
    return [e for e in marker["entries"] if (Path(folder) / e).exists() or (Path(folder) / e).is_symlink()]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_owned(folder: PathLike, command: str) -> list[str]:
    """Delete what ``command`` wrote in ``folder`` (its manifest) and nothing else; return the names."""
    p = Path(folder)
    gone = owned_entries(p, command)
    for e in gone:
        _remove(p / e)
    if gone:
        write_marker(p, command, [])
    return gone


def publish_dir(tmp: PathLike, out: PathLike, command: str) -> None:
    """Move the finished tree ``tmp`` to ``out``, replacing only what ``command`` wrote there before.

    When ``out`` is absent, or holds only this command's entries, the swap is one rename (atomic).
    Otherwise the old owned entries are removed and the new ones moved in one by one, leaving
    foreign files untouched; a new entry whose name a foreign file already uses is refused
    before anything is changed.
    """
    tmp, out = Path(tmp), Path(out)
    entries = [e for e in os.listdir(tmp) if e != MARKER]
    write_marker(tmp, command, entries)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    owned = set(owned_entries(out, command))
    foreign = _foreign_entries(out, owned)
    clash = sorted(set(foreign) & set(entries))
    if clash:
        raise OutputError(f"{out / clash[0]} exists and was not written by ufinebench {command}; move it away first")
    if not foreign:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for e in owned:
        _remove(out / e)
    for e in entries:
        os.replace(tmp / e, out / e)
    write_marker(out, command, entries)
    shutil.rmtree(tmp, ignore_errors=True)


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def remove_stale_siblings(target: PathLike) -> list[str]:
    """Remove the temporary siblings of ``target`` that a killed run left (``.NAME.partial-PID``,
    ``.NAME.tmp-PID``, ``.NAME.old-PID``: the only names the toolkit builds outputs under), when
    their process is gone; return their names. Call it holding :func:`output_lock` on ``target``."""
    target = _resolved(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(partial|tmp|old)-(\d+)$")
    gone = []
    for p in target.parent.iterdir() if target.parent.is_dir() else []:
        m = pattern.match(p.name)
        if m and int(m.group(2)) != os.getpid() and not _alive(int(m.group(2))):
            _remove(p)
            gone.append(p.name)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_lock(target: PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (file or folder); a second writer is refused at once.

    The lock file sits beside the target (``.NAME.lock``) so that replacing the target by a
    rename keeps it; it is removed on release. The lock dies with the process (``flock``).
    """
    target = _resolved(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{target} is being written by another ufinebench process (lock {path})") from None
            raise
        try:  # the file may have been removed by its previous holder between our open and our lock
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_stale_siblings(target)
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
