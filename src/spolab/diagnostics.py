"""``python -m spolab.diagnostics algo=spo [rl overrides]``: does RL have signal that transfers?

The cross-prompt gradient cosine (docs/design.md §3): the cosine between the policy gradients
an algorithm computes at the SFT policy on two *disjoint* batches of fresh prompts, next to the
cosine between two independent samplings of the *same* prompts. A task whose reward can improve
the policy in general gives the first a clear positive value; near 0 means every prompt pulls in
its own direction, so updates on RL prompts barely transfer to fresh (test) prompts.

    cos_cross = cos(g(A), g(B)),  A ∩ B = ∅      cos_same = cos(g(A), g'(A)),  fresh samples

where g(·) is the gradient of the algorithm's own loss (its first optimiser step of an update,
before clipping), each batch ``prompts`` prompts × ``group_size`` samples. Nothing is trained.
Prints one line per algorithm and writes ``{out_dir}/grad_cosine.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from spolab.builder import build_rl_run
from spolab.cli import entry
from spolab.eval.grad_cosine import gradient_cosines
from spolab.utils import seed_everything, set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)
PAIRS = 6  # draws of (A, B, A resampled) per run: the SD of cos_cross over them is printed beside its mean


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "rl")
    seed_everything(cfg.seed)
    r = build_rl_run(cfg, torch.device("cpu"))  # the RL run's algorithm at the SFT policy (Q̂0 of the task's reward)
    res = gradient_cosines(r.algo, r.problems, prompts=cfg.batch_size // cfg.group_size,
                           pairs=PAIRS, group_size=cfg.group_size,
                           max_new_tokens=cfg.task.max_new_tokens, reward_kind=cfg.task.reward, seed=cfg.seed)
    res = {"algo": cfg.algo.name, "sft_dir": str(cfg.sft_dir), **res}
    print(f"{cfg.algo.name}: cos_cross {res['cos_cross']:+.3f} ± {res['cos_cross_sd']:.3f}, cos_same "
          f"{res['cos_same']:+.3f} ± {res['cos_same_sd']:.3f}, reward {res['reward']:.3f} "
          f"({res['pairs']} pairs of {res['prompts']}-prompt batches)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grad_cosine.json").write_text(json.dumps(res, indent=2))
    return res


main = entry("rl", run)


if __name__ == "__main__":
    main()
