"""``task=listdsl``: the miniature (docs/design.md §3) behind the task interface (spolab.tasks.base).

Programs are list-DSL texts run in-process (spolab.tasks.listdsl); a correct program's functional
class is its outputs on the fixed probe inputs (spolab.tasks.problems.PROBES), so two programs are
one class when they compute the same function, not only when they agree on the tests.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from spolab.errors import ConfigError
from spolab.models.build import build_tokenizer
from spolab.tasks import listdsl as dsl
from spolab.tasks.base import TASKS, TOO_LONG, Outcome, Task
from spolab.tasks.problems import PROBES, Problem, iter_problems, sample_classes
from spolab.tasks.render import prompt_text, task_vocab
from spolab.validate import (
    SPLITS,
    Rule,
    apply_rules,
    check_task,
    fraction,
    get,
    integer,
    items,
    one_of,
    per_split,
)

RULES: list[Rule] = [  # conf/task/listdsl.yaml
    ("n_classes", integer(2)),
    ("ood_fraction", fraction(lo_open=True, hi_open=True)),
    ("max_prims", integer(1)),
    ("n_examples", integer(1)),
    ("n_tests", integer(1)),
    ("solver_max_len", integer(1)),
    ("solvers_for", items(one_of(*SPLITS), nonempty=False)),
    ("max_solvers_stored", integer(0)),
    ("reward", one_of("binary", "fraction")),
    ("max_new_tokens", integer(1)),
]


def max_program_count(max_prims: int) -> int:
    """Programs of 1..max_prims primitives (list ops, the last one possibly an int op): a cheap upper
    bound on the behaviour classes ``spolab.tasks.problems.sample_classes`` can find."""
    n_list, n_all = len(dsl.LIST_OPS), len(dsl.PRIMITIVES)
    return sum(n_list ** (n - 1) * n_all for n in range(1, max_prims + 1))


def longest_program_tokens(max_prims: int) -> int:
    """Tokens of the longest program of ``max_prims`` primitives, separators and EOS included."""
    longest_list = max(len(dsl.PRIMITIVES[i].tokens) for i in dsl.LIST_OPS)
    longest_last = max(len(p.tokens) for p in dsl.PRIMITIVES)
    return (max_prims - 1) * (longest_list + 1) + longest_last + 1


def prompt_tokens(n_examples: int) -> int:
    """Prompt length in tokens (BOS included); every prompt of a dataset has this length."""
    full = [0] * dsl.MAX_LIST_LEN
    return len(prompt_text([[full, full]] * n_examples).split()) + 1


def flawed_program(problem, habit_ops: list[str], rng: random.Random) -> str | None:
    """The problem's generator with one habitual extra step that makes it wrong, or None.

    The habit: one primitive of ``habit_ops``, appended to a list-valued program or put just
    before the final primitive of an int-valued one (``sort | sum`` -> ``sort | dedup | sum``).
    Only a version that fails the problem's tests counts (a habit that happens to be harmless,
    ``sort | sort``, is not a flaw); the ops are tried in a random order.
    """
    prog = list(dsl.parse(problem.program))
    for name in rng.sample(habit_ops, len(habit_ops)):
        op = dsl.PRIM_BY_NAME[name]
        cand = prog + [op] if not dsl.PRIMITIVES[prog[-1]].returns_int else prog[:-1] + [op, prog[-1]]
        text = dsl.to_text(tuple(cand))
        if not dsl.execute(text, problem.all_tests()).success:
            return text
    return None


SFT_TARGETS = ("generator", "all_solvers")  # sft.targets: each problem's generator, or every short solver


def sft_targets(problems, kind: str, solver_max_len: int, flaw_rate: float = 0.0,
                flaw_ops: list[str] | None = None, seed: int = 0) -> list[list[str]]:
    """Per problem, the list of programs it may be trained on.

    With ``flaw_rate`` > 0, that share of the problems (drawn per problem from ``seed``) is
    taught a flawed program instead (:func:`flawed_program`): a systematic habit that the
    reward penalises on every prompt, the kind of general flaw RL post-training corrects.
    """
    if kind not in SFT_TARGETS:
        raise ValueError(f"sft.targets={kind!r} is not valid; choose {' or '.join(map(repr, SFT_TARGETS))}")
    out = _clean_targets(problems, kind, solver_max_len)
    if flaw_rate > 0:
        rng = random.Random(f"{seed}-flaw")
        for i, p in enumerate(problems):
            if rng.random() < flaw_rate:
                bad = flawed_program(p, list(flaw_ops or []), rng)
                if bad is not None:
                    out[i] = [bad]
    return out


def _clean_targets(problems, kind: str, solver_max_len: int) -> list[list[str]]:
    if kind == "generator":
        return [[p.program] for p in problems]
    # kind == "all_solvers" (sft_targets checked it). Solvers per class, found once on the class's first problem, then checked on each problem.
    by_class: dict[int, list[str]] = {}
    out = []
    for p in tqdm(problems, desc="sft/solvers", mininterval=2, leave=False):
        if p.class_id not in by_class:
            by_class[p.class_id] = [dsl.to_text(s) for s in dsl.enumerate_solvers(p.all_tests(), solver_max_len)]
        ok = [s for s in by_class[p.class_id] if dsl.execute(s, p.all_tests()).success]
        out.append(ok or [p.program])
    return out


SPLITS_IN_ORDER = SPLITS  # earlier splits claim prompts first


def build_dataset(task: DictConfig, seed: int) -> tuple[dict[str, list[Problem]], dict]:
    """All splits of the miniature and a summary for meta.json. Pure function of (task config, seed)."""
    check_task(task)  # ConfigError: split names and sizes, ood_fraction, n_classes feasibility, ...
    classes = sample_classes(random.Random(f"{seed}-classes"), task.n_classes, task.max_prims)
    ids = list(range(len(classes)))
    random.Random(f"{seed}-ood").shuffle(ids)
    n_ood = max(1, round(task.ood_fraction * len(ids)))
    ood_ids, seen_ids = sorted(ids[:n_ood]), sorted(ids[n_ood:])

    prompts_taken: set[str] = set()
    splits: dict[str, list[Problem]] = {}
    for split in SPLITS_IN_ORDER:
        n = int(task.splits.get(split, 0))
        rng = random.Random(f"{seed}-{split}")
        stream = iter_problems(rng, split, classes, ood_ids if split == "ood" else seen_ids,
                                 task.n_examples, task.n_tests)
        out: list[Problem] = []
        with tqdm(total=n, desc=f"data/{split}", leave=False, mininterval=2) as bar:
            while len(out) < n:
                prob = next(stream)
                key = " ".join(map(str, prob.examples))
                if key in prompts_taken:
                    continue  # a prompt never appears twice, within or across splits
                prompts_taken.add(key)
                prob.id = f"{split}-{len(out):06d}"
                if split in task.solvers_for:
                    sols = dsl.enumerate_solvers(prob.all_tests(), task.solver_max_len)
                    prob.n_solvers = len(sols)
                    prob.solvers = [dsl.to_text(s) for s in sols[: task.max_solvers_stored]]
                out.append(prob)
                bar.update()
        splits[split] = out

    meta = {
        "seed": seed,
        "n_classes": len(classes),
        "n_ood_classes": len(ood_ids),
        "sizes": {s: len(v) for s, v in splits.items()},
        "classes_covered": {s: len({p.class_id for p in v}) for s, v in splits.items()},
        "median_solvers": {
            s: statistics.median(p.n_solvers for p in v) for s, v in splits.items() if v and v[0].n_solvers >= 0
        },
        "solver_max_len": task.solver_max_len,
    }
    return splits, meta



@TASKS.register("listdsl")
class ListDSLTask(Task):
    name = "listdsl"
    builds_tokenizer = True
    enumerates_solutions = True

    def build(self, seed: int):
        return build_dataset(self.cfg, seed)

    def save_tokenizer(self, out_dir: Path) -> None:
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

    def enumerate_solutions(self, problem: Problem, max_len: int | None = None) -> list[str]:
        """Every program of <= ``max_len`` primitives (None: ``task.solver_max_len``) that passes the
        problem's examples and tests, dead steps included (``sort | sort | head`` is a program a model
        can write): :func:`spolab.tasks.listdsl.enumerate_solvers` with ``dead_steps=True``."""
        return [dsl.to_text(s) for s in dsl.enumerate_solvers(problem.all_tests(), self.enumeration_size(max_len),
                                                              dead_steps=True)]

    def enumeration_size(self, max_len: int | None = None) -> int:
        """Primitives per program: ``max_len``, or ``task.solver_max_len`` when None."""
        return int(self.cfg.solver_max_len if max_len is None else max_len)

    def sft_targets(self, problems, sft_cfg, seed: int):
        """Every problem, with ``sft.targets``' programs (:func:`sft_targets`: generators or all solvers,
        ``sft.flaw_rate`` of them the habitual flaw); the count taught a flawed program."""
        targets = sft_targets(problems, sft_cfg.targets, sft_cfg.solver_max_len, sft_cfg.flaw_rate,
                              list(sft_cfg.flaw_ops), seed)
        n_flawed = sum(t[0] != p.program and len(t) == 1 for t, p in zip(targets, problems)) if sft_cfg.flaw_rate else 0
        return problems, targets, n_flawed

    @classmethod
    def claims(cls, problem) -> bool:
        return isinstance(problem, Problem)

    @classmethod
    def split_names(cls, cfg) -> list[str]:
        """``task.splits`` with a size > 0."""
        return [s for s, n in dict(cfg["splits"]).items() if n]

    @classmethod
    def check_config(cls, cfg, prefix: str = "task") -> None:
        """Values, split names and sizes, and that ``n_classes`` classes exist and fit the token budget."""
        apply_rules(cfg, RULES, f"{prefix}.")
        splits = get(cfg, "splits")  # present: compose always has it
        if not isinstance(splits, dict):
            raise ConfigError(f"{prefix}.splits={splits!r}: must be a mapping of split name to problem count, "
                              f"splits among {list(SPLITS)}")
        per_split(splits, f"{prefix}.splits", integer(0))
        n_classes, max_prims, frac = cfg.n_classes, cfg.max_prims, cfg.ood_fraction
        if n_classes - max(1, round(frac * n_classes)) < 1:
            raise ConfigError(f"{prefix}.n_classes={n_classes}: must leave at least one class outside the ood split "
                              f"with {prefix}.ood_fraction={frac} (raise n_classes or lower ood_fraction)")
        bound = max_program_count(max_prims)
        if n_classes > bound:
            raise ConfigError(f"{prefix}.n_classes={n_classes}: must be <= {bound}, the number of programs of <= "
                              f"{prefix}.max_prims={max_prims} primitives; lower {prefix}.n_classes or raise "
                              f"{prefix}.max_prims")
        need = longest_program_tokens(max_prims)
        if cfg.max_new_tokens < need:
            raise ConfigError(f"{prefix}.max_new_tokens={cfg.max_new_tokens}: must be >= {need}, the longest program "
                              f"of {prefix}.max_prims={max_prims} primitives plus EOS")

    @classmethod
    def check_sft(cls, cfg) -> None:
        """A flawed target (one primitive more) and every prompt must fit: ``task.max_new_tokens`` holds the
        longest flawed program, ``model.max_positions`` a prompt plus a response (a from-scratch model)."""
        task = cfg.task
        if cfg.sft.flaw_rate > 0 and task.max_new_tokens < longest_program_tokens(task.max_prims + 1):
            raise ConfigError(f"task.max_new_tokens={task.max_new_tokens}: must be >= "
                              f"{longest_program_tokens(task.max_prims + 1)} with sft.flaw_rate={cfg.sft.flaw_rate} "
                              f"(a flawed target has up to task.max_prims + 1 = {task.max_prims + 1} primitives)")
        need = prompt_tokens(task.n_examples) + task.max_new_tokens
        if not cfg.model.name_or_path and cfg.model.max_positions < need:
            raise ConfigError(f"model.max_positions={cfg.model.max_positions}: must be >= {need}, a prompt of "
                              f"task.n_examples={task.n_examples} examples plus task.max_new_tokens="
                              f"{task.max_new_tokens}")
