"""The memory plan (spolab.memory, python -m spolab.plan): exact parameter counts from the meta device, the byte
formulas against a hand computation, the validation that refuses a scale over its GPU memory, and the command at
scale=paper on a machine without the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from spolab.config import load_config
from spolab.errors import ConfigError
from spolab.memory import (
    GIB,
    Arch,
    Hardware,
    Workload,
    arch_of,
    architecture,
    kv_cache_bytes,
    layer_activation_bytes,
    lora_params,
    plan_bytes,
    plan_entry,
)
from spolab.models.build import build_model, build_tokenizer, n_params
from spolab.validate import validate

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ parameter counts


def test_meta_count_equals_the_built_xs_model_and_its_critic(tmp_path):
    """xs on the meta device has exactly the parameters of xs built for real; the critic, PPO's ValueModel
    built from the saved model, exactly the plan's critic_params."""
    from spolab.algos.ppo import ValueModel
    from spolab.tasks.render import task_vocab

    cfg = load_config("rl", ["scale=smoke"])
    assert cfg.model.name == "xs"
    arch = architecture(cfg.model, cfg.task)
    tok = build_tokenizer(task_vocab())
    model = build_model(cfg.model, tok, seed=0)
    assert arch.params == n_params(model)
    assert next(model.parameters()).device.type == "cpu"
    model.save_pretrained(tmp_path)
    assert arch.critic_params == n_params(ValueModel(str(tmp_path)))
    assert (arch.hidden, arch.layers, arch.heads, arch.vocab) == (48, 2, 4, len(tok))


@pytest.mark.parametrize("tied", [False, True])
def test_meta_count_equals_a_tiny_llama_built_for_real(tied):
    """A tiny grouped-query LlamaConfig: the meta count, and the count from conf-style architecture keys (a
    pretrained model whose folder is not on this machine), equal sum(p.numel()) of the model built for real."""
    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, tie_word_embeddings=tied)
    real = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert arch_of(config, "tiny").params == real
    model_cfg = OmegaConf.create({"name": "tiny", "name_or_path": "/nonexistent/tiny-llama", "hidden_size": 64,
                                  "intermediate_size": 160, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
                                  "vocab_size": 300, "tie_embeddings": tied})
    arch = architecture(model_cfg, OmegaConf.create({"name": "codecontests"}))
    assert arch.params == real and (arch.kv_heads, arch.head_dim) == (2, 16)


def test_llama8b_is_counted_without_its_weights():
    """conf/model/llama8b.yaml's architecture: Llama-3.1-8B's 8,030,261,248 parameters, its folder absent."""
    cfg = load_config("rl", ["scale=paper"])
    assert not Path(cfg.model.name_or_path).exists()
    arch = architecture(cfg.model, cfg.task)
    assert arch.params == 8_030_261_248
    assert arch.critic_params == 8_030_261_248 - 128_256 * 4096 + 4096 + 1  # no LM head; a scalar head
    assert (arch.kv_heads, arch.head_dim, arch.vocab) == (8, 128, 128_256)


def test_architecture_keys_must_match_a_checkpoint_on_disk(tmp_path):
    LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                vocab_size=300).save_pretrained(tmp_path)
    model_cfg = OmegaConf.create({"name": "tiny", "name_or_path": str(tmp_path), "hidden_size": 128})
    with pytest.raises(ConfigError, match=r"^model.hidden_size=128: must match the checkpoint's hidden_size=64"):
        architecture(model_cfg, OmegaConf.create({"name": "codecontests"}))
    ok = architecture(OmegaConf.create({"name": "tiny", "name_or_path": str(tmp_path)}), OmegaConf.create({}))
    assert ok.hidden == 64  # the checkpoint's own config.json


# ------------------------------------------------------------------------------------------ the byte formulas


