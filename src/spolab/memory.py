"""The memory plan: bytes per device that each model entry point holds at a scale, computed from the
configuration before any job runs (``python -m spolab.plan``; ``spolab.validate`` refuses a scale whose
plan exceeds ``scale.gpu_memory_gb``).

Sizes come from the model's config on the meta device (:func:`architecture`): parameters are counted
exactly, nothing is downloaded and nothing is allocated. The byte counts follow what the code holds:

- **weights**: the policy in fp32 (``spolab.models.build.load_model`` / ``build_model`` keep fp32 weights;
  ``precision=bf16`` is autocast of the forward passes, ``spolab.utils.autocast``), 4 B/param. Under bf16,
  ``torch.autocast`` also keeps a bf16 copy of every weight that requires grad for as long as its context
  lasts (the RL and SFT loops, and each evaluation, run inside one): +2 B/param for the models whose
  parameters require grad (the trained policy and PPO's critic; not the models that only sample or score,
  made ``requires_grad_(False)``: π_ref in ``rl``, ``sources`` and ``q0``, both models of ``evaluate``, and
  ``sft``'s model when it trains nothing). A data mix with ``sync_every`` > 1 keeps
  a stale behaviour copy of the policy (``spolab.builder``): +4 B/param (with LoRA, a copy of the adapter
  only: +4 B per adapter parameter, ``spolab.models.lora.Behaviour``).
- **gradients**: fp32, 4 B/param (``sft`` when it trains, ``rl``).
- **optimiser**: AdamW's two fp32 moments, 8 B/param. No master copy: the weights already are fp32.
- **π_ref**: the frozen reference, a second fp32 copy of the model (``rl``: every algorithm loads it,
  ``spolab.builder.build_rl_run``; ``evaluate`` with ``ref_model_dir``, as the workflow runs it).
- **critic**: PPO's ``ValueModel``, a separate copy of the SFT body (no LM head) plus a scalar head, with
  its own gradients and AdamW: 16 B/param (+2 under bf16, autocast's copy).
- **LoRA** (``rl`` with ``model.lora``, spolab.models.lora): the model's weights stay fp32 and frozen (no
  autocast copy); only the adapters train, r·(in + out) parameters per targeted linear layer
  (:func:`lora_params`), with their fp32 weights, autocast copy, gradients and AdamW moments. π_ref is
  the same network with its adapters disabled: 0 bytes. PPO's critic is a second adapter and its scalar
  head on the same weights: 16 B (+2) per adapter and head parameter.
- **activations**: the largest forward pass of the entry point (:func:`train_pass_bytes`,
  :func:`nograd_pass_bytes`, :func:`sampling_bytes`): a training forward's saved tensors, or a frozen
  model's teacher-forced scoring, or the sampler's prefill and logits.
- **KV cache**: the sampler's cache at its largest batch and full length, :func:`kv_cache_bytes`.

With ``scale.sharding=fsdp`` weights, gradients, optimiser, π_ref and critic divide by ``scale.world_size``;
activations and the KV cache do not. Batches are per device: a job-wide batch of B sequences (``batch_size``,
``forward_batch_size``, the sampler's chunks) is ceil(B / world_size) sequences on each device, and no
teacher-forced pass (training or scoring) takes more than ``scale.micro_batch_size`` of them at once when
that is set.

The phases of a job do not overlap: gradients exist from a backward to its optimiser step
(``zero_grad(set_to_none=True)``), training activations within one forward/backward, the KV cache within
one sampling call. So the peak is

    total = weights + optimiser + π_ref + critic + max(gradients + activations_update, activations_score,
                                                       KV cache + activations_sampling)

and ``peak`` names the phase that sets it. Not counted: the CUDA context (~0.5-1 GiB), the allocator's
fragmentation, FSDP's all-gathered parameters of the layer being computed (and the next one, prefetched),
the exact-mass teacher forcing of ``evaluate`` (the list-DSL miniature only) and the host's memory.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spolab.config import SCALE_PLACEMENT, SHARDINGS
from spolab.errors import ConfigError

GIB = 2**30
FP32 = 4  # bytes: weights, gradients, moments, log-probs
PLANNED = ("sft", "q0", "sources", "rl", "evaluate")  # the entry points that run a model on a device
SAMPLER_BATCH = 1024  # sequences per call of collect / evaluate_policy / attach_ref_logp where no key sets it
# (rl's fresh samples and π_ref scores, rl's and sft's validation): their default batch_size
ITEMS = ("weights", "gradients", "optimiser", "π_ref", "critic", "activations", "KV cache")

# conf/model/<name>.yaml keys -> a transformers config's attribute: a from-scratch model's shape, and the
# architecture of a pretrained one whose folder is not on this machine
ARCH_KEYS = {"hidden_size": "hidden_size", "intermediate_size": "intermediate_size", "num_layers": "num_hidden_layers",
             "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size",
             "tie_embeddings": "tie_word_embeddings", "max_positions": "max_position_embeddings"}


# ------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Arch:
    """What the plan reads of a model: its exact parameter count (and its PPO critic's) and its shape."""

    name: str
    params: int  # every parameter of the causal LM (tied embeddings once)
    critic_params: int  # PPO's ValueModel: the body without its LM head, plus a (hidden + 1) scalar head
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None  # a from-scratch model's longest sequence (None: a pretrained model's context)
    linears: tuple[tuple[str, int, int], ...] = ()  # (layer name, in, out) of every linear layer but the LM head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def arch_of(config, name: str, max_positions: int | None = None) -> Arch:
    """:class:`Arch` of a transformers causal-LM config, its parameters counted on the meta device:
    the model is built there (no memory, no weights) and ``sum(p.numel())`` taken. The critic is
    ``AutoModel`` of the same config (PPO's ValueModel body) plus its (hidden + 1) head."""
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        params = sum(p.numel() for p in lm.parameters())
        body = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    head = lm.get_output_embeddings()
    linears = tuple((name.rsplit(".", 1)[-1], m.in_features, m.out_features) for name, m in lm.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not head)
    heads = config.num_attention_heads
    return Arch(name=name, params=params, critic_params=body + config.hidden_size + 1, hidden=config.hidden_size,
                intermediate=config.intermediate_size, layers=config.num_hidden_layers, heads=heads,
                kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                vocab=config.vocab_size, max_positions=max_positions, linears=linears)


def lora_params(arch: Arch, settings: dict) -> int:
    """Parameters of one LoRA adapter set (``settings``: spolab.models.lora.lora_settings): r·(in + out) for
    every linear layer whose name is one of ``target_modules`` (A is r × in, B out × r)."""
    targets, r = set(settings["target_modules"]), int(settings["r"])
    return sum(r * (i + o) for name, i, o in arch.linears if name in targets)


def _task_tokenizer(task_cfg):
    """The tokenizer a from-scratch model is built for: its task's own (the miniature's word-level one),
    written to a temporary folder and read back, as the data step writes it."""
    from spolab.models.build import load_tokenizer
    from spolab.tasks.base import task_class

    cls = task_class(task_cfg.name)
    if not cls.builds_tokenizer:
        raise ConfigError(f"task.name={task_cfg.name!r}: a model trained from scratch (model.name_or_path null) needs "
                          "a task with its own tokenizer (listdsl); set model.name_or_path")
    with tempfile.TemporaryDirectory() as d:
        cls(task_cfg).save_tokenizer(Path(d))
        return load_tokenizer(d)


def _disk_config(model_cfg):
    """The config of ``model.name_or_path`` read from disk (config.json, or the GGUF file's header), or None
    when the checkpoint is not on this machine."""
    from transformers import AutoConfig

    from spolab.models.build import _gguf, resolve_name_or_path

    try:
        folder = Path(resolve_name_or_path(model_cfg.name_or_path))
    except ConfigError:  # package:<module> not installed
        return None
    gguf_file = model_cfg.get("gguf_file")
    if gguf_file and (folder / gguf_file).is_file():
        return AutoConfig.from_pretrained(str(folder), local_files_only=True, **_gguf(gguf_file))
    if not gguf_file and (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return None


def _conf_config(model_cfg):
    """A LlamaConfig from the architecture keys of conf/model/<name>.yaml, or None when it gives none."""
    from transformers import LlamaConfig

    given = {k: model_cfg.get(k) for k in ARCH_KEYS if model_cfg.get(k) is not None}
    if not given:
        return None
    missing = [k for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size") if k not in given]
    if missing:
        raise ConfigError(f"model.{missing[0]}: missing: conf/model/{model_cfg.name}.yaml gives part of the "
                          f"architecture of {model_cfg.name_or_path!r}; the memory plan needs "
                          f"{', '.join('model.' + k for k in missing)} too")
    kw = {ARCH_KEYS[k]: v for k, v in given.items()}
    kw.setdefault("num_key_value_heads", given["num_heads"])
    kw.setdefault("tie_word_embeddings", False)
    return LlamaConfig(**kw)


def architecture(model_cfg, task_cfg) -> Arch:
    """The model of a config's ``model`` group, on the meta device (:func:`_architecture`; computed once per
    model and task config in a process)."""
    from omegaconf import OmegaConf

    return _architecture(OmegaConf.to_yaml(model_cfg, resolve=True), OmegaConf.to_yaml(task_cfg, resolve=True))


@functools.lru_cache(maxsize=16)
def _architecture(model_yaml: str, task_yaml: str) -> Arch:
    """The model of a ``model`` group (YAML text), on the meta device.

    From scratch (``model.name_or_path`` null): ``spolab.models.build.build_model`` itself, with the task's
    tokenizer. Pretrained: the checkpoint's own config when it is on this machine (config.json, or the
    GGUF header of ``model.gguf_file``), else the architecture keys of conf/model/<name>.yaml (hidden_size,
    intermediate_size, num_layers, num_heads, num_kv_heads, vocab_size, tie_embeddings); where both exist
    they must agree."""
    from omegaconf import OmegaConf

    from spolab.models.build import build_model

    model_cfg, task_cfg = OmegaConf.create(model_yaml), OmegaConf.create(task_yaml)
    if not model_cfg.name_or_path:
        tok = _task_tokenizer(task_cfg)
        with torch.device("meta"):
            config = build_model(model_cfg, tok).config
        return arch_of(config, model_cfg.name, max_positions=model_cfg.max_positions)
    disk = _disk_config(model_cfg)
    if disk is not None:  # the checkpoint's own numbers; the conf file's, where it gives some, must agree
        for key, attr in ARCH_KEYS.items():
            want = model_cfg.get(key)
            if want is not None and getattr(disk, attr, want) != want:
                raise ConfigError(f"model.{key}={want!r}: must match the checkpoint's {attr}="
                                  f"{getattr(disk, attr)!r} ({model_cfg.name_or_path})")
        return arch_of(disk, model_cfg.name)
    conf = _conf_config(model_cfg)
    if conf is None:
        raise ConfigError(f"model.name_or_path={model_cfg.name_or_path!r}: not on this machine, and conf/model/"
                          f"{model_cfg.name}.yaml gives no architecture: add hidden_size, intermediate_size, num_layers, "
                          "num_heads, num_kv_heads, vocab_size and tie_embeddings (the checkpoint's config.json) for "
                          "the memory plan")
    return arch_of(conf, model_cfg.name)


# ------------------------------------------------------------------------------------------ the hardware


@dataclass(frozen=True)
class Hardware:
    """The ``scale`` block's placement keys (conf/scale/*.yaml; absent: one device, no check)."""

    world_size: int = 1  # devices a job runs on
    sharding: str = "none"  # none: every device holds every model and its state | fsdp: they are sharded
    gpu_memory_gb: float | None = None  # GiB per device; None: no check (a CPU scale)
    micro_batch_size: int | None = None  # sequences per device in one teacher-forced pass; None: the whole batch
    prompt_tokens: int | None = None  # the longest prompt, in tokens (None: a from-scratch model's max_positions
    # less the response)
    launcher: str = "auto"  # how the workflow starts a data-parallel job (workflow/rules/common.smk); no memory

    def shard(self, nbytes: int) -> int:
        """Model state on one device: all of it, or its 1/world_size share under FSDP."""
        return -(-nbytes // self.world_size) if self.sharding == "fsdp" else nbytes

    def rows(self, n: int) -> int:
        """A job-wide batch of ``n`` sequences on one device: ceil(n / world_size)."""
        return -(-n // self.world_size)

    def micro(self, n: int, group: int = 1) -> int:
        """Sequences of one teacher-forced pass on one device: the per-device batch, at most micro_batch_size,
        taken in whole ``group``s (π_ref scores a prompt's n samples in one pass: at least one group)."""
        n = self.rows(n)
        if not self.micro_batch_size:
            return n
        return min(n, max(group, self.micro_batch_size // group * group))


def hardware(cfg) -> Hardware:
    """:class:`Hardware` from ``cfg.scale`` (defaults where a key is absent)."""
    scale = cfg.get("scale") or {}
    got = {k: scale.get(k) for k in SCALE_PLACEMENT if scale.get(k) is not None}
    hw = Hardware(**got)
    if hw.sharding not in SHARDINGS:
        raise ConfigError(f"scale.sharding={hw.sharding!r}: must be one of {list(SHARDINGS)}")
    return hw


# ------------------------------------------------------------------------------------------ the formulas


def layer_activation_bytes(arch: Arch, seq_len: int, b: int, autocast: bool) -> int:
    """Bytes a training forward keeps for its backward, per token per decoder layer (transformers'
    LlamaDecoderLayer with SDPA attention), ``b`` bytes per activation element (2 under bf16 autocast, 4 in
    fp32), h hidden, i intermediate, S = ``seq_len``:

        16·h                  both RMSNorms' fp32 input and normalised output (4·h each)
      + b·n_in·h              the linear layers' inputs: n_in = 5 under autocast (q, k, v, gate and up each
                              cast their input to bf16), 2 in fp32 (the attention's and the MLP's input, shared)
      + b·4·h                 q, k, v as SDPA reads them (k and v repeated to every head) and its output
      + b·4·i                 the SwiGLU MLP: gate, up, silu(gate) and their product (the down projection's input)
      + b·S                   the attention mask's row of each query
      + b·2·kv_dim            with grouped-query attention, the un-repeated k and v that the forward's own KV
                              cache holds (transformers builds one: use_cache defaults to true)
      + 4·heads + 8           SDPA's log-sum-exp, RMSNorm's two rsqrt

    Checked on small models: equal to the bytes of the tensors the forward saves
    (``torch.autograd.graph.saved_tensors_hooks``, CPU autocast), the cache term aside."""
    h, i = arch.hidden, arch.intermediate
    n_in = 5 if autocast else 2
    gqa = 2 * arch.kv_dim if arch.kv_heads < arch.heads else 0
    return 16 * h + b * (n_in * h + 4 * h + 4 * i + seq_len + gqa) + 4 * arch.heads + 8


def inference_token_bytes(arch: Arch, b: int) -> int:
    """Bytes per token of a forward pass without grad, besides its KV cache and logits: one layer at a time
    holds the fp32 residual stream (4·h), an RMSNorm's fp32 temporaries (8·h) and the MLP's gate, up and
    silu(gate) (3·b·i): 12·h + 3·b·i."""
    return 12 * arch.hidden + 3 * b * arch.intermediate


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, seq_len: int, batch: int, nbytes: int) -> int:
    """The sampler's KV cache: 2 (k and v) × layers × kv_heads × head_dim × seq_len × batch × bytes."""
    return 2 * layers * kv_heads * head_dim * seq_len * batch * nbytes


def train_pass_bytes(arch: Arch, rows: int, prompt: int, response: int, b: int, autocast: bool,
                     lm_head: bool = True) -> int:
    """Activations of one training forward/backward of ``rows`` sequences of S = prompt + response tokens:

        rows · [ S·layers·layer_activation_bytes + S·(8·h + 4)         (the final RMSNorm)
                 + (LM) S·b·h + S·b·V + 12·V·T                          (the LM head's input, the logits of
                                                                        every position in the activation dtype,
                                                                        and over the T response positions the
                                                                        fp32 log-softmax kept for the backward
                                                                        plus two fp32 temporaries: the cast and
                                                                        its scaling by 1/T, the gradient)
                 | (critic) S·4·h ]                                     (the body's fp32 last hidden state)"""
    S = prompt + response
    per_seq = S * arch.layers * layer_activation_bytes(arch, S, b, autocast) + S * (8 * arch.hidden + 4)
    if lm_head:
        per_seq += S * b * arch.hidden + S * b * arch.vocab + 12 * arch.vocab * response
    else:
        per_seq += S * FP32 * arch.hidden
    return rows * per_seq


def nograd_pass_bytes(arch: Arch, rows: int, prompt: int, response: int, b: int, lm_head: bool = True) -> int:
    """A teacher-forced pass without grad (π_ref's log-probs, the critic's values) of ``rows`` sequences of
    S = prompt + response tokens:

        rows · [ S·inference_token_bytes + S·2·layers·kv_dim·b          (the forward's own KV cache)
                 + (LM) S·b·V + 8·V·T                                   (all logits; the fp32 cast and log-softmax
                                                                        of the T response positions)
                 | (critic) S·4·h ]"""
    S = prompt + response
    per_seq = S * inference_token_bytes(arch, b) + S * 2 * arch.layers * arch.kv_dim * b
    per_seq += S * b * arch.vocab + 8 * arch.vocab * response if lm_head else S * FP32 * arch.hidden
    return rows * per_seq


def sampling_bytes(arch: Arch, rows: int, prompts: int, prompt: int, b: int) -> int:
    """The sampler's tensors besides its KV cache: the prefill of ``prompts`` prompts of ``prompt`` tokens
    (inference_token_bytes per token, and the logits of every prompt position: transformers computes all of
    them) and each decoding step's logits for ``rows`` sequences (b·V, and 16·V of fp32 log-probs,
    probabilities and their products):

        prompts·prompt·(inference_token_bytes + b·V) + rows·V·(b + 16)"""
    return prompts * prompt * (inference_token_bytes(arch, b) + b * arch.vocab) + rows * arch.vocab * (b + 16)


# ------------------------------------------------------------------------------------------ what an entry runs


@dataclass(frozen=True)
class Workload:
    """What one entry point runs, in job-wide numbers (before the per-device split)."""

    label: str  # "sft", "rl (ppo)", ...
    prompt: int  # prompt tokens P
    response: int  # response tokens T (task.max_new_tokens)
    trains: bool = False  # holds gradients and AdamW moments (sft with sft.enabled, rl)
    model_cached: bool = False  # the model's parameters require grad: autocast keeps their bf16 copy
    ref: bool = False  # holds a frozen π_ref besides the model
    ref_cached: bool = False  # π_ref's parameters require grad (evaluate loads it with .eval() only)
    critic: bool = False  # PPO's separate value network
    lora_params: int = 0  # rl with model.lora: the trainable adapter parameters (0: full fine-tuning)
    behaviour_copy: bool = False  # a stale copy of the policy that samples (data_mix.sync_every > 1)
    train_rows: int = 0  # sequences of one optimiser step's forward/backward
    score_rows: int = 0  # sequences of the largest frozen-model scoring pass (logits over the responses)
    group_rows: int = 0  # sequences of π_ref's scoring of sampled groups (validation's and evaluate's KL)
    group: int = 1  # ... scored a prompt's `group` samples at a time (spolab.eval.generate)
    value_rows: int = 0  # sequences of the critic's no-grad value pass (PPO)
    sample_rows: int = 0  # sequences sampled at once
    sample_prompts: int = 0  # prompts prefilled at once


def chunk_rows(n_per_prompt: int, batch: int, limit: int | None = None) -> int:
    """Sequences of one sampler call: ``max(1, batch // n)`` prompts × n samples
    (``spolab.rollout.sampler.sample_problems``), at most ``limit`` sequences in all."""
    rows = max(1, batch // n_per_prompt) * n_per_prompt
    return min(rows, limit) if limit else rows


def sequence_lengths(cfg, arch: Arch, hw: Hardware) -> tuple[int, int]:
    """(P, T): the longest prompt (``scale.prompt_tokens``, or a from-scratch model's max_positions less the
    response) and the response (``task.max_new_tokens``), in tokens."""
    T = int(cfg.task.max_new_tokens)
    if hw.prompt_tokens:
        P = int(hw.prompt_tokens)
    elif arch.max_positions:
        P = arch.max_positions - T
        if P < 1:
            raise ConfigError(f"task.max_new_tokens={T}: must leave room for a prompt within model.max_positions="
                              f"{arch.max_positions}")
    else:
        raise ConfigError(f"scale.prompt_tokens=None: must be set for a pretrained model ({cfg.model.name}): the "
                          "longest prompt, in tokens, that the memory plan sizes sequences with")
    if arch.max_positions and P + T > arch.max_positions:
        raise ConfigError(f"scale.prompt_tokens={P}: with task.max_new_tokens={T} must fit model.max_positions="
                          f"{arch.max_positions}")
    return P, T


def _val_rows(cfg, n_problems: int) -> tuple[int, bool]:
    """(sequences of one validation sampler call, whether π_ref scores them): ``evaluate_policy`` at its
    default batch; with a π_ref and the protocol at temperature 1, top-p 1 it scores the chunk for the KL."""
    p = cfg.val_protocol
    return chunk_rows(int(p.n), SAMPLER_BATCH, n_problems * int(p.n)), p.temperature == 1.0 and p.top_p == 1.0


def workload(cfg, entry: str, arch: Arch, hw: Hardware, validation: bool = True) -> Workload:
    """What ``entry`` (one of :data:`PLANNED`) runs with config ``cfg``: which models it holds and its largest
    batch of each kind, read off its code (the module named in each branch). ``validation`` false: an rl
    update without the run's validation sampling (the benchmark's, spolab.bench)."""
    P, T = sequence_lengths(cfg, arch, hw)
    if entry == "sft":  # spolab.sft: trains at sft.batch_size, or (sft.enabled false) only validates
        rows, _ = _val_rows(cfg, int(cfg.val_problems))
        trains = bool(cfg.sft.enabled)
        return Workload("sft", P, T, trains=trains, model_cached=trains,  # reference_only: requires_grad off
                        train_rows=int(cfg.sft.batch_size) if trains else 0,
                        sample_rows=rows, sample_prompts=rows // int(cfg.val_protocol.n))
    if entry == "q0":  # spolab.q0: π_ref (with .eval(), its parameters require grad) samples n_ref per prompt
        rows = chunk_rows(int(cfg.n_ref), int(cfg.forward_batch_size))
        return Workload("q0", P, T, sample_rows=rows, sample_prompts=rows // int(cfg.n_ref))  # π_ref without grad
    if entry == "sources":  # spolab.sources: frozen π_ref samples the pools and scores them
        fbs, problems = int(cfg.forward_batch_size), int(cfg.problems)
        per = int(cfg.other_policy.per_problem)
        other = chunk_rows(per, fbs, problems * per)
        prompts = min(fbs, problems)  # decoding: a chunk of prompts, each continued from `restarts` first tokens
        decoding = prompts * int(cfg.decoding.restarts)
        most = max(per, int(cfg.decoding.restarts), int(cfg.expert.per_problem), int(cfg.random.per_problem))
        return Workload("sources", P, T, score_rows=min(fbs, problems * most),  # attach_ref_logp, per pool
                        sample_rows=max(other, decoding), sample_prompts=max(other // per, prompts))
    if entry == "evaluate":  # spolab.evaluate: the policy (and π_ref for the KL) per protocol
        from spolab.config import load_protocol

        ref = cfg.get("ref_model_dir") is not None
        rows = prompts = 0
        scored = (0, 1)  # (sequences, group) of π_ref's largest KL scoring pass
        for name in cfg.protocols:
            p = load_protocol(name)
            if int(p.n) == 0:  # exact: no sampling (its teacher-forced mass is not planned: list-DSL only)
                continue
            r = chunk_rows(int(p.n), int(cfg.forward_batch_size))
            rows, prompts = max(rows, r), max(prompts, r // int(p.n))
            if ref and p.temperature == 1.0 and p.top_p == 1.0 and hw.micro(r, int(p.n)) > hw.micro(*scored):
                scored = (r, int(p.n))  # π_ref scores the chunk's samples for the KL (score_groups)
        return Workload("evaluate", P, T, ref=ref, group_rows=scored[0], group=scored[1],  # both models without grad
                        sample_rows=rows, sample_prompts=prompts)
    if entry == "rl":  # spolab.rl / builder / train.train_step / algos
        from spolab.algos import get_algorithm
        from spolab.models.lora import lora_settings
        from spolab.rollout.mix import check_data_mix
        from spolab.rollout.offpolicy import allocate

        algo = get_algorithm(cfg.algo.name)
        sync_every, sources = check_data_mix(algo, cfg.data_mix)
        bs, g = int(cfg.batch_size), int(cfg.group_size)
        fresh = chunk_rows(g, SAMPLER_BATCH, allocate(bs, cfg.data_mix.fresh_fraction, sources)["fresh"])
        val, val_scored = _val_rows(cfg, int(cfg.val_problems)) if validation else (0, False)
        train = bs // int(cfg.algo.get("minibatches", 1))  # SPO: the whole batch at each of its steps
        rescored = algo.tempered and cfg.temperature != 1.0  # π_ref's log-probs at T: the whole batch at once
        score = bs if rescored else min(bs, SAMPLER_BATCH)  # attach_ref_logp / π_ref at T, row by row
        label = f"rl ({cfg.algo.name})" if cfg.data_mix.name == "online" else f"rl ({cfg.algo.name}, {cfg.data_mix.name})"
        lora = lora_settings(cfg.model)
        if lora:
            label = f"{label[:-1]}, LoRA r {lora['r']})"
        return Workload(label, P, T, trains=True, model_cached=True, ref=True, critic=algo.has_critic,
                        lora_params=lora_params(arch, lora) if lora else 0,
                        behaviour_copy=sync_every > 1, train_rows=train, score_rows=score,
                        group_rows=val if val_scored else 0, group=int(cfg.val_protocol.n),  # validation's KL
                        value_rows=bs if algo.has_critic else 0, sample_rows=max(fresh, val),
                        sample_prompts=max(fresh // g, val // int(cfg.val_protocol.n)))
    raise ValueError(f"no memory plan for entry {entry!r}; planned: {list(PLANNED)}")


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Plan:
    """Bytes per device of one entry point: ``items`` (:data:`ITEMS`), the peak ``total`` and the phase that sets
    it, and ``parts``, the items that add up to the total (the peak phase's activations)."""

    label: str
    items: dict[str, int]
    total: int
    peak: str  # update | scoring | sampling
    parts: dict[str, int] = field(default_factory=dict)

    def gib(self, key: str | None = None) -> float:
        return (self.total if key is None else self.items[key]) / GIB


def plan_bytes(arch: Arch, work: Workload, hw: Hardware, precision: str) -> Plan:
    """The plan of ``work`` on ``hw`` (the module docstring says what each item counts and how the total is
    formed). ``precision`` bf16: activations, logits and the KV cache in 2 bytes, and autocast's bf16 copy of
    the weights that require grad; fp32: 4 bytes, no copy."""
    bf16 = precision == "bf16"
    b = 2 if bf16 else FP32
    N, Nc = arch.params, arch.critic_params
    P, T = work.prompt, work.response
    cast = 2 if bf16 else 0  # autocast's bf16 copy, bytes per parameter
    items = {
        "weights": hw.shard(N * (FP32 + (cast if work.model_cached else 0) + (FP32 if work.behaviour_copy else 0))),
        "gradients": hw.shard(FP32 * N) if work.trains else 0,
        "optimiser": hw.shard(2 * FP32 * N) if work.trains else 0,
        "π_ref": hw.shard(N * (FP32 + (cast if work.ref_cached else 0))) if work.ref else 0,
        "critic": hw.shard(Nc * (4 * FP32 + cast)) if work.critic else 0,
    }
    if work.lora_params:  # frozen fp32 weights; the adapters train; π_ref = the weights with adapters off
        La = work.lora_params
        items.update({
            "weights": hw.shard(N * FP32 + La * (FP32 + cast + (FP32 if work.behaviour_copy else 0))),
            "gradients": hw.shard(FP32 * La),
            "optimiser": hw.shard(2 * FP32 * La),
            "π_ref": 0,
            "critic": hw.shard((La + arch.hidden + 1) * (4 * FP32 + cast)) if work.critic else 0,
        })
    update = 0
    if work.train_rows:
        rows = hw.micro(work.train_rows)
        update = train_pass_bytes(arch, rows, P, T, b, bf16)
        if work.critic:  # PPO: the critic's graph is alive with the policy's until their joint backward
            update += train_pass_bytes(arch, rows, P, T, b, bf16, lm_head=False)
    score = max(nograd_pass_bytes(arch, hw.micro(work.score_rows), P, T, b),
                nograd_pass_bytes(arch, hw.micro(work.group_rows, work.group), P, T, b),
                nograd_pass_bytes(arch, hw.micro(work.value_rows), P, T, b, lm_head=False))
    sample_rows = hw.rows(work.sample_rows)
    sampling = sampling_bytes(arch, sample_rows, hw.rows(work.sample_prompts), P, b)
    kv = kv_cache_bytes(arch.layers, arch.kv_heads, arch.head_dim, P + T, sample_rows, b)
    items["activations"] = max(update, score, sampling)
    items["KV cache"] = kv
    persistent = {k: items[k] for k in ("weights", "optimiser", "π_ref", "critic")}
    phases = {"update": {"gradients": items["gradients"], "activations": update},
              "scoring": {"activations": score},
              "sampling": {"KV cache": kv, "activations": sampling}}
    peak = max(phases, key=lambda k: sum(phases[k].values()))
    parts = {k: v for k, v in {**persistent, **phases[peak]}.items() if v}
    return Plan(work.label, items, sum(parts.values()), peak, parts)


def plan_entry(cfg, entry: str, arch: Arch | None = None, hw: Hardware | None = None,
               validation: bool = True) -> Plan:
    """The plan of entry point ``entry`` with its config ``cfg`` (its model: ``architecture(cfg.model,
    cfg.task)`` unless given; its hardware: ``cfg.scale`` unless given; ``validation``: see :func:`workload`)."""
    arch = arch or architecture(cfg.model, cfg.task)
    hw = hw or hardware(cfg)
    return plan_bytes(arch, workload(cfg, entry, arch, hw, validation), hw, cfg.precision)


def _gib(nbytes: int) -> str:
    """GiB with one decimal, or three significant digits below 1 GiB."""
    x = nbytes / GIB
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def fits(plan: Plan, hw: Hardware) -> bool:
    return hw.gpu_memory_gb is None or plan.total <= hw.gpu_memory_gb * GIB


def _hint(cfg, entry: str, arch: Arch, hw: Hardware) -> str:
    """What would make it fit: for rl without LoRA, LoRA adapters (``lora=on``); the largest micro_batch_size at
    this world size; the smallest FSDP world size (powers of 2, up to 1024; sharding is planned, not implemented)."""
    from dataclasses import replace

    def ok(h: Hardware, c=cfg) -> bool:
        try:
            return fits(plan_entry(c, entry, arch, h), h)
        except ConfigError:
            return False

    ways = []
    if entry == "rl" and not (cfg.get("model") or {}).get("lora"):
        from omegaconf import OmegaConf

        from spolab.models.lora import DEFAULTS

        with_lora = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with_lora.model.lora = dict(DEFAULTS)
        if ok(hw, with_lora):
            ways.append("train LoRA adapters (lora=on; a scale with rl_lora: true does it for every study run)")
    current = hw.micro_batch_size or 1 << 20
    micro = next((m for m in (2**k for k in range(20, -1, -1)) if m < current and ok(replace(hw, micro_batch_size=m))),
                 None)
    if micro is not None:
        ways.append(f"set scale.micro_batch_size <= {micro}")
    world = next((w for w in (2**k for k in range(11)) if w >= hw.world_size and ok(replace(hw, sharding="fsdp", world_size=w))),
                 None)
    if world is not None and (world, "fsdp") != (hw.world_size, hw.sharding):
        ways.append((f"set scale.sharding=fsdp with scale.world_size >= {world}" if hw.sharding != "fsdp"
                     else f"raise scale.world_size to >= {world}") + " (FSDP is not implemented yet)")
    if not ways:
        return ("neither LoRA, a micro_batch_size nor FSDP up to 1024 devices fits: shorten the sequences "
                "(task.max_new_tokens, scale.prompt_tokens) or the sampling batches")
    return " or ".join(ways)


def check_memory(cfg, entry: str, plan: Plan | None = None, hint: str | None = None) -> None:
    """Refuse (ConfigError, one line) an entry point whose plan exceeds ``scale.gpu_memory_gb`` per device:
    the entry, its total, the budget, the biggest items, and what would make it fit (``hint``, else
    :func:`_hint`). Nothing is checked when ``scale.gpu_memory_gb`` is null (a CPU scale). ``plan``: the
    entry's plan, when already made."""
    hw = hardware(cfg)
    if hw.gpu_memory_gb is None:
        return
    arch = architecture(cfg.model, cfg.task)
    plan = plan or plan_entry(cfg, entry, arch, hw)
    if fits(plan, hw):
        return
    biggest = sorted(plan.parts.items(), key=lambda kv: -kv[1])
    items = ", ".join(f"{k} {_gib(v)}" for k, v in biggest)
    raise ConfigError(f"scale={cfg.scale.name}: {plan.label} needs {_gib(plan.total)} GiB per device ({items}; peak in "
                      f"{plan.peak}) > scale.gpu_memory_gb {hw.gpu_memory_gb:g}; {hint or _hint(cfg, entry, arch, hw)} "
                      "(python -m spolab.plan scale=" + str(cfg.scale.name) + " shows the plan)")


BENCH_HINT = ("benchmark LoRA adapters (bench fine_tuning=[lora]) or a smaller model (bench sizes), or set "
              "scale.micro_batch_size")


def bench_plans(cfg) -> list[tuple[object, Plan]]:
    """(rl config, plan) of every row the benchmark (``cfg``: its configuration) times: each an RL update of
    its variant on its model size (no validation: the benchmark times train steps), fully fine-tuned or with
    LoRA (``fine_tuning``), in one process on one device at one device's batch (spolab.perf.bench_rl_config).
    TRL's peer row is not planned."""
    from dataclasses import replace

    from spolab.perf import bench_rl_config

    out = []
    for size in cfg.sizes:
        for tuning in cfg.fine_tuning:
            for variant in cfg.variants:
                if variant == "trl_grpo":
                    continue
                rl = bench_rl_config(variant, size, tuning, cfg)
                plan = plan_entry(rl, "rl", validation=False)
                out.append((rl, replace(plan, label=f"bench {variant} ({size}, {'LoRA' if tuning == 'lora' else 'full'})")))
    return out


def check_bench_memory(cfg) -> None:
    """:func:`check_memory` of every benchmark row (:func:`bench_plans`): the first over budget is refused
    (nothing is planned without ``scale.gpu_memory_gb``)."""
    if hardware(cfg).gpu_memory_gb is None:
        return
    for rl, plan in bench_plans(cfg):
        check_memory(rl, "rl", plan, hint=BENCH_HINT)
