"""Tokenizer round trip, model sizes, name_or_path loading, sampler vs teacher forcing."""

import pytest
import torch
from omegaconf import OmegaConf

from spolab.config import load_config
from spolab.models.build import build_model, build_tokenizer, load_model, load_tokenizer, n_params
from spolab.rollout.sampler import (
    decode_responses,
    encode_prompts,
    encode_responses,
    process_logits,
    sample,
    score,
    score_groups,
)
from spolab.tasks.render import prompt_text, task_vocab


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(task_vocab())


def test_tokenizer_round_trip(tok, tmp_path):
    prompt = prompt_text([[[3, 1, 4], [1, 3, 4]], [[5, 9, 2, 6], 22], [[0, 0, 7], [0, 7]]])
    tok.save_pretrained(tmp_path)
    tok2 = load_tokenizer(tmp_path)
    ids = tok2(prompt)["input_ids"]
    assert ids[0] == tok2.bos_token_id and tok.unk_token_id not in ids
    assert tok2.decode(ids, skip_special_tokens=True) == prompt
    assert ids == tok(prompt)["input_ids"]
    r_ids, r_mask = encode_responses(tok2, ["sort | map + 1 | take 2", "sum"])
    assert r_ids[1, 1].item() == tok2.eos_token_id and r_mask[1].tolist()[:3] == [1, 1, 0]
    assert decode_responses(tok2, r_ids, r_mask) == ["sort | map + 1 | take 2", "sum"]


def test_every_prompt_has_the_same_length(tok):
    a = prompt_text([[[3], [4]], [[5, 9, 2, 6, 1, 1], 22], [[0, 0, 7], [0, 7]]])
    b = prompt_text([[[3, 1, 4, 4, 4, 4], [1, 3]], [[5], [2]], [[0, 7, 7], 0]])
    assert len(tok(a)["input_ids"]) == len(tok(b)["input_ids"]) == 46


@pytest.mark.parametrize("size,lo,hi", [("xs", 3e4, 1.5e5), ("s", 3e5, 7e5), ("m", 2e6, 5e6)])
def test_model_sizes(tok, size, lo, hi):
    cfg = load_config("sft", [f"model={size}"]).model
    assert lo < n_params(build_model(cfg, tok, seed=0)) < hi


def test_name_or_path_loads_a_saved_checkpoint(tok, tmp_path):
    cfg = load_config("sft", ["model=xs"]).model
    m = build_model(cfg, tok, seed=0)
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2 = load_model(tmp_path)
    ids, mask = encode_prompts(load_tokenizer(tmp_path), ["x 1 2 prog"])
    assert torch.allclose(m(input_ids=ids).logits, m2(input_ids=ids).logits)


@pytest.fixture(scope="module")
def model(tok):
    cfg = OmegaConf.create(dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, max_positions=64))
    return build_model(cfg, tok, seed=0).eval()


def test_sampler_agrees_with_teacher_forcing(tok, model):
    # prompts of different lengths exercise left padding and position ids
    ids, mask = encode_prompts(tok, ["x 1 2 prog", "x 1 2 3 4 5 ; x 7 prog", "prog"] * 4)
    ro = sample(model, ids, mask, max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0))
    assert ro.response_mask.sum() > 12
    lp, ent = score(model, ids, mask, ro.response_ids, ro.response_mask, return_entropy=True)
    assert (lp - ro.logprobs).abs().max() < 1e-5
    assert (ent - ro.entropy).abs().max() < 1e-4
    # a row after EOS is padding, masked out
    for row, m in zip(ro.response_ids, ro.response_mask):
        n = int(m.sum())
        assert (row[n:] == tok.pad_token_id).all()
        if n < row.shape[0]:
            assert row[n - 1] == tok.eos_token_id


def test_score_groups_equals_teacher_forcing_on_repeated_prompts(tok, model):
    """One prefill per prompt, its cache repeated for the n responses: the same log-probs as a full
    teacher-forced pass over each (prompt, response), for prompts of different lengths."""
    ids, mask = encode_prompts(tok, ["x 1 2 prog", "x 1 2 3 4 5 ; x 7 prog", "prog"])
    ro = sample(model, ids, mask, max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0), num_samples=4)
    assert (score_groups(model, ids, mask, ro.response_ids, ro.response_mask, 4) - ro.logprobs).abs().max() < 1e-5
    resp, rmask = ro.response_ids.clone(), ro.response_mask.clone()
    for i in range(len(resp)):  # responses of different lengths, padded after their end as the sampler pads
        resp[i, 2 + i % 9 :], rmask[i, 2 + i % 9 :] = tok.pad_token_id, 0
    full = score(model, ro.prompt_ids, ro.prompt_mask, resp, rmask)
    grouped = score_groups(model, ids, mask, resp, rmask, 4)
    assert grouped.shape == full.shape and (grouped[rmask == 0] == 0).all()
    assert (grouped - full).abs().max() < 1e-5
    one = score_groups(model, ids, mask, resp[::4, :1], rmask[::4, :1], 1)  # T = 1
    assert (one - full[::4, :1]).abs().max() < 1e-5


