"""Value-free on-policy baselines: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024).

At sampling temperature T both train the tempered policy π_θ,T: π_θ, π_old and π_ref are all log-probs
of softmax(logits/T) (:attr:`~spolab.algos.base.Algorithm.tempered`; docs/method.md, "Sampling temperature").
"""

from __future__ import annotations

import torch

from spolab.algos.base import (
    EPOCHS,
    REDUCTION,
    Algorithm,
    mean_metrics,
    minibatches,
    own_rows,
    register,
)
from spolab.algos.losses import (
    ADVANTAGE_ESTIMATORS,
    kl_penalty,
    masked_sum,
    ppo_policy_loss,
    reduce_loss,
    reinforce_loss,
)
from spolab.checks import Rule, positive
from spolab.rollout.trajectories import Batch


@register("grpo")
class GRPO(Algorithm):
    """Group-normalised advantages, clipped ratio, k3 KL(π_θ‖π_ref) in the loss (coefficient β);
    the policy-gradient and KL terms are reduced alike (``algo.loss_reduction``)."""

    min_group_size = 2  # the advantage normalises within a prompt's group
    config_rules: list[Rule] = [*EPOCHS, ("algo.clip", positive()), REDUCTION]

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        adv = ADVANTAGE_ESTIMATORS[self.name](batch.reward, cfg.group_size)[:, None]  # (B, 1)
        old = batch.behaviour_logp  # π_old,T: sampled by the current policy at temperature T
        ref = self.ref_logp(batch)  # π_ref,T

        def loss_fn(mb: Batch, idx: torch.Tensor, weight) -> tuple[torch.Tensor, dict]:
            logp = self.logp(mb)  # π_θ,T
            pl, pm = ppo_policy_loss(logp, old[idx], adv[idx], mb.response_mask, cfg.clip, cfg.loss_reduction)
            kl = reduce_loss(kl_penalty(logp, ref[idx], "k3"), mb.response_mask, cfg.loss_reduction)
            return (pl + cfg.beta * kl) * weight(cfg.loss_reduction), {**pm, "policy/kl_k3": kl.detach()}

        steps = []
        for _ in range(cfg.epochs):
            for idx in minibatches(len(batch), cfg.minibatches, self.gen):
                # this rank's rows of the minibatch (all of them in one process), in micro-batches
                m = self.backward(batch, own_rows(idx), batch.response_mask[idx], loss_fn)
                steps.append({**m, "opt/grad_norm": self.step(self.optim, self.params)})
        return mean_metrics(steps)


@register("rloo")
class RLOO(Algorithm):
    """REINFORCE with a leave-one-out baseline on r − β Σ_t (log π − log π_ref) (k1, per sequence)."""

    min_group_size = 2  # the baseline is the mean of the prompt's other samples
    config_rules: list[Rule] = [*EPOCHS, REDUCTION]

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        kl_seq = masked_sum(batch.behaviour_logp - self.ref_logp(batch), batch.response_mask)  # (B,), both at T
        adv = ADVANTAGE_ESTIMATORS[self.name](batch.reward - cfg.beta * kl_seq, cfg.group_size)  # (B,)

        def loss_fn(mb: Batch, idx: torch.Tensor, weight) -> tuple[torch.Tensor, dict]:
            loss, lm = reinforce_loss(self.logp(mb), adv[idx], mb.response_mask, cfg.loss_reduction)
            return loss * weight(cfg.loss_reduction), lm

        steps = []
        for _ in range(cfg.epochs):
            for idx in minibatches(len(batch), cfg.minibatches, self.gen):
                # this rank's rows of the minibatch (all of them in one process), in micro-batches
                m = self.backward(batch, own_rows(idx), batch.response_mask[idx], loss_fn)
                steps.append({**m, "opt/grad_norm": self.step(self.optim, self.params)})
        return mean_metrics(steps, {"rloo/kl_seq": kl_seq.mean()})
