"""Losses and estimators pinned to math computed independently (by hand or in closed form)."""

import math

import pytest
import torch

from spolab.algos import losses
from spolab.errors import ConfigError
from spolab.tasks import testbed
from spolab.utils import Registry

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


# ---------------------------------------------------------------- golden values (by hand)


def test_spo_squared_golden():
    logp, ref = t([[-1.0, -2.0, 0.0]]), t([[-1.5, -1.0, 5.0]])
    mask = t([[1, 1, 0]])
    # log ratio sum = 0.5 - 1 = -0.5; Q_T = 0.2 + 0.5 * -0.5 = -0.05; (Q_T - 1)^2 = 1.1025
    loss, m = losses.spo_terminal_loss(logp, ref, mask, t([1.0]), t([0.2]), beta=0.5)
    assert loss.item() == pytest.approx(1.1025)
    assert float(m["spo/q_terminal"]) == pytest.approx(-0.05)
    w = t([3.0])
    assert losses.spo_terminal_loss(logp, ref, mask, t([1.0]), t([0.2]), 0.5, weights=w)[0].item() == pytest.approx(3.3075)


def test_spo_bce_golden():
    beta = 0.3
    q0 = t([beta * math.log(0.25)] * 3)  # reference success rate 1/4
    logp = t([[math.log(2.0)], [math.log(8.0)], [math.log(0.5)]])  # log ratio sums: log 2, log 8, log 1/2
    ref, mask = torch.zeros(3, 1, dtype=D), torch.ones(3, 1, dtype=D)
    # p = 1/2 -> BCE = log 2 for y=1 and for y=0; p = min(1, 2) = 1 -> y=1 costs ~eps; p = 1/8, y=0 -> -log(7/8)
    per = [losses.spo_terminal_loss(logp[i : i + 1], ref[i : i + 1], mask[i : i + 1], t([y]), q0[i : i + 1], beta,
                               kind="bce")[0].item() for i, y in enumerate([0.0, 1.0, 0.0])]
    assert per[0] == pytest.approx(math.log(2))
    assert per[1] == pytest.approx(losses.BCE_EPS, rel=1e-3)
    assert per[2] == pytest.approx(-math.log(7 / 8))
    # beta cancels: same loss with another beta when q0 = beta * log(rate)
    a = losses.spo_terminal_loss(logp, ref, mask, t([0, 1, 0]), q0, beta, kind="bce")[0]
    b = losses.spo_terminal_loss(logp, ref, mask, t([0, 1, 0]), q0 / beta * 2.0, 2.0, kind="bce")[0]
    assert a.item() == pytest.approx(b.item())


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown SPO terminal loss 'huber'; valid: \['bce', 'squared'\]"):
        losses.spo_terminal_loss(t([[0.0]]), t([[0.0]]), t([[1.0]]), t([1.0]), t([0.0]), 0.1, kind="huber")
    with pytest.raises(ConfigError, match=r"unknown SPO terminal loss 'huber'; valid: \['bce', 'squared'\]"):
        losses.q0_from_success(t([1.0]), 4, 0.1, "huber")
    with pytest.raises(ConfigError, match=r"unknown advantage estimator 'gae2'; valid: \['grpo', 'rloo'\]"):
        losses.ADVANTAGE_ESTIMATORS["gae2"]
    with pytest.raises(ConfigError, match=r"unknown loss reduction 'sum'; valid: \['seq-mean-token-mean', "
                                          r"'seq-mean-token-sum', 'token-mean'\]"):
        losses.reduce_loss(t([[1.0]]), t([[1.0]]), "sum")
    with pytest.raises(ValueError, match="beta"):
        losses.spo_terminal_loss(t([[0.0]]), t([[0.0]]), t([[1.0]]), t([1.0]), t([0.0]), 0.0)


def test_registry_rejects_duplicate_names():
    reg = Registry("widget")
    reg.register("a")(abs)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(round)
    assert reg["a"] is abs and list(reg) == ["a"]
    with pytest.raises(ConfigError, match=r"unknown widget 'b'; valid: \['a'\]"):
        reg["b"]
    # the library's registries refuse a second function under a taken name, keeping the first
    first = losses.TERMINAL_LOSSES["squared"]
    for registry, name in ((losses.TERMINAL_LOSSES, "squared"), (losses.ADVANTAGE_ESTIMATORS, "grpo"),
                           (losses.LOSS_REDUCTIONS, "token-mean")):
        with pytest.raises(ValueError, match="already registered"):
            registry.register(name)(lambda *a: None)
    assert losses.TERMINAL_LOSSES["squared"] is first


