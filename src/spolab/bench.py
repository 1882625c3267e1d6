"""``python -m spolab.bench``: update time and memory of every algorithm at equal batch (claim C4).

Each (model size, algorithm) runs in its own fresh process, so memory is attributable: the
process measures its RSS after imports (the baseline, ~400 MB of libraries on CPU), builds
the policy, the frozen reference and whatever the algorithm carries (PPO: a critic), then
times ``repeats`` trainer steps after ``warmup``, each the RL loop's own
:func:`spolab.train.train_step` (fresh prompts, the data mix's exact counts, a real replay
buffer): sampling, scoring (π_ref log-probs and the stored part), update.
Reported per algorithm, all from one invocation: median seconds of each phase, sampled and
trained tokens per second, peak RSS above the baseline, the exact bytes of the training state
(parameters, gradients, optimizer moments of every model in memory), the peak bytes of
activations saved for backward during one update (:class:`SavedActivations`) and, on a GPU,
``torch.cuda.max_memory_allocated``; ratios to PPO. Writes ``{out_dir}/bench_<device>.md|csv``.

A second table compares LoRA (``lora=on``) with full fine-tuning for SPO and PPO at every size: the bytes of
the training state (trainable parameters, their gradients and AdamW moments, and any second copy of the model,
π_ref in full fine-tuning), computed from the networks the RL run builds
(:func:`spolab.perf.training_state`) on the meta device, not timed; also in ``{out_dir}/lora_state_<device>.csv``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import resource
import statistics
import time
from pathlib import Path

import pandas as pd
import psutil
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from spolab.algos import get_algorithm
from spolab.algos.losses import q0_from_success
from spolab.algos.ppo import AdapterValueModel
from spolab.builder import build_rl_run
from spolab.cli import entry
from spolab.config import load_config
from spolab.models.build import build_model, load_model, load_tokenizer
from spolab.models.lora import Reference, add_adapters, lora_settings
from spolab.perf import (
    VARIANTS,
    SavedActivations,
    bench_batch,
    bench_rl_config,
    matmul_gflops,
    state_bytes,
    training_state,
)
from spolab.rollout.sampler import encode_prompts, sample
from spolab.tasks.base import task_of
from spolab.tasks.io import load_split
from spolab.train import train_step
from spolab.utils import (
    autocast,
    device_name,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    sync,
)
from spolab.validate import validate

log = logging.getLogger(__name__)

def bench_trl_grpo(size: str, cfg, queue) -> None:
    """TRL's GRPOTrainer on the same task, model, batch and reward, built offline (a peer)."""
    baseline = psutil.Process().memory_info().rss
    try:  # optional extras (.[bench]): only this variant needs TRL and datasets
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise ImportError("the trl_grpo bench variant needs TRL: pip install -e '.[bench]'") from e

    cfg = OmegaConf.create(cfg)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    rl_cfg = bench_rl_config("grpo", size, "full", cfg)
    policy, tok, init = _policy_for(size, cfg, rl_cfg)
    problems = load_split(cfg.data_dir, "rl")
    task = task_of(problems)
    by_id = {p.id: p for p in problems}
    ds = Dataset.from_list([{"prompt": task.prompt(p), "problem_id": p.id} for p in problems[:2000]])

    def reward(prompts, completions, problem_id, **kw):
        return [o.reward() for o in task.execute([by_id[i] for i in problem_id], list(completions))]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            self.times.append(time.perf_counter() - self.t0)

    args = GRPOConfig(
        output_dir=f"/tmp/spolab-trl-{os.getpid()}", per_device_train_batch_size=bench_batch(cfg),
        num_generations=cfg.group_size, steps_per_generation=1, max_completion_length=rl_cfg.task.max_new_tokens,
        beta=rl_cfg.algo.beta, learning_rate=rl_cfg.algo.lr, max_steps=cfg.warmup + cfg.repeats, logging_steps=1,
        report_to="none", use_cpu=device.type == "cpu", bf16=cfg.precision == "bf16", save_strategy="no",
        temperature=1.0, top_p=1.0,
        disable_tqdm=True, seed=0,
    )
    timer = Timer()
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=[timer])
    trainer.train()
    step = statistics.median(timer.times[cfg.warmup :])
    nan = float("nan")
    queue.put({
        "variant": "trl_grpo", "size": size, "fine_tuning": "full", "device": device.type,
        "params_M": sum(p.numel() for p in policy.parameters()) / 1e6, "sample_s": nan, "score_s": nan,
        "update_s": nan, "step_s": step, "sampled_tok_per_s": nan, "trained_tok_per_s": nan,
        "gflop_per_step": nan, "achieved_gflop_s": nan, "batch_trajectories": nan,
        "peak_rss_above_baseline_MB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline) / 2**20,
        "peak_activations_MB": nan,
        "train_state_MB": state_bytes([trainer.model] + ([trainer.ref_model] if trainer.ref_model is not None else []),
                                       [trainer.optimizer]) / 2**20,
        "cuda_max_allocated_MB": peak_memory_mb(device),
    })


