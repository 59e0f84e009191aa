"""Rule-based reward shaping for PPO: a verbosity penalty, a canned-phrase penalty, a keyword-coverage rule.

These are the hand-written terms the reward scorer adds to (or, without a reward model, uses instead of) the
learned reward:

    total[b] = rm[b] − verbosity_penalty[b] − canned_phrase_penalty[b]

They are configured from settings and a phrase list only; nothing here looks at the simulated world's hidden
utility (that stays an evaluation signal, never a training reward). There is no built-in phrase list: it is
learned from the preference data (`rlhf_ray.algos.phrases`, written by `rlhf-ray curate`) or supplied by the user.

Text matching convention (`normalize_text`): lower-case, every run of characters that is neither a letter, a
digit nor an apostrophe becomes one space. "Great question!", "great  question !" and "GREAT QUESTION." all
normalise to "great question", so a phrase list written without punctuation matches text written either
in ordinary prose or in the simulated world's spaced-punctuation style.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_NON_WORD = re.compile(r"[^\w']+")

def normalize_text(text: str) -> str:
    """Lower-case; each run of non-word characters (apostrophes kept) becomes one space; ends stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def word_counts(texts: Sequence[str]) -> list[int]:
    """Whitespace-separated words per text: len(text.split())."""
    return [len(text.split()) for text in texts]