def test_plan_bytes_equal_a_hand_computation():
    """PPO's plan on a constructed model and hardware, every item worked out by hand.

    Model: N = 1000 params, critic 900, h 8, i 16, 2 layers, 2 heads, 1 kv head, head_dim 4 (kv_dim 4), V 10.
    Hardware: world_size 2, fsdp, micro_batch_size 2. bf16: b = 2, autocast's bf16 copy 2 B/param.
    Sequences: P 3 + T 2 = S 5; batches of 8 sequences (4 per device, 2 per teacher-forced pass); 2 prompts."""
    arch = Arch(name="hand", params=1000, critic_params=900, hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1,
                head_dim=4, vocab=10, max_positions=None)
    hw = Hardware(world_size=2, sharding="fsdp", gpu_memory_gb=1, micro_batch_size=2)
    work = Workload("rl (ppo)", prompt=3, response=2, trains=True, model_cached=True, ref=True, critic=True,
                    train_rows=8, score_rows=8, value_rows=8, sample_rows=8, sample_prompts=2)
    plan = plan_bytes(arch, work, hw, "bf16")
    # state, sharded over 2 devices
    weights = 1000 * (4 + 2) // 2  # fp32 + autocast's bf16 copy = 3000
    gradients = 1000 * 4 // 2  # 2000
    optimiser = 1000 * 8 // 2  # two fp32 moments: 4000
    ref = 1000 * 4 // 2  # frozen, no autocast copy: 2000
    critic = 900 * (4 + 4 + 8 + 2) // 2  # weights, gradients, moments, bf16 copy: 8100
    # per token per layer: 16h + b(5h + 4h + 4i + S + 2 kv_dim) + 4 heads + 8
    a_layer = 16 * 8 + 2 * (5 * 8 + 4 * 8 + 4 * 16 + 5 + 2 * 4) + 4 * 2 + 8
    assert a_layer == 442 == layer_activation_bytes(arch, 5, 2, True)
    # training pass, per sequence: S·L·a_layer + S(8h + 4) + S·b·h + S·b·V + 12·V·T (LM) | S·4h (critic)
    policy_seq = 5 * 2 * 442 + 5 * (8 * 8 + 4) + 5 * 2 * 8 + 5 * 2 * 10 + 12 * 10 * 2  # 5180
    critic_seq = 5 * 2 * 442 + 5 * (8 * 8 + 4) + 5 * 4 * 8  # 4920
    update = 2 * policy_seq + 2 * critic_seq  # 2 sequences per pass: 20200
    # no-grad passes, per sequence: S(12h + 3·b·i) + S·2·L·kv_dim·b + (S·b·V + 8·V·T | S·4h)
    ref_seq = 5 * (12 * 8 + 3 * 2 * 16) + 5 * 2 * 2 * 4 * 2 + 5 * 2 * 10 + 8 * 10 * 2  # 1380
    value_seq = 5 * (12 * 8 + 3 * 2 * 16) + 5 * 2 * 2 * 4 * 2 + 5 * 4 * 8  # 1280
    score = max(2 * ref_seq, 2 * value_seq)  # 2760
    # sampling: 1 prompt per device × P × (12h + 3·b·i + b·V) + 4 rows × V × (b + 16); KV 2·L·kv·hd·S·rows·b
    sampling = 1 * 3 * (192 + 2 * 10) + 4 * 10 * (2 + 16)  # 1356
    kv = 2 * 2 * 1 * 4 * 5 * 4 * 2  # 640
    assert (weights, gradients, optimiser, ref, critic, update, score, sampling, kv) == (
        3000, 2000, 4000, 2000, 8100, 20200, 2760, 1356, 640)
    assert plan.items == {"weights": weights, "gradients": gradients, "optimiser": optimiser, "π_ref": ref,
                          "critic": critic, "activations": max(update, score, sampling), "KV cache": kv}
    # peak: the update (gradients + its activations) over scoring (2760) and sampling (640 + 1356)
    assert plan.peak == "update"
    assert plan.total == weights + optimiser + ref + critic + gradients + update == 39300
    assert plan.parts == {"weights": 3000, "optimiser": 4000, "π_ref": 2000, "critic": 8100, "gradients": 2000,
                          "activations": 20200}


