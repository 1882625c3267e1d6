"""Devices and precision (docs/design.md §9): ``device=auto|cpu|cuda|cuda:N`` and
``precision=fp32|bf16`` on every entry point that runs a model.

On this CPU machine the GPU branch is tested for its refusal (asking for CUDA where there is none
is a ConfigError, never a silent CPU run); bf16 autocast runs on the CPU as on a GPU, so the
precision contract is tested for real: forward passes in bf16, log-probs, losses and every
parameter, gradient and optimiser state in fp32, and an RL run at smoke scale end to end.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import rl_cfg, smoke_cfg
from spolab.config import run_identity
from spolab.errors import ConfigError
from spolab.models.build import build_model, build_tokenizer
from spolab.rollout.sampler import sample, score
from spolab.tasks.render import task_vocab
from spolab.utils import autocast, generator, memory_metrics, resolve_device
from spolab.validate import validate

ENTRIES = ("sft", "q0", "sources", "rl", "evaluate", "bench")


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer(task_vocab())
    cfg = smoke_cfg("sft", "/tmp").model
    return tok, build_model(cfg, tok, seed=0)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "", 0, "CPU"):
        with pytest.raises(ConfigError, match="device=.*must be one of"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal where no GPU is")
def test_cuda_without_a_gpu_is_refused_not_run_on_the_cpu():
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_model_entry_point_takes_device_and_precision(entry):
    cfg = load = smoke_cfg(entry, "/tmp")
    assert load.device == "auto" and load.precision == "fp32"
    validate(cfg, entry, check_paths=False)
    for key, bad, why in (("device", "gpu", "device='gpu': must be one of"),
                          ("precision", "fp16", "precision='fp16': must be one of")):
        with pytest.raises(ConfigError, match=why):
            validate(smoke_cfg(entry, "/tmp", f"{key}={bad}"), entry, check_paths=False)


def test_placement_is_not_identity_but_precision_is():
    base = smoke_cfg("rl", "/tmp")
    assert run_identity(smoke_cfg("rl", "/tmp", "device=cpu")) == run_identity(base)  # where, not what
    assert run_identity(smoke_cfg("rl", "/tmp", "precision=bf16")) != run_identity(base)


def test_bf16_runs_the_forward_in_bf16_and_scores_in_fp32(tiny):
    tok, model = tiny
    ids = torch.tensor([[tok.bos_token_id] + [5] * 10])
    mask = torch.ones_like(ids)
    with autocast("cpu", "bf16"):
        logits = model(input_ids=ids, attention_mask=mask).logits
        lp = score(model, ids[:, :6], mask[:, :6], ids[:, 6:], mask[:, 6:])
    assert logits.dtype == torch.bfloat16  # the network ran in bf16
    assert lp.dtype == torch.float32  # log-probs from fp32 logits
    with torch.no_grad():
        ref = score(model, ids[:, :6], mask[:, :6], ids[:, 6:], mask[:, 6:])
    assert ref.dtype == torch.float32
    # bf16 has 8 bits of mantissa: close to fp32, not equal
    assert torch.allclose(lp.detach(), ref, atol=0.1) and not torch.equal(lp.detach(), ref)
    with autocast("cpu", "fp32"):
        assert model(input_ids=ids, attention_mask=mask).logits.dtype == torch.float32


def test_bf16_forwards_inside_one_context_see_every_optimiser_step():
    """The entry points train inside one autocast context: each forward must cast the weights as
    they are now. With autocast's weight cache on, the output after a step equals the output before
    it (the bf16 copy of the first forward is reused until the context exits)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    with autocast("cpu", "bf16"):
        before = lin(x)
        before.float().pow(2).sum().backward()
        opt.step()
        after = lin(x)
    with torch.no_grad():
        fresh = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
        with fresh:
            expected = lin(x)
    assert not torch.equal(after, before)  # the step is seen
    assert torch.equal(after, expected)  # exactly the cast of the current weights


