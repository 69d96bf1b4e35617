"""The implementations the benchmarks time: jaxmlp's own and, when installed, other libraries'.

Every implementation trains the same network (``Problem``) with plain SGD at the same learning
rate and exposes the same small interface (:class:`Impl`): ``load`` the data once, ``step``
one minibatch update (on the loaded rows, or on rows ``idx`` gathered the library's idiomatic
way), ``sync`` until the device is idle, and ``train`` whole epochs. Peers are imported lazily,
so jaxmlp never needs them; a missing one raises :class:`Unavailable` with the reason.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PEERS = ("flax.linen", "flax.nnx", "equinox", "torch", "torch.compile", "sklearn")
# Short names accepted by ``--peers``.
PEER_ALIASES = {
    "linen": "flax.linen",
    "nnx": "flax.nnx",
    "flax": ("flax.linen", "flax.nnx"),
    "eqx": "equinox",
    "torch.eager": "torch",
    "scikit-learn": "sklearn",
    "all": PEERS,
}


class Unavailable(Exception):
    """A peer that cannot run here (not installed, no bfloat16 policy, no matching device)."""


@dataclass(frozen=True)
class Problem:
    """What every implementation trains: an MLP, its loss, plain SGD at ``lr``.

    ``loss`` is ``"mse"`` (mean over rows and outputs) or ``"softmax_cross_entropy"`` (integer
    labels); ``dtype`` is the compute dtype (``"float32"`` or a mixed-precision ``"bfloat16"``
    / ``"float16"`` with float32 parameters).
    """

    sizes: tuple[int, ...]
    activation: str
    loss: str
    lr: float
    dtype: str


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
        device: where it computes (``"cpu"``, ``"gpu"``, ``"cuda"``, ...).
    """

    name = "?"
    method = "-"

    def __init__(self, problem: Problem):
        self.p = problem
        self.version = "unknown"
        self.compile_s: float | None = None
        self.temp_bytes: int | None = None
        self.device = str(jax.devices()[0].platform)

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


# ---------------------------------------------------------------- JAX-based implementations


class _JaxImpl(Impl):
    """Shared by the JAX libraries: data on the device, NumPy host batches in the loop."""

    def load(self, x, y):
        super().load(x, y)
        self.x_dev, self.y_dev = jnp.asarray(x), jnp.asarray(y)

    def batch(self, idx):
        if idx is None:
            return self.x_dev, self.y_dev
        return self.x_np[idx], self.y_np[idx]

    def sync(self):
        jax.block_until_ready(self._loss)

    def last_loss(self):
        return float(self._loss)


def _jax_loss(loss: str):
    if loss == "mse":
        return lambda out, y: jnp.mean((out.astype(jnp.float32) - y) ** 2)
    return lambda out, y: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), y)
    )


def _jax_activation(name: str):
    return {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[name]


def _half(problem: Problem):
    return None if problem.dtype == "float32" else jnp.dtype(problem.dtype)


class JaxmlpStep(_JaxImpl):
    """jaxmlp's jitted training step (``make_train_step``), or with ``grad=True`` the jitted
    ``value_and_grad`` alone. ``prepare`` compiles ahead of time so compile time is separate."""

    name = "jaxmlp"

    def __init__(self, problem: Problem, method: str, *, grad: bool = False, seed: int = 0):
        super().__init__(problem)
        from jaxmlp import __version__
        from jaxmlp.backprop import value_and_grad
        from jaxmlp.engine import TrainState, make_train_step
        from jaxmlp.mlp import MLP

        self.version, self.method, self.grad = __version__, method, grad
        compute = None if problem.dtype == "float32" else problem.dtype
        self.model = MLP(problem.sizes, problem.activation, compute_dtype=compute)
        self.optimizer = sgd(problem.lr)
        self.params = self.model.init(jax.random.key(seed))
        if grad:
            self.jitted = jax.jit(value_and_grad(self.model, problem.loss, method=method))
        else:
            self.jitted = make_train_step(self.model, problem.loss, self.optimizer, method=method)
            self.state = TrainState.create(self.params, self.optimizer)

    def prepare(self):
        t = time.perf_counter()
        args = (self.params,) if self.grad else (self.state,)
        self.compiled = self.jitted.lower(*args, self.x_dev, self.y_dev).compile()
        self.compile_s = time.perf_counter() - t
        stats = self.compiled.memory_analysis()
        self.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)
        self.step()
        self.sync()

    def step(self, idx=None):
        # The loop (idx given) calls the jitted function a user writes; the fixed-batch
        # benchmark calls the ahead-of-time compiled one whose compile time was measured.
        fn = self.compiled if idx is None else self.jitted
        if self.grad:
            self._loss, _ = fn(self.params, *self.batch(idx))
        else:
            self.state, self._loss = fn(self.state, *self.batch(idx))


