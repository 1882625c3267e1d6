"""CodeContests and TACO problems from files on disk: ``load_codecontests(path) -> [CodeProblem]``.

Two record schemas, detected per record:

- **CodeContests** (google-deepmind/code_contests, ``contest_problem.proto``; the Hugging Face
  ``deepmind/code_contests`` layout): ``name``, ``description``, ``public_tests`` /
  ``private_tests`` / ``generated_tests`` as ``{"input": [...], "output": [...]}`` (or, as
  ``convert_riegeli_to_json.py`` writes them, lists of ``{"input", "output"}``), ``solutions``
  / ``incorrect_solutions`` as ``{"language": [...], "solution": [...]}`` (or lists of
  ``{"language", "solution"}``), ``time_limit`` ``{"seconds", "nanos"}`` (a protobuf
  Duration; also ``"2s"`` or its text format), ``memory_limit_bytes``, ``difficulty``,
  ``source``, ``input_file`` / ``output_file``. Solutions are kept when their language is
  ``PYTHON3`` = 3 in the proto's ``Solution.Language`` enum (``PYTHON`` = 1 is Python 2).
- **TACO** (BAAI/TACO, FlagOpen/TACO): ``question``, ``input_output`` (a JSON string
  ``{"inputs": [...], "outputs": [...], "fn_name"?}``), ``solutions`` (a JSON string list of
  Python programs), ``starter_code``, ``time_limit`` (``"1 second"``), ``memory_limit``
  (``"256 megabytes"``). Without ``fn_name`` the problem is stdio (an input or output given
  as a list of lines is joined with newlines, as TACO's tester does). With ``fn_name`` it is
  call-based: a ``function`` problem whose check calls ``candidate(*inputs[i])`` and accepts
  TACO's rule (``execute_cb_code`` in metrics/testing_util.py): a tuple result is compared as
  a list, and ``out == expected`` or ``out == expected[0]``; the check's setup has TACO's
  standard imports (less numpy, which the sandbox does not have), and a ``class Solution``
  method named ``fn_name`` is the candidate when no function of that name exists.

Limits: ``time_limit_s`` is the problem's (``default_time_limit_s`` when absent or zero);
``memory_mb`` is its limit plus 32 MB for the interpreter, as CodeContests' tester sets
RLIMIT_AS ("the limit of the test + 32 MB for the interpreter / binary itself",
execution/tester_sandboxer.cc). Problems with no test in the selected sets and CodeContests
problems that read or write named files (``input_file`` / ``output_file``) are skipped.

Where: a ``.jsonl`` / ``.jsonl.gz`` / ``.json`` (a list) / ``.parquet`` file, a directory of
such files (searched recursively), or a ``datasets`` dataset saved with ``save_to_disk``.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from spolab.errors import ConfigError
from spolab.tasks.code.problems import CodeProblem

log = logging.getLogger(__name__)

TEST_SETS = ("public", "private", "generated")
PYTHON3 = 3  # ContestProblem.Solution.Language.PYTHON3 (contest_problem.proto)
INTERPRETER_MB = 32  # CodeContests' tester: RLIMIT_AS = memory limit + 32 MB
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")

TACO_PRELUDE = """\
import sys, time, itertools, collections, math, fractions, random, heapq
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
from typing import List, Tuple
from heapq import *
from json import loads as _taco_json


def _taco_match(out, expected):
    if isinstance(out, tuple):
        out = list(out)
    if out == expected:
        return True
    if isinstance(expected, list) and expected:
        if out == expected[0]:
            return True
        if isinstance(out, list) and out and isinstance(out[0], tuple):
            return [list(x) for x in out] == expected[0]
    return False
