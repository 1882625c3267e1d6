"""The algorithm registry and what every update step shares (log-probs, optimiser steps)."""

from __future__ import annotations

import torch

from spolab.rollout.sampler import score
from spolab.rollout.trajectories import Batch

ALGORITHMS: dict[str, type[Algorithm]] = {}


class ConfigError(ValueError):
    """A configuration that cannot work, with the option to change in the message."""


def register(name: str):
    def deco(cls):
        cls.name = name
        ALGORITHMS[name] = cls
        return cls

    return deco


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algo {name!r}; valid: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def policy_logp(model, batch: Batch) -> torch.Tensor:
    """(B, T) per-token log π of the batch's responses, differentiable through ``model``."""
    return score(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask.long())


def minibatches(n: int, n_minibatches: int, generator: torch.Generator) -> list[torch.Tensor]:
    if n_minibatches < 1 or n % n_minibatches:
        raise ConfigError(f"batch of {n} cannot be split into {n_minibatches} equal minibatches")
    return list(torch.randperm(n, generator=generator).chunk(n_minibatches))  # CPU indices index any device


class Algorithm:
    """One update step: ``update(batch) -> metrics``. Subclasses read top to bottom."""

    name: str = ""
    on_policy: bool = True  # True: refuses stored or stale data (PPO, GRPO, RLOO)

    def __init__(self, cfg, policy, ref, tokenizer, *, q0: dict[str, float] | None = None, seed: int = 0,
                 init_path: str | None = None):
        self.cfg, self.policy, self.ref, self.tok = cfg, policy, ref, tokenizer
        self.init_path = init_path  # the SFT checkpoint (PPO's critic starts from it)
        self.q0 = q0
        self.gen = torch.Generator().manual_seed(seed)
        self.optim = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def step(self, optim: torch.optim.Optimizer, params) -> float:
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)
        return float(gnorm)

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    # checkpointing: everything besides the policy weights
    def state_dict(self) -> dict:
        return {"optim": self.optim.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.load_state_dict(state["optim"])
        self.gen.set_state(state["gen"])