class JaxmlpLoop(JaxmlpStep):
    """Loop (a), the best per-step loop: the jitted step, the epoch's permutation drawn on the
    host by NumPy, NumPy batches passed in (``Impl.train``)."""

    name = "jaxmlp loop (a): jitted step, NumPy batches"


class JaxmlpNaiveLoop(JaxmlpStep):
    """Loop (b): device arrays, ``jax.random.permutation`` per epoch, a device slice per step."""

    name = "jaxmlp loop (b): device slicing"

    def train(self, epochs, batch, seed):
        key = jax.random.key(seed)
        n = self.x_dev.shape[0]
        for e in range(epochs):
            perm = jax.random.permutation(jax.random.fold_in(key, e), n)
            for i in range(n // batch):
                idx = perm[i * batch : (i + 1) * batch]
                self.state, self._loss = self.jitted(self.state, self.x_dev[idx], self.y_dev[idx])
        self.sync()


class JaxmlpFit(JaxmlpStep):
    """``jaxmlp.fit``: every epoch (shuffle, minibatch steps, metrics) fused on the device."""

    name = "jaxmlp.fit (fused)"

    def train(self, epochs, batch, seed):
        from jaxmlp.training import fit

        result = fit(
            self.model,
            self.params,
            self.x_dev,
            self.y_dev,
            loss=self.p.loss,
            key=jax.random.key(seed),
            optimizer=self.optimizer,
            epochs=epochs,
            batch_size=batch,
            method=self.method,
            progress=False,
        )
        self._loss = result.history["loss"][-1]

    def sync(self):
        jax.block_until_ready(self._loss)


class LinenStep(_JaxImpl):
    """Flax linen: ``nn.Dense`` layers, ``flax.training.train_state``, one ``jax.jit`` step."""

    name = "flax.linen"

    def __init__(self, problem: Problem, seed: int = 0):
        super().__init__(problem)
        nn = _import("flax.linen")
        from flax.training import train_state

        self.version = _version("flax")
        act, half, sizes = _jax_activation(problem.activation), _half(problem), problem.sizes

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                for i, width in enumerate(sizes[1:]):
                    x = nn.Dense(width, dtype=half, param_dtype=jnp.float32)(x)
                    if i < len(sizes) - 2:
                        x = act(x)
                return x

        net, loss = Net(), _jax_loss(problem.loss)
        params = net.init(jax.random.key(seed), jnp.zeros((1, sizes[0])))["params"]
        self.state = train_state.TrainState.create(
            apply_fn=net.apply, params=params, tx=optax.sgd(problem.lr)
        )

        def train_step(state, x, y):
            def objective(p):
                return loss(state.apply_fn({"params": p}, x), y)

            value, grads = jax.value_and_grad(objective)(state.params)
            return state.apply_gradients(grads=grads), value

        self.jitted = jax.jit(train_step, donate_argnums=0)

    def prepare(self):
        t = time.perf_counter()
        compiled = self.jitted.lower(self.state, self.x_dev, self.y_dev).compile()
        stats = compiled.memory_analysis()
        self.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)
        self.step()
        self.sync()
        self.compile_s = time.perf_counter() - t

    def step(self, idx=None):
        self.state, self._loss = self.jitted(self.state, *self.batch(idx))