def test_reductions_by_hand():
    per_token = t([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])  # row 2 has one response token; 50 and 60 are padding
    assert losses.reduce_loss(per_token, mask, "token-mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert losses.reduce_loss(per_token, mask, "seq-mean-token-mean").item() == pytest.approx((2.0 + 4.0) / 2)
    assert losses.reduce_loss(per_token, mask, "seq-mean-token-sum").item() == pytest.approx((6.0 + 4.0) / 2)
    assert sorted(losses.LOSS_REDUCTIONS) == ["seq-mean-token-mean", "seq-mean-token-sum", "token-mean"]


def test_kl_shaped_rewards_by_hand():
    beh = t([[-1.0, -2.0, 0.0], [-0.5, 7.0, 7.0]])  # padding (7.0) must not leak into the rewards
    ref = t([[-1.5, -1.0, 5.0], [-0.25, 1.0, 1.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    rewards, kl = losses.kl_shaped_rewards(beh, ref, mask, t([1.0, 3.0]), beta=0.5)
    # k1 = log π − log π_ref: row 1 (0.5, −1), row 2 (−0.25); r_t = −0.5 k1, + the task reward on the last token
    assert torch.allclose(kl, t([[0.5, -1.0, 0.0], [-0.25, 0.0, 0.0]]))
    assert torch.allclose(rewards, t([[-0.25, 0.5 + 1.0, 0.0], [0.125 + 3.0, 0.0, 0.0]]))


def test_truncated_is_weights_by_hand():
    logp = t([[math.log(0.5), math.log(0.5), 9.0], [math.log(0.9), 9.0, 9.0], [math.log(0.2), 9.0, 9.0],
              [-1.0, -1.0, 9.0]])
    mask = t([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])  # the 9.0 entries are padding
    beh = t([math.log(0.5), math.log(0.1), math.log(0.4), float("nan")])  # log μ(a|x); NaN: μ unknown
    w = losses.truncated_is_weights(logp.requires_grad_(), beh, mask, clip=2.0)
    # π/μ = 0.25/0.5 = 0.5; 0.9/0.1 = 9 -> capped at 2; 0.2/0.4 = 0.5; unknown μ -> 1
    assert torch.allclose(w, t([0.5, 2.0, 0.5, 1.0]))
    assert not w.requires_grad


def test_loss_metrics_are_detached_scalar_tensors():
    """Losses never sync the device: every metric is a 0-d tensor outside the graph."""
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(2, 3, generator=g, dtype=D)).requires_grad_()
    ref, old, mask, v = -torch.rand(2, 3, dtype=D), -torch.rand(2, 3, dtype=D), t([[1, 1, 0], [1, 1, 1]]), t([0.3, 0.1])
    outs = [losses.spo_terminal_loss(logp, ref, mask, t([1, 0]), v, 0.2, kind) for kind in ("squared", "bce")]
    outs += [losses.ppo_policy_loss(logp, old, logp.detach(), mask), losses.ppo_value_loss(logp, old, ref, mask),
             losses.reinforce_loss(logp, v, mask)]
    for loss, metrics in outs:
        assert loss.requires_grad and metrics
        for k, x in metrics.items():
            assert torch.is_tensor(x) and x.dim() == 0 and not x.requires_grad, k


def test_ppo_policy_and_value_golden():
    old = t([[math.log(0.2), math.log(0.4)]])
    new = t([[math.log(0.3), math.log(0.2)]])  # ratios 1.5 and 0.5
    adv = t([[1.0, -1.0]])
    loss, m = losses.ppo_policy_loss(new, old, adv, torch.ones(1, 2, dtype=D), clip=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)  # min(1.5, 1.2) and min(-0.5, -0.8)
    assert float(m["policy/clipfrac"]) == 1.0
    vloss, _ = losses.ppo_value_loss(t([[1.0]]), t([[0.5]]), t([[2.0]]), t([[1.0]]), clip=0.2)
    assert vloss.item() == pytest.approx(0.5 * (0.7 - 2.0) ** 2)  # clipped value is further: max wins


def test_kl_estimators():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert losses.kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert losses.kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)
    # both are unbiased for KL(p||q) under samples from p: check exactly on a 3-outcome distribution
    p, q = t([0.5, 0.3, 0.2]), t([0.2, 0.5, 0.3])
    kl = float((p * (p / q).log()).sum())
    for kind in ("k1", "k3"):
        assert float((p * losses.kl_penalty(p.log(), q.log(), kind)).sum()) == pytest.approx(kl)


def test_gae_hand_computed_with_episode_ending_mid_batch():
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])  # row 2 ends at t=1; its t=2 entries are garbage
    values = t([[0.5, 0.6, 0.7], [0.2, 0.4, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = losses.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.225, 0.25, 0.3], [1.0, 1.6, 0.0]]))
    assert torch.allclose(ret, t([[0.725, 0.85, 1.0], [1.2, 2.0, 0.0]]))
    # lam = 1, gamma = 1: advantages are Monte-Carlo returns minus values
    adv1, _ = losses.gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv1, t([[0.5, 0.4, 0.3], [1.8, 1.6, 0.0]]))


