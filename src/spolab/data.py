"""``python -m spolab.data``: build the task's splits (and, for the miniature, its tokenizer).

Writes ``{out_dir}/{split}.jsonl`` (one problem per line), ``meta.json`` (sizes and the task's
summary, e.g. class counts and solver statistics of the list DSL, and the task config) and, for a
task with its own vocabulary, ``tokenizer/``. The same seed gives byte-identical files. The task is
``task=<name>`` (spolab.tasks.base): listdsl, humaneval, codecontests.
"""

from __future__ import annotations

import logging
import random
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from spolab.cli import entry
from spolab.jsonl import write_manifest
from spolab.tasks import listdsl as dsl
from spolab.tasks.base import get_task
from spolab.tasks.problems import Problem, iter_problems, sample_classes
from spolab.utils import set_threads, write_json, write_jsonl
from spolab.validate import check_task, validate

log = logging.getLogger(__name__)

SPLITS_IN_ORDER = ("test", "val", "ood", "rl", "sft")  # earlier splits claim prompts first


def build_dataset(task: DictConfig, seed: int) -> tuple[dict[str, list[Problem]], dict]:
    """All splits (DESIGN §3) and a summary. Pure function of (task config, seed)."""
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


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "data")
    out = Path(cfg.out_dir)
    task = get_task(cfg.task)
    splits, meta = task.build(cfg.seed)
    for split, probs in splits.items():
        write_jsonl(out / f"{split}.jsonl", (p.to_json() for p in probs))
    if task.builds_tokenizer:
        task.save_tokenizer(out / "tokenizer")
    meta["task"] = OmegaConf.to_container(cfg.task, resolve=True)
    write_json(out / "meta.json", meta)
    write_manifest(out, [f"{split}.jsonl" for split in splits])  # readers refuse a split edited since
    log.info("dataset written to %s: %s; %s", out, meta["sizes"],
             {k: v for k, v in meta.items() if k not in ("sizes", "task")})
    return meta


def load_split(data_dir: str | Path, split: str) -> list:
    """The problems of one split, as the task the folder was built for reads them (meta.json)."""
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m spolab.data` (or the Snakemake data rule) first")
    from spolab.jsonl import read_split
    from spolab.tasks.base import task_of_data

    task = task_of_data(data_dir) if (Path(data_dir) / "meta.json").exists() else None
    # a folder of problems without meta.json: the miniature's, as before meta recorded the task
    return read_split(data_dir, split, Problem.from_json if task is None else task.problem_from_json)


main = entry("data", run)


if __name__ == "__main__":
    main()
