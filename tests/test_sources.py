"""Off-policy sources (docs/design.md §5): pools, exact mixing, provenance, the earlier-run edge,
on-policy refusal, and offline SPO on expert data."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import rl_cfg
from spolab import rl
from spolab.algos import ConfigError, get_algorithm
from spolab.config import load_config
from spolab.jsonl import read_jsonl
from spolab.models.build import load_model, load_tokenizer
from spolab.rollout.mix import check_data_mix, load_pools
from spolab.rollout.offpolicy import POOL_SOURCES, SourceMixer, allocate, decoding_trajectories
from spolab.rollout.trajectories import ReplayBuffer, Trajectory, load_trajectories, save_trajectories
from spolab.tasks import listdsl as dsl
from spolab.tasks.io import load_split


@pytest.mark.parametrize("batch,fresh,shares", [
    (64, 0.5, {"expert": 0.5}), (64, 0.5, {"expert": 0.25, "random": 0.25}), (64, 0.0, {"expert": 1.0}),
    (10, 1 / 3, {"expert": 1 / 3, "random": 1 / 3}), (7, 0.5, {"decoding": 0.3, "random": 0.2}),
])
def test_allocate_is_exact(batch, fresh, shares):
    counts = allocate(batch, fresh, shares)
    assert sum(counts.values()) == batch
    want = {"fresh": fresh, **shares}
    for k, n in counts.items():  # every count is the floor or the ceiling of its exact share
        assert abs(n - want[k] * batch) < 1
    assert allocate(64, 0.5, {"expert": 0.25, "random": 0.25}) == {"fresh": 32, "expert": 16, "random": 16}


def test_mixer_draws_exact_counts_from_each_pool():
    pools = {src: [Trajectory(f"{src}-{i}", [1], [2], float(i % 2), bool(i % 2), src) for i in range(50)]
             for src in ("expert", "random")}
    replay = ReplayBuffer(100, seed=0)
    replay.add([Trajectory(f"r{i}", [1], [2], 0.0, False, "online") for i in range(20)])
    mixer = SourceMixer(pools, replay, seed=0)
    counts = {"fresh": 8, "expert": 5, "random": 2, "replay": 1}
    for _ in range(20):
        out = mixer.draw(counts)
        assert {k: len(v) for k, v in out.items()} == {"expert": 5, "random": 2, "replay": 1}
        assert all(t.source == k for k, v in out.items() if k != "replay" for t in v)
    with pytest.raises(ValueError, match="no trajectories"):
        SourceMixer({"expert": []}, replay, seed=0)


def test_data_mix_configs_validate():
    spo = get_algorithm("spo")
    for mix in ("online", "half_online", "expert", "earlier_run", "other_policy", "decoding", "random", "offline_only"):
        cfg = load_config("rl", [f"data_mix={mix}"]).data_mix
        sync, sources = check_data_mix(spo, cfg)
        assert abs(cfg.fresh_fraction + sum(sources.values()) - 1) < 1e-9
    bad = load_config("rl", ["data_mix=offline_only", "data_mix.sources.expert=0", "+data_mix.sources.replay=1.0"]).data_mix
    with pytest.raises(ConfigError, match="replay stores the run's own fresh samples"):
        check_data_mix(spo, bad)
    unknown = load_config("rl", ["data_mix=expert", "data_mix.sources.expert=0", "+data_mix.sources.experts=0.5"]).data_mix
    with pytest.raises(ConfigError, match=r"unknown source\(s\) \['experts'\]"):
        check_data_mix(spo, unknown)


@pytest.mark.parametrize("mix", ["expert", "offline_only", "random", "decoding", "other_policy"])
@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo"])
def test_on_policy_algorithms_refuse_off_policy_mixes(algo, mix, tmp_path):
    """Through the entry point: exit status 2 and a message naming the data_mix option, no stack trace."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "spolab.rl", f"algo={algo}", f"data_mix={mix}", "scale=smoke",
                          f"out_dir={tmp_path}", "tracking.uri=null"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert f"algo={algo} is on-policy but data_mix={mix}" in res.stderr + res.stdout
    assert "data_mix.fresh_fraction" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


