"""``python -m spolab.evaluate``: pass@k and diversity of a checkpoint on a held-out split.

generate (n samples per problem under a named protocol) -> execute -> score, as separate
steps (spolab.eval.generate). Writes ``{out_dir}/samples.jsonl`` (one line per sample:
problem, program, correct, ...), ``{out_dir}/per_problem.json`` and ``{out_dir}/eval.json``, one folder per split and protocol
(metrics with 95 % bootstrap intervals over problems: pass@k, and diversity among all samples,
among correct samples and per solved problem, spolab.eval.diversity), mirrors them into MLflow
(metrics, and both JSON files as artifacts), and writes ``{out_dir}/summary.json`` with the metrics
of every pair.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spolab.cli import entry
from spolab.config import load_protocol
from spolab.eval.generate import evaluate_policy
from spolab.models.build import load_model, load_tokenizer
from spolab.tasks.base import get_task
from spolab.tasks.io import load_split
from spolab.tracking import Tracker
from spolab.utils import (
    autocast,
    memory_metrics,
    reset_peak_memory,
    resolve_device,
    seed_everything,
    set_threads,
    write_json,
    write_jsonl,
)
from spolab.validate import validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Evaluate ``model_dir`` on every split of ``splits`` under every protocol of ``protocols``;
    each pair writes ``{out_dir}/{split}-{protocol}/`` and is one MLflow run."""
    set_threads()
    validate(cfg, "evaluate")
    device = resolve_device(cfg.device)
    if not (Path(cfg.model_dir) / "config.json").exists():
        raise FileNotFoundError(f"model_dir={cfg.model_dir} holds no saved model (config.json missing)")
    tok = load_tokenizer(cfg.model_dir)
    model = load_model(cfg.model_dir, device=device).eval()
    ref = load_model(cfg.ref_model_dir, device=device).eval() if cfg.ref_model_dir else None
    task = get_task(cfg.task)
    results = {}
    for split in cfg.splits:
        problems = load_split(cfg.data_dir, split)
        limit = (cfg.n_problems or {}).get(split)
        if limit:
            problems = problems[:limit]
        for proto_name in cfg.protocols:
            protocol = load_protocol(proto_name)
            seed_everything(cfg.seed)
            out = Path(cfg.out_dir) / f"{split}-{protocol.name}"
            with Tracker.from_config(
                out, cfg, run_name=f"eval-{cfg.name}-{split}-{protocol.name}",
                tags={"stage": "eval", "algo": cfg.name, "split": split, "protocol": protocol.name,
                      "scale": cfg.scale.name, "seed": str(cfg.seed)},
            ) as tracker, autocast(device, cfg.precision):
                reset_peak_memory(device)
                metrics, per_problem, samples = evaluate_policy(
                    model, tok, problems, protocol, max_new_tokens=cfg.task.max_new_tokens,
                    batch_size=cfg.forward_batch_size, seed=cfg.seed, prefix=split, ref_model=ref, reward=cfg.task.reward,
                    task=task,
                )
                metrics.update(memory_metrics(device))
                write_jsonl(out / "samples.jsonl", samples)
                write_json(out / "per_problem.json", per_problem)
                finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}  # NaN: a per-solved
                # key with no problem solved; null in the JSON files, no MLflow point (as in metrics.jsonl)
                result = {"model_dir": str(cfg.model_dir), "split": split,
                          "protocol": OmegaConf.to_container(protocol), **finite}
                write_json(out / "eval.json", result)
                tracker.log_summary(metrics)
                tracker.log_artifact(out / "eval.json")
                tracker.log_artifact(out / "per_problem.json")
            log.info("%s %s %s: %s", cfg.name, split, protocol.name,
                     {k: round(v, 4) for k, v in metrics.items() if "/pass@" in k and "_ci" not in k})
            results[f"{split}-{protocol.name}"] = finite
    write_json(Path(cfg.out_dir) / "summary.json", results)  # every pair of this model: the DAG's output
    return results


main = entry("evaluate", run)


if __name__ == "__main__":
    main()
