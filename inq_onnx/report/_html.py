"""The report page: one self-contained HTML file (inline CSS, images beside it, nothing fetched), all text escaped."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

__all__ = ["Section", "page", "table", "figure", "paragraph", "bullet_list"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; max-width: 28em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""


class Section:
    """A titled part of the page with an anchor for the contents line."""

    def __init__(self, anchor: str, title: str, body: Sequence[str]):
        self.anchor, self.title, self.body = anchor, title, list(body)

    def html(self) -> str:
        return f'<section id="{escape(self.anchor)}">\n<h2>{escape(self.title)}</h2>\n' + "\n".join(self.body) + \
               "\n</section>"


def _cell(value: object) -> str:
    """A table cell: numbers right-aligned, text escaped."""
    if value is None:
        return "<td>-</td>"
    if isinstance(value, float):
        text = ("inf" if value > 0 else "-inf") if math.isinf(value) else "-" if math.isnan(value) else f"{value:.4g}"
        return f'<td class="num">{text}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], name_column: bool = False) -> str:
    """An HTML table; with `name_column` the first column is set in monospace (node and tensor names)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = []
    for row in rows:
        cells = [_cell(v) for v in row]
        if name_column and cells:
            cells[0] = f'<td class="name">{escape(str(row[0]))}</td>'
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


def figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{escape(src)}" alt="{escape(alt)}" loading="lazy">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def bullet_list(items: Sequence[str]) -> str:
    return "<ul>\n" + "\n".join(f"<li>{escape(i)}</li>" for i in items) + "\n</ul>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    contents = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(s.html() for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"meta\">{escape(subtitle)}</p>\n<nav>{contents}</nav>\n"
            f"{body}\n</body>\n</html>\n")
