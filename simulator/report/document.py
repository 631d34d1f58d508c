"""The report as plain data, rendered alike to HTML and to Markdown.

Builders produce a :class:`Report`; :mod:`simulator.report.html` and
:mod:`simulator.report.markdown` render it. Text is stored raw: each renderer escapes it for
its own format, so a strategy label can never inject markup into either.

Example:
    >>> section = Section("summary", "Summary", (paragraph("Best: ", Span("joint", "code")),))
    >>> section.blocks[0].spans[1].style
    'code'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Union


@dataclass(frozen=True)
class Span:
    """A run of text; ``style`` is ``""``, ``"code"``, ``"strong"`` or ``"em"``."""

    text: str
    style: str = ""

    def __post_init__(self):
        if self.style not in ("", "code", "strong", "em"):
            raise ValueError(f"unknown span style {self.style!r}")


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; ``warning`` paragraphs are shown prominently."""

    spans: tuple[Span, ...]
    warning: bool = False


@dataclass(frozen=True)
class Bullets:
    """A bulleted list; each item is a tuple of spans."""

    items: tuple[tuple[Span, ...], ...]


@dataclass(frozen=True)
class Cell:
    """A table cell; ``best`` marks the best value of its column, ``numeric`` aligns it right."""

    text: str
    best: bool = False
    numeric: bool = False


@dataclass(frozen=True)
class Table:
    """A table with a header row; ``title`` (may be empty) is shown above it, ``caption`` under it.
    ``compact`` tables (short key-value lists) may sit side by side where the format allows."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    title: str = ""
    compact: bool = False


@dataclass(frozen=True)
class Figure:
    """A PNG figure; ``name`` is a safe file stem, unique within the report.

    ``png`` is the image, or a function of no arguments that draws it: builders hand over the
    drawing so that :func:`drawn` can draw all of a report's figures at once (in parallel),
    and the renderers only ever see bytes."""

    name: str
    png: bytes | Callable[[], bytes]
    alt: str
    caption: str = ""
    cost: float = 1.0  # how long drawing it takes, relatively: the costliest are drawn first


@dataclass(frozen=True)
class Code:
    """Preformatted text (configuration files); ``title`` says what it is, ``language`` its
    syntax (for Markdown's highlighting)."""

    text: str
    title: str = ""
    language: str = ""


Block = Union[Paragraph, Bullets, Table, Figure, Code]


@dataclass(frozen=True)
class Section:
    """A titled section; ``id`` is a safe anchor (letters, digits and hyphens), unique in the report."""

    id: str
    title: str
    blocks: tuple[Block, ...] = ()
    children: tuple["Section", ...] = ()


@dataclass(frozen=True)
class Report:
    """The whole report: title, opening blocks, sections and the data behind the figures (JSON-ready)."""

    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]
    data: dict[str, Any] = field(default_factory=dict)


def paragraph(*parts: str | Span, warning: bool = False) -> Paragraph:
    """A paragraph from plain strings and spans."""
    return Paragraph(tuple(p if isinstance(p, Span) else Span(p) for p in parts), warning)


def walk(sections: tuple[Section, ...], depth: int = 0):
    """Yield ``(depth, section)`` for every section, parents before their children."""
    for section in sections:
        yield depth, section
        yield from walk(section.children, depth + 1)


def drawn(report: Report, draw_all: Callable[..., list[bytes]]) -> Report:
    """``report`` with every figure still to draw replaced by its PNG; ``draw_all(renders,
    costs)`` takes the drawing functions and their costs in report order and returns their PNGs
    in that order (:func:`simulator.report.figures.draw_all`)."""
    pending: list[Figure] = []

    def collect(blocks):
        pending.extend(b for b in blocks if isinstance(b, Figure) and callable(b.png))

    collect(report.intro)
    for _, section in walk(report.sections):
        collect(section.blocks)
    if not pending:
        return report
    pngs = iter(draw_all([f.png for f in pending], [f.cost for f in pending]))

    def fill(blocks):
        return tuple(replace(b, png=next(pngs)) if isinstance(b, Figure) and callable(b.png) else b for b in blocks)

    def fill_sections(sections):
        return tuple(replace(s, blocks=fill(s.blocks), children=fill_sections(s.children)) for s in sections)

    # filled in the order collected: the intro, then each section's blocks before its children's
    intro = fill(report.intro)
    return replace(report, intro=intro, sections=fill_sections(report.sections))
