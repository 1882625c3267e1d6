"""Atomic writes: a reader sees the old file (or folder) or the new one, never a part of either.

Every write goes to a temporary name in the same folder, is flushed and fsync'ed, then renamed over
the target with ``os.replace`` (atomic within one filesystem), and the folder itself is fsync'ed so
the rename survives a power cut. A write that fails midway (a full disk, a kill, an exception in the
writer) removes its temporary file and leaves the target as it was.

- :func:`atomic_path`: a context manager yielding the temporary path, for writers that want a path
  (``DataFrame.to_csv``, ``Figure.savefig``, ``torch.save``).
- :func:`write_text` / :func:`write_bytes` / :func:`write_json`: the common cases.
- :func:`swap_dir`: a whole folder written aside, then swapped in (the previous one is removed only
  after the new one is in place).
- :func:`sha256_file`: the checksum manifests record (checkpoints, exports).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "fsync_dir", "sha256_file", "swap_dir", "write_bytes", "write_json", "write_text"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, so the renames inside it are on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _tmp_name(path: Path) -> Path:
    # a hidden name unique to this process and call: two writers of one target never share a temporary
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, fsync it and
    rename it to ``path``. On an error the temporary file is removed and ``path`` is untouched.

    The writer must create the file at the yielded path (keep its suffix in mind: the temporary
    name ends in ``.tmp``; pass ``format=`` to writers that guess the format from the name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any, **dumps: Any) -> None:
    """``json.dumps(obj, **dumps) + "\\n"``, atomically (``dumps`` defaults to indent 2, sorted keys)."""
    write_text(path, json.dumps(obj, **({"indent": 2, "sort_keys": True} | dumps)) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def swap_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to write the new contents into; when the block
    ends without error, fsync every file and swap the folder in place of ``path``: the old folder is
    renamed aside, the new one renamed to ``path``, then the old one removed. On an error the new
    folder is removed and ``path`` is untouched; a kill between the two renames leaves the previous
    folder whole under ``.<name>.old.<id>`` beside it (and ``path`` missing), never a mix of both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    new = path.with_name(f".{path.name}.new.{tag}")
    old = path.with_name(f".{path.name}.old.{tag}")
    new.mkdir()
    try:
        yield new
        for p in sorted(new.rglob("*")):
            if p.is_file():
                _fsync_file(p)
        fsync_dir(new)
        if path.exists():
            os.rename(path, old)
        os.rename(new, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
