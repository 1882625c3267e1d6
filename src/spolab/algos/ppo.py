"""PPO, the paper's baseline, with its implementation details:

1. a *separate* critic: a second copy of the SFT network with a scalar head (ValueModel); with LoRA
   (``lora=on``) its own adapter and scalar head on the policy's frozen weights (AdapterValueModel);
2. per-token KL penalty to π_ref in the reward, coefficient β, k1 estimator (Ziegler et al. 2019;
   :func:`~spolab.algos.losses.kl_shaped_rewards`);
3. GAE with γ = 1, λ = 0.95 (Schulman et al. 2016);
4. advantage whitening over the batch (Andrychowicz et al. 2021, "what matters" §3);
5. clipped policy ratio ε = 0.2 and clipped value loss (Schulman et al. 2017; PPO2 baselines);
6. a few epochs of minibatches per rollout, on-policy only; metrics are means over all of them.
At sampling temperature T it trains the tempered policy π_θ,T: π_θ, π_old and π_ref are all log-probs
of softmax(logits/T) (:attr:`Algorithm.tempered`; docs/method.md, "Sampling temperature").
Tested in tests/test_algos.py and on the exact testbed (spolab.exact, tabular version).
"""

from __future__ import annotations

import torch
from transformers import AutoModel

from spolab.algos.base import (
    EPOCHS,
    REDUCTION,
    Algorithm,
    mean_metrics,
    minibatches,
    own_rows,
    register,
)
from spolab.algos.losses import gae, kl_shaped_rewards, ppo_policy_loss, ppo_value_loss, whiten
from spolab.checks import Rule, boolean, fraction, number, positive
from spolab.models.lora import CRITIC, adapter_active, adapter_modules, add_critic_adapter, is_lora
from spolab.rollout.trajectories import Batch


def _zero_head(hidden: int) -> torch.nn.Linear:
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


class ValueModel(torch.nn.Module):
    """V(s_t) for every response position: a transformer body plus a linear head."""

    def __init__(self, path: str):
        super().__init__()
        self.body = AutoModel.from_pretrained(path)  # the SFT network without its LM head
        self.head = _zero_head(self.body.config.hidden_size)

    def hidden(self, **inputs) -> torch.Tensor:
        """(B, P+T, H) last hidden states of the body."""
        return self.body(**inputs).last_hidden_state

    def forward(self, batch: Batch) -> torch.Tensor:
        P = batch.prompt_ids.shape[1]
        ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)  # (B, P+T)
        attn = torch.cat([batch.prompt_mask, batch.response_mask.long()], 1)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        h = self.hidden(input_ids=ids, attention_mask=attn, position_ids=pos)  # (B, P+T, H)
        return self.head(h[:, P - 1 : -1]).squeeze(-1) * batch.response_mask  # (B, T): value of s_t


class AdapterValueModel(ValueModel):
    """The critic of a LoRA policy: the body is the policy's own frozen network (no LM head) run through a
    second adapter, :data:`~spolab.models.lora.CRITIC`, configured as the policy's; a zero-initialised linear
    head, as ValueModel's. Its parameters (and state dict) are that adapter's layers and the head: the
    shared network belongs to the policy and is not a submodule."""

    def __init__(self, policy):
        torch.nn.Module.__init__(self)
        add_critic_adapter(policy)  # B zero: the body starts as the SFT body, as ValueModel's does
        object.__setattr__(self, "policy", policy)  # not registered: the policy's module
        self.adapter = torch.nn.ModuleDict({name.replace(".", "-"): m for name, m in adapter_modules(policy, CRITIC)})
        base = policy.get_base_model()
        self.head = _zero_head(base.config.hidden_size)

    def hidden(self, **inputs) -> torch.Tensor:
        base = self.policy.get_base_model()
        body = getattr(base, base.base_model_prefix)  # the decoder without its LM head (AutoModel's network)
        with adapter_active(self.policy, CRITIC):
            return body(**inputs).last_hidden_state


@register("ppo")
class PPO(Algorithm):
    has_critic = True  # ValueModel: a second copy of the SFT body and a scalar head, with its own AdamW (LoRA:
    # AdapterValueModel, an adapter and a head on the policy's frozen weights)
    config_rules: list[Rule] = [
        ("algo.critic_lr", positive()),
        *EPOCHS,
        ("algo.clip", positive()),
        ("algo.value_clip", positive()),
        ("algo.vf_coef", number(0)),
        ("algo.gamma", fraction()),
        ("algo.gae_lambda", fraction()),
        ("algo.whiten_advantages", boolean()),
        REDUCTION,
    ]

    def __init__(self, cfg, policy, ref, tokenizer, **kw):
        super().__init__(cfg, policy, ref, tokenizer, **kw)
        self.critic = AdapterValueModel(policy) if is_lora(policy) else ValueModel(self.init_path or policy.name_or_path)
        self.critic_optim = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, betas=(0.9, 0.95),
                                              weight_decay=0.0)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        mask = batch.response_mask
        # ---- rewards: KL penalty per token, task reward on the last token; GAE on the critic's values
        with torch.no_grad():
            old_logp = batch.behaviour_logp  # π_old,T: the sampler's log-prob, drawn at temperature T
            ref_logp = self.ref_logp(batch)  # π_ref,T
            old_v = self.map_rows(self.critic, batch)  # across processes: each rank's rows, gathered
            rewards, kl = kl_shaped_rewards(old_logp, ref_logp, mask, batch.reward, cfg.beta)  # (B, T)
            adv, ret = gae(rewards, old_v, mask, gamma=cfg.gamma, lam=cfg.gae_lambda)
            if cfg.whiten_advantages:
                adv = whiten(adv, mask)

        def loss_fn(mb: Batch, idx: torch.Tensor, weight) -> tuple[torch.Tensor, dict]:
            pl, pm = ppo_policy_loss(self.logp(mb), old_logp[idx], adv[idx], mb.response_mask, cfg.clip,
                                     cfg.loss_reduction)
            vl, vm = ppo_value_loss(self.critic(mb), old_v[idx], ret[idx], mb.response_mask, cfg.value_clip)
            return pl * weight(cfg.loss_reduction) + cfg.vf_coef * vl * weight("token-mean"), {**pm, **vm}

        # ---- epochs of minibatch updates of actor and critic (across processes: each rank's rows of each; in
        # micro-batches of scale.micro_batch_size)
        steps = []
        for _ in range(cfg.epochs):
            for idx in minibatches(len(batch), cfg.minibatches, self.gen):
                m = self.backward(batch, own_rows(idx), mask[idx], loss_fn)
                steps.append({**m, "opt/grad_norm": self.step(self.optim, self.params),
                              "critic/grad_norm": self.step(self.critic_optim, self.critic.parameters())})
        return mean_metrics(steps, {"critic/value_mean": old_v.sum() / mask.sum(),
                                    "ppo/kl_reward": kl.sum(-1).mean()})

    def modules(self) -> list[torch.nn.Module]:
        return [self.policy, self.critic]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optim, self.critic_optim]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "critic": self.critic.state_dict(), "critic_optim": self.critic_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.critic.load_state_dict(state["critic"])
        self.critic_optim.load_state_dict(state["critic_optim"])
