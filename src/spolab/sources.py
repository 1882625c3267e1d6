"""``python -m spolab.sources``: build the stored off-policy pools (docs/design.md §5) from π_ref and the data.

Writes ``{out_dir}/<source>.jsonl`` for expert, other_policy, decoding and random (every record
with its frozen π_ref log-probs cached) and ``{out_dir}/summary.json`` (size, mean reward,
success rate and distinct programs per prompt of each pool). earlier_run is not built here:
it is the ``trajectories.jsonl`` a finished RL run dumps (spolab.rl).

With ``scale.world_size`` W > 1, launched by torchrun (:mod:`spolab.dist`), each process builds every pool
for a contiguous share of the prompts, with its own random stream (seeded by (seed, rank)), and scores its
share with π_ref; rank 0 gathers the pools in prompt order and alone writes the files and the MLflow run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from spolab import dist
from spolab.cli import entry
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.offpolicy import (
    POOL_SOURCES,
    decoding_trajectories,
    expert_trajectories,
    foreign_trajectories,
    random_trajectories,
    reference_trajectories,
)
from spolab.rollout.trajectories import save_trajectories
from spolab.tasks.base import get_task
from spolab.tasks.io import load_split
from spolab.tracking import NullTracker, Tracker
from spolab.utils import autocast, generator, resolve_device, seed_everything, set_threads, write_json
from spolab.validate import validate

log = logging.getLogger(__name__)


def pool_stats(trajs) -> dict[str, float]:
    by_prompt = defaultdict(set)
    for t in trajs:
        by_prompt[t.problem_id].add(tuple(t.response_ids))
    return {"n": len(trajs), "mean_reward": float(np.mean([t.reward for t in trajs])),
            "success": float(np.mean([t.success for t in trajs])),
            "distinct_per_prompt": float(np.mean([len(v) for v in by_prompt.values()])),
            "ref_logp_per_seq": float(np.mean([sum(t.ref_logp) for t in trajs]))}


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "sources")
    with dist.launch(cfg, "sources", resolve_device(cfg.device), trains=False) as device:  # W > 1: this rank's
        return _build(cfg, device)


def _build(cfg: DictConfig, device) -> dict:
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    tok = load_tokenizer(cfg.sft_dir)
    ref = load_model(cfg.sft_dir, device=device).eval().requires_grad_(False)
    problems = dist.shard(load_split(cfg.data_dir, "rl")[: cfg.problems], even=False)  # this rank's prompts
    seed = dist.rank_seed(cfg.seed)  # cfg.seed in one process
    task = get_task(cfg.task)
    dsl = task.name == "listdsl"  # the miniature enumerates equivalent programs and draws from its grammar
    builders = {
        "expert": lambda: expert_trajectories(problems, tok, per_problem=cfg.expert.per_problem,
                                                max_len=cfg.task.solver_max_len, reward_kind=cfg.task.reward)
        if dsl else reference_trajectories(problems, tok, task, per_problem=cfg.expert.per_problem,
                                           reward_kind=cfg.task.reward),
        "other_policy": lambda: collect(ref, tok, problems, group_size=cfg.other_policy.per_problem,
                                        max_new_tokens=cfg.task.max_new_tokens,
                                        temperature=cfg.other_policy.temperature,
                                        generator=generator(device, seed), source="other_policy",
                                        version=0, reward_kind=cfg.task.reward, batch_size=cfg.forward_batch_size,
                                        task=task)[0],
        "decoding": lambda: decoding_trajectories(ref, tok, problems, restarts=cfg.decoding.restarts,
                                                    max_new_tokens=cfg.task.max_new_tokens,
                                                    reward_kind=cfg.task.reward, batch_size=cfg.forward_batch_size),
        "random": lambda: random_trajectories(problems, tok, per_problem=cfg.random.per_problem,
                                                max_prims=cfg.task.max_prims, seed=seed,
                                                reward_kind=cfg.task.reward)
        if dsl else foreign_trajectories(problems, tok, task, per_problem=cfg.random.per_problem, seed=seed,
                                         reward_kind=cfg.task.reward),
    }
    summary = {}
    tracker = (Tracker.from_config(out, cfg, run_name="sources", tags={"stage": "sources", "algo": "ref",
                                                                       "scale": cfg.scale.name})
               if dist.is_main() else NullTracker())
    with tracker, autocast(device, cfg.precision):
        for name in tqdm(POOL_SOURCES, desc="sources", disable=not dist.is_main()):
            trajs = builders[name]()
            attach_ref_logp(ref, trajs, tok.pad_token_id,  # at most scale.micro_batch_size sequences per pass
                            batch_size=min(cfg.forward_batch_size, cfg.scale.get("micro_batch_size") or cfg.forward_batch_size))
            if dist.world_size() > 1:  # every rank's share, in prompt order
                trajs = [t for part in dist.gather_object(trajs) for t in part]
            if dist.is_main():
                save_trajectories(out / f"{name}.jsonl", trajs)
                summary[name] = pool_stats(trajs)
                log.info("%s: %s", name, {k: round(v, 3) for k, v in summary[name].items()})
        if dist.is_main():
            write_json(out / "summary.json", summary)
        tracker.log_summary({f"sources/{s}/{k}": v for s, d in summary.items() for k, v in d.items()})
    return summary


main = entry("sources", run)


if __name__ == "__main__":
    main()
