"""MkDocs hooks for the jaxmlp site (named in mkdocs.yml; not part of the site itself).

Two checks that a strict build (``mkdocs build --strict``) turns into failures:

- Links out of ``docs/`` into the repository (``../benchmarks/RESULTS.md``,
  ``../examples/gallery/loss.png``) are kept as they are: they work on GitHub, and in the built
  site too, because ``site/`` sits beside ``docs/`` at the repository root and pages keep their
  depth (``use_directory_urls: false``). MkDocs would warn about them as "not found among
  documentation files"; this hook silences that warning when the file exists in the repository
  and lets it through (failing the build) when it does not.
- Every name in ``jaxmlp.__all__`` must have an entry (``::: jaxmlp.NAME``) in
  ``docs/reference/``; a missing one is a warning. ``__all__`` is read from the source with
  ``ast``, so the check imports nothing.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger("mkdocs.hooks.jaxmlp")

_NOT_FOUND = re.compile(
    r"^Doc file '(?P<page>[^']+)' contains a link '(?P<url>[^']+)', but the target"
)


class _RepositoryLinks(logging.Filter):
    """Drops MkDocs's "not found" warning for links that leave docs/ for an existing file."""

    def __init__(self, docs_dir: Path, root: Path):
        super().__init__()
        self.docs_dir, self.root = docs_dir, root

    def filter(self, record: logging.LogRecord) -> bool:
        match = _NOT_FOUND.match(record.getMessage())
        if match is None:
            return True
        path = unquote(urlsplit(match["url"]).path)
        target = (self.docs_dir / match["page"]).parent.joinpath(path).resolve()
        inside_repo = target.is_relative_to(self.root) and not target.is_relative_to(self.docs_dir)
        return not (inside_repo and target.is_file())


def on_config(config):
    docs_dir = Path(config.docs_dir).resolve()
    root = Path(config.config_file_path).resolve().parent
    logging.getLogger("mkdocs.structure.pages").addFilter(_RepositoryLinks(docs_dir, root))
    return config


def _public_names(init: Path) -> list[str]:
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def on_files(files, config):
    root = Path(config.config_file_path).resolve().parent
    reference = Path(config.docs_dir) / "reference"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(reference.glob("*.md")))
    entries = set(re.findall(r"^::: jaxmlp\.(\S+)", text, flags=re.MULTILINE))
    for name in _public_names(root / "jaxmlp" / "__init__.py"):
        if name not in entries:
            log.warning(f"jaxmlp.{name} is in jaxmlp.__all__ but has no entry in docs/reference/")
    return files
