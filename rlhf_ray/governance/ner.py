"""Person names from a local NER model: a spaCy pipeline folder or a Hugging Face token-classification checkpoint.

The context recognizers (`recognizers`) find names that their context gives away ("my name is …",
signatures, greetings). A name with no such context ("Ada Quenby said the answer was wrong") needs a
model. `NerModel(path)` loads one from a local folder, never from a hub:

    spaCy        a folder written by `nlp.to_disk` (holds `config.cfg` and `meta.json`), e.g. an installed
                 `en_core_web_sm`'s package folder; needs the `spacy` package
    transformers a token-classification checkpoint folder (`config.json` + weights + tokenizer), e.g. a
                 copy of a BERT NER model; runs on the CPU

Entity labels map to PII kinds through `labels` (default: `PER`/`PERSON` → person). A `NerModel` pickles as
its settings; each process loads the model once, on first use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_ray.governance.recognizers import PERSON

SPACY = "spacy"
TRANSFORMERS = "transformers"
DEFAULT_LABELS: Mapping[str, str] = {"PER": PERSON, "PERSON": PERSON}
CHUNK_CHARS = 1_000  # texts are cut at whitespace into pieces this long (a model's input is bounded)

Spans = list[tuple[int, int, str]]
_LOADED: dict[tuple[str, str], Callable[[str], list[tuple[int, int, str, float]]]] = {}


def detect_backend(path: str | os.PathLike[str]) -> str:
    """`spacy` or `transformers` from the folder's files; a `ValueError` naming the path otherwise."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"pii.ner_model: {str(folder)!r} is not a folder; expected a local spaCy pipeline folder "
                         "(config.cfg + meta.json) or a Hugging Face token-classification checkpoint (config.json)")
    if (folder / "config.cfg").is_file() and (folder / "meta.json").is_file():
        return SPACY
    if (folder / "config.json").is_file():
        return TRANSFORMERS
    raise ValueError(f"pii.ner_model: {str(folder)!r} holds neither config.cfg + meta.json (spaCy) nor config.json "
                     "(transformers token classification)")


@dataclass(frozen=True)
class NerModel:
    """A local NER model: `spans(text)` → [(start, end, kind)] for entities whose label maps to a kind."""

    path: str
    labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    min_score: float = 0.5
    backend: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(Path(self.path).expanduser()))
        object.__setattr__(self, "labels", {str(k).upper(): v for k, v in dict(self.labels).items()})
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"pii.ner_min_score: got {self.min_score!r}, expected a score in [0, 1]")
        detected = detect_backend(self.path)
        if self.backend and self.backend != detected:
            raise ValueError(f"pii.ner_model: {self.path!r} is a {detected} model, not {self.backend}")
        object.__setattr__(self, "backend", detected)

    def __hash__(self) -> int:
        return hash((self.path, self.backend, self.min_score, tuple(sorted(self.labels.items()))))

    def spans(self, text: str) -> Spans:
        """Entity spans of `text` with a mapped label and at least `min_score`."""
        if not text.strip():
            return []
        predict = _model(self.backend, self.path)
        found: Spans = []
        for offset, piece in _chunks(text):
            for start, end, label, score in predict(piece):
                kind = self.labels.get(_bare_label(label))
                if kind is not None and score >= self.min_score and end > start:
                    found.append((offset + start, offset + end, kind))
        return found


def _bare_label(label: str) -> str:
    """`B-PER` / `I-PER` / `PER` → `PER`."""
    label = label.upper()
    return label[2:] if label[:2] in ("B-", "I-", "E-", "S-", "L-", "U-") else label


def _chunks(text: str) -> list[tuple[int, str]]:
    """(offset, piece) with pieces of at most CHUNK_CHARS, cut after whitespace where there is some."""
    pieces = []
    start = 0
    while start < len(text):
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            space = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = space + 1 if space > start else end
        pieces.append((start, text[start:end]))
        start = end
    return pieces


def _model(backend: str, path: str) -> Callable[[str], list[tuple[int, int, str, float]]]:
    key = (backend, path)
    if key not in _LOADED:
        _LOADED[key] = _load_spacy(path) if backend == SPACY else _load_transformers(path)
    return _LOADED[key]


def _load_spacy(path: str) -> Callable[[str], list[tuple[int, int, str, float]]]:
    try:
        import spacy
    except ImportError:
        raise ValueError(f"pii.ner_model: {path!r} is a spaCy pipeline but spaCy is not installed "
                         "(pip install spacy)") from None
    nlp = spacy.load(path)

    def predict(text: str) -> list[tuple[int, int, str, float]]:
        return [(ent.start_char, ent.end_char, ent.label_, 1.0) for ent in nlp(text).ents]

    return predict


def _load_transformers(path: str) -> Callable[[str], list[tuple[int, int, str, float]]]:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=path, tokenizer=path, aggregation_strategy="simple", device=-1)

    def predict(text: str) -> list[tuple[int, int, str, float]]:
        return [_entity(item, text) for item in tagger(text)]

    return predict


def _entity(item: Mapping[str, Any], text: str) -> tuple[int, int, str, float]:
    """One pipeline entity as (start, end, label, score), widened to whole words (sub-word pieces)."""
    start, end = int(item["start"]), int(item["end"])
    while start > 0 and _WORD_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _WORD_CHAR.match(text[end]):
        end += 1
    return start, end, str(item.get("entity_group") or item.get("entity", "")), float(item.get("score", 1.0))


_WORD_CHAR = re.compile(r"\w")
