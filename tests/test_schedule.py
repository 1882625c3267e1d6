"""RL optimisation schedule (warm-up, cosine), optimiser-step accounting, the SFT flaw and the
cross-prompt gradient diagnostic (the sampling temperature: tests/test_temperature.py)."""

import math
import random

import pytest
import torch

from conftest import rl_cfg
from spolab import rl
from spolab.algos import ConfigError, get_algorithm
from spolab.algos.base import lr_factor
from spolab.algos.q0 import load_q0
from spolab.config import load_config
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.trajectories import collate
from spolab.schedule import lr_at
from spolab.tasks import listdsl as dsl
from spolab.tasks.listdsl_task import flawed_program, sft_targets
from spolab.tracking import read_metrics
from test_algos import _algo, setup  # noqa: F401  (the module fixture)


def test_lr_factor_by_hand():
    # warm-up: (step + 1) / W, then constant
    assert [lr_factor(s, 4, "constant", None, 0.1) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0, "constant", None, 0.1) == 1.0
    # cosine over 10 steps to 0.1: p = 5/10 -> 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55; at the end 0.1
    assert lr_factor(5, 0, "cosine", 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(10, 0, "cosine", 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(1, 4, "cosine", 10, 0.1) == pytest.approx(0.5 * (0.1 + 0.9 * (1 + math.cos(math.pi * 0.1)) / 2))
    with pytest.raises(ConfigError, match="needs the run's total"):
        lr_factor(0, 4, "cosine", None, 0.1)
    with pytest.raises(ConfigError, match="lr_schedule='linear'"):
        lr_factor(0, 4, "linear", 10, 0.1)


def _old_rl_factor(step, warmup_steps, schedule, total_steps, min_lr_ratio):
    """algos.base.lr_factor as it was written before the two schedules became spolab.schedule.lr_at."""
    w = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return w
    p = min(1.0, step / total_steps)
    return w * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


def _old_sft_lr(step, total, lr, warmup, min_ratio):
    """sft.lr_at as it was written before the two schedules became spolab.schedule.lr_at."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def test_one_schedule_gives_both_old_formulas_exactly():
    """SFT's and RL's schedules are one function (spolab.schedule.lr_at): bit for bit the floats each
    caller computed with its own formula, on a grid of steps, warm-ups, totals and floors."""
    grid = [(w, t, r) for w in (0, 1, 3, 10, 100) for t in (1, 7, 96, 250, 1000) for r in (0.0, 0.1, 0.37)]
    n = 0
    for warmup, total, ratio in grid:
        for step in range(0, total + 15):
            for schedule in ("constant", "cosine"):
                assert lr_factor(step, warmup, schedule, total, ratio) == _old_rl_factor(step, warmup, schedule, total,
                                                                                         ratio)
            for lr in (1e-3, 3e-4, 5e-5):
                got = lr_at(step, warmup=warmup, total=total, min_ratio=ratio, peak=lr, decay_after_warmup=True)
                assert got == _old_sft_lr(step, total, lr, warmup, ratio)
                n += 1
    assert n > 10_000
    # the two shapes differ while warming up under a cosine: RL's ramp multiplies a decay begun at step 0
    assert lr_at(1, warmup=4, total=10, min_ratio=0.1) < lr_at(1, warmup=4, total=10, min_ratio=0.1,
                                                               decay_after_warmup=True)


def test_first_adam_step_is_taken_at_the_warmed_up_rate(setup):  # noqa: F811
    """Adam's first step moves every weight by ≈ lr_eff (a sign step): lr/10 with warm-up 10, lr without."""
    _, tok, _, trajs = setup
    batch = collate(trajs, tok.pad_token_id)
    moves = {}
    for warm in (10, 0):
        algo, policy = _algo("spo", setup, lr=1e-3, warmup_steps=warm)
        before = [p.detach().clone() for p in policy.parameters()]
        algo.update(batch)
        d = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(policy.parameters(), before)])
        moves[warm] = float(d[d > 0].median())
    assert moves[0] == pytest.approx(1e-3, rel=0.05)
    assert moves[10] == pytest.approx(1e-4, rel=0.05)


@pytest.mark.parametrize("name,steps", [("spo", 1), ("ppo", 4), ("grpo", 1), ("rloo", 1)])
def test_optimiser_steps_are_counted(name, steps, setup):  # noqa: F811
    _, tok, _, trajs = setup
    algo, _ = _algo(name, setup)
    assert algo.steps_per_update == steps
    batch = collate(trajs, tok.pad_token_id)
    algo.update(batch)
    algo.update(batch)
    assert algo.opt_steps == 2 * steps
    assert algo.state_dict()["opt_steps"] == 2 * steps
    spo3, _ = _algo("spo", setup, steps_per_batch=3)
    assert spo3.steps_per_update == 3


