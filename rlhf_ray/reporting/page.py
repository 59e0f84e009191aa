"""HTML building blocks for the report: escaped text, tables, embedded PNGs, one page with inline CSS.

Everything is inline (no script, no external stylesheet or image), so the page opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_ROWS = 40
CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c4c9d4;font-size:13px}main{padding:16px 32px;max-width:1200px}
nav a{margin-right:14px;color:#2f6fdb;text-decoration:none;font-size:14px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 20px;margin:16px 0;overflow-x:auto}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #dde1e8;padding:3px 8px;text-align:left}
th{background:#eef1f6}img{max-width:100%;border:1px solid #eef1f6;margin:6px 0}
.source{color:#6b7385;font-size:12px}.ok{background:#e3f6e8;color:#17612e}.bad{background:#fde8e8;color:#8c1d1d}
.banner{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;margin:4px 0}
.missing{color:#6b7385;font-size:13px}
"""


def fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, None as a dash, lists joined, everything escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value))
    if isinstance(value, Mapping):
        return html.escape("; ".join(f"{k}: {v}" for k, v in value.items()))
    return html.escape(str(value))


def paragraph(text: str, css: str = "") -> str:
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"


def subheading(text: str) -> str:
    return f"<h3>{html.escape(text)}</h3>"


def banner(text: str, ok: bool) -> str:
    return f'<div class="banner {"ok" if ok else "bad"}">{html.escape(text)}</div>'


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, max_rows: int = MAX_ROWS) -> str:
    """Rows as a table (columns: the given ones, else every key in order of appearance); long tables are cut."""
    if not rows:
        return paragraph("(no rows)", "missing")
    names = list(columns) if columns else list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join("<tr>" + "".join(f"<td>{fmt(row.get(name))}</td>" for name in names) + "</tr>"
                   for row in rows[:max_rows])
    more = paragraph(f"… {len(rows) - max_rows} more rows", "missing") if len(rows) > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def key_values(values: Mapping[str, Any]) -> str:
    return table([{"figure": k, "value": v} for k, v in values.items()], ["figure", "value"], max_rows=10_000)


def image(png: bytes, alt: str) -> str:
    """A PNG embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


@dataclass
class Section:
    title: str
    source: str
    blocks: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower())

    def render(self) -> str:
        return (f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>'
                f'{paragraph("from " + self.source, "source")}{"".join(self.blocks)}</section>')


def render_page(title: str, subtitle: str, sections: Sequence[Section], missing: Sequence[str]) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    absent = (f'<section><h2>Not in this run</h2>{"".join(paragraph(m, "missing") for m in missing)}</section>'
              if missing else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(subtitle)}</p></header><main><nav>{nav}</nav>"
            f'{"".join(s.render() for s in sections)}{absent}</main></body></html>')
