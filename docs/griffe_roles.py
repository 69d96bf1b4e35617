"""A griffe extension (named in mkdocs.yml): Sphinx roles in docstrings become plain code.

The docstrings cite names Sphinx-style, ``:class:`Loss``` or ``:func:`fit```. Markdown would show
the role's name before the code, and a role's colon inside a ``Returns:`` line reads as the
separator of "type: description". Each ``:role:`name``` becomes ``name`` in backticks before the
docstring is parsed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
