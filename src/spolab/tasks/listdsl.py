"""The list-function DSL: "code contests in miniature" (docs/design.md §3).

A program is a pipeline of 1-4 primitives separated by ``|``; it maps a list of small
non-negative ints to a list or (last primitive only) to an int::

    sort | map + 1 | take 2        [3, 1, 4] -> [2, 4]
    filter odd | sum               [3, 1, 4] -> 4

Programs are token sequences (one word per token) so the same text is what the model writes.
Everything here is pure Python, deterministic and step-limited. Execution never raises:
unparsable programs, runtime errors (``head`` of an empty list, a value outside
``[0, MAX_VALUE]``) and step-limit overruns come back as an :class:`ExecResult` with an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Value = tuple[int, ...] | int  # a list is stored as a tuple so values are hashable

MAX_VALUE = 59  # largest int a program may produce; each int 0..MAX_VALUE is one token
MAX_LIST_LEN = 6  # input lists have 3..6 elements; no primitive lengthens a list
MAX_STEPS = 200  # interpreter step budget (elements touched) per program run
SEP = "|"


class DSLError(Exception):
    """A program failed to parse or to run (caught by :func:`run`; never escapes to callers)."""


@dataclass(frozen=True)
class Primitive:
    name: str  # its text, e.g. "map + 1"
    fn: Callable[[tuple[int, ...]], Value]
    returns_int: bool = False

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.name.split())


def _check(xs: tuple[int, ...]) -> tuple[int, ...]:
    for x in xs:
        if x > MAX_VALUE:
            raise DSLError(f"value {x} > MAX_VALUE")
    return xs


def _nonempty(xs: tuple[int, ...]) -> tuple[int, ...]:
    if not xs:
        raise DSLError("empty list")
    return xs


def _cumsum(xs: tuple[int, ...]) -> tuple[int, ...]:
    out, s = [], 0
    for x in xs:
        s += x
        out.append(s)
    return _check(tuple(out))


def _dedup(xs: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(xs))


def _build_primitives() -> tuple[Primitive, ...]:
    p: list[Primitive] = [
        Primitive("sort", lambda xs: tuple(sorted(xs))),
        Primitive("sortdesc", lambda xs: tuple(sorted(xs, reverse=True))),  # == sort | reverse
        Primitive("reverse", lambda xs: xs[::-1]),
    ]
    for k in (1, 2, 3):  # map + 1 | map + 1 == map + 2: deliberate redundancy (docs/design.md §3)
        p.append(Primitive(f"map + {k}", lambda xs, k=k: _check(tuple(x + k for x in xs))))
    for k in (2, 3):
        p.append(Primitive(f"map * {k}", lambda xs, k=k: _check(tuple(x * k for x in xs))))
    p += [
        Primitive("filter even", lambda xs: tuple(x for x in xs if x % 2 == 0)),
        Primitive("filter odd", lambda xs: tuple(x for x in xs if x % 2 == 1)),
        Primitive("filter > 4", lambda xs: tuple(x for x in xs if x > 4)),
        Primitive("filter < 5", lambda xs: tuple(x for x in xs if x < 5)),
    ]
    for k in (1, 2, 3):
        p.append(Primitive(f"take {k}", lambda xs, k=k: xs[:k]))
    for k in (1, 2, 3):
        p.append(Primitive(f"drop {k}", lambda xs, k=k: xs[k:]))
    p += [
        Primitive("cumsum", _cumsum),
        Primitive("dedup", _dedup),
        # list -> int: only allowed as the last primitive
        Primitive("head", lambda xs: _nonempty(xs)[0], True),
        Primitive("last", lambda xs: _nonempty(xs)[-1], True),
        Primitive("sum", lambda xs: _check((sum(xs),))[0], True),
        Primitive("max", lambda xs: max(_nonempty(xs)), True),
        Primitive("min", lambda xs: min(_nonempty(xs)), True),
        Primitive("count", lambda xs: len(xs), True),
    ]
    return tuple(p)


PRIMITIVES: tuple[Primitive, ...] = _build_primitives()
PRIM_BY_NAME: dict[str, int] = {p.name: i for i, p in enumerate(PRIMITIVES)}
LIST_OPS: tuple[int, ...] = tuple(i for i, p in enumerate(PRIMITIVES) if not p.returns_int)
INT_OPS: tuple[int, ...] = tuple(i for i, p in enumerate(PRIMITIVES) if p.returns_int)

Program = tuple[int, ...]  # indices into PRIMITIVES


def program_vocab() -> list[str]:
    """Every word a program can contain (primitive words, argument numbers, the separator)."""
    words = {SEP}
    for p in PRIMITIVES:
        words.update(p.tokens)
    return sorted(words, key=lambda w: (w.isdigit(), int(w) if w.isdigit() else 0, w))


# ---------------------------------------------------------------- parse / print


def parse(tokens: Sequence[str] | str) -> Program:
    """Text (or token list) -> program. Raises :class:`DSLError` on anything malformed."""
    if isinstance(tokens, str):
        tokens = tokens.split()
    if not tokens:
        raise DSLError("empty program")
    prog: list[int] = []
    part: list[str] = []
    for tok in [*tokens, SEP]:
        if tok != SEP:
            part.append(tok)
            continue
        name = " ".join(part)
        if name not in PRIM_BY_NAME:
            raise DSLError(f"unknown primitive {name!r}")
        prog.append(PRIM_BY_NAME[name])
        part = []
    for i in prog[:-1]:
        if PRIMITIVES[i].returns_int:
            raise DSLError(f"{PRIMITIVES[i].name!r} returns an int and must be last")
    return tuple(prog)


def to_text(prog: Program) -> str:
    return f" {SEP} ".join(PRIMITIVES[i].name for i in prog)


def to_tokens(prog: Program) -> list[str]:
    return to_text(prog).split()


# ---------------------------------------------------------------- interpreter


@functools.lru_cache(maxsize=1 << 20)
def apply(op: int, value: tuple[int, ...]) -> Value:
    """One primitive on one list (cached: enumeration applies the same ops to the same lists)."""
    return PRIMITIVES[op].fn(value)


def run(prog: Program, xs: Sequence[int], max_steps: int = MAX_STEPS) -> Value:
    """Run a parsed program on one input. Raises :class:`DSLError` on runtime errors."""
    value: Value = tuple(xs)
    steps = 0
    for op in prog:
        if isinstance(value, int):
            raise DSLError("int input to a list primitive")
        steps += len(value) + 1
        if steps > max_steps:
            raise DSLError("step limit")
        value = apply(op, value)
    return value


@dataclass(frozen=True)
class ExecResult:
    """Outcome of running a program text on a problem's tests. Never an exception."""

    parsed: bool
    passed: int
    total: int
    error: str | None = None  # first parse or runtime error, if any

    @property
    def success(self) -> bool:
        return self.parsed and self.total > 0 and self.passed == self.total

    def reward(self, kind: str = "binary") -> float:
        """``binary``: 1 if every test passes else 0; ``fraction``: share of tests passed."""
        if kind == "binary":
            return float(self.success)
        if kind == "fraction":
            return self.passed / self.total if self.parsed and self.total else 0.0
        raise ValueError(f"unknown reward kind {kind!r}; valid: 'binary', 'fraction'")