def test_rl_logs_optimiser_steps_and_lr(smoke_q0, tmp_path):
    root = smoke_q0.parent
    rl.run(rl_cfg(root, tmp_path, "algo=ppo", "updates=2", "eval_every=2", "ckpt_every=2", "algo.warmup_steps=4"))
    rows = [r for r in read_metrics(tmp_path / "rl") if "opt/steps" in r]
    assert [r["opt/steps"] for r in rows] == [4, 8]  # 2 epochs x 2 minibatches per update
    lr = load_config("rl", ["algo=ppo"]).algo.lr
    assert [r["opt/lr"] for r in rows] == pytest.approx([lr / 4, lr])  # the rate of each update's first step


def test_flawed_program_is_the_habit_and_fails(smoke_data):
    from spolab.tasks.io import load_split

    problems = load_split(smoke_data, "sft")[:200]
    rng = random.Random(0)
    n = 0
    for p in problems:
        bad = flawed_program(p, ["dedup", "sort", "take 3"], rng)
        if bad is None:
            continue
        n += 1
        prog, clean = dsl.parse(bad), dsl.parse(p.program)
        assert len(prog) == len(clean) + 1
        habit = set(prog) - set(clean) or {prog[-1]}
        assert {dsl.PRIMITIVES[i].name for i in habit} <= {"dedup", "sort", "take 3"}
        if dsl.PRIMITIVES[clean[-1]].returns_int:  # the habit goes before the final int op
            assert prog[-1] == clean[-1] and prog[:-2] == clean[:-1]
        else:
            assert prog[:-1] == clean
        assert not dsl.execute(bad, p.all_tests()).success  # wrong on the tests
        assert dsl.execute(p.program, p.all_tests()).success
    assert n > 150  # a harmless habit (sort | sort) is rare


def test_sft_targets_flaw_share(smoke_data):
    from spolab.tasks.io import load_split

    problems = load_split(smoke_data, "sft")[:400]
    clean = sft_targets(problems, "generator", 3)
    flawed = sft_targets(problems, "generator", 3, 0.5, ["dedup", "sort", "take 3"], seed=0)
    share = sum(f != c for f, c in zip(flawed, clean)) / len(problems)
    assert 0.4 < share < 0.55
    assert flawed == sft_targets(problems, "generator", 3, 0.5, ["dedup", "sort", "take 3"], seed=0)  # seeded
    assert sft_targets(problems, "generator", 3, 0.0, ["dedup"]) == clean


def test_gradient_cosine_diagnostic(smoke_q0, tmp_path):
    """The same prompts resampled agree more than disjoint prompts (smoke SFT, SPO's gradient)."""
    from spolab.eval.grad_cosine import algorithm_gradient, gradient_cosines
    from spolab.tasks.io import load_split

    root = smoke_q0.parent
    cfg = rl_cfg(root, tmp_path)
    tok = load_tokenizer(cfg.sft_dir)
    policy, ref = load_model(cfg.sft_dir), load_model(cfg.sft_dir).eval().requires_grad_(False)
    q0 = load_q0(cfg.q0_path, cfg.algo.beta, cfg.algo.loss, cfg.algo.q0_estimator)
    algo = get_algorithm("spo")(cfg.algo, policy, ref, tok, q0=q0, seed=0)
    before = [p.detach().clone() for p in policy.parameters()]
    res = gradient_cosines(algo, load_split(cfg.data_dir, "rl"), prompts=8, pairs=2, group_size=8,
                           max_new_tokens=cfg.task.max_new_tokens, reward_kind="binary", seed=0)
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters()))  # nothing trained
    assert algo.opt_steps == 0 and algo._recorded is None and not algo.optim.state  # no step, no Adam state
    assert -1 <= res["cos_cross"] <= 1 and res["cos_same"] > res["cos_cross"]
    assert 0 < res["reward"] < 1
    # the recorded gradient is the unclipped gradient of SPO's terminal loss on the batch, computed here directly
    from spolab.algos.base import policy_logp
    from spolab.algos.losses import spo_terminal_loss
    from spolab.rollout.collect import attach_ref_logp, collect
    from spolab.rollout.trajectories import collate

    problems = load_split(cfg.data_dir, "rl")[:8]
    trajs, _ = collect(policy, tok, problems, group_size=8, max_new_tokens=cfg.task.max_new_tokens,
                       temperature=1.0, generator=torch.Generator().manual_seed(1), version=0, reward_kind="binary")
    attach_ref_logp(ref, trajs, tok.pad_token_id)
    batch = collate(trajs, tok.pad_token_id)
    assert 0 < float(batch.reward.mean()) < 1
    policy.train()
    got = algorithm_gradient(algo, batch)
    policy.zero_grad(set_to_none=True)
    q0_b = torch.tensor([q0[t.problem_id] for t in batch.trajs])
    loss, _ = spo_terminal_loss(policy_logp(policy, batch), batch.ref_logp, batch.response_mask, batch.reward, q0_b,
                                cfg.algo.beta, cfg.algo.loss, None)
    loss.backward()
    want = torch.cat([p.grad.flatten() for p in policy.parameters()])
    policy.zero_grad(set_to_none=True)
    assert want.norm() > 0 and torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters())) and algo.opt_steps == 0
