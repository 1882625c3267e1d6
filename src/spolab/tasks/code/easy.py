"""An easy code set in the CodeContests schema: list-DSL problems as stdin/stdout tasks (docs/design.md §9).

A DSL problem (:class:`spolab.tasks.problems.Problem`) becomes one CodeContests record: the
description states the I/O format and shows the visible examples, ``public_tests`` are the
examples and ``private_tests`` the hidden tests (one test = one input list), and
``solutions`` holds the generating DSL program translated to Python 3 (``dsl_to_python``).
Every field of the Hugging Face ``deepmind/code_contests`` layout is written, so
:func:`spolab.tasks.code.codecontests.load_codecontests` reads the file like the real set.

I/O: the input is one line, the list's integers separated by single spaces; the output is one
line, the resulting list's integers separated by spaces, or the single integer.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from spolab.tasks import listdsl as dsl
from spolab.tasks.problems import MAX_INPUT, MAX_LEN, MIN_LEN, Problem

_FIXED = {
    "sort": "xs = sorted(xs)",
    "sortdesc": "xs = sorted(xs, reverse=True)",
    "reverse": "xs = xs[::-1]",
    "cumsum": "xs = list(accumulate(xs))",
    "dedup": "xs = list(dict.fromkeys(xs))",
    "head": "print(xs[0])",
    "last": "print(xs[-1])",
    "sum": "print(sum(xs))",
    "max": "print(max(xs))",
    "min": "print(min(xs))",
    "count": "print(len(xs))",
}
_FILTERS = {"even": "x % 2 == 0", "odd": "x % 2 == 1"}


def _statement(name: str) -> str:
    """One DSL primitive as one Python statement on the list ``xs``."""
    if name in _FIXED:
        return _FIXED[name]
    if m := re.fullmatch(r"map ([+*]) (\d+)", name):
        return f"xs = [x {m.group(1)} {m.group(2)} for x in xs]"
    if m := re.fullmatch(r"filter (even|odd|[<>] \d+)", name):
        return f"xs = [x for x in xs if {_FILTERS.get(m.group(1), 'x ' + m.group(1))}]"
    if m := re.fullmatch(r"(take|drop) (\d+)", name):
        return f"xs = xs[:{m.group(2)}]" if m.group(1) == "take" else f"xs = xs[{m.group(2)}:]"
    raise ValueError(f"no Python translation for DSL primitive {name!r}")


def dsl_to_python(program: str) -> str:
    """A Python 3 stdin/stdout program equivalent to the DSL `program` on valid inputs.

    (DSL runtime errors, e.g. a value above ``MAX_VALUE``, are not reproduced: generated
    problems have none on their tests.)

    >>> print(dsl_to_python("sort | map + 1 | take 2"), end="")
    from itertools import accumulate
    xs = list(map(int, input().split()))
    xs = sorted(xs)
    xs = [x + 1 for x in xs]
    xs = xs[:2]
    print(*xs)
    """
    prims = [dsl.PRIMITIVES[i] for i in dsl.parse(program)]
    lines = ["from itertools import accumulate", "xs = list(map(int, input().split()))"]
    lines += [_statement(p.name) for p in prims]
    if not prims[-1].returns_int:
        lines.append("print(*xs)")
    return "\n".join(lines) + "\n"


def _text(value) -> str:
    return (" ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)) + "\n"


def _tests(pairs: Sequence) -> dict[str, list[str]]:
    return {"input": [_text(i) for i, _ in pairs], "output": [_text(o) for _, o in pairs]}


def describe(problem: Problem) -> str:
    """The problem statement: the I/O format and the visible examples, CodeContests style."""
    parts = [
        "A hidden rule transforms a list of integers. Work it out from the examples and write a "
        "Python program that applies it.",
        "Input",
        f"One line: a list of {MIN_LEN} to {MAX_LEN} integers between 0 and {MAX_INPUT}, separated by spaces.",
        "Output",
        "One line: the transformed list, its integers separated by spaces, or a single integer.",
        "Examples",
    ]
    for inp, out in problem.examples:
        parts += ["Input", _text(inp).strip(), "Output", _text(out).strip()]
    return "\n\n".join(parts) + "\n"


def dsl_problems_as_codecontests(
    problems: Iterable[Problem], *, time_limit_s: float = 2.0, memory_mb: int = 256, prefix: str = "dsl/"
) -> list[dict]:
    """CodeContests records (every field of the HF layout) for DSL problems (module docstring)."""
    seconds = int(time_limit_s)
    records = []
    for p in problems:
        records.append(
            {
                "name": f"{prefix}{p.id}",
                "description": describe(p),
                "public_tests": _tests(p.examples),
                "private_tests": _tests(p.tests),
                "generated_tests": {"input": [], "output": []},
                "source": 0,  # UNKNOWN_SOURCE
                "difficulty": 1,  # EASY
                "solutions": {"language": [3], "solution": [dsl_to_python(p.program)]},  # 3 = PYTHON3
                "incorrect_solutions": {"language": [], "solution": []},
                "cf_contest_id": 0,
                "cf_index": "",
                "cf_points": 0.0,
                "cf_rating": 0,
                "cf_tags": [],
                "is_description_translated": False,
                "untranslated_description": "",
                "time_limit": {"seconds": seconds, "nanos": round((time_limit_s - seconds) * 1e9)},
                "memory_limit_bytes": memory_mb << 20,
                "input_file": "",
                "output_file": "",
            }
        )
    return records


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """One JSON record per line (gzip when `path` ends in ``.gz``); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path
