"""LoRA through peft: the policy as low-rank adapters on the frozen SFT weights (``lora=on``, the
``model.lora`` keys of conf/lora/on.yaml; docs/real_scale.md, "LoRA").

One network holds everything: the frozen base weights, the policy's adapter (peft's first adapter,
:data:`POLICY`), for PPO the critic's adapter (:data:`CRITIC`) and, for a data mix that samples from a
stale policy, a frozen copy of the policy's adapter (:data:`BEHAVIOUR`, :class:`Behaviour`). π_ref is that
network with its adapters disabled (:class:`Reference`), so no second copy of the model is kept. A saved LoRA policy is its
adapter (``adapter_config.json``, ``adapter_model.safetensors``), the base model's ``config.json`` (the
architecture, as every saved model folder of the pipeline has) and the tokenizer; the base weights are
those of ``base_model_name_or_path`` in ``adapter_config.json`` (the SFT model). :func:`load_policy` reads
either kind of folder; :func:`merged` folds the adapter into the weights (``python -m spolab.export_merged``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from spolab.errors import ConfigError
from spolab.models.build import load_model

POLICY = "default"  # peft's name of a model's first adapter: the policy's
CRITIC = "critic"  # PPO's value adapter on the same frozen weights
BEHAVIOUR = "behaviour"  # a data mix's stale sampling policy (data_mix.sync_every > 1): a frozen adapter copy
ADAPTER_CONFIG = "adapter_config.json"
DEFAULTS = {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}  # conf/lora/on.yaml


def lora_settings(model_cfg) -> dict | None:
    """``model.lora`` of a config as a plain dict (missing keys at conf/lora/on.yaml's values), or None
    when LoRA is off: the block is absent (no ``lora=on``) or ``enabled`` is false."""
    block = model_cfg.get("lora") if model_cfg is not None else None
    if block is None:
        return None
    block = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block)
    settings = {**DEFAULTS, **block}
    return settings if settings["enabled"] else None


def require_peft() -> None:
    """ConfigError unless peft (the ``real`` extra) is installed: LoRA is on."""
    if importlib.util.find_spec("peft") is None:
        raise ConfigError("model.lora.enabled=True: LoRA needs the `peft` package (pip install -e '.[real]')")


def is_lora(model) -> bool:
    """Whether ``model`` is a peft model (a LoRA policy), not a plain transformers one. Never imports peft:
    where it was never imported, no model is one."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last name parts of ``model``'s linear layers (``q_proj``, ``gate_proj``, ``lm_head``...):
    what ``model.lora.target_modules`` may name."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name})


def check_targets(model: torch.nn.Module, target_modules) -> None:
    """ConfigError unless every name of ``target_modules`` is the name of some linear layer of ``model``
    (the message lists the names it has)."""
    targets = list(target_modules or [])
    have = linear_names(model)
    missing = [t for t in targets if t not in have]
    if not targets or missing:
        arch = type(model).__name__
        raise ConfigError(f"model.lora.target_modules={targets!r}: "
                          + (f"{missing!r} name no linear layer of the model ({arch}); " if targets else "")
                          + f"its linear layers are {have}")


def check_saved_targets(path: str | Path, target_modules) -> None:
    """:func:`check_targets` against the model saved in ``path`` (its config.json), built on the meta device:
    nothing is loaded or allocated (start-up validation of an RL run with LoRA)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    check_targets(model, target_modules)


def lora_config(settings: dict):
    """The ``peft.LoraConfig`` of ``model.lora`` settings (:func:`lora_settings`)."""
    require_peft()
    from peft import LoraConfig

    return LoraConfig(r=int(settings["r"]), lora_alpha=float(settings["alpha"]), lora_dropout=float(settings["dropout"]),
                      target_modules=list(settings["target_modules"]), bias="none", task_type="CAUSAL_LM")


def add_adapters(base: torch.nn.Module, settings: dict):
    """``base`` (a causal LM, modified in place) wrapped as a peft model with a fresh policy adapter: A drawn
    from the global RNG (peft's Kaiming init), B zero, so the policy starts exactly at ``base``. Only the
    adapter requires grad."""
    from peft import get_peft_model

    check_targets(base, settings["target_modules"])
    return get_peft_model(base, lora_config(settings), adapter_name=POLICY)


def load_adapters(base: torch.nn.Module, path: str | Path, trainable: bool = True):
    """``base`` (modified in place) with the policy adapter saved in ``path`` (:func:`save_weights`), trainable
    or frozen."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(path), adapter_name=POLICY, is_trainable=trainable)


def adapter_modules(model, adapter: str) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, module) of every layer of adapter ``adapter`` in a peft model (each LoRA layer's ``lora_A``
    and ``lora_B`` for it), in module order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in model.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        for part in layer.adapter_layer_names:
            modules = getattr(layer, part, None)
            if isinstance(modules, torch.nn.ModuleDict) and adapter in modules:
                yield f"{name}.{part}", modules[adapter]


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters a policy optimiser steps: the policy adapter's for a LoRA policy (not the frozen base
    weights, not the critic's adapter), every parameter of a plain model."""
    if not is_lora(model):
        return list(model.parameters())
    return [p for _, m in adapter_modules(model, POLICY) for p in m.parameters()]


@contextlib.contextmanager
def _grad_flags_kept(model) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` on exit: peft's adapter switches set it themselves (the
    active adapter trainable, every other one frozen), which would freeze PPO's critic adapter."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def adapters_disabled(model) -> Iterator[None]:
    """The base network of a peft model: ``with model.disable_adapter()``, in eval mode, every parameter's
    ``requires_grad`` and the train/eval mode restored on exit."""
    training = model.training
    with _grad_flags_kept(model):
        model.eval()
        try:
            with model.disable_adapter():
                yield
        finally:
            model.train(training)


@contextlib.contextmanager
def adapter_active(model, adapter: str) -> Iterator[None]:
    """Forward passes of a peft model through adapter ``adapter`` instead of the policy's; the active adapter
    and every ``requires_grad`` restored on exit."""
    previous = model.active_adapter
    with _grad_flags_kept(model):
        model.set_adapter(adapter)
        try:
            yield
        finally:
            model.set_adapter(previous)


def add_critic_adapter(model) -> None:
    """A second adapter, :data:`CRITIC`, on a LoRA policy's frozen weights, configured as the policy's
    (fresh: A from the global RNG, B zero) and trainable; the policy's adapter stays the active one."""
    model.add_adapter(CRITIC, copy.deepcopy(model.peft_config[POLICY]))
    for _, m in adapter_modules(model, CRITIC):
        m.requires_grad_(True)


class Reference(torch.nn.Module):
    """π_ref of a LoRA run: the policy's own network with its adapters disabled, no second copy.

    Called like the model (``model(input_ids=..., ...)``); its parameters are the frozen base weights (shared
    with the policy, which owns them: the peft model is not a submodule, so moving, ``eval()`` or
    ``requires_grad_`` of this view never touch the policy)."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "model", model)  # not registered: the policy's module, not ours

    def forward(self, *args, **kwargs):
        with adapters_disabled(self.model):
            return self.model(*args, **kwargs)

    def parameters(self, recurse: bool = True):
        adapter = {id(p) for n in self.model.peft_config for _, m in adapter_modules(self.model, n)
                   for p in m.parameters()}
        return (p for p in self.model.parameters() if id(p) not in adapter)

    def get_base_model(self) -> torch.nn.Module:
        return self.model.get_base_model()

    @property
    def config(self):
        """The base model's transformers config (its attention implementation, vocabulary...)."""
        return self.model.get_base_model().config


class Behaviour(torch.nn.Module):
    """The stale behaviour policy of a LoRA run (``data_mix.sync_every`` > 1): a frozen copy of the policy's
    adapter, :data:`BEHAVIOUR`, on the same network, so the copy costs the adapter's bytes, not the model's.

    Called like the model (its forward passes run through the copy, in eval mode); :meth:`sync` copies the
    policy's adapter into it; ``state_dict``/``load_state_dict`` hold the copy's tensors only (a checkpoint's
    ``behaviour``). Its parameters are the base weights and the copy (not the policy's adapter)."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "model", model)  # not registered: the policy's module, not ours
        with _grad_flags_kept(model):
            model.add_adapter(BEHAVIOUR, copy.deepcopy(model.peft_config[POLICY]))
        for _, m in adapter_modules(model, BEHAVIOUR):
            m.requires_grad_(False)
        self.sync()

    def _pairs(self) -> Iterator[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
        policy = dict(adapter_modules(self.model, POLICY))
        for name, m in adapter_modules(self.model, BEHAVIOUR):
            for (k, dst), src in zip(m.named_parameters(), policy[name].parameters(), strict=True):
                yield f"{name}.{k}", dst, src

    @torch.no_grad()
    def sync(self) -> None:
        """The copy takes the policy adapter's current values."""
        for _, dst, src in self._pairs():
            dst.copy_(src)

    def forward(self, *args, **kwargs):
        training = self.model.training
        self.model.eval()
        try:
            with adapter_active(self.model, BEHAVIOUR):
                return self.model(*args, **kwargs)
        finally:
            self.model.train(training)

    def parameters(self, recurse: bool = True):
        policy = {id(p) for _, m in adapter_modules(self.model, POLICY) for p in m.parameters()}
        return (p for p in self.model.parameters() if id(p) not in policy)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {k: dst.detach().clone() for k, dst, _ in self._pairs()}

    @torch.no_grad()
    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        mine = {k: dst for k, dst, _ in self._pairs()}
        if set(state) != set(mine):
            raise ValueError(f"behaviour adapter state: {len(set(mine) - set(state))} missing and "
                             f"{len(set(state) - set(mine))} unexpected tensors")
        for k, dst in mine.items():
            dst.copy_(state[k])

    def get_base_model(self) -> torch.nn.Module:
        return self.model.get_base_model()

    @property
    def config(self):
        return self.model.get_base_model().config


def behaviour_policy(policy, sync_every: int) -> torch.nn.Module:
    """What samples a run's fresh data: the policy itself (``sync_every`` 1); else a frozen stale copy synced
    every ``sync_every`` updates by :func:`sync_behaviour`: a deep copy of a plain model, an adapter copy
    (:class:`Behaviour`) for a LoRA policy."""
    if sync_every == 1:
        return policy
    return Behaviour(policy) if is_lora(policy) else copy.deepcopy(policy).requires_grad_(False)


def sync_behaviour(behaviour, policy) -> None:
    """The stale copy takes the policy's current weights."""
    if isinstance(behaviour, Behaviour):
        behaviour.sync()
    else:
        behaviour.load_state_dict(policy.state_dict())


def save_weights(model, path: str | Path) -> None:
    """``save_pretrained`` of a model into ``path``: a plain model as transformers saves it; a LoRA policy as
    its adapter only (``adapter_config.json``, ``adapter_model.safetensors``: not the critic's, not the base
    weights) plus the base model's ``config.json``."""
    if not is_lora(model):
        model.save_pretrained(str(path))
        return
    model.save_pretrained(str(path), selected_adapters=[POLICY], save_embedding_layers=False)
    model.get_base_model().config.save_pretrained(str(path))


def base_path(path: str | Path) -> str | None:
    """The base model of a saved LoRA policy (``base_model_name_or_path`` of its ``adapter_config.json``), or
    None for a folder without adapters."""
    f = Path(path) / ADAPTER_CONFIG
    return json.loads(f.read_text()).get("base_model_name_or_path") if f.is_file() else None


def load_policy(path: str | Path, device: str | torch.device = "cpu", trainable: bool = False):
    """A saved policy: a plain model folder (:func:`~spolab.models.build.load_model`), or a LoRA one, its base
    model (``base_model_name_or_path``) with its adapter, frozen unless ``trainable``."""
    if not (Path(path) / ADAPTER_CONFIG).is_file():
        return load_model(path, device=device)
    require_peft()
    base = base_path(path)
    if not base or not Path(base).is_dir():
        raise ConfigError(f"{path}: its LoRA adapter's base model {base!r} ({ADAPTER_CONFIG}: "
                          "base_model_name_or_path, the SFT model of the run) is not a folder here")
    return load_adapters(load_model(base, device=device), path, trainable=trainable).to(device)


def merged(model) -> torch.nn.Module:
    """The plain transformers model of a LoRA policy with its adapter folded into the weights (peft's
    ``merge_and_unload``; ``model`` is consumed). A plain model is returned as it is."""
    return model.merge_and_unload() if is_lora(model) else model
