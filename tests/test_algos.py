"""Update steps on the real tiny model, the registry, data-mix rules and the RL trainer."""

import copy
import json
import math

import pytest
import torch

from conftest import rl_cfg
from spolab import rl
from spolab.algos import ALGORITHMS, Algorithm, ConfigError, get_algorithm
from spolab.algos.base import minibatches, policy_logp, register
from spolab.algos.q0 import load_q0
from spolab.config import load_config
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.mix import check_data_mix
from spolab.rollout.offpolicy import SourceMixer, allocate
from spolab.rollout.trajectories import (
    ReplayBuffer,
    Trajectory,
    collate,
    load_trajectories,
    save_trajectories,
)
from spolab.tracking import read_metrics
from spolab.train import train_step


def test_registry():
    assert set(ALGORITHMS) == {"spo", "ppo", "grpo", "rloo"}
    with pytest.raises(ConfigError, match=r"unknown algo 'dpo'; valid: \['grpo', 'ppo', 'rloo', 'spo'\]"):
        get_algorithm("dpo")
    spo = ALGORITHMS["spo"]
    with pytest.raises(ValueError, match="algo 'spo' is already registered"):
        register("spo")(type("AnotherSPO", (Algorithm,), {}))
    assert ALGORITHMS["spo"] is spo


def test_data_mix_rules():
    for algo in ("ppo", "grpo", "rloo"):
        mix = load_config("rl", ["data_mix=half_online"]).data_mix
        with pytest.raises(ConfigError, match=f"algo={algo} is on-policy.*data_mix=half_online"):
            check_data_mix(get_algorithm(algo), mix)
    assert check_data_mix(get_algorithm("spo"), load_config("rl", ["data_mix=half_online"]).data_mix) == (
        10, {"replay": 0.5})
    bad = load_config("rl", ["data_mix=half_online", "data_mix.fresh_fraction=0.7"]).data_mix
    with pytest.raises(ConfigError, match="sum to 1"):
        check_data_mix(get_algorithm("spo"), bad)


@pytest.fixture(scope="module")
def setup(smoke_sft, smoke_data):
    from spolab.tasks.io import load_split

    out, _ = smoke_sft
    tok = load_tokenizer(out / "model")
    ref = load_model(out / "model").eval().requires_grad_(False)
    problems = load_split(smoke_data, "rl")[:4]
    trajs, _ = collect(ref, tok, problems, group_size=4, max_new_tokens=16, generator=torch.Generator().manual_seed(0))
    attach_ref_logp(ref, trajs, tok.pad_token_id)
    for i, t in enumerate(trajs):  # rewards with signal in every group
        t.reward = float(i % 2)
    return out / "model", tok, ref, trajs


def _algo(name, setup, init: dict | None = None, **over):
    """Algorithm ``name`` on a fresh copy of the SFT policy (``over``: algo keys; ``init``: constructor keywords)."""
    path, tok, ref, trajs = setup
    cfg = load_config("rl", [f"algo={name}", "group_size=4"]).algo
    for k, v in over.items():
        cfg[k] = v
    policy = load_model(path)
    q0 = {t.problem_id: 0.3 for t in trajs}
    return get_algorithm(name)(cfg, policy, ref, tok, q0=q0, seed=0, init_path=str(path), **(init or {})), policy


