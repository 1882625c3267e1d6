"""Update steps on the real tiny model, the registry, data-mix rules and the RL trainer."""

import copy
import json
import math

import pytest
import torch

from conftest import rl_cfg
from spolab import rl
from spolab.algos import ALGORITHMS, ConfigError, get_algorithm
from spolab.config import load_config
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.trajectories import Trajectory, collate, load_trajectories, save_trajectories
from spolab.tracking import read_metrics


def test_registry():
    assert set(ALGORITHMS) == {"spo", "ppo", "grpo", "rloo"}
    with pytest.raises(ConfigError, match=r"valid: \['grpo', 'ppo', 'rloo', 'spo'\]"):
        get_algorithm("dpo")


def test_data_mix_rules():
    for algo in ("ppo", "grpo", "rloo"):
        mix = load_config("rl", ["data_mix=half_online"]).data_mix
        with pytest.raises(ConfigError, match=f"algo={algo} is on-policy.*data_mix=half_online"):
            rl.check_data_mix(get_algorithm(algo), mix)
    assert rl.check_data_mix(get_algorithm("spo"), load_config("rl", ["data_mix=half_online"]).data_mix) == (
        10, {"replay": 0.5})
    bad = load_config("rl", ["data_mix=half_online", "data_mix.fresh_fraction=0.7"]).data_mix
    with pytest.raises(ConfigError, match="sum to 1"):
        rl.check_data_mix(get_algorithm("spo"), bad)


@pytest.fixture(scope="module")
def setup(smoke_sft, smoke_data):
    from spolab.data import load_split

    out, _ = smoke_sft
    tok = load_tokenizer(out / "model")
    ref = load_model(out / "model").eval().requires_grad_(False)
    problems = load_split(smoke_data, "rl")[:4]
    trajs, _ = collect(ref, tok, problems, group_size=4, max_new_tokens=16, generator=torch.Generator().manual_seed(0))
    attach_ref_logp(ref, trajs, tok.pad_token_id)
    for i, t in enumerate(trajs):  # rewards with signal in every group
        t.reward = float(i % 2)
    return out / "model", tok, ref, trajs


def _algo(name, setup, **over):
    path, tok, ref, trajs = setup
    cfg = load_config("rl", [f"algo={name}", "group_size=4"]).algo
    for k, v in over.items():
        cfg[k] = v
    policy = load_model(path)
    q0 = {t.problem_id: 0.3 for t in trajs}
    return get_algorithm(name)(cfg, policy, ref, tok, q0=q0, seed=0, init_path=str(path)), policy


@pytest.mark.parametrize("name", ["spo", "ppo", "grpo", "rloo"])
def test_update_changes_the_policy(name, setup):
    _, tok, _, trajs = setup
    algo, policy = _algo(name, setup)
    before = copy.deepcopy(policy.state_dict())
    m = algo.update(collate(trajs, tok.pad_token_id))
    assert all(math.isfinite(v) for v in m.values())
    assert m["opt/grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


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
    q = rl.load_q0(smoke_q0 / "q0.json", 0.1, "squared", "plain")
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
    kill_after_checkpoint(cmd, out, tmp_path, timeout=180)
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert "critic" in state["algo"] and state["step"] % 3 == 0 and state["step"] < 12
    done = rerun(cmd, tmp_path)
    assert f"resuming from update {state['step']}" in done.stderr + done.stdout
    steps = [r["step"] for r in read_metrics(out) if "rollout/reward" in r]
    assert steps == list(range(1, 13))
    fresh = [r["data/fresh_samples"] for r in read_metrics(out) if "rollout/reward" in r]
    assert fresh == [64 * i for i in range(1, 13)]
