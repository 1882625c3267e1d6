"""The algorithm registry, the interface every algorithm offers the trainer, and what every
update step shares (log-probs, minibatches, optimiser steps, one metrics conversion)."""

from __future__ import annotations

import torch

from spolab import dist
from spolab.algos.losses import reduction_size
from spolab.checks import Rule, integer, registered
from spolab.errors import ConfigError
from spolab.models.lora import trainable_parameters
from spolab.rollout.sampler import score
from spolab.rollout.trajectories import Batch
from spolab.schedule import lr_at
from spolab.utils import Registry, device_of

ALGORITHMS = Registry("algo")  # algo.name -> Algorithm subclass


def register(name: str):
    """Class decorator: registers an :class:`Algorithm` under ``name`` (a duplicate raises)."""

    def deco(cls):
        cls.name = name
        return ALGORITHMS.register(name)(cls)

    return deco


def get_algorithm(name: str) -> type[Algorithm]:
    return ALGORITHMS[name]  # unknown: ConfigError "unknown algo 'x'; valid: [...]"


def policy_logp(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) per-token log π_T of the batch's responses, differentiable through ``model``: the
    tempered policy π_T = softmax(logits / T) (T 1: π itself). The training log-probs of every
    algorithm (:meth:`Algorithm.logp`, :meth:`Algorithm.ref_logp`); the sampler draws from the same
    distribution at T (both go through ``spolab.rollout.sampler.process_logits``)."""
    return score(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask.long(),
                 temperature=temperature)


def minibatches(n: int, n_minibatches: int, generator: torch.Generator) -> list[torch.Tensor]:
    if n_minibatches < 1 or n % n_minibatches:
        raise ConfigError(f"batch of {n} cannot be split into {n_minibatches} equal minibatches")
    return list(torch.randperm(n, generator=generator).chunk(n_minibatches))  # CPU indices index any device


def own_rows(idx: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a (mini)batch given by the batch indices ``idx``: a contiguous share of them
    (spolab.dist.shard); all of them in one process. Every rank holds the whole batch; each runs the
    policy's forward and backward passes on its own rows only."""
    return dist.shard(idx)


def loss_share(own_mask: torch.Tensor, mask: torch.Tensor, mode: str) -> float:
    """The weight of a loss reduced by ``mode`` (:func:`~spolab.algos.losses.reduce_loss`) over rows
    ``own_mask`` (this rank's rows, or a micro-batch of them) of a minibatch whose rows, over every rank, are
    ``mask``: W · size(part) / size(minibatch) (spolab.dist.loss_share), so that the gradients summed over a
    rank's parts and averaged over the W ranks are those of the minibatch's loss. Its sequences are
    ``own_mask.shape[0]``, its tokens ``own_mask.sum()`` (:func:`reduction_size`); exactly 1 for the whole
    minibatch in one process."""
    return dist.loss_share(reduction_size(own_mask, mode), reduction_size(mask, mode))


def micro_chunks(rows: torch.Tensor, size: int | None) -> list[torch.Tensor]:
    """``rows`` (batch indices) in consecutive chunks of at most ``size`` (``scale.micro_batch_size``: the
    sequences of one teacher-forced pass per device); ``[rows]`` itself when ``size`` is None or not smaller."""
    if not size or size >= len(rows):
        return [rows]
    return list(rows.split(int(size)))


