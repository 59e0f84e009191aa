"""Responses of controlled quality: what policies in production (and reference writers) say.

A `ResponseStyle` is a small generative recipe; policy versions are mixtures of styles, so the
world can emit a population of answers whose quality differs in known, nameable ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_ray.sim.catalog import FILLER_SENTENCES, Boilerplate
from rlhf_ray.sim.prompts import PromptSpec
from rlhf_ray.sim.utility import normalize, sentences

REFUSAL_SENTENCE = "sorry , i cannot help with that ."


@dataclass(frozen=True)
class ResponseStyle:
    fact_prob: float
    max_filler: int = 0
    canned_prob: float = 0.0
    hedge_prob: float = 0.0
    unsafe_prob: float = 0.0
    wrong_refusal_prob: float = 0.0


STYLES: dict[str, ResponseStyle] = {
    "good": ResponseStyle(fact_prob=0.97),
    "sloppy": ResponseStyle(fact_prob=0.6, max_filler=1, hedge_prob=0.4),
    "terse": ResponseStyle(fact_prob=0.35),
    "verbose": ResponseStyle(fact_prob=0.9, max_filler=5, canned_prob=0.8, hedge_prob=0.3),
    "unsafe": ResponseStyle(fact_prob=0.5, max_filler=1, unsafe_prob=1.0),
    "overcautious": ResponseStyle(fact_prob=0.2, hedge_prob=0.5, wrong_refusal_prob=0.8),
}

POLICY_STYLE_MIX: dict[str, dict[str, float]] = {
    "policy-2025.12": {
        "good": 0.2, "sloppy": 0.3, "terse": 0.2, "verbose": 0.1, "unsafe": 0.12, "overcautious": 0.08,
    },
    "policy-2026.01": {
        "good": 0.35, "sloppy": 0.25, "terse": 0.1, "verbose": 0.2, "unsafe": 0.06, "overcautious": 0.04,
    },
}
REFERENCE_STYLE_MIX: dict[str, float] = {"good": 0.55, "sloppy": 0.25, "terse": 0.12, "verbose": 0.08}


def draw_style(mix: dict[str, float], rng: np.random.Generator) -> str:
    names = list(mix)
    return names[int(rng.choice(len(names), p=np.array([mix[n] for n in names])))]


def compose_response(spec: PromptSpec, style: ResponseStyle, rng: np.random.Generator,
                     boilerplate: Boilerplate) -> str:
    """Assemble a response sentence by sentence, each ingredient drawn with the style's probability; canned
    openers, closers and hedges come from the world's own `boilerplate` (`World.respond` passes it)."""
    if spec.refusal:
        return _compose_for_harmful_request(spec, style, rng)
    if rng.random() < style.wrong_refusal_prob:
        return _join([REFUSAL_SENTENCE, *_maybe(boilerplate.hedges, style.hedge_prob, rng)])
    body = [str(rng.choice(f.sentences)) for f in spec.facts if rng.random() < style.fact_prob]
    for _ in range(int(rng.integers(style.max_filler + 1))):
        body.insert(int(rng.integers(len(body) + 1)), str(rng.choice(FILLER_SENTENCES)))
    if spec.unsafe and rng.random() < style.unsafe_prob:
        body.append(str(rng.choice(spec.unsafe)))
    opener = _maybe(boilerplate.openers, style.canned_prob, rng)
    hedge = _maybe(boilerplate.hedges, style.hedge_prob, rng)
    return _join([*opener, *body, *hedge, *_maybe(boilerplate.closers, style.canned_prob, rng)])


def _compose_for_harmful_request(spec: PromptSpec, style: ResponseStyle, rng: np.random.Generator) -> str:
    """A harmful ask: a good answer refuses and points somewhere legitimate; a bad one complies."""
    if rng.random() < style.unsafe_prob:
        return _join([str(s) for s in rng.permutation(np.array(spec.unsafe))])
    body = [str(rng.choice(f.sentences)) for f in spec.facts if rng.random() < style.fact_prob]
    return _join(body or [REFUSAL_SENTENCE])


def _maybe(options: tuple[str, ...], prob: float, rng: np.random.Generator) -> list[str]:
    return [str(rng.choice(options))] if rng.random() < prob else []


def _join(parts: list[str]) -> str:
    return " ".join(parts) if parts else REFUSAL_SENTENCE


def corrected_response(spec: PromptSpec, response: str, rng: np.random.Generator) -> str:
    """What a careful user edits a response into: keep the useful sentences, drop the rest, add what is missing."""
    unsafe = {normalize(s) for s in spec.unsafe}
    kept = [
        s for s in dict.fromkeys(sentences(response))
        if s not in unsafe and any(term in s for term in spec.required_terms)
    ]
    missing = [f for f in spec.facts if not any(f.term in s for s in kept)]
    return _join(kept + [str(rng.choice(f.sentences)) for f in missing])
