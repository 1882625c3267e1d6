"""``python -m spolab.sft``: supervised initialisation of the policy (π_ref of every RL run).

Trains a small Llama from scratch (or fine-tunes ``model.name_or_path``) to write a problem's
program after its prompt; the loss is the mean token cross-entropy over response tokens.
Targets are the task's (``Task.sft_targets``): for the miniature ``generator`` (the generating program)
or ``all_solvers`` (each epoch, one program drawn from all equivalent programs of <= ``solver_max_len``
primitives: a softer target), a share of them taught a habitual flaw; for a code task the dataset's
reference solutions.

With ``sft.enabled=false`` nothing is trained: π_ref is ``model.name_or_path`` itself (an instruct
model, as the paper's π_ref is Llama-3.1-8B-Instruct), validated and saved as this step's model, so
every later step reads ``{out_dir}/model`` either way.

Checkpoints every ``ckpt_every`` steps into ``{out_dir}/checkpoint`` (model, optimizer,
schedule, RNG); a killed run restarted with the same command resumes from there. The final
model and tokenizer go to ``{out_dir}/model``.

With ``scale.world_size`` W > 1, launched by torchrun (:mod:`spolab.dist`), SFT is data-parallel: every
rank draws the same batch, runs the forward and backward passes of its contiguous share of its rows, and
the gradients are averaged over the ranks, each rank's loss weighted by its share of the batch's response
tokens, so that every step is the one-process step. Validation splits its problems across the ranks; rank 0
alone writes (checkpoints, metrics, MLflow, the model).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from spolab import dist
from spolab.checkpoint import load_state, remove_checkpoints, resume_point, save_checkpoint, save_model
from spolab.cli import entry
from spolab.config import run_identity
from spolab.errors import ConfigError
from spolab.eval.generate import evaluate_policy
from spolab.models.build import build_model, load_model, load_pretrained, load_tokenizer, n_params
from spolab.rollout.sampler import encode_prompts, encode_responses, score
from spolab.schedule import lr_at
from spolab.tasks.base import get_task
from spolab.tasks.io import load_split
from spolab.tracking import NullTracker, Tracker
from spolab.utils import autocast, memory_metrics, resolve_device, seed_everything, set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)


def sft_loss(model, prompt_ids, prompt_mask, resp_ids, resp_mask) -> torch.Tensor:
    """Mean negative log-likelihood per response token: -sum(mask * log p) / sum(mask)."""
    logp = score(model, prompt_ids, prompt_mask, resp_ids, resp_mask)  # (B, T)
    return -(logp.sum() / resp_mask.sum())


def reference_only(cfg: DictConfig, device) -> dict:
    """``sft.enabled=false``: π_ref is the pretrained model itself. Validates it like a trained one
    and saves it (safetensors, fp32: a GGUF checkpoint cannot be written back as GGUF) as this
    step's model, which q0, sources, rl and evaluate read."""
    if not cfg.model.name_or_path:
        raise ConfigError("sft.enabled=false: π_ref is then the pretrained model, so model.name_or_path must name "
                          "one (a folder, or package:<module>); the from-scratch miniature needs SFT")
    out = Path(cfg.out_dir)
    model, tok = load_pretrained(cfg.model, device)
    model.requires_grad_(False)  # validated only: no autocast weight copy under bf16 (spolab.memory)
    val = load_split(cfg.data_dir, "val")[: cfg.val_problems]
    tags = {"stage": "sft", "algo": "sft", "model": cfg.model.name, "seed": str(cfg.seed), "scale": cfg.scale.name,
            "sft": "disabled"}
    tracker = (Tracker.from_config(out, cfg, run_name=f"sft-{cfg.model.name}-s{cfg.seed}", tags=tags)
               if dist.is_main() else NullTracker())
    with tracker, autocast(device, cfg.precision):
        m, _, _ = evaluate_policy(model, tok, val, cfg.val_protocol, max_new_tokens=cfg.task.max_new_tokens,
                                  seed=cfg.seed, prefix="val", progress=False, task=get_task(cfg.task),
                                  reward=cfg.task.reward)  # across processes: each rank its share of val
        metrics = {k: v for k, v in m.items() if not k.endswith(("_lo", "_hi"))}
        tracker.log(metrics, 0)
        if dist.is_main():
            save_model(out / "model", model, tok)
        summary = {"steps": 0, "n_params": n_params(model), **metrics, **memory_metrics(device)}
        tracker.log_summary(summary)
    log.info("SFT disabled: π_ref = %s (%d params), val pass@1 %.3f", cfg.model.name_or_path, n_params(model),
             metrics["val/pass@1"])
    return summary


