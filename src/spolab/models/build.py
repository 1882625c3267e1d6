"""Word-level tokenizer and small Llama models (DESIGN §4).

The tokenizer and the model are ordinary Hugging Face objects: saved with
``save_pretrained`` and loaded with ``from_pretrained``, so a real checkpoint
(``model.name_or_path``) goes through the same code as the from-scratch miniature.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIALS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one id per whitespace-separated word of ``words``."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
    for w in words:
        if w in vocab:
            raise ValueError(f"duplicate word {w!r} in the task vocabulary")
        vocab[w] = len(vocab)
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=SPECIALS["unk_token"]))
    core.pre_tokenizer = WhitespaceSplit()
    bos = SPECIALS["bos_token"]
    core.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIALS)
    tok.padding_side = "left"  # prompts are left-padded for batched generation
    return tok


def _local(path: str | Path) -> dict:
    """``local_files_only`` for a path on disk: a local checkpoint never triggers a hub lookup."""
    return {"local_files_only": True} if Path(path).exists() else {}


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(str(path), **_local(path))
    if tok.pad_token is None:  # many HF causal LMs ship without one
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def build_model(model_cfg, tokenizer, seed: int | None = None) -> LlamaForCausalLM:
    """A ``LlamaForCausalLM`` from a size config (conf/model/*.yaml), randomly initialised."""
    if seed is not None:
        torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.get("num_kv_heads", model_cfg.num_heads),
        max_position_embeddings=model_cfg.max_positions,
        rope_theta=model_cfg.get("rope_theta", 10000.0),
        tie_word_embeddings=model_cfg.get("tie_embeddings", True),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
    )
    return LlamaForCausalLM(config)


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Any Hugging Face causal LM checkpoint: ours, or ``model.name_or_path`` of a real one."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **_local(path))
    return model.to(device)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