@pytest.mark.parametrize("name", ["spo", "ppo", "grpo", "rloo"])
def test_update_changes_the_policy(name, setup):
    _, tok, _, trajs = setup
    algo, policy = _algo(name, setup)
    before = copy.deepcopy(policy.state_dict())
    m = algo.update(collate(trajs, tok.pad_token_id))
    assert all(math.isfinite(v) for v in m.values())
    assert m["opt/grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


MICRO_CASES = [("spo", {}, 1.0), ("spo", {"is_weights": "truncated"}, 1.0), ("ppo", {"minibatches": 2}, 0.7),
               ("grpo", {}, 1.0), ("rloo", {}, 0.7)]


@pytest.mark.parametrize("micro", [1, 3])
@pytest.mark.parametrize("name,over,temperature", MICRO_CASES)
def test_micro_batches_give_the_update_of_the_whole_minibatch(name, over, temperature, micro, setup):
    """scale.micro_batch_size: each optimiser step's forward/backward in chunks of ``micro`` sequences (3: chunks
    of 3, 3, 2 of a PPO minibatch of 8), gradients accumulated with each chunk weighted by its share, and π_ref's
    (T 0.7: rescored) and the critic's scores in chunks. The weights after one update equal the unsplit update's
    within fp32 summation order, as do the gradient norms and the per-sequence loss means (SPO's)."""
    _, tok, _, trajs = setup
    batch = collate(trajs, tok.pad_token_id)
    runs = []
    for size in (None, micro):
        torch.manual_seed(0)  # PPO's critic head: the same initialisation in both
        algo, _ = _algo(name, setup, init={"temperature": temperature, "micro_batch_size": size}, **over)
        before = {f"{i}.{k}": v.clone() for i, m in enumerate(algo.modules()) for k, v in m.state_dict().items()}
        metrics = algo.update(batch)
        runs.append((before, {f"{i}.{k}": v.clone() for i, m in enumerate(algo.modules())
                              for k, v in m.state_dict().items()}, metrics))
    (b0, w0, m0), (b1, w1, m1) = runs
    assert w0.keys() == w1.keys()
    moved = 0
    for k in w0:
        torch.testing.assert_close(b1[k], b0[k], atol=0, rtol=0)  # both started from the same weights
        torch.testing.assert_close(w1[k], w0[k], atol=1e-6, rtol=0, msg=k)
        moved += int(not torch.equal(w0[k], b0[k]))
    assert moved > 0
    exact = ["opt/grad_norm"] + {"spo": ["loss/spo", "spo/log_ratio"], "ppo": ["critic/grad_norm", "ppo/kl_reward",
                                                                                "critic/value_mean"]}.get(name, [])
    for k in exact:
        assert m1[k] == pytest.approx(m0[k], rel=1e-4, abs=1e-6), k
    assert m1.keys() == m0.keys()


def test_micro_chunks_and_their_shares():
    """Chunks of a minibatch's rows and the weight of each chunk's loss: sequence means by sequences, token
    means by tokens; the weights of a minibatch's chunks sum to 1 in one process."""
    from spolab.algos.base import loss_share, micro_chunks

    rows = torch.tensor([5, 2, 7, 1, 0])
    assert [c.tolist() for c in micro_chunks(rows, 2)] == [[5, 2], [7, 1], [0]]
    assert [c.tolist() for c in micro_chunks(rows, None)] == [[5, 2, 7, 1, 0]]
    assert [c.tolist() for c in micro_chunks(rows, 5)] == [[5, 2, 7, 1, 0]]
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    seq = [loss_share(mask[c], mask, "seq-mean-token-sum") for c in ([0, 1], [2, 3], [4])]
    tok = [loss_share(mask[c], mask, "token-mean") for c in ([0, 1], [2, 3], [4])]
    assert seq == pytest.approx([2 / 5, 2 / 5, 1 / 5]) and tok == pytest.approx([4 / 10, 5 / 10, 1 / 10])
    assert loss_share(mask, mask, "token-mean") == 1.0


def test_spo_update_is_a_no_op_at_its_optimum(setup):
    """π_θ = π_ref and r = Q̂0 for every trajectory: Q_T = r, zero loss, zero gradient."""
    _, tok, _, trajs = setup
    algo, policy = _algo("spo", setup)
    batch = collate(trajs, tok.pad_token_id)
    batch.reward = torch.full_like(batch.reward, 0.3)
    before = copy.deepcopy(policy.state_dict())
    m = algo.update(batch)
    assert m["loss/spo"] < 1e-10 and m["opt/grad_norm"] < 1e-5
    assert all(torch.allclose(before[k], v) for k, v in policy.state_dict().items())


def test_algorithm_interface(setup):
    """What the trainer and the benchmark ask of an algorithm, instead of asking which one it is."""
    assert sorted(n for n, cls in ALGORITHMS.items() if cls.needs_q0) == ["spo"]
    for name in ALGORITHMS:
        algo, policy = _algo(name, setup)
        modules = algo.modules()
        trained = {id(p) for m in modules for p in m.parameters()}
        optimised = {id(p) for o in algo.optimizers() for g in o.param_groups for p in g["params"]}
        assert modules[0] is policy and trained == optimised  # every trained network, each with its optimizer
        assert len(modules) == (2 if name == "ppo" else 1)  # PPO's critic
        assert algo.to("cpu") is algo and algo.device == torch.device("cpu")
        assert set(algo.state_dict()) >= {"optim", "gen"}


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_minibatch_metrics_are_means_over_all_minibatches_and_epochs(name, setup):
    """With lr 0 the policy stays put, so each minibatch's clip fraction can be computed by hand."""
    _, tok, _, trajs = setup
    over = {"lr": 0.0, "epochs": 2, "minibatches": 2} | ({"critic_lr": 0.0} if name == "ppo" else {})
    algo, policy = _algo(name, setup, **over)
    batch = collate(trajs, tok.pad_token_id)
    noise = torch.randn(batch.behaviour_logp.shape, generator=torch.Generator().manual_seed(1))
    batch.behaviour_logp = batch.behaviour_logp + 0.3 * noise  # π_old ≠ π_θ: some ratios leave [0.8, 1.2]
    mask = batch.response_mask
    with torch.no_grad():
        ratio = (policy_logp(policy, batch) - batch.behaviour_logp).exp()
    clipped = ((ratio - 1).abs() > 0.2).float() * mask
    order = torch.Generator().manual_seed(0)  # the algorithm's own minibatch generator (seed 0)
    per_mb = [float(clipped[idx].sum() / mask[idx].sum()) for _ in range(2) for idx in minibatches(16, 2, order)]
    m = algo.update(batch)
    mean = sum(per_mb) / 4
    assert abs(per_mb[-1] - mean) > 1e-3  # the last minibatch alone would not pass
    assert m["policy/clipfrac"] == pytest.approx(mean, abs=1e-6)


def test_spo_metrics_are_means_over_its_gradient_steps(setup):
    """steps_per_batch=2 reports the mean of what two single-step updates on the same batch report."""
    _, tok, _, trajs = setup
    batch = collate(trajs, tok.pad_token_id)
    single, _ = _algo("spo", setup, is_weights="truncated")
    per_step = [single.update(batch) for _ in range(2)]
    double, _ = _algo("spo", setup, steps_per_batch=2, is_weights="truncated")
    m = double.update(batch)
    assert per_step[0]["loss/spo"] != pytest.approx(per_step[1]["loss/spo"])  # the first step moved the loss
    for k in ("loss/spo", "opt/grad_norm", "spo/q_terminal", "spo/log_ratio", "spo/is_weight"):
        assert m[k] == pytest.approx((per_step[0][k] + per_step[1][k]) / 2, rel=1e-5), k
    assert m["spo/q0"] == pytest.approx(0.3) and 0 < m["spo/is_weight"] <= 2.0


def test_loss_reduction_is_read_from_the_config(setup):
    """RLOO's −A Σ_t log π: seq-mean-token-sum divides by B, token-mean by the number of response tokens."""
    _, tok, _, trajs = setup
    batch = collate(trajs, tok.pad_token_id)
    loss = {red: _algo("rloo", setup, loss_reduction=red)[0].update(batch)["loss/policy"]
            for red in ("seq-mean-token-sum", "token-mean")}
    assert abs(loss["token-mean"]) > 1e-6
    tokens = float(batch.response_mask.sum())
    assert loss["seq-mean-token-sum"] / loss["token-mean"] == pytest.approx(tokens / len(batch), rel=1e-4)
    assert load_config("rl", ["algo=rloo"]).algo.loss_reduction == "seq-mean-token-sum"
    with pytest.raises(ConfigError, match=r"unknown loss reduction 'sum'; valid: \['seq-mean-token-mean'"):
        _algo("rloo", setup, loss_reduction="sum")[0].update(batch)


def test_train_step_draws_the_exact_counts(setup, smoke_data):
    """One update's data path: fresh samples, then the stored parts in allocate's counts, replay filled after."""
    from spolab.tasks.io import load_split

    _, tok, _, trajs = setup
    algo, policy = _algo("spo", setup)
    problems = load_split(smoke_data, "rl")[:4]  # the prompts the setup's Q̂0 covers
    counts = allocate(16, 0.5, {"replay": 0.25, "expert": 0.25})
    assert counts == {"fresh": 8, "replay": 4, "expert": 4}
    replay = ReplayBuffer(100, seed=0)
    mixer = SourceMixer({"expert": trajs}, replay, seed=0)
    gen = torch.Generator().manual_seed(0)
    kw = dict(group_size=4, max_new_tokens=16, temperature=1.0, generator=gen, reward_kind="binary")
    sizes = []
    for i in range(2):
        m, fresh, parts, times = train_step(algo, policy, problems[2 * i : 2 * i + 2], mixer, replay, counts,
                                            version=i, **kw)
        sizes.append({k: len(v) for k, v in parts.items()})
        assert parts["fresh"] is fresh and {t.policy_version for t in fresh} == {i}
        assert all(t.ref_logp is not None for part in parts.values() for t in part)
        assert math.isfinite(m["loss/spo"]) and "rollout/entropy_per_token" in m
        assert set(times) == {"sample", "score_mix", "update"} and min(times.values()) > 0
    # the replay part is empty until the first fresh samples have joined the buffer
    assert sizes == [{"fresh": 8, "replay": 0, "expert": 4}, {"fresh": 8, "replay": 4, "expert": 4}]
    assert len(replay) == 16
    with pytest.raises(ValueError, match="fresh samples"):
        train_step(algo, policy, problems[:1], mixer, replay, counts, version=2, **kw)


def test_ppo_critic_learns(setup):
    _, tok, _, trajs = setup
    algo, _ = _algo("ppo", setup)
    head = algo.critic.head.weight.clone()
    algo.update(collate(trajs, tok.pad_token_id))
    assert not torch.equal(head, algo.critic.head.weight)


def test_trajectories_round_trip(setup, tmp_path):
    _, _, _, trajs = setup
    save_trajectories(tmp_path / "t.jsonl", trajs)
    back = load_trajectories(tmp_path / "t.jsonl")
    assert back == trajs
    t = Trajectory("p", [1, 2], [3], 1.0, True, "expert")
    assert t.behaviour_logp is None and t.policy_version == -1


@pytest.mark.parametrize("algo,mix", [("spo", "half_online"), ("ppo", "online"), ("grpo", "online"), ("rloo", "online")])
def test_rl_trainer_runs(algo, mix, smoke_q0, tmp_path):
    root = smoke_q0.parent
    cfg = rl_cfg(root, tmp_path, f"algo={algo}", f"data_mix={mix}", "updates=4", "eval_every=2", "ckpt_every=2")
    summary = rl.run(cfg)
    rows = read_metrics(tmp_path / "rl")
    steps = [r["step"] for r in rows if "rollout/reward" in r]
    assert steps == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val/pass@1" in r] == [0, 2, 4]
    fresh = 64 if mix == "online" else 32
    assert summary["data/fresh_samples"] == 4 * fresh
    assert (tmp_path / "rl" / "model" / "config.json").exists()
    if mix == "half_online":  # after the first update, half of each batch is replay
        assert [r["data/frac_replay"] for r in rows if "data/frac_replay" in r][1:] == [0.5] * 3


def test_rl_refuses_off_policy_mix_for_on_policy_algo(smoke_q0, tmp_path):
    cfg = rl_cfg(smoke_q0.parent, tmp_path, "algo=grpo", "data_mix=half_online")
    with pytest.raises(ConfigError, match="on-policy"):
        rl.run(cfg)


def test_q0_file(smoke_q0):
    d = json.loads((smoke_q0 / "q0.json").read_text())
    assert d["n_ref"] == 16 and len(d["successes"]) == 200
    assert all(0 <= s <= 16 for s in d["successes"].values())
    q = load_q0(smoke_q0 / "q0.json", 0.1, "squared", "plain")
    assert len(q) == 200


def test_rl_resumes_after_kill(smoke_q0, tmp_path):
    """PPO (critic and optimiser state included) killed after a checkpoint resumes where it was."""
    import sys

    from conftest import kill_after_checkpoint, rerun

    root = smoke_q0.parent
    out = tmp_path / "rl"
    cmd = [sys.executable, "-m", "spolab.rl", "scale=smoke", "algo=ppo", f"data_dir={root}/data",
           f"sft_dir={root}/sft/model", f"out_dir={out}", "tracking.uri=null", "updates=12", "ckpt_every=3",
           "eval_every=100"]
    kill_after_checkpoint(cmd, out, tmp_path)
    state = torch.load(sorted((out / "checkpoint").glob("step_*"))[-1] / "trainer_state.pt", weights_only=False)
    assert "critic" in state["algo"] and state["step"] % 3 == 0 and state["step"] < 12
    done = rerun(cmd, tmp_path)
    assert f"resuming from update {state['step']}" in done.stderr + done.stdout
    steps = [r["step"] for r in read_metrics(out) if "rollout/reward" in r]
    assert steps == list(range(1, 13))
    fresh = [r["data/fresh_samples"] for r in read_metrics(out) if "rollout/reward" in r]
    assert fresh == [64 * i for i in range(1, 13)]