def test_lora_plan_counts_the_adapters_by_hand():
    """rl with LoRA (r 16 on q, k, v, o) on Llama-3.1-8B: per layer 16·((4096 + 4096) + (4096 + 1024) · 2 +
    (4096 + 4096)) adapter parameters; the frozen fp32 weights without autocast's copy, the adapters' own
    weights, copy, gradients and moments, no π_ref copy, PPO's critic an adapter and a scalar head. The
    policy's KV cache and activations are the full fine-tuning plan's. And the command's rl rows with LoRA."""
    from spolab.plan import scale_plans

    cfg = load_config("rl", ["scale=paper", "algo=ppo", "lora=on"])
    arch = architecture(cfg.model, cfg.task)
    La = 32 * 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096))
    assert lora_params(arch, {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 16}) == La == 13_631_488
    hw = Hardware(world_size=8, sharding="none", gpu_memory_gb=80, micro_batch_size=1, prompt_tokens=1024)
    lora = plan_entry(cfg, "rl", arch, hw)
    full = plan_entry(load_config("rl", ["scale=paper", "algo=ppo"]), "rl", arch, hw)
    N = arch.params
    assert lora.label == "rl (ppo, LoRA r 16)"
    assert lora.items["weights"] == N * 4 + La * (4 + 2)  # bf16: the adapters' autocast copy only
    assert (lora.items["gradients"], lora.items["optimiser"], lora.items["π_ref"]) == (4 * La, 8 * La, 0)
    assert lora.items["critic"] == (La + 4096 + 1) * (16 + 2)
    assert lora.items["KV cache"] == full.items["KV cache"] and lora.items["activations"] == full.items["activations"]
    assert full.items["π_ref"] == 4 * N and full.items["gradients"] == 4 * N
    plans, _, _, _ = scale_plans("paper", ["rl"], ["spo", "ppo"], ["scale.sharding=none"], lora=True)
    assert [p.label for p in plans] == ["rl (spo, LoRA r 16)", "rl (ppo, LoRA r 16)"]
    assert all(p.total <= 80 * GIB for p in plans)  # LoRA's rl fits 80 GB GPUs without sharding


def test_kv_cache_of_llama8b_by_hand():
    """2 × 32 layers × 8 kv heads × 128 head_dim × 2048 tokens × 8 sequences × 2 bytes = 2 GiB."""
    assert kv_cache_bytes(32, 8, 128, 2048, 8, 2) == 2 * 32 * 8 * 128 * 2048 * 8 * 2 == 2 * GIB


