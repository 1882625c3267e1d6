"""SPO update step (Cohen et al. 2025, arXiv:2503.05453, §3): the terminal loss on any batch.

The loss is off-policy, so the batch may mix fresh samples of a stale behaviour policy and
stored trajectories (``on_policy = False``), and may be reused for ``steps_per_batch``
gradient steps: the fair counterpart of PPO's epochs.

Whatever the sampling temperature T, SPO trains π_θ itself (T 1, ``tempered = False``): its soft value
Q̂0 + β Σ_t log π_θ/π_ref is that of the untempered policies, so π_θ and π_ref are read at T 1, and fresh
samples drawn at T are off-policy data like any other. Where it uses the behaviour policy μ (truncated
importance weights) μ is the distribution the sampler drew from, the tempered one (docs/method.md,
"Sampling temperature").
"""

from __future__ import annotations

import torch

from spolab.algos.base import Algorithm, ConfigError, mean_metrics, own_rows, register
from spolab.algos.losses import spo_terminal_loss, truncated_is_weights
from spolab.checks import Rule, beta, integer, one_of, positive, registered
from spolab.rollout.trajectories import Batch

IS_WEIGHTS = ("none", "truncated")  # algo.is_weights: none | truncated min(is_clip, π_θ/μ) where μ is known
Q0_ESTIMATORS = ("plain", "shrunk")  # algo.q0_estimator (spolab.algos.losses.q0_from_success)


@register("spo")
class SPO(Algorithm):
    on_policy = False
    tempered = False  # trains π_θ at T 1 from samples at any temperature
    needs_q0 = True
    config_rules: list[Rule] = [
        ("algo.beta", beta(divisor=True)),  # Q̂0 and the bce loss divide by β
        ("algo.loss", registered("spolab.algos.losses", "TERMINAL_LOSSES")),
        ("algo.steps_per_batch", integer(1)),
        ("algo.q0_estimator", one_of(*Q0_ESTIMATORS)),
        ("algo.is_weights", one_of(*IS_WEIGHTS)),
        ("algo.is_clip", positive()),
    ]

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.task.reward != "binary" and cfg.algo.q0_estimator != "plain":
            raise ConfigError(f"algo.q0_estimator={cfg.algo.q0_estimator!r}: must be 'plain' with task.reward="
                              f"{cfg.task.reward!r} (the shrunk estimator pools binary success counts)")
        if cfg.algo.loss == "bce" and cfg.task.reward != "binary":
            raise ConfigError(f"task.reward={cfg.task.reward!r}: must be 'binary' with algo.loss='bce' "
                              "(a success probability needs a 0/1 reward)")

    def __init__(self, cfg, policy, ref, tokenizer, **kw):
        super().__init__(cfg, policy, ref, tokenizer, **kw)
        if self.q0 is None:
            raise ConfigError("SPO needs Q̂0 per prompt: run `python -m spolab.q0` and set q0_path")

    @property
    def steps_per_update(self) -> int:
        return int(self.cfg.steps_per_batch)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        q0 = torch.tensor([self.q0[t.problem_id] for t in batch.trajs], dtype=torch.float32,
                          device=batch.reward.device)  # (B,)
        if cfg.is_weights not in IS_WEIGHTS:
            raise ConfigError(f"algo.is_weights={cfg.is_weights!r}; valid: {', '.join(IS_WEIGHTS)}")
        if cfg.is_weights == "truncated":
            # per-sequence behaviour log-prob log μ(a|x), μ the distribution the sampler drew from (at its
            # temperature); NaN where no behaviour policy is known (expert, random, decoding)
            beh = torch.tensor([sum(t.behaviour_logp) if t.behaviour_logp is not None else float("nan")
                                for t in batch.trajs], dtype=torch.float32, device=batch.reward.device)  # (B,)
        ref = self.ref_logp(batch)  # (B, T) log π_ref at T 1: the trajectories' cached values
        own = own_rows(torch.arange(len(batch)))  # this rank's rows (all of them in one process)

        def loss_fn(mb: Batch, idx: torch.Tensor, weight) -> tuple[torch.Tensor, dict]:
            logp = self.logp(mb)  # (b, T) log π_θ at T 1 (self.temperature)
            w = (truncated_is_weights(logp, beh[idx], mb.response_mask, cfg.is_clip)  # (b,)
                 if cfg.is_weights == "truncated" else None)
            loss, m = spo_terminal_loss(logp, ref[idx], mb.response_mask, mb.reward, q0[idx], cfg.beta, cfg.loss, w)
            if w is not None:
                m["spo/is_weight"] = w.mean()
            return loss * weight("seq-mean-token-sum"), m  # a mean over sequences

        steps = []
        for _ in range(cfg.steps_per_batch):
            m = self.backward(batch, own, batch.response_mask, loss_fn)  # in micro-batches of scale.micro_batch_size
            m["opt/grad_norm"] = self.step(self.optim, self.params)
            steps.append(m)
        return mean_metrics(steps, {"spo/q0": q0.mean()})
