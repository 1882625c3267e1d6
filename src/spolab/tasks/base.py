"""What every entry point asks of a task, and the registry that ``task=<name>`` selects.

A task builds its splits (``spolab.data``), renders a problem as the prompt text the model reads
(``spolab.rollout.sampler.encode_prompts`` wraps it in a chat template when the tokenizer has one),
runs the programs a model wrote on a problem's tests, and knows its reference solutions (SFT targets,
the ``expert`` source). Entry points call these four things and nothing task-specific:

- ``listdsl`` (spolab.tasks.listdsl_task): the miniature, programs in a list DSL run in-process;
- ``humaneval`` and ``codecontests`` (spolab.tasks.code.task): Python programs run in the sandbox.

Execution is batched (``execute(problems, programs)``), so a code task runs a batch's programs in
parallel on the job's threads; a program of ``None`` is a response that hit the length limit
without EOS, which is wrong ("too long") whatever it would parse to.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spolab.config import CONF_DIR
from spolab.errors import ConfigError
from spolab.utils import Registry

TASKS = Registry("task")  # task.name -> Task subclass
# every split a task may build (Task.split_names: a task's own, in this order); list-DSL splits claim prompts
# in this order, earlier first (spolab.data)
SPLITS = ("test", "val", "ood", "rl", "sft")
_MODULES = ("spolab.tasks.listdsl_task", "spolab.tasks.code.task")  # where the registered tasks live
TOO_LONG = "too long"  # the error of a response without EOS


@dataclass(frozen=True)
class Outcome:
    """One program run on one problem's tests. ``signature`` is its functional class when it is
    correct (the outputs it produced; None otherwise), for the diversity metrics."""

    success: bool
    passed: int
    total: int
    error: str | None = None
    signature: str | None = None

    def reward(self, kind: str = "binary") -> float:
        """``binary``: 1 if every test passes else 0; ``fraction``: the share of tests passed."""
        if kind == "binary":
            return float(self.success)
        if kind == "fraction":
            return self.passed / self.total if self.total else 0.0
        raise ValueError(f"unknown reward kind {kind!r}; valid: 'binary', 'fraction'")

    @property
    def parsed(self) -> bool:
        """Whether it got as far as running: not a parse/syntax failure and not cut off."""
        return self.error is None or not self.error.startswith(("parse", "syntax", TOO_LONG, "no code"))


class Task:
    """The interface. ``cfg`` is the ``task`` group (conf/task/<name>.yaml)."""

    name: str = ""
    builds_tokenizer: bool = False  # True: the task has its own vocabulary (the miniature's word-level one)
    enumerates_solutions: bool = False  # True: enumerate_solutions lists every correct program up to a size
    # (the exact success mass of spolab.eval.exact_mass); a code task cannot

    def __init__(self, cfg):
        self.cfg = cfg

    # ---- data (spolab.data)
    def build(self, seed: int) -> tuple[dict[str, list], dict]:
        """Every split's problems and a summary for meta.json: a pure function of (cfg, seed)."""
        raise NotImplementedError

    def save_tokenizer(self, out_dir: Path) -> None:
        """Write the task's own tokenizer (only where ``builds_tokenizer``)."""
        raise NotImplementedError

    def problem_from_json(self, d: dict):
        raise NotImplementedError

    # ---- prompts, execution, references
    def prompt(self, problem) -> str:
        raise NotImplementedError

    def execute(self, problems: Sequence, programs: Sequence[str | None]) -> list[Outcome]:
        """Run ``programs[i]`` on ``problems[i]``; None is an unfinished response. Never raises for
        what a model wrote."""
        raise NotImplementedError

    def solutions(self, problem) -> list[str]:
        """Reference programs of a problem, as the model should write them (may be empty)."""
        raise NotImplementedError

    def enumerate_solutions(self, problem, max_len: int | None = None) -> list[str]:
        """Every correct program of ``problem`` up to size ``max_len`` (the task's own unit; None: the task
        config's default), as the model writes it, each distinct token sequence once: equivalent programs
        are all listed. Only where ``enumerates_solutions``."""
        raise NotImplementedError(f"task {self.name!r} cannot enumerate its solutions")

    def enumeration_size(self, max_len: int | None = None) -> int:
        """The size ``enumerate_solutions(problem, max_len)`` enumerates up to (None: the task config's
        default). Only where ``enumerates_solutions``."""
        raise NotImplementedError(f"task {self.name!r} cannot enumerate its solutions")

    def sft_targets(self, problems: Sequence, sft_cfg, seed: int) -> tuple[list, list[list[str]], int]:
        """What SFT trains on: (the problems, per problem the programs it may be taught, how many of
        them are deliberately flawed). By default each problem's reference solutions; problems without
        one are left out, and a split with none is a ConfigError."""
        pairs = [(p, self.solutions(p)) for p in problems]
        kept = [(p, t) for p, t in pairs if t]
        if not kept:
            raise ConfigError(f"task={self.name}: no problem of the sft split has a reference solution to train on; "
                              "use sft.enabled=false (π_ref = the pretrained model)")
        return [p for p, _ in kept], [t for _, t in kept], 0

    @classmethod
    def claims(cls, problem) -> bool:
        """Whether ``problem`` is one of this task's (a problem record names its task by its type)."""
        raise NotImplementedError

    # ---- config (no instance needed: the Snakefile and spolab.validate read a bare ``task`` group)
    @classmethod
    def split_names(cls, cfg) -> list[str]:
        """The splits ``cfg`` builds, in order (the data rule's outputs, the splits evaluated on)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg, prefix: str = "task") -> None:
        """Raise ConfigError for a bad ``task`` group (called by ``spolab.validate.check_task``)."""
        raise NotImplementedError

    @classmethod
    def check_sft(cls, cfg) -> None:
        """Raise ConfigError where the sft entry's config ``cfg`` cannot train this task's targets. By default
        the habitual flaw (``sft.flaw_rate``), a list-DSL step, must be off."""
        if cfg.sft.flaw_rate > 0:
            raise ConfigError(f"sft.flaw_rate={cfg.sft.flaw_rate}: must be 0 for task={cfg.task.name} (the habitual "
                              "flaw is a list-DSL step)")


def task_class(name: str) -> type[Task]:
    for module in _MODULES:
        importlib.import_module(module)
    return TASKS[name]  # unknown: ConfigError "unknown task 'x'; valid: [...]"


def get_task(cfg) -> Task:
    """The task of a ``task`` config group."""
    return task_class(cfg.name)(cfg)


_DEFAULTS: dict[str, Task] = {}


def task_of(problems: Sequence, task: Task | None = None) -> Task:
    """``task`` if given, else the task whose problems these are, with its default config (conf/task/
    <name>.yaml): what a caller that holds problems but no task config runs them with."""
    if task is not None:
        return task
    if not problems:
        raise ValueError("no problems: cannot tell which task they belong to")
    for module in _MODULES:
        importlib.import_module(module)
    for name, cls in TASKS.items():
        if cls.claims(problems[0]):
            if name not in _DEFAULTS:
                _DEFAULTS[name] = cls(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"))
            return _DEFAULTS[name]
    raise ValueError(f"no registered task claims a problem of type {type(problems[0]).__name__}")


def task_splits(cfg) -> list[str]:
    """The splits a task config builds (what the Snakefile evaluates on): its task's ``split_names``."""
    return task_class(cfg["name"]).split_names(cfg)


def exec_threads(cfg) -> int:
    """Threads that run a code task's programs: ``task.exec_threads``, or the job's thread count."""
    n = cfg.get("exec_threads") if hasattr(cfg, "get") else None
    return max(1, int(n or os.environ.get("SPOLAB_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))


def task_of_data(data_dir: str | Path) -> Task:
    """The task a data folder was built for (its meta.json records the task config)."""
    meta = Path(data_dir) / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: run `python -m spolab.data` (or the Snakemake data rule) first")
    cfg: Any = json.loads(meta.read_text()).get("task") or {"name": "listdsl"}
    return get_task(OmegaConf.create(cfg))