def test_layer_formula_matches_the_tensors_a_forward_saves():
    """layer_activation_bytes (less its KV-cache term, which holds no saved tensor) equals the bytes the
    forward of spolab's scoring saves for its backward per token per layer, on a small model under CPU bf16
    autocast: the difference of a 3- and a 1-layer model, parameters and autocast's weight copies excluded."""
    from spolab.rollout.sampler import score

    h, i, heads, kv, V, B, P, T = 64, 176, 4, 2, 50, 2, 21, 12  # B·S = 66: no activation has a weight's shape

    def saved(layers: int) -> int:
        config = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=kv, vocab_size=V, tie_word_embeddings=False, attn_implementation="sdpa")
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
        seen: dict[int, int] = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            weight_copy = t.dtype == torch.bfloat16 and t.dim() == 2 and (tuple(t.shape) in shapes
                                                                           or tuple(t.shape[::-1]) in shapes)
            if ptr not in params and not weight_copy:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(0, V, (B, P))
        mask = torch.ones(B, P, dtype=torch.long)
        mask[0, :3] = 0
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            score(model, ids, mask, torch.randint(0, V, (B, T)), torch.ones(B, T, dtype=torch.long))
        return sum(seen.values())

    arch = Arch(name="t", params=0, critic_params=0, hidden=h, intermediate=i, layers=1, heads=heads, kv_heads=kv,
                head_dim=h // heads, vocab=V, max_positions=None)
    S = P + T
    measured = (saved(3) - saved(1)) / 2 / (B * S)
    formula = layer_activation_bytes(arch, S, 2, True) - 2 * 2 * arch.kv_dim
    assert measured == pytest.approx(formula, rel=0.05)


# ------------------------------------------------------------------------------------------ validation


def test_validation_refuses_an_over_budget_scale_in_one_line():
    """paper on one unsharded 80 GB GPU: PPO's job is refused at start-up with one line naming the entry, its GiB
    per device, the budget, the biggest items and what would fit."""
    cfg = load_config("rl", ["scale=paper", "algo=ppo", "scale.sharding=none", "scale.world_size=1"])
    with pytest.raises(ConfigError) as e:
        validate(cfg, "rl", check_paths=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("scale=paper: rl (ppo) needs ")
    assert " GiB per device (" in msg and ") > scale.gpu_memory_gb 80; set scale.sharding=fsdp with scale.world_size >= " in msg
    items = dict(part.rsplit(" ", 1) for part in msg.split(" GiB per device (", 1)[1].split(";", 1)[0].split(", "))
    assert {"KV cache", "critic", "optimiser", "weights", "π_ref"} <= set(items)  # the parts of the peak (sampling)
    sizes = [float(v) for v in items.values()]
    assert sizes == sorted(sizes, reverse=True)  # biggest first
    total = plan_entry(cfg, "rl")
    assert f"needs {total.total / GIB:.1f} GiB" in msg and total.total > 80 * GIB


def test_validation_accepts_a_fitting_scale_and_skips_a_cpu_one():
    for algo in ("spo", "ppo", "grpo", "rloo"):  # the shipped paper scale: 8 x 80 GB, LoRA (its rl_lora), no sharding
        validate(load_config("rl", ["scale=paper", f"algo={algo}", "lora=on"]), "rl", check_paths=False)
        with pytest.raises(ConfigError, match=rf"^scale=paper: rl \({algo}\) needs .* > scale.gpu_memory_gb 80; train "
                                              r"LoRA adapters \(lora=on; a scale with rl_lora: true"):
            validate(load_config("rl", ["scale=paper", f"algo={algo}"]), "rl", check_paths=False)  # full fine-tuning
    for entry in ("sft", "q0", "sources", "evaluate"):
        validate(load_config(entry, ["scale=paper"]), entry, check_paths=False)
    smoke = load_config("rl", ["scale=smoke", "scale.gpu_memory_gb=1"])
    validate(smoke, "rl", check_paths=False)
    with pytest.raises(ConfigError, match=r"^scale=smoke: rl \(spo\) needs 0\.\d+ GiB per device \(.*\) > "
                                          r"scale.gpu_memory_gb 0.01; "):
        validate(load_config("rl", ["scale=smoke", "scale.gpu_memory_gb=0.01"]), "rl", check_paths=False)
    validate(load_config("rl", ["scale=smoke", "scale.gpu_memory_gb=null"]), "rl", check_paths=False)  # no budget
    with pytest.raises(ConfigError, match=r"^scale.sharding='zero3': must be one of \['fsdp', 'none'\]$"):
        validate(load_config("rl", ["scale=smoke", "scale.sharding=zero3"]), "rl", check_paths=False)


def test_the_benchmark_is_planned_as_one_device_s_update():
    """The benchmark times one process on one device (spolab.perf.bench_batch): each row is planned as an RL
    update of the scale's batch / world_size trajectories, without validation, at world_size 1. At paper
    (8 GPUs, batch 256) that is 32 trajectories: LoRA (the scale's fine_tuning) fits 80 GB, full fine-tuning
    of the 8 B model is refused in one line that says what would fit. sources, data-parallel like q0, is
    planned at its per-device share."""
    from spolab.memory import bench_plans, hardware, workload

    paper = load_config("bench", ["scale=paper"])
    validate(paper, "bench", check_paths=False)
    rows = bench_plans(paper)
    assert [p.label for _, p in rows] == [f"bench {v} (llama8b, LoRA)" for v in paper.variants]
    for rl, plan in rows:
        assert rl.batch_size == 256 // 8 and rl.scale.world_size == 1 and rl.model.lora
        arch, hw = architecture(rl.model, rl.task), hardware(rl)
        assert hw.world_size == 1 and plan.total <= 80 * GIB
        w = workload(rl, "rl", arch, hw, validation=False)
        assert w.sample_rows == 32 and w.group_rows == 0  # the fresh batch only: no validation sampling
        assert plan.total == plan_bytes(arch, w, hw, "bf16").total  # the row is that workload's plan
    with pytest.raises(ConfigError) as e:
        validate(load_config("bench", ["scale=paper", "fine_tuning=[full]"]), "bench", check_paths=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("scale=paper: bench spo (llama8b, full) needs ")
    assert "> scale.gpu_memory_gb 80; benchmark LoRA adapters (bench fine_tuning=[lora])" in msg
    with pytest.raises(ConfigError, match=r"^batch_size=60: must split into scale.world_size=8 shares of whole groups"):
        validate(load_config("bench", ["scale=paper", "batch_size=60", "group_size=4"]), "bench", check_paths=False)
    sources = load_config("sources", ["scale=paper"])
    one = load_config("sources", ["scale=paper", "scale.world_size=1"])
    assert plan_entry(sources, "sources").items["KV cache"] * 8 == plan_entry(one, "sources").items["KV cache"]


def test_placement_keys_are_not_part_of_a_runs_identity():
    from spolab.config import run_identity

    base = load_config("rl", ["scale=smoke"])
    assert run_identity(load_config("rl", ["scale=smoke", "scale.world_size=8", "scale.sharding=fsdp",
                                           "scale.gpu_memory_gb=80", "scale.micro_batch_size=2",
                                           "+scale.launcher=torchrun"])) == run_identity(base)
    legacy = OmegaConf.to_container(base, resolve=True)
    legacy["scale"] = {"name": "smoke"}  # a config from before the scale had these keys: the same run
    assert run_identity(legacy) == run_identity(base)


# ------------------------------------------------------------------------------------------ the command


def test_plan_command_at_paper_without_the_weights(tmp_path):
    """`python -m spolab.plan scale=paper` on this machine (no Llama folder): the table of every entry point, rl
    with LoRA as the scale's studies run it, within 80 GiB per device, written to plan.md and plan.json."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "SPOLAB_CONF_DIR": str(REPO / "conf")}
    res = subprocess.run([sys.executable, "-m", "spolab.plan", "scale=paper", f"out_dir={tmp_path}/plan"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "models").exists()
    out = res.stdout
    assert "Memory plan, scale=paper: model llama8b, 8,030,261,248 parameters" in out
    assert "sharding none, world_size 8" in out and "GiB per device" in out
    head = next(line for line in out.splitlines() if line.startswith("| entry"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "entry", "weights", "gradients", "optimiser", "π_ref", "critic", "activations", "KV cache", "total", "peak", "fits"]
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| entry")]
    bench = load_config("bench", ["scale=paper"])
    assert [r.split("|")[1].strip() for r in rows] == ["sft", "q0", "sources", *(f"rl ({a}, LoRA r 16)" for a in
                                                        ("spo", "ppo", "grpo", "rloo")), "evaluate",  # its rl_lora
                                                        *(f"bench {v} (llama8b, LoRA)" for v in bench.variants)]
    assert all(r.split("|")[-2].strip() == "yes" for r in rows)
    saved = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert saved["params"] == 8_030_261_248 and saved["hardware"]["world_size"] == 8
    assert all(v["total"] <= 80 * GIB for v in saved["bytes_per_device"].values())
    assert (tmp_path / "plan" / "plan.md").read_text().strip() == out.strip()
