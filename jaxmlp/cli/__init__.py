"""The ``jaxmlp`` command line: ``train``, ``predict``, ``gradcheck``, ``bench``, ``summary``.

``main(argv)`` returns the exit status instead of exiting, so tests run it in-process. Every
error a user can cause (bad flags, unreadable files, a corrupted checkpoint, a diverging run)
ends as one line ``jaxmlp: error: <message>`` on stderr: exit status 2 for a bad command line,
1 for anything that fails while running. matplotlib is imported only when a plot is drawn.

``train`` fits the inputs' standardisation (and, for regression, the target's) on the training
split only and stores it, with the label mapping and feature names, in the checkpoint's
metadata; ``predict`` reads it back, so a CSV goes in raw and labels come out by name.

The commands themselves live in private modules: ``_data`` (CSV files, datasets, the model's
head), ``_train`` (``train``) and ``_commands`` (``predict``, ``gradcheck``, ``summary``).
``main`` imports them, and with them JAX, only once the command line is parsed, so ``--help``
and a bad flag answer at once; it then turns on JAX's persistent compilation cache (see
:func:`jaxmlp.enable_compilation_cache`; not for ``bench``, which measures compiling), so a
second run of the same command compiles nothing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxmlp import __version__
from jaxmlp.cli._errors import UsageError, _fail

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# jaxmlp.data's generated datasets, then scikit-learn's bundled ones, spelt out so that parsing
# the command line imports no JAX (tests/test_startup.py checks they match jaxmlp.data's).
DATASETS = ("circle", "xor", "gaussians", "spiral", "moons", "plane", "sine",
            "digits", "diabetes", "breast_cancer", "iris")  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit status (0 ok, 1 failed, 2 bad command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)
        from jaxmlp._cache import enable_by_default

        enable_by_default()  # before the command compiles anything
        return args.run(args)
    except UsageError as err:
        return _fail(err, 2)
    except SystemExit as err:  # --help and --version exit 0; the benchmarks exit with a message
        if isinstance(err.code, str):
            return _fail(err.code, 2)
        return 0 if err.code is None else int(err.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (OSError, ValueError, TypeError, ImportError, ArithmeticError, RuntimeError) as err:
        return _fail(err, 1)  # CheckpointError is a ValueError, DivergenceError arithmetic


# ---------------------------------------------------------------- flag types and the parser


def _type(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def _number(kind: type, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(
                f"expected a{'n int' if kind is int else ' number'}, got {text!r}"
            ) from None
        if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise ValueError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
        return value

    return _type(kind.__name__, convert)


def _ints(text: str, least: int) -> tuple[int, ...]:
    parts = [] if text.strip().lower() in ("", "none") else text.split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = (0,)
    if len(sizes) < least or min(sizes, default=1) < 1:
        raise ValueError(f"expected comma-separated positive ints like 64,64, got {text!r}")
    return sizes


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {text}")
    return value


def _columns(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if "" in names or len(set(names)) != len(names):
        raise ValueError(
            f"expected distinct comma-separated column names like id,date, got {text!r}"
        )
    return names


def _activation(text: str) -> str | tuple[str, ...]:
    from jaxmlp._core.activations import get_activation

    names = tuple(n.strip() for n in text.split(","))
    for n in names:
        try:
            get_activation(n)
        except ValueError as err:  # argparse names the flag already
            raise ValueError(str(err).removeprefix("activation: ")) from None
    return names[0] if len(names) == 1 else names


def _initializer(text: str) -> str:
    from jaxmlp._core.initializers import get_initializer

    try:
        get_initializer(text, "tanh")  # an unknown name lists the valid ones
    except ValueError as err:  # argparse names the flag already
        raise ValueError(str(err).removeprefix("initializer: ")) from None
    return text


def _features(text: str) -> str:
    """``playground``, comma-separated names (``x1,x1^2,x1*x2,sin(x1)``) or
    ``fourier:N[:SCALE[:SEED]]``; checked here, returned as text (``summary.json`` records it)
    and built by :func:`feature_map`."""
    feature_map(text)
    return text.strip()


def feature_map(text: str | None) -> Any:
    """The ``--features`` text as ``MLP(features=...)`` takes it (``None`` for none)."""
    if text is None or text.strip().lower() == "none":
        return None
    text = text.strip()
    if text.lower().startswith("fourier"):
        from jaxmlp._core.layers import FourierFeatures

        parts = text.split(":")
        if parts[0].lower() != "fourier" or not 2 <= len(parts) <= 4:
            raise ValueError(
                f"expected fourier:N[:SCALE[:SEED]], e.g. fourier:32:10:0, got {text!r}"
            )
        try:
            n = int(parts[1])
            scale = float(parts[2]) if len(parts) > 2 else 10.0
            seed = int(parts[3]) if len(parts) > 3 else 0
        except ValueError:
            raise ValueError(
                f"expected fourier:N[:SCALE[:SEED]] with an int N, a number SCALE and an int "
                f"SEED, got {text!r}"
            ) from None
        if n < 1 or not (math.isfinite(scale) and scale > 0) or seed < 0:
            raise ValueError(f"fourier:N:SCALE:SEED needs N >= 1, SCALE > 0 and SEED >= 0, got {text!r}")  # fmt: skip
        return FourierFeatures(n, scale, seed)
    from jaxmlp._core.layers import Features

    if text.lower() == "playground":
        return "playground"
    names = tuple(n.strip() for n in text.split(","))
    try:
        Features(names)  # checks every name
    except (ValueError, TypeError) as err:
        raise ValueError(str(err).removeprefix("features: ")) from None
    return names


def _output_activation(text: str) -> str:
    from jaxmlp._core.activations import get_activation

    return get_activation(text, output=True).name


def _loss(text: str) -> str:
    from jaxmlp._core.losses import get_loss

    return get_loss(text).name


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``module.name``, imported when it runs (so parsing imports no JAX)."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return run


POSITIVE, COUNT = _number(int, 1), _number(int, 0)
HIDDEN = _type("hidden", lambda t: _ints(t, 0))
SIZES = _type("sizes", lambda t: _ints(t, 2))
ACTIVATION = _type("activation", _activation)
INITIALIZER = _type("initializer", _initializer)
FEATURES = _type("features", _features)
FRACTION = _type("fraction", _fraction)
PENALTY = _number(float, 0.0)
OUTPUT_ACTIVATION = _type("output_activation", _output_activation)
LOSS = _type("loss", _loss)
COLUMNS = _type("columns", _columns)


def _network_flags(p: argparse.ArgumentParser, hidden: str, activation: str) -> None:
    p.add_argument("--hidden", type=HIDDEN, default=None, metavar="64,64",
                   help=f"hidden layer widths, comma-separated; 'none' for no hidden layer (default {hidden})")  # fmt: skip
    p.add_argument("--activation", type=ACTIVATION, default=activation,
                   help=f"hidden activation, or one per hidden layer comma-separated (default {activation})")  # fmt: skip
    p.add_argument("--output-activation", type=OUTPUT_ACTIVATION, default=None,
                   help="identity, sigmoid, softmax, tanh or softplus (default: the one that suits the loss)")  # fmt: skip
    # The pieces beyond the plain stack; None means "not given" (summary --checkpoint refuses them).
    p.add_argument("--initializer", type=INITIALIZER, default=None,
                   help="weight initialiser: auto, siren (for sin), he_normal, lecun_normal, glorot_uniform, glorot_normal (default auto)")  # fmt: skip
    p.add_argument("--norm", choices=("none", "layernorm"), default=None,
                   help="layer normalisation of every hidden layer's pre-activation (default none)")  # fmt: skip
    p.add_argument("--dropout", type=FRACTION, default=None, metavar="P",
                   help="inverted dropout on the hidden activations in training, rate in [0, 1) (default 0)")  # fmt: skip
    p.add_argument("--residual", action="store_true", default=None,
                   help="a[l] = a[l-1] + f(z[l]) for every hidden layer that keeps its width")  # fmt: skip
    p.add_argument("--features", type=FEATURES, default=None, metavar="SPEC",
                   help="input features before the first layer: playground, comma-separated names "
                   "like x1,x2,x1^2,x1*x2,sin(x1), or fourier:N[:SCALE[:SEED]] (default none)")  # fmt: skip


def _shape_flags(p: argparse.ArgumentParser, hidden: str, activation: str) -> None:
    _network_flags(p, hidden, activation)
    p.add_argument("--sizes", type=SIZES, help="all layer widths, input first (e.g. 3,4,2)")
    p.add_argument("--inputs", type=POSITIVE, help="input features (default 3)")
    p.add_argument("--outputs", type=POSITIVE, help="output units (default 2)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand except ``bench`` (which forwards its flags)."""
    p = _Parser(prog="jaxmlp", description="Train, check and inspect JAX multilayer perceptrons.")
    p.add_argument("--version", action="version", version=f"jaxmlp {__version__} (jax {importlib.metadata.version('jax')})")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train on a built-in dataset or a CSV file")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS, help="a built-in dataset")
    source.add_argument("--data", type=Path, metavar="FILE.csv", help="a CSV file with a header row")  # fmt: skip
    t.add_argument("--target", help="the CSV's target column")
    t.add_argument("--task", choices=("auto", "classification", "regression"), default="auto",
                   help="for --data: auto reads non-numeric or few integer targets as classes")  # fmt: skip
    t.add_argument("--n", type=POSITIVE, help="points to generate (default 400)")
    t.add_argument("--noise", type=_number(float, 0.0), help="input (or target) noise, default 0")
    _network_flags(t, "32,32", "relu")
    t.add_argument("--loss", type=LOSS, help="default: softmax_cross_entropy or mse by task")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    t.add_argument("--lr", type=_number(float, 0.0, strict=True), default=0.01)
    t.add_argument("--epochs", type=POSITIVE, default=100)
    t.add_argument("--batch-size", type=POSITIVE, default=32)
    t.add_argument("--seed", type=COUNT, default=0)
    t.add_argument("--method", choices=("manual", "autodiff"), default="manual")
    t.add_argument("--val-split", type=FRACTION, default=0.2,
                   help="fraction held out for validation (0: none; default 0.2)")  # fmt: skip
    t.add_argument("--early-stopping", type=COUNT, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement (0: off)")  # fmt: skip
    t.add_argument("--l2", type=PENALTY, default=0.0, help="weight decay (l2/2)||w||^2")  # fmt: skip
    t.add_argument("--l1", type=PENALTY, default=0.0, help="l1 penalty l1 ||w||_1 on the weights")  # fmt: skip
    t.add_argument("--out", type=Path, default=Path("jaxmlp_out"), metavar="DIR")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plots", action="store_true", help="skip the PNGs and the gradient check")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over every device (and process: see --coordinator)")  # fmt: skip
    t.add_argument("--coordinator", metavar="HOST:PORT",
                   help="process 0's address for a multi-process run (or $JAXMLP_COORDINATOR_ADDRESS)")  # fmt: skip
    t.add_argument("--num-processes", type=POSITIVE, help="processes in the run (or $JAXMLP_NUM_PROCESSES)")  # fmt: skip
    t.add_argument("--process-id", type=COUNT, help="this process's rank (or $JAXMLP_PROCESS_ID)")
    t.set_defaults(run=_command("jaxmlp.cli._train", "cmd_train"))

    r = sub.add_parser("predict", help="predict a CSV file with a trained model")
    r.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="train's --out (or its model.npz)")  # fmt: skip
    r.add_argument("--data", type=Path, required=True, metavar="FILE.csv")
    r.add_argument("--out", type=Path, metavar="FILE.csv", help="default: standard output")
    r.add_argument("--keep", type=COLUMNS, default=(), metavar="id,...",
                   help="input columns to copy into the output, before the predictions")  # fmt: skip
    r.set_defaults(run=_command("jaxmlp.cli._commands", "cmd_predict"))

    g = sub.add_parser("gradcheck", help="manual vs autodiff vs finite-difference gradients")
    _shape_flags(g, "8", "tanh")
    g.add_argument("--loss", type=LOSS, default="mse")
    g.add_argument("--l2", type=PENALTY, default=0.0)
    g.add_argument("--l1", type=PENALTY, default=0.0)
    g.add_argument("--n", type=POSITIVE, default=16, help="random examples in the batch")
    g.add_argument("--seed", type=COUNT, default=0)
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--plot", type=Path, metavar="FILE.png", help="write the bar chart")
    g.set_defaults(run=_command("jaxmlp.cli._commands", "cmd_gradcheck"))

    s = sub.add_parser("summary", help="the per-layer table with parameter counts")
    s.add_argument("--checkpoint", type=Path, metavar="DIR")
    _shape_flags(s, "4", "sigmoid")
    s.set_defaults(run=_command("jaxmlp.cli._commands", "cmd_summary"))

    sub.add_parser("bench", add_help=False, help="the benchmark suite ('jaxmlp bench --help')")
    from jaxmlp.cli._playground import add_parser as add_playground

    add_playground(sub)
    return p


def _bench(argv: list[str]) -> int:
    from jaxmlp import bench as benchmarking

    parser = benchmarking.build_parser("jaxmlp bench")
    parser.error = lambda message: _Parser.error(parser, message)  # type: ignore[method-assign]
    parser.parse_args(argv)  # flags checked (and --help answered) before any work
    return benchmarking.main(argv, prog="jaxmlp bench")