def run(cfg: DictConfig) -> dict:
    threads = set_threads()
    validate(cfg, "sft")
    # W > 1: this rank's device, in its process group
    with dist.launch(cfg, "sft", resolve_device(cfg.device), trains=cfg.sft.enabled) as device:
        seed_everything(cfg.seed)
        if not cfg.sft.enabled:
            return reference_only(cfg, device)
        return _train(cfg, device, threads)


def _own_share(p_ids, p_mask, r_ids, r_mask) -> tuple[tuple, float]:
    """This rank's contiguous share of a batch's rows (as even as the batch allows; all of it in one process),
    and the weight of its token-mean loss: its share of the batch's response tokens (spolab.dist.loss_share)."""
    if dist.world_size() == 1:
        return (p_ids, p_mask, r_ids, r_mask), 1.0
    own = dist.shard(torch.arange(len(p_ids)), even=False)
    share = dist.loss_share(r_mask[own].sum(), r_mask.sum())
    return (p_ids[own], p_mask[own], r_ids[own], r_mask[own]), share


def _train(cfg: DictConfig, device, threads: int) -> dict:
    main = dist.is_main()  # rank 0 decides and writes; every rank reads
    out = Path(cfg.out_dir)
    final_dir = out / "model"
    gguf_file = cfg.model.get("gguf_file")
    tok = load_tokenizer(cfg.model.name_or_path or Path(cfg.data_dir) / "tokenizer", gguf_file=gguf_file)
    task = get_task(cfg.task)
    train = load_split(cfg.data_dir, "sft")
    val = load_split(cfg.data_dir, "val")[: cfg.val_problems]
    train, targets, n_flawed = task.sft_targets(train, cfg.sft, cfg.seed)

    # ---- model, optimiser, resume
    ckpt, start = resume_point(out, cfg) if main else (None, None)  # a checkpoint of this config, or a clean start
    if main and ckpt is None:
        shutil.rmtree(final_dir, ignore_errors=True)  # a previous run's model belongs to another config
    ckpt, start = dist.broadcast_object((ckpt, start))
    if ckpt is not None:
        model = load_model(ckpt, device=device)
    elif cfg.model.name_or_path:
        model = load_model(cfg.model.name_or_path, device=device, gguf_file=gguf_file)
    else:
        model = build_model(cfg.model, tok, seed=cfg.seed).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr, betas=(0.9, 0.95), weight_decay=cfg.sft.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.sft.batch_size)
    total = cfg.sft.epochs * steps_per_epoch
    step = 0
    if ckpt is not None:
        state = load_state(ckpt, map_location="cpu")  # every rank reads it; each moves it to its own device
        optim.load_state_dict(state["optim"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])
        np.random.set_state(state["np_rng"])
        log.info("resuming from step %d / %d", step, total)

    tracker = Tracker.from_config(
        out, cfg, run_name=f"sft-{cfg.model.name}-s{cfg.seed}", resume_step=start,
        tags={"stage": "sft", "algo": "sft", "model": cfg.model.name, "seed": str(cfg.seed), "scale": cfg.scale.name},
    ) if main else NullTracker()  # one MLflow run and one metrics.jsonl: rank 0's
    log.info("SFT: %d problems (%d with a flawed target), %d params, %d steps, on %s (%s), %d threads", len(train),
             n_flawed, n_params(model), total, device, cfg.precision, threads)

    # ---- prompts are tokenised once; targets per step (all_solvers draws one per problem)
    prompts = [task.prompt(p) for p in train]
    pick = random.Random(f"{cfg.seed}-targets")
    if ckpt is not None:
        pick.setstate(state["pick_rng"])
    bar = tqdm(total=total, initial=step, desc="sft", mininterval=2, disable=not main)
    t_last, tok_count = time.perf_counter(), 0
    metrics: dict = {}
    with tracker, autocast(device, cfg.precision):
        while step < total:
            # ---- batch: a fixed permutation per epoch, so a resumed run sees the same data
            epoch, i = divmod(step, steps_per_epoch)
            perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
            idx = perm[i * cfg.sft.batch_size : (i + 1) * cfg.sft.batch_size]
            p_ids, p_mask = encode_prompts(tok, [prompts[j] for j in idx])
            r_ids, r_mask = encode_responses(tok, [pick.choice(targets[j]) for j in idx])
            p_ids, p_mask, r_ids, r_mask = (x.to(device) for x in (p_ids, p_mask, r_ids, r_mask))
            tok_count += int(p_mask.sum() + r_mask.sum())
            rows, share = _own_share(p_ids, p_mask, r_ids, r_mask)  # across processes: this rank's rows
            # ---- loss, step
            model.train()
            for g in optim.param_groups:
                g["lr"] = lr_at(step, warmup=cfg.sft.warmup_steps, total=total, min_ratio=cfg.sft.min_lr_ratio,
                                peak=cfg.sft.lr, decay_after_warmup=True)  # warm-up to lr, then cosine to lr·min_ratio
            optim.zero_grad(set_to_none=True)
            if len(rows[0]):
                loss = sft_loss(model, *rows)
                (loss * share).backward()
            else:  # a last batch with fewer rows than processes: this rank adds nothing to the mean gradient
                loss = torch.zeros((), device=device)
                for p in model.parameters():
                    p.grad = torch.zeros_like(p) if p.requires_grad else None
            if dist.world_size() > 1:  # the batch's loss and gradient: the ranks' weighted shares, averaged
                loss = dist.all_reduce_mean(loss.detach() * share)
                dist.all_reduce_grads(model.parameters())
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.sft.grad_clip)
            optim.step()
            step += 1
            bar.update()
            # ---- log, evaluate, checkpoint
            if step % cfg.sft.log_every == 0 or step == total:
                dt = time.perf_counter() - t_last
                metrics = {"loss/sft": loss.item(), "opt/lr": optim.param_groups[0]["lr"],
                           "opt/grad_norm": float(gnorm), "perf/tokens_per_s": tok_count / dt, "sft/epoch": epoch,
                           **memory_metrics(device)}
                tracker.log(metrics, step)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                t_last, tok_count = time.perf_counter(), 0
            if (cfg.sft.eval_every and step % cfg.sft.eval_every == 0) or step == total:
                m, _, _ = evaluate_policy(model, tok, val, cfg.val_protocol, max_new_tokens=cfg.task.max_new_tokens,
                                          seed=cfg.seed, prefix="val", progress=False, task=task,
                                          reward=cfg.task.reward)
                tracker.log({k: v for k, v in m.items() if not k.endswith(("_lo", "_hi"))}, step)
                log.info("step %d: loss %.3f val pass@1 %.3f", step, loss.item(), m["val/pass@1"])
                metrics.update(m)
            if step % cfg.sft.ckpt_every == 0 and step < total:
                if main:  # every rank holds the same weights, optimiser and random states
                    save_checkpoint(out, step, model, tok, {
                        "optim": optim.state_dict(), "step": step, "torch_rng": torch.get_rng_state(),
                        "py_rng": random.getstate(), "np_rng": np.random.get_state(), "pick_rng": pick.getstate()},
                        run_identity(cfg))
                    tracker.flush()  # MLflow holds every point up to the checkpoint
                dist.barrier()  # the checkpoint is complete before any rank goes on
        bar.close()
        if main:
            save_model(final_dir, model, tok)
        summary = {"steps": step, "n_params": n_params(model), "sft/flawed_share": n_flawed / len(train), **metrics}
        tracker.log_summary(summary)
    if main:
        remove_checkpoints(out)
    return summary


main = entry("sft", run)


if __name__ == "__main__":
    main()
