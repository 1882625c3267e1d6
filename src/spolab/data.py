"""``python -m spolab.data``: build the task's splits (and, for the miniature, its tokenizer).

Writes ``{out_dir}/{split}.jsonl`` (one problem per line), ``meta.json`` (sizes and the task's
summary, e.g. class counts and solver statistics of the list DSL, and the task config) and, for a
task with its own vocabulary, ``tokenizer/``. The same seed gives byte-identical files. The task is
``task=<name>`` (spolab.tasks.base): listdsl, humaneval, codecontests.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spolab.cli import entry
from spolab.jsonl import write_manifest
from spolab.tasks.base import get_task
from spolab.utils import set_threads, write_json, write_jsonl
from spolab.validate import validate

log = logging.getLogger(__name__)


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


main = entry("data", run)


if __name__ == "__main__":
    main()
