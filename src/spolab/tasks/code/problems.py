"""Code problems and the outcome of running a program on one (docs/design.md §9).

Two kinds of :class:`CodeProblem`:

- ``"function"`` (HumanEval style): the model completes a Python function; the problem's
  ``check`` source defines ``check(candidate)``, a list of asserts over calls of the function
  named ``entry_point``. ``tests`` is empty.
- ``"stdio"`` (CodeContests / TACO style): the model writes a whole program that reads stdin
  and writes stdout; ``tests`` is a list of ``{"input": str, "output": str}``.

:class:`CodeResult` mirrors :class:`spolab.tasks.listdsl.ExecResult`: ``passed`` of ``total``
tests (stdio) or test statements of ``check`` (function), and the same two reward kinds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property

from spolab.jsonl import record
from spolab.tasks.base import Outcome

KINDS = ("function", "stdio")


@dataclass
class CodeProblem:
    id: str
    split: str
    kind: str  # "function" | "stdio"
    prompt: str  # the text shown to the model: signature + docstring (function), description (stdio)
    tests: list[dict] = field(default_factory=list)  # stdio: [{"input": str, "output": str}]; function: []
    check: str = ""  # function: source defining check(candidate) (HumanEval's `test` field)
    entry_point: str = ""  # function: the name check's candidate is looked up by
    solutions: list[str] = field(default_factory=list)  # reference Python 3 programs (may be empty)
    time_limit_s: float = 2.0  # per sandbox run: per test (stdio), the whole check (function)
    memory_mb: int = 256  # address-space limit of each sandbox run
    source: str = ""  # dataset name: "humaneval", "codecontests", "taco", "dsl"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"problem {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> CodeProblem:
        return record(CodeProblem, d)  # BadRecord naming a missing or unknown field

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of everything that decides a program's result (not split, not solutions).

        Computed once per object: problems are treated as immutable once built.
        """
        d = self.to_json()
        for k in ("split", "solutions"):
            d.pop(k)
        payload = json.dumps(d, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


# Outcome of running one program on one problem: spolab.tasks.base.Outcome, the type every task returns
# (success, passed of total, the first failure, the functional signature; ``reward(kind)``). ``error`` is None
# for a program that ran cleanly (it may still fail tests: a wrong answer), else a sandbox status
# (``runtime_error``, ``timeout``, ``memory``, ``output_limit``, ``syntax_error``, ``sandbox_error``),
# ``"no code"`` (no program could be extracted) or ``"too long"`` (the program exceeds the size limit).
# ``signature`` is the program's functional class (a hash of its outputs on the tests; see
# spolab.tasks.code.execute), None when the program did not run to the end.
CodeResult = Outcome
