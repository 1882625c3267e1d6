"""SFT (loss falls, resume after a kill) and evaluation of a saved checkpoint."""

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import kill_after_checkpoint, rerun, smoke_cfg
from spolab import evaluate
from spolab.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_sft_loss_falls(smoke_sft):
    out, summary = smoke_sft
    losses = [r["loss/sft"] for r in read_metrics(out) if "loss/sft" in r]
    assert len(losses) >= 4 and losses[-1] < 0.8 * losses[0]
    assert (out / "model" / "config.json").exists() and (out / "model" / "tokenizer.json").exists()
    assert not (out / "checkpoint").exists()  # removed once the final model is saved
    assert "val/pass@1" in summary


def test_evaluate_saved_checkpoint(smoke_sft, smoke_data, tmp_path):
    out, _ = smoke_sft
    cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model",
                    f"ref_model_dir={out}/model", f"out_dir={tmp_path}/eval", "splits=[test]", "protocols=[policy,paper]")
    res = evaluate.run(cfg)
    m = res["test-paper"]
    assert 0.0 <= m["test/pass@1"] <= m["test/pass@5"] <= m["test/pass@10"] <= 1.0
    assert m["test/pass@1_ci_lo"] <= m["test/pass@1"] <= m["test/pass@1_ci_hi"]
    assert abs(res["test-policy"]["test/kl_ref"]) < 1e-4  # the policy is its own reference
    assert "test/kl_ref" not in m  # KL(π‖π_ref) is the policy's: not estimated from tempered samples
    samples = [json.loads(line) for line in open(tmp_path / "eval" / "test-paper" / "samples.jsonl")]
    assert len(samples) == 40 * 20
    assert {"problem_id", "program", "correct"} <= samples[0].keys()
    saved = json.loads((tmp_path / "eval" / "test-paper" / "eval.json").read_text())
    assert saved["test/pass@10"] == m["test/pass@10"] and saved["protocol"]["temperature"] == 0.4

    # ---- the diversity per solved problem and among all samples: per problem, in eval.json and in MLflow
    pp = json.loads((tmp_path / "eval" / "test-paper" / "per_problem.json").read_text())
    solved = [c > 0 for c in pp["n_correct"]]
    assert 0 < sum(solved) == m["test/n_solved"]
    for key in ("distinct_correct_per_solved", "functional_classes_per_solved"):
        assert [v is not None for v in pp[key]] == solved  # null exactly where no sample is correct
        assert all(v >= 1 for v in pp[key] if v is not None)
        assert m[f"test/{key}"] == pytest.approx(sum(v for v in pp[key] if v is not None) / sum(solved))
    assert all(1 <= v <= 20 for v in pp["effective_programs"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("spolab-smoke").experiment_id])[0]
    for key in ("n_solved", "distinct_correct_per_solved", "functional_classes_per_solved", "effective_programs"):
        assert run.data.metrics[f"test/{key}"] == pytest.approx(m[f"test/{key}"]), key


def test_evaluate_rejects_k_above_n_and_unknown_protocols(smoke_sft, smoke_data, tmp_path):
    from omegaconf import OmegaConf

    from spolab.eval.generate import evaluate_policy
    from spolab.models.build import load_model, load_tokenizer
    from spolab.tasks.io import load_split

    out, _ = smoke_sft
    proto = OmegaConf.create({"name": "x", "n": 5, "temperature": 1.0, "top_p": 1.0, "ks": [1, 10]})
    with pytest.raises(ValueError, match="k=10 exceeds"):
        evaluate_policy(load_model(out / "model"), load_tokenizer(out / "model"), load_split(smoke_data, "test")[:3],
                        proto, max_new_tokens=16)
    cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model",
                    f"out_dir={tmp_path}/eval", "protocols=[greedy]")
    valid = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf/protocol").glob("*.yaml"))
    assert valid == ["exact", "paper", "policy"]
    with pytest.raises(ValueError, match=re.escape(f"valid: {valid}")):
        evaluate.run(cfg)


