"""Batched, KV-cached sampling and teacher-forced scoring.

Dimensions: B batch, P prompt length (left-padded), T response length (right-padded), V vocab.

:func:`sample` returns, for every generated token, the log-probability under the distribution
it was actually drawn from (temperature and top-p applied). :func:`score` recomputes per-token
log-probs of given responses under any model in one teacher-forced pass, at a given temperature;
at the sampler's temperature (and top-p 1) the two agree (tests/test_models.py,
``test_sampler_agrees_with_teacher_forcing``; tests/test_temperature.py), which is what lets
trajectories carry their behaviour log-probs. Both turn logits into log-probs with one function,
:func:`process_logits`: log softmax(logits / T), then the top-p nucleus. RL's training log-probs at
temperature T are :func:`score` at T (``spolab.algos.base.policy_logp``; docs/method.md, "Sampling
temperature").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from spolab.utils import device_of


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 = real token
    response_ids: torch.Tensor  # (B, T) right-padded with pad_id
    response_mask: torch.Tensor  # (B, T) 1 = generated token (EOS included)
    logprobs: torch.Tensor  # (B, T) log-prob of each token under the sampling distribution, 0 where masked
    entropy: torch.Tensor  # (B, T) entropy of the untempered policy (T=1, no top-p) at each visited state
    finished: torch.Tensor  # (B,) bool: ended with EOS within max_new_tokens


def chat_prompt(tokenizer, text: str) -> str:
    """A task prompt as the model reads it: a chat model's user turn (its tokenizer's chat template,
    with the assistant's turn opened), or the text itself for a tokenizer without a template (ours)."""
    if not getattr(tokenizer, "chat_template", None):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def encode_prompts(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, (B, P), on the CPU: with the tokenizer's special tokens (BOS),
    or, for a chat model, in its chat template (which writes its own special tokens)."""
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer([chat_prompt(tokenizer, t) for t in texts], padding=True, return_tensors="pt",
                        add_special_tokens=False)
    else:
        enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=True)
    return enc["input_ids"], enc["attention_mask"]


def response_token_ids(tokenizer, texts: list[str], add_eos: bool = True) -> list[list[int]]:
    """The token ids of each response text (no special tokens added), EOS appended if ``add_eos``: one
    batched tokenizer call, the same ids as one call per text."""
    if not texts:
        return []
    eos = [tokenizer.eos_token_id] if add_eos else []
    enc = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [ids + eos for ids in enc["input_ids"]]


def encode_responses(tokenizer, texts: list[str], add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded response ids and mask, (B, T); each response ends with EOS if ``add_eos``."""
    rows = response_token_ids(tokenizer, texts, add_eos)
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    """What the model wrote, as text: every generated token but the final EOS (and the padding after it).

    Special tokens the model generated *inside* its response (``<pad>``, ``<bos>``, ``<unk>``, an EOS
    that is not last) are kept in the text, so a program containing one fails to parse and scores 0:
    the reward scores what the model wrote, never a cleaned-up version of it. The sampler does not
    constrain which tokens may be generated."""
    out = []
    for ids, m in zip(response_ids.tolist(), response_mask.tolist()):
        toks = [t for t, keep in zip(ids, m) if keep]
        if toks and toks[-1] == tokenizer.eos_token_id:
            toks = toks[:-1]
        out.append(tokenizer.decode(toks, skip_special_tokens=False))
    return out


def _cache_kw(model) -> str:
    """transformers >= 5 names the KV cache argument ``cache``; older versions ``past_key_values``. A peft model
    (a LoRA policy, or its π_ref view) passes it on to its base model, whose signature says which."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _PreallocatedLayer(DynamicLayer):
    """One attention layer's KV cache in a buffer sized for the whole sample: each decoding step writes
    its keys and values in place and attention reads a view of the filled part. transformers'
    DynamicLayer concatenates instead, copying the whole cache at every step (on the miniature, a third
    of sampling time went to those copies). Same keys and values, same mask sizes; built from a filled
    DynamicLayer by :func:`_preallocate` after the prompt's prefill."""

    def __init__(self, layer, extra: int):
        super().__init__()
        k, v = layer.keys, layer.values
        L = k.shape[-2]
        self._k = k.new_empty(*k.shape[:2], L + extra, k.shape[-1])
        self._v = v.new_empty(*v.shape[:2], L + extra, v.shape[-1])
        self._k[:, :, :L], self._v[:, :, :L] = k, v
        self.length, self.device, self.is_initialized = L, k.device, True
        self.keys, self.values = k, v

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            raise RuntimeError(f"preallocated KV cache of {self._k.shape[-2]} positions cannot hold {end}")
        self._k[:, :, self.length:end], self._v[:, :, self.length:end] = key_states, value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._k, self._v = self._k.index_select(0, beam_idx), self._v.index_select(0, beam_idx)
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]