def test_sampler_temperature_top_p_logprobs(tok, model):
    ids, mask = encode_prompts(tok, ["x 1 2 prog"] * 8)
    ro = sample(model, ids, mask, max_new_tokens=6, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                temperature=0.5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    # recompute each step's processed distribution by teacher forcing and compare
    full = torch.cat([ids, ro.response_ids], 1)
    logits = model(input_ids=full).logits[:, ids.shape[1] - 1 : -1]
    for t in range(ro.response_ids.shape[1]):
        lp = process_logits(logits[:, t], 0.5, 0.9).gather(-1, ro.response_ids[:, t : t + 1]).squeeze(-1)
        m = ro.response_mask[:, t].bool()
        assert torch.allclose(lp[m], ro.logprobs[m, t], atol=1e-5)
        assert torch.isfinite(ro.logprobs[m, t]).all()


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = process_logits(logits, 1.0, 0.75).exp()[0]
    assert torch.allclose(p, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=1e-6)
    with pytest.raises(ValueError):
        process_logits(logits, 0.0, 1.0)


def test_sampler_shares_prefill_across_samples(tok, model):
    ids, mask = encode_prompts(tok, ["x 1 2 prog", "x 1 2 3 4 5 ; x 7 prog", "prog"])
    ro = sample(model, ids, mask, max_new_tokens=10, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0), num_samples=4)
    assert ro.response_ids.shape[0] == 12
    assert torch.equal(ro.prompt_ids, ids.repeat_interleave(4, 0))
    lp = score(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask)
    assert (lp - ro.logprobs).abs().max() < 1e-5
    assert len({tuple(r.tolist()) for r in ro.response_ids[:4]}) > 1  # the samples of one prompt differ


def test_the_preallocated_kv_cache_samples_what_the_growing_one_samples(tok, model, monkeypatch):
    """The sampler writes each step's keys and values into a buffer sized for the whole sample instead of
    concatenating (transformers' DynamicLayer): the same tokens, log-probs and entropies, bit for bit, with
    the prefill shared across samples and at a temperature and top-p."""
    from transformers.cache_utils import DynamicLayer

    from spolab.rollout import sampler

    ids, mask = encode_prompts(tok, ["x 1 2 prog", "x 1 2 3 4 5 ; x 7 prog", "prog"])
    swapped = []
    real = sampler._preallocate

    def spy(past, extra):
        real(past, extra)
        swapped.append([type(layer) for layer in past.layers])

    def run(kw):
        return sample(model, ids, mask, max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(0), num_samples=4, **kw)

    for kw in ({}, {"temperature": 0.6, "top_p": 0.9}):
        monkeypatch.setattr(sampler, "_preallocate", spy)
        fast = run(kw)
        monkeypatch.setattr(sampler, "_preallocate", lambda past, extra: None)  # transformers' own cache
        slow = run(kw)
        for a, b in ((fast.response_ids, slow.response_ids), (fast.logprobs, slow.logprobs),
                     (fast.entropy, slow.entropy), (fast.response_mask, slow.response_mask)):
            assert torch.equal(a, b)
    assert swapped and all(t is sampler._PreallocatedLayer for types in swapped for t in types)
    layer = DynamicLayer()  # full: a cache that cannot take another position says so
    layer.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    pre = sampler._PreallocatedLayer(layer, extra=1)
    pre.update(torch.ones(1, 1, 1, 4), torch.ones(1, 1, 1, 4))
    assert pre.get_seq_length() == 3 and torch.equal(pre.keys[0, 0, 2], torch.ones(4))
    with pytest.raises(RuntimeError, match="cannot hold 4"):
        pre.update(torch.ones(1, 1, 1, 4), torch.ones(1, 1, 1, 4))


@pytest.mark.parametrize("special", ["<pad>", "<bos>", "<unk>", "<eos>"])
def test_special_tokens_inside_a_response_score_zero(tok, special):
    """Score what the model wrote: a correct program with a special token inside it (anything but its
    final EOS) keeps the token in its text, fails to parse, and gets reward 0."""
    from spolab.rollout.collect import reward_of
    from spolab.rollout.sampler import decode_responses
    from spolab.tasks.problems import Problem

    prob = Problem("p", "test", 0, "sort", [[[3, 1, 2], [1, 2, 3]]], [[[5, 4], [4, 5]], [[2, 9, 1], [1, 2, 9]]])
    ids = tok("sort", add_special_tokens=False)["input_ids"]
    clean = torch.tensor([ids + [tok.eos_token_id, tok.pad_token_id]])
    dirty = torch.tensor([ids[:1] + [tok.convert_tokens_to_ids(special)] + ids[1:] + [tok.eos_token_id]])
    masks = torch.tensor([[1] * (len(ids) + 1) + [0]]), torch.ones_like(dirty)
    (good,), (bad,) = decode_responses(tok, clean, masks[0]), decode_responses(tok, dirty, masks[1])
    assert good == "sort" and reward_of(prob, good, True, "binary") == (1.0, True)
    assert special in bad and reward_of(prob, bad, True, "binary") == (0.0, False)
