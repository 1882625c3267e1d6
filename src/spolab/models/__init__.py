"""Tokenizer and model construction (docs/design.md §4)."""

from spolab.models.build import build_model, build_tokenizer, load_model, load_tokenizer

__all__ = ["build_model", "build_tokenizer", "load_model", "load_tokenizer"]
