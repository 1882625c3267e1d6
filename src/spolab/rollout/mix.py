"""The RL run's data mix: which stored sources feed a batch and in what shares, their pools on
disk, the stream of fresh prompts, and the per-source accounting of a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spolab.errors import ConfigError
from spolab.rollout.offpolicy import STORED_SOURCES
from spolab.rollout.trajectories import load_trajectories


def check_data_mix(algo_cls, mix) -> tuple[int, dict[str, float]]:
    """Validate a data mix against an algorithm; returns (sync_every, stored-source shares)."""
    sources = dict(mix.sources or {})
    unknown = set(sources) - set(STORED_SOURCES)
    if unknown:
        raise ConfigError(f"data_mix.sources has unknown source(s) {sorted(unknown)}; valid: {list(STORED_SOURCES)}")
    shares = [mix.fresh_fraction, *sources.values()]
    if abs(sum(shares) - 1.0) > 1e-6 or min(shares) < 0:
        raise ConfigError(f"data_mix={mix.name}: fresh_fraction + source shares must be non-negative and sum to 1 "
                          f"(got fresh_fraction={mix.fresh_fraction}, sources={sources})")
    if "replay" in sources and mix.fresh_fraction == 0:
        raise ConfigError(f"data_mix={mix.name}: replay stores the run's own fresh samples, so it needs "
                          "fresh_fraction > 0")
    if mix.sync_every < 1:
        raise ConfigError(f"data_mix.sync_every must be >= 1, got {mix.sync_every}")
    if algo_cls.on_policy and (mix.fresh_fraction < 1.0 or mix.sync_every != 1 or any(sources.values())):
        raise ConfigError(
            f"algo={algo_cls.name} is on-policy but data_mix={mix.name} feeds it off-policy data "
            f"(data_mix.fresh_fraction={mix.fresh_fraction}, data_mix.sync_every={mix.sync_every}, "
            f"data_mix.sources={sources}); use data_mix=online or an off-policy algorithm (algo=spo)")
    return mix.sync_every, sources


def load_pools(cfg, sources: dict[str, float]) -> dict[str, list]:
    """Stored pools of the mix's sources (replay excepted: the run fills it), relabelled with
    their source name. earlier_run reads a finished run's dump (``cfg.earlier_run_path``)."""
    pools = {}
    for src, share in sources.items():
        if src == "replay" or share == 0:
            continue
        path = Path(cfg.earlier_run_path) if src == "earlier_run" else Path(cfg.sources_dir) / f"{src}.jsonl"
        if not path.exists():
            hint = ("run the study's PPO run first (Snakemake does)" if src == "earlier_run"
                    else "run `python -m spolab.sources` (Snakemake rule sources) first")
            raise FileNotFoundError(f"data_mix source {src!r} reads {path}, which does not exist: {hint}")
        pools[src] = load_trajectories(path)
        for t in pools[src]:
            t.source = src
    return pools


class PromptStream:
    """Fresh prompts: a seeded permutation of the pool, reshuffled when exhausted."""

    def __init__(self, problems, seed: int, start: int = 0):
        self.problems, self.seed, self.pos = problems, seed, start

    def take(self, n: int):
        out = []
        for _ in range(n):
            epoch, i = divmod(self.pos, len(self.problems))
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.problems))
            out.append(self.problems[perm[i]])
            self.pos += 1
        return out


def source_metrics(parts: dict[str, list], batch_size: int) -> dict[str, float]:
    """Per-source accounting of one batch: the share each source actually filled and its mean reward."""
    out = {}
    for src, trajs in parts.items():
        out[f"data/frac_{src}"] = len(trajs) / batch_size
        out[f"data/reward_{src}"] = float(np.mean([t.reward for t in trajs])) if trajs else float("nan")
    return out
