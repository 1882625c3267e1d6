"""``python -m spolab.evaluate``: pass@k and diversity of a checkpoint on a held-out split.

generate (n samples per problem under a named protocol) -> execute -> score, as separate
steps (spolab.eval.generate). Writes ``{out_dir}/samples.jsonl`` (one line per sample:
problem, program, correct, ...), ``{out_dir}/per_problem.json`` and ``{out_dir}/eval.json``, one folder per split and protocol
(metrics with 95 % bootstrap intervals over problems: pass@k, and diversity among all samples,
among correct samples and per solved problem, spolab.eval.diversity), mirrors them into MLflow
(metrics, and both JSON files as artifacts), and writes ``{out_dir}/summary.json`` with the metrics
of every pair.

Once per split, with the first protocol that samples the policy itself (temperature 1, top-p 1), a task
that enumerates its solutions (the list DSL) also gets the exact success mass (spolab.eval.exact_mass,
``exact_mass`` in conf/evaluate.yaml): every correct program up to a size teacher-forced under the
policy and π_ref, as ``<split>/exact/*`` keys of that pair. Every evaluation writes the enumerated
programs and its policy's log-prob of each to ``{out_dir}/exact_logprobs.jsonl`` (only its header
where no exact evaluation ran). With ``exact_mass.ref_logprobs`` pointing at that file of an evaluation
of π_ref (the workflow's SFT evaluation), the programs and π_ref's log-probs are read from it instead
of enumerating and running π_ref again: the same numbers, without either cost.

A protocol with n 0 (``exact``, conf/protocol/exact.yaml) samples nothing: its pair holds the exact success
mass alone, with ``<split>/pass@k`` = the mean over problems of 1 − (1 − P_θ(correct | x))^k and, per
problem, ``n`` 0 and the ``exact/*`` values. It reuses the mass a sampling pair of the same split computed
(so an evaluation with both pays for one), else computes it here (no samples: no coverage).

With ``scale.world_size`` W > 1, launched by torchrun (:mod:`spolab.dist`), each process generates and
executes a contiguous share of every split's problems with its own random stream (seeded by (seed, rank));
the samples are gathered, and rank 0 alone scores the exact success mass and writes every file and MLflow run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spolab import dist
from spolab.atomic import sha256_file
from spolab.cli import entry
from spolab.config import load_protocol
from spolab.eval.exact_mass import (
    LOGPROBS_FORMAT,
    LogprobsHeader,
    RefLogprobs,
    exact_evaluation,
    logprobs_rows,
    weights_sha256,
    write_logprobs,
)
from spolab.eval.generate import evaluate_policy
from spolab.models.build import load_model, load_tokenizer
from spolab.models.lora import Reference, base_path, is_lora, load_policy
from spolab.tasks.base import get_task
from spolab.tasks.io import load_split
from spolab.tracking import NullTracker, Tracker
from spolab.utils import (
    autocast,
    memory_metrics,
    reset_peak_memory,
    resolve_device,
    seed_everything,
    set_threads,
    write_json,
    write_jsonl,
)
from spolab.validate import validate

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Evaluate ``model_dir`` on every split of ``splits`` under every protocol of ``protocols`` (the sampling
    ones only on ``sampled_splits``, :func:`split_protocols`); each pair writes ``{out_dir}/{split}-{protocol}/`` and is one MLflow run."""
    set_threads()
    validate(cfg, "evaluate")
    with dist.launch(cfg, "evaluate", resolve_device(cfg.device), trains=False) as device:  # W > 1: this rank's device
        return _evaluate(cfg, device)


