"""Runs across processes (spolab.dist, torchrun; docs/real_scale.md, "Across GPUs"), on the CPU with gloo: one
RL update at global batch B across 2 ranks is the one-process update at batch B (SPO, PPO); a killed 2-rank RL
run resumes to exactly the uninterrupted one; rank 0 alone writes, one metrics.jsonl and one MLflow run; 2-rank
SFT steps are the one-process steps; q0, sources and evaluate cover every problem once. Plus the one-process identities
of spolab.dist and the configurations it refuses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from omegaconf import OmegaConf

from conftest import rl_cfg, smoke_cfg
from spolab import dist
from spolab.errors import ConfigError
from spolab.validate import validate

ATOL = 1e-6  # fp32: the 2-rank update sums its gradients (and scores its rows) in another order than one process


# ---------------------------------------------------------------------------- one process: the identities


def test_one_process_helpers_are_the_identity():
    x = torch.arange(6.0)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.shard(x) is x and dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.all_reduce_mean(x) is x and dist.all_gather_cat(x) is x
    assert dist.all_gather_objects([1, 2]) == [1, 2] and dist.broadcast_object("a") == "a"
    assert dist.loss_share(7, 7) == 1.0 and dist.loss_share(3, 7) == 3 / 7  # a whole batch; a micro-batch of it
    assert dist.rank_seed(5) == 5 and dist.rank_seed(5, 1) != 5 and dist.rank_seed(5, 1) == dist.rank_seed(5, 1)


def test_validation_needs_equal_shares():
    def check(*overrides):
        validate(smoke_cfg("rl", "/tmp/unused", *overrides), "rl", check_paths=False)

    check("scale.world_size=2")  # 64 trajectories, 8 prompts of 8
    with pytest.raises(ConfigError, match=r"scale.world_size=3: must divide the 8 prompts each update samples"):
        check("scale.world_size=3")
    with pytest.raises(ConfigError, match=r"scale.world_size=4: must divide the 2 trajectories of each minibatch"):
        check("scale.world_size=4", "algo=ppo", "batch_size=16", "group_size=4", "algo.minibatches=8")


def test_launch_must_match_the_scale(monkeypatch):
    cfg = smoke_cfg("rl", "/tmp/unused", "scale.world_size=2")
    with pytest.raises(ConfigError, match=r"scale.world_size=2, but 1 process\(es\) were launched: launch it with "
                                          r"`torchrun --standalone --nproc_per_node=2"):
        dist.check_launch(cfg, "rl")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"set scale.world_size=2"):
        dist.check_launch(smoke_cfg("rl", "/tmp/unused"), "rl")
    fsdp = smoke_cfg("rl", "/tmp/unused", "scale.world_size=2", "scale.sharding=fsdp")
    with pytest.raises(ConfigError, match=r"scale.sharding='fsdp': sharded model state \(FSDP\) is not implemented"):
        dist.check_launch(fsdp, "rl")  # training needs it
    assert dist.check_launch(fsdp, "q0", trains=False) == 2  # sampling runs with whole copies (a warning)
    assert dist.check_launch(cfg, "rl") == 2


def test_an_entry_that_runs_in_one_process_refuses_torchrun(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "spolab.bench", "scale=smoke", f"out_dir={tmp_path}/bench"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "2 processes were launched, but spolab.bench runs in one" in done.stderr
    assert not (tmp_path / "bench").exists()


# ---------------------------------------------------------------------------- one update: 2 ranks = 1 process


def _update(rank: int, world: int, cfg: dict, batch_path: str, out: str, init: str) -> None:
    """One ``algo.update`` of the batch in ``batch_path`` on rank ``rank`` of ``world`` (gloo): the weights
    and metrics it ends with, in ``out/rank<r>.pt``."""
    from spolab.builder import build_rl_run
    from spolab.rollout.trajectories import collate, load_trajectories
    from spolab.utils import seed_everything

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        cfg = OmegaConf.create(cfg)
        seed_everything(cfg.seed)
        r = build_rl_run(cfg, torch.device("cpu"))
        batch = collate(load_trajectories(batch_path), r.tok.pad_token_id)

        def weights():  # every trained network's (the policy; PPO's critic)
            return {f"{i}.{k}": v.clone() for i, m in enumerate(r.algo.modules()) for k, v in m.state_dict().items()}

        before = weights()
        metrics = r.algo.update(batch)
        torch.save({"before": before, "weights": weights(), "metrics": metrics}, Path(out) / f"rank{rank}.pt")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _batch(cfg, path: Path) -> None:
    """A fresh batch of ``cfg.batch_size`` samples of the SFT policy, with π_ref's log-probs, saved."""
    from spolab.builder import build_rl_run
    from spolab.rollout.collect import attach_ref_logp, collect
    from spolab.rollout.trajectories import save_trajectories

    r = build_rl_run(cfg, torch.device("cpu"))
    fresh, _ = collect(r.policy, r.tok, r.prompts.take(cfg.batch_size // cfg.group_size), group_size=cfg.group_size,
                       max_new_tokens=cfg.task.max_new_tokens, generator=r.gen, task=r.task)
    attach_ref_logp(r.ref, fresh, r.tok.pad_token_id)
    assert len({t.reward for t in fresh}) > 1  # a real gradient: mixed rewards
    save_trajectories(path, fresh)


@pytest.mark.slow
@pytest.mark.parametrize("algo,micro", [("spo", None), ("ppo", None), ("ppo", 3)])
def test_a_two_rank_update_is_the_one_process_update(algo, micro, smoke_q0, tmp_path):
    """The same global batch of B = 16 (4 prompts x 4; PPO: 2 epochs of 2 minibatches of 8, 4 rows per rank),
    updated once in one process and once across 2 gloo ranks (with ``micro``: each rank's 4 rows in
    micro-batches of 3 and 1, gradients accumulated): the same weights (policy, PPO's critic) on both
    ranks, equal to the one-process weights within fp32 summation order (ATOL), and the same global metrics."""
    cfg = rl_cfg(smoke_q0.parent, tmp_path, f"algo={algo}", "batch_size=16", "group_size=4")
    _batch(cfg, tmp_path / "batch.jsonl")
    plain = OmegaConf.to_container(cfg, resolve=True)
    split = {**plain, "scale": {**plain["scale"], "micro_batch_size": micro}}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _update(0, 1, plain, str(tmp_path / "batch.jsonl"), str(tmp_path / "one"), "")
    torch.multiprocessing.spawn(_update, args=(2, split, str(tmp_path / "batch.jsonl"), str(tmp_path / "two"),
                                               str(tmp_path / "pg_init")), nprocs=2, join=True)
    one = torch.load(tmp_path / "one" / "rank0.pt")
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    assert one["weights"].keys() == r0["weights"].keys()
    moved = 0
    for k, w in one["weights"].items():
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k  # the ranks step the same all-reduced gradient
        torch.testing.assert_close(r0["weights"][k], w, atol=ATOL, rtol=0, msg=k)
        moved += int(not torch.equal(w, one["before"][k]))
    assert moved > 0  # the update changed the weights
    assert r0["metrics"] == r1["metrics"]
    exact = ["opt/grad_norm"] + {"spo": ["loss/spo", "spo/q0", "spo/log_ratio", "spo/abs_residual"],
                                 "ppo": ["critic/grad_norm", "critic/value_mean", "ppo/kl_reward"]}[algo]
    for k in exact:
        assert r0["metrics"][k] == pytest.approx(one["metrics"][k], rel=1e-4, abs=1e-6), k


# ---------------------------------------------------------------------------- a whole run under torchrun


def _torchrun_cmd(smoke: Path, tmp: Path, out: Path) -> list[str]:
    """A 2-rank smoke SPO run, half online (replay, a stale behaviour policy, the mixer: every piece of state a
    checkpoint carries), 3 updates of 16 (2 prompts x 4 fresh, one per rank), a checkpoint after each."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "spolab.rl", "scale=smoke", "scale.world_size=2", "algo=spo", "data_mix=half_online",
            "data_mix.sync_every=2", "batch_size=16", "group_size=4", "updates=3", "ckpt_every=1", "eval_every=3",
            "val_problems=5", "val_protocol.n=2", "val_protocol.ks=[1]",
            f"data_dir={smoke}/data", f"sft_dir={smoke}/sft/model", f"q0_path={smoke}/q0/q0.json",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_root={tmp}/art",
            "tracking.flush_every_s=0.2", f"out_dir={out}"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_rank_run(smoke_q0, tmp_path_factory):
    """The uninterrupted 2-rank run: (its folder, the folder of its MLflow database, the torchrun output)."""
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "whole"
    done = _run(_torchrun_cmd(smoke_q0.parent, tmp, out), tmp)
    return out, tmp, done.stdout + done.stderr


def _rows(run_dir: Path) -> list[dict]:
    from spolab.tracking import read_metrics

    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in read_metrics(run_dir)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_run(two_rank_run, smoke_q0, tmp_path):
    whole, _, _ = two_rank_run
    killed = tmp_path / "killed"
    cmd = _torchrun_cmd(smoke_q0.parent, tmp_path, killed)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list((killed / "checkpoint").glob("step_*")):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            time.sleep(0.02)
    finally:  # SIGKILL the ranks (torchrun starts each in its own session) and torchrun: a machine that dies
        launcher = psutil.Process(proc.pid)
        for p in [*launcher.children(recursive=True), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()
    step = int(sorted((killed / "checkpoint").glob("step_*"))[-1].name.split("_")[1])
    assert step in (1, 2)
    done = _run(cmd, tmp_path)
    assert f"resuming from update {step}" in done.stdout + done.stderr
    assert _rows(killed) == _rows(whole)
    assert _digest(killed / "model" / "model.safetensors") == _digest(whole / "model" / "model.safetensors")
    assert _digest(killed / "trajectories.jsonl") == _digest(whole / "trajectories.jsonl")
    assert not (killed / "checkpoint").exists()


@pytest.mark.slow
def test_a_two_rank_run_logs_one_mlflow_run(two_rank_run):
    """Rank 0 alone tracks: one metrics.jsonl with one row per logged step (not one per rank), mirrored by exactly
    one MLflow run; the global batch of every update (8 fresh trajectories, and 8 replayed from update 2 on) and
    the validation's 5 problems (3 on rank 0, 2 on rank 1) are the ranks' together."""
    from mlflow import MlflowClient

    from spolab.tracking import read_metrics, verify_mirror

    out, tmp, log = two_rank_run
    rows = read_metrics(out)
    steps = [r["step"] for r in rows if "rollout/reward" in r]
    assert steps == [1, 2, 3]
    assert [r["data/batch_size"] for r in rows if "data/batch_size" in r] == [8, 16, 16]  # no replay before update 1
    assert [r["data/fresh_samples"] for r in rows if "rollout/reward" in r] == [8, 16, 24]
    assert [r["val/n_problems"] for r in rows if "val/n_problems" in r] == [5, 5]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert verify_mirror(out, client) == []
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".log") == ["rl.log"]  # rank 0's Hydra log only
    assert "2 processes" in (out / "rl.log").read_text()


# ---------------------------------------------------------------------------- the other data-parallel entries


def _torchrun(entry: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            f"spolab.{entry}", "scale=smoke", "scale.world_size=2", *overrides]


def _one_mlflow_run(tmp: Path, status: str = "FINISHED") -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == [status]


SFT_ATOL = 1e-5  # SFT's steps are 100x RL's first ones (lr 1e-3, 2e-3): Adam divides each gradient coordinate by
# its own scale, so on a coordinate whose gradient is near 0 an fp32 rounding difference becomes ~1e-6 of weight


@pytest.mark.slow
def test_two_rank_sft_steps_are_the_one_process_steps(smoke_data, tmp_path):
    """SFT from scratch, 2 steps of 750 problems: across 2 gloo ranks (375 rows each, each rank's loss weighted by
    its share of the batch's response tokens) the same weights as in one process, within fp32 summation order
    (SFT_ATOL), and the same loss and gradient norm at each step."""
    from spolab.models.build import load_model
    from spolab.tracking import read_metrics

    args = ["sft.epochs=1", "sft.batch_size=750", "sft.log_every=1", "val_problems=4", f"data_dir={smoke_data}",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art"]
    _run([sys.executable, "-m", "spolab.sft", "scale=smoke", *args, f"out_dir={tmp_path}/one"], tmp_path)
    (tmp_path / "mlflow.db").unlink()
    _run(_torchrun("sft", *args, f"out_dir={tmp_path}/two"), tmp_path)
    one, two = (load_model(tmp_path / w / "model").state_dict() for w in ("one", "two"))
    for k, w in one.items():
        torch.testing.assert_close(two[k], w, atol=SFT_ATOL, rtol=0, msg=k)
    for key in ("loss/sft", "opt/grad_norm"):
        one_, two_ = ([r[key] for r in read_metrics(tmp_path / w) if key in r] for w in ("one", "two"))
        assert len(one_) == 2 and two_ == pytest.approx(one_, rel=1e-5), key
    _one_mlflow_run(tmp_path)


@pytest.mark.slow
def test_two_rank_q0_and_evaluate_cover_every_problem_once(smoke_sft, smoke_data, tmp_path):
    """q0 and evaluate across 2 ranks: each rank samples its share of the problems; rank 0 writes every
    prompt's counts and every sample once, and one MLflow run per output."""
    import json

    track = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art"]
    sft = smoke_sft[0] / "model"
    _run(_torchrun("q0", "n_ref=2", f"data_dir={smoke_data}", f"sft_dir={sft}", f"out_dir={tmp_path}/q0", *track),
         tmp_path)
    q0 = json.loads((tmp_path / "q0" / "q0.json").read_text())
    rl_ids = [json.loads(line)["id"] for line in (smoke_data / "rl.jsonl").read_text().splitlines()]
    assert sorted(q0["successes"]) == sorted(rl_ids) and set(q0["successes"].values()) <= {0, 1, 2}
    assert all(len(v) == 2 for v in q0["rewards"].values())
    assert len((tmp_path / "q0" / "ref_samples.jsonl").read_text().splitlines()) == 2 * len(rl_ids)
    _one_mlflow_run(tmp_path)
    (tmp_path / "mlflow.db").unlink()

    _run(_torchrun("evaluate", "name=sft", "splits=[ood]", "protocols=[policy]", "n_problems.ood=5",
                   f"data_dir={smoke_data}", f"model_dir={sft}", f"ref_model_dir={sft}",
                   f"out_dir={tmp_path}/eval", *track), tmp_path)
    pair = tmp_path / "eval" / "ood-policy"
    samples = [json.loads(line) for line in (pair / "samples.jsonl").read_text().splitlines()]
    ood_ids = [json.loads(line)["id"] for line in (smoke_data / "ood.jsonl").read_text().splitlines()][:5]
    assert [s["problem_id"] for s in samples] == [i for i in ood_ids for _ in range(20)]  # n 20, in problem order
    assert json.loads((pair / "eval.json").read_text())["ood/n_problems"] == 5
    assert (tmp_path / "eval" / "summary.json").exists()
    _one_mlflow_run(tmp_path)


@pytest.mark.slow
def test_two_rank_sources_build_every_pool_in_problem_order(smoke_sft, smoke_data, tmp_path):
    """sources across 2 ranks: each rank builds every pool for its share of the prompts; rank 0 writes each
    pool once, in problem order, with π_ref's log-probs, and one MLflow run. The expert pool (the dataset's
    programs, no sampling) is the one-process pool record for record (π_ref's log-probs within 1e-5)."""
    import json

    track = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art"]
    common = ["problems=6", "other_policy.per_problem=2", "decoding.restarts=2", "expert.per_problem=2",
              "random.per_problem=2", f"data_dir={smoke_data}", f"sft_dir={smoke_sft[0] / 'model'}"]
    _run(_torchrun("sources", *common, f"out_dir={tmp_path}/two", *track), tmp_path)
    _one_mlflow_run(tmp_path)
    one = subprocess.run([sys.executable, "-m", "spolab.sources", "scale=smoke", *common, f"out_dir={tmp_path}/one",
                          "tracking.uri=null"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=1800)
    assert one.returncode == 0, one.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in (smoke_data / "rl.jsonl").read_text().splitlines()][:6]

    def pool(run: str, name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / f"{name}.jsonl").read_text().splitlines()]

    for name in ("expert", "other_policy", "decoding", "random"):
        got = pool("two", name)
        order = [t["problem_id"] for t in got]
        assert sorted(set(order)) == sorted(ids) and order == sorted(order, key=ids.index), name  # problem order
        assert all(len(t["ref_logp"]) == len(t["response_ids"]) for t in got), name
        assert len(got) == len(pool("one", name)), name
    two, one = pool("two", "expert"), pool("one", "expert")
    assert [{k: v for k, v in t.items() if k != "ref_logp"} for t in two] == \
        [{k: v for k, v in t.items() if k != "ref_logp"} for t in one]
    for a, b in zip(two, one):  # π_ref scored them in other batches: equal up to fp32 summation order
        assert a["ref_logp"] == pytest.approx(b["ref_logp"], abs=1e-5)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())  # the run's summary: sources/<pool>/<stat>
    assert {k.split("/")[1] for k in summary if k.startswith("sources/")} == {"expert", "other_policy", "decoding",
                                                                               "random"}
