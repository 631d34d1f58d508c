"""A :class:`~simulator.report.document.Report` as Markdown (GitHub flavour) with PNG files beside it.

Text is escaped so that a label can neither inject HTML (``<`` becomes ``&lt;``) nor Markdown
formatting; code spans and blocks use a fence longer than any run of backticks inside.
"""

from __future__ import annotations

import re

from simulator.report.document import Bullets, Code, Figure, Paragraph, Report, Section, Span, Table, walk

FIGURE_DIR = "figures"
# Enough to keep text literal while raw report.md stays readable: with [ and ] escaped no
# link can form, so parentheses, + and ! need nothing; $ would start math on GitHub; line
# starts are handled by _paragraph.
_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
_BLOCK_START = re.compile(r"^(\s*)([#+-]|\d+\.)")


def escape(text: str) -> str:
    """Markdown text shown literally: HTML characters as entities, markup characters backslashed."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def _paragraph(text: str) -> str:
    """``text`` safe at the start of a block: a leading ``#``, ``-``, ``+`` or ``1.`` would
    otherwise start a heading or a list."""
    match = _BLOCK_START.match(text)
    if not match:
        return text
    marker = match.group(2)
    escaped = marker[:-1] + "\\." if marker.endswith(".") else "\\" + marker
    return text[:match.start(2)] + escaped + text[match.end(2):]


def _code_span(text: str) -> str:
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _spans(spans: tuple[Span, ...]) -> str:
    out = []
    for span in spans:
        if span.style == "code":
            out.append(_code_span(span.text))
        elif span.style == "strong":
            out.append(f"**{escape(span.text.strip())}**" + (" " if span.text.endswith(" ") else ""))
        elif span.style == "em":
            out.append(f"*{escape(span.text)}*")
        else:
            out.append(escape(span.text))
    return "".join(out)


def figure_path(figure: Figure) -> str:
    """Where a figure's PNG goes, relative to ``report.md``."""
    return f"{FIGURE_DIR}/{figure.name}.png"


def _block(block) -> list[str]:
    if isinstance(block, Paragraph):
        text = _spans(block.spans)
        return [f"> **Warning:** {text}" if block.warning else _paragraph(text), ""]
    if isinstance(block, Bullets):
        return [f"- {_paragraph(_spans(item))}" for item in block.items] + [""]
    if isinstance(block, Table):
        lines = [f"**{escape(block.title)}**", ""] if block.title else []
        lines += ["| " + " | ".join(escape(h) for h in block.header) + " |",
                  "|" + "|".join("---:" if i and block.rows and block.rows[0][i].numeric else "---"
                                for i in range(len(block.header))) + "|"]
        for row in block.rows:
            lines.append("| " + " | ".join(f"**{escape(c.text)}**" if c.best else escape(c.text) for c in row) + " |")
        return lines + ([""] + [f"*{escape(block.caption)}*"] if block.caption else []) + [""]
    if isinstance(block, Figure):
        lines = [f"![{escape(block.alt)}]({figure_path(block)})", ""]
        return lines + ([f"*{escape(block.caption)}*", ""] if block.caption else [])
    if isinstance(block, Code):
        fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", block.text)), default=0) + 1)
        return [escape(block.title) + ":", "", f"{fence}{block.language}", block.text, fence, ""]
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section, depth: int) -> list[str]:
    lines = ["#" * min(depth + 2, 6) + " " + escape(section.title), ""]
    for block in section.blocks:
        lines += _block(block)
    for child in section.children:
        lines += _section(child, depth + 1)
    return lines


def render(report: Report) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and its figures as ``{path relative to report.md: PNG bytes}``."""
    lines = ["# " + escape(report.title), ""]
    for block in report.intro:
        lines += _block(block)
    for section in report.sections:
        lines += _section(section, 0)
    files = {}
    for block in list(report.intro) + [b for _, s in walk(report.sections) for b in s.blocks]:
        if isinstance(block, Figure):
            files[figure_path(block)] = block.png
    return "\n".join(lines).rstrip("\n") + "\n", files

