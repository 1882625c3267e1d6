"""Value-free on-policy baselines: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024)."""

from __future__ import annotations

from spolab.algos.base import Algorithm, minibatches, policy_logp, register
from spolab.algos.losses import (
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_policy_loss,
    reinforce_loss,
    rloo_advantages,
)
from spolab.rollout.trajectories import Batch


@register("grpo")
class GRPO(Algorithm):
    """Group-normalised advantages, clipped ratio, k3 KL(π_θ‖π_ref) in the loss (coefficient β)."""

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        adv = grpo_advantages(batch.reward, cfg.group_size)[:, None]  # (B, 1)
        old = batch.behaviour_logp  # sampled by the current policy at temperature 1
        for _ in range(cfg.epochs):
            for idx in minibatches(len(batch), cfg.minibatches, self.gen):
                mb = batch.select(idx)
                logp = policy_logp(self.policy, mb)
                pl, metrics = ppo_policy_loss(logp, old[idx], adv[idx], mb.response_mask, cfg.clip)
                kl = masked_mean(kl_penalty(logp, mb.ref_logp, "k3"), mb.response_mask)
                (pl + cfg.beta * kl).backward()
                metrics["opt/grad_norm"] = self.step(self.optim, self.policy.parameters())
                metrics["policy/kl_k3"] = kl.item()
        return metrics


@register("rloo")
class RLOO(Algorithm):
    """REINFORCE with a leave-one-out baseline on r − β Σ_t (log π − log π_ref) (k1, per sequence)."""

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        kl_seq = masked_sum(batch.behaviour_logp - batch.ref_logp, batch.response_mask)  # (B,)
        adv = rloo_advantages(batch.reward - cfg.beta * kl_seq, cfg.group_size)
        for _ in range(cfg.epochs):
            for idx in minibatches(len(batch), cfg.minibatches, self.gen):
                mb = batch.select(idx)
                loss, metrics = reinforce_loss(policy_logp(self.policy, mb), adv[idx], mb.response_mask)
                loss.backward()
                metrics["opt/grad_norm"] = self.step(self.optim, self.policy.parameters())
        metrics["rloo/kl_seq"] = kl_seq.mean().item()
        return metrics