"""


# --------------------------------------------------------------------------------------------
# Reading records


def _suffix(path: Path) -> str | None:
    return next((s for s in SUFFIXES if path.name.endswith(s)), None)


def _file_label(path: Path) -> str:
    """The split a file holds, from its name: ``data/valid-00000-of-00001.parquet`` -> ``valid``."""
    suffix = _suffix(path) or path.suffix
    return _SHARD.sub("", path.name[: -len(suffix)] if suffix else path.name)


def _read_file(path: Path) -> Iterator[dict]:
    suffix = _suffix(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # optional: comes with `datasets` (.[real]), needed for .parquet only

        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            yield from batch.to_pylist()
        return
    opener = gzip.open if suffix == ".jsonl.gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if suffix == ".json":
            try:
                data = json.load(f)
            except ValueError as e:
                raise ConfigError(f"{path}: not valid JSON: {e}") from e
            if not isinstance(data, list):
                raise ConfigError(f"{path}: a .json file must hold a list of problem records")
            yield from data
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as e:
                raise ConfigError(f"{path}: line {n} is not valid JSON: {e}") from e


def _sources(path: Path, split: str | None) -> Iterator[tuple[str, str, Iterator[dict]]]:
    """(where, split label, records) for every file or dataset split under `path`."""
    if not path.exists():
        raise ConfigError(f"codecontests path {str(path)!r} does not exist")
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
        import datasets  # optional extra (.[real]): only a saved `datasets` folder needs it

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            names = [split] if split else list(ds)
            missing = [s for s in names if s not in ds]
            if missing:
                raise ConfigError(f"{path}: no split {missing[0]!r} in the saved dataset; it has {list(ds)}")
            for s in names:
                yield f"{path}[{s}]", s, iter(ds[s])
        else:
            yield str(path), split or path.name, iter(ds)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p))
        if not files:
            raise ConfigError(f"{path}: no {'/'.join(SUFFIXES)} file and no saved `datasets` dataset in it")
        if split is not None:
            labels = sorted({_file_label(p) for p in files})
            files = [p for p in files if _file_label(p) == split]
            if not files:
                raise ConfigError(f"{path}: no file of split {split!r}; the files hold {labels}")
        for p in files:
            yield str(p), _file_label(p), _read_file(p)
        return
    if not _suffix(path):
        raise ConfigError(f"{path}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
    yield str(path), split or _file_label(path), _read_file(path)


# --------------------------------------------------------------------------------------------
# CodeContests records


def _cc_tests(value, where: str) -> list[dict]:
    if not value:
        return []
    if isinstance(value, dict):
        inputs, outputs = value.get("input") or [], value.get("output") or []
        if len(inputs) != len(outputs):
            raise ConfigError(f"{where}: {len(inputs)} test inputs but {len(outputs)} outputs")
        return [{"input": i, "output": o} for i, o in zip(inputs, outputs)]
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        return [{"input": t.get("input", ""), "output": t.get("output", "")} for t in value]
    raise ConfigError(f"{where}: tests must be {{'input': [...], 'output': [...]}} or a list of them")


def _is_python3(language) -> bool:
    return str(language).strip().upper() in (str(PYTHON3), "PYTHON3")


def _cc_solutions(value, where: str) -> list[str]:
    if not value:
        return []
    if isinstance(value, dict):
        pairs = zip(value.get("language") or [], value.get("solution") or [])
    elif isinstance(value, list) and all(isinstance(s, dict) for s in value):
        pairs = ((s.get("language"), s.get("solution", "")) for s in value)
    else:
        raise ConfigError(f"{where}: solutions must be {{'language': [...], 'solution': [...]}} or a list of them")
    return [code for lang, code in pairs if _is_python3(lang) and code]


def _cc_time_limit(value, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if m := re.fullmatch(r"\s*([\d.]+)\s*s\s*", value):  # protobuf JSON: "2s", "1.5s"
            return float(m.group(1))
        seconds = re.search(r"seconds:\s*(\d+)", value)  # protobuf text format: "seconds: 2 nanos: 5"
        nanos = re.search(r"nanos:\s*(\d+)", value)
        if seconds or nanos:
            return float(seconds.group(1) if seconds else 0) + float(nanos.group(1) if nanos else 0) / 1e9
    raise ConfigError(f"{where}: cannot read time_limit {value!r} (expected {{'seconds': s, 'nanos': ns}})")


def _from_codecontests(rec: dict, where: str, split: str, test_sets: Sequence[str], time_s: float,
                       memory_mb: int) -> CodeProblem | None:
    if rec.get("input_file") or rec.get("output_file"):
        return None
    tests = [t for s in test_sets for t in _cc_tests(rec.get(f"{s}_tests"), f"{where} ({s}_tests)")]
    if not tests:
        return None
    limit = _cc_time_limit(rec.get("time_limit"), where)
    mem_bytes = int(rec.get("memory_limit_bytes") or 0)
    return CodeProblem(
        id=str(rec.get("name") or ""),
        split=split,
        kind="stdio",
        prompt=str(rec.get("description") or ""),
        tests=tests,
        solutions=_cc_solutions(rec.get("solutions"), where),
        time_limit_s=limit if limit else time_s,
        memory_mb=(-(-mem_bytes // (1 << 20)) if mem_bytes > 0 else memory_mb) + INTERPRETER_MB,
        source="codecontests",
    )


# --------------------------------------------------------------------------------------------
# TACO records


def _json_field(value, where: str, name: str):
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError as e:
            raise ConfigError(f"{where}: field {name} is not valid JSON: {e}") from e
    return value


def _taco_number(value, pattern: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    m = re.search(pattern, str(value), flags=re.IGNORECASE)
    return float(m.group(1)) if m else None


def _taco_text(v) -> str:
    return "\n".join(map(str, v)) if isinstance(v, list) else str(v)


def _from_taco(rec: dict, where: str, split: str, time_s: float, memory_mb: int) -> CodeProblem | None:
    io = _json_field(rec.get("input_output"), where, "input_output") or {}
    if not isinstance(io, dict):
        raise ConfigError(f"{where}: input_output must be a JSON object with inputs and outputs")
    inputs, outputs = io.get("inputs") or [], io.get("outputs") or []
    if len(inputs) != len(outputs):
        raise ConfigError(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs in input_output")
    if not inputs:
        return None
    solutions = _json_field(rec.get("solutions"), where, "solutions") or []
    if not (isinstance(solutions, list) and all(isinstance(s, str) for s in solutions)):
        raise ConfigError(f"{where}: solutions must be a JSON list of programs")
    limit = _taco_number(rec.get("time_limit"), r"([\d.]+)\s*(?:s|sec|second)")
    mem = _taco_number(rec.get("memory_limit"), r"([\d.]+)\s*(?:mb|megabyte)")
    prompt = str(rec.get("question") or "")
    if rec.get("starter_code"):
        prompt += "\n\n" + str(rec["starter_code"])
    common = dict(
        id=str(rec.get("name") or ""),
        split=split,
        prompt=prompt,
        solutions=[s for s in solutions if s.strip()],
        time_limit_s=limit if limit else time_s,
        memory_mb=(int(mem) if mem else memory_mb) + INTERPRETER_MB,
        source="taco",
    )
    fn_name = io.get("fn_name")
    if not fn_name:
        tests = [{"input": _taco_text(i), "output": _taco_text(o)} for i, o in zip(inputs, outputs)]
        return CodeProblem(kind="stdio", tests=tests, **common)
    asserts = []
    for args, expected in zip(inputs, outputs):
        args = args if isinstance(args, list) else [args]
        asserts.append(f"    assert _taco_match(candidate(*_taco_json({json.dumps(args)!r})), "
                       f"_taco_json({json.dumps(expected)!r}))")
    check = TACO_PRELUDE + "\n\ndef check(candidate):\n" + "\n".join(asserts) + "\n"
    return CodeProblem(kind="function", check=check, entry_point=str(fn_name), **common)


# --------------------------------------------------------------------------------------------
# The loader


def schema_of(rec) -> str | None:
    """``"codecontests"``, ``"taco"`` or None, from the record's field names."""
    if not isinstance(rec, dict):
        return None
    if "description" in rec and any(f"{s}_tests" in rec for s in TEST_SETS):
        return "codecontests"
    if "question" in rec and "input_output" in rec:
        return "taco"
    return None


