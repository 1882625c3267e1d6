"""The exact testbed: closed forms, and SPO/PPO converging to them."""

import math

import pytest
import torch

from spolab import exact
from spolab.config import load_config
from spolab.tasks import testbed


@pytest.fixture(scope="module")
def tb():
    return testbed.make_testbed(K=3, L=3, p_success=0.3, seed=0)


def test_closed_forms(tb):
    beta = 0.5
    V, log_pi = testbed.soft_optimum(tb, beta)
    # π* is a distribution in every state and its response distribution ∝ π_ref exp(r/β)
    assert torch.allclose(log_pi.exp().sum(-1), torch.ones(len(tb.states), dtype=torch.float64))
    ref_seq = testbed.seq_logp(tb, tb.ref_logp)
    target = torch.log_softmax(ref_seq + tb.reward / beta, 0)
    assert torch.allclose(testbed.seq_logp(tb, log_pi), target, atol=1e-10)
    # V*(root) = β log E_ref[exp(r/β)], by brute force over responses
    assert V[0].item() == pytest.approx(beta * math.log(float((ref_seq.exp() * (tb.reward / beta).exp()).sum())))
    # conditioned on success: the response distribution of π_ref restricted to successes
    cond = testbed.seq_logp(tb, testbed.conditioned_on_success(tb)).exp()
    want = ref_seq.exp() * tb.reward / float((ref_seq.exp() * tb.reward).sum())
    assert torch.allclose(cond, want, atol=1e-12)
    assert testbed.kl(tb, log_pi, log_pi) == pytest.approx(0.0, abs=1e-12)
    assert testbed.pass_at_k(tb, tb.ref_logp, 1) == pytest.approx(testbed.success_prob(tb, tb.ref_logp))


def test_spo_off_policy_recovers_optimum_from_uniform_random_responses(tb):
    """The off-policy property: SPO on uniformly random responses alone still recovers π*."""
    cfg = load_config("exact").exact
    cfg.updates = 400
    _, log_pi = testbed.soft_optimum(tb, cfg.beta)
    table = exact.train_spo(tb, cfg, "squared", "exact", "uniform", seed=0)
    assert testbed.kl(tb, tb.ref_logp, log_pi) > 0.1  # the start is far from the optimum
    assert testbed.kl(tb, table, log_pi) < 0.01


def test_exact_entry_point_smoke(tmp_path):
    cfg = load_config("exact", ["scale=smoke", "tracking.uri=null", f"out_dir={tmp_path}"])
    res = exact.run(cfg)
    assert res["spo_squared"]["exact/kl_to_optimum"] < 0.02
    assert res["spo_bce"]["exact/success_prob"] > 0.9  # bce moves toward π_ref | success
    assert res["ppo"]["exact/kl_to_optimum"] < 0.1
    assert (tmp_path / "ppo" / "metrics.jsonl").exists()
