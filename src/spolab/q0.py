"""``python -m spolab.q0``: reference samples and success counts per ``rl`` prompt, for Q̂0.

Samples ``n_ref`` responses per prompt from π_ref (temperature 1), scores them and writes
``q0.json`` (``n_ref`` and the success count of every prompt; SPO turns them into Q̂0 for its
β, loss kind and estimator: spolab.algos.losses.q0_from_success) and ``ref_samples.jsonl``
(the trajectories, kept as an off-policy source). Computed once per SFT model.

With ``scale.world_size`` W > 1, launched by torchrun (:mod:`spolab.dist`), each process samples a
contiguous share of the prompts with its own random stream (seeded by (seed, rank)); rank 0 gathers them
and alone writes the files and the MLflow run.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from spolab import dist
from spolab.cli import entry
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.collect import collect, merge_rollout_stats
from spolab.rollout.trajectories import save_trajectories
from spolab.tasks.base import get_task
from spolab.tasks.io import load_split
from spolab.tracking import NullTracker, Tracker
from spolab.utils import autocast, generator, resolve_device, seed_everything, set_threads, write_json
from spolab.validate import validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "q0")
    with dist.launch(cfg, "q0", resolve_device(cfg.device), trains=False) as device:  # W > 1: this rank's device
        return _sample(cfg, device)


def _sample(cfg: DictConfig, device) -> dict:
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    tok = load_tokenizer(cfg.sft_dir)
    ref = load_model(cfg.sft_dir, device=device).eval().requires_grad_(False)  # no grad: no autocast weight copy
    problems = load_split(cfg.data_dir, "rl")
    tracker = (Tracker.from_config(out, cfg, run_name=f"q0-n{cfg.n_ref}",
                                   tags={"stage": "q0", "algo": "ref", "scale": cfg.scale.name})
               if dist.is_main() else NullTracker())
    with tracker, autocast(device, cfg.precision):
        own = dist.shard(problems, even=False)  # this rank's prompts (all of them in one process)
        trajs, stats = collect(ref, tok, own, group_size=cfg.n_ref, max_new_tokens=cfg.task.max_new_tokens,
                               generator=generator(device, dist.rank_seed(cfg.seed)), source="ref_samples",
                               version=0, reward_kind=cfg.task.reward, batch_size=cfg.forward_batch_size,
                               task=get_task(cfg.task))
        if dist.world_size() > 1:  # every rank's samples, in prompt order
            parts = dist.gather_object((trajs, stats))
            trajs = [t for ts, _ in parts for t in ts]
            stats = merge_rollout_stats([(len(ts), s) for ts, s in parts if ts])
        for t in trajs:
            t.ref_logp = t.behaviour_logp  # sampled from π_ref at temperature 1: the same numbers
        succ = Counter()
        for t in trajs:
            succ[t.problem_id] += int(t.success)
        successes = {p.id: succ[p.id] for p in problems}
        rate = np.array(list(successes.values())) / cfg.n_ref
        summary = {"q0/mean_success": float(rate.mean()), "q0/frac_no_success": float((rate == 0).mean()),
                   "q0/n_prompts": len(problems), **stats}
        rewards: dict[str, list[float]] = {p.id: [] for p in problems}
        for t in trajs:
            rewards[t.problem_id].append(float(t.reward))
        # the success counts serve binary rewards (every estimator); the rewards themselves a partial-credit
        # reward (task.reward=fraction), whose Q̂0 is the Monte-Carlo β log mean exp(r/β)
        if dist.is_main():
            write_json(out / "q0.json", {"n_ref": cfg.n_ref, "successes": successes, "rewards": rewards})
            save_trajectories(out / "ref_samples.jsonl", trajs)
        tracker.log_summary(summary)
    log.info("Q̂0 from %d samples on %d prompts: mean success %.3f, %.0f%% of prompts without a success",
             cfg.n_ref, len(problems), summary["q0/mean_success"], 100 * summary["q0/frac_no_success"])
    return summary


main = entry("q0", run)


if __name__ == "__main__":
    main()
