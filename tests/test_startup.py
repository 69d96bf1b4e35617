"""Start-up: ``import jaxmlp`` loads no module it does not need, ``jaxmlp --help`` no JAX.

``jaxmlp/__init__.py`` imports each public name's module on the name's first use (PEP 562); the
imports under ``TYPE_CHECKING`` tell type checkers and the API reference the same, so the two
must agree.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxmlp
from jaxmlp import cli, data

# Loaded on first use only: plots, estimators, progress bars, the benchmarks' peers.
OPTIONAL = ("matplotlib", "sklearn", "tqdm", "pandas", "flax", "equinox", "torch")


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    return subprocess.run(
        [sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )


def _top_level(modules) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_every_public_name_resolves_to_its_module():
    for name in jaxmlp.__all__:
        value = getattr(jaxmlp, name)
        if name in jaxmlp._MODULE_OF:
            module = importlib.import_module(jaxmlp._MODULE_OF[name])
            assert value is (
                module if module.__name__ == f"jaxmlp.{name}" else getattr(module, name)
            )
    assert set(jaxmlp._MODULE_OF) <= set(jaxmlp.__all__)
    assert set(dir(jaxmlp)) >= set(jaxmlp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        jaxmlp.fitt  # noqa: B018
    with pytest.raises(ImportError):
        from jaxmlp import fitt  # noqa: F401


def test_the_type_checking_imports_match_the_lazy_table():
    tree = ast.parse(Path(jaxmlp.__file__).read_text(encoding="utf-8"))
    (block,) = [
        node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]  # fmt: skip
    static = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        for alias in node.names:
            static[alias.name] = (
                f"{node.module}.{alias.name}" if node.module == "jaxmlp" else node.module
            )
    assert static == jaxmlp._MODULE_OF
    eager = {"CheckpointError", "DivergenceError", "JaxmlpWarning", "__version__"}
    assert set(static) | eager == set(jaxmlp.__all__)


def test_the_command_lines_dataset_names_are_jaxmlp_datas():
    assert cli.DATASETS == (*data.DATASETS, *data.SKLEARN_DATASETS)


@pytest.mark.slow
def test_import_jaxmlp_loads_neither_jax_nor_optional_modules():
    done = _child(
        "import sys, json, jaxmlp; a = sorted(sys.modules)\n"
        "for name in jaxmlp.__all__: getattr(jaxmlp, name)\n"
        "print(json.dumps([a, sorted(sys.modules)]))"
    )
    assert done.returncode == 0, done.stderr
    bare, full = (_top_level(m) for m in json.loads(done.stdout))
    assert not bare & {"jax", "jaxlib", "optax", "numpy", *OPTIONAL}
    assert "jax" in full and not full & set(OPTIONAL)  # every public name, still no extras


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["--version"]], ids=["help", "train-help", "version"]
)
def test_the_command_answers_help_without_jax(argv):
    # -X importtime lists every module the process imports, on stderr.
    done = _child(
        f"from jaxmlp.cli import main; raise SystemExit(main({argv!r}))", "-X", "importtime"
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "jaxmlp.cli" in imported
    assert not _top_level(imported) & {"jax", "jaxlib", "numpy", "optax", *OPTIONAL}
    assert "usage: jaxmlp" in done.stdout or done.stdout.startswith("jaxmlp ")