def _preallocate(past, extra: int) -> None:
    """Swap every plain DynamicLayer of a filled cache for a :class:`_PreallocatedLayer` with ``extra``
    free positions. A cache of another kind (sliding-window, quantised, a legacy tuple) is left as it is."""
    layers = getattr(past, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        return
    for i, layer in enumerate(layers):
        layers[i] = _PreallocatedLayer(layer, extra)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def process_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(..., V) raw logits -> (..., V) log-probs of the sampling distribution: log softmax(logits / T)
    over the last dimension in float32, then, for top-p < 1, renormalised over the smallest nucleus of
    mass >= top-p. The one place where logits become log-probs, for sampling (:func:`sample`) and for
    scoring (:func:`score`, :func:`score_groups`); at T 1 and top-p 1 it is exactly ``log_softmax(logits.float())``."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use a small value for near-greedy decoding)")
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_logp, idx = logp.sort(dim=-1, descending=True)
        cum = sorted_logp.exp().cumsum(-1)
        drop_sorted = (cum - sorted_logp.exp()) >= top_p  # keep the smallest prefix with mass >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logp = F.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
    return logp


@torch.no_grad()
def sample(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt row with a KV cache (rows of one prompt are
    consecutive in the output); stops when every row emitted EOS.

    The prompt is prefilled once and its cache repeated for the samples, so a group of k
    responses to one prompt costs one prefill, not k.
    """
    cache_kw = _cache_kw(model)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=_positions(prompt_mask), use_cache=True)
    past, logits = out[cache_kw], out.logits[:, -1]  # (B0, V)
    if num_samples > 1:
        idx = torch.arange(prompt_ids.shape[0], device=prompt_ids.device).repeat_interleave(num_samples)
        past.reorder_cache(idx)  # (B0, ...) -> (B0 * num_samples, ...)
        logits, prompt_ids, prompt_mask = logits[idx], prompt_ids[idx], prompt_mask[idx]
    _preallocate(past, max_new_tokens)
    B = prompt_ids.shape[0]
    device = prompt_ids.device
    attn = prompt_mask.clone()
    pos = attn.sum(-1, keepdim=True)  # (B, 1) next position id
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ids, lps, ents, masks = [], [], [], []
    for _ in range(max_new_tokens):
        raw = process_logits(logits, 1.0, 1.0)  # the untempered policy (its entropy is logged)
        ents.append(-(raw.exp() * raw).sum(-1))
        logp = raw if (temperature == 1.0 and top_p == 1.0) else process_logits(logits, temperature, top_p)
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)  # (B,)
        lps.append(logp.gather(-1, tok[:, None]).squeeze(-1))
        alive = ~done
        masks.append(alive)
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        ids.append(tok)
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=pos, use_cache=True, **{cache_kw: past})
        past, logits = out[cache_kw], out.logits[:, -1]
        pos = pos + 1
    mask = torch.stack(masks, 1).long()  # (B, T)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=torch.stack(ids, 1),
        response_mask=mask,
        logprobs=torch.stack(lps, 1) * mask,
        entropy=torch.stack(ents, 1) * mask,
        finished=done,
    )


@dataclass
class Chunk:
    """One sampler call of :func:`sample_problems`: U problems, ``num_samples`` rows each (B = U·num_samples)."""

    problems: list  # the U problems, once each
    prompt_ids: torch.Tensor  # (U, P) left-padded, on the model's device
    prompt_mask: torch.Tensor  # (U, P)
    rollout: Rollout  # (B, ·) rows, a problem's num_samples consecutive
    texts: list[str]  # (B,) decoded responses


@torch.no_grad()
def sample_problems(model, tokenizer, problems: list, prompt: Callable[[Any], str], *, num_samples: int,
                    max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                    generator: torch.Generator | None = None, batch_size: int = 1024) -> Iterator[Chunk]:
    """The one sampling loop of training (spolab.rollout.collect) and evaluation (spolab.eval.generate):
    ``num_samples`` responses to each problem's prompt (``prompt(problem)``, the task's text), in
    chunks of ``batch_size // num_samples`` problems whose samples share one prefill. Yields each
    chunk as soon as it is sampled (the caller scores it before the next one is drawn)."""
    model.eval()
    device = device_of(model)
    per_chunk = max(1, batch_size // num_samples)  # problems per sampler call
    for start in range(0, len(problems), per_chunk):
        unique = problems[start : start + per_chunk]
        ids, mask = encode_prompts(tokenizer, [prompt(p) for p in unique])
        ids, mask = ids.to(device), mask.to(device)
        ro = sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                    pad_id=tokenizer.pad_token_id, temperature=temperature, top_p=top_p, generator=generator,
                    num_samples=num_samples)
        yield Chunk(unique, ids, mask, ro, decode_responses(tokenizer, ro.response_ids, ro.response_mask))


def score(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
):
    """Teacher-forced per-token log-probs (B, T) of ``response_ids`` under ``model`` at ``temperature``:
    log softmax(logits / T) (:func:`process_logits`, top-p 1), the log-probs of the tempered policy
    softmax(logits / T) that :func:`sample` draws from at T.

    Differentiable (call under ``torch.no_grad()`` for frozen models). Masked positions are 0.
    With ``return_entropy`` also returns the (B, T) per-token entropy of that (tempered) policy.
    """
    P = prompt_ids.shape[1]
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P+T)
    attn = torch.cat([prompt_mask, response_mask], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=_positions(attn)).logits
    logits = logits[:, P - 1 : -1]  # (B, T, V): the logits that predict each response token
    logp_all = process_logits(logits, temperature, 1.0)  # float32 log softmax(logits / T)
    logp = logp_all.gather(-1, response_ids[..., None]).squeeze(-1) * response_mask
    if not return_entropy:
        return logp
    ent = -(logp_all.exp() * logp_all).sum(-1) * response_mask
    return logp, ent


@torch.no_grad()
def score_groups(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    num_samples: int | Sequence[int],
) -> torch.Tensor:
    """:func:`score` of ``num_samples`` responses per prompt, each prompt prefilled once (no grad).

    ``prompt_ids`` / ``prompt_mask`` are (B0, P), one row per prompt; ``response_ids`` /
    ``response_mask`` (B0·n, T) with the n responses of a prompt consecutive, as :func:`sample`
    returns them. ``num_samples`` may also be one count per prompt (B0 counts ≥ 1, B = their sum: one
    padded row per sequence, the reference tests/test_exact_mass.py holds the exact mass's prefix-tree
    forward to). The prompt's KV cache is repeated
    for its responses, so scoring costs one prefill per prompt plus T positions per response instead
    of P + T: equal to :func:`score` on the repeated prompts up to float rounding (tests/test_models.py).
    """
    cache_kw = _cache_kw(model)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=_positions(prompt_mask), use_cache=True)
    past, first = out[cache_kw], out.logits[:, -1:]  # (B0, 1, V): predicts each response's first token
    if not isinstance(num_samples, int) or num_samples > 1:
        counts = torch.as_tensor(num_samples, device=prompt_ids.device)
        idx = torch.arange(prompt_ids.shape[0], device=prompt_ids.device).repeat_interleave(counts)
        past.reorder_cache(idx)
        first, prompt_mask = first[idx], prompt_mask[idx]
    T = response_ids.shape[1]
    logits = first
    if T > 1:
        attn = torch.cat([prompt_mask, response_mask[:, :-1].to(prompt_mask.dtype)], dim=1)  # cache + new tokens
        pos = prompt_mask.sum(-1, keepdim=True) + torch.arange(T - 1, device=prompt_ids.device)[None]  # (B, T-1)
        out = model(input_ids=response_ids[:, :-1], attention_mask=attn, position_ids=pos, use_cache=True,
                    **{cache_kw: past})
        logits = torch.cat([first, out.logits], dim=1)  # (B, T, V)
    logp = process_logits(logits, 1.0, 1.0)
    return logp.gather(-1, response_ids[..., None]).squeeze(-1) * response_mask
