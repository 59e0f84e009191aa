"""A canned-phrase list learned from preference data: n-grams over-represented in rejected answers.

Rather than a hand-written list of boilerplate, the canned-phrase penalty can read the phrases the annotators
themselves disliked: word n-grams (n = `ngram_min`..`ngram_max`) that occur markedly more often in rejected
(or low-rated) responses than in chosen (or high-rated) ones, scored by the weighted log-odds ratio with an
informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words", eq. 16 and 22):

    δ_w = log((y_w^i + α_w) / (n^i + α_0 − y_w^i − α_w)) − log((y_w^j + α_w) / (n^j + α_0 − y_w^j − α_w))
    σ²(δ_w) ≈ 1 / (y_w^i + α_w) + 1 / (y_w^j + α_w)
    z_w = δ_w / σ(δ_w)

with i = rejected, j = chosen, y_w the count of n-gram w, n = Σ_w y_w (per n-gram order), and the prior α_w
the pooled count scaled, `prior_scale · (y_w^i + y_w^j)`, α_0 = Σ_w α_w. The prior shrinks rare n-grams towards no
difference, so a phrase seen twice in rejected answers and never in chosen ones does not outrank one seen
hundreds of times.

Selection: z_w ≥ `min_z` and w in at least `min_doc_freq` rejected responses; an n-gram inside a longer selected
one that accounts for at least `absorb` of its rejected occurrences is dropped (the longer phrase says it);
the `top_k` highest z are kept. N-grams never cross sentence punctuation (. ! ? , ; : newline), and text is
matched the way the penalty matches it (`rlhf_ray.algos.penalties.normalize_text`).

The list is a plain JSON list of strings, so a user can write their own instead (`load_phrase_list`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf_ray.algos.penalties import normalize_text

_SENTENCE_BREAK = re.compile(r"[.!?,;:\n]+")
LATEST = "LATEST"  # in a folder of phrase lists: the name of the current list


@dataclass(frozen=True)
class PhraseSettings:
    """How `learn_canned_phrases` picks phrases (see the module docstring)."""

    ngram_min: int = 2
    ngram_max: int = 4
    top_k: int = 30
    min_z: float = 2.0
    min_doc_freq: int = 5
    absorb: float = 0.8
    prior_scale: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max; got {self.ngram_min!r}, {self.ngram_max!r}")
        for name in ("top_k", "min_doc_freq"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        if not 0 < self.absorb <= 1:
            raise ValueError(f"absorb must be in (0, 1]; got {self.absorb!r}")
        if not self.prior_scale > 0:
            raise ValueError(f"prior_scale must be > 0; got {self.prior_scale!r}")


def weighted_log_odds(counts_i: Mapping[str, float], counts_j: Mapping[str, float],
                      prior: Mapping[str, float]) -> dict[str, float]:
    """z_w of the weighted log-odds ratio of corpus i against corpus j with Dirichlet prior α (module docstring):
    n^i = Σ counts_i, n^j = Σ counts_j, α_0 = Σ prior; one z per word of `prior` (every α_w must be > 0)."""
    n_i, n_j, a0 = sum(counts_i.values()), sum(counts_j.values()), sum(prior.values())
    z = {}
    for word, alpha in prior.items():
        if not alpha > 0:
            raise ValueError(f"prior[{word!r}] must be > 0; got {alpha!r}")
        y_i, y_j = counts_i.get(word, 0), counts_j.get(word, 0)
        delta = (math.log((y_i + alpha) / (n_i + a0 - y_i - alpha))
                 - math.log((y_j + alpha) / (n_j + a0 - y_j - alpha)))
        z[word] = delta / math.sqrt(1.0 / (y_i + alpha) + 1.0 / (y_j + alpha))
    return z


def ngrams(text: str, n: int) -> list[str]:
    """The word n-grams of `text`, normalised, within sentence-punctuation segments."""
    grams = []
    for segment in _SENTENCE_BREAK.split(text):
        words = normalize_text(segment).split()
        grams.extend(" ".join(words[k:k + n]) for k in range(len(words) - n + 1))
    return grams


def _contains(longer: str, shorter: str) -> bool:
    return f" {shorter} " in f" {longer} "


def learn_canned_phrases(rejected: Iterable[str], chosen: Iterable[str],
                         settings: PhraseSettings = PhraseSettings()) -> list[dict[str, float | str | int]]:
    """Phrases over-represented in `rejected` against `chosen` (each deduplicated), best first, as
    {phrase, z, rejected, chosen, docs}: counts in either corpus and rejected responses containing it."""
    rejected, chosen = sorted(set(rejected)), sorted(set(chosen))
    found: list[dict[str, float | str | int]] = []
    for n in range(settings.ngram_min, settings.ngram_max + 1):
        grams_i = [ngrams(text, n) for text in rejected]
        counts_i, counts_j = Counter(g for gs in grams_i for g in gs), Counter(g for t in chosen for g in ngrams(t, n))
        docs = Counter(g for gs in grams_i for g in set(gs))
        prior = {w: settings.prior_scale * (counts_i[w] + counts_j[w]) for w in counts_i | counts_j}
        for word, z in weighted_log_odds(counts_i, counts_j, prior).items():
            if z >= settings.min_z and docs[word] >= settings.min_doc_freq:
                found.append({"phrase": word, "z": z, "rejected": counts_i[word], "chosen": counts_j[word],
                              "docs": docs[word]})
    kept = [s for s in found if not any(len(o["phrase"]) > len(s["phrase"]) and _contains(o["phrase"], s["phrase"])
                                        and o["rejected"] >= settings.absorb * s["rejected"] for o in found)]
    kept = _merge_overlaps(kept, rejected, settings.absorb)
    kept.sort(key=lambda s: (-s["z"], s["phrase"]))
    return kept[: settings.top_k]


def _merge_overlaps(kept: list[dict], rejected: Sequence[str], absorb: float) -> list[dict]:
    """Join selected n-grams that chain into one longer phrase ("it is important to" + "important to stay calm"
    → "it is important to stay calm") when the joined phrase keeps at least `absorb` of the rarer part's
    rejected occurrences; the joined phrase carries the larger z and its own counts (chosen: the smaller)."""
    segments = [" ".join(normalize_text(s).split()) for text in rejected for s in _SENTENCE_BREAK.split(text)]
    merged = True
    while merged:
        merged = False
        for a in kept:
            for b in kept:
                words_a, words_b = a["phrase"].split(), b["phrase"].split()
                overlap = next((k for k in range(min(len(words_a), len(words_b)) - 1, 0, -1)
                                if words_a[-k:] == words_b[:k]), 0)
                if a is b or not overlap:
                    continue
                joined = " ".join(words_a + words_b[overlap:])
                hits = sum(f" {s} ".count(f" {joined} ") for s in segments)
                if hits >= absorb * min(a["rejected"], b["rejected"]):
                    docs = sum(f" {joined} " in f" {s} " for s in segments)
                    kept = [s for s in kept if s is not a and s is not b and not _contains(joined, s["phrase"])]
                    kept.append({"phrase": joined, "z": max(a["z"], b["z"]), "rejected": hits,
                                 "chosen": min(a["chosen"], b["chosen"]), "docs": docs})
                    merged = True
                    break
            if merged:
                break
    return kept


def check_phrase_list(phrases: object, where: str) -> list[str]:
    """`phrases` if it is a list of non-empty strings, else a ValueError naming `where`."""
    if not isinstance(phrases, list):
        raise ValueError(f"{where} must hold a JSON list of phrases; got {type(phrases).__name__}")
    for k, phrase in enumerate(phrases):
        if not isinstance(phrase, str) or not normalize_text(phrase):
            raise ValueError(f"{where}: entry {k} must be a non-empty phrase; got {phrase!r}")
    return phrases


def load_phrase_list(path: str | Path) -> list[str]:
    """A phrase list: a JSON file holding a list of strings, or a folder of them (e.g. curate's `phrases/`)
    whose `LATEST` file names the current one. Any other content is a ValueError naming the path."""
    path = Path(path)
    if path.is_dir():
        if not (path / LATEST).is_file():
            raise ValueError(f"{path} is a folder without a {LATEST} file naming its current phrase list")
        path = path / (path / LATEST).read_text().strip()
    if not path.is_file():
        raise ValueError(f"phrase list {path} does not exist")
    try:
        phrases = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"phrase list {path} is not JSON: {error}") from error
    return check_phrase_list(phrases, f"phrase list {path}")


def phrase_list_json(phrases: Sequence[str]) -> bytes:
    """The file form of a phrase list (what `load_phrase_list` reads)."""
    return json.dumps(list(phrases), indent=1).encode()
