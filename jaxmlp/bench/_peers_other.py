"""The non-JAX peers the benchmarks time: PyTorch (eager or ``torch.compile``) and
scikit-learn's multilayer perceptrons, each imported only when asked for."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import jax
import numpy as np

from jaxmlp.bench._peers_base import Impl, Problem, Unavailable, _import, _version


class TorchStep(Impl):
    """PyTorch: ``nn.Sequential`` + ``optim.SGD``, eager or ``torch.compile``d; bfloat16 via
    ``torch.autocast``. Runs on CUDA when JAX does, on the CPU when JAX does."""

    name = "torch"

    def __init__(self, problem: Problem, compiled: bool = False, seed: int = 0):
        super().__init__(problem)
        torch = self.torch = _import("torch")
        self.version = torch.__version__
        self.tdev, self.matmul_precision = _torch_device(torch)
        torch.manual_seed(seed)
        act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
        layers: list[Any] = []
        sizes = problem.sizes
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(torch.nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(act[problem.activation]())
        self.device = self.tdev.type
        self.model = torch.nn.Sequential(*layers).to(self.tdev)
        self.forward = self.model
        if compiled:
            self.name, self.method = "torch.compile", "compile"
            self.forward = torch.compile(self.model)
        else:
            self.method = "eager"
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=problem.lr)
        mse = problem.loss == "mse"
        self.criterion = torch.nn.MSELoss() if mse else torch.nn.CrossEntropyLoss()
        self.half = None if problem.dtype == "float32" else getattr(torch, problem.dtype)

    def load(self, x, y):
        super().load(x, y)
        torch = self.torch
        self.xt = torch.from_numpy(x).to(self.tdev)
        self.yt = torch.from_numpy(y if y.dtype != np.int32 else y.astype(np.int64)).to(self.tdev)

    def step(self, idx=None):
        torch = self.torch
        if idx is None:
            xb, yb = self.xt, self.yt
        else:
            i = torch.from_numpy(idx).to(self.tdev)
            xb, yb = self.xt[i], self.yt[i]
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=self.half, enabled=self.half is not None):
            out = self.forward(xb)
        loss = self.criterion(out.float(), yb)
        loss.backward()
        self.optimizer.step()
        self._loss = loss

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def last_loss(self):
        return float(self._loss.detach())


# JAX's float32 matmul precision -> torch's: on NVIDIA GPUs JAX's "default" (and "high",
# "tensorfloat32") lets XLA use TF32 tensor cores, torch's "high"; "bfloat16" is one bfloat16 pass,
# torch's "medium"; "highest"/"float32" are true float32 in both. torch's own default is "highest",
# so without this a float32 comparison on a GPU would pit TF32 against true float32.
_TORCH_PRECISION = {"default": "high", "high": "high", "tensorfloat32": "high",
                    "bfloat16": "medium", "highest": "highest", "float32": "highest"}  # fmt: skip


def _match_jax_precision(torch) -> str:
    """Sets torch's float32 matmul precision to JAX's (process-wide) and returns torch's name."""
    jax_precision = str(jax.default_matmul_precision.value or "default")
    torch.set_float32_matmul_precision(_TORCH_PRECISION.get(jax_precision, "highest"))
    return torch.get_float32_matmul_precision()


def _torch_device(torch) -> tuple[Any, str]:
    """The torch device matching JAX's (CUDA when JAX runs on a GPU, else the CPU) and torch's
    float32 matmul precision there: on a GPU set to JAX's, on the CPU left as found (true float32
    by default)."""
    platform = jax.devices()[0].platform
    if platform == "gpu" and torch.cuda.is_available():
        return torch.device("cuda"), _match_jax_precision(torch)
    if platform == "cpu":
        return torch.device("cpu"), torch.get_float32_matmul_precision()
    raise Unavailable(f"no torch device matching JAX's {platform}")


def torch_matmul(n: int, dtype: str) -> tuple[Any, Any, str]:
    """PyTorch's plain matmul of two ``(n, n)`` matrices on the device JAX uses, as the peers'
    roofline: ``(run, sync, matmul precision)``. A peer that beats jaxmlp by about as much
    as its own matmul beats XLA's owes the gap to its kernel library, not to its step."""
    torch = _import("torch")
    dev, precision = _torch_device(torch)
    gen = torch.Generator(device=dev).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=dev, dtype=getattr(torch, dtype)) for _ in "ab")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return (lambda: torch.matmul(a, b)), sync, precision


class SklearnStep(Impl):
    """scikit-learn's ``MLPRegressor``/``MLPClassifier`` (CPU): ``solver="sgd"``, no momentum,
    no L2, no early stopping. A step is ``partial_fit`` on one batch; ``train`` is ``fit``."""

    name = "sklearn"

    def __init__(self, problem: Problem, seed: int = 0):
        super().__init__(problem)
        if problem.dtype != "float32":
            raise Unavailable("float32/float64 only")
        nn = _import("sklearn.neural_network")
        self.version, self.device = _version("sklearn"), "cpu"
        act = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}[problem.activation]
        self.classifier = problem.loss != "mse"
        cls = nn.MLPClassifier if self.classifier else nn.MLPRegressor
        self.make = lambda batch, epochs: cls(
            hidden_layer_sizes=problem.sizes[1:-1],
            activation=act,
            solver="sgd",
            learning_rate_init=problem.lr,
            momentum=0.0,
            nesterovs_momentum=False,
            alpha=0.0,
            batch_size=batch,
            max_iter=epochs,
            shuffle=True,
            tol=0.0,
            n_iter_no_change=10**9,
            early_stopping=False,
            random_state=seed,
        )

    def load(self, x, y):
        self.x_np = x
        self.y_np = y if self.classifier or y.shape[1] > 1 else y[:, 0]
        self.est = self.make(x.shape[0], 1)

    def step(self, idx=None):
        x, y = (self.x_np, self.y_np) if idx is None else (self.x_np[idx], self.y_np[idx])
        if self.classifier:
            self.est.partial_fit(x, y, classes=np.arange(self.p.sizes[-1]))
        else:
            self.est.partial_fit(x, y)

    def sync(self):
        pass

    def last_loss(self):
        return float(self.est.loss_)

    def train(self, epochs, batch, seed):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.est = self.make(batch, epochs).fit(self.x_np, self.y_np)
