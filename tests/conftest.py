"""Shared fixtures: a smoke-scale dataset and SFT model, built once per test session."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from spolab.config import load_config


def smoke_cfg(name: str, tmp, *overrides: str):
    """A config composed exactly as ``python -m spolab.<name> scale=smoke`` would, writing to tmp."""
    tracking = [] if name == "data" else [f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                                          f"tracking.artifact_root={tmp}/mlartifacts"]
    return load_config(name, ["scale=smoke", *tracking, *overrides])


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    from spolab import data

    root = tmp_path_factory.mktemp("smoke")
    cfg = smoke_cfg("data", root, f"out_dir={root}/data")
    data.run(cfg)
    return root / "data"


@pytest.fixture(scope="session")
def smoke_sft(smoke_data):
    from spolab import sft

    root = smoke_data.parent
    cfg = smoke_cfg("sft", root, f"data_dir={smoke_data}", f"out_dir={root}/sft")
    summary = sft.run(cfg)
    return root / "sft", summary


@pytest.fixture(scope="session")
def smoke_q0(smoke_sft, smoke_data):
    from spolab import q0

    root = smoke_data.parent
    cfg = smoke_cfg("q0", root, f"data_dir={smoke_data}", f"sft_dir={root}/sft/model", f"out_dir={root}/q0")
    q0.run(cfg)
    return root / "q0"


def rl_cfg(root, tmp, *overrides):
    """An RL config on the session's smoke data, SFT model and Q̂0, writing under tmp."""
    return smoke_cfg("rl", tmp, f"data_dir={root}/data", f"sft_dir={root}/sft/model", f"q0_path={root}/q0/q0.json",
                     f"out_dir={tmp}/rl", *overrides)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def kill_after_checkpoint(cmd: list[str], out, cwd, timeout: float, settle: float = 0.0) -> None:
    """Start an entry point, SIGKILL it once ``out/checkpoint`` holds a trainer state."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (out / "checkpoint" / "trainer_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before writing a checkpoint"
        time.sleep(0.05)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def rerun(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    """The same command again, to completion; it must succeed."""
    done = subprocess.run(cmd, cwd=cwd, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