def _evaluate(cfg: DictConfig, device) -> dict:
    main = dist.is_main()  # rank 0 scores the exact mass and writes; every rank samples its share
    if not (Path(cfg.model_dir) / "config.json").exists():
        raise FileNotFoundError(f"model_dir={cfg.model_dir} holds no saved model (config.json missing)")
    tok = load_tokenizer(cfg.model_dir)
    # a LoRA run's: its base model and adapter. Nothing here needs a gradient: without requires_grad, bf16
    # autocast keeps no bf16 copy of the weights (spolab.memory)
    model = load_policy(cfg.model_dir, device=device).eval().requires_grad_(False)
    ref = None
    if cfg.ref_model_dir and is_lora(model) and _same_dir(base_path(cfg.model_dir), cfg.ref_model_dir):
        ref = Reference(model)  # π_ref is the adapter's base model: the same network, adapters disabled
    elif cfg.ref_model_dir:
        ref = load_model(cfg.ref_model_dir, device=device).eval().requires_grad_(False)
    task = get_task(cfg.task)
    exact_protocol = _exact_protocol(cfg, task, list(cfg.protocols))  # on some split (max_len, π_ref's file)
    max_len = task.enumeration_size(cfg.exact_mass.max_len) if exact_protocol else None
    ref_is_model = ref is not None and Path(cfg.ref_model_dir).resolve() == Path(cfg.model_dir).resolve()
    ref_file = None  # π_ref's log-probs of the enumerated programs, from an evaluation of π_ref
    if exact_protocol and cfg.exact_mass.ref_logprobs:
        ref_file = RefLogprobs.read(cfg.exact_mass.ref_logprobs, ref_model_dir=cfg.ref_model_dir, max_len=max_len,
                                    max_new_tokens=cfg.task.max_new_tokens, precision=cfg.precision,
                                    device=device.type, data_dir=cfg.data_dir, splits=list(cfg.splits))
    exact_rows, exact_splits = [], {}  # this policy's log-probs of the enumerated programs: exact_logprobs.jsonl
    computed = {}  # split -> (metrics, per_problem) of its exact success mass, for a later n-0 pair
    results = {}
    for split in cfg.splits:
        problems = load_split(cfg.data_dir, split)
        limit = (cfg.n_problems or {}).get(split)
        if limit:
            problems = problems[:limit]
        here = split_protocols(cfg, split)  # the sampling protocols only on sampled_splits
        split_exact = _at_policy(here) if exact_protocol else None  # this split's mass-computing pair
        for proto_name in here:
            protocol = scaled_protocol(proto_name, cfg.get("n_samples"))
            seed_everything(cfg.seed)
            out = Path(cfg.out_dir) / f"{split}-{protocol.name}"
            tracker = Tracker.from_config(
                out, cfg, run_name=f"eval-{cfg.name}-{split}-{protocol.name}",
                tags={"stage": "eval", "algo": cfg.name, "split": split, "protocol": protocol.name,
                      "scale": cfg.scale.name, "seed": str(cfg.seed)},
            ) if main else NullTracker()
            with tracker, autocast(device, cfg.precision):
                reset_peak_memory(device)
                if protocol.n > 0:
                    metrics, per_problem, samples = evaluate_policy(
                        model, tok, problems, protocol, max_new_tokens=cfg.task.max_new_tokens,
                        batch_size=cfg.forward_batch_size, seed=cfg.seed, prefix=split, ref_model=ref,
                        reward=cfg.task.reward, task=task,
                        score_rows=cfg.scale.get("micro_batch_size"),  # π_ref's KL scoring per pass
                    )
                else:  # no sampling: the exact success mass is the whole evaluation (exact_pass_at_k below)
                    metrics, per_problem, samples = {}, {"problem_id": [p.id for p in problems]}, []
                if not main:
                    continue  # the other ranks only sample
                if protocol.name == split_exact:
                    programs, ref_logp = ref_file.select(split, problems) if ref_file else (None, None)
                    exact, exact_pp, programs, logp = exact_evaluation(
                        model, tok, task, problems, samples, ks=protocol.ks, max_len=max_len,
                        max_new_tokens=cfg.task.max_new_tokens, ref_model=ref, ref_is_model=ref_is_model,
                        programs=programs, ref_logp=ref_logp, prefix=split, seed=cfg.seed,
                    )
                    exact_rows += logprobs_rows(split, problems, programs, logp)
                    exact_splits[split] = {"data_sha256": sha256_file(Path(cfg.data_dir) / f"{split}.jsonl"),
                                           "problems": len(problems)}
                    computed[split] = (exact, exact_pp)
                if split in computed and (protocol.name == split_exact or protocol.n == 0):
                    exact, exact_pp = computed[split]
                    metrics.update(exact if protocol.n > 0 else exact_pass_at_k(exact, split, protocol.ks))
                    by_id = dict(zip((p.id for p in problems), zip(*exact_pp.values())))  # align on problem_id
                    for j, key in enumerate(exact_pp):
                        per_problem[key] = [by_id[i][j] for i in per_problem["problem_id"]]
                    if protocol.n == 0:
                        per_problem["n"] = per_problem["n_correct"] = [0] * len(per_problem["problem_id"])
                metrics.update(memory_metrics(device))
                write_jsonl(out / "samples.jsonl", samples)
                write_json(out / "per_problem.json", per_problem)
                finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}  # NaN: a per-solved
                # key with no problem solved; null in the JSON files, no MLflow point (as in metrics.jsonl)
                result = {"model_dir": str(cfg.model_dir), "split": split,
                          "protocol": OmegaConf.to_container(protocol), **finite}
                write_json(out / "eval.json", result)
                tracker.log_summary(metrics)
                tracker.log_artifact(out / "eval.json")
                tracker.log_artifact(out / "per_problem.json")
            log.info("%s %s %s: %s", cfg.name, split, protocol.name,
                     {k: round(v, 4) for k, v in metrics.items() if "/pass@" in k and "_ci" not in k})
            results[f"{split}-{protocol.name}"] = finite
    if not main:
        return results
    header = LogprobsHeader(LOGPROBS_FORMAT, str(cfg.model_dir), weights_sha256(cfg.model_dir), max_len or 0,
                            cfg.task.max_new_tokens, cfg.precision, device.type, exact_splits)
    write_logprobs(cfg.out_dir, header, exact_rows)  # header only where no exact evaluation ran
    write_json(Path(cfg.out_dir) / "summary.json", results)  # every pair of this model: the DAG's output
    return results


