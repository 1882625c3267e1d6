"""Fault injection on checkpoints: a damaged newest checkpoint (truncated weights, garbage or truncated
trainer state, an optimizer moment rewritten so that it still loads) is caught by its sha256 manifest,
set aside as ``step_<n>.bad-<reason>`` with one warning line, and the run resumes from the checkpoint
before it (or starts clean) and ends exactly where an uninterrupted run does. A SIGTERM is logged and
ends the MLflow run KILLED."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import ONE_THREAD, rerun
from spolab.checkpoint import (
    MANIFEST_FILE,
    STATE_FILE,
    latest_checkpoint,
    remove_checkpoints,
    resume_point,
    save_checkpoint,
)
from spolab.config import load_config, run_identity
from spolab.models.build import load_model, load_tokenizer
from spolab.tracking import read_metrics, verify_mirror
from test_resume import _digest, _rows


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _rewrite_exp_avg(path: Path) -> None:
    """A damage that still loads: every Adam first moment of the trainer state doubled."""
    state = torch.load(path, weights_only=False)

    def walk(obj):
        if isinstance(obj, dict):
            return {k: (v * 2 if k == "exp_avg" and torch.is_tensor(v) else walk(v)) for k, v in obj.items()}
        return obj

    torch.save(walk(state), path)
    torch.load(path, weights_only=False)  # it does load


DAMAGES = {
    "truncated_weights": ("model.safetensors", _truncate),
    "garbage_state": (STATE_FILE, _garbage),
    "truncated_state": (STATE_FILE, _truncate),
    "exp_avg_rewritten": (STATE_FILE, _rewrite_exp_avg),
}


@pytest.fixture(scope="module")
def model_tok(smoke_sft):
    sft_dir, _ = smoke_sft
    return load_model(sft_dir / "model"), load_tokenizer(sft_dir / "model")


def _state(step: int) -> dict:
    return {"step": step, "algo": {"opt": {"state": {0: {"exp_avg": torch.ones(4), "exp_avg_sq": torch.ones(4)}}}}}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_set_aside(damage, model_tok, tmp_path, caplog):
    cfg = load_config("rl", ["scale=smoke"])
    ident = run_identity(cfg)
    for step in (3, 6):
        save_checkpoint(tmp_path, step, *model_tok, _state(step), ident)
    newest = tmp_path / "checkpoint" / "step_00000006"
    assert (newest / MANIFEST_FILE).exists()
    name, damage_fn = DAMAGES[damage]
    damage_fn(newest / name)
    with caplog.at_level(logging.WARNING, logger="spolab.checkpoint"):
        ck, step = resume_point(tmp_path, cfg)
    assert (ck.name, step) == ("step_00000003", 3)
    bad = tmp_path / "checkpoint" / "step_00000006.bad-checksum"
    assert bad.is_dir() and (bad / name).exists()  # renamed, not deleted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "step_00000006" in warnings[0] and name in warnings[0], warnings
    assert "step_00000006.bad-checksum" in warnings[0] and "resuming from step_00000003" in warnings[0]
    assert latest_checkpoint(tmp_path).name == "step_00000003"


def test_the_only_checkpoint_damaged_starts_clean(model_tok, tmp_path, caplog):
    cfg = load_config("rl", ["scale=smoke"])
    save_checkpoint(tmp_path, 3, *model_tok, _state(3), run_identity(cfg))
    _truncate(tmp_path / "checkpoint" / "step_00000003" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="spolab.checkpoint"):
        assert resume_point(tmp_path, cfg) == (None, None)
    assert "starting clean" in caplog.text
    assert [p.name for p in (tmp_path / "checkpoint").iterdir()] == ["step_00000003.bad-checksum"]
    remove_checkpoints(tmp_path)  # what a finished run does: the evidence stays
    assert [p.name for p in (tmp_path / "checkpoint").iterdir()] == ["step_00000003.bad-checksum"]


def test_a_checkpoint_without_manifest_must_load(model_tok, tmp_path):
    """A checkpoint written before manifests existed is resumed when it loads, set aside when not."""
    cfg = load_config("rl", ["scale=smoke"])
    for step in (3, 6):
        save_checkpoint(tmp_path, step, *model_tok, _state(step), run_identity(cfg))
        (tmp_path / "checkpoint" / f"step_{step:08d}" / MANIFEST_FILE).unlink()
    assert resume_point(tmp_path, cfg)[1] == 6
    _truncate(tmp_path / "checkpoint" / "step_00000006" / STATE_FILE)
    assert resume_point(tmp_path, cfg)[1] == 3
    assert (tmp_path / "checkpoint" / "step_00000006.bad-unloadable").is_dir()


def test_two_checkpoints_are_kept(model_tok, tmp_path):
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step, *model_tok, _state(step), "abc")
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["step_00000006", "step_00000009"]
    manifest = json.loads((tmp_path / "checkpoint" / "step_00000009" / MANIFEST_FILE).read_text())
    assert manifest["step"] == 9 and {"model.safetensors", STATE_FILE, "meta.json"} <= set(manifest["files"])


def test_sigterm_then_a_damaged_checkpoint_resumes_exactly(smoke_q0, tmp_path):
    """The RL entry point, end to end: SIGTERM it once its second checkpoint exists (its log says so, it
    exits 143 and its MLflow run ends KILLED), then rewrite the Adam moments of that checkpoint (it still
    loads). The rerun sets it aside with one warning, resumes from the checkpoint before it, and ends
    exactly where an uninterrupted run does, MLflow included."""
    smoke = smoke_q0.parent
    db = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "spolab.rl", "scale=smoke", "algo=spo", "data_mix=online", f"data_dir={smoke}/data",
            f"sft_dir={smoke}/sft/model", f"q0_path={smoke}/q0/q0.json", f"tracking.uri={db}",
            f"tracking.artifact_root={tmp_path}/art", "tracking.flush_every_s=0.2", "updates=8", "ckpt_every=3",
            "eval_every=4"]
    whole, hit = tmp_path / "whole", tmp_path / "hit"
    rerun([*args, f"out_dir={whole}"], tmp_path)

    proc = subprocess.Popen([*args, f"out_dir={hit}"], cwd=tmp_path, env=ONE_THREAD, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    newest = hit / "checkpoint" / "step_00000006"
    while not newest.exists():
        assert proc.poll() is None, "the run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate()
    assert proc.returncode == 143, log[-3000:]
    assert "received SIGTERM" in log and "Traceback" not in log, log[-3000:]
    first_id = (hit / "mlflow_run_id").read_text().split()[0]
    client = MlflowClient(db)
    assert client.get_run(first_id).info.status == "KILLED"

    _rewrite_exp_avg(newest / STATE_FILE)
    done = rerun([*args, f"out_dir={hit}"], tmp_path)
    out = done.stdout + done.stderr
    assert "damaged checkpoint" in out and "step_00000006.bad-checksum" in out, out[-3000:]
    assert "resuming from update 3" in out
    assert _rows(hit) == _rows(whole)
    assert _digest(hit / "model" / "model.safetensors") == _digest(whole / "model" / "model.safetensors")
    assert [p.name for p in (hit / "checkpoint").iterdir()] == ["step_00000006.bad-checksum"]
    assert verify_mirror(hit) == []
    final = client.get_run((hit / "mlflow_run_id").read_text().split()[0])
    assert final.info.status == "FINISHED" and final.info.run_id != first_id
    assert client.get_run(first_id).info.lifecycle_stage == "deleted"  # superseded: it held points past step 3
    assert [r["step"] for r in read_metrics(hit)] == [r["step"] for r in read_metrics(whole)]
