"""Problems, behaviour classes and splits for the list DSL (docs/design.md §3).

A *problem* is a hidden program shown through 3 visible input/output examples (the prompt)
and scored on >= 10 hidden tests. A *behaviour class* is a program's signature: its outputs
on a fixed set of probe inputs. Splits:

- ``sft`` covers the seen classes; ``rl``, ``val`` and ``test`` are fresh problem instances
  (new inputs, new examples) of the same seen classes. No prompt appears in two splits.
- ``ood`` holds classes never used by any other split: the harder generalisation test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from spolab.errors import ConfigError
from spolab.jsonl import record
from spolab.tasks import listdsl as dsl

PROBE_SEED = 20250305  # fixed, independent of the data seed: signatures compare across datasets
N_PROBES = 24
MIN_LEN, MAX_LEN = 3, dsl.MAX_LIST_LEN  # input list lengths
MAX_INPUT = 9  # input elements are 0..MAX_INPUT


def random_input(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randint(0, MAX_INPUT) for _ in range(rng.randint(MIN_LEN, MAX_LEN)))


PROBES: tuple[tuple[int, ...], ...] = tuple(random_input(random.Random(PROBE_SEED + i)) for i in range(N_PROBES))


def signature(prog: dsl.Program) -> tuple:
    """Behaviour class of a program: its outputs on the fixed probe inputs (None = error)."""
    return dsl.outputs(prog, PROBES)


def has_dead_step(prog: dsl.Program, inputs=PROBES) -> bool:
    """True if some step leaves every input's value unchanged (e.g. ``sort | sort``)."""
    state = dsl.outputs((), inputs)
    for k in range(1, len(prog) + 1):
        new = dsl.outputs(prog[:k], inputs)
        if new == state:
            return True
        state = new
    return False


def random_program(rng: random.Random, max_prims: int = 4, p_int: float = 0.3) -> dsl.Program:
    """1..max_prims primitives; the last one returns an int with probability ``p_int``."""
    n = rng.randint(1, max_prims)
    prog = [rng.choice(dsl.LIST_OPS) for _ in range(n - 1)]
    prog.append(rng.choice(dsl.INT_OPS) if rng.random() < p_int else rng.choice(dsl.LIST_OPS))
    return tuple(prog)


def nontrivial_outputs(inputs, outs, min_distinct: int) -> str | None:
    """Why a set of (input, output) pairs is trivial, or None. docs/design.md §3's rejection rules."""
    if any(o is None for o in outs):
        return "error"
    if any(o == () for o in outs):
        return "empty output"
    if len(set(outs)) < min_distinct:
        return "too few distinct outputs"
    if sum(o == tuple(i) for i, o in zip(inputs, outs)) > len(outs) // 2:
        return "outputs equal inputs"
    return None


def sample_classes(rng: random.Random, n_classes: int, max_prims: int = 4, *, window: int = 20_000,
                   max_projected: int = 500_000) -> list[dsl.Program]:
    """Distinct, non-trivial behaviour classes, each with the first program that produced it.

    Gives up (ConfigError) when the draws stall: no new class in the last ``window`` draws, or so
    few that, at that rate, the missing classes would need more than ``max_projected`` further
    draws (the rate only falls). The checks only read counters: the programs drawn, hence the
    dataset of a feasible setting, are the same with or without them.
    """
    seen: dict[tuple, dsl.Program] = {}
    tries = 0
    at_window_start = 0  # classes found when the current window of draws began

    def infeasible(why: str):
        return ConfigError(f"task.n_classes={n_classes}: only {len(seen)} distinct non-trivial behaviour classes "
                           f"found with task.max_prims={max_prims} ({why}); lower task.n_classes or raise "
                           "task.max_prims")

    while len(seen) < n_classes:
        tries += 1
        if tries > 200 * n_classes:
            raise infeasible(f"{tries - 1} draws")
        if tries % window == 0:
            new, at_window_start = len(seen) - at_window_start, len(seen)
            if new == 0 or (n_classes - len(seen)) * window / new > max_projected:
                raise infeasible(f"{new} new in the last {window} of {tries} draws")
        prog = random_program(rng, max_prims)
        sig = signature(prog)
        if sig in seen or nontrivial_outputs(PROBES, sig, min_distinct=6) or has_dead_step(prog):
            continue
        seen[sig] = prog
    return list(seen.values())


@dataclass
class Problem:
    id: str
    split: str
    class_id: int
    program: str  # the generating program (one reference solution)
    examples: list  # [[input, output]] x n_examples, shown in the prompt
    tests: list  # [[input, output]] x n_tests, hidden; the reward uses these
    solvers: list[str] = field(default_factory=list)  # enumerated equivalent programs (may be empty)
    n_solvers: int = -1  # len(solvers) before any cap, -1 if not enumerated

    def all_tests(self) -> list:
        """Visible and hidden tests: a correct program must pass both."""
        return self.examples + self.tests

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> Problem:
        return record(Problem, d)  # BadRecord naming a missing or unknown field


def _as_json(v):
    return list(v) if isinstance(v, tuple) else v


def make_problem(
    rng: random.Random, prog: dsl.Program, n_examples: int, n_tests: int, max_tries: int = 50
) -> tuple[list, list] | None:
    """Fresh inputs for ``prog``: (examples, tests), or None if no non-trivial set was found."""
    n = n_examples + n_tests
    for _ in range(max_tries):
        inputs = []
        while len(inputs) < n:  # distinct inputs
            x = random_input(rng)
            if x not in inputs:
                inputs.append(x)
        outs = dsl.outputs(prog, inputs)
        if nontrivial_outputs(inputs, outs, min_distinct=min(4, n)):
            continue
        if any(o == i for i, o in zip(inputs[:n_examples], outs[:n_examples])):
            continue  # a visible example that does nothing teaches nothing
        pairs = [[list(i), _as_json(o)] for i, o in zip(inputs, outs)]
        return pairs[:n_examples], pairs[n_examples:]
    return None


def iter_problems(
    rng: random.Random, split: str, classes: list[dsl.Program], class_ids: list[int], n_examples: int, n_tests: int
) -> Iterator[Problem]:
    """Endless stream of problems of ``split`` whose class is drawn uniformly from ``class_ids``."""
    i = 0
    while True:
        cid = rng.choice(class_ids)
        made = make_problem(rng, classes[cid], n_examples, n_tests)
        if made is None:
            continue
        examples, tests = made
        yield Problem(f"{split}-{i:06d}", split, cid, dsl.to_text(classes[cid]), examples, tests)
        i += 1
