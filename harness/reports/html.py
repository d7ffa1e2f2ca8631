"""``comparison.html``: one self-contained page (tables, notes, plots inline as base64 PNG; no network access,
no scripts), so a report can be mailed or attached as a single file."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
thead th { text-align: center; background: #f4f4f4; }
tbody th { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figure img { max-width: 640px; }
.notes li { margin: 0.2em 0; }
.warn { color: #a00; font-weight: bold; }
"""


def _inline(text: str) -> str:
    """Escaped text with Markdown's `inline code` as <code> (notes name commands and files that way)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _pairwise_html(markdown: str) -> str:
    """The pairwise-test Markdown table as HTML (it is already a simple pipe table)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return f"<p>{html.escape(markdown.strip('_'))}</p>"
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(title: str, main_table: str, footnotes: list[str], notes: list[str], pairwise_md: str,
                plots: list[Path], runs: list[str]) -> str:
    figures = []
    for path in plots:
        if path.suffix != ".png":
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(path.stem.replace('_', ' '))}</figcaption></figure>")
    note_items = "".join(
        f'<li class="{"warn" if n.startswith("WARNING") else ""}">{_inline(n)}</li>' for n in notes)
    foot = "".join(f"<p><small>{_inline(n)}</small></p>" for n in footnotes)
    run_items = "".join(f"<li><code>{html.escape(r)}</code></li>" for r in runs)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"{'<ul class=notes>' + note_items + '</ul>' if notes else ''}"
        f"<h2>Results</h2>{main_table}{foot}"
        f"<h2>Paired significance tests</h2>{_pairwise_html(pairwise_md)}"
        f"<h2>Figures</h2>{''.join(figures) or '<p>No figures.</p>'}"
        f"<h2>Runs</h2><ul>{run_items}</ul></body></html>\n"
    )
