"""A Griffe extension for the API pages: our docstrings are written for Python's help() and
Sphinx habits, and the pages render them as Markdown.

- Griffe's Google-style parser reads "Examples:" as the section whose ``>>>`` lines are code,
  and "Example:" (our title) as an admonition of Markdown text, where doctest output such as
  ``[torch.Size([1])]`` would be taken for a link: the title is read as "Examples:".
- Sphinx roles (``:func:`~strategies.base.gradient_step```) would show their role names: they
  become inline code of the name (its last part after ``~``, as Sphinx shows it).
- A paragraph that ends with ``::`` before an indented block ends with ``:`` (the indented
  block is already code in Markdown).

The docstrings themselves are not changed; only what the pages show.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_TITLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(\S)::\n")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class ExampleSections(griffe.Extension):
    """Rewrite the text of every docstring as described in the module docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = _TITLE.sub(r"\1Examples:", obj.docstring.value)
        text = _ROLE.sub(_role, text)
        obj.docstring.value = _LITERAL_BLOCK.sub(r"\1:\n", text)
