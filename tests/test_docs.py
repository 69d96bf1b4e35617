"""Every Python code block in README.md and docs/**/*.md runs here, so the documentation cannot drift.

A small Markdown runner (standard library only). Each page is one tutorial: its Python blocks run
in order in one namespace (a fresh one per page), in a temporary working directory, so a block may
use what an earlier block on the same page defined. A failing block reports the page and the line
of the block in the traceback.

Conventions, written as HTML comments (invisible on GitHub and on the MkDocs site):

``<!-- docs-test: setup`` ... ``-->``
    Hidden Python, run in the page's namespace at its place in the page: before a block, it
    defines what the block uses but the page does not show (``x``, ``y``, a small dataset instead
    of a large one); after a block (spelled ``<!-- docs-test: check`` for readability) it asserts
    what the text claims about the block's result. It may make a run smaller (fewer rows), never
    change what a block shows the reader.

``<!-- docs-test: skip: REASON -->``
    Directly above a fence (blank lines allowed between): that block does not run here, for the
    stated reason (a shell command, a multi-process launch, ...). The reason is required, and
    ``SKIPPED`` below lists how many blocks each page skips: a new skip fails
    ``test_only_marked_blocks_are_skipped`` until it is counted there, so nothing is skipped
    silently.

Fences: ``python`` blocks run; shell blocks (``bash``) carry a skip marker; ``text`` blocks
(program output, diagrams, layouts) are not code and never run. A fence with any other language,
or none, fails the inventory test: tag it.

The pages pass one ``key`` to several independent calls for brevity, as a reader's script would,
so JAX's key-reuse checker (on for the rest of the suite, see conftest.py) is off while they run.
Running every page takes about 75 s on two loaded cores, so ``test_page_code_blocks_run`` is in
the slow tier (``make test``); one page: ``pytest tests/test_docs.py -k training``. The fast tests
here check the inventory, the parser, the examples' ``main`` signatures the docs promise, and that
the gallery's pictures come from the run whose figures docs/index.md quotes.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: p.relative_to(ROOT).as_posix(),
)

RUN_LANGS = {"python"}
TEXT_LANGS = {"text"}
SHELL_LANGS = {"bash"}

# Page -> how many of its fenced blocks carry a skip marker. Every skip is a block a test cannot
# run; add to this table only with the marker's reason in mind.
SKIPPED = {
    "README.md": 1,  # make demo / make test (shell)
    "docs/benchmarks.md": 1,  # the benchmark scripts (shell)
    "docs/cli.md": 1,  # the jaxmlp command (shell; tests/test_cli.py runs it)
    "docs/data.md": 1,
    "docs/fused.md": 1,  # the GPU benchmark run (shell)  # a multi-process launch with sharded input (tests/test_streaming.py)
    "docs/index.md": 1,  # make demo / make test (shell)
    "docs/interop.md": 5,  # pip install (shell); 4 blocks need PyTorch (tests/test_interop.py runs the same calls)
    "docs/scaling.md": 3,  # a 2-host launch (Python and shell), an XLA_FLAGS launch (shell)
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[a-z]+)(?P<rest>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block or hidden snippet of a page.

    ``kind``: ``"run"`` (a Python fence), ``"hidden"`` (a setup/check comment), ``"skip"`` (a fence
    with a skip marker), ``"text"`` (a text fence); errors: ``"shell"`` (a shell fence without a
    skip marker), ``"untagged"`` (a fence in any other language, or none).
    """

    page: str
    line: int  # 1-based line of the code's first line
    lang: str
    kind: str
    code: str
    reason: str = ""


