"""``python -m spolab.rl algo=spo|ppo|grpo|rloo data_mix=online|half_online``: RL from the SFT policy.

One trainer loop for every algorithm: sample (fresh prompts of the ``rl`` split from the
behaviour policy, with their rewards), mix (stored sources in exact per-batch counts), score
(cached π_ref log-probs), update (the algorithm's step from the registry): one
:func:`spolab.train.train_step`; then log, evaluate on ``val``, checkpoint. Budgets are matched:
every algorithm sees ``batch_size`` trajectories per update and ``updates`` updates; fresh
samples consumed and wall clock are logged so curves can use either axis.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from spolab.algos import ConfigError, get_algorithm
from spolab.algos.losses import q0_from_success, q0_monte_carlo
from spolab.checkpoint import load_state, remove_checkpoints, resume_point, save_checkpoint, save_model
from spolab.cli import entry
from spolab.config import run_identity
from spolab.data import load_split
from spolab.divergence import stop_on_divergence
from spolab.eval.generate import evaluate_policy
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.offpolicy import STORED_SOURCES, SourceMixer, allocate
from spolab.rollout.trajectories import ReplayBuffer, load_trajectories, save_trajectories
from spolab.tasks.base import get_task
from spolab.tracking import Tracker
from spolab.train import train_step
from spolab.utils import autocast, generator, memory_metrics, resolve_device, seed_everything, set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)


def check_data_mix(algo_cls, mix) -> tuple[int, dict[str, float]]:
    """Validate a data mix against an algorithm; returns (sync_every, stored-source shares)."""
    sources = dict(mix.sources or {})
    unknown = set(sources) - set(STORED_SOURCES)
    if unknown:
        raise ConfigError(f"data_mix.sources has unknown source(s) {sorted(unknown)}; valid: {list(STORED_SOURCES)}")
    shares = [mix.fresh_fraction, *sources.values()]
    if abs(sum(shares) - 1.0) > 1e-6 or min(shares) < 0:
        raise ConfigError(f"data_mix={mix.name}: fresh_fraction + source shares must be non-negative and sum to 1 "
                          f"(got fresh_fraction={mix.fresh_fraction}, sources={sources})")
    if "replay" in sources and mix.fresh_fraction == 0:
        raise ConfigError(f"data_mix={mix.name}: replay stores the run's own fresh samples, so it needs "
                          "fresh_fraction > 0")
    if mix.sync_every < 1:
        raise ConfigError(f"data_mix.sync_every must be >= 1, got {mix.sync_every}")
    if algo_cls.on_policy and (mix.fresh_fraction < 1.0 or mix.sync_every != 1 or any(sources.values())):
        raise ConfigError(
            f"algo={algo_cls.name} is on-policy but data_mix={mix.name} feeds it off-policy data "
            f"(data_mix.fresh_fraction={mix.fresh_fraction}, data_mix.sync_every={mix.sync_every}, "
            f"data_mix.sources={sources}); use data_mix=online or an off-policy algorithm (algo=spo)")
    return mix.sync_every, sources


def load_pools(cfg, sources: dict[str, float]) -> dict[str, list]:
    """Stored pools of the mix's sources (replay excepted: the run fills it), relabelled with
    their source name. earlier_run reads a finished run's dump (``cfg.earlier_run_path``)."""
    pools = {}
    for src, share in sources.items():
        if src == "replay" or share == 0:
            continue
        path = Path(cfg.earlier_run_path) if src == "earlier_run" else Path(cfg.sources_dir) / f"{src}.jsonl"
        if not path.exists():
            hint = ("run the study's PPO run first (Snakemake does)" if src == "earlier_run"
                    else "run `python -m spolab.sources` (Snakemake rule sources) first")
            raise FileNotFoundError(f"data_mix source {src!r} reads {path}, which does not exist: {hint}")
        pools[src] = load_trajectories(path)
        for t in pools[src]:
            t.source = src
    return pools


