"""LoRA adapters (peft) on a causal LM or on the backbone of a reward/value model, and their merged weights.

With `model.lora` set, a trainer wraps the model it loaded: every base weight is frozen and each targeted
linear layer W gains a low-rank update, W' = W + (α/r)·B·A (A: r×in, B: out×r, B starts at zero, so training
starts from the base model exactly). Only A, B and the heads of a model with a `backbone` train.

Every saved model is plain Hugging Face weights with the updates merged in (`merged_state_dict`), so later
stages and serving load it as an ordinary checkpoint and never need peft. The merge is computed into new CPU
tensors: the training model keeps its frozen base weights bit for bit (merging in place and back would not,
in bf16 least of all).
"""

from __future__ import annotations

import os
import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from rlhf_ray.models.options import LoraSection

ALL_LINEAR = "all-linear"


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct leaf names of a model's linear layers (e.g. q_proj, v_proj, down_proj): what
    `model.lora.target_modules` may name."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear | Conv1D) and name})


def _targets(name: str, target: str, as_pattern: bool) -> bool:
    """peft's matching rule: a pattern string matches the full module name; a list entry matches the name
    or a dotted suffix of it (`q_proj` and `self_attn.q_proj` both select `layers.0.self_attn.q_proj`)."""
    return bool(re.fullmatch(target, name)) if as_pattern else name == target or name.endswith(f".{target}")


def check_target_modules(model: nn.Module, target_modules: list[str] | str) -> None:
    """Refuse targets that select no linear layer of `model`, naming them and the linear layers it has."""
    if target_modules == ALL_LINEAR:
        return
    as_pattern = isinstance(target_modules, str)
    wanted = [target_modules] if as_pattern else list(target_modules)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear | Conv1D)]
    missing = [t for t in wanted if not any(_targets(name, t, as_pattern) for name in linear)]
    if missing:
        raise ValueError(f"model.lora.target_modules {missing} match no linear module of "
                         f"{type(model).__name__}; its linear modules are {linear_module_names(model)} "
                         f"(or use '{ALL_LINEAR}')")


def apply_lora(model: nn.Module, section: LoraSection, task_type: str | None = None) -> PeftModel:
    """`model` with LoRA adapters on `section.target_modules` and every base weight frozen."""
    check_target_modules(model, section.target_modules)
    config = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                        target_modules=section.target_modules, task_type=task_type)
    return get_peft_model(model, config)


def add_lora(model: nn.Module, section: LoraSection) -> nn.Module:
    """Adapters where a trainer needs them: a causal LM is wrapped whole; a model with a `backbone` (the reward
    or value model) gets them on its backbone, and its heads stay trainable."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        model.backbone = apply_lora(backbone, section)
        return model
    return apply_lora(model, section, task_type="CAUSAL_LM")


def uses_lora(model: nn.Module) -> bool:
    """Whether `model` is, or holds, a LoRA-wrapped module."""
    return any(isinstance(module, PeftModel) for module in model.modules())


def merged_state_dict(model: PeftModel) -> dict[str, Tensor]:
    """The plain model's state dict, on CPU, with each adapted weight merged: W' = W + (α/r)·B·A.

    Keys are those of the model without adapters (`…q_proj.weight`, not `…q_proj.base_layer.weight`); adapter
    tensors are left out. Nothing in `model` is modified."""
    base = model.get_base_model()
    layers = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    merged: dict[str, Tensor] = {}
    for key, value in base.state_dict().items():
        owner, marker, leaf = key.rpartition(".base_layer.")
        if marker:
            value = value.detach().cpu()
            if leaf == "weight":
                layer = layers[owner]
                for adapter in layer.active_adapters:
                    value = value + layer.get_delta_weight(adapter).detach().cpu().to(value.dtype)
            merged[f"{owner}.{leaf}"] = value
        elif not any(part.startswith("lora_") for part in key.split(".")):
            merged[key] = value.detach().cpu()
    return merged


def save_merged(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """`save_pretrained` of plain HF weights: a LoRA-wrapped model's adapters merged in, any other model as is."""
    if isinstance(model, PeftModel):
        model.get_base_model().save_pretrained(directory, state_dict=merged_state_dict(model))
    else:
        model.save_pretrained(directory)


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The tensors that train (adapters and heads), as contiguous CPU copies: what a LoRA run resumes from."""
    return {name: parameter.detach().cpu().contiguous() for name, parameter in model.named_parameters()
            if parameter.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Put saved adapters and heads back into a freshly wrapped model; the names must match exactly, so a resume
    with other `model.lora` settings fails here instead of training different adapters."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    saved = {name: tuple(value.shape) for name, value in state.items()}
    if saved != expected:
        differing = sorted(name for name in expected.keys() | saved.keys() if expected.get(name) != saved.get(name))
        raise ValueError(f"the checkpoint's adapters do not fit this model.lora: {len(differing)} tensors differ, "
                         f"e.g. {differing[0]!r} is {saved.get(differing[0])} in the checkpoint and "
                         f"{expected.get(differing[0])} here (None: absent); resume with the model.lora settings "
                         "and base model of the run that wrote it")
    parameters = dict(model.named_parameters())
    with torch.no_grad():  # in place, so an optimizer built on these parameters keeps them
        for name, value in state.items():
            parameters[name].copy_(value)
