"""One trainer step, shared by the RL loop (spolab.rl) and the benchmark (spolab.bench).

Not an entry point: :func:`train_step` does one update's work top to bottom, whatever the
algorithm (the :class:`~spolab.algos.base.Algorithm` interface hides which one it is).
"""

from __future__ import annotations

import time

from spolab import dist
from spolab.algos.base import Algorithm
from spolab.divergence import check_metrics
from spolab.rollout.collect import attach_ref_logp, collect, merge_rollout_stats
from spolab.rollout.offpolicy import SourceMixer
from spolab.rollout.trajectories import ReplayBuffer, Trajectory, collate
from spolab.tasks.problems import Problem
from spolab.utils import sync


def train_step(algo: Algorithm, behaviour, problems: list[Problem], mixer: SourceMixer, replay: ReplayBuffer,
               counts: dict[str, int], *, group_size: int, max_new_tokens: int, temperature: float, generator,
               version: int, reward_kind: str, task=None
               ) -> tuple[dict[str, float], list[Trajectory], dict[str, list[Trajectory]], dict[str, float]]:
    """Sample, mix, score, update: one update of ``algo`` on a batch of ``sum(counts.values())``.

    ``temperature`` is the sampling temperature; an algorithm that trains the tempered policy
    (PPO, GRPO, RLOO: ``Algorithm.tempered``) must have been built at the same one.
    ``counts`` are the exact per-batch counts of :func:`~spolab.rollout.offpolicy.allocate`;
    ``problems`` the fresh prompts (``counts["fresh"] / group_size`` of them), sampled
    ``group_size`` times each by ``behaviour`` (the policy itself, or its stale copy) with
    ``generator``; the stored part is drawn by ``mixer`` before this step's fresh samples join
    ``replay``. Random state is consumed in this order: sampler generator, mixer (and replay)
    draws, the algorithm's own generator.

    Across processes (spolab.dist) ``problems`` are the update's prompts on every rank; each rank samples
    its contiguous share with its own ``generator`` and scores them with π_ref, then every rank's samples
    are gathered in prompt order, so that every rank holds the same fresh samples, replay buffer, mixer
    draws and batch (the one-process layout of the batch), and the algorithm splits the passes over it.

    Returns ``(metrics, fresh, parts, timings)``: the algorithm's metrics plus rollout
    statistics; the fresh trajectories; every source's part of the batch (``fresh`` first, a
    part may fall short of its count while the replay buffer is empty); and seconds of
    ``sample`` / ``score_mix`` / ``update``, the device synced at each boundary.
    """
    if len(problems) * group_size != counts["fresh"]:
        raise ValueError(f"{len(problems)} prompts x group_size {group_size} != {counts['fresh']} fresh samples")
    if algo.tempered and temperature != algo.temperature:  # its π_old is the sampler's log-prob at `temperature`
        raise ValueError(f"algo={algo.name} trains the policy at temperature {algo.temperature} but would be fed "
                         f"samples drawn at temperature {temperature}")
    device = algo.device
    t0 = time.perf_counter()
    # ---- sample: fresh trajectories from the behaviour policy
    fresh, roll = [], {}
    if problems:
        own = dist.shard(problems)  # this rank's prompts (all of them in one process)
        fresh, roll = collect(behaviour, algo.tok, own, group_size=group_size, max_new_tokens=max_new_tokens,
                              temperature=temperature, generator=generator, version=version, reward_kind=reward_kind,
                              task=task)
        if dist.world_size() > 1:  # π_ref scores each rank's own samples; then every rank gets all of them
            attach_ref_logp(algo.ref, fresh, algo.tok.pad_token_id, **algo.score_batch)
            parts = dist.gather_object((fresh, roll))  # in rank order: the update's prompts in order
            fresh = [t for f, _ in parts for t in f]
            roll = merge_rollout_stats([(len(f), r) for f, r in parts])
    t1 = time.perf_counter()
    # ---- mix: stored sources in their exact per-batch counts; then this step's samples join the replay
    stored = mixer.draw(counts)
    replay.add(fresh)
    parts = {"fresh": fresh, **stored}
    # ---- score: frozen reference log-probs, cached on each trajectory (stored ones mostly have them)
    trajs = [t for part in parts.values() for t in part]
    attach_ref_logp(algo.ref, trajs, algo.tok.pad_token_id, **algo.score_batch)
    batch = collate(trajs, algo.tok.pad_token_id).to(device)
    sync(device)
    t2 = time.perf_counter()
    # ---- update
    algo.policy.train()
    lr = algo.cfg.lr * algo.lr_scale
    metrics = algo.update(batch)
    check_metrics(metrics)  # a NaN loss stops the run (spolab.divergence) instead of being logged as null
    metrics.update({"opt/steps": algo.opt_steps, "opt/lr": lr})  # steps so far; the rate of this update's first
    sync(device)
    t3 = time.perf_counter()
    return {**metrics, **roll}, fresh, parts, {"sample": t1 - t0, "score_mix": t2 - t1, "update": t3 - t2}
