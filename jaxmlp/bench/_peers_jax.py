"""The JAX implementations the benchmarks time: jaxmlp's own (step, loops, ``fit``), Flax linen,
Flax NNX and Equinox. All keep the data on the device and take NumPy host batches in a loop."""

from __future__ import annotations

import itertools
import time
from typing import cast

import jax
import jax.numpy as jnp
import optax

from jaxmlp.bench._peers_base import Impl, Problem, Unavailable, _import, _version, sgd


class _JaxImpl(Impl):
    """Shared by the JAX libraries: data on the device, NumPy host batches in the loop."""

    _loss: jax.Array | float  # the last loss, set by each subclass's ``step`` (or ``train``)

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
        from jaxmlp import TrainState, __version__, make_train_step
        from jaxmlp._core.backprop import value_and_grad
        from jaxmlp._core.mlp import MLP

        self.version, self.method, self.grad = __version__, method, grad
        compute = None if problem.dtype == "float32" else problem.dtype
        self.model = MLP(problem.sizes, problem.activation, compute_dtype=compute,
                         norm=problem.norm, dropout=problem.dropout, residual=problem.residual)  # fmt: skip
        self.optimizer = sgd(problem.lr)
        self.params = self.model.init(jax.random.key(seed))
        l1 = problem.l1
        if grad:
            self.jitted = jax.jit(value_and_grad(self.model, problem.loss, method=method, l1=l1))
        else:
            # make_train_step returns jax.jit's wrapper; TrainStep declares only its call.
            step = make_train_step(self.model, problem.loss, self.optimizer, method=method, l1=l1)
            self.jitted = cast(jax.stages.Wrapped, step)
            self.state = TrainState.create(self.params, self.optimizer)
        # Dropout trains with a fresh key per step: a ring of keys split here, so that a step
        # costs no extra dispatch (the same ring, in the same order, for every method).
        self._keys = list(jax.random.split(jax.random.key(seed + 1), 64)) if problem.dropout else []
        self._calls = 0

    def _key(self) -> dict:
        """``{"key": the next key of the ring}`` for a model with dropout, else ``{}``."""
        if not self._keys:
            return {}
        self._calls += 1
        return {"key": self._keys[self._calls % len(self._keys)]}

    def prepare(self):
        t = time.perf_counter()
        args = (self.params,) if self.grad else (self.state,)
        self.compiled = self.jitted.lower(*args, self.x_dev, self.y_dev, **self._key()).compile()
        self.compile_s = time.perf_counter() - t
        self._memory(self.compiled)
        self.step()
        self.sync()

    def step(self, idx=None):
        # The loop (idx given) calls the jitted function a user writes; the fixed-batch
        # benchmark calls the ahead-of-time compiled one whose compile time was measured.
        fn = self.compiled if idx is None else self.jitted
        if self.grad:
            self._loss, _ = fn(self.params, *self.batch(idx), **self._key())
        else:
            self.state, self._loss = fn(self.state, *self.batch(idx), **self._key())


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
        from jaxmlp import fit

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
        train_state = _import("flax.training.train_state")

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
        self._memory(compiled)
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