def scaled_protocol(name: str, n_samples: int | None) -> DictConfig:
    """The protocol ``name`` (conf/protocol), with a sampling protocol's n replaced by ``n_samples`` where set (a
    scale's budget: its temperature and top-p stay) and its ks cut to those <= n, plus n itself (pass@n needs
    no more samples). The exact protocol (n 0) is unchanged."""
    protocol = load_protocol(name)
    if n_samples and int(protocol.n) > 0:
        n = int(n_samples)
        protocol.n = n
        protocol.ks = sorted({*(k for k in protocol.ks if k <= n), n})
    return protocol


def exact_pass_at_k(exact: dict, split: str, ks) -> dict:
    """The metrics of an n-0 (exact) pair: the exact success mass's ``{split}/exact/*`` keys (its pass@k among
    them, 1 − (1 − P)^k averaged over problems, with their intervals) and the same pass@k under the plain
    ``{split}/pass@k`` names, which the pair's protocol (n 0) marks as exact."""
    out = dict(exact)
    for k in ks:
        for tail in ("", "_ci_lo", "_ci_hi"):
            out[f"{split}/pass@{k}{tail}"] = exact[f"{split}/exact/pass@{k}{tail}"]
    return out


def _same_dir(a, b) -> bool:
    """Whether two paths name one folder."""
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def split_protocols(cfg: DictConfig, split: str) -> list[str]:
    """The protocols a split is evaluated under: every one of ``protocols``, except that the sampling ones
    (n > 0) run only on ``sampled_splits`` (null: every split); the exact protocol (n 0) runs everywhere."""
    sampled = cfg.get("sampled_splits")
    return [p for p in cfg.protocols if sampled is None or split in sampled or int(load_protocol(p).n) == 0]


def _exact_protocol(cfg: DictConfig, task, protocols: list[str]) -> str | None:
    """The protocol of ``protocols`` whose pair computes the exact success mass (:func:`_at_policy`), or None
    (with the reason logged) where there is none, ``exact_mass.enabled`` is false or the task cannot enumerate
    its solutions."""
    if not cfg.exact_mass.enabled:
        log.info("exact_mass.enabled=false: no exact success mass")
        return None
    if not task.enumerates_solutions:
        log.info("task=%s cannot enumerate its correct programs: no exact success mass (exact_mass skipped)", task.name)
        return None
    found = _at_policy(protocols)
    if found is None:
        log.info("no protocol of %s samples the policy itself (temperature 1, top-p 1): no exact success mass",
                 protocols)
    return found


def _at_policy(protocols: list[str]) -> str | None:
    """The first of ``protocols`` at the policy itself (temperature 1, top-p 1): a sampling one comes first in
    the workflow's order, so its samples give the coverage, and a later n-0 pair reuses its mass."""
    for name in protocols:
        protocol = load_protocol(name)
        if protocol.temperature == 1.0 and protocol.top_p == 1.0:
            return protocol.name
    return None


main = entry("evaluate", run)


if __name__ == "__main__":
    main()
