"""A run is its config, and resuming it is exact: kill/resume equals an uninterrupted run
bit for bit for every kind of data mix; checkpoints are atomic; a full disk is named and leaves
nothing partial; a rerun with another config is a new run, never a merge."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import kill_after_checkpoint, rerun, rl_cfg
from spolab import rl
from spolab.checkpoint import latest_checkpoint, resume_point, save_checkpoint
from spolab.config import run_identity
from spolab.errors import OperationalError
from spolab.models.build import load_model, load_tokenizer
from spolab.tracking import read_metrics, verify_mirror


def _rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without what legitimately differs between two runs of one config: times."""
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in read_metrics(run_dir)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (algo, data mix, extra overrides): online, a stale behaviour policy whose sync does not line up
# with the checkpoints (ckpt_every 3, sync_every 2), a stored source, and PPO with its critic.
CASES = {
    "spo-online": ["algo=spo", "data_mix=online"],
    "spo-half_online": ["algo=spo", "data_mix=half_online", "data_mix.sync_every=2"],
    "spo-expert": ["algo=spo", "data_mix=expert"],
    "ppo-online": ["algo=ppo", "data_mix=online"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kill_and_resume_equals_uninterrupted(case, smoke_q0, smoke_pools, tmp_path):
    pools, smoke = smoke_pools[0], smoke_q0.parent
    args = [sys.executable, "-m", "spolab.rl", "scale=smoke", *CASES[case], f"data_dir={smoke}/data",
            f"sft_dir={smoke}/sft/model", f"q0_path={smoke}/q0/q0.json", f"sources_dir={pools}",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art",
            "tracking.flush_every_s=0.2", "updates=8", "ckpt_every=3", "eval_every=4"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    rerun([*args, f"out_dir={whole}"], tmp_path)
    step = kill_after_checkpoint([*args, f"out_dir={killed}"], killed, tmp_path)
    assert step in (3, 6)
    done = rerun([*args, f"out_dir={killed}"], tmp_path)
    assert f"resuming from update {step}" in done.stdout + done.stderr
    assert _rows(killed) == _rows(whole)
    assert _digest(killed / "model" / "model.safetensors") == _digest(whole / "model" / "model.safetensors")
    assert _digest(killed / "trajectories.jsonl") == _digest(whole / "trajectories.jsonl")
    assert not (killed / "checkpoint").exists()
    assert verify_mirror(killed) == [] and verify_mirror(whole) == []  # MLflow lost nothing, holds nothing twice
    rewards = [r["rollout/reward"] for r in read_metrics(whole) if "rollout/reward" in r]
    assert len(rewards) == 8 and any(r > 0 for r in rewards), rewards  # the resumed updates learned something


def test_checkpoints_are_atomic(smoke_sft, tmp_path):
    """A half-written checkpoint (killed mid-write) is never resumed from, and writing the next one
    never removes the previous one before the new one is complete."""
    sft_dir, _ = smoke_sft
    model, tok = load_model(sft_dir / "model"), load_tokenizer(sft_dir / "model")
    save_checkpoint(tmp_path, 3, model, tok, {"step": 3}, "abc")
    partial = tmp_path / "checkpoint" / ".tmp_step_00000006"
    partial.mkdir()
    (partial / "config.json").write_text("{")  # what a kill during the next save leaves behind
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    save_checkpoint(tmp_path, 6, model, tok, {"step": 6}, "abc")
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["step_00000003", "step_00000006"]
    meta = json.loads((tmp_path / "checkpoint" / "step_00000006" / "meta.json").read_text())
    assert meta == {"step": 6, "identity": "abc"}


def test_full_disk_names_enospc_and_leaves_nothing_partial(smoke_sft, tmpfs):
    sft_dir, _ = smoke_sft
    model, tok = load_model(sft_dir / "model"), load_tokenizer(sft_dir / "model")
    run_dir = tmpfs.path / "run"
    save_checkpoint(run_dir, 3, model, tok, {"step": 3}, "abc")  # fits
    filler = tmpfs.path / "filler"
    with open(filler, "wb") as f:  # fill the disk, leaving less than one checkpoint
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    with pytest.raises(OperationalError, match=r"no space left on device \(ENOSPC\).*previous checkpoint is intact"):
        save_checkpoint(run_dir, 6, model, tok, {"step": 6, "big": torch.zeros(2**20)}, "abc")
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["step_00000003"]
    assert latest_checkpoint(run_dir).name == "step_00000003"


def test_a_rerun_is_its_config(smoke_q0, tmp_path):
    """Rerunning a finished run starts clean (no duplicated rows); rerunning it with another lr is a
    new MLflow run whose params are the new config's, and the folder's old run is superseded."""
    root = smoke_q0.parent
    first = rl.run(rl_cfg(root, tmp_path, "algo=rloo", "updates=2", "eval_every=2", "ckpt_every=1"))
    out = tmp_path / "rl"
    rows = read_metrics(out)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    id1 = (out / "mlflow_run_id").read_text().split()[0]
    again = rl.run(rl_cfg(root, tmp_path, "algo=rloo", "updates=2", "eval_every=2", "ckpt_every=1"))
    assert again == first | {k: v for k, v in again.items() if k.startswith("perf/")}
    assert [r["step"] for r in read_metrics(out)] == [r["step"] for r in rows]  # not appended
    edited = rl_cfg(root, tmp_path, "algo=rloo", "algo.lr=3e-5", "updates=2", "eval_every=2", "ckpt_every=1")
    rl.run(edited)
    id3 = (out / "mlflow_run_id").read_text().split()[0]
    run = client.get_run(id3)
    assert run.data.params["algo.lr"] == "3e-05" and run.data.tags["config_hash"] == run_identity(edited)
    assert client.get_run(id1).info.lifecycle_stage == "deleted"
    assert [r["step"] for r in read_metrics(out)] == [r["step"] for r in rows]
    assert verify_mirror(out, client) == []
    live = client.search_runs([run.info.experiment_id], filter_string=f"tags.run_dir = '{out.resolve()}'")
    assert [r.info.run_id for r in live] == [id3]


def test_resume_point_ignores_another_configs_checkpoint(smoke_sft, tmp_path):
    from spolab.config import load_config

    sft_dir, _ = smoke_sft
    cfg = load_config("rl", ["scale=smoke"])
    other = load_config("rl", ["scale=smoke", "algo.lr=1e-3"])
    save_checkpoint(tmp_path, 3, load_model(sft_dir / "model"), load_tokenizer(sft_dir / "model"), {}, run_identity(cfg))
    assert resume_point(tmp_path, cfg)[1] == 3
    assert resume_point(tmp_path, other) == (None, None)
    assert not (tmp_path / "checkpoint").exists()  # another config's checkpoint is removed
