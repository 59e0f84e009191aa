"""Versioned labeling guidelines: Markdown documents under `<root>/<family>/<version>.md`, a diff between any
two versions, and a small Markdown → HTML renderer (escape first, then a handful of block and inline rules), so
the browser never interprets guideline text as HTML and no front-end library is needed.

Versions sort naturally (`gl-1.2` < `gl-1.10`); the newest is current unless a family is pinned.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_NATURAL = re.compile(r"(\d+)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class GuidelineError(ValueError):
    """An unknown family or version; the message names it and what exists."""


def natural_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _NATURAL.split(version) if part)


@dataclass(frozen=True)
class GuidelineStore:
    documents: Mapping[str, Mapping[str, str]]  # family → version → markdown
    pinned: Mapping[str, str]

    @classmethod
    def load(cls, root: str | Path, pinned: Mapping[str, str] | None = None) -> GuidelineStore:
        base = Path(root)
        if not base.is_dir():
            raise GuidelineError(f"guidelines_dir {str(base)!r} is not a directory")
        documents = {family.name: {doc.stem: doc.read_text(encoding="utf-8") for doc in sorted(family.glob("*.md"))}
                     for family in sorted(base.iterdir()) if family.is_dir()}
        store = cls({f: d for f, d in documents.items() if d}, dict(pinned or {}))
        for family, version in store.pinned.items():
            store.text(family, version)
        return store

    def families(self) -> list[str]:
        return sorted(self.documents)

    def versions(self, family: str) -> list[str]:
        if family not in self.documents:
            raise GuidelineError(f"guideline family {family!r} does not exist; expected one of {self.families()}")
        return sorted(self.documents[family], key=natural_key)

    def current(self, family: str) -> str:
        return self.pinned.get(family) or self.versions(family)[-1]

    def text(self, family: str, version: str) -> str:
        versions = self.versions(family)
        if version not in self.documents[family]:
            raise GuidelineError(f"guideline {family}/{version!r} does not exist; versions: {versions}")
        return self.documents[family][version]

    def diff(self, family: str, old: str, new: str) -> str:
        """Unified diff of two versions of one family (`--- family/old`, `+++ family/new`)."""
        before, after = self.text(family, old), self.text(family, new)
        return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), f"{family}/{old}",
                                              f"{family}/{new}", lineterm=""))

    def summary(self) -> dict[str, dict[str, object]]:
        return {f: {"versions": self.versions(f), "current": self.current(f)} for f in self.families()}


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*]+)\*(?![*\w])"), r"<em>\1</em>"),
]


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def render_markdown(text: str) -> str:
    """Headings (#..###), bullet and numbered lists (a line right under an item continues it), paragraphs,
    `code`, **bold**, *emphasis*. Everything is HTML-escaped before any tag is added."""
    parts: list[str] = []
    paragraph: list[str] = []
    items: list[list[str]] = []
    list_tag = ""

    def close() -> None:
        nonlocal list_tag
        if paragraph:
            parts.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            parts.append(f"<{list_tag}>" + "".join(f"<li>{_inline(' '.join(i))}</li>" for i in items)
                         + f"</{list_tag}>")
            items.clear()

    for raw in text.splitlines():
        line = raw.strip()
        heading = re.match(r"^(#{1,3})\s+(.*)$", line)
        bullet = re.match(r"^(?:[-*]|(\d+)\.)\s+(.*)$", line)
        if not line or heading:
            close()
            if heading:
                level = len(heading.group(1)) + 1
                parts.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet:
            tag = "ol" if bullet.group(1) else "ul"
            if paragraph or (items and list_tag != tag):
                close()
            list_tag = tag
            items.append([bullet.group(2)])
        elif items:
            items[-1].append(line)
        else:
            paragraph.append(line)
    close()
    return "\n".join(parts)
