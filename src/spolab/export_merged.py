"""``python -m spolab.export_merged MODEL_DIR OUT_DIR``: a LoRA policy as one plain model folder.

MODEL_DIR is a saved LoRA policy: an RL run's final ``model/`` or one of its ``checkpoint/step_<n>/``
(``adapter_config.json``, ``adapter_model.safetensors``, the tokenizer; the base weights are those of
``base_model_name_or_path``, the SFT model). The adapter is folded into the base weights (peft's
``merge_and_unload``) and OUT_DIR gets an ordinary transformers checkpoint (``config.json``,
``model.safetensors``, tokenizer), written aside and renamed into place: every step of the pipeline, and any
tool that reads Hugging Face checkpoints, loads it without peft. Its logits equal the adapter model's up to
float rounding (tests/test_lora.py). A folder without an adapter is refused: it is already plain.

Exit status 0, or 2 with one line on stderr (a missing or non-LoRA MODEL_DIR, an absent base model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spolab.checkpoint import save_model
from spolab.cli import one_line_errors
from spolab.errors import ConfigError
from spolab.models.build import load_tokenizer
from spolab.models.lora import ADAPTER_CONFIG, load_policy, merged


def export_merged(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the merged model of the LoRA policy in ``model_dir`` (and its tokenizer) to ``out_dir``; returns
    ``out_dir``. ConfigError when ``model_dir`` holds no LoRA adapter."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"{model_dir}: holds no LoRA adapter ({ADAPTER_CONFIG} missing); export_merged reads the "
                          "model/ or checkpoint/step_<n>/ folder of an RL run with lora=on")
    if out_dir.resolve() == model_dir.resolve():
        raise ConfigError(f"{out_dir}: must differ from the adapter's folder {model_dir}")
    model = merged(load_policy(model_dir))
    save_model(out_dir, model, load_tokenizer(model_dir))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spolab.export_merged", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a LoRA run's model/ (or checkpoint/step_<n>/) folder")
    parser.add_argument("out_dir", help="where the merged model folder is written")
    args = parser.parse_args(argv)
    with one_line_errors("spolab.export_merged"):
        out = export_merged(args.model_dir, args.out_dir)
    print(f"spolab.export_merged: wrote {out}")


if __name__ == "__main__":
    main()
