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


@pytest.fixture(scope="session")
def smoke_pools(smoke_q0, tmp_path_factory):
    """The stored off-policy pools of the smoke SFT model, built by the entry point: (folder, summary)."""
    from spolab import sources

    root = smoke_q0.parent
    out = tmp_path_factory.mktemp("sources")
    cfg = smoke_cfg("sources", out, f"data_dir={root}/data", f"sft_dir={root}/sft/model", f"out_dir={out}")
    return out, sources.run(cfg)


def rl_cfg(root, tmp, *overrides):
    """An RL config on the session's smoke data, SFT model and Q̂0, writing under tmp."""
    return smoke_cfg("rl", tmp, f"data_dir={root}/data", f"sft_dir={root}/sft/model", f"q0_path={root}/q0/q0.json",
                     f"out_dir={tmp}/rl", *overrides)


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mount (4 MiB) to inject full-disk and read-only faults; skipped where mounting is
    not permitted (it needs root, as on the project's machines). ``remount(ro=True)`` flips it."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")

    class Mount:
        path = point

        @staticmethod
        def remount(ro: bool) -> None:
            subprocess.run(["mount", "-o", f"remount,{'ro' if ro else 'rw'}", str(point)], check=True)

    yield Mount
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def kill_after_checkpoint(cmd: list[str], out, cwd, settle: float = 0.0) -> int:
    """Start an entry point, SIGKILL it once ``out/checkpoint/step_<n>`` exists; returns n."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list((out / "checkpoint").glob("step_*")):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        time.sleep(0.02)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return int(sorted((out / "checkpoint").glob("step_*"))[-1].name.split("_")[1])


def rerun(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    """The same command again, to completion; it must succeed."""
    done = subprocess.run(cmd, cwd=cwd, env=ONE_THREAD, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done