def _init_dir(size: str, cfg, rl_cfg) -> str:
    """The checkpoint a benchmarked policy starts from: the SFT checkpoint for ``sft_size``, else a
    fresh model of ``size`` written to a temporary folder (with the miniature's tokenizer)."""
    if size == cfg.sft_size and cfg.sft_dir and Path(cfg.sft_dir, "config.json").exists():
        # the SFT policy (π_ref, for a real model the pretrained one): realistic lengths
        return cfg.sft_dir
    tok = load_tokenizer(Path(cfg.data_dir) / "tokenizer")  # a fresh model of another size: the miniature's
    init = f"/tmp/spolab-bench-{size}-{os.getpid()}"
    build_model(rl_cfg.model, tok, seed=0).save_pretrained(init)
    tok.save_pretrained(init)
    return init


def _policy_for(size: str, cfg, rl_cfg):
    """(policy, tokenizer, checkpoint path) of :func:`_init_dir`, loaded from disk (name_or_path set:
    TRL builds its reference from it)."""
    init = _init_dir(size, cfg, rl_cfg)
    return load_model(init), load_tokenizer(init), init


LORA_ALGOS = ("spo", "ppo")  # the LoRA vs full fine-tuning table's algorithms


def _config_of(size: str, cfg, rl_cfg):
    """The transformers config of the model ``size`` stands for, as :func:`_init_dir` would make it: the SFT
    checkpoint's for ``sft_size``, else a from-scratch model of ``size`` over the miniature's tokenizer."""
    if size == cfg.sft_size and cfg.sft_dir and Path(cfg.sft_dir, "config.json").exists():
        return AutoConfig.from_pretrained(cfg.sft_dir, local_files_only=True)
    tok = load_tokenizer(Path(cfg.data_dir) / "tokenizer")
    with torch.device("meta"):
        return build_model(rl_cfg.model, tok).config


def training_networks(config, algo_name: str, lora: dict | None) -> tuple[list[torch.nn.Module], torch.nn.Module]:
    """(trained networks, policy first; π_ref) of an RL run of ``algo_name`` on a model of ``config``, built
    as spolab.builder builds them but on the meta device (no weights, nothing allocated): with ``lora`` (the
    ``model.lora`` settings) the adapter-wrapped policy, π_ref its adapters-disabled view and PPO's critic its
    second adapter and head; without, the policy, a frozen π_ref copy and PPO's critic body and head."""
    with torch.device("meta"):
        policy = AutoModelForCausalLM.from_config(config)
        if lora is not None:
            policy = add_adapters(policy, lora)
            ref = Reference(policy)
        else:
            ref = AutoModelForCausalLM.from_config(config).requires_grad_(False)
        modules = [policy]
        if get_algorithm(algo_name).has_critic:
            modules.append(AdapterValueModel(policy) if lora is not None else torch.nn.ModuleList(
                [AutoModel.from_config(config), torch.nn.Linear(config.hidden_size, 1)]))  # ValueModel's body, head
    return modules, ref