def execute(program: Sequence[str] | str, tests: Sequence[tuple[Sequence[int], Value]]) -> ExecResult:
    """Parse and run ``program`` on every (input, expected output) pair of ``tests``."""
    try:
        prog = parse(program)
    except DSLError as e:
        return ExecResult(False, 0, len(tests), f"parse: {e}")
    passed, error = 0, None
    for xs, expected in tests:
        try:
            out = run(prog, xs)
        except DSLError as e:
            error = error or f"runtime: {e}"
            continue
        expected = tuple(expected) if isinstance(expected, list | tuple) else expected
        passed += out == expected
    return ExecResult(True, passed, len(tests), error)


def outputs(prog: Program, inputs: Sequence[tuple[int, ...]]) -> tuple[Value | None, ...]:
    """The program's output on each input, None where it raises (a behaviour signature)."""
    res: list[Value | None] = []
    for xs in inputs:
        try:
            res.append(run(prog, xs))
        except DSLError:
            res.append(None)
    return tuple(res)


def signature_of_text(program: Sequence[str] | str, inputs: Sequence[tuple[int, ...]]):
    """Behaviour signature of a program text, or None if it does not parse."""
    try:
        return outputs(parse(program), inputs)
    except DSLError:
        return None


# ---------------------------------------------------------------- enumeration


def enumerate_solvers(
    tests: Sequence[tuple[Sequence[int], Value]], max_len: int = 4, limit: int | None = None,
    dead_steps: bool = False,
) -> list[Program]:
    """All programs of <= ``max_len`` primitives that pass every test and have no dead step.

    A dead step leaves the state (the values on all test inputs) unchanged; without this rule
    ``sort | sort | head`` and every other padding of a solution would count as a solver.
    With ``dead_steps=True`` they count too: every program of <= ``max_len`` primitives that passes
    the tests (what a model may write; spolab.eval.exact_mass sums the policy's mass over them).
    Depth-first search over states with memoisation of dead ends (lists never grow, so a
    state shorter than the target list is pruned).
    """
    start = tuple(tuple(xs) for xs, _ in tests)
    target = tuple(tuple(y) if isinstance(y, list | tuple) else y for _, y in tests)
    target_is_int = isinstance(target[0], int)
    found: list[Program] = []
    dead: set[tuple[tuple, int]] = set()  # (state, remaining) with no solution below

    def step(state: tuple, op: int) -> tuple | None:
        new = []
        for v in state:
            try:
                new.append(apply(op, v))
            except DSLError:
                return None
        return tuple(new)

    def dfs(state: tuple, prefix: tuple[int, ...], remaining: int) -> bool:
        if limit is not None and len(found) >= limit:
            return True
        if (state, remaining) in dead:
            return False
        any_found = False
        for op in INT_OPS if target_is_int else LIST_OPS:  # ops that can end a program here
            try:  # cheap filter on the first test before computing the whole state
                if apply(op, state[0]) != target[0]:
                    continue
            except DSLError:
                continue
            new = step(state, op)
            if new == target and (dead_steps or new != state):
                found.append((*prefix, op))
                any_found = True
        if remaining > 1:
            for op in LIST_OPS:
                new = step(state, op)
                if new is None or (new == state and not dead_steps):
                    continue
                if target_is_int or all(len(a) >= len(b) for a, b in zip(new, target)):
                    any_found |= dfs(new, (*prefix, op), remaining - 1)
        if not any_found:
            dead.add((state, remaining))
        return any_found

    dfs(start, (), max_len)
    return sorted(found, key=lambda p: (len(p), p))
