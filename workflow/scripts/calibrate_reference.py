"""How often does π_ref solve a task's problems at a few sampling temperatures? The measurement a real scale's
task and temperature are chosen by (docs/real_scale.md, "Choosing real_smoke's task").

    python workflow/scripts/calibrate_reference.py --split rl --problems 24 --n 8 --temperatures 0.4 0.7 1.0 \
        -- scale=real_smoke task=humaneval

Everything after ``--`` is a Hydra override of ``conf/data.yaml`` (the task, its caps, the model). π_ref is
``model.name_or_path`` (the pretrained model: this script is for scales with ``sft.enabled=false``). For each
temperature it samples ``n`` responses (top-p 1) to each of the split's first ``problems`` problems, runs them in
the sandbox, and prints one row: the mean reward (the task's ``reward``: partial credit with ``fraction``), the
success rate (every test passed) with a 95 % bootstrap interval over problems, the share of problems with at least
one success, pass@k, the share of responses that ended before ``max_new_tokens``, their mean length, and the
seconds per sample on this machine. ``--out`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spolab.config import load_config
from spolab.eval.generate import execute, generate
from spolab.eval.passk import bootstrap_ci, pass_at_k_array
from spolab.models.build import load_pretrained
from spolab.tasks.base import get_task
from spolab.utils import seed_everything, set_threads


def measure(model, tok, task, problems, *, n: int, temperature: float, max_new_tokens: int, reward: str,
            batch_size: int, seed: int) -> dict:
    """One row: π_ref's samples at ``temperature`` on ``problems``, executed and summarised."""
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    samples = generate(model, tok, problems, n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, generator=gen, task=task)
    seconds = time.perf_counter() - t0
    execute(problems, samples, reward=reward, task=task)
    by = {p.id: [s for s in samples if s["problem_id"] == p.id] for p in problems}
    succ = np.array([[s["correct"] for s in by[p.id]] for p in problems], dtype=float)  # problems x n
    rew = np.array([[s["reward"] for s in by[p.id]] for p in problems], dtype=float)
    rng = np.random.default_rng(seed)
    _, lo, hi = bootstrap_ci(succ.mean(1), rng)
    row = {"temperature": temperature, "problems": len(problems), "n": n,
           "mean_reward": float(rew.mean()), "success": float(succ.mean()), "success_ci": [float(lo), float(hi)],
           "reward_ci": [float(x) for x in bootstrap_ci(rew.mean(1), rng)[1:]],
           "solved_share": float((succ.sum(1) > 0).mean()),
           "finished": float(np.mean([s["finished"] for s in samples])),
           "mean_tokens": float(np.mean([s["n_tokens"] for s in samples])),
           "seconds_per_sample": seconds / len(samples)}
    for k in (1, 4, 8):
        if k <= n:
            row[f"pass@{k}"] = float(pass_at_k_array(n, succ.sum(1).astype(int), k).mean())
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args_in = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="rl")
    ap.add_argument("--problems", type=int, default=24, help="the split's first N problems")
    ap.add_argument("--n", type=int, default=8, help="samples per problem and temperature")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 0.7, 1.0])
    ap.add_argument("--batch-size", type=int, default=32, help="sequences sampled in one forward pass")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(args_in)
    set_threads()
    cfg = load_config("data", overrides)
    seed_everything(cfg.seed)
    task = get_task(cfg.task)
    splits, _ = task.build(cfg.seed)
    if args.split not in splits:
        raise SystemExit(f"--split {args.split}: the task has splits {sorted(splits)}")
    problems = splits[args.split][: args.problems]
    model, tok = load_pretrained(cfg.model)
    model.eval().requires_grad_(False)
    rows = []
    head = (f"| task | T | problems × n | mean reward | success [95 % CI] | solved share | pass@1 | pass@{args.n} "
            f"| finished | tokens | s/sample |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for t in args.temperatures:
        row = measure(model, tok, task, problems, n=args.n, temperature=t, max_new_tokens=int(cfg.task.max_new_tokens),
                      reward=str(cfg.task.reward), batch_size=args.batch_size, seed=cfg.seed)
        row["task"] = " ".join(overrides)
        rows.append(row)
        lo, hi = row["success_ci"]
        print(f"| {row['task']} | {t} | {len(problems)} × {args.n} | {row['mean_reward']:.3f} | {row['success']:.3f} "
              f"[{lo:.3f}, {hi:.3f}] | {row['solved_share']:.2f} | {row['pass@1']:.3f} | {row.get(f'pass@{args.n}', float('nan')):.3f} "
              f"| {row['finished']:.2f} | {row['mean_tokens']:.0f} | {row['seconds_per_sample']:.2f} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
