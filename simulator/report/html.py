"""A :class:`~simulator.report.document.Report` as one self-contained HTML page.

No external file or network access: styles are inline, figures are ``data:`` PNG URIs, and
the report's data sits in a ``<script type="application/json" id="report-data">`` block. All
text goes through :func:`html.escape`; the JSON escapes ``<``, ``>`` and ``&`` so that no
label can close the script block.
"""

from __future__ import annotations

import base64
import html
import json
import struct

from simulator.report.document import Bullets, Code, Figure, Paragraph, Report, Section, Span, Table, walk

STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --best: #dafbe1; --warn: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #ffffff;
  font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.35em; margin: 1.8em 0 0.5em; padding-bottom: 0.25em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.12em; margin: 1.5em 0 0.4em; }
h4 { font-size: 1em; margin: 1.2em 0 0.3em; }
p, ul { margin: 0.5em 0; }
code { font: 0.9em/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace;
  background: var(--soft); padding: 0.1em 0.35em; border-radius: 4px; }
.warning { background: var(--warn); border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 8px 20px;
  margin: 16px 0; }
nav.toc ol { margin: 0.2em 0; padding-left: 1.4em; }
nav.toc > ol { columns: 3 18em; column-gap: 2em; }
nav.toc li { break-inside: avoid; }
nav.toc a { color: #0969da; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
.table-block.compact { display: inline-block; vertical-align: top; margin-right: 2em; max-width: 100%; }
.table-block.compact .caption { max-width: 26em; }
.table-wrap { overflow-x: auto; margin: 0.3em 0 0.2em; }
.table-title { font-weight: 600; margin: 1.2em 0 0; }
table { border-collapse: collapse; font-size: 0.86em; }
th, td { border: 1px solid var(--line); padding: 4px 7px; vertical-align: top; }
th { hyphens: auto; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.best { background: var(--best); font-weight: 700; }
.caption, figcaption { color: var(--muted); font-size: 0.88em; margin: 0.3em 0 1em; max-width: 70em; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; height: auto; display: block; }
details { margin: 0.8em 0; }
summary { cursor: pointer; color: var(--muted); }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; overflow-x: auto;
  font: 0.82em/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _spans(spans: tuple[Span, ...]) -> str:
    # the span styles are also the names of their HTML elements
    return "".join(f"<{s.style}>{_e(s.text)}</{s.style}>" if s.style else _e(s.text) for s in spans)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    return struct.unpack(">II", png[16:24])


def _block(block) -> str:
    if isinstance(block, Paragraph):
        opening = '<p class="warning">' if block.warning else "<p>"
        return f"{opening}{_spans(block.spans)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_spans(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in block.header)
        rows = []
        for row in block.rows:
            cells = []
            for cell in row:
                classes = " ".join(c for c, on in (("num", cell.numeric), ("best", cell.best)) if on)
                opening = f'<td class="{classes}">' if classes else "<td>"
                cells.append(f"{opening}{_e(cell.text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        caption = f'<p class="caption">{_e(block.caption)}</p>' if block.caption else ""
        title = f'<p class="table-title">{_e(block.title)}</p>' if block.title else ""
        return (f'<div class="table-block{" compact" if block.compact else ""}">{title}<div class="table-wrap">'
                f"<table><thead><tr>{head}</tr></thead><tbody>" + "".join(rows)
                + f"</tbody></table></div>{caption}</div>")
    if isinstance(block, Figure):
        width, height = png_size(block.png)
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{_e(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure id="figure-{_e(block.name)}"><img src="data:image/png;base64,{data}" '
                f'width="{width}" height="{height}" alt="{_e(block.alt)}">{caption}</figure>')
    if isinstance(block, Code):
        return f"<details><summary>{_e(block.title)}</summary><pre><code>{_e(block.text)}</code></pre></details>"
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section, depth: int) -> str:
    level = min(depth + 2, 6)
    parts = [f'<section id="{_e(section.id)}"><h{level}>{_e(section.title)}</h{level}>']
    parts += [_block(b) for b in section.blocks]
    parts += [_section(child, depth + 1) for child in section.children]
    parts.append("</section>")
    return "\n".join(parts)


def _toc(sections: tuple[Section, ...]) -> str:
    def items(children: tuple[Section, ...]) -> str:
        return "<ol>" + "".join(
            f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a>{items(s.children) if s.children else ""}</li>'
            for s in children) + "</ol>"
    return f'<nav class="toc" aria-label="Contents"><strong>Contents</strong>{items(sections)}</nav>'


def script_json(data) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as unicode escapes."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(report: Report) -> str:
    """The whole page as a string (UTF-8 when written)."""
    body = [f"<h1>{_e(report.title)}</h1>"] + [_block(b) for b in report.intro] + [_toc(report.sections)]
    body += [_section(s, 0) for s in report.sections]
    # every section id must be unique, or the contents links would point to the wrong place
    ids = [s.id for _, s in walk(report.sections)]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate section ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title>",
        f"<style>{STYLE}</style></head>",
        "<body><main>",
        *body,
        f'<script type="application/json" id="report-data">{script_json(report.data)}</script>',
        "</main></body></html>",
        "",
    ])
