"""One tab's experiment: the model, its parameters and optimizer state, the data, and the
compiled programs that train it and draw it.

Training runs whole epochs on the device in one compiled program (``lax.fori_loop`` over epochs
around a ``lax.scan`` over the batches of a shuffled epoch) built on :func:`jaxmlp.make_train_step`,
so the page sees the library's own step and hand-written backward pass. The learning rate is an
optimizer hyperparameter (``optax.inject_hyperparams``): moving its slider recompiles nothing.
Programs are cached by what they depend on, so tabs with the same network share them.
"""

from __future__ import annotations

import base64
import functools
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import jaxmlp
from jaxmlp.playground import _config, _data
from jaxmlp.playground._config import Config

OUT_GRID, NEURON_GRID = 64, 24
_LOSS_NAMES = {"half_mse": "half_mse", "binary": "sigmoid_binary_cross_entropy", "multi": "softmax_cross_entropy"}  # fmt: skip


def _grid(n: int) -> jax.Array:
    """``(n * n, 2)`` points over the plane, row by row from the top (x2 = +DOMAIN) down."""
    t = (np.arange(n) + 0.5) / n * 2 * _data.DOMAIN - _data.DOMAIN
    gx, gy = np.meshgrid(t, -t)
    return jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1), jnp.float32)


def _to_bytes(values: jax.Array) -> jax.Array:
    """Values clipped to [-1, 1] as bytes 0..255 (127.5 is zero)."""
    return jnp.round((jnp.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def _optimizer(name: str) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=0.03)
    if name == "momentum":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=0.03, momentum=0.9)
    return optax.inject_hyperparams(optax.adam)(learning_rate=0.03)


OPTIMIZERS = {name: _optimizer(name) for name in ("sgd", "momentum", "adam")}


@functools.lru_cache(maxsize=32)
def _train_program(model, loss, opt_name, method, l1, l2, batch, n_train):
    step = jaxmlp.make_train_step(model, loss, OPTIMIZERS[opt_name], method=method, l1=l1, l2=l2)
    n_batches = -(-n_train // batch)
    pad = n_batches * batch - n_train

    def run(state, x, y, key, n_epochs):
        def epoch(e, state):
            k_order, k_drop = jax.random.split(jax.random.fold_in(key, e))
            order = jnp.concatenate([jax.random.permutation(k_order, n_train), jnp.zeros(pad, int)])
            weight = jnp.concatenate([jnp.ones(n_train), jnp.zeros(pad)]).reshape(n_batches, batch)
            xs = x[order].reshape(n_batches, batch, -1)
            ys = y[order].reshape(n_batches, batch, *y.shape[1:])

            def one(state, inputs):
                xb, yb, wb, i = inputs
                kd = jax.random.fold_in(k_drop, i) if model.dropout else None
                return step(state, xb, yb, wb, key=kd)

            state, _ = jax.lax.scan(one, state, (xs, ys, weight, jnp.arange(n_batches)))
            return state

        return jax.lax.fori_loop(0, n_epochs, epoch, state)

    return jax.jit(run, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _views(model, loss, multi):
    """The jitted programs that draw the model: losses, heatmaps, gradient agreement."""
    lossf = jaxmlp.loss_fn(model, loss)
    out_grid, neuron_grid = _grid(OUT_GRID), _grid(NEURON_GRID)
    manual = jaxmlp.value_and_grad(model, loss, method="manual")
    autodiff = jaxmlp.value_and_grad(model, loss, method="autodiff")

    @jax.jit
    def losses(params, xtr, ytr, xte, yte):
        return lossf(params, xtr, ytr), lossf(params, xte, yte)

    @jax.jit
    def heatmaps(params):
        trace = jaxmlp.forward_trace(model, params, neuron_grid)
        neurons = jnp.concatenate(trace.a[:-1], axis=1).T  # (neurons, grid points)
        out = model.apply(params, out_grid)
        if multi:
            value = jnp.max(out, axis=1) * 2 - 1
            return _to_bytes(neurons), _to_bytes(value), jnp.argmax(out, axis=1).astype(jnp.uint8)
        if model.output_activation == "sigmoid":
            out = 2 * out - 1
        return _to_bytes(neurons), _to_bytes(out[:, 0]), jnp.zeros(out.shape[0], jnp.uint8)

    @jax.jit
    def agreement(params, x, y):
        _, gm = manual(params, x, y)
        _, ga = autodiff(params, x, y)
        a, b = ravel_pytree(gm)[0], ravel_pytree(ga)[0]
        max_abs = jnp.max(jnp.abs(a - b))
        rel = max_abs / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30)
        cosine = jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)
        return max_abs, rel, cosine

    return losses, heatmaps, agreement


