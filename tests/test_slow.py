"""Slow checks of the default scale (run with `pytest -m slow`; CI skips them): about 10 minutes on
2 cores, most of it the default SFT that both tests share."""

import pytest

from spolab import data, evaluate, q0, rl, sft, sources
from spolab.config import load_config
from spolab.jsonl import read_jsonl


@pytest.fixture(scope="module")
def default_sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    track = [f"tracking.uri=sqlite:///{root}/mlflow.db", f"tracking.artifact_root={root}/art"]
    data.run(load_config("data", [f"out_dir={root}/data"]))
    sft.run(load_config("sft", [f"data_dir={root}/data", f"out_dir={root}/sft", *track]))
    return root, track


@pytest.mark.slow
def test_default_sft_leaves_room_for_rl(default_sft):
    """the default SFT policy's test pass@1 lies in [0.10, 0.60] and its
    pass@10 is clearly higher."""
    root, track = default_sft
    res = evaluate.run(load_config("evaluate", [f"data_dir={root}/data", f"model_dir={root}/sft/model",
                                                f"out_dir={root}/eval", "splits=[test]", "protocols=[policy]",
                                                *track]))["test-policy"]
    assert 0.10 <= res["test/pass@1"] <= 0.60
    assert res["test/pass@10"] > res["test/pass@1"] + 0.2


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "finding of the default study: offline-only SPO on the expert pool lowers val pass@1 here "
    "(0.165 -> 0.158 at 100 updates, mean of 3 seeds; test pass@1 0.151 vs SFT 0.162) while it raises "
    "pass@10 and distinct correct programs; the pool's enumerated equivalents are programs π_ref finds "
    "unlikely (log π_ref -14.6 per program vs -2.7 for the dataset's own solution). Strict: if the "
    "pipeline starts passing this, the suite says so."))
def test_offline_only_spo_on_expert_data_beats_sft(default_sft):
    """SPO with no fresh samples at all, on the expert pool only, raises val pass@1 above
    the SFT policy's within a short budget. (It needs the default SFT: the finding is about the
    study's policy and task, which the easy smoke task does not stand for.)"""
    root, track = default_sft
    paths = [f"data_dir={root}/data", f"sft_dir={root}/sft/model"]
    q0.run(load_config("q0", [*paths, f"out_dir={root}/q0", *track]))
    sources.run(load_config("sources", [*paths, f"out_dir={root}/sources", *track]))
    summary = rl.run(load_config("rl", [*paths, f"q0_path={root}/q0/q0.json", f"sources_dir={root}/sources",
                                        "algo=spo", "data_mix=offline_only", "updates=40", "eval_every=40",
                                        "val_problems=200", f"out_dir={root}/offline", *track]))
    rows = [r for r in read_jsonl(root / "offline" / "metrics.jsonl") if "val/pass@1" in r]
    assert summary["data/fresh_samples"] == 0
    assert rows[-1]["val/pass@1"] > rows[0]["val/pass@1"], (rows[0]["val/pass@1"], rows[-1]["val/pass@1"])