def lora_state_rows(cfg) -> list[dict]:
    """LoRA against full fine-tuning, per size and algorithm of :data:`LORA_ALGOS`: the bytes of the training
    state (:func:`spolab.perf.training_state`) of the RL run's networks (``lora=on``: conf/lora/on.yaml's rank
    and target modules), counted on the meta device: nothing is loaded or trained, so any size is cheap."""
    rows = []
    for size in cfg.sizes:
        for algo_name in LORA_ALGOS:
            full = None
            for tuning in ("full", "lora"):
                rl_cfg = load_config("rl", [f"algo={algo_name}", f"model={size}", f"scale={cfg.scale.name}",
                                            *(["lora=on"] if tuning == "lora" else [])])
                modules, ref = training_networks(_config_of(size, cfg, rl_cfg), algo_name, lora_settings(rl_cfg.model))
                st = training_state(modules, ref)
                full = full or st
                rows.append({
                    "size": size, "algo": algo_name, "fine_tuning": tuning,
                    "trainable_params_M": st["trainable_params"] / 1e6,
                    **{f"{k}_MB": st[k] / 2**20 for k in ("trainable", "grads", "optimiser", "copies", "train_state",
                                                         "frozen_base", "total")},
                    "train_state_vs_full": st["train_state"] / full["train_state"],
                    "total_vs_full": st["total"] / full["total"],
                })
    return rows


