"""``python -m spolab.data``: build the list-DSL dataset, its splits and the tokenizer.

Writes ``{out_dir}/{split}.jsonl`` (one problem per line), ``meta.json`` (sizes, class
counts, solver statistics) and ``tokenizer/``. The same seed gives byte-identical files.
"""

from __future__ import annotations

import logging
import random
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from spolab.cli import entry
from spolab.models.build import build_tokenizer
from spolab.tasks import listdsl as dsl
from spolab.tasks.problems import Problem, iter_problems, sample_classes
from spolab.tasks.render import task_vocab
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
    splits, meta = build_dataset(cfg.task, cfg.seed)
    for split, probs in splits.items():
        write_jsonl(out / f"{split}.jsonl", (p.to_json() for p in probs))
    build_tokenizer(task_vocab()).save_pretrained(str(out / "tokenizer"))
    meta["task"] = OmegaConf.to_container(cfg.task, resolve=True)
    write_json(out / "meta.json", meta)
    log.info("dataset written to %s: %s; median solvers %s", out, meta["sizes"], meta["median_solvers"])
    return meta


def load_split(data_dir: str | Path, split: str) -> list[Problem]:
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m spolab.data` (or the Snakemake data rule) first")
    from spolab.utils import read_jsonl

    return [Problem.from_json(d) for d in read_jsonl(path)]


main = entry("data", run)


if __name__ == "__main__":
    main()