@pytest.fixture
def pools(smoke_pools):
    return smoke_pools


def test_pools_have_provenance_and_round_trip(pools, smoke_data):
    out, summary = pools
    problems = {p.id: p for p in load_split(smoke_data, "rl")}
    assert summary["expert"]["success"] == 1.0  # every expert program passes its tests
    assert summary["random"]["success"] < 0.2
    for src in POOL_SOURCES:
        trajs = load_trajectories(out / f"{src}.jsonl")
        assert trajs and all(t.source == src and t.ref_logp is not None for t in trajs)
        assert all(len(t.ref_logp) == len(t.response_ids) for t in trajs)
        save_trajectories(out / "again.jsonl", trajs)
        assert load_trajectories(out / "again.jsonl") == trajs  # exact round trip
        known = src == "other_policy"
        assert all((t.behaviour_logp is not None) == known for t in trajs)
        assert all((t.policy_version == 0) == (src in ("other_policy", "decoding")) for t in trajs)
    expert = load_trajectories(out / "expert.jsonl")
    tok = load_tokenizer(smoke_data.parent / "sft" / "model")
    for t in expert[:20]:  # the response decodes to a program that solves its problem
        program = tok.decode([i for i in t.response_ids if i != tok.eos_token_id])
        assert dsl.execute(program, problems[t.problem_id].all_tests()).success
    assert expert[0].response_ids[-1] == tok.eos_token_id


def test_decoding_is_greedy_with_distinct_restarts(smoke_sft, smoke_data):
    path, _ = smoke_sft
    tok, model = load_tokenizer(path / "model"), load_model(path / "model").eval()
    problems = load_split(smoke_data, "rl")[:3]
    a = decoding_trajectories(model, tok, problems, restarts=3, max_new_tokens=16)
    b = decoding_trajectories(model, tok, problems, restarts=3, max_new_tokens=16)
    assert [t.response_ids for t in a] == [t.response_ids for t in b]  # deterministic
    for i in range(0, 9, 3):  # the 3 restarts of a prompt start with 3 different tokens
        assert len({a[i + j].response_ids[0] for j in range(3)}) == 3
    # the first restart is the plain greedy continuation: each token is the argmax given the prefix
    t = a[0]
    with torch.no_grad():
        ids = torch.tensor([t.prompt_ids + t.response_ids])
        logits = model(input_ids=ids).logits[0, len(t.prompt_ids) - 1 : -1]
    assert logits.argmax(-1).tolist() == t.response_ids


def test_mix_proportions_hold_in_training(pools, smoke_q0, tmp_path):
    out, _ = pools
    mix = ["data_mix.sources.replay=0.125", "+data_mix.sources.expert=0.25", "+data_mix.sources.random=0.125"]
    cfg = rl_cfg(smoke_q0.parent, tmp_path, "algo=spo", "data_mix=half_online", *mix, "data_mix.sync_every=1",
                 f"sources_dir={out}", "updates=3", "eval_every=3", "ckpt_every=3")
    rl.run(cfg)
    rows = [r for r in read_jsonl(tmp_path / "rl" / "metrics.jsonl") if "data/frac_fresh" in r]
    assert len(rows) == 3
    for r in rows[1:]:  # replay is empty before the first update
        assert (r["data/frac_fresh"], r["data/frac_expert"], r["data/frac_random"], r["data/frac_replay"]) == (
            0.5, 0.25, 0.125, 0.125)
        assert r["data/reward_expert"] == 1.0 and r["data/batch_size"] == 64
    assert rows[0]["data/frac_replay"] == 0.0


