"""``python -m spolab.exact``: SPO (both terminal losses) and PPO on the exact-optimum testbed.

Tabular policies (one logit per state and action, initialised at π_ref) are trained with the
same pure losses as the language-model runs (spolab.algos.losses); every update logs the exact
KL(π_θ‖π*), KL(π_θ‖π_ref), entropy, success probability and pass@k, computed by enumeration
(spolab.tasks.testbed). ``bce``'s own optimum is π_ref conditioned on success, logged as
``exact/kl_conditioned_to_policy`` = KL(π_ref(·|success)‖π_θ) (the other direction is
infinite whenever π_θ keeps any mass on failures).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from spolab.algos import losses
from spolab.algos.base import mean_metrics
from spolab.cli import entry
from spolab.tasks import testbed
from spolab.tracking import Tracker
from spolab.utils import set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)


def _table(logits: torch.Tensor, tb: testbed.Testbed) -> torch.Tensor:
    return torch.log_softmax(logits.masked_fill(~tb.allowed, -math.inf), dim=-1)


def exact_metrics(tb: testbed.Testbed, table: torch.Tensor, log_pi_star: torch.Tensor, cond: torch.Tensor) -> dict:
    return {
        "exact/kl_to_optimum": testbed.kl(tb, table, log_pi_star),
        "exact/kl_conditioned_to_policy": testbed.kl(tb, cond, table),  # KL(π_ref(·|success)‖π_θ): finite
        "exact/kl_to_ref": testbed.kl(tb, table, tb.ref_logp),
        "exact/entropy": testbed.entropy(tb, table),
        "exact/success_prob": testbed.success_prob(tb, table),
        "exact/pass@10": testbed.pass_at_k(tb, table, 10),
    }


def _behaviour(tb, table, kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "online":
        return testbed.sample(tb, table.detach(), n, g)
    if kind == "uniform":  # off-policy: responses uniformly at random, no policy involved
        return torch.randint(len(tb.states), (n,), generator=g)
    raise ValueError(f"unknown exact.behaviour {kind!r}; valid: ['online', 'uniform']")


def train_spo(tb, cfg, kind: str, q0_kind: str, behaviour: str, seed: int, log_fn=None) -> torch.Tensor:
    """SPO on the testbed; returns the final (S, A) log-prob table."""
    g = torch.Generator().manual_seed(seed)
    V, _ = testbed.soft_optimum(tb, cfg.beta)
    if kind == "bce":
        q0 = cfg.beta * math.log(testbed.success_prob(tb, tb.ref_logp))
    elif q0_kind == "exact":
        q0 = float(V[0])
    else:  # Monte-Carlo from n_ref reference samples (biased low, docs/design.md §2)
        r = tb.reward[testbed.sample(tb, tb.ref_logp, cfg.n_ref, g)]
        q0 = float(losses.q0_monte_carlo(r[None], cfg.beta)[0])
    logits = tb.ref_logp.masked_fill(~tb.allowed, 0.0).clone().requires_grad_()
    opt = torch.optim.Adam([logits], lr=cfg.spo_lr)
    for step in range(1, cfg.updates + 1):
        seqs = _behaviour(tb, _table(logits, tb), behaviour, cfg.batch_size, g)
        lp = testbed.token_logp(tb, _table(logits, tb), seqs)
        ref = testbed.token_logp(tb, tb.ref_logp, seqs)
        q = torch.full((len(seqs),), q0, dtype=lp.dtype)
        loss, m = losses.spo_terminal_loss(lp, ref, tb.path_mask[seqs], tb.reward[seqs], q, cfg.beta, kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log_fn and (step % cfg.log_every == 0 or step == cfg.updates):
            log_fn(step, logits, mean_metrics([m]))
    return _table(logits, tb).detach()


def train_ppo(tb, cfg, seed: int, log_fn=None) -> torch.Tensor:
    """PPO with a tabular critic, KL-in-reward (coefficient β), GAE, clipping, epochs x minibatches."""
    g = torch.Generator().manual_seed(seed)
    logits = tb.ref_logp.masked_fill(~tb.allowed, 0.0).clone().requires_grad_()
    values = torch.zeros(len(tb.states), dtype=torch.float64, requires_grad=True)  # V(s) per state
    opt = torch.optim.Adam([{"params": [logits], "lr": cfg.ppo_lr}, {"params": [values], "lr": cfg.critic_lr}])
    B, mb = cfg.batch_size, cfg.batch_size // cfg.ppo_minibatches
    for step in range(1, cfg.updates + 1):
        # ---- sample and score with the policy before the update (π_old)
        seqs = testbed.sample(tb, _table(logits, tb).detach(), B, g)
        mask = tb.path_mask[seqs]
        with torch.no_grad():
            old_lp = testbed.token_logp(tb, _table(logits, tb), seqs)
            ref_lp = testbed.token_logp(tb, tb.ref_logp, seqs)
            old_v = values[tb.path_states[seqs]] * mask
            rewards, _ = losses.kl_shaped_rewards(old_lp, ref_lp, mask, tb.reward[seqs], cfg.beta)  # (B, T)
            adv, ret = losses.gae(rewards, old_v, mask, gamma=1.0, lam=cfg.gae_lambda)
            adv = losses.whiten(adv, mask)
        # ---- epochs of minibatch updates
        steps = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=g)
            for i in range(0, B, mb):
                idx = perm[i : i + mb]
                lp = testbed.token_logp(tb, _table(logits, tb), seqs[idx])
                pl, m = losses.ppo_policy_loss(lp, old_lp[idx], adv[idx], mask[idx], clip=cfg.clip)
                v = values[tb.path_states[seqs[idx]]] * mask[idx]
                vl, mv = losses.ppo_value_loss(v, old_v[idx], ret[idx], mask[idx], clip=cfg.value_clip)
                opt.zero_grad()
                (pl + cfg.vf_coef * vl).backward()
                opt.step()
                steps.append({**m, **mv})
        if log_fn and (step % cfg.log_every == 0 or step == cfg.updates):
            log_fn(step, logits, mean_metrics(steps))  # means over the update's minibatches
    return _table(logits, tb).detach()


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "exact")
    tb = testbed.make_testbed(cfg.exact.K, cfg.exact.L, cfg.exact.p_success, binary=True, seed=cfg.exact.seed)
    V, log_pi_star = testbed.soft_optimum(tb, cfg.exact.beta)
    cond = testbed.conditioned_on_success(tb)
    results = {}
    for name in cfg.algos:
        out = Path(cfg.out_dir) / name
        tracker = Tracker.from_config(
            out, cfg, run_name=f"exact-{name}-b{cfg.exact.beta:g}-s{cfg.seed}",
            tags={"stage": "exact", "algo": name, "beta": f"{cfg.exact.beta:g}", "seed": str(cfg.seed),
                  "scale": cfg.scale.name})
        bar = tqdm(total=cfg.exact.updates, desc=f"exact/{name}", mininterval=2, leave=False)

        def log_fn(step, logits, m, tracker=tracker, bar=bar):
            metrics = exact_metrics(tb, _table(logits, tb).detach(), log_pi_star, cond)
            tracker.log({**metrics, **m}, step)
            bar.update(step - bar.n)
            bar.set_postfix(kl=f"{metrics['exact/kl_to_optimum']:.4f}", refresh=False)

        with tracker:
            if name.startswith("spo_"):
                kind = name.removeprefix("spo_")
                table = train_spo(tb, cfg.exact, kind, cfg.exact.q0, cfg.exact.behaviour, cfg.seed, log_fn)
            elif name == "ppo":
                table = train_ppo(tb, cfg.exact, cfg.seed, log_fn)
            else:
                raise ValueError(f"unknown algo {name!r} for the testbed; valid: spo_squared, spo_bce, ppo")
            final = exact_metrics(tb, table, log_pi_star, cond)
            tracker.log_summary(final)
        bar.close()
        results[name] = final
        log.info("%s: KL(π‖π*) %.4f, KL(π_ref|success‖π) %.4f, entropy %.3f, P(success) %.3f (π* %.3f)",
                 name, final["exact/kl_to_optimum"], final["exact/kl_conditioned_to_policy"], final["exact/entropy"],
                 final["exact/success_prob"], testbed.success_prob(tb, log_pi_star))
    return results


main = entry("exact", run)


if __name__ == "__main__":
    main()