def test_sft_resumes_after_kill(smoke_data, tmp_path):
    """Start SFT, SIGKILL it once a checkpoint exists, rerun the same command: it resumes."""
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "spolab.sft", "scale=smoke", f"data_dir={smoke_data}", f"out_dir={out}",
           "tracking.uri=null", "sft.epochs=3", "sft.batch_size=128", "sft.ckpt_every=8", "sft.log_every=1"]
    kill_after_checkpoint(cmd, out, tmp_path, settle=0.3)
    assert not (out / "model").exists()
    done = rerun(cmd, tmp_path)
    assert "resuming from step" in done.stderr + done.stdout
    steps = [r["step"] for r in read_metrics(out) if "loss/sft" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 36  # 3 epochs x 12 steps, no step logged twice
    assert (out / "model" / "config.json").exists()


def test_sft_targets_all_solvers(smoke_data):
    from spolab.tasks import listdsl as dsl
    from spolab.tasks.io import load_split
    from spolab.tasks.listdsl_task import sft_targets

    problems = load_split(smoke_data, "sft")[:20]
    targets = sft_targets(problems, "all_solvers", 3)
    assert sft_targets(problems, "generator", 3) == [[p.program] for p in problems]
    assert sum(len(t) for t in targets) > len(problems)  # equivalent programs were found
    for p, ts in zip(problems, targets):
        assert all(dsl.execute(t, p.all_tests()).success for t in ts)
    with pytest.raises(ValueError, match="generator"):
        sft_targets(problems, "best", 3)


def test_a_scale_s_n_samples_replaces_every_sampling_protocol_s_n(smoke_sft, smoke_data, tmp_path):
    """evaluate's n_samples (a CPU scale's budget, real_smoke): the paper protocol keeps its temperature and top-p,
    samples n per problem, reports pass@k for its ks <= n plus pass@n, and says so in eval.json; the exact
    protocol (n 0) is untouched; a binary reward's mean_reward is pass@1 again, problem by problem."""
    from spolab.config import ConfigError, load_protocol
    from spolab.evaluate import scaled_protocol
    from spolab.validate import validate

    assert dict(scaled_protocol("exact", 3)) == dict(load_protocol("exact"))
    assert dict(scaled_protocol("paper", None)) == dict(load_protocol("paper"))
    assert scaled_protocol("paper", 7).ks == [1, 5, 7] and scaled_protocol("paper", 10).ks == [1, 5, 10]
    with pytest.raises(ConfigError, match="n_samples"):
        validate(smoke_cfg("evaluate", tmp_path, "n_samples=0"), "evaluate", check_paths=False)
    out, _ = smoke_sft
    cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model", f"out_dir={tmp_path}/eval",
                    "splits=[test]", "protocols=[paper]", "n_samples=3")
    m = evaluate.run(cfg)["test-paper"]
    assert {k for k in m if k.startswith("test/pass@") and "_ci_" not in k} == {"test/pass@1", "test/pass@3"}
    saved = json.loads((tmp_path / "eval" / "test-paper" / "eval.json").read_text())
    assert saved["protocol"] == {"name": "paper", "n": 3, "temperature": 0.4, "top_p": 0.95, "ks": [1, 3]}
    samples = [json.loads(line) for line in open(tmp_path / "eval" / "test-paper" / "samples.jsonl")]
    assert len(samples) == 40 * 3
    pp = json.loads((tmp_path / "eval" / "test-paper" / "per_problem.json").read_text())
    assert pp["mean_reward"] == pytest.approx(pp["pass@1"]) and m["test/mean_reward"] == pytest.approx(m["test/pass@1"])


def test_mean_reward_is_the_partial_credit_per_problem():
    """score_samples' mean_reward: the mean of the samples' rewards per problem (the share of tests passed under
    task.reward=fraction), computed here by hand; pass@1 still counts whole solutions only."""
    from types import SimpleNamespace

    from spolab.eval.generate import score_samples

    problems = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
    rewards = {"a": [1.0, 0.5, 0.25], "b": [0.0, 0.2, 0.0]}
    samples = [{"problem_id": pid, "program": f"p{i}", "correct": r == 1.0, "reward": r, "signature": None,
                "n_tokens": 3, "entropy": 0.3, "error": None}
               for pid, rs in rewards.items() for i, r in enumerate(rs)]
    m, pp = score_samples(problems, samples, ks=(1,), prefix="test")
    assert pp["mean_reward"] == pytest.approx([1.75 / 3, 0.2 / 3])
    assert pp["pass@1"] == pytest.approx([1 / 3, 0.0])
    assert m["test/mean_reward"] == pytest.approx((1.75 / 3 + 0.2 / 3) / 2)
