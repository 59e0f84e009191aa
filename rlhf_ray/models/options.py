"""The `model:` section every training job reads: which chat template to use and whether to train LoRA adapters."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from rlhf_ray.config import StrictModel
from rlhf_ray.models.tokenizer import NAMED_TEMPLATES


class LoraSection(StrictModel):
    """Low-rank adapters (peft) on the named modules; exports merge them back into plain weights."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is (alpha / r)·B·A")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'")

    @field_validator("target_modules")
    @classmethod
    def _some_target(cls, value: list[str] | str) -> list[str] | str:
        if not value:
            raise ValueError("target_modules is empty; name linear modules (e.g. [q_proj, v_proj]) or 'all-linear'")
        return value


class ModelOptions(StrictModel):
    chat_template: str | None = Field(
        None, description="template for a checkpoint that ships none (or to replace its own): "
                          f"{' | '.join(sorted(NAMED_TEMPLATES))} | a FILE.jinja path")
    lora: LoraSection | None = Field(None, description="train LoRA adapters (and the reward model's heads) "
                                                       "instead of every weight; exports merge them")

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value is None or value in NAMED_TEMPLATES or value.endswith(".jinja"):
            return value
        raise ValueError(f"chat_template {value!r} is neither a named template {sorted(NAMED_TEMPLATES)} "
                         "nor a path ending in .jinja")


def read_chat_template(spec: str) -> str:
    """The Jinja text of a template spec: a name in `NAMED_TEMPLATES` or a `.jinja` file."""
    if spec in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"model.chat_template {spec!r} is not a file; expected {sorted(NAMED_TEMPLATES)} or the "
                         "path of a .jinja chat template")
    return path.read_text(encoding="utf-8")
