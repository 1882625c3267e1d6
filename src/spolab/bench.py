"""``python -m spolab.bench``: update time and memory of every algorithm at equal batch (claim C4).

Each (model size, algorithm) runs in its own fresh process, so memory is attributable: the
process measures its RSS after imports (the baseline, ~400 MB of libraries on CPU), builds
the policy, the frozen reference and whatever the algorithm carries (PPO: a critic), then
times ``repeats`` updates after ``warmup``: sampling, scoring (π_ref log-probs), update.
Reported per algorithm, all from one invocation: median seconds of each phase, sampled and
trained tokens per second, peak RSS above the baseline, the exact bytes of the training state
(parameters, gradients, optimizer moments of every model in memory) and, on a GPU,
``torch.cuda.max_memory_allocated``; ratios to PPO. Writes ``{out_dir}/bench_<device>.md|csv``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from spolab.config import CONF_DIR

log = logging.getLogger(__name__)

VARIANTS = {  # name -> (algo config, data mix)
    "spo": ("spo", "online"),
    "spo_half_online": ("spo", "half_online"),
    "ppo": ("ppo", "online"),
    "grpo": ("grpo", "online"),
    "rloo": ("rloo", "online"),
}


def _state_bytes(modules, optimizers) -> int:
    """Exact bytes of parameters, gradients and optimizer state of the given objects."""
    import torch

    total = 0
    for m in modules:
        for p in m.parameters():
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
    for opt in optimizers:
        for st in opt.state.values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return total


def bench_one(variant: str, size: str, cfg_dict: dict, queue) -> None:
    """Runs in a spawned process: one algorithm, one model size."""
    import psutil
    import torch

    from spolab.algos import get_algorithm
    from spolab.algos.losses import q0_from_success
    from spolab.config import load_config
    from spolab.data import load_split
    from spolab.models.build import build_model, load_model, load_tokenizer
    from spolab.rollout.collect import attach_ref_logp, collect
    from spolab.rollout.trajectories import ReplayBuffer, collate

    cfg = OmegaConf.create(cfg_dict)
    torch.set_num_threads(cfg.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline = psutil.Process().memory_info().rss
    algo_name, mix_name = VARIANTS[variant]
    rl_cfg = load_config("rl", [f"algo={algo_name}", f"data_mix={mix_name}", f"model={size}",
                                f"batch_size={cfg.batch_size}", f"group_size={cfg.group_size}"])
    tok = load_tokenizer(Path(cfg.data_dir) / "tokenizer")
    if size == cfg.sft_size and cfg.sft_dir and Path(cfg.sft_dir, "config.json").exists():
        policy, init = load_model(cfg.sft_dir), cfg.sft_dir  # the trained SFT policy: realistic lengths
    else:
        policy = build_model(rl_cfg.model, tok, seed=0)
        init = f"/tmp/spolab-bench-{size}-{os.getpid()}"
        policy.save_pretrained(init)
    policy.to(device)
    ref = load_model(init).to(device).eval().requires_grad_(False)
    problems = load_split(cfg.data_dir, "rl")
    q0 = dict(zip([p.id for p in problems], q0_from_success(torch.full((len(problems),), 3.0), 16, rl_cfg.algo.beta,
                                                             rl_cfg.algo.get("loss", "squared"), "plain").tolist()))
    algo = get_algorithm(algo_name)(rl_cfg.algo, policy, ref, tok, q0=q0, seed=0, init_path=init)
    if hasattr(algo, "critic"):
        algo.critic.to(device)
    n_fresh = round(cfg.batch_size * rl_cfg.data_mix.fresh_fraction)
    replay = ReplayBuffer(4 * cfg.batch_size)
    gen = torch.Generator(device=device).manual_seed(0)
    times: dict[str, list[float]] = {"sample": [], "score": [], "update": []}
    tokens_sampled, tokens_trained = [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(cfg.warmup + cfg.repeats):
        probs = problems[(i * n_fresh) % len(problems):][: n_fresh // cfg.group_size]
        t0 = time.perf_counter()
        fresh, _ = collect(policy, tok, probs, group_size=cfg.group_size, max_new_tokens=rl_cfg.task.max_new_tokens,
                           generator=gen, version=i)
        t1 = time.perf_counter()
        attach_ref_logp(ref, fresh, tok.pad_token_id)
        stored = replay.sample(cfg.batch_size - n_fresh) if n_fresh < cfg.batch_size else []
        replay.add(fresh)
        if n_fresh < cfg.batch_size and not stored:
            stored = fresh[: cfg.batch_size - n_fresh]  # first step: stand-in until the buffer has data
        batch = collate(fresh + stored, tok.pad_token_id)
        batch = type(batch)(batch.trajs, *(x.to(device) if x is not None else None for x in (
            batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask, batch.reward,
            batch.behaviour_logp, batch.ref_logp)))
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        policy.train()
        algo.update(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        if i >= cfg.warmup:
            times["sample"].append(t1 - t0)
            times["score"].append(t2 - t1)
            times["update"].append(t3 - t2)
            tokens_sampled.append(sum(len(t.response_ids) for t in fresh))
            tokens_trained.append(float(batch.response_mask.sum() + batch.prompt_mask.sum()))
    med = {k: statistics.median(v) for k, v in times.items()}
    optims = [algo.optim] + ([algo.critic_optim] if hasattr(algo, "critic_optim") else [])
    modules = [policy, ref] + ([algo.critic] if hasattr(algo, "critic") else [])
    row = {
        "variant": variant, "size": size, "device": device,
        "params_M": sum(p.numel() for p in policy.parameters()) / 1e6,
        "sample_s": med["sample"], "score_s": med["score"], "update_s": med["update"],
        "step_s": med["sample"] + med["score"] + med["update"],
        "sampled_tok_per_s": statistics.median(tokens_sampled) / med["sample"],
        "trained_tok_per_s": statistics.median(tokens_trained) / med["update"],
        "peak_rss_above_baseline_MB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline) / 2**20,
        "train_state_MB": _state_bytes(modules, optims) / 2**20,
        "cuda_max_allocated_MB": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan"),
    }
    queue.put(row)


def run(cfg: DictConfig) -> list[dict]:
    import pandas as pd

    ctx = mp.get_context("spawn")
    rows = []
    for size in cfg.sizes:
        for variant in cfg.variants:
            if variant not in VARIANTS:
                raise ValueError(f"unknown bench variant {variant!r}; valid: {sorted(VARIANTS)}")
            q = ctx.Queue()
            p = ctx.Process(target=bench_one, args=(variant, size, OmegaConf.to_container(cfg, resolve=True), q))
            p.start()
            row = q.get()
            p.join()
            log.info("%s/%s: step %.3f s (update %.3f s), peak RSS +%.0f MB", size, variant, row["step_s"],
                     row["update_s"], row["peak_rss_above_baseline_MB"])
            rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("step_s", "update_s", "peak_rss_above_baseline_MB", "train_state_MB"):
        ppo = df[df.variant == "ppo"].set_index("size")[col]
        df[f"{col}_vs_ppo"] = [r[col] / ppo[r["size"]] if r["size"] in ppo.index else float("nan")
                               for _, r in df.iterrows()]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = rows[0]["device"]
    df.to_csv(out / f"bench_{device}.csv", index=False, float_format="%.4g")
    header = (f"# Benchmark ({device}, {platform.processor() or platform.machine()}, {cfg.threads} threads, "
              f"batch {cfg.batch_size} = {cfg.batch_size // cfg.group_size} prompts x {cfg.group_size}, "
              f"median of {cfg.repeats} updates after {cfg.warmup} warm-up)\n\n")
    (out / f"bench_{device}.md").write_text(header + df.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(header + df.to_markdown(index=False, floatfmt=".3g"))
    return rows


@hydra.main(config_path=str(CONF_DIR), config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
