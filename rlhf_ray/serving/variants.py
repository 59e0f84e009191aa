"""Served variants: a checkpoint, an optional system prompt and sampling settings (defaults and limits).

A canary compares two variants behind one router: two checkpoints, two system prompts on one checkpoint, or two
sampling settings. A variant file (YAML) is what `rlhf-ray canary --incumbent-variant FILE --canary-variant FILE`
reads; relative paths are read from the file's folder:

    model_path: ../runs/sft/model              # optional: --incumbent/--canary DIR give the checkpoint otherwise
    system_prompt: Answer in one short sentence.    # or system_prompt_file: concise.txt
    sampling: {temperature: 0.3, max_temperature: 1.0, max_tokens_limit: 128}

In lineage a variant with a system prompt or sampling settings is a `variant` artifact whose parents are its
checkpoint and its `system-prompt` (an artifact of its own, identified by the text's sha256), so two prompts on one
checkpoint are two ids, and the same prompt text is the same id wherever it is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from rlhf_ray.config import StrictModel
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.hashing import canonical_json
from rlhf_ray.rollout.backends import GenerationParams
from rlhf_ray.serving.config import GenerationSection, PolicySection, SamplingSection


class VariantFileError(ValueError):
    """A variant file that cannot be used: missing, not YAML, or with unknown or ill-typed fields."""


class VariantFile(StrictModel):
    name: str | None = Field(None, min_length=1, description="shown in lineage (default: the file's stem)")
    model_path: str | None = Field(None, description="checkpoint directory (default: --incumbent/--canary DIR)")
    system_prompt: str | None = Field(None, min_length=1)
    system_prompt_file: str | None = Field(None, description="text file holding the system prompt")
    sampling: SamplingSection = SamplingSection()

    @model_validator(mode="after")
    def _one_prompt(self) -> VariantFile:
        if self.system_prompt is not None and self.system_prompt_file is not None:
            raise ValueError("give system_prompt or system_prompt_file, not both")
        return self


def load_variant(path: str) -> VariantFile:
    """The variant of a YAML file, its paths resolved against the file's folder and its prompt file read."""
    file = Path(path)
    if not file.is_file():
        raise VariantFileError(f"variant file {path!r} is not a file; expected a YAML file (model_path, "
                               "system_prompt, sampling)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        variant = VariantFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as error:
        raise VariantFileError(f"variant file {path}: {error}") from None
    update: dict[str, Any] = {"name": variant.name or file.stem}
    if variant.model_path and "://" not in variant.model_path:
        update["model_path"] = str((file.parent / variant.model_path).resolve())
    if variant.system_prompt_file:
        prompt_file = file.parent / variant.system_prompt_file
        if not prompt_file.is_file():
            raise VariantFileError(f"variant file {path}: system_prompt_file {variant.system_prompt_file!r} is not "
                                   "a file; expected a text file next to the variant file")
        text = prompt_file.read_text(encoding="utf-8").strip()
        if not text:
            raise VariantFileError(f"variant file {path}: system_prompt_file {variant.system_prompt_file!r} is "
                                   "empty; expected the system prompt's text")
        update.update(system_prompt=text, system_prompt_file=None)
    return variant.model_copy(update=update)


def apply_variant(section: PolicySection, variant: VariantFile) -> PolicySection:
    """The policy section serving `variant` (resources and backend stay the section's)."""
    update: dict[str, Any] = {"system_prompt": variant.system_prompt, "sampling": variant.sampling}
    if variant.model_path:
        update["model_path"] = variant.model_path
    return section.model_copy(update=update)


def is_variant(section: PolicySection) -> bool:
    """Whether the section is more than its checkpoint (a system prompt or sampling settings of its own)."""
    return section.system_prompt is not None or section.sampling != SamplingSection()


def with_system_prompt(messages: Sequence[Mapping[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation a variant answers: its system prompt first. A client's own leading system message is
    merged into one system turn after it, since many chat templates render only one system message."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not system_prompt:
        return turns
    if turns and turns[0]["role"] == "system":
        return [{"role": "system", "content": f"{system_prompt}\n\n{turns[0]['content']}"}, *turns[1:]]
    return [{"role": "system", "content": system_prompt}, *turns]


def resolve_sampling(sampling: SamplingSection, generation: GenerationSection, max_tokens: int | None = None,
                     temperature: float | None = None, top_p: float | None = None, seed: int | None = None,
                     stop: Sequence[str] = (), logprobs: bool = False) -> GenerationParams:
    """A request's sampling under a variant: what it leaves out comes from the variant's defaults (then the
    deployment's `generation` defaults), and what it gives is clamped into the variant's limits."""
    limit = sampling.max_tokens_limit or generation.max_tokens_limit
    tokens = max_tokens or sampling.max_tokens or generation.max_tokens
    temp = temperature if temperature is not None else (
        sampling.temperature if sampling.temperature is not None else generation.temperature)
    return GenerationParams(max_new_tokens=min(tokens, limit),
                            temperature=min(max(temp, sampling.min_temperature), sampling.max_temperature),
                            top_p=min(top_p if top_p is not None else sampling.top_p, sampling.max_top_p),
                            seed=seed, stop=tuple(stop), logprobs=logprobs)


def system_prompt_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def register_variant(registry: LineageRegistry, section: PolicySection, name: str) -> str:
    """Register the section's variant in lineage (parents: its checkpoint `section.policy_id`, when registered,
    and its `system-prompt` artifact); returns the variant's id."""
    parents = [section.policy_id] if section.policy_id and registry.has(section.policy_id) else []
    prompt_digest = None
    if section.system_prompt is not None:
        prompt_digest = system_prompt_digest(section.system_prompt)
        parents.append(registry.register("system-prompt", f"system-prompt-{prompt_digest[:12]}", prompt_digest,
                                         config={"text": section.system_prompt}).id)
    definition = {"checkpoint": section.policy_id, "system_prompt": prompt_digest,
                  "sampling": section.sampling.model_dump()}
    digest = hashlib.sha256(canonical_json(definition)).hexdigest()
    return registry.register("variant", name, digest, parents=parents,
                             config={"sampling": section.sampling.model_dump()}).id
