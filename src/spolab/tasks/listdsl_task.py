"""``task=listdsl``: the miniature (DESIGN §3) behind the task interface (spolab.tasks.base).

Programs are list-DSL texts run in-process (spolab.tasks.listdsl); a correct program's functional
class is its outputs on the fixed probe inputs (spolab.tasks.problems.PROBES), so two programs are
one class when they compute the same function, not only when they agree on the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spolab.tasks import listdsl as dsl
from spolab.tasks.base import TASKS, TOO_LONG, Outcome, Task
from spolab.tasks.problems import PROBES, Problem
from spolab.tasks.render import prompt_text, task_vocab


@TASKS.register("listdsl")
class ListDSLTask(Task):
    name = "listdsl"
    builds_tokenizer = True

    def build(self, seed: int):
        from spolab.data import build_dataset

        return build_dataset(self.cfg, seed)

    def save_tokenizer(self, out_dir: Path) -> None:
        from spolab.models.build import build_tokenizer

        build_tokenizer(task_vocab()).save_pretrained(str(out_dir))

    def problem_from_json(self, d: dict) -> Problem:
        return Problem.from_json(d)

    def prompt(self, problem: Problem) -> str:
        return prompt_text(problem.examples)

    def execute(self, problems: Sequence[Problem], programs: Sequence[str | None]) -> list[Outcome]:
        out = []
        for prob, program in zip(problems, programs):
            tests = prob.all_tests()
            if program is None:
                out.append(Outcome(False, 0, len(tests), TOO_LONG))
                continue
            res = dsl.execute(program, tests)
            sig = dsl.signature_of_text(program, PROBES) if res.success else None
            # a program that does not parse passes nothing: its fraction reward is 0 (ExecResult.reward)
            out.append(Outcome(res.success, res.passed if res.parsed else 0, res.total, res.error,
                               repr(sig) if sig is not None else None))
        return out

    def solutions(self, problem: Problem) -> list[str]:
        return [problem.program]

    @classmethod
    def claims(cls, problem) -> bool:
        return isinstance(problem, Problem)
