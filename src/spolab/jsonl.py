"""Reading JSON-lines files that other steps wrote, and the checksums that say they are still theirs.

Every record file of a run (task splits, trajectory pools and dumps) is one JSON object per line.
:func:`read_jsonl` parses it line by line and turns the first line that is not valid JSON, or not a
record of the expected kind (:func:`record`: a missing or unknown field), into one :class:`BadFile`
error naming the file, the line number and what was expected, plus how to rebuild the file; the
entry point prints it as one line and exits 2 (spolab.cli).

A step that writes a folder of such files can record their sha256 in ``manifest.json``
(:func:`write_manifest`); a reader then checks a file against it (:func:`check_manifest`), so a
file edited or damaged since (which Snakemake does not notice: its output is newer than its
inputs) is refused with the command that rebuilds it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spolab.atomic import sha256_file, write_json
from spolab.errors import SpolabError

MANIFEST = "manifest.json"


class BadFile(SpolabError):
    """An input file whose content is not what its reader expects: file, line, what was expected."""

    kind = "bad input file"


class BadRecord(ValueError):
    """A parsed JSON value that is not a record of the expected kind (raised by a ``from_json``)."""


@functools.cache
def _fields(cls) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every field, the required ones) of dataclass ``cls``."""
    fields = dataclasses.fields(cls)
    required = tuple(f.name for f in fields
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    return tuple(f.name for f in fields), required


def record(cls, d: Any):
    """``cls(**d)`` for a dataclass ``cls``, after checking that ``d`` is an object with every required
    field and no unknown one (BadRecord names them); the same object as ``cls(**d)`` otherwise."""
    if not isinstance(d, dict):
        raise BadRecord(f"expected a JSON object (a {cls.__name__} record), got {type(d).__name__}")
    names, required = _fields(cls)
    missing = [n for n in required if n not in d]
    unknown = [k for k in d if k not in names]
    if missing or unknown:
        parts = ([f"missing field(s) {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown field(s) {', '.join(map(repr, unknown))}"] if unknown else [])
        raise BadRecord(f"{'; '.join(parts)} (a {cls.__name__} record has {', '.join(names)}; "
                        f"required: {', '.join(required)})")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:  # a __post_init__ check (CodeProblem.kind)
        raise BadRecord(f"not a valid {cls.__name__} record: {' '.join(str(e).split())}") from None


def read_jsonl(path: str | Path, parse: Callable[[Any], Any] | None = None, *, rebuild: str | None = None) -> list:
    """The records of a JSON-lines file (blank lines skipped), each passed through ``parse`` when given.

    The first line that is not JSON, or that ``parse`` rejects with BadRecord, raises BadFile:
    ``<path>, line <n>: <what is wrong>; <rebuild>`` (``rebuild``: how to make the file again)."""
    hint = f"; {rebuild}" if rebuild else ""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadFile(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                              f"object per line{hint}") from None
            if parse is None:
                out.append(d)
                continue
            try:
                out.append(parse(d))
            except BadRecord as e:
                raise BadFile(f"{path}, line {n}: {e}{hint}") from None
    return out


def write_manifest(folder: str | Path, names: Iterable[str]) -> Path:
    """``<folder>/manifest.json``: the sha256 of each named file of the folder (written last, atomically)."""
    folder = Path(folder)
    path = folder / MANIFEST
    write_json(path, {"sha256": {name: sha256_file(folder / name) for name in sorted(names)}})
    return path


def check_manifest(path: str | Path, rebuild: str) -> None:
    """Raise BadFile when ``path`` is listed in its folder's manifest.json with another sha256 (edited or
    damaged since it was written); a folder without a manifest, or a file it does not list, passes."""
    path = Path(path)
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return
    try:
        want = json.loads(manifest.read_text())["sha256"].get(path.name)
    except (ValueError, KeyError, AttributeError, TypeError):
        raise BadFile(f"{manifest}: not a manifest (expected {{\"sha256\": {{file: hex digest}}}}); {rebuild}") from None
    if want is not None and sha256_file(path) != want:
        raise BadFile(f"{path}: its sha256 differs from the one {manifest} recorded when it was written (the file was "
                      f"edited or damaged since); {rebuild}")


def rebuild_data(data_dir: str | Path) -> str:
    """How to rebuild a task data folder (the hint of a BadFile about one of its files)."""
    return (f"rebuild the data: `snakemake --forcerun data` (or `rm -r {data_dir}` and rerun snakemake), or "
            f"`python -m spolab.data out_dir={data_dir}` with the settings that built it")


def read_split(data_dir: str | Path, split: str, parse: Callable[[Any], Any]) -> list:
    """The records of ``<data_dir>/<split>.jsonl``, checked against the data folder's manifest first."""
    path = Path(data_dir) / f"{split}.jsonl"
    check_manifest(path, rebuild_data(data_dir))
    return read_jsonl(path, parse, rebuild=rebuild_data(data_dir))