def bench_one(variant: str, size: str, cfg_dict: dict, queue, tuning: str = "full") -> None:
    """Runs in a spawned process: one algorithm, one model size, full fine-tuning or LoRA (``tuning``); puts
    its row on ``queue``."""
    cfg = OmegaConf.create(cfg_dict)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    baseline = psutil.Process().memory_info().rss  # after imports: libraries are not the algorithm's
    algo_name, _ = VARIANTS[variant]
    rl_cfg = bench_rl_config(variant, size, tuning, cfg)
    rl_cfg.sft_dir, rl_cfg.data_dir = _init_dir(size, cfg, rl_cfg), cfg.data_dir
    q0 = None
    if get_algorithm(algo_name).needs_q0:  # 3 of 16 reference samples succeed on every prompt: a plausible Q̂0
        problems = load_split(cfg.data_dir, "rl")
        q0 = dict(zip([p.id for p in problems], q0_from_success(
            torch.full((len(problems),), 3.0), 16, rl_cfg.algo.beta, rl_cfg.algo.loss, "plain").tolist()))
    # ---- the RL run as spolab.rl builds it: exact counts of the mix, a real replay buffer, fresh prompts
    r = build_rl_run(rl_cfg, device, q0=q0)
    algo, policy, prompts, mixer, replay, counts, gen = r.algo, r.policy, r.prompts, r.mixer, r.replay, r.counts, r.gen

    def step(i: int):
        return train_step(algo, policy, prompts.take(counts["fresh"] // cfg.group_size), mixer, replay, counts,
                          group_size=cfg.group_size, max_new_tokens=rl_cfg.task.max_new_tokens,
                          temperature=rl_cfg.temperature, generator=gen, version=i, reward_kind=rl_cfg.task.reward)

    times: dict[str, list[float]] = {"sample": [], "score_mix": [], "update": []}
    tokens_sampled, tokens_trained, batch_trajs = [], [], []
    reset_peak_memory(device)
    precision = autocast(device, cfg.precision)
    precision.__enter__()  # every step below, as rl.py runs them (bf16 forward passes, fp32 log-probs)
    for i in range(cfg.warmup + cfg.repeats):  # the first step finds the replay buffer empty, as in rl.py
        _, fresh, parts, t = step(i)
        if i >= cfg.warmup:
            for k in times:
                times[k].append(t[k])
            trajs = [x for part in parts.values() for x in part]
            tokens_sampled.append(sum(len(x.response_ids) for x in fresh))
            tokens_trained.append(sum(len(x.prompt_ids) + len(x.response_ids) for x in trajs))
            batch_trajs.append(len(trajs))
    # one more step under the FLOP counter (matmuls and attention of sampling, scoring, forward and
    # backward) and the saved-tensor counter (only the update saves tensors for backward)
    with FlopCounterMode(display=False) as fc, SavedActivations() as acts:
        step(cfg.warmup + cfg.repeats)
    precision.__exit__(None, None, None)
    flops = fc.get_total_flops()

    med = {k: statistics.median(v) for k, v in times.items()}
    step_s = sum(med.values())
    row = {
        "variant": variant, "size": size, "fine_tuning": tuning, "device": device.type, "precision": cfg.precision,
        "params_M": sum(p.numel() for p in policy.parameters()) / 1e6,
        "opt_steps_per_update": algo.steps_per_update,
        "sample_s": med["sample"], "score_s": med["score_mix"], "update_s": med["update"], "step_s": step_s,
        "sampled_tok_per_s": statistics.median(tokens_sampled) / med["sample"],
        "trained_tok_per_s": statistics.median(tokens_trained) / med["update"],
        "gflop_per_step": flops / 1e9,
        "achieved_gflop_s": flops / 1e9 / step_s,
        "batch_trajectories": statistics.median(batch_trajs),
        "peak_rss_above_baseline_MB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline) / 2**20,
        "train_state_MB": state_bytes([*algo.modules(), algo.ref], algo.optimizers()) / 2**20,
        "peak_activations_MB": acts.peak / 2**20,  # saved for backward during one update
        "cuda_max_allocated_MB": peak_memory_mb(device),
    }
    queue.put(row)


def sampler_vs_generate(cfg, size: str, repeats: int = 5) -> list[dict]:
    """Our KV-cached sampler (prefill shared by a prompt's samples, or not) against model.generate."""
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    rl_cfg = bench_rl_config("spo", size, "full", cfg)  # the benchmark's response length and model
    policy, tok, _ = _policy_for(size, cfg, rl_cfg)
    policy.to(device).eval()
    probs = load_split(cfg.data_dir, "rl")[: bench_batch(cfg) // cfg.group_size]
    ids, mask = encode_prompts(tok, [task_of(probs).prompt(p) for p in probs])
    ids, mask = ids.to(device), mask.to(device)
    k, T = cfg.group_size, rl_cfg.task.max_new_tokens
    kw = dict(max_new_tokens=T, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    ways = {
        "spolab sample, shared prefill": lambda: sample(policy, ids, mask, num_samples=k, **kw),
        "spolab sample, one prefill per row": lambda: sample(policy, ids.repeat_interleave(k, 0),
                                                              mask.repeat_interleave(k, 0), **kw),
        "transformers generate": lambda: policy.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=k, max_new_tokens=T,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, top_k=0, top_p=1.0, temperature=1.0),
    }
    rows = []
    with torch.no_grad(), autocast(device, cfg.precision):
        for name, fn in ways.items():
            ts = []
            for i in range(repeats + 2):
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                if i >= 2:
                    ts.append(time.perf_counter() - t)
            rows.append({"size": size, "method": name, "seconds": statistics.median(ts)})
    base = rows[-1]["seconds"]
    for r in rows:
        r["vs_generate"] = r["seconds"] / base
    return rows


def _result(q, proc, what: str) -> dict:
    """The child's row; a child that died without one is an error, not a hang."""
    while True:
        try:
            row = q.get(timeout=5)
            proc.join()
            return row
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"benchmark {what} failed (exit code {proc.exitcode}); see its traceback above") from None


def run(cfg: DictConfig) -> list[dict]:
    validate(cfg, "bench")
    ctx = mp.get_context("spawn")
    device = resolve_device(cfg.device)
    peak = matmul_gflops(cfg.threads, device)
    log.info("fp32 matmul throughput: %.1f GFLOP/s (%d threads, %s)", peak, cfg.threads, device)
    rows = []
    for size in cfg.sizes:
        for tuning in cfg.fine_tuning:
            for variant in cfg.variants:
                if variant not in VARIANTS and variant != "trl_grpo":
                    raise ValueError(f"unknown bench variant {variant!r}; valid: {sorted(VARIANTS) + ['trl_grpo']}")
                if variant == "trl_grpo" and tuning != "full":  # TRL's peer row: its own full fine-tuning only
                    continue
                q = ctx.Queue()
                target = bench_trl_grpo if variant == "trl_grpo" else bench_one
                args = (size, OmegaConf.to_container(cfg, resolve=True), q)
                p = ctx.Process(target=target, args=args if variant == "trl_grpo" else (variant, *args, tuning))
                p.start()
                row = _result(q, p, f"{size}/{variant}/{tuning}")
                log.info("%s/%s (%s): step %.3f s (update %.3f s), peak RSS +%.0f MB", size, variant, tuning,
                         row["step_s"], row["update_s"], row["peak_rss_above_baseline_MB"])
                rows.append(row)
    df = pd.DataFrame(rows)
    df["frac_of_matmul_peak"] = df["achieved_gflop_s"] / peak
    for col in ("step_s", "update_s", "peak_rss_above_baseline_MB", "train_state_MB", "peak_activations_MB"):
        ppo = df[df.variant == "ppo"].set_index(["size", "fine_tuning"])[col]  # PPO's row of the same way to train
        df[f"{col}_vs_ppo"] = [r[col] / ppo[(r["size"], r["fine_tuning"])]
                               if (r["size"], r["fine_tuning"]) in ppo.index else float("nan")
                               for _, r in df.iterrows()]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"bench_{device.type}.csv", index=False, float_format="%.4g")
    sampler = pd.DataFrame([r for size in cfg.sizes for r in sampler_vs_generate(cfg, size, cfg.sampler_repeats)]
                           if cfg.sampler_repeats else [], columns=["size", "method", "seconds", "vs_generate"])
    sampler.to_csv(out / f"sampler_{device.type}.csv", index=False, float_format="%.4g")
    lora = pd.DataFrame(lora_state_rows(cfg))
    lora.to_csv(out / f"lora_state_{device.type}.csv", index=False, float_format="%.4g")
    B = bench_batch(cfg)
    share = (f" (one device's share of the scale's {cfg.batch_size} across {cfg.batch_size // B})"
             if B != cfg.batch_size else "")
    header = (f"# Benchmark ({device.type}: {device_name(device)}, {cfg.threads} threads, {cfg.precision} forward passes, batch {B} = "
              f"{B // cfg.group_size} prompts x {cfg.group_size}{share}, median of {cfg.repeats} updates after "
              f"{cfg.warmup} warm-up; measured fp32 matmul peak {peak:.1f} GFLOP/s)\n\n")
    text = (header + df.to_markdown(index=False, floatfmt=".4g") + "\n\n## Sampling "
            f"{B // cfg.group_size} prompts x {cfg.group_size} samples\n\n"
            + (sampler.to_markdown(index=False, floatfmt=".4g") if len(sampler)
               else "not measured (sampler_repeats=0)")
            + "\n\n## Training state: LoRA vs full fine-tuning (computed; MB)\n\n"
            "train_state = trainable parameters + their gradients + AdamW moments + copies (a second model in "
            "memory: π_ref, in full fine-tuning); total adds frozen_base (LoRA's frozen weights, which π_ref "
            "shares)\n\n" + lora.to_markdown(index=False, floatfmt=".4g") + "\n")
    (out / f"bench_{device.type}.md").write_text(text)
    print(text)
    return rows


main = entry("bench", run)


if __name__ == "__main__":
    main()