def verbosity_penalty(lengths: Tensor | Sequence[int], target_length: int | float, coef: float) -> Tensor:
    """Penalty for words beyond a target length, relative to the target:

        p[b] = coef · max(0, len[b] − target) / target

    Zero at or below the target; each further `target` words cost `coef`. Dividing by the target makes
    `coef` mean "cost of being twice as long as wanted" whatever the target is, so one coefficient transfers
    across tasks with different lengths (the same shape as a relative length budget). Linear rather than
    quadratic so a long answer is not dominated by this term and the gradient of the shaping is constant.

    Args:
        lengths: [B] response lengths in words (non-negative).
        target_length: words allowed for free; must be > 0.
        coef: cost per target-length of excess words; must be ≥ 0.

    Returns:
        [B] float32 penalties (≥ 0; subtract them from the reward).
    """
    if not target_length > 0:
        raise ValueError(f"target_length must be > 0; got {target_length!r}")
    if not coef >= 0:
        raise ValueError(f"coef must be >= 0; got {coef!r}")
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be [B]; got shape {tuple(lengths.shape)}")
    if (lengths < 0).any():
        raise ValueError(f"lengths must be >= 0; got min {lengths.min().item()}")
    return coef * torch.clamp(lengths - target_length, min=0.0) / target_length


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One alternation over the normalised phrases, longest first, matched on word boundaries."""
    if isinstance(phrases, str):
        raise ValueError("phrases must be a list of strings, not one string")
    normalized = []
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str) or not normalize_text(phrase):
            raise ValueError(f"phrases[{i}] must be a non-empty phrase; got {phrase!r}")
        normalized.append(normalize_text(phrase))
    if not normalized:
        return None
    alternatives = sorted(set(normalized), key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(p) for p in alternatives) + r")(?![\w'])")


def canned_phrase_hits(texts: Sequence[str], phrases: Sequence[str]) -> list[int]:
    """Occurrences of any phrase in each text.

        hits[b] = #{non-overlapping matches of any phrase in normalize_text(texts[b])}

    Matching is case-insensitive, whitespace- and punctuation-insensitive (`normalize_text` on both sides)
    and on word boundaries ("great question" does not match "great questionnaire"). A repeated phrase counts
    each time. Where phrases overlap (one contains another), a span of text counts once, for the longest
    phrase that matches there.
    """
    pattern = _phrase_pattern(phrases)
    if pattern is None:
        return [0] * len(texts)
    return [len(pattern.findall(normalize_text(text))) for text in texts]


def canned_phrase_penalty(texts: Sequence[str], phrases: Sequence[str], coef: float) -> Tensor:
    """Penalty per occurrence of boilerplate:

        p[b] = coef · hits[b],    hits = canned_phrase_hits(texts, phrases)

    Returns:
        [B] float32 penalties (≥ 0; subtract them from the reward).
    """
    if not coef >= 0:
        raise ValueError(f"coef must be >= 0; got {coef!r}")
    return coef * torch.tensor(canned_phrase_hits(texts, phrases), dtype=torch.float32)


def repeated_sentences(texts: Sequence[str]) -> list[int]:
    """Sentences (split on . ! ?, normalised) that repeat an earlier sentence of the same text.

        n[b] = |sentences(texts[b])| − |set(sentences(texts[b]))|
    """
    counts = []
    for text in texts:
        parts = [normalize_text(part) for part in re.split(r"[.!?]+", text) if normalize_text(part)]
        counts.append(len(parts) - len(set(parts)))
    return counts


def keyword_coverage(texts: Sequence[str], keywords: Sequence[str], scale: float = 1.0) -> Tensor:
    """A length-free rule reward: the fraction of keywords the text mentions at least once.

        r[b] = scale · |{k ∈ keywords : k occurs in texts[b]}| / |keywords|

    Presence, not count, so repeating a keyword or padding the answer earns nothing. Matching follows
    `canned_phrase_hits` (normalised, word boundaries).

    Returns:
        [B] float32 rewards in [0, scale].
    """
    if isinstance(keywords, str) or not keywords:
        raise ValueError(f"keywords must be a non-empty list of strings; got {keywords!r}")
    patterns = [_phrase_pattern([k]) for k in keywords]
    normalized = [normalize_text(text) for text in texts]
    covered = [sum(p.search(text) is not None for p in patterns) for text in normalized]
    return scale * torch.tensor(covered, dtype=torch.float32) / len(patterns)


@dataclass(frozen=True)
class RulePenaltySettings:
    """The rule penalties' knobs; a coefficient of 0 switches a penalty off.

    Defaults: every penalty off and no phrases (a scorer built without settings, e.g. a judge, applies none);
    the PPO config chooses the coefficients and the phrase list.
    """

    verbosity_target_words: int = 80
    verbosity_coef: float = 0.0
    canned_phrases: tuple[str, ...] = ()
    canned_coef: float = 0.0
    repetition_coef: float = 0.0

    def __post_init__(self) -> None:
        if not self.repetition_coef >= 0:
            raise ValueError(f"repetition_coef must be >= 0; got {self.repetition_coef!r}")
        if not self.verbosity_target_words > 0:
            raise ValueError(f"verbosity_target_words must be > 0; got {self.verbosity_target_words!r}")
        if not self.verbosity_coef >= 0:
            raise ValueError(f"verbosity_coef must be >= 0; got {self.verbosity_coef!r}")
        if not self.canned_coef >= 0:
            raise ValueError(f"canned_coef must be >= 0; got {self.canned_coef!r}")
        if isinstance(self.canned_phrases, str):
            raise ValueError("canned_phrases must be a list of phrases, not one string")
        object.__setattr__(self, "canned_phrases", tuple(self.canned_phrases))
        _phrase_pattern(self.canned_phrases)  # every phrase non-empty, or a ValueError naming it

    def penalties(self, texts: Sequence[str]) -> dict[str, Tensor | list[int]]:
        """words, verbosity_penalty [B], canned_hits, canned_penalty [B], repeats, repetition_penalty [B] for
        `texts` under these settings (repetition_penalty[b] = repetition_coef · repeated_sentences[b])."""
        words = word_counts(texts)
        hits = canned_phrase_hits(texts, self.canned_phrases)
        repeats = repeated_sentences(texts)
        return {
            "repeats": repeats,
            "repetition_penalty": self.repetition_coef * torch.tensor(repeats, dtype=torch.float32),
            "words": words,
            "verbosity_penalty": verbosity_penalty(words, self.verbosity_target_words, self.verbosity_coef),
            "canned_hits": hits,
            "canned_penalty": self.canned_coef * torch.tensor(hits, dtype=torch.float32),
        }