def test_earlier_run_dump_and_load(pools, smoke_q0, tmp_path):
    """A PPO run dumps its last trajectories; an SPO run reads them back as the earlier_run source."""
    root = smoke_q0.parent
    ppo = rl_cfg(root, tmp_path / "ppo", "algo=ppo", "updates=2", "eval_every=2", "ckpt_every=2",
                 "replay_capacity=100", f"out_dir={tmp_path}/ppo")
    rl.run(ppo)
    dump = load_trajectories(tmp_path / "ppo" / "trajectories.jsonl")
    assert len(dump) == 100 and {t.source for t in dump} == {"online"}
    assert {t.policy_version for t in dump} == {0, 1}  # the last 100 of 2 × 64 fresh samples
    assert all(t.behaviour_logp is not None and t.ref_logp is not None for t in dump)
    spo = rl_cfg(root, tmp_path / "spo", "algo=spo", "data_mix=earlier_run", "updates=2", "eval_every=2",
                 "ckpt_every=2", f"earlier_run_path={tmp_path}/ppo/trajectories.jsonl", f"out_dir={tmp_path}/spo")
    pools_ = load_pools(spo, {"earlier_run": 0.5})
    assert [t.response_ids for t in pools_["earlier_run"]] == [t.response_ids for t in dump]
    assert {t.source for t in pools_["earlier_run"]} == {"earlier_run"}
    rl.run(spo)
    rows = [r for r in read_jsonl(tmp_path / "spo" / "metrics.jsonl") if "data/frac_earlier_run" in r]
    assert [r["data/frac_earlier_run"] for r in rows] == [0.5, 0.5]
    missing = rl_cfg(root, tmp_path / "x", "algo=spo", "data_mix=earlier_run", f"earlier_run_path={tmp_path}/none.jsonl")
    with pytest.raises(FileNotFoundError, match="earlier_run.*run the study's PPO run first"):
        rl.run(missing)


def test_truncated_is_weights_only_where_behaviour_is_known(pools, smoke_q0, tmp_path):
    out, _ = pools
    cfg = rl_cfg(smoke_q0.parent, tmp_path, "algo=spo", "data_mix=expert", "algo.is_weights=truncated",
                 "algo.is_clip=1.5", f"sources_dir={out}", "updates=2", "eval_every=2", "ckpt_every=2")
    rl.run(cfg)
    rows = [r for r in read_jsonl(tmp_path / "rl" / "metrics.jsonl") if "spo/is_weight" in r]
    # fresh samples of the current policy have weight 1 (π_θ = μ), expert ones have no μ: weight 1
    assert rows and all(abs(r["spo/is_weight"] - 1.0) < 1e-4 for r in rows)


def test_offline_only_spo_trains_on_stored_data_alone(pools, smoke_q0, tmp_path):
    """No fresh samples at all: every batch is expert data, and the policy moves toward it
    (the val pass@1 check needs a stronger SFT policy: tests/test_slow.py)."""
    out, _ = pools
    cfg = rl_cfg(smoke_q0.parent, tmp_path, "algo=spo", "data_mix=offline_only", f"sources_dir={out}",
                 "updates=6", "eval_every=6", "ckpt_every=6", "algo.lr=1e-3")
    summary = rl.run(cfg)
    rows = [r for r in read_jsonl(tmp_path / "rl" / "metrics.jsonl") if "data/frac_expert" in r]
    assert summary["data/fresh_samples"] == 0 and len(rows) == 6
    assert all(r["data/frac_expert"] == 1.0 and r["data/frac_fresh"] == 0.0 for r in rows)
    assert all("rollout/reward" not in r for r in rows)  # nothing was sampled
    assert rows[-1]["spo/log_ratio"] > rows[0]["spo/log_ratio"]  # expert sequences gain mass over π_ref
    assert json.loads((tmp_path / "rl" / "summary.json").read_text())["data/frac_expert"] == 1.0
