"""Slow checks of the default scale (run with `pytest -m slow`; CI skips them)."""

import pytest

from spolab import data, evaluate, sft
from spolab.config import load_config


@pytest.mark.slow
def test_default_sft_leaves_room_for_rl(tmp_path):
    """Issue 2 acceptance: the default SFT policy's test pass@1 lies in [0.10, 0.60] and its
    pass@10 is clearly higher (about 8 minutes on 2 cores)."""
    track = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art"]
    data.run(load_config("data", [f"out_dir={tmp_path}/data"]))
    sft.run(load_config("sft", [f"data_dir={tmp_path}/data", f"out_dir={tmp_path}/sft", *track]))
    res = evaluate.run(load_config("evaluate", [f"data_dir={tmp_path}/data", f"model_dir={tmp_path}/sft/model",
                                                f"out_dir={tmp_path}/eval", "splits=[test]", "protocols=[policy]",
                                                *track]))["test-policy"]
    assert 0.10 <= res["test/pass@1"] <= 0.60
    assert res["test/pass@10"] > res["test/pass@1"] + 0.2