def parse(page: str, text: str) -> list[Block]:
    """The fenced blocks and hidden snippets of a page's Markdown ``text``, in document order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line)
        fence = _FENCE.match(line)
        if marker:
            kind, rest = marker["kind"], marker["rest"]
            if kind == "skip":
                reason = rest.strip().removeprefix(":").removesuffix("-->").strip()
                if not rest.rstrip().endswith("-->") or not reason:
                    raise ValueError(f"{page}:{i + 1}: write <!-- docs-test: skip: REASON -->")
                pending_skip = (i + 1, reason)
                i += 1
                continue
            if kind not in ("setup", "check"):
                raise ValueError(f"{page}:{i + 1}: unknown docs-test marker {kind!r}")
            if rest.strip():
                raise ValueError(f"{page}:{i + 1}: the code starts on the line after '{kind}'")
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->"), None)
            if end is None:
                raise ValueError(
                    f"{page}:{i + 1}: a docs-test {kind} comment ends with '-->' alone"
                )
            code = "\n".join(lines[i + 1 : end])
            blocks.append(Block(page, i + 2, "python", "hidden", code))
            i = end + 1
            continue
        if fence:
            indent, ticks = fence["indent"], fence["fence"]
            lang = fence["info"].strip().split(" ")[0].lstrip("{.").rstrip("}")
            close = re.compile(rf"^[ \t]*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
            if end is None:
                raise ValueError(f"{page}:{i + 1}: unclosed code fence")
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            code = "\n".join(body)
            if pending_skip is not None:
                blocks.append(Block(page, i + 2, lang, "skip", code, pending_skip[1]))
            elif lang in RUN_LANGS:
                blocks.append(Block(page, i + 2, lang, "run", code))
            elif lang in TEXT_LANGS:
                blocks.append(Block(page, i + 2, lang, "text", code))
            elif lang in SHELL_LANGS:
                blocks.append(Block(page, i + 2, lang, "shell", code))
            else:
                blocks.append(Block(page, i + 2, lang, "untagged", code))
            pending_skip = None
            i = end + 1
            continue
        if pending_skip is not None and line.strip():
            raise ValueError(
                f"{page}:{pending_skip[0]}: a skip marker must sit directly above a fence"
            )
        i += 1
    if pending_skip is not None:
        raise ValueError(f"{page}:{pending_skip[0]}: a skip marker with no fence below it")
    return blocks


BLOCKS = {
    page: parse(page, (ROOT / page).read_text(encoding="utf-8"))
    for page in (path.relative_to(ROOT).as_posix() for path in PAGES)
}
RUNNABLE = [page for page, blocks in BLOCKS.items() if any(b.kind == "run" for b in blocks)]


def test_only_marked_blocks_are_skipped():
    problems = []
    for page, blocks in BLOCKS.items():
        for b in blocks:
            where = f"{page}:{b.line - 1}"
            if b.kind == "untagged":
                problems.append(f"{where}: fence language {b.lang!r}: tag it python, bash or text")
            if b.kind == "shell":
                problems.append(f"{where}: a shell block needs <!-- docs-test: skip: REASON -->")
    assert not problems, "\n".join(problems)
    skipped = {page: sum(b.kind == "skip" for b in blocks) for page, blocks in BLOCKS.items()}
    assert {p: n for p, n in skipped.items() if n} == SKIPPED
    # The runner finds the blocks at all (a broken parser would skip everything silently).
    assert sum(b.kind == "run" for blocks in BLOCKS.values() for b in blocks) >= 18


def test_parser_reads_markers_and_rejects_malformed_ones():
    page = "\n".join(
        [
            "<!-- docs-test: setup",
            "x = 1",
            "-->",
            "",
            "```python",
            "y = x + 1",
            "```",
            "<!-- docs-test: skip: a shell command -->",
            "",
            "```bash",
            "make demo",
            "```",
            "- a list item:",
            "",
            "    ```python",
            "    z = y",
            "    ```",
            "",
            "````text",
            "```python",
            "not code",
            "```",
            "````",
            "```",
            "untagged",
            "```",
        ]
    )
    blocks = parse("p.md", page)
    assert [(b.kind, b.line, b.code) for b in blocks] == [
        ("hidden", 2, "x = 1"),
        ("run", 6, "y = x + 1"),
        ("skip", 11, "make demo"),
        ("run", 16, "z = y"),
        ("text", 20, "```python\nnot code\n```"),
        ("untagged", 25, "untagged"),
    ]
    assert blocks[2].reason == "a shell command"
    for bad, match in [
        ("<!-- docs-test: skip -->\n```python\n```", "REASON"),
        ("<!-- docs-test: skip: why -->\ntext\n```python\n```", "directly above"),
        ("<!-- docs-test: skip: why -->\n", "no fence"),
        ("<!-- docs-test: setup\nx = 1\n", "ends with"),
        ("<!-- docs-test: run\nx = 1\n-->", "unknown"),
        ("```python\nx = 1\n", "unclosed"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse("p.md", bad)


def test_every_example_has_the_documented_main():
    # docs/index.md: "Each has main(epochs=None, ...) -> dict"; tests/test_examples.py runs them.
    scripts = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
    assert len(scripts) >= 6
    for script in scripts:
        spec = importlib.util.spec_from_file_location(f"docs_example_{script.stem}", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        signature = inspect.signature(module.main)
        first = next(iter(signature.parameters.values()), None)
        assert first is not None and first.name == "epochs" and first.default is None, script.name
        others = list(signature.parameters.values())[1:]
        assert all(p.default is not inspect.Parameter.empty for p in others), script.name
        assert signature.return_annotation in (dict, "dict"), script.name


def test_gallery_is_the_demo_run_the_pages_quote():
    # `make gallery` copies make demo's pictures and summary.json into examples/gallery/.
    gallery = ROOT / "examples" / "gallery"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    listed = re.search(r"^GALLERY := (.+)$", makefile, re.MULTILINE)
    assert listed is not None, "Makefile: the gallery target's GALLERY list"
    pages = {
        page: (ROOT / page).read_text(encoding="utf-8") for page in ("README.md", "docs/index.md")
    }
    shown = {name for text in pages.values() for name in re.findall(r"gallery/([\w.]+\.png)", text)}
    assert shown and shown <= set(listed[1].split()) <= {p.name for p in gallery.iterdir()}
    final = json.loads((gallery / "summary.json").read_text(encoding="utf-8"))["final"]
    quoted = re.search(
        r"for\s+(\d+)\s+epochs\s+\(train\s+accuracy\s+([\d.]+),\s+validation\s+([\d.]+)\)",
        pages["docs/index.md"],
    )
    assert quoted is not None, (
        "docs/index.md: the demo's epochs and accuracies, as this test reads them"
    )
    epochs, train, val = quoted.groups()
    assert int(epochs) == final["epochs"]
    for text, value in ((train, final["train"]["accuracy"]), (val, final["val"]["accuracy"])):
        assert float(text) == round(value, len(text.split(".")[1])), (text, value)


# About 75 s for all pages on two loaded cores (training.md alone 27 s): slow tier.
@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write files (checkpoints, CSV logs)
    path = ROOT / page
    namespace: dict = {"__name__": f"docs:{page}", "__file__": str(path)}
    # The pages reuse one `key` for independent calls (see the module docstring).
    with jax.debug_key_reuse(False):
        for block in BLOCKS[page]:
            if block.kind not in ("run", "hidden"):
                continue
            # Padding keeps the traceback's line numbers those of the Markdown file.
            source = "\n" * (block.line - 1) + block.code
            # dont_inherit: the block runs as a reader's script would, without this module's
            # `from __future__ import annotations` (a dataclass in a block would otherwise see
            # string annotations and look its module up in sys.modules, where "docs:..." is not).
            exec(compile(source, str(path), "exec", dont_inherit=True), namespace)
