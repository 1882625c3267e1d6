"""``python -m spolab.rl algo=spo|ppo|grpo|rloo data_mix=online|half_online``: RL from the SFT policy.

One trainer loop for every algorithm: sample (fresh prompts of the ``rl`` split from the
behaviour policy, with their rewards), mix (stored sources in exact per-batch counts), score
(cached π_ref log-probs), update (the algorithm's step from the registry): one
:func:`spolab.train.train_step`; then log, evaluate on ``val``, checkpoint. Budgets are matched:
every algorithm sees ``batch_size`` trajectories per update and ``updates`` updates; fresh
samples consumed and wall clock are logged so curves can use either axis.

With ``scale.world_size`` W > 1 the run is data-parallel across W processes launched by torchrun
(:mod:`spolab.dist`): each samples its share of every update's prompts, every update is the
one-process update at the same batch, and rank 0 alone writes (checkpoints, metrics.jsonl, MLflow, the
final model and trajectories); validation splits its problems across the ranks.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from spolab import dist
from spolab.builder import build_rl_run
from spolab.checkpoint import remove_checkpoints, resume_point, save_checkpoint, save_model
from spolab.cli import entry
from spolab.config import run_identity
from spolab.divergence import stop_on_divergence
from spolab.eval.generate import evaluate_policy
from spolab.models.lora import sync_behaviour
from spolab.rollout.mix import source_metrics
from spolab.rollout.trajectories import save_trajectories
from spolab.tasks.io import load_split
from spolab.tracking import NullTracker, Tracker
from spolab.train import train_step
from spolab.utils import autocast, memory_metrics, resolve_device, seed_everything, set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    threads = set_threads()
    validate(cfg, "rl")
    with dist.launch(cfg, "rl", resolve_device(cfg.device)) as device:  # W > 1: this rank's device, in its group
        return _train(cfg, device, threads)


def _train(cfg: DictConfig, device, threads: int) -> dict:
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    final_dir = out / "model"
    main = dist.is_main()  # rank 0 decides and writes; every rank reads
    ckpt, start = resume_point(out, cfg) if main else (None, None)  # a checkpoint of this config, or a clean start
    if main and ckpt is None:  # outputs of a previous run in this folder belong to another config, or are stale
        shutil.rmtree(final_dir, ignore_errors=True)
        (out / "trajectories.jsonl").unlink(missing_ok=True)
    ckpt, start = dist.broadcast_object((ckpt, start))
    r = build_rl_run(cfg, device, ckpt=ckpt)  # models, Q̂0, data mix, prompts; a checkpoint's state restored
    algo, policy, ref, behaviour, tok, task = r.algo, r.policy, r.ref, r.behaviour, r.tok, r.task
    replay, mixer, prompts, gen, counts, sync_every = r.replay, r.mixer, r.prompts, r.gen, r.counts, r.sync_every
    step, fresh_total, wall = r.step, r.fresh_total, r.wall
    n_fresh = counts["fresh"]
    if ckpt is not None:
        log.info("resuming from update %d / %d", step, cfg.updates)
    val = load_split(cfg.data_dir, "val")[: cfg.val_problems]

    tags = {"stage": "rl", "algo": cfg.algo.name, "data_mix": cfg.data_mix.name, "seed": str(cfg.seed),
            "beta": str(cfg.algo.beta), "scale": cfg.scale.name, "study_run": str(cfg.study_run),
            "study_group": str(cfg.study_group)}
    tracker = (Tracker.from_config(out, cfg, run_name=cfg.name, resume_step=start, tags=tags) if main
               else NullTracker())  # one MLflow run and one metrics.jsonl: rank 0's
    log.info("%s: %d updates x %d trajectories (%d fresh), on %s (%s), %d threads%s", cfg.name, cfg.updates,
             cfg.batch_size, n_fresh, device, cfg.precision, threads,
             f", {dist.world_size()} processes" if dist.world_size() > 1 else "")

    def evaluate(step: int) -> dict:
        m, _, _ = evaluate_policy(policy, tok, val, cfg.val_protocol, max_new_tokens=cfg.task.max_new_tokens,
                                  seed=cfg.seed, prefix="val", ref_model=ref, progress=False, task=task,
                                  reward=cfg.task.reward,  # across processes: each rank its share of val
                                  score_rows=cfg.scale.get("micro_batch_size"))
        m = {k: v for k, v in m.items() if not k.endswith(("_lo", "_hi"))}
        tracker.log({**m, "data/fresh_samples": fresh_total, "perf/wall_s": wall}, step)
        return m

    bar = tqdm(total=cfg.updates, initial=step, desc=cfg.name, mininterval=2, disable=not main)
    metrics: dict = {}
    with tracker, autocast(device, cfg.precision):
        if step == 0:
            metrics.update(evaluate(0))  # the SFT policy, on the same axis
        while step < cfg.updates:
            t0 = time.perf_counter()
            # ---- sync the stale behaviour policy; sample, mix, score, update (spolab.train)
            if behaviour is not policy and step % sync_every == 0:
                sync_behaviour(behaviour, policy)
            with stop_on_divergence(step + 1, cfg):  # a NaN loss, gradient or log-prob: one line, exit 2
                metrics, fresh, parts, times = train_step(
                    algo, behaviour, prompts.take(n_fresh // cfg.group_size), mixer, replay, counts,
                    group_size=cfg.group_size, max_new_tokens=cfg.task.max_new_tokens, temperature=cfg.temperature,
                    generator=gen, version=step - step % sync_every, reward_kind=cfg.task.reward, task=task)
            step_s = time.perf_counter() - t0
            step += 1
            fresh_total += len(fresh)
            wall += step_s
            # ---- log: per-source accounting, rollout statistics, timings (every rank holds the whole batch)
            batch_size = sum(len(part) for part in parts.values())
            metrics.update(source_metrics(parts, batch_size))
            if fresh:
                metrics.update({
                    "rollout/reward": np.mean([t.reward for t in fresh]),
                    "rollout/success": np.mean([t.success for t in fresh]),
                    "rollout/kl_behaviour_ref": np.mean([sum(t.behaviour_logp) - sum(t.ref_logp) for t in fresh]),
                })
            metrics.update({
                "data/fresh_samples": fresh_total, "data/batch_size": batch_size,
                "perf/sample_s": times["sample"], "perf/score_mix_s": times["score_mix"],
                "perf/update_s": times["update"], "perf/step_s": step_s, "perf/wall_s": wall,
                **memory_metrics(device),
            })
            if step % cfg.log_every == 0 or step == cfg.updates:
                tracker.log(metrics, step)
            bar.update()
            bar.set_postfix(reward=f"{metrics.get('rollout/reward', float('nan')):.3f}", refresh=False)
            if step % cfg.eval_every == 0 or step == cfg.updates:
                metrics.update(evaluate(step))
            if step % cfg.ckpt_every == 0 and step < cfg.updates:
                state = {"algo": algo.state_dict(), "step": step, "fresh_total": fresh_total, "wall": wall,
                         "gen": gen.get_state(), "replay": replay.items, "replay_rng": replay.rng.getstate(),
                         "mixer_rng": mixer.rng.getstate()}
                if dist.world_size() > 1:  # every rank's sampler state, in rank order
                    state["gens"] = dist.gather_object(gen.get_state())
                if behaviour is not policy:
                    state["behaviour"] = behaviour.state_dict()
                if main:  # every rank holds the same weights and state but its sampler's
                    save_checkpoint(out, step, policy, tok, state, run_identity(cfg))
                    tracker.flush()  # MLflow holds every point up to the checkpoint
                dist.barrier()  # the checkpoint is complete before any rank goes on
        bar.close()
        if main:
            save_trajectories(out / "trajectories.jsonl", replay.items)  # the earlier_run source of later runs
            save_model(final_dir, policy, tok)
        summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        summary.update({"updates": step, "data/fresh_samples": fresh_total, "perf/wall_s": wall})
        tracker.log_summary(summary)
    if main:
        remove_checkpoints(out)
    return summary


main = entry("rl", run)


if __name__ == "__main__":
    main()