class NnxStep(_JaxImpl):
    """Flax NNX: ``nnx.Linear`` layers, ``nnx.Optimizer``, an ``nnx.jit`` step."""

    name = "flax.nnx"

    def __init__(self, problem: Problem, seed: int = 0):
        super().__init__(problem)
        nnx = _import("flax.nnx")
        self.version = _version("flax")
        act, half, sizes = _jax_activation(problem.activation), _half(problem), problem.sizes
        rngs = nnx.Rngs(seed)
        layers = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nnx.Linear(fan_in, fan_out, dtype=half, rngs=rngs))
            if i < len(sizes) - 2:
                layers.append(act)
        self.model = nnx.Sequential(*layers)
        self.optimizer = nnx.Optimizer(self.model, optax.sgd(problem.lr), wrt=nnx.Param)
        loss = _jax_loss(problem.loss)

        @nnx.jit
        def train_step(model, optimizer, x, y):
            value, grads = nnx.value_and_grad(lambda m: loss(m(x), y))(model)
            optimizer.update(model, grads)
            return value

        self._step = train_step

    def step(self, idx=None):
        self._loss = self._step(self.model, self.optimizer, *self.batch(idx))


class EquinoxStep(_JaxImpl):
    """Equinox: ``eqx.nn.Linear`` layers vmapped over the batch, an ``eqx.filter_jit`` step."""

    name = "equinox"

    def __init__(self, problem: Problem, seed: int = 0):
        super().__init__(problem)
        if problem.dtype != "float32":
            raise Unavailable("no built-in mixed-precision policy; float32 only")
        eqx = _import("equinox")
        self.version = _version("equinox")
        sizes, act = problem.sizes, _jax_activation(problem.activation)
        keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
        layers = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(eqx.nn.Linear(fan_in, fan_out, key=keys[i]))
            if i < len(sizes) - 2:
                layers.append(eqx.nn.Lambda(act))
        self.model = eqx.nn.Sequential(layers)
        optimizer = optax.sgd(problem.lr)
        self.opt_state = optimizer.init(eqx.filter(self.model, eqx.is_array))
        loss = _jax_loss(problem.loss)

        @eqx.filter_jit
        def train_step(model, opt_state, x, y):
            def objective(m):
                return loss(jax.vmap(m)(x), y)

            value, grads = eqx.filter_value_and_grad(objective)(model)
            updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
            return eqx.apply_updates(model, updates), opt_state, value

        self._step = train_step

    def step(self, idx=None):
        self.model, self.opt_state, self._loss = self._step(
            self.model, self.opt_state, *self.batch(idx)
        )


# ---------------------------------------------------------------- PyTorch and scikit-learn


class TorchStep(Impl):
    """PyTorch: ``nn.Sequential`` + ``optim.SGD``, eager or ``torch.compile``d; bfloat16 via
    ``torch.autocast``. Runs on CUDA when JAX does, on the CPU when JAX does."""

    name = "torch"

    def __init__(self, problem: Problem, compiled: bool = False, seed: int = 0):
        super().__init__(problem)
        torch = self.torch = _import("torch")
        self.version = torch.__version__
        platform = jax.devices()[0].platform
        if platform == "gpu" and torch.cuda.is_available():
            self.tdev = torch.device("cuda")
        elif platform == "cpu":
            self.tdev = torch.device("cpu")
        else:
            raise Unavailable(f"no torch device matching JAX's {platform}")
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


def make_peer(name: str, problem: Problem) -> Impl:
    """Builds peer ``name`` (one of ``PEERS``) for ``problem``; raises :class:`Unavailable`."""
    builders = {
        "flax.linen": LinenStep,
        "flax.nnx": NnxStep,
        "equinox": EquinoxStep,
        "torch": TorchStep,
        "torch.compile": lambda p: TorchStep(p, compiled=True),
        "sklearn": SklearnStep,
    }
    if problem.loss not in ("mse", "softmax_cross_entropy"):
        raise Unavailable(f"loss {problem.loss!r} has no counterpart in the peer harness")
    if problem.activation not in ("relu", "tanh", "sigmoid"):
        raise Unavailable(f"activation {problem.activation!r} has no counterpart here")
    return builders[name](problem)


def parse_peers(spec: str | None) -> list[str]:
    """``"torch,flax"`` -> ``["torch", "flax.linen", "flax.nnx"]``; ``"none"``/empty -> ``[]``."""
    if not spec or spec == "none":
        return []
    out: list[str] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        names = PEER_ALIASES.get(token, token)
        for name in (names,) if isinstance(names, str) else names:
            if name not in PEERS:
                raise ValueError(f"--peers: unknown peer {token!r}; choose from {list(PEERS)}")
            if name not in out:
                out.append(name)
    return out