def test_group_advantages_golden():
    r = t([1, 0, 0, 1, 1, 1, 1, 0])
    s = 1 / math.sqrt(1 / 3)
    assert torch.allclose(losses.grpo_advantages(r, 4), t([0.5 * s, -0.5 * s, -0.5 * s, 0.5 * s, 0.5, 0.5, 0.5, -1.5]),
                          atol=1e-5)
    assert torch.allclose(losses.rloo_advantages(r, 4), t([2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, -1]))
    assert torch.allclose(losses.grpo_advantages(t([1, 1, 1, 1]), 4), torch.zeros(4, dtype=D))


def test_whiten():
    x, m = t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]])
    w = losses.whiten(x, m)
    assert w[0, :3].mean().abs() < 1e-9 and w[0, 3] == 0
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, rel=1e-6)


# ---------------------------------------------------------------- padding and gradients


def test_padding_changes_no_loss():
    g = torch.Generator().manual_seed(0)
    B, T = 4, 5
    logp, ref, old = (-torch.rand(B, T, generator=g, dtype=D) for _ in range(3))
    mask = t([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    pad = lambda x: torch.cat([x, torch.randn(B, 3, generator=g, dtype=D) * 50], 1)  # noqa: E731
    mpad = torch.cat([mask, torch.zeros(B, 3, dtype=D)], 1)
    r, q0, adv = t([1, 0, 1, 0]), t([0.3] * 4), torch.randn(B, T, generator=g, dtype=D)
    for kind in ("squared", "bce"):
        a = losses.spo_terminal_loss(logp, ref, mask, r, q0, 0.2, kind)[0]
        b = losses.spo_terminal_loss(pad(logp), pad(ref), mpad, r, q0, 0.2, kind)[0]
        assert torch.allclose(a, b)
    for red in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        a = losses.ppo_policy_loss(logp, old, adv, mask, reduction=red)[0]
        assert torch.allclose(a, losses.ppo_policy_loss(pad(logp), pad(old), pad(adv), mpad, reduction=red)[0])
    a = losses.ppo_value_loss(logp, old, ref, mask)[0]
    assert torch.allclose(a, losses.ppo_value_loss(pad(logp), pad(old), pad(ref), mpad)[0])
    adv1, ret1 = losses.gae(logp, ref, mask)
    adv2, ret2 = losses.gae(pad(logp), pad(ref), mpad)
    assert torch.allclose(adv1, adv2[:, :T]) and torch.allclose(ret1, ret2[:, :T])


def test_finite_difference_gradients():
    g = torch.Generator().manual_seed(1)
    B, T = 3, 4
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    ref, old = -torch.rand(B, T, generator=g, dtype=D), -torch.rand(B, T, generator=g, dtype=D)
    adv = torch.randn(B, T, generator=g, dtype=D)
    logp = (old + 0.05 * torch.randn(B, T, generator=g, dtype=D)).requires_grad_()
    r, q0 = t([1.0, 0.0, 1.0]), t([0.2 * math.log(0.1)] * 3)  # log p = log 0.1 + small: away from the kink
    near = old + 0.01  # π_ref close to π_θ, so log p stays well below the min(0, ·) kink
    torch.autograd.gradcheck(lambda x: losses.spo_terminal_loss(x, ref, mask, r, q0, 0.2, "squared")[0], (logp,))
    torch.autograd.gradcheck(lambda x: losses.spo_terminal_loss(x, near, mask, r, q0, 0.2, "bce")[0], (logp,))
    torch.autograd.gradcheck(lambda x: losses.ppo_policy_loss(x, old, adv, mask, clip=10.0)[0], (logp,))
    v = torch.randn(B, T, generator=g, dtype=D, requires_grad=True)
    torch.autograd.gradcheck(lambda x: losses.ppo_value_loss(x, v.detach() + 0.05, adv, mask)[0], (v,))


# ---------------------------------------------------------------- SPO against the closed forms


def _table(logits, tb):
    return torch.log_softmax(logits.masked_fill(~tb.allowed, -math.inf), -1)


def test_spo_loss_and_gradient_vanish_at_optimum():
    tb = testbed.make_testbed(K=2, L=3, binary=False, seed=3)
    beta = 0.5
    V, log_pi = testbed.soft_optimum(tb, beta)
    logits = log_pi.masked_fill(~tb.allowed, 0.0).clone().requires_grad_()
    seqs = torch.arange(len(tb.states))
    lp = testbed.token_logp(tb, _table(logits, tb), seqs)
    ref = testbed.token_logp(tb, tb.ref_logp, seqs)
    loss, _ = losses.spo_terminal_loss(lp, ref, tb.path_mask[seqs], tb.reward, V[0].expand(len(seqs)), beta)
    loss.backward()
    assert loss.item() < 1e-20 and logits.grad.abs().max() < 1e-10
    # anywhere else the loss is positive: e.g. at π_ref
    lp_ref = testbed.token_logp(tb, tb.ref_logp, seqs)
    assert losses.spo_terminal_loss(lp_ref, ref, tb.path_mask, tb.reward, V[0].expand(len(seqs)), beta)[0] > 1e-3


def test_spo_bce_minimal_at_reference_conditioned_on_success():
    tb = testbed.make_testbed(K=2, L=3, p_success=0.4, seed=5)
    seqs = torch.arange(len(tb.states))
    ref = testbed.token_logp(tb, tb.ref_logp, seqs)
    p_ref = testbed.success_prob(tb, tb.ref_logp)
    beta = 0.7
    q0 = torch.full((len(seqs),), beta * math.log(p_ref), dtype=D)

    def loss_at(table):
        lp = testbed.token_logp(tb, table, seqs)
        return losses.spo_terminal_loss(lp, ref, tb.path_mask, tb.reward, q0, beta, "bce")[0]

    cond = testbed.conditioned_on_success(tb)
    logits = cond.masked_fill(torch.isinf(cond), -60.0).masked_fill(~tb.allowed, 0.0).requires_grad_()
    at_opt = loss_at(_table(logits, tb))
    at_opt.backward()
    assert at_opt.item() < 1e-4 and logits.grad.abs().max() < 1e-4
    assert loss_at(tb.ref_logp).item() > at_opt.item() + 0.1
    assert loss_at(testbed.soft_optimum(tb, 0.5)[1]).item() > at_opt.item() + 0.01


def test_monte_carlo_q0_biased_low_as_jensen_predicts():
    beta, p = 0.1, 0.05
    v_star = beta * math.log(1 - p + p * math.exp(1 / beta))
    bias = []
    for n in (4, 16, 64):
        # exact expectation of the estimator over Binomial(n, p) success counts
        expect = sum(math.comb(n, s) * p**s * (1 - p) ** (n - s)
                     * losses.q0_monte_carlo(t([[1.0] * s + [0.0] * (n - s)]), beta).item() for s in range(n + 1))
        bias.append(v_star - expect)
    assert bias[0] > bias[1] > bias[2] > 0  # biased low (Jensen), less so with more samples
    assert bias[1] > 0.1  # n = 16, the default: large where learning happens
    # the bias shrinks with n, and the estimator is exact with the whole distribution known
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(4000, 16, generator=g) < p).double()
    mc = losses.q0_monte_carlo(r, beta)
    plain = losses.q0_from_success(r.sum(-1), 16, beta, "squared", "plain").double()
    assert torch.allclose(mc, plain, atol=1e-5)
    assert mc.mean() < v_star
    # zero successes give Q̂0 = 0 while V* is ~0.70 (docs/design.md §3); shrinkage moves them toward V*
    shrunk = losses.q0_from_success(r.sum(-1), 16, beta, "squared", "shrunk")
    zero = r.sum(-1) == 0
    assert mc[zero].abs().max() < 1e-6 and shrunk[zero].min() > 0.1
    assert abs(shrunk.double().mean() - v_star) < abs(mc.mean() - v_star)


def test_beta_binomial_prior_recovers_known_prior():
    g = torch.Generator().manual_seed(0)
    rates = torch.distributions.Beta(2.0, 6.0).sample((20000,))
    s = torch.binomial(torch.full_like(rates, 16.0), rates, generator=g)
    a, b = losses.beta_binomial_prior(s, 16)
    assert a / (a + b) == pytest.approx(0.25, abs=0.01) and a + b == pytest.approx(8.0, rel=0.15)
