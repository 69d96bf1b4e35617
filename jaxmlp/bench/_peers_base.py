"""The common ground of the benchmark implementations: the problem, the interface, imports.

Every implementation trains the same network (``Problem``) with plain SGD at the same learning
rate and exposes the same small interface (:class:`Impl`). Peers are imported lazily through
:func:`_import`, so jaxmlp never needs them; a missing one raises :class:`Unavailable`.
"""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass

import jax
import numpy as np
import optax


class Unavailable(Exception):
    """A peer that cannot run here (not installed, no bfloat16 policy, no matching device)."""


@dataclass(frozen=True)
class Problem:
    """What every implementation trains: an MLP, its loss, plain SGD at ``lr``.

    ``loss`` is ``"mse"`` (mean over rows and outputs) or ``"softmax_cross_entropy"`` (integer
    labels); ``dtype`` is the compute dtype (``"float32"`` or a mixed-precision ``"bfloat16"``
    / ``"float16"`` with float32 parameters). ``norm``, ``dropout``, ``residual`` and ``l1`` are
    the pieces beyond the plain stack (``jaxmlp.MLP``'s and ``make_train_step``'s arguments of
    those names; issue 15): only jaxmlp's own implementations build them (:attr:`layers`).
    """

    sizes: tuple[int, ...]
    activation: str
    loss: str
    lr: float
    dtype: str
    norm: str | None = None
    dropout: float = 0.0
    residual: bool = False
    l1: float = 0.0

    @property
    def layers(self) -> str:
        """``"plain"``, or the pieces beyond the plain stack joined by ``+`` (as ``--layers``
        writes them: ``"layernorm+dropout=0.1+residual+l1=0.0001"``)."""
        parts = [self.norm] if self.norm else []
        parts += [f"dropout={self.dropout:g}"] if self.dropout else []
        parts += ["residual"] if self.residual else []
        parts += [f"l1={self.l1:g}"] if self.l1 else []
        return "+".join(parts) or "plain"


@functools.lru_cache(maxsize=8)
def sgd(lr: float) -> optax.GradientTransformation:
    """One ``optax.sgd`` object per learning rate, so jaxmlp's compiled programs are reused."""
    return optax.sgd(lr)


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"not installed ({err.name or module})") from None


class Impl:
    """One implementation's training step (see the module docstring).

    Attributes:
        name, method, version: how the tables name it.
        compile_s: seconds from nothing to the first finished step (compile and warm-up).
        temp_bytes: compiled temporary memory, where the library exposes it, else None.
        step_bytes: the compiled step's device memory, arguments + outputs - donated (aliased)
            buffers + temporaries: what one step needs at its peak, per implementation (the
            device's own peak counter cannot be reset between implementations).
        device: where it computes (``"cpu"``, ``"gpu"``, ``"cuda"``, ...).
        matmul_precision: the float32 matmul precision it ran with (JAX's setting for the JAX
            implementations; a peer with its own setting reports that).
    """

    name = "?"
    method = "-"

    def __init__(self, problem: Problem):
        self.p = problem
        self.version = "unknown"
        self.compile_s: float | None = None
        self.temp_bytes: int | None = None
        self.step_bytes: int | None = None
        self.device = str(jax.devices()[0].platform)
        self.matmul_precision = str(jax.default_matmul_precision.value or "default")

    def _memory(self, compiled) -> None:
        """Fills ``temp_bytes`` and ``step_bytes`` from a compiled program's memory analysis."""
        stats = compiled.memory_analysis()
        if stats is not None:
            self.temp_bytes = int(stats.temp_size_in_bytes)
            self.step_bytes = int(
                stats.argument_size_in_bytes + stats.output_size_in_bytes
                - stats.alias_size_in_bytes + stats.temp_size_in_bytes
            )  # fmt: skip

    def load(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_np, self.y_np = x, y

    def step(self, idx: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def last_loss(self) -> float:
        raise NotImplementedError

    def prepare(self) -> None:
        """Compiles (or warms up) the step on the loaded rows, timing it into ``compile_s``."""
        t = time.perf_counter()
        self.step()
        self.sync()
        self.compile_s = time.perf_counter() - t

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        self.sync()

    def train(self, epochs: int, batch: int, seed: int) -> None:
        """The per-step loop: a host (NumPy) permutation per epoch, one step per minibatch."""
        rng = np.random.default_rng(seed)
        n = self.x_np.shape[0]
        for _ in range(epochs):
            perm = rng.permutation(n)
            for i in range(n // batch):
                self.step(perm[i * batch : (i + 1) * batch])
        self.sync()