def test_bf16_sampling_returns_fp32_logprobs(tiny):
    tok, model = tiny
    ids = torch.tensor([[tok.bos_token_id] + [5] * 10] * 2)
    with autocast("cpu", "bf16"):
        ro = sample(model, ids, torch.ones_like(ids), max_new_tokens=4, eos_id=tok.eos_token_id,
                    pad_id=tok.pad_token_id, generator=generator("cpu", 0), num_samples=3)
    assert ro.logprobs.dtype == torch.float32 and ro.entropy.dtype == torch.float32
    assert ro.response_ids.shape[0] == 6 and torch.isfinite(ro.logprobs).all()


def test_the_cpu_generator_draws_what_torch_generator_draws():
    a, b = generator("cpu", 7), torch.Generator().manual_seed(7)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))


def test_memory_metrics_only_on_a_gpu():
    assert memory_metrics("cpu") == {}


def test_rl_in_bf16_end_to_end_keeps_fp32_weights_and_learns_finite(smoke_q0, tmp_path):
    """A smoke RL run with precision=bf16: the run finishes, its losses and gradient norms are
    finite, the saved policy is fp32, and its config records the precision it ran at."""
    from spolab import rl

    root = smoke_q0.parent
    cfg = rl_cfg(root, tmp_path, "precision=bf16", "device=cpu", "updates=2", "eval_every=2", "ckpt_every=2")
    summary = rl.run(cfg)
    assert summary["updates"] == 2
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss/spo"] for r in rows if "loss/spo" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.isfinite(torch.tensor(r["opt/grad_norm"])) for r in rows if "opt/grad_norm" in r)
    from spolab.models.build import load_model

    saved = load_model(tmp_path / "rl" / "model")
    assert {p.dtype for p in saved.parameters()} == {torch.float32}
    assert "precision: bf16" in (tmp_path / "rl" / "config.yaml").read_text()


MODEL_RULES = {"sft", "q0", "sources", "rl", "eval", "bench"}


def dry_run_jobs(scale: str, tmp_path) -> list[tuple[str, dict[str, str]]]:
    """The jobs of `snakemake -n` at a scale, in a copy of the workflow (no lock on the repo's folder)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from test_fresh_clone import job_blocks

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "wf"
    work.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "conf", "analysis"):
        (shutil.copytree if (repo / name).is_dir() else shutil.copy)(repo / name, work / name)
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "SPOLAB_CONF_DIR": str(work / "conf"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--config", f"scale={scale}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return job_blocks(res.stdout)


def _gpus(block: dict[str, str]) -> int:
    """The `gpu` resource a dry run's job block lists (0 when none)."""
    import re

    m = re.search(r"\bgpu=(\d+)", block.get("resources", ""))
    return int(m[1]) if m else 0


@pytest.mark.parametrize("scale", ["paper", "gpu_check"])
def test_a_gpu_scale_requests_a_gpu_for_every_model_job_and_only_those(scale, tmp_path):
    """conf/scale/paper.yaml and gpu_check.yaml set device: cuda; their model jobs carry Snakemake's `gpu`
    resource (which the SLURM profile maps to a GPU request): one GPU per process, so scale.world_size GPUs
    for the data-parallel entries that torchrun launches (spolab.dist.ENTRIES; 8 at paper), one for the
    others; nothing else asks for one. The smoke scale (device auto) requests none."""
    from spolab.config import load_config
    from spolab.dist import ENTRIES

    jobs = dry_run_jobs(scale, tmp_path / scale)
    asked = {rule for rule, b in jobs if _gpus(b)}
    assert asked == MODEL_RULES
    world = load_config("rl", [f"scale={scale}"]).scale.world_size
    parallel = {{"evaluate": "eval"}.get(e, e) for e in ENTRIES}  # rule names
    assert all(_gpus(b) == (world if rule in parallel else 1) for rule, b in jobs if rule in MODEL_RULES)
    smoke = dry_run_jobs("smoke", tmp_path / "smoke")
    assert not any(_gpus(b) for _, b in smoke)
    assert {rule for rule, _ in smoke} >= MODEL_RULES