def load_codecontests(
    path: str | Path,
    split: str | None = None,
    *,
    tests: Sequence[str] = TEST_SETS,
    default_time_limit_s: float = 2.0,
    default_memory_mb: int = 256,
) -> list[CodeProblem]:
    """Every usable problem under `path`, in file order (module docstring).

    `split`: with a saved DatasetDict, the split to read (default all); with a directory of
    files, read only the files of that split (by name: ``valid-00000-of-00001.parquet`` holds
    ``valid``); with a single file, the label given to its problems (default: the file name).
    `tests`: which CodeContests test sets a program must pass (TACO has a single set).
    Problem ids are the records' names (``<split>/<index>`` when empty), made unique with
    ``#2``, ``#3``... in load order.
    """
    bad = [t for t in tests if t not in TEST_SETS]
    if bad or not tests:
        raise ConfigError(f"codecontests tests={list(tests)}: choose from {list(TEST_SETS)} (at least one)")
    out: list[CodeProblem] = []
    seen: dict[str, int] = {}
    skipped = 0
    for where, label, records in _sources(Path(path), split):
        for n, rec in enumerate(records):
            at = f"{where}: record {n}"
            schema = schema_of(rec)
            if schema == "codecontests":
                p = _from_codecontests(rec, at, label, tests, default_time_limit_s, default_memory_mb)
            elif schema == "taco":
                p = _from_taco(rec, at, label, default_time_limit_s, default_memory_mb)
            else:
                keys = sorted(rec)[:12] if isinstance(rec, dict) else type(rec).__name__
                raise ConfigError(
                    f"{at}: neither the CodeContests schema (name, description, public_tests, ...) nor "
                    f"TACO's (question, input_output, ...); it has {keys}"
                )
            if p is None:
                skipped += 1
                continue
            p.id = p.id or f"{label}/{n}"
            seen[p.id] = seen.get(p.id, 0) + 1
            if seen[p.id] > 1:
                p.id = f"{p.id}#{seen[p.id]}"
            out.append(p)
    if skipped:
        log.info("codecontests %s: skipped %d problems (no test in %s, or file I/O)", path, skipped, list(tests))
    return out
