"""The benchmark's exact memory counters (its timings are not tested: they live in results/bench)."""

import pytest
import torch

from spolab.perf import SavedActivations, state_bytes


def test_saved_activations_counts_what_backward_needs():
    W = torch.nn.Parameter(torch.randn(8, 4))
    x = torch.randn(16, 8)
    with SavedActivations() as acts:
        h = (x @ W).relu()  # mm saves x (and the parameter W, not counted); relu saves its output
        loss = h.sum()
    assert acts.peak == x.numel() * 4 + h.numel() * 4
    loss.backward()
    del h, loss
    assert acts.live == 0


def test_state_bytes_counts_params_grads_and_adam_moments():
    m = torch.nn.Linear(10, 5)  # 55 float32 parameters
    opt = torch.optim.AdamW(m.parameters())
    assert state_bytes([m], [opt]) == 55 * 4
    m(torch.randn(3, 10)).sum().backward()
    opt.step()
    assert state_bytes([m], [opt]) == 55 * 4 * 4 + 2 * 4  # params, grads, exp_avg, exp_avg_sq, 2 step counters


def test_bench_times_the_trainers_own_step(smoke_sft, smoke_data):
    """bench_one (in this process) runs spolab.train.train_step: the data mix's exact counts from a real
    replay buffer, and the memory of every network the algorithm holds."""
    import queue

    from omegaconf import OmegaConf

    from spolab.bench import bench_one
    from spolab.config import load_config

    cfg = load_config("bench", ["scale=smoke", "tracking.uri=null", f"data_dir={smoke_data}",
                                f"sft_dir={smoke_sft[0] / 'model'}", "sft_size=xs", "warmup=1", "repeats=1"])
    rows = {}
    for variant in ("spo_half_online", "ppo"):
        q = queue.Queue()
        bench_one(variant, "xs", OmegaConf.to_container(cfg, resolve=True), q)
        rows[variant] = q.get_nowait()
    for row in rows.values():
        assert min(row[k] for k in ("sample_s", "score_s", "update_s", "gflop_per_step", "peak_activations_MB")) > 0
        assert row["step_s"] == row["sample_s"] + row["score_s"] + row["update_s"]
    # half-online: 32 fresh + 32 replayed from the buffer the warm-up step filled (no stand-ins)
    assert rows["spo_half_online"]["batch_trajectories"] == rows["ppo"]["batch_trajectories"] == 64
    # PPO trains a second network (the critic) with its own optimizer: almost twice the training state
    assert rows["ppo"]["train_state_MB"] > 1.5 * rows["spo_half_online"]["train_state_MB"]


def test_the_benchmark_rows_and_the_sampler_comparison(smoke_sft, smoke_data, tmp_path):
    """spolab.bench.run with ``fine_tuning=[full, lora]`` times each variant both ways (LoRA: conf/lora/on.yaml,
    less training state) and reads each row against PPO's row of the same way; at ``sampler_repeats=1``
    it times each sampling method once against model.generate (generate's ratio exactly 1); at
    ``sampler_repeats=0`` (a slow model's scale) it writes the same columns with no rows, and its table says
    the comparison was not measured."""
    import pandas as pd

    from spolab.bench import run
    from spolab.config import load_config

    tables = {}
    for reps, variants, tuning in ((1, "[spo,ppo]", "[full,lora]"), (0, "[spo]", "[full]")):
        out = tmp_path / f"r{reps}"
        cfg = load_config("bench", ["scale=smoke", "tracking.uri=null", f"data_dir={smoke_data}",
                                    f"sft_dir={smoke_sft[0] / 'model'}", "sft_size=xs", "sizes=[xs]",
                                    f"variants={variants}", f"fine_tuning={tuning}", "warmup=0", "repeats=1",
                                    f"sampler_repeats={reps}", f"out_dir={out}"])
        run(cfg)
        tables[reps] = (pd.read_csv(out / "bench_cpu.csv"), pd.read_csv(out / "sampler_cpu.csv"),
                        (out / "bench_cpu.md").read_text())
    bench, timed, _ = tables[1]
    assert list(zip(bench.variant, bench.fine_tuning)) == [("spo", "full"), ("ppo", "full"), ("spo", "lora"),
                                                           ("ppo", "lora")]
    by = bench.set_index(["variant", "fine_tuning"])
    for way in ("full", "lora"):
        assert by.loc[("ppo", way), "step_s_vs_ppo"] == 1
        assert by.loc[("spo", way), "train_state_MB_vs_ppo"] == pytest.approx(
            by.loc[("spo", way), "train_state_MB"] / by.loc[("ppo", way), "train_state_MB"], rel=1e-3)  # %.4g in the CSV
    assert by.loc[("spo", "lora"), "train_state_MB"] < by.loc[("spo", "full"), "train_state_MB"]  # no grads, moments, π_ref copy of the base
    assert list(timed.method) == ["spolab sample, shared prefill", "spolab sample, one prefill per row",
                                  "transformers generate"]
    assert (timed.seconds > 0).all() and timed.vs_generate.iloc[-1] == 1
    _, skipped, text = tables[0]
    assert list(skipped.columns) == list(timed.columns) and skipped.empty
    assert "not measured (sampler_repeats=0)" in text