def combine_chunks(parts: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """The metrics of one minibatch step from its micro-batches' (sequences, metrics): each key's mean
    weighted by the chunk's sequences (a per-sequence mean exactly; a token mean approximately). One
    chunk: its metrics as they are."""
    if len(parts) == 1:
        return parts[0][1]
    n = sum(k for k, _ in parts)
    keys = list(dict.fromkeys(k for _, m in parts for k in m))
    return {k: sum(m[k].detach().double() * (c / n) for c, m in parts if k in m) for k in keys}


def mean_metrics(steps: list[dict[str, torch.Tensor]], once: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, float]:
    """An update's metrics as floats: each key's mean over ``steps`` (one dict of 0-d tensors per
    minibatch and epoch, or per gradient step) plus the per-update values ``once``. One stack and
    one device→host copy (``tolist``) per update, instead of a sync per value.

    Across processes the step means (of each rank's own rows) are averaged over ranks, in one
    all-reduce: the batch's means where ranks hold equal shares of what a metric averages (every
    per-sequence mean; token means only approximately). ``once`` values are computed from the whole
    batch, which every rank holds, and are not reduced."""
    once = once or {}
    keys = list(dict.fromkeys(k for m in steps for k in m))
    vals = [torch.stack([m[k].double() for m in steps if k in m]).mean() for k in keys]
    if vals and dist.world_size() > 1:
        vals = list(dist.all_reduce_mean(torch.stack(vals)).unbind())
    vals += [v.double() for v in once.values()]
    return dict(zip(keys + list(once), torch.stack(vals).tolist())) if vals else {}


LR_SCHEDULES = ("constant", "cosine")  # algo.lr_schedule

# rules shared by the algorithms that take several minibatch steps per rollout (PPO, GRPO, RLOO)
EPOCHS: list[Rule] = [("algo.epochs", integer(1)), ("algo.minibatches", integer(1))]
REDUCTION: Rule = ("algo.loss_reduction?", registered("spolab.algos.losses", "LOSS_REDUCTIONS"))


def lr_factor(step: int, warmup_steps: int, schedule: str, total_steps: int | None, min_lr_ratio: float) -> float:
    """The learning-rate multiplier before optimiser step ``step`` (0-based): :func:`spolab.schedule.lr_at`
    with the warm-up ramp multiplying a cosine that decays from step 0 over ``total_steps``
    (``algo.lr_schedule``: constant | cosine)."""
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"algo.lr_schedule={schedule!r}; valid: {list(LR_SCHEDULES)}")
    if schedule == "cosine" and not total_steps:
        raise ConfigError("algo.lr_schedule=cosine needs the run's total optimiser steps (rl.updates)")
    return lr_at(step, warmup=warmup_steps, shape=schedule, total=total_steps or 1, min_ratio=min_lr_ratio)


