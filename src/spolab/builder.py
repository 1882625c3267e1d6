"""One RL run assembled from its config: the algorithm with its policy, frozen reference and Q̂0,
the behaviour policy, the data mix (exact per-batch counts, stored pools, replay buffer, mixer),
the task, the fresh prompt stream and the sampling generator. ``python -m spolab.rl`` trains it,
``spolab.bench`` times its steps and ``spolab.diagnostics`` takes its gradients, so the three run
the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from spolab import dist
from spolab.algos import get_algorithm
from spolab.algos.base import Algorithm
from spolab.algos.q0 import load_q0
from spolab.checkpoint import load_state
from spolab.errors import ConfigError
from spolab.models.build import load_model, load_tokenizer
from spolab.models.lora import Reference, add_adapters, behaviour_policy, load_adapters, lora_settings
from spolab.rollout.mix import PromptStream, check_data_mix, load_pools
from spolab.rollout.offpolicy import SourceMixer, allocate
from spolab.rollout.trajectories import ReplayBuffer
from spolab.tasks.base import Task, get_task
from spolab.tasks.io import load_split
from spolab.utils import generator


@dataclass
class RLRun:
    """Everything an RL update step (spolab.train.train_step) reads, and where the run stands."""

    algo: Algorithm
    policy: torch.nn.Module  # trained
    ref: torch.nn.Module  # frozen π_ref (the SFT policy; with LoRA the policy's network, adapters disabled)
    behaviour: torch.nn.Module  # samples the fresh data: the policy itself, or a copy synced every sync_every updates
    tok: object
    q0: dict[str, float] | None  # per-prompt Q̂0 (algorithms that need it), else None
    counts: dict[str, int]  # exact trajectories per batch of each source ("fresh" and the stored ones)
    sync_every: int
    replay: ReplayBuffer
    mixer: SourceMixer
    task: Task
    problems: list  # the rl split, the pool of fresh prompts
    gen: torch.Generator  # the sampler's generator
    prompts: PromptStream
    step: int = 0  # updates done (a resumed run: those of its checkpoint)
    fresh_total: int = 0  # fresh samples drawn so far
    wall: float = 0.0  # seconds spent in update steps so far


def build_rl_run(cfg, device, *, ckpt: str | Path | None = None, q0: dict[str, float] | None = None) -> RLRun:
    """Assemble the RL run of an ``rl`` config on ``device``.

    The policy starts from ``ckpt`` (a checkpoint of this run, whose saved state is restored too:
    optimisers, behaviour policy, sampling generator, replay buffer and mixer) or from ``cfg.sft_dir``.
    With ``model.lora`` on (``lora=on``) the policy is ``cfg.sft_dir``'s weights, frozen, with a LoRA adapter
    (fresh, or the checkpoint's) and π_ref is the same network with its adapters disabled
    (:mod:`spolab.models.lora`).
    ``q0`` replaces the Q̂0 read from ``cfg.q0_path`` (the benchmark's synthetic one). Models are
    loaded and seeded objects made in a fixed order (the algorithm's own initialisation, PPO's
    critic, draws from the global RNG after the caller's ``seed_everything``), so a run is
    reproducible from its config. Across processes (spolab.dist) every rank builds the same run, except
    its sampling generator, seeded by (seed, rank)."""
    algo_cls = get_algorithm(cfg.algo.name)
    sync_every, sources = check_data_mix(algo_cls, cfg.data_mix)  # validate() checked it; here for its values
    counts = allocate(cfg.batch_size, cfg.data_mix.fresh_fraction, sources)  # exact per-batch counts
    # ---- models: policy (trained), reference (frozen SFT), behaviour (synced copy or the policy)
    tok = load_tokenizer(cfg.sft_dir)
    lora = lora_settings(cfg.get("model"))
    if lora is None:
        policy = load_model(ckpt if ckpt is not None else cfg.sft_dir, device=device)
        ref = load_model(cfg.sft_dir, device=device).eval().requires_grad_(False)
    else:  # one network: the frozen SFT weights and the policy's adapter (a checkpoint's); π_ref, adapters disabled
        base = load_model(cfg.sft_dir, device=device)
        policy = add_adapters(base, lora) if ckpt is None else load_adapters(base, ckpt, trainable=True)
        ref = Reference(policy)
    if not algo_cls.needs_q0:
        q0 = None
    elif q0 is None:
        q0 = load_q0(cfg.q0_path, cfg.algo.beta, cfg.algo.loss, cfg.algo.q0_estimator, cfg.task.reward)
    algo = algo_cls(cfg.algo, policy, ref, tok, q0=q0, seed=cfg.seed, init_path=str(cfg.sft_dir),
                    total_updates=cfg.updates, temperature=cfg.temperature,  # PPO/GRPO/RLOO train at the sampling T
                    micro_batch_size=cfg.scale.get("micro_batch_size"),  # sequences per teacher-forced pass
                    ).to(device)  # PPO's critic, loaded in __init__, too
    behaviour = behaviour_policy(policy, sync_every)  # a LoRA policy's: a frozen adapter copy
    # ---- data: replay buffer, stored pools and their mixer, the task and its fresh prompts
    replay = ReplayBuffer(cfg.replay_capacity, seed=cfg.seed)
    mixer = SourceMixer(load_pools(cfg, sources), replay, seed=cfg.seed)
    task = get_task(cfg.task)  # renders the prompts and runs the programs (spolab.tasks.base)
    problems = load_split(cfg.data_dir, "rl")
    gen = generator(device, dist.rank_seed(cfg.seed))  # across processes each rank samples its own stream
    step, fresh_total, wall = 0, 0, 0.0
    if ckpt is not None:
        state = load_state(ckpt, map_location="cpu")  # every rank reads it; each moves it to its own device
        algo.load_state_dict(state["algo"])
        if behaviour is not policy:  # the stale behaviour policy is what the next fresh samples come from
            behaviour.load_state_dict(state["behaviour"])
        step, fresh_total, wall = state["step"], state["fresh_total"], state["wall"]
        gens = state.get("gens", [state["gen"]])  # every rank's sampler state (one process: "gen" alone)
        if len(gens) != dist.world_size():
            raise ConfigError(f"{ckpt} was written by a run across {len(gens)} process(es), this one has "
                              f"scale.world_size={dist.world_size()}: resume it with scale.world_size={len(gens)} "
                              f"(each process's sampler resumes its own random stream), or remove {Path(ckpt).parent} "
                              "to start over")
        gen.set_state(gens[dist.rank()])
        replay.items = state["replay"]
        replay.rng.setstate(state["replay_rng"])
        mixer.rng.setstate(state["mixer_rng"])
    prompts = PromptStream(problems, cfg.seed, start=fresh_total // cfg.group_size)
    return RLRun(algo=algo, policy=policy, ref=ref, behaviour=behaviour, tok=tok, q0=q0, counts=counts,
                 sync_every=sync_every, replay=replay, mixer=mixer, task=task, problems=problems, gen=gen,
                 prompts=prompts, step=step, fresh_total=fresh_total, wall=wall)
