"""Pure losses and estimators of every algorithm, in one place (docs/design.md §2).

Tensors in, ``(loss, metrics)`` out: no model, no config object. Dimensions: B sequences,
T response tokens (EOS included), G groups of sampled responses per prompt. ``mask`` is 1 on
response tokens and 0 on padding; padding never changes a loss. Metrics are detached 0-d
tensors (no device sync here); the update steps turn them into floats once per update
(:func:`spolab.algos.base.mean_metrics`).

Notation follows docs/design.md §2: prompt x, response a = (a_1..a_T), reward r(x, a) at the end,
π_ref the frozen SFT policy, β the KL coefficient, Q̂0(x) ≈ V*(x).
"""

from __future__ import annotations

import math

import torch

from spolab.utils import Registry

Metrics = dict[str, torch.Tensor]  # key -> detached 0-d tensor

# ---------------------------------------------------------------------------- registries (config name -> function)

TERMINAL_LOSSES = Registry("SPO terminal loss")  # algo.loss
ADVANTAGE_ESTIMATORS = Registry("advantage estimator")  # GRPO and RLOO look theirs up by algo.name
LOSS_REDUCTIONS = Registry("loss reduction")  # algo.loss_reduction


# ---------------------------------------------------------------------------- shared pieces


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (mean kept when ``shift_mean`` is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return (out if shift_mean else out + mean) * mask


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimators of KL(π‖π_ref) on tokens sampled from π (Schulman 2020).

    k1 = log π - log π_ref (unbiased, signed); k3 = exp(log π_ref - log π) - (log π_ref - log π) - 1
    (unbiased, non-negative: GRPO's choice).
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.expm1(d) - d
    raise ValueError(f"unknown KL estimator {kind!r}; valid: ['k1', 'k3']")


@LOSS_REDUCTIONS.register("token-mean")
def _token_mean(per_token, mask):
    return masked_mean(per_token, mask)  # Σ_{b,t} m ℓ / Σ_{b,t} m


@LOSS_REDUCTIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(per_token, mask):
    return masked_mean(per_token, mask, dim=-1).mean()  # (B,) token means -> mean over B


@LOSS_REDUCTIONS.register("seq-mean-token-sum")
def _seq_mean_token_sum(per_token, mask):
    return masked_sum(per_token, mask).mean()  # (B,) token sums -> mean over B


def reduce_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T) per-token loss → scalar, by a named mode (registry ``LOSS_REDUCTIONS``):

    - ``token-mean``: Σ_{b,t} m_bt ℓ_bt / Σ_{b,t} m_bt, every response token of the batch weighs the same;
    - ``seq-mean-token-mean``: (1/B) Σ_b (Σ_t m_bt ℓ_bt / Σ_t m_bt), every sequence weighs the same;
    - ``seq-mean-token-sum``: (1/B) Σ_b Σ_t m_bt ℓ_bt, a sequence weighs by its length (REINFORCE's
      −A Σ_t log π).
    """
    return LOSS_REDUCTIONS[mode](per_token, mask)


def reduction_size(mask: torch.Tensor, mode: str) -> float:
    """What :func:`reduce_loss` in ``mode`` divides by: the response tokens (``token-mean``) or the
    sequences (the ``seq-mean-*`` modes) of ``mask`` (B, T). A data-parallel rank weighs its loss by its
    share of the minibatch's (spolab.dist.loss_share)."""
    LOSS_REDUCTIONS[mode]  # an unknown mode raises here, listing the valid ones
    return float(mask.sum()) if mode == "token-mean" else float(mask.shape[0])


def kl_shaped_rewards(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL-in-reward shaping (Ziegler et al. 2019; Stiennon et al. 2020): per-token rewards

        r_t = −β k1_t + [t = last response token] r(x, a),   k1_t = log π(a_t|s_t) − log π_ref(a_t|s_t),

    on tokens sampled from π (PPO: the behaviour policy π_old), so that Σ_t r_t = r − β k1-KL.

    Args:
        logp: (B, T) log π of the sampled tokens.
        ref_logp: (B, T) log π_ref of the same tokens.
        mask: (B, T) 1 on response tokens; every row has at least one.
        reward: (B,) task reward r(x, a), added on each row's last response token.
        beta: KL coefficient β.

    Returns ``(rewards, kl)``, both (B, T) and 0 on padding; ``kl`` is the per-token k1.
    """
    kl = kl_penalty(logp, ref_logp, "k1") * mask  # (B, T)
    rewards = -beta * kl
    last = mask.sum(-1).long() - 1  # (B,) index of each row's last response token
    rewards[torch.arange(len(rewards), device=rewards.device), last] += reward
    return rewards, kl


def truncated_is_weights(
    logp: torch.Tensor, behaviour_seq_logp: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """Per-sequence truncated importance weights w = min(c, π_θ(a|x) / μ(a|x)) → (B,), constant.

    log π_θ(a|x) = Σ_t mask_t log π_θ(a_t|s_t). Where the behaviour policy μ is unknown (NaN: expert,
    random or greedy-decoded data) the weight is 1. Truncation at c bounds the variance a stale
    or foreign μ adds (as in Retrace/ACER, Munos et al. 2016; Wang et al. 2017).

    Args:
        logp: (B, T) log π_θ of the response tokens (gradients are not taken through the weights).
        behaviour_seq_logp: (B,) log μ(a|x) per sequence, NaN where μ is unknown.
        mask: (B, T) 1 on response tokens.
        clip: the cap c > 0.
    """
    log_w = masked_sum(logp.detach(), mask) - behaviour_seq_logp  # (B,) log π_θ/μ
    return torch.where(behaviour_seq_logp.isnan(), torch.ones_like(log_w), log_w.exp().clamp(max=clip))


# ---------------------------------------------------------------------------- SPO


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return x.mean() if weights is None else (weights * x).mean()


@TERMINAL_LOSSES.register("squared")
def _spo_squared(log_ratio_sum, reward, q0, beta, weights):
    q_t = q0 + beta * log_ratio_sum  # (B,) Q_θ(s_T, a_T)
    loss = _weighted_mean((q_t - reward) ** 2, weights)
    q_t = q_t.detach()
    return loss, {"spo/q_terminal": q_t.mean(), "spo/abs_residual": (q_t - reward).abs().mean()}


BCE_EPS = 1e-6  # log p is capped at -BCE_EPS so that log(1 - p) stays finite for failures


@TERMINAL_LOSSES.register("bce")
def _spo_bce(log_ratio_sum, reward, q0, beta, weights):
    log_p = torch.clamp(q0 / beta + log_ratio_sum, max=0.0)  # log p_θ(success | x, a)
    log_p_c = torch.clamp(log_p, max=-BCE_EPS)
    nll = -(reward * log_p_c + (1 - reward) * log1mexp(log_p_c))  # binary cross-entropy
    loss = _weighted_mean(nll, weights)
    return loss, {"spo/p_success": log_p.detach().exp().mean(), "spo/bce": nll.detach().mean()}


def spo_terminal_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    reward: torch.Tensor,
    q0: torch.Tensor,
    beta: float,
    kind: str = "squared",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """SPO's terminal loss (Cohen et al. 2025, §3; docs/design.md §2), valid on any trajectory.

    With the cumulative Q-parameterisation
        Q_T = Q̂0(x) + β Σ_t mask_t (log π_θ(a_t|s_t) − log π_ref(a_t|s_t)),
    soft-Bellman consistency holds at every non-terminal token by construction; the loss
    enforces the terminal condition Q_T = r(x, a):

    - ``squared``: mean_B w (Q_T − r)².
    - ``bce``: log p = min(0, Q̂0/β + Σ_t mask_t (log π_θ − log π_ref)), with
      Q̂0 = β log(reference success rate); loss = mean_B w BCE(r; p) with r ∈ {0, 1}, using
      log(1 − p) = log1mexp(log p). β cancels: the optimum is π_ref conditioned on success.

    Args:
        logp: (B, T) log π_θ of the response tokens (differentiable).
        ref_logp: (B, T) log π_ref of the same tokens (constant).
        mask: (B, T) 1 on response tokens.
        reward: (B,) terminal reward (0/1 for ``bce``).
        q0: (B,) Q̂0(x) of each sequence's prompt.
        beta: KL coefficient β > 0.
        kind: ``squared`` | ``bce`` (registry ``TERMINAL_LOSSES``).
        weights: optional (B,) per-sequence importance weights (e.g. truncated π/μ ratios).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    fn = TERMINAL_LOSSES[kind]
    log_ratio_sum = masked_sum(logp - ref_logp, mask)  # (B,) log π_θ(a|x) − log π_ref(a|x)
    loss, metrics = fn(log_ratio_sum, reward.to(logp.dtype), q0.to(logp.dtype), beta, weights)
    metrics["spo/log_ratio"] = log_ratio_sum.detach().mean()
    metrics["loss/spo"] = loss.detach()
    return loss, metrics


# ---------------------------------------------------------------------------- Q̂0


def q0_monte_carlo(rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """Q̂0(x) = β log mean_j exp(r_j / β) over (P, n) reference-sample rewards → (P,).

    Monte-Carlo estimate of V*(x) = β log E_{π_ref}[exp(r/β)]. By Jensen (log is concave) it
    is biased low: E[Q̂0] ≤ V*.
    """
    n = rewards.shape[-1]
    return beta * (torch.logsumexp(rewards / beta, dim=-1) - math.log(n))


def beta_binomial_prior(successes: torch.Tensor, n: torch.Tensor | int) -> tuple[float, float]:
    """Method-of-moments Beta(a, b) prior of per-prompt success rates from (P,) success counts.

    Pooled mean m and between-prompt variance (less the binomial noise) give a + b = m(1−m)/v − 1.
    Falls back to a weak prior (a + b = 2) when the rates show no extra-binomial spread.
    """
    n = torch.as_tensor(n, dtype=torch.float64).expand_as(successes.double())
    rate = successes.double() / n
    m = float(rate.mean().clamp(1e-6, 1 - 1e-6))
    var_between = float(rate.var(unbiased=True)) - float((m * (1 - m) / n).mean()) if len(rate) > 1 else 0.0
    strength = m * (1 - m) / var_between - 1 if var_between > 0 else 2.0
    strength = max(strength, 1e-3)
    return m * strength, (1 - m) * strength


def q0_from_success(
    successes: torch.Tensor, n: int, beta: float, kind: str, estimator: str = "shrunk"
) -> torch.Tensor:
    """Q̂0 from binary rewards: (P,) success counts out of n reference samples → (P,).

    The success rate p̂ is either ``plain`` (s/n; for ``bce`` smoothed as (s+1)/(n+2) so its
    log is finite) or ``shrunk`` (the beta-binomial posterior mean (s+a)/(n+a+b), pulled
    toward the pooled rate). Then, for binary rewards,
    - ``squared``: Q̂0 = β log E[exp(r/β)] = β log(1 − p̂ + p̂ e^{1/β});
    - ``bce``:     Q̂0 = β log p̂.
    The plain ``squared`` estimate equals :func:`q0_monte_carlo` on the same samples.
    """
    s = successes.double()
    if estimator == "plain":
        p = s / n if kind == "squared" else (s + 1) / (n + 2)
    elif estimator == "shrunk":
        a, b = beta_binomial_prior(s, n)
        p = (s + a) / (n + a + b)
    else:
        raise ValueError(f"unknown Q̂0 estimator {estimator!r}; valid: ['plain', 'shrunk']")
    if kind == "squared":
        # log(1 - p + p e^{1/β}) = 1/β + log(p + (1 - p) e^{-1/β}), stable for small β
        return (1.0 + beta * torch.log(p + (1 - p) * math.exp(-1.0 / beta))).float()
    if kind == "bce":
        return (beta * torch.log(p)).float()
    TERMINAL_LOSSES[kind]  # an unknown kind raises here, listing the valid ones
    raise NotImplementedError(f"no closed-form Q̂0 for the SPO terminal loss {kind!r}")


# ---------------------------------------------------------------------------- PPO


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over (B, T) token rewards.

    δ_t = r_t + γ V_{t+1} m_{t+1} − V_t,  A_t = δ_t + γλ A_{t+1} m_{t+1},  R_t = A_t + V_t.
    Each row is one episode ending at its last masked token (rows end at different t); values
    past the end count as 0 (terminal state). Returns (advantages, returns), 0 where masked.
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_v = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m_next = mask[:, t + 1] if t + 1 < T else torch.zeros_like(next_v)
        delta = rewards[:, t] + gamma * next_v * m_next - values[:, t]
        last = delta + gamma * lam * last * m_next
        adv[:, t] = last
        next_v = values[:, t]
    adv = adv * mask
    return adv, (adv + values) * mask


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    reduction: str = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """Clipped surrogate (Schulman et al. 2017): −min(ρ A, clip(ρ, 1−ε, 1+ε) A), ρ = π_θ/π_old,
    reduced by ``reduction`` (:func:`reduce_loss`).

    Shapes (B, T); ``advantages`` may be (B, 1) for sequence-level advantages (GRPO, RLOO).
    Metrics (token means): ``policy/clipfrac`` share of tokens with |ρ − 1| > ε,
    ``policy/approx_kl_old`` k3 estimate of KL(π_old‖π_θ).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.expand_as(logp)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    loss = reduce_loss(per_token, mask, reduction)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1).abs() > clip).float(), mask)
        approx_kl = masked_mean(kl_penalty(old_logp, logp, "k3"), mask)  # KL(π_old‖π_θ), k3
    return loss, {"policy/clipfrac": clipfrac, "policy/approx_kl_old": approx_kl, "loss/policy": loss.detach()}


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, Metrics]:
    """Clipped value loss (PPO2 baselines): ½ max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        clipfrac = masked_mean(((values - old_values).abs() > clip).float(), mask)
    return loss, {"critic/vf_clipfrac": clipfrac, "loss/value": loss.detach()}


def reinforce_loss(
    logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, reduction: str = "seq-mean-token-sum"
) -> tuple[torch.Tensor, Metrics]:
    """REINFORCE with a baseline (Williams 1992): −A(x, a) Σ_t log π_θ(a_t|s_t), A constant.

    Shapes: ``logp``, ``mask`` (B, T); ``advantages`` (B,) or (B, 1), sequence-level.
    """
    per_token = -advantages.reshape(-1, 1).detach() * logp
    loss = reduce_loss(per_token, mask, reduction)
    return loss, {"loss/policy": loss.detach()}


# ---------------------------------------------------------------------------- value-free advantages


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """Group-normalised advantages (Shao et al. 2024, DeepSeekMath §4.1): (B,) → (B,).

    Rows are consecutive groups of ``group_size`` responses to one prompt;
    A_i = (r_i − mean_g r) / (std_g r + eps) (std unbiased; without ``scale`` only centred).
    """
    g = rewards.view(-1, group_size)  # (G, group_size)
    centred = g - g.mean(-1, keepdim=True)
    if scale:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): (B,) → (B,).

    A_i = r_i − (1/(k−1)) Σ_{j≠i} r_j = k/(k−1) (r_i − mean_g r).
    """
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2")
    g = rewards.view(-1, group_size)
    baseline = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
    return (g - baseline).reshape(-1)