class Algorithm:
    """One update step, ``update(batch) -> metrics``, read top to bottom in each subclass; and the
    interface the trainer uses, so that no caller asks which algorithm it holds."""

    name: str = ""
    on_policy: bool = True  # True: refuses stored or stale data (PPO, GRPO, RLOO)
    # True: trains the tempered policy π_θ,T = softmax(logits/T) at the run's sampling temperature T, so its
    # π_θ, π_old (the sampler's log-prob) and π_ref are all log-probs at T (PPO, GRPO, RLOO); False: trains
    # π_θ itself, T 1, and samples at T are off-policy data (SPO). docs/method.md, "Sampling temperature"
    tempered: bool = True
    needs_q0: bool = False  # True: the trainer loads per-prompt Q̂0 (SPO); the rl entry needs q0_path
    min_group_size: int = 1  # 2 where advantages compare the samples of one prompt (GRPO, RLOO)
    has_critic: bool = False  # True: holds a separate value network with its own optimiser (PPO; spolab.memory counts it)
    # the value rules of its own algo.* keys, checked by spolab.validate for whatever algo.name names (the keys
    # every algorithm shares: spolab.validate.ALGO_COMMON)
    config_rules: list[Rule] = []

    @classmethod
    def check_config(cls, cfg) -> None:
        """Cross-field rules of the rl entry's config ``cfg`` that only this algorithm has (ConfigError); none here."""

    def __init__(self, cfg, policy, ref, tokenizer, *, q0: dict[str, float] | None = None, seed: int = 0,
                 init_path: str | None = None, total_updates: int | None = None, temperature: float = 1.0,
                 micro_batch_size: int | None = None):
        self.cfg, self.policy, self.ref, self.tok = cfg, policy, ref, tokenizer
        # scale.micro_batch_size: at most this many sequences per teacher-forced pass (training passes
        # accumulate gradients over micro-batches, :meth:`backward`; frozen scoring runs in chunks, :meth:`map_rows`)
        if micro_batch_size is not None and int(micro_batch_size) < 1:
            raise ConfigError(f"scale.micro_batch_size={micro_batch_size!r}: must be a positive integer or null")
        self.micro_batch_size = int(micro_batch_size) if micro_batch_size else None
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature!r}: must be > 0 (the sampling temperature T of RL)")
        self.sampling_temperature = float(temperature)  # the run's `temperature`: its fresh samples are drawn at T
        self.temperature = self.sampling_temperature if self.tempered else 1.0  # of every log-prob its loss reads
        self.init_path = init_path  # the SFT checkpoint (PPO's critic starts from it)
        self.q0 = q0
        self.gen = torch.Generator().manual_seed(seed)
        # what the policy optimiser steps: every weight, or a LoRA policy's adapter (spolab.models.lora)
        self.params = trainable_parameters(policy)
        self.optim = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        self.total_steps = total_updates * self.steps_per_update if total_updates else None
        self.opt_steps = 0  # policy optimiser steps taken (the schedule's clock; logged as opt/steps)
        self._recorded: list[torch.Tensor] | None = None  # first_gradient: steps record instead of stepping
        lr_factor(0, self.cfg.warmup_steps, self.cfg.lr_schedule, self.total_steps, self.cfg.min_lr_ratio)  # validates

    @property
    def steps_per_update(self) -> int:
        """Policy optimiser steps per update: epochs × minibatches (PPO, GRPO, RLOO); SPO overrides it."""
        return int(self.cfg.get("epochs", 1)) * int(self.cfg.get("minibatches", 1))

    @property
    def lr_scale(self) -> float:
        """The schedule's multiplier for the next policy step (:func:`lr_factor`)."""
        return lr_factor(self.opt_steps, self.cfg.warmup_steps, self.cfg.lr_schedule, self.total_steps,
                         self.cfg.min_lr_ratio)

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    # ---- the log-probs every loss reads, at the temperature of the policy it trains (self.temperature)
    def logp(self, batch: Batch) -> torch.Tensor:
        """(B, T) log π_θ,T of the batch's responses, differentiable (:func:`policy_logp` at ``self.temperature``)."""
        return policy_logp(self.policy, batch, self.temperature)

    def backward(self, batch: Batch, rows: torch.Tensor, mask: torch.Tensor, loss_fn) -> dict[str, torch.Tensor]:
        """Accumulate the gradient of one minibatch's loss from this rank's ``rows`` of ``batch`` (indices;
        ``mask``: the response mask of the whole minibatch, every rank's rows), in micro-batches of at most
        ``scale.micro_batch_size`` sequences: ``loss_fn(mb, idx, weight)`` returns the loss of the chunk
        ``mb = batch.select(idx)`` (``batch`` itself when ``idx`` is all of it, in order) and its metrics, each loss
        term multiplied by ``weight(mode)``, the chunk's share of the minibatch for a term reduced by ``mode``
        (:func:`loss_share`). Each chunk's backward
        frees its graph before the next is built, so one pass holds at most a micro-batch's activations;
        the summed gradient is the minibatch loss's (tests/test_algos.py, against the unsplit update).
        Returns the step's metrics (:func:`combine_chunks`)."""
        chunks = micro_chunks(rows, self.micro_batch_size)
        parts = []
        for idx in chunks:
            whole = len(idx) == len(batch) and bool((idx == torch.arange(len(batch))).all())
            mb = batch if whole else batch.select(idx)
            def weight(mode, m=mb.response_mask):
                return loss_share(m, mask, mode)
            loss, metrics = loss_fn(mb, idx, weight)
            loss.backward()
            parts.append((len(idx), metrics))
        return combine_chunks(parts)

    @property
    def score_batch(self) -> dict:
        """``batch_size`` keyword of the trainer's π_ref scoring (spolab.rollout.collect.attach_ref_logp): at most
        ``scale.micro_batch_size`` sequences per pass; none given (its default) without one."""
        return {"batch_size": self.micro_batch_size} if self.micro_batch_size else {}

    def map_rows(self, fn, batch: Batch) -> torch.Tensor:
        """``fn`` (a constant, row-wise no-grad pass: π_ref's or the critic's scores) over ``batch``, each rank
        scoring its share of the rows (spolab.dist.map_rows) in chunks of at most ``scale.micro_batch_size``."""
        if not self.micro_batch_size:
            return dist.map_rows(fn, batch)

        def chunked(b: Batch) -> torch.Tensor:
            parts = [fn(b.select(idx)) for idx in micro_chunks(torch.arange(len(b)), self.micro_batch_size)]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        with torch.no_grad():
            return dist.map_rows(chunked, batch)

    def ref_logp(self, batch: Batch) -> torch.Tensor:
        """(B, T) log π_ref,T of the batch's responses, constant. At T 1 the log-probs cached on the trajectories
        (``Trajectory.ref_logp``, always π_ref at T 1: the replay buffer and the ``trajectories.jsonl`` dump
        that SPO reads as ``earlier_run`` keep them); at T ≠ 1 recomputed from π_ref's logits / T, one
        teacher-forced pass per update, never cached on the records."""
        if self.temperature == 1.0:
            return batch.ref_logp
        with torch.no_grad():  # across processes each rank scores its share of the rows, then all are gathered
            return self.map_rows(lambda b: policy_logp(self.ref, b, self.temperature), batch)

    def step(self, optim: torch.optim.Optimizer, params) -> torch.Tensor:
        """Clip, step at the scheduled learning rate, zero the gradients; returns the gradient norm
        before clipping (0-d tensor). Every optimiser the algorithm holds (PPO's critic too) follows
        the policy's schedule; the clock advances with the policy's steps. Across processes the gradients
        are first averaged over ranks (spolab.dist.all_reduce_grads), so that every rank clips and steps
        the same gradient. Inside :meth:`first_gradient` it records the policy's gradient and steps nothing."""
        params = list(params)
        if self._recorded is not None:
            if optim is self.optim and not self._recorded:
                self._recorded.append(torch.cat([p.grad.flatten() if p.grad is not None else
                                                 torch.zeros(p.numel(), device=p.device)
                                                 for p in self.params]).clone())
            optim.zero_grad(set_to_none=True)
            return torch.zeros(())
        dist.all_reduce_grads(params)
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        scale = self.lr_scale
        for group in optim.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * scale
        optim.step()
        optim.zero_grad(set_to_none=True)
        if optim is self.optim:
            self.opt_steps += 1
        return gnorm.detach()

    def first_gradient(self, batch: Batch) -> torch.Tensor:
        """The flattened policy gradient that the first optimiser step of ``update(batch)`` would apply,
        before clipping. Nothing is stepped: weights, optimiser state and the schedule's clock are left as
        they were (spolab.diagnostics' cross-prompt gradient cosine)."""
        self._recorded = []
        try:
            self.update(batch)
            return self._recorded[0]
        finally:
            self._recorded = None

    # ---- the trainer's view: what is trained, by what, where
    def modules(self) -> list[torch.nn.Module]:
        """Every trained network (the policy; PPO adds its critic)."""
        return [self.policy]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim]

    @property
    def device(self) -> torch.device:
        return device_of(self.policy)

    def to(self, device) -> Algorithm:
        """Moves every network it holds (trained ones and the frozen π_ref); optimizer state follows
        the parameters, which are moved in place."""
        for m in (*self.modules(), self.ref):
            m.to(device)
        return self

    # ---- checkpointing: everything besides the policy weights
    def state_dict(self) -> dict:
        """Optimiser, own generator and schedule clock, and the global torch RNG (what dropout draws from:
        LoRA's ``model.lora.dropout``), so a resumed run draws what the uninterrupted one does."""
        return {"optim": self.optim.state_dict(), "gen": self.gen.get_state(), "opt_steps": self.opt_steps,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}

    def load_state_dict(self, state: dict) -> None:
        self.optim.load_state_dict(state["optim"])
        self.gen.set_state(state["gen"])
        self.opt_steps = state["opt_steps"]
        if state.get("torch_rng") is not None:  # absent from checkpoints written before it was saved
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available() \
                and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
