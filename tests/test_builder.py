"""The one builder of an RL run (spolab.builder), which rl, bench and diagnostics share."""

import pytest
import torch

from conftest import rl_cfg
from spolab.algos.q0 import load_q0
from spolab.builder import build_rl_run
from spolab.errors import ConfigError
from spolab.utils import seed_everything


def test_builder_assembles_what_the_config_asks(smoke_q0, tmp_path):
    root, cpu = smoke_q0.parent, torch.device("cpu")
    cfg = rl_cfg(root, tmp_path, "algo=spo", "data_mix=half_online")
    seed_everything(cfg.seed)
    r = build_rl_run(cfg, cpu)
    # a stale behaviour copy, the mix's exact counts, the run's own replay buffer, an untouched prompt stream
    assert r.behaviour is not r.policy and r.sync_every == cfg.data_mix.sync_every > 1
    assert r.counts == {"fresh": cfg.batch_size // 2, "replay": cfg.batch_size // 2}
    assert r.mixer.replay is r.replay and r.replay.items == []
    assert (r.step, r.fresh_total, r.prompts.pos) == (0, 0, 0) and len(r.problems) > 0
    assert r.algo.total_steps == cfg.updates * r.algo.steps_per_update
    assert r.q0 == r.algo.q0 == load_q0(cfg.q0_path, cfg.algo.beta, cfg.algo.loss, cfg.algo.q0_estimator)

    # Q̂0 follows the task's reward kind (diagnostics once read it as binary whatever the task said): a
    # non-binary reward reads the reference rewards, and refuses the estimator that pools success counts
    frac = rl_cfg(root, tmp_path, "algo=spo", "task.reward=fraction")
    assert build_rl_run(frac, cpu).q0 == load_q0(frac.q0_path, frac.algo.beta, "squared", "plain", "fraction")
    with pytest.raises(ConfigError, match="task.reward='fraction'"):
        build_rl_run(rl_cfg(root, tmp_path, "algo=spo", "task.reward=fraction", "algo.q0_estimator=shrunk"), cpu)

    # an on-policy algorithm: no Q̂0 (even one handed in), the policy samples its own data
    ppo = build_rl_run(rl_cfg(root, tmp_path, "algo=ppo"), cpu, q0={"x": 0.0})
    assert ppo.q0 is None and ppo.behaviour is ppo.policy and ppo.counts == {"fresh": cfg.batch_size}