def load_q0(path: str | Path, beta: float, kind: str, estimator: str, reward: str = "binary") -> dict[str, float]:
    """Per-prompt Q̂0 for this run's β and loss kind: from the reference success counts for a binary
    reward, from the reference rewards themselves (β log mean exp(r/β), q0_monte_carlo) otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m spolab.q0` (Snakemake rule q0) first")
    d = json.loads(path.read_text())
    if reward != "binary":
        if "rewards" not in d:
            raise ConfigError(f"{path} holds success counts only, which fit a binary reward, not task.reward={reward!r}: "
                              "rerun `python -m spolab.q0` (it records the rewards)")
        if kind != "squared" or estimator != "plain":
            raise ConfigError(f"task.reward={reward!r}: Q̂0 of a non-binary reward is the plain Monte-Carlo estimate "
                              f"of the squared loss (algo.loss=squared, algo.q0_estimator=plain), not {kind}/{estimator}")
        ids = sorted(d["rewards"])
        r = torch.tensor([d["rewards"][i] for i in ids], dtype=torch.float64)  # (P, n_ref)
        return dict(zip(ids, q0_monte_carlo(r, beta).float().tolist()))
    ids = sorted(d["successes"])
    s = torch.tensor([d["successes"][i] for i in ids], dtype=torch.float64)
    q0 = q0_from_success(s, d["n_ref"], beta, kind, estimator)
    return dict(zip(ids, q0.tolist()))


class PromptStream:
    """Fresh prompts: a seeded permutation of the pool, reshuffled when exhausted."""

    def __init__(self, problems, seed: int, start: int = 0):
        self.problems, self.seed, self.pos = problems, seed, start

    def take(self, n: int):
        out = []
        for _ in range(n):
            epoch, i = divmod(self.pos, len(self.problems))
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.problems))
            out.append(self.problems[perm[i]])
            self.pos += 1
        return out


def source_metrics(parts: dict[str, list], batch_size: int) -> dict[str, float]:
    """Per-source accounting of one batch: the share each source actually filled and its mean reward."""
    out = {}
    for src, trajs in parts.items():
        out[f"data/frac_{src}"] = len(trajs) / batch_size
        out[f"data/reward_{src}"] = float(np.mean([t.reward for t in trajs])) if trajs else float("nan")
    return out


def run(cfg: DictConfig) -> dict:
    threads = set_threads()
    validate(cfg, "rl")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    final_dir = out / "model"
    algo_cls = get_algorithm(cfg.algo.name)
    sync_every, sources = check_data_mix(algo_cls, cfg.data_mix)  # validated above; here for its values
    counts = allocate(cfg.batch_size, cfg.data_mix.fresh_fraction, sources)  # exact per-batch counts (validated)
    n_fresh = counts["fresh"]

    # ---- models: policy (trained), reference (frozen SFT), behaviour (synced copy or the policy)
    ckpt, start = resume_point(out, cfg)  # a checkpoint of this very config, or a clean start
    if ckpt is None:  # outputs of a previous run in this folder belong to another config, or are stale
        shutil.rmtree(final_dir, ignore_errors=True)
        (out / "trajectories.jsonl").unlink(missing_ok=True)
    tok = load_tokenizer(cfg.sft_dir)
    policy = load_model(ckpt if ckpt is not None else cfg.sft_dir, device=device)
    ref = load_model(cfg.sft_dir, device=device).eval().requires_grad_(False)
    q0 = (load_q0(cfg.q0_path, cfg.algo.beta, cfg.algo.loss, cfg.algo.q0_estimator, cfg.task.reward)
          if algo_cls.needs_q0 else None)
    algo = algo_cls(cfg.algo, policy, ref, tok, q0=q0, seed=cfg.seed, init_path=str(cfg.sft_dir),
                    total_updates=cfg.updates).to(device)  # PPO's critic, loaded in __init__, too
    behaviour = policy if sync_every == 1 else copy.deepcopy(policy).requires_grad_(False)
    replay = ReplayBuffer(cfg.replay_capacity, seed=cfg.seed)
    mixer = SourceMixer(load_pools(cfg, sources), replay, seed=cfg.seed)
    task = get_task(cfg.task)  # renders the prompts and runs the programs (spolab.tasks.base)
    problems = load_split(cfg.data_dir, "rl")
    val = load_split(cfg.data_dir, "val")[: cfg.val_problems]
    step, fresh_total, wall = 0, 0, 0.0
    gen = generator(device, cfg.seed)
    if ckpt is not None:
        state = load_state(ckpt)
        algo.load_state_dict(state["algo"])
        if behaviour is not policy:  # the stale behaviour policy is what the next fresh samples come from
            behaviour.load_state_dict(state["behaviour"])
        step, fresh_total, wall = state["step"], state["fresh_total"], state["wall"]
        gen.set_state(state["gen"])
        replay.items = state["replay"]
        replay.rng.setstate(state["replay_rng"])
        mixer.rng.setstate(state["mixer_rng"])
        log.info("resuming from update %d / %d", step, cfg.updates)
    prompts = PromptStream(problems, cfg.seed, start=fresh_total // cfg.group_size)

    tracker = Tracker.from_config(
        out, cfg, run_name=cfg.name, resume_step=start,
        tags={"stage": "rl", "algo": cfg.algo.name, "data_mix": cfg.data_mix.name, "seed": str(cfg.seed),
              "beta": str(cfg.algo.beta), "scale": cfg.scale.name, "study_run": str(cfg.study_run),
              "study_group": str(cfg.study_group)},
    )
    log.info("%s: %d updates x %d trajectories (%d fresh), on %s (%s), %d threads", cfg.name, cfg.updates,
             cfg.batch_size, n_fresh, device, cfg.precision, threads)

    def evaluate(step: int) -> dict:
        m, _, _ = evaluate_policy(policy, tok, val, cfg.val_protocol, max_new_tokens=cfg.task.max_new_tokens,
                                  seed=cfg.seed, prefix="val", ref_model=ref, progress=False, task=task,
                                  reward=cfg.task.reward)
        m = {k: v for k, v in m.items() if not k.endswith(("_lo", "_hi"))}
        tracker.log({**m, "data/fresh_samples": fresh_total, "perf/wall_s": wall}, step)
        return m

    bar = tqdm(total=cfg.updates, initial=step, desc=cfg.name, mininterval=2)
    metrics: dict = {}
    with tracker, autocast(device, cfg.precision):
        if step == 0:
            metrics.update(evaluate(0))  # the SFT policy, on the same axis
        while step < cfg.updates:
            t0 = time.perf_counter()
            # ---- sync the stale behaviour policy; sample, mix, score, update (spolab.train)
            if behaviour is not policy and step % sync_every == 0:
                behaviour.load_state_dict(policy.state_dict())
            with stop_on_divergence(step + 1, cfg):  # a NaN loss, gradient or log-prob: one line, exit 2
                metrics, fresh, parts, times = train_step(
                    algo, behaviour, prompts.take(n_fresh // cfg.group_size), mixer, replay, counts,
                    group_size=cfg.group_size, max_new_tokens=cfg.task.max_new_tokens, temperature=cfg.temperature,
                    generator=gen, version=step - step % sync_every, reward_kind=cfg.task.reward, task=task)
            step_s = time.perf_counter() - t0
            step += 1
            fresh_total += len(fresh)
            wall += step_s
            # ---- log: per-source accounting, rollout statistics, timings
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
                if behaviour is not policy:
                    state["behaviour"] = behaviour.state_dict()
                save_checkpoint(out, step, policy, tok, state, run_identity(cfg))
                tracker.flush()  # MLflow holds every point up to the checkpoint
        bar.close()
        save_trajectories(out / "trajectories.jsonl", replay.items)  # the earlier_run source of later runs
        save_model(final_dir, policy, tok)
        summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        summary.update({"updates": step, "data/fresh_samples": fresh_total, "perf/wall_s": wall})
        tracker.log_summary(summary)
    remove_checkpoints(out)
    return summary


main = entry("rl", run)


if __name__ == "__main__":
    main()
