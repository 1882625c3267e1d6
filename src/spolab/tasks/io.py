"""Reading a built data folder: the problems of one split, as the task it was built for reads them."""

from __future__ import annotations

from pathlib import Path

from spolab.jsonl import read_split
from spolab.tasks.base import task_of_data
from spolab.tasks.problems import Problem


def load_split(data_dir: str | Path, split: str) -> list:
    """The problems of one split, as the task the folder was built for reads them (meta.json). A bad line
    or a split edited since the data step wrote it is one error naming the file and line (spolab.jsonl)."""
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m spolab.data` (or the Snakemake data rule) first")
    task = task_of_data(data_dir) if (Path(data_dir) / "meta.json").exists() else None
    # a folder of problems without meta.json: the miniature's, as before meta recorded the task
    return read_split(data_dir, split, Problem.from_json if task is None else task.problem_from_json)