class Session:
    """One tab's state. Methods run on a worker thread, one at a time (the app holds a lock)."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="jaxmlp-playground-")
        self.config = Config()
        self.uploaded: _data.Points | None = None
        self.resets = 0
        self.calls = 0
        self.diverged = False
        self.regenerate(keep_seed=True)

    def close(self) -> None:
        self.tmp.cleanup()

    # ------------------------------------------------------------------ configuration and data

    def set_config(self, changes: Any) -> str:
        """Applies changes; returns what they reset: ``"live"``, ``"model"`` or ``"data"``."""
        new = _config.update(self.config, changes)
        changed = {k for k in changes if getattr(new, k) != getattr(self.config, k)}
        if new.data_name == "csv" and self.uploaded is None:
            raise ValueError("dataset: upload a CSV file first")
        old, self.config = self.config, new
        try:
            if changed & _config.DATA_KEYS:
                self.regenerate(keep_seed=True)
                return "data"
            if changed - _config.LIVE_KEYS:
                self.reset()
                return "model"
            self._set_learning_rate()
            return "live"
        except Exception:
            self.config = old
            self.regenerate(keep_seed=True)
            raise

    def regenerate(self, keep_seed: bool = False) -> None:
        if not keep_seed:
            self.config = _config.update(self.config, {"seed": f"{random.random():.5f}"})
        c = self.config
        if c.data_name == "csv":
            assert self.uploaded is not None
            points = self.uploaded
        else:
            points = _data.generate(c.data_name, c.noise, c.seed_int)
        self.train_set, self.test_set = _data.split(points, c.percTrainData, c.seed_int)
        self.reset()

    def upload(self, text: Any) -> None:
        points = _data.read_csv(text, self.config.problem)
        self.uploaded = points
        self.config = _config.update(self.config, {"regDataset" if self.config.problem == "regression" else "dataset": "csv"})  # fmt: skip
        self.regenerate(keep_seed=True)

    @property
    def classes(self) -> int:
        return self.train_set.classes

    def loss_name(self) -> str:
        if self.classes > 2:
            return _LOSS_NAMES["multi"]
        if self.classes == 2 and self.config.loss == "cross_entropy":
            return _LOSS_NAMES["binary"]
        return "half_mse"

    def _targets(self, points: _data.Points) -> jax.Array:
        if self.classes > 2:
            return jnp.asarray(points.y, jnp.int32)
        if self.classes == 2 and self.loss_name() == "half_mse":
            return jnp.asarray(2.0 * points.y - 1.0, jnp.float32)[:, None]  # TF's -1 / +1
        return jnp.asarray(points.y, jnp.float32)[:, None]

    # ------------------------------------------------------------------ the model

    def reset(self) -> None:
        """New weights (TF Playground's reset), from the seed and the number of resets."""
        c = self.config
        loss = self.loss_name()
        output = {"half_mse": "tanh" if self.classes == 2 else "identity"}.get(
            loss, "softmax" if self.classes > 2 else "sigmoid"
        )
        self.model = jaxmlp.MLP(
            (2, *c.networkShape, self.classes if self.classes > 2 else 1),
            activation="identity" if c.activation == "linear" else c.activation,
            output_activation=output,
            norm=None if c.norm == "none" else c.norm,
            dropout=c.dropout,
            residual=c.residual,
            features=c.features,
        )
        self.resets += 1
        params = self.model.init(jax.random.key((c.seed_int + 7919 * self.resets) % (2**31)))
        if c.initZero:
            params = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.state = jaxmlp.TrainState.create(params, OPTIMIZERS[c.optimizer])
        self._set_learning_rate()
        self.epoch = 0
        self.diverged = False
        self.history: list[tuple[int, float, float]] = []
        self.xtr, self.ytr = jnp.asarray(self.train_set.x), self._targets(self.train_set)
        self.xte, self.yte = jnp.asarray(self.test_set.x), self._targets(self.test_set)
        self._record()

    def _set_learning_rate(self) -> None:
        hyper = self.state.opt_state.hyperparams
        hyper["learning_rate"] = jnp.asarray(self.config.learningRate, jnp.float32)

    def _penalties(self) -> tuple[float, float]:
        c = self.config
        return (
            c.regularizationRate if c.regularization == "L1" else 0.0,
            c.regularizationRate if c.regularization == "L2" else 0.0,
        )

    def train(self, epochs: int) -> float:
        """Runs ``epochs`` epochs; returns the seconds they took. Divergence pauses training."""
        c = self.config
        l1, l2 = self._penalties()
        program = _train_program(
            self.model, self.loss_name(), c.optimizer, c.method, l1, l2,
            min(c.batchSize, len(self.train_set.x)), len(self.train_set.x),
        )  # fmt: skip
        start = time.perf_counter()
        self.calls += 1
        key = jax.random.fold_in(jax.random.key(c.seed_int % (2**31)), self.calls)
        self.state = program(self.state, self.xtr, self.ytr, key, epochs)
        self.epoch += epochs
        self._record()
        return time.perf_counter() - start

    def _record(self) -> None:
        losses, _, _ = _views(self.model, self.loss_name(), self.classes > 2)
        train, test = (float(v) for v in losses(self.state.params, self.xtr, self.ytr, self.xte, self.yte))  # fmt: skip
        finite = all(math.isfinite(v) for v in (train, test)) and all(
            bool(jnp.all(jnp.isfinite(leaf)))
            for leaf in jax.tree_util.tree_leaves(self.state.params)
        )
        self.diverged = not finite
        self.history.append((self.epoch, train, test))
        del self.history[:-2000]

    def set_weight(self, layer: Any, source: Any, target: Any, value: Any) -> None:
        """Sets the weight from neuron ``source`` to neuron ``target`` of dense layer ``layer``
        (all 0-based); ``source = -1`` sets ``target``'s bias."""
        dense = [i for i, p in enumerate(self.state.params) if isinstance(p, jaxmlp.Dense)]
        for name, v in (("layer", layer), ("source", source), ("target", target)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise TypeError(f"value: expected a finite number, got {value!r}")
        if not 0 <= layer < len(dense):
            raise ValueError(f"layer: expected 0 to {len(dense) - 1}, got {layer}")
        p = self.state.params[dense[layer]]
        n_in, n_out = p.w.shape
        if not -1 <= source < n_in or not 0 <= target < n_out:
            raise ValueError(f"source, target: expected -1..{n_in - 1} and 0..{n_out - 1}, got {source}, {target}")  # fmt: skip
        new = p._replace(b=p.b.at[target].set(value)) if source < 0 else p._replace(w=p.w.at[source, target].set(value))  # fmt: skip
        params = list(self.state.params)
        params[dense[layer]] = new
        self.state = self.state._replace(params=tuple(params))
        self._record()

    # ------------------------------------------------------------------ what the page shows

    def data_message(self) -> dict[str, Any]:
        def rows(p: _data.Points) -> list[list[float]]:
            return np.round(np.column_stack([p.x, p.y]).astype(np.float64), 4).tolist()

        return {"type": "data", "train": rows(self.train_set), "test": rows(self.test_set),
                "classes": self.classes, "names": list(self.train_set.names), "domain": _data.DOMAIN}  # fmt: skip

    def config_message(self, note: str = "") -> dict[str, Any]:
        return {"type": "config", "config": _config.as_json(self.config),
                "hash": _config.to_hash(self.config), "note": note,
                "features": list(self.config.features), "loss": self.loss_name()}  # fmt: skip

    def frame(self, *, heat: bool = True, agreement: bool = False) -> dict[str, Any]:
        epoch, train, test = self.history[-1]
        msg: dict[str, Any] = {"type": "frame", "epoch": epoch, "lossTrain": _finite(train), "lossTest": _finite(test),
                               "diverged": self.diverged}  # fmt: skip
        dense = [p for p in self.state.params if isinstance(p, jaxmlp.Dense)]
        msg["weights"] = [_weights(p.w) for p in dense]
        msg["biases"] = [_weights(p.b) for p in dense]
        if heat:
            _, heatmaps, agree = _views(self.model, self.loss_name(), self.classes > 2)
            neurons, out, cls = heatmaps(self.state.params)
            msg["heat"] = {"out": _b64(out), "cls": _b64(cls), "neurons": _b64(neurons),
                           "outGrid": OUT_GRID, "neuronGrid": NEURON_GRID}  # fmt: skip
            if agreement and not self.diverged:
                n = min(self.config.batchSize, len(self.train_set.x))
                max_abs, rel, cos = (float(v) for v in agree(self.state.params, self.xtr[:n], self.ytr[:n]))  # fmt: skip
                msg["agreement"] = {"maxAbs": max_abs, "maxRel": rel, "cosine": cos}
        return msg

    def history_message(self) -> dict[str, Any]:
        return {
            "type": "history",
            "points": [[e, _finite(a), _finite(b)] for e, a, b in self.history],
        }

    def backward_view(self, index: Any) -> dict[str, Any]:
        """Each neuron's delta dL/dz for training point ``index`` (the lecture's eqs. 44-64)."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {index!r}")
        if not 0 <= index < len(self.train_set.x):
            raise ValueError(f"index: expected 0 to {len(self.train_set.x) - 1}, got {index}")
        x, y = self.xtr[index : index + 1], self.ytr[index : index + 1]
        trace = jaxmlp.forward_trace(self.model, self.state.params, x)
        loss = jaxmlp.get_loss(self.loss_name())
        act = jaxmlp.get_activation(self.model.output_activation, output=True)
        dz_out = jax.grad(lambda z: loss.value(z if loss.logits else act.fn(z), y))(trace.z[-1])
        result = jaxmlp.backward(self.model, self.state.params, trace, dz_out)
        return {"type": "backward", "index": index, "x": np.asarray(x[0]).tolist(),
                "deltas": [np.asarray(d[0], np.float64).tolist() for d in result.deltas],
                "activations": [np.asarray(a[0], np.float64).tolist() for a in trace.a]}  # fmt: skip

    def gradcheck(self) -> dict[str, Any]:
        n = min(self.config.batchSize, len(self.train_set.x), 16)
        l1, l2 = self._penalties()
        report = jaxmlp.gradcheck(self.model, self.state.params, self.xtr[:n], self.ytr[:n],
                                  self.loss_name(), l1=l1, l2=l2)  # fmt: skip
        rows = [{"layer": r.layer, "name": r.name, "shape": list(r.shape),
                 "autodiffRel": r.autodiff.max_rel, "autodiffCos": r.autodiff.cosine,
                 "finiteRel": r.finite_diff.max_rel, "ok": r.ok} for r in report.rows]  # fmt: skip
        return {"type": "gradcheck", "ok": report.ok, "rows": rows, "text": str(report)}

    def checkpoint(self) -> dict[str, Any]:
        path = Path(self.tmp.name) / "playground.npz"
        jaxmlp.save_checkpoint(path, model=self.model, params=self.state.params, step=self.epoch,
                               metadata={"playground": _config.to_hash(self.config)})  # fmt: skip
        blob = path.read_bytes()
        path.unlink()
        return {"type": "download", "filename": "playground.npz", "checkpoint": base64.b64encode(blob).decode(),
                "snippet": snippet(self.model, self.config)}  # fmt: skip


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is sent as null."""
    return value if math.isfinite(value) else None


def _weights(a: jax.Array) -> list:
    """Rounded for the page; a diverged weight is sent as +-1e30 (NaN as 0)."""
    return np.round(np.nan_to_num(np.asarray(a, np.float64), posinf=1e30, neginf=-1e30), 4).tolist()


def _b64(a: jax.Array) -> str:
    return base64.b64encode(np.asarray(a).tobytes()).decode()


def snippet(model: jaxmlp.MLP, config: Config) -> str:
    """A Python script that rebuilds the Playground's model and loads the downloaded weights."""
    return f"""# The jaxmlp Playground's model: {_config.to_hash(config)[:80]}...
import jax.numpy as jnp
import jaxmlp

model = jaxmlp.MLP(
    {model.sizes!r},
    activation={model.activation!r},
    output_activation={model.output_activation!r},
    norm={None if config.norm == "none" else config.norm!r},
    dropout={model.dropout!r},
    residual={model.residual!r},
    features={config.features!r},
)
checkpoint = jaxmlp.load_checkpoint("playground.npz", model=model)
params = checkpoint.params
# The Playground's plane spans [-6, 6]^2: predict at its centre.
print(model.apply(params, jnp.zeros((1, 2))))
"""
