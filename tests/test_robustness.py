"""Bad input everywhere (issue 5): every public entry point answers each kind of malformed
input with one early ``ValueError`` or ``TypeError`` whose message starts with the argument's
name, never with a raw NumPy/JAX/XLA error; shape, dtype and name checks also hold under
``jax.jit``. The last test feeds random malformed input (hypothesis) to the public API and
checks that only the documented exceptions come out.

Cases marked ``[patch]`` in their id need the training.py/ensemble.py changes described in the
robustness report (they fail until those land).
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp
from jaxmlp import Dense, data

REG = jaxmlp.MLP((3, 4, 2), activation="tanh")
CLS = jaxmlp.MLP((2, 4, 3))
OTHER = jaxmlp.MLP((3, 5, 2))
N = 6


@pytest.fixture(scope="module")
def e(tmp_path_factory):
    """Shared valid inputs; each case breaks exactly one of them."""
    ns = types.SimpleNamespace()
    ns.p = REG.init(jax.random.key(0))
    ns.pc = CLS.init(jax.random.key(1))
    ns.other = OTHER.init(jax.random.key(2))
    ns.x = jnp.linspace(-1.0, 1.0, N * 3).reshape(N, 3)
    ns.y = jnp.linspace(0.0, 1.0, N * 2).reshape(N, 2)
    ns.xc = jnp.linspace(-1.0, 1.0, N * 2).reshape(N, 2)
    ns.yc = jnp.arange(N) % 3
    ns.dir = tmp_path_factory.mktemp("robustness")
    ns.ckpt = jaxmlp.save_checkpoint(ns.dir / "good.npz", model=REG, params=ns.p, step=1)
    (ns.dir / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    return ns


def cast(params, dtype):
    return tuple(Dense(layer.w.astype(dtype), layer.b.astype(dtype)) for layer in params)


def with_nan(params):
    first = params[0]
    return (Dense(first.w, first.b.at[0].set(jnp.nan)), *params[1:])


def stacked(params, k=2):
    return jax.tree.map(lambda a: jnp.stack([a] * k), params)


def fit(e, **change):
    args = dict(model=REG, params=e.p, x=e.x, y=e.y, loss="mse", key=jax.random.key(10))
    args |= dict(epochs=1, batch_size=3, progress=False) | change
    return jaxmlp.fit(args.pop("model"), args.pop("params"), args.pop("x"), args.pop("y"), **args)


def fit_cls(e, **change):
    args = dict(model=CLS, params=e.pc, x=e.xc, y=e.yc, loss="softmax_cross_entropy")
    return fit(e, **(args | change))


def ensemble(e, **change):
    args = dict(x=e.x, y=e.y, num_models=2, loss="mse", key=jax.random.key(11))
    args |= dict(epochs=1, batch_size=3, progress=False) | change
    return jaxmlp.fit_ensemble(REG, args.pop("x"), args.pop("y"), **args)


def vg(e, *args, loss="mse", method="manual", model=REG):
    return jaxmlp.value_and_grad(model, loss, method=method)(*args)


def vg_cls(e, y, **kw):
    return vg(e, e.pc, e.xc, y, loss="softmax_cross_entropy", model=CLS, **kw)


class Case(NamedTuple):
    id: str
    call: Callable[[Any], Any]
    exc: type | tuple[type, ...]
    arg: str  # the message starts with this (a regex)


def _duck_optimizer():
    # Has init/update like an optax optimizer but is not one (e.g. another library's).
    return types.SimpleNamespace(init=lambda params: None, update=lambda *a: None)


V, T, CE = ValueError, TypeError, jaxmlp.CheckpointError
CASES = [
    # --- the MLP description ------------------------------------------------------------------
    Case("mlp-size-negative", lambda e: jaxmlp.MLP((3, -1, 2)), V, "sizes"),
    Case("mlp-size-zero", lambda e: jaxmlp.MLP((3, 0, 2)), V, "sizes"),
    Case("mlp-size-float", lambda e: jaxmlp.MLP((3, 2.5, 2)), T, "sizes"),
    Case("mlp-size-bool", lambda e: jaxmlp.MLP((True, 2)), T, "sizes"),
    Case("mlp-one-size", lambda e: jaxmlp.MLP((3,)), V, "sizes"),
    Case("mlp-sizes-int", lambda e: jaxmlp.MLP(3), T, "sizes"),
    Case("mlp-sizes-str", lambda e: jaxmlp.MLP("32"), T, "sizes"),
    Case("mlp-activation-unknown", lambda e: jaxmlp.MLP((3, 2), activation="relux"), V, "activation"),
    Case("mlp-activation-none", lambda e: jaxmlp.MLP((3, 4, 2), activation=None), T, "activation"),
    Case("mlp-activation-count", lambda e: jaxmlp.MLP((3, 4, 2), activation=["relu"] * 2), V, "activation"),
    Case("mlp-activation-softmax-hidden", lambda e: jaxmlp.MLP((3, 4, 2), activation="softmax"), V, "activation"),
    Case("mlp-output-activation", lambda e: jaxmlp.MLP((3, 2), output_activation="relu"), V, "output_activation"),
    Case("mlp-initializer-unknown", lambda e: jaxmlp.MLP((3, 2), initializer="zeros"), V, "initializer"),
    Case("mlp-initializer-list", lambda e: jaxmlp.MLP((3, 2), initializer=["he_normal"]), T, "initializer"),
    Case("mlp-param-dtype-int", lambda e: jaxmlp.MLP((3, 2), param_dtype="int32"), V, "param_dtype"),
    Case("mlp-param-dtype-none", lambda e: jaxmlp.MLP((3, 2), param_dtype=None), V, "param_dtype"),
    Case("mlp-compute-dtype-complex", lambda e: jaxmlp.MLP((3, 2), compute_dtype="complex64"), V, "compute_dtype"),
    Case("mlp-param-dtype-float64-without-x64", lambda e: jaxmlp.MLP((3, 2), param_dtype="float64"), V, "param_dtype"),
    Case("mlp-compute-dtype-float64-without-x64", lambda e: jaxmlp.MLP((3, 2), compute_dtype="float64"), V, "compute_dtype"),
    Case("mlp-initializer-wrong-shape", lambda e: jaxmlp.MLP((3, 2), initializer=lambda k, s, d: jnp.zeros(3)).init(jax.random.key(4)), V, "initializer"),
    Case("mlp-from-dict-callable-initializer", lambda e: jaxmlp.MLP.from_dict(jaxmlp.MLP((3, 2), initializer=jnp.zeros).to_dict()), V, "initializer"),
    Case("mlp-from-dict-no-sizes", lambda e: jaxmlp.MLP.from_dict({"activation": "relu"}), V, "MLP description"),
    Case("mlp-from-dict-unknown-field", lambda e: jaxmlp.MLP.from_dict({"sizes": [3, 2], "depth": 2}), V, "MLP description"),
    Case("init-key-int", lambda e: REG.init(0), T, "key"),
    Case("init-key-batch", lambda e: REG.init(jax.random.split(jax.random.key(3))), V, "key"),
    # --- apply: rank, features, empty, dtype, non-arrays, params -----------------------------
    Case("apply-leading-axes-features", lambda e: REG.apply(e.p, e.xc[None]), V, "x"),
    Case("apply-leading-axes-empty", lambda e: REG.apply(e.p, e.x[None, :0]), V, "x"),
    Case("apply-rank0", lambda e: REG.apply(e.p, jnp.float32(1)), V, "x"),
    Case("apply-features", lambda e: REG.apply(e.p, e.xc), V, "x"),
    Case("apply-empty", lambda e: REG.apply(e.p, e.x[:0]), V, "x"),
    Case("apply-complex-x", lambda e: REG.apply(e.p, e.x.astype(jnp.complex64)), T, "x"),
    Case("apply-bool-x", lambda e: REG.apply(e.p, e.x > 0), T, "x"),
    Case("apply-str-x", lambda e: REG.apply(e.p, "abc"), T, "x"),
    Case("apply-none-x", lambda e: REG.apply(e.p, None), T, "x"),
    Case("apply-ragged-x", lambda e: REG.apply(e.p, [[1.0, 2.0, 3.0], [1.0]]), T, "x"),
    Case("apply-int-params", lambda e: REG.apply(cast(e.p, jnp.int32), e.x), T, r"params\[0\]\.w"),
    Case("apply-complex-params", lambda e: REG.apply(cast(e.p, jnp.complex64), e.x), T, r"params\[0\]\.w"),
    Case("apply-bool-params", lambda e: REG.apply(cast(e.p, bool), e.x), T, r"params\[0\]\.w"),
    Case("apply-mixed-dtype-params", lambda e: REG.apply((e.p[0], cast(e.p[1:], jnp.float16)[0]), e.x), T, r"params\[1\]\.w"),
    Case("apply-other-architecture", lambda e: REG.apply(e.other, e.x), V, r"params\[0\]\.w"),
    Case("apply-missing-layer", lambda e: REG.apply(e.p[:1], e.x), V, "params"),
    Case("apply-params-dict", lambda e: REG.apply({"w": e.p[0].w}, e.x), T, "params"),
    Case("apply-params-plain-tuples", lambda e: REG.apply(tuple(tuple(l) for l in e.p), e.x), T, r"params\[0\]"),
    Case("apply-params-lists", lambda e: REG.apply((Dense([[0.0] * 4] * 3, [0.0] * 4), e.p[1]), e.x), T, r"params\[0\]\.w"),
    Case("apply_manual-model", lambda e: jaxmlp.apply_manual("REG", e.p, e.x), T, "model"),
    Case("apply_manual-features", lambda e: jaxmlp.apply_manual(REG, e.p, e.xc), V, "x"),
    Case("forward_trace-model", lambda e: jaxmlp.forward_trace(None, e.p, e.x), T, "model"),
    Case("backward-trace", lambda e: jaxmlp.backward(REG, e.p, None, e.y), T, "trace"),
    Case("backward-dz-shape", lambda e: jaxmlp.backward(REG, e.p, jaxmlp.forward_trace(REG, e.p, e.x), e.y[:, :1]), V, "dz_out"),
    # --- value_and_grad, loss_fn, per-example: the builders and the returned functions ------
    Case("vg-model", lambda e: jaxmlp.value_and_grad("REG", "mse"), T, "model"),
    Case("vg-loss-unknown", lambda e: jaxmlp.value_and_grad(REG, "hinge"), V, "loss"),
    Case("vg-loss-type", lambda e: jaxmlp.value_and_grad(REG, None), T, "loss"),
    Case("vg-loss-pairing", lambda e: jaxmlp.value_and_grad(jaxmlp.MLP((3, 2), output_activation="sigmoid"), "softmax_cross_entropy"), V, "loss"),
    Case("vg-loss-pairing-tanh", lambda e: jaxmlp.value_and_grad(jaxmlp.MLP((3, 2), output_activation="tanh"), "sigmoid_binary_cross_entropy"), V, "loss"),
    Case("vg-loss-reduction", lambda e: jaxmlp.value_and_grad(REG, jaxmlp.get_loss("mse")._replace(reduction="max")), V, "loss"),
    Case("vg-loss-targets", lambda e: jaxmlp.value_and_grad(REG, jaxmlp.get_loss("mse")._replace(targets="ordinal")), V, "loss"),
    Case("vg-loss-not-callable", lambda e: jaxmlp.value_and_grad(REG, jaxmlp.Loss("mine", None, None)), T, "loss"),
    Case("vg-method", lambda e: jaxmlp.value_and_grad(REG, "mse", method="numeric"), V, "method"),
    Case("vg-l2-negative", lambda e: jaxmlp.value_and_grad(REG, "mse", l2=-1.0), V, "l2"),
    Case("vg-l2-inf", lambda e: jaxmlp.value_and_grad(REG, "mse", l2=math.inf), V, "l2"),
    Case("vg-l2-str", lambda e: jaxmlp.value_and_grad(REG, "mse", l2="0.1"), T, "l2"),
    Case("loss_fn-loss", lambda e: jaxmlp.loss_fn(REG, "hinge"), V, "loss"),
    Case("per_example_grads-model", lambda e: jaxmlp.per_example_grads(3, "mse"), T, "model"),
    Case("per_example_grad_norms-l2", lambda e: jaxmlp.per_example_grad_norms(REG, "mse", l2=-2.0), V, "l2"),
    Case("f-y-rows", lambda e: vg(e, e.p, e.x, e.y[:4]), V, "y"),
    Case("f-y-columns", lambda e: vg(e, e.p, e.x, jnp.zeros((N, 3))), V, "y"),
    Case("f-y-rank3", lambda e: vg(e, e.p, e.x, e.y[..., None]), V, "y"),
    Case("f-y-complex", lambda e: vg(e, e.p, e.x, e.y.astype(jnp.complex64)), T, "y"),
    Case("f-y-str", lambda e: vg(e, e.p, e.x, "ab"), T, "y"),
    Case("f-y-none", lambda e: vg(e, e.p, e.x, None), T, "y"),
    Case("f-x-empty", lambda e: vg(e, e.p, e.x[:0], e.y[:0]), V, "x"),
    Case("f-x-features", lambda e: vg(e, e.p, e.xc, e.y, method="autodiff"), V, "x"),
    Case("f-int-params", lambda e: vg(e, cast(e.p, jnp.int32), e.x, e.y), T, r"params\[0\]\.w"),
    Case("f-other-architecture", lambda e: vg(e, e.other, e.x, e.y, method="autodiff"), V, r"params\[0\]\.w"),
    Case("f-sample-weight-shape", lambda e: vg(e, e.p, e.x, e.y, jnp.ones(N - 1)), V, "sample_weight"),
    Case("f-sample-weight-complex", lambda e: vg(e, e.p, e.x, e.y, jnp.ones(N, jnp.complex64)), T, "sample_weight"),
    Case("f-sample-weight-str", lambda e: vg(e, e.p, e.x, e.y, "weights"), T, "sample_weight"),
    Case("f-labels-float", lambda e: vg_cls(e, e.yc.astype(jnp.float32)), T, "y"),
    Case("f-labels-bool", lambda e: vg_cls(e, e.yc > 0), T, "y"),
    Case("f-labels-rows", lambda e: vg_cls(e, e.yc[:3]), V, "y"),
    Case("f-probabilities-classes", lambda e: vg_cls(e, jnp.full((N, 2), 0.5)), V, "y"),
    Case("f-bce-labels-1d", lambda e: vg(e, e.pc, e.xc, e.yc, loss="sigmoid_binary_cross_entropy", model=CLS), V, "y"),
    Case("loss_fn-y-rows", lambda e: jaxmlp.loss_fn(REG, "mse")(e.p, e.x, e.y[:4]), V, "y"),
    Case("per_example_grads-y-rows", lambda e: jaxmlp.per_example_grads(REG, "mse")(e.p, e.x, e.y[:4]), V, "y"),
    Case("per_example_grad_norms-empty", lambda e: jaxmlp.per_example_grad_norms(REG, "mse")(e.p, e.x[:0], e.y[:0]), V, "x"),
    # --- gradcheck ----------------------------------------------------------------------------
    Case("gradcheck-model", lambda e: jaxmlp.gradcheck("REG", e.p, e.x, e.y, "mse"), T, "model"),
    Case("gradcheck-x-str", lambda e: jaxmlp.gradcheck(REG, e.p, "abc", e.y, "mse"), T, "x"),
    Case("gradcheck-y-rows", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y[:4], "mse"), V, "y"),
    Case("gradcheck-empty", lambda e: jaxmlp.gradcheck(REG, e.p, e.x[:0], e.y[:0], "mse"), V, "x"),
    Case("gradcheck-loss", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y, "hinge"), V, "loss"),
    Case("gradcheck-directions", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y, "mse", num_directions=-1), V, "num_directions"),
    Case("gradcheck-entrywise", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y, "mse", entrywise_max=1.5), V, "entrywise_max"),
    Case("gradcheck-key", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y, "mse", key=3), T, "key"),
    Case("gradcheck-grad-fn", lambda e: jaxmlp.gradcheck(REG, e.p, e.x, e.y, "mse", grad_fn=3), T, "grad_fn"),
    # --- lookups and metrics ------------------------------------------------------------------
    Case("get_loss-int", lambda e: jaxmlp.get_loss(3), T, "loss"),
    Case("get_loss-unknown", lambda e: jaxmlp.get_loss("MSE"), V, "loss"),
    Case("get_activation-unknown", lambda e: jaxmlp.get_activation("relu6"), V, "activation"),
    Case("get_activation-not-output", lambda e: jaxmlp.get_activation("relu", output=True), V, "activation"),
    Case("get_activation-list", lambda e: jaxmlp.get_activation(["relu"]), V, "activation"),
    Case("evaluate-loss", lambda e: jaxmlp.evaluate(REG, e.p, e.x, e.y, loss="hinge"), V, "loss"),
    Case("evaluate-features", lambda e: jaxmlp.evaluate(REG, e.p, e.xc, e.y, loss="mse"), V, "x"),
    Case("evaluate-y-rows", lambda e: jaxmlp.evaluate(REG, e.p, e.x, e.y[:4], loss="mse"), V, "y"),
    Case("evaluate-params", lambda e: jaxmlp.evaluate(REG, e.other, e.x, e.y, loss="mse"), V, r"params\[0\]\.w"),
    Case("accuracy-rows", lambda e: jaxmlp.accuracy(jnp.zeros((3, 2)), jnp.zeros(4, jnp.int32)), V, "y"),
    Case("accuracy-logits-rank", lambda e: jaxmlp.accuracy(jnp.zeros(3), jnp.zeros(3, jnp.int32)), V, "logits"),
    Case("accuracy-targets", lambda e: jaxmlp.accuracy(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), "ordinal"), V, "targets"),
    Case("r2_score-shape", lambda e: jaxmlp.r2_score(jnp.zeros((3, 2)), jnp.zeros((4, 2))), V, "y"),
    # --- training: optimizer, state, step -----------------------------------------------------
    Case("make_train_step-optimizer", lambda e: jaxmlp.make_train_step(REG, "mse", "adam"), T, "optimizer"),
    Case("make_train_step-optimizer-factory", lambda e: jaxmlp.make_train_step(REG, "mse", optax.adam), T, "optimizer"),
    Case("make_train_step-model", lambda e: jaxmlp.make_train_step("REG", "mse"), T, "model"),
    Case("make_train_step-l2", lambda e: jaxmlp.make_train_step(REG, "mse", l2=-1.0), V, "l2"),
    Case("TrainState-optimizer", lambda e: jaxmlp.TrainState.create(e.p, object()), T, "optimizer"),
    Case("TrainState-int-params[patch]", lambda e: jaxmlp.TrainState.create(cast(e.p, jnp.int32)), T, r"params\[0\]\.w"),
    Case("TrainState-params-str[patch]", lambda e: jaxmlp.TrainState.create("params"), T, "params"),
    Case("make_train_step-duck-optimizer[patch]", lambda e: jaxmlp.make_train_step(REG, "mse", _duck_optimizer()), T, "optimizer"),
    Case("step-y-rows", lambda e: jaxmlp.make_train_step(REG, "mse")(jaxmlp.TrainState.create(e.p), e.x, e.y[:4]), V, "y"),
    Case("step-complex-x", lambda e: jaxmlp.make_train_step(REG, "mse")(jaxmlp.TrainState.create(e.p), e.x.astype(jnp.complex64), e.y), T, "x"),
    Case("step-other-architecture", lambda e: jaxmlp.make_train_step(REG, "mse")(jaxmlp.TrainState.create(e.other), e.x, e.y), V, r"params\[0\]\.w"),
    Case("step-params-not-state[patch]", lambda e: jaxmlp.make_train_step(REG, "mse")(e.p, e.x, e.y), T, "state"),
    # --- fit: everything checked eagerly, before anything compiles ---------------------------
    Case("fit-model", lambda e: fit(e, model="REG"), T, "model"),
    Case("fit-other-architecture", lambda e: fit(e, params=e.other), V, r"params\[0\]\.w"),
    Case("fit-int-params", lambda e: fit(e, params=cast(e.p, jnp.int32)), T, r"params\[0\]\.w"),
    Case("fit-complex-params", lambda e: fit(e, params=cast(e.p, jnp.complex64)), T, r"params\[0\]\.w"),
    Case("fit-nan-params[patch]", lambda e: fit(e, params=with_nan(e.p)), V, r"params\[0\]\.b"),
    Case("fit-x-rank1", lambda e: fit(e, x=e.x[0]), V, "x"),
    Case("fit-x-features", lambda e: fit(e, x=e.xc), V, "x"),
    Case("fit-x-complex", lambda e: fit(e, x=e.x.astype(jnp.complex64)), T, "x"),
    Case("fit-x-bool", lambda e: fit(e, x=e.x > 0), T, "x"),
    Case("fit-x-str", lambda e: fit(e, x="abc"), (V, T), "x"),
    Case("fit-x-ragged[patch]", lambda e: fit(e, x=[[1.0, 2.0, 3.0], [1.0]]), T, "x"),
    Case("fit-x-nan", lambda e: fit(e, x=e.x.at[2, 1].set(jnp.nan)), V, "x"),
    Case("fit-x-inf", lambda e: fit(e, x=e.x.at[0, 0].set(-jnp.inf)), V, "x"),
    Case("fit-empty", lambda e: fit(e, x=e.x[:0], y=e.y[:0]), V, "x"),
    Case("fit-y-rows", lambda e: fit(e, y=e.y[:4]), V, "y"),
    Case("fit-y-columns", lambda e: fit(e, y=e.y[:, :1]), V, "y"),
    Case("fit-y-complex", lambda e: fit(e, y=e.y.astype(jnp.complex64)), T, "y"),
    Case("fit-y-nan", lambda e: fit(e, y=e.y.at[1, 1].set(jnp.nan)), V, "y"),
    Case("fit-y-none", lambda e: fit(e, y=None), (V, T), "y"),
    Case("fit-labels-too-high", lambda e: fit_cls(e, y=e.yc + 1), V, "y"),
    Case("fit-labels-negative", lambda e: fit_cls(e, y=e.yc - 1), V, "y"),
    Case("fit-labels-int64-beyond-int32[patch]", lambda e: fit_cls(e, y=np.array([0, 1, 2, 2**32, 0, 1])), V, "y"),
    Case("fit-labels-float", lambda e: fit_cls(e, y=e.yc.astype(jnp.float32)), T, "y"),
    Case("fit-probabilities-above-one", lambda e: fit_cls(e, y=jnp.full((N, 3), 2.0)), V, "y"),
    Case("fit-bce-targets-negative", lambda e: fit_cls(e, y=-jnp.ones((N, 3)), loss="sigmoid_binary_cross_entropy"), V, "y"),
    Case("fit-loss", lambda e: fit(e, loss="hinge"), V, "loss"),
    Case("fit-method", lambda e: fit(e, method="numeric"), V, "method"),
    Case("fit-optimizer-str", lambda e: fit(e, optimizer="adam"), T, "optimizer"),
    Case("fit-optimizer-factory", lambda e: fit(e, optimizer=optax.sgd), T, "optimizer"),
    Case("fit-optimizer-duck[patch]", lambda e: fit(e, optimizer=_duck_optimizer()), T, "optimizer"),
    Case("fit-key-none", lambda e: fit(e, key=None), T, "key"),
    Case("fit-key-batch", lambda e: fit(e, key=jax.random.split(jax.random.key(4))), V, "key"),
    Case("fit-epochs-zero", lambda e: fit(e, epochs=0), V, "epochs"),
    Case("fit-epochs-float", lambda e: fit(e, epochs=1.5), T, "epochs"),
    Case("fit-batch-size-negative", lambda e: fit(e, batch_size=-1), V, "batch_size"),
    Case("fit-l2-nan", lambda e: fit(e, l2=math.nan), V, "l2"),
    Case("fit-validation-not-pair", lambda e: fit(e, validation_data=(e.x, e.y, e.y)), T, "validation_data"),
    Case("fit-validation-features", lambda e: fit(e, validation_data=(e.xc, e.y)), V, r"validation_data\[0\]"),
    Case("fit-validation-nan", lambda e: fit(e, validation_data=(e.x, e.y.at[0, 0].set(jnp.nan))), V, r"validation_data\[1\]"),
    Case("fit-validation-rows", lambda e: fit(e, validation_data=(e.x, e.y[:2])), V, r"validation_data\[1\]"),
    Case("fit-sample-weight-shape", lambda e: fit(e, sample_weight=jnp.ones((N, 1))), V, "sample_weight"),
    Case("fit-sample-weight-negative", lambda e: fit(e, sample_weight=-jnp.ones(N)), V, "sample_weight"),
    Case("fit-sample-weight-nan", lambda e: fit(e, sample_weight=jnp.ones(N).at[0].set(jnp.nan)), V, "sample_weight"),
    Case("fit-sample-weight-str[patch]", lambda e: fit(e, sample_weight="uniform"), T, "sample_weight"),
    Case("fit-sample-weight-complex[patch]", lambda e: fit(e, sample_weight=jnp.ones(N, jnp.complex64)), T, "sample_weight"),
    Case("fit-early-stopping-type", lambda e: fit(e, early_stopping=5), T, "early_stopping"),
    Case("fit-patience-zero", lambda e: fit(e, early_stopping=jaxmlp.EarlyStopping(patience=0)), V, r"early_stopping\.patience"),
    Case("fit-min-delta-nan[patch]", lambda e: fit(e, early_stopping=jaxmlp.EarlyStopping(min_delta=math.nan)), V, r"early_stopping\.min_delta"),
    Case("fit-min-delta-str[patch]", lambda e: fit(e, early_stopping=jaxmlp.EarlyStopping(min_delta="0.1")), T, r"early_stopping\.min_delta"),
    Case("fit-epochs-per-call-zero", lambda e: fit(e, epochs_per_call=0), V, "epochs_per_call"),
    Case("fit-keep-zero", lambda e: fit(e, checkpoint_dir=e.dir / "k", keep=0), V, "keep"),
    Case("fit-resume-without-directory", lambda e: fit(e, resume=True), V, "resume"),
    Case("fit-checkpoint-dir-int[patch]", lambda e: fit(e, checkpoint_dir=3), T, "checkpoint_dir"),
    # --- fit_ensemble, predict_ensemble, ensemble_apply ---------------------------------------
    Case("ensemble-num-models-zero", lambda e: ensemble(e, num_models=0), V, "num_models"),
    Case("ensemble-num-models-float", lambda e: ensemble(e, num_models=2.0), T, "num_models"),
    Case("ensemble-model", lambda e: jaxmlp.fit_ensemble("REG", e.x, e.y, num_models=2, loss="mse", key=jax.random.key(5)), T, "model"),
    Case("ensemble-x-features", lambda e: ensemble(e, x=e.xc), V, "x"),
    Case("ensemble-x-nan", lambda e: ensemble(e, x=e.x.at[0, 0].set(jnp.nan)), V, "x"),
    Case("ensemble-x-complex", lambda e: ensemble(e, x=e.x.astype(jnp.complex64)), T, "x"),
    Case("ensemble-y-rows", lambda e: ensemble(e, y=e.y[:4]), V, "y"),
    Case("ensemble-empty", lambda e: ensemble(e, x=e.x[:0], y=e.y[:0]), V, "x"),
    Case("ensemble-optimizer", lambda e: ensemble(e, optimizer="sgd"), T, "optimizer"),
    Case("ensemble-rates-nan", lambda e: ensemble(e, learning_rates=[0.1, math.nan]), V, "learning_rates"),
    Case("ensemble-rates-count", lambda e: ensemble(e, learning_rates=[0.1]), V, "learning_rates"),
    Case("ensemble-rates-str[patch]", lambda e: ensemble(e, learning_rates=["fast", "slow"]), V, "learning_rates"),
    Case("ensemble-optimizer-fn-str[patch]", lambda e: ensemble(e, learning_rates=[0.1, 0.2], optimizer_fn="sgd"), T, "optimizer_fn"),
    Case("ensemble-optimizer-fn-no-rate[patch]", lambda e: ensemble(e, learning_rates=[0.1, 0.2], optimizer_fn=optax.identity), T, "optimizer_fn"),
    Case("ensemble-params-other-architecture", lambda e: ensemble(e, params=stacked(e.other)), V, r"params\[0\]\.w"),
    Case("ensemble-params-not-stacked", lambda e: ensemble(e, params=e.p), V, "params"),
    Case("ensemble-params-int", lambda e: ensemble(e, params=stacked(cast(e.p, jnp.int32))), T, r"params\[0\]\.w"),
    Case("ensemble-params-str[patch]", lambda e: ensemble(e, params="params"), T, "params"),
    Case("ensemble-params-nan[patch]", lambda e: ensemble(e, params=stacked(with_nan(e.p))), V, r"params\[0\]\.b"),
    Case("ensemble-validation-not-pair[patch]", lambda e: ensemble(e, validation_data=3), T, "validation_data"),
    Case("ensemble-validation-features", lambda e: ensemble(e, validation_data=(e.xc, e.y)), V, r"validation_data\[0\]"),
    Case("ensemble_apply-features", lambda e: jaxmlp.ensemble_apply(REG, stacked(e.p), e.xc), V, "x"),
    Case("ensemble_apply-other-architecture", lambda e: jaxmlp.ensemble_apply(REG, stacked(e.other), e.x), V, r"params\[0\]\.w"),
    Case("ensemble_apply-not-stacked[patch]", lambda e: jaxmlp.ensemble_apply(REG, e.p, e.x), V, "params: .*leading member axis"),
    Case("ensemble_apply-ragged-members[patch]", lambda e: jaxmlp.ensemble_apply(REG, (stacked(e.p[0], 2), stacked(e.p[1], 3)), e.x), V, "params: .*leading member axis"),
    Case("predict_ensemble-scalars[patch]", lambda e: jaxmlp.predict_ensemble(REG, (Dense(1.0, 2.0),) * 2, e.x), T, "params"),
    Case("predict_ensemble-model", lambda e: jaxmlp.predict_ensemble(None, stacked(e.p), e.x), T, "model"),
    # --- data ---------------------------------------------------------------------------------
    Case("data-load-unknown", lambda e: data.load("spirals", jax.random.key(6)), V, "name"),
    Case("data-load-name-list", lambda e: data.load(["circle"], jax.random.key(7)), V, "name"),
    Case("data-load_sklearn-unknown", lambda e: data.load_sklearn(["iris"]), V, "name"),
    Case("data-n-zero", lambda e: data.circle(jax.random.key(8), 0), V, "n"),
    Case("data-n-float", lambda e: data.moons(jax.random.key(9), 2.5), T, "n"),
    Case("data-noise-nan", lambda e: data.spiral(jax.random.key(12), 10, noise=math.nan), V, "noise"),
    Case("data-noise-negative", lambda e: data.xor(jax.random.key(13), 10, noise=-0.1), V, "noise"),
    Case("data-key-none", lambda e: data.plane(None, 10), T, "key"),
    Case("data-key-batch", lambda e: data.sine(jax.random.split(jax.random.key(14)), 10), V, "key"),
    Case("split-rows", lambda e: jaxmlp.train_test_split(jax.random.key(15), e.x, e.y[:4]), V, "y"),
    Case("split-fraction", lambda e: jaxmlp.train_test_split(jax.random.key(16), e.x, e.y, 1.5), V, "test_fraction"),
    Case("split-key", lambda e: jaxmlp.train_test_split(3, e.x, e.y), T, "key"),
    Case("split-ragged", lambda e: jaxmlp.train_test_split(jax.random.key(17), [[1.0], [1.0, 2.0]], [0, 1]), T, "x"),
    Case("split-scalars", lambda e: jaxmlp.train_test_split(jax.random.key(18), 1.0, 2.0), V, "x, y"),
    Case("batches-size-zero", lambda e: next(data.batches(e.x, e.y, 0)), V, "batch_size"),
    Case("batches-rows", lambda e: next(data.batches(e.x, e.y[:2], 2)), V, "y"),
    Case("pad_to_batches-str", lambda e: data.pad_to_batches("abc", "abc", 2), T, "x"),
    Case("pad_to_batches-rows", lambda e: data.pad_to_batches(e.x, e.y[:2], 2), V, "y"),
    Case("standardizer-empty", lambda e: jaxmlp.Standardizer.fit(e.x[:0]), V, "x"),
    Case("standardizer-nan", lambda e: jaxmlp.Standardizer.fit(e.x.at[0, 0].set(jnp.nan)), V, "x"),
    Case("standardizer-complex", lambda e: jaxmlp.Standardizer.fit(e.x.astype(jnp.complex64)), T, "x"),
    Case("standardizer-str", lambda e: jaxmlp.Standardizer.fit("abc"), T, "x"),
    Case("standardizer-none", lambda e: jaxmlp.Standardizer.fit(None), T, "x"),
    Case("standardizer-transform-features", lambda e: jaxmlp.Standardizer.fit(e.x).transform(e.xc), V, "x"),
    Case("standardizer-transform-rank", lambda e: jaxmlp.Standardizer.fit(e.x).inverse_transform(e.x[0]), V, "x"),
    Case("standardizer-transform-complex", lambda e: jaxmlp.Standardizer.fit(e.x).transform(e.x.astype(jnp.complex64)), T, "x"),
    # --- checkpoints --------------------------------------------------------------------------
    Case("save-model", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model="REG", params=e.p), T, "model"),
    Case("save-other-architecture", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.other), V, r"params\[0\]\.w"),
    Case("save-int-params", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=cast(e.p, jnp.int32)), T, r"params\[0\]\.w"),
    Case("save-step-negative", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.p, step=-1), V, "step"),
    Case("save-step-float", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.p, step=1.5), T, "step"),
    Case("save-path-none", lambda e: jaxmlp.save_checkpoint(None, model=REG, params=e.p), T, "path"),
    Case("save-metadata", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.p, metadata={1j}), T, "metadata"),
    Case("save-extra-not-dict", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.p, extra_arrays=[1]), T, "extra_arrays"),
    Case("save-opt-state-strings", lambda e: jaxmlp.save_checkpoint(e.dir / "a.npz", model=REG, params=e.p, opt_state={"lr": "fast"}), T, r"opt_state\['lr'\]"),
    Case("load-missing", lambda e: jaxmlp.load_checkpoint(e.dir / "missing.npz"), FileNotFoundError, "checkpoint"),
    Case("load-path-int", lambda e: jaxmlp.load_checkpoint(3), T, "path"),
    Case("load-model-type", lambda e: jaxmlp.load_checkpoint(e.ckpt, model="REG"), T, "model"),
    Case("load-other-model", lambda e: jaxmlp.load_checkpoint(e.ckpt, model=OTHER), CE, "checkpoint .* different model"),
    Case("load-garbage", lambda e: jaxmlp.load_checkpoint(e.dir / "garbage.npz"), CE, "checkpoint .* unreadable"),
    Case("load-opt-state-like", lambda e: jaxmlp.load_checkpoint(e.ckpt, opt_state_like=optax.adam(0.1).init(e.p)), CE, "checkpoint .* no optimizer state"),
    Case("checkpoint_path-epoch-float", lambda e: jaxmlp.checkpoint_path(e.dir, 1.5), T, "epoch"),
    Case("checkpoint_path-epoch-negative", lambda e: jaxmlp.checkpoint_path(e.dir, -1), V, "epoch"),
    Case("checkpoint_path-directory", lambda e: jaxmlp.checkpoint_path(None, 1), T, "directory"),
    Case("prune-keep-zero", lambda e: jaxmlp.prune_checkpoints(e.dir, 0), V, "keep"),
    Case("list-directory-none", lambda e: jaxmlp.list_checkpoints(None), T, "directory"),
    Case("latest-directory-int", lambda e: jaxmlp.latest_checkpoint(3), T, "directory"),
]  # fmt: skip


def assert_documented(err: BaseException) -> None:
    """Our own error: a builtin ValueError/TypeError (or jaxmlp's subclass), not a JAX one."""
    assert isinstance(err, (ValueError, TypeError, FileNotFoundError)), repr(err)
    assert type(err).__module__ in ("builtins", "jaxmlp.errors"), repr(err)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_error(e, case):
    with pytest.raises(case.exc) as info:
        case.call(e)
    assert_documented(info.value)
    # The message starts by naming the argument (CheckpointErrors name the file first).
    assert re.match(rf"{case.arg}(?!\w)", str(info.value)), str(info.value)


JIT_CASES = [
    Case("apply-features", lambda e: jax.jit(REG.apply)(e.p, e.xc), V, "x"),
    Case("apply-int-params", lambda e: jax.jit(REG.apply)(cast(e.p, jnp.int32), e.x), T, r"params\[0\]\.w"),
    Case("apply-complex-x", lambda e: jax.jit(REG.apply)(e.p, e.x.astype(jnp.complex64)), T, "x"),
    Case("apply-empty", lambda e: jax.jit(REG.apply)(e.p, e.x[:0]), V, "x"),
    Case("manual-y-rows", lambda e: jax.jit(jaxmlp.value_and_grad(REG, "mse"))(e.p, e.x, e.y[:4]), V, "y"),
    Case("autodiff-other-architecture", lambda e: jax.jit(jaxmlp.value_and_grad(REG, "mse", method="autodiff"))(e.other, e.x, e.y), V, r"params\[0\]\.w"),
    Case("labels-float", lambda e: jax.jit(jaxmlp.value_and_grad(CLS, "softmax_cross_entropy"))(e.pc, e.xc, e.yc * 1.0), T, "y"),
    Case("sample-weight-shape", lambda e: jax.jit(jaxmlp.loss_fn(REG, "mse"))(e.p, e.x, e.y, jnp.ones(2)), V, "sample_weight"),
    Case("per-example-features", lambda e: jax.jit(jaxmlp.per_example_grads(REG, "mse"))(e.p, e.xc, e.y), V, "x"),
    Case("norms-y-columns", lambda e: jax.jit(jaxmlp.per_example_grad_norms(REG, "mse"))(e.p, e.x, e.y[:, :1]), V, "y"),
    Case("apply_manual-bool-x", lambda e: jax.jit(jaxmlp.apply_manual, static_argnums=0)(REG, e.p, e.x > 0), T, "x"),
    Case("grad-apply_manual-features", lambda e: jax.grad(lambda p: jnp.sum(jaxmlp.apply_manual(REG, p, e.xc)))(e.p), V, "x"),
    Case("vmap-apply-features", lambda e: jax.vmap(REG.apply, in_axes=(None, 0))(e.p, e.x[:, None, :2]), V, "x"),
    Case("evaluate-y-rows", lambda e: jax.jit(jaxmlp.evaluate, static_argnames="loss")(REG, e.p, e.x, e.y[:4], loss="mse"), V, "y"),
    Case("standardizer-features", lambda e: jax.jit(lambda s, x: s.transform(x))(jaxmlp.Standardizer.fit(e.x), e.xc), V, "x"),
    Case("train-step-y-columns", lambda e: jaxmlp.make_train_step(REG, "mse")(jaxmlp.TrainState.create(e.p), e.x, e.y[:, :1]), V, "y"),
]  # fmt: skip


@pytest.mark.parametrize("case", JIT_CASES, ids=[c.id for c in JIT_CASES])
def test_shape_dtype_and_name_checks_hold_under_transformations(e, case):
    with pytest.raises(case.exc) as info:
        case.call(e)
    assert_documented(info.value)
    assert re.match(rf"{case.arg}(?!\w)", str(info.value)), str(info.value)


@pytest.mark.parametrize("loss", ["mse", jaxmlp.get_loss("mse")], ids=["name", "Loss"])
def test_evaluate_in_the_old_order_still_works_with_a_deprecation_warning(e, loss):
    new = jaxmlp.evaluate(REG, e.p, e.x, e.y, loss)
    assert new == jaxmlp.evaluate(REG, e.p, e.x, e.y, loss=loss)
    with pytest.warns(DeprecationWarning, match=r"evaluate\(model, params, x, y, loss=loss\)"):
        old = jaxmlp.evaluate(REG, loss, e.p, e.x, e.y)
    np.testing.assert_array_equal(old, new)
    # and under jit, the old order's loss static in the second place (a fresh function: the
    # warning comes at trace time)
    with pytest.warns(DeprecationWarning):
        old_order = jax.jit(lambda *a: jaxmlp.evaluate(*a), static_argnums=(0, 1))
        jitted = old_order(REG, loss, e.p, e.x, e.y)
    np.testing.assert_allclose(jitted, new, rtol=1e-6)


def test_fit_rejects_bad_input_before_compiling_anything(e):
    from jaxmlp._engine.step import TRACE_COUNTS

    before = dict(TRACE_COUNTS)
    for case in CASES:
        if case.id.startswith(("fit-", "ensemble-")) and "[patch]" not in case.id:
            with pytest.raises(case.exc):
                case.call(e)
    assert TRACE_COUNTS == before


# --- random malformed input (hypothesis) ------------------------------------------------------

JUNK_SOME = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2), max_size=3),
    st.just([[1.0, 2.0], [3.0]]),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
    st.just(object()),
)
JUNK = st.one_of(st.none(), JUNK_SOME)
DTYPES = ("float32", "float16", "int32", "uint8", "bool", "complex64")


@st.composite
def arrays(draw, shape=None):
    """A small array (numpy or JAX) of a random or given shape, dtype and fill."""
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    a = (np.arange(math.prod(shape)).reshape(shape) % 5 - 2).astype(dtype)
    if a.size and np.issubdtype(a.dtype, np.inexact):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([0.5, np.nan, np.inf]))
    return jnp.asarray(a) if draw(st.booleans()) else a


@st.composite
def near(draw, shape, dtype="float32"):
    """A valid ``shape``/``dtype`` array broken in exactly one way."""
    how = draw(st.sampled_from(["rows", "columns", "rank", "empty", "dtype", "nan", "inf"]))
    if how == "rows":
        shape = (shape[0] + draw(st.sampled_from([-1, 1])), *shape[1:])
    elif how == "columns" and len(shape) > 1:
        shape = (*shape[:-1], shape[-1] + draw(st.sampled_from([-1, 1, 2])))
    elif how == "rank":
        shape = draw(
            st.sampled_from([(), shape[:1] if len(shape) > 1 else (*shape, 1), (*shape, 1)])
        )
    elif how == "empty":
        shape = (0, *shape[1:])
    elif how == "dtype":
        dtype = draw(st.sampled_from(["complex64", "bool"] if dtype == "float32" else ["float32"]))
    a = (np.arange(math.prod(shape)).reshape(shape) % 3).astype(dtype)
    if how in ("nan", "inf") and a.size and np.issubdtype(a.dtype, np.inexact):
        a.flat[0] = np.nan if how == "nan" else -np.inf
    return jnp.asarray(a)


def any_array(shape):
    return st.one_of(arrays(), near(shape), arrays(shape), JUNK)


NAMES = st.one_of(
    st.sampled_from(["mse", "softmax_cross_entropy", "relu", "softmax", "circle", "manual", "MSE"]),
    st.text(max_size=8),
    JUNK,
)


PARAM_KINDS = ("valid", "other", "int", "complex", "f16-mix", "drop", "extra", "swap", "tuples",
               "dict", "transposed", "junk")  # fmt: skip
TARGETS = ("apply", "value_and_grad", "norms", "mlp", "lookup", "dataset", "standardizer",
           "metrics", "evaluate", "split", "save", "load")  # fmt: skip


@st.composite
def params_like(draw, e, stack=False):
    kind = draw(st.sampled_from(PARAM_KINDS))
    p = e.p
    if kind == "other":
        p = e.other
    elif kind in ("int", "complex"):
        p = cast(p, jnp.int32 if kind == "int" else jnp.complex64)
    elif kind == "f16-mix":
        p = (p[0], cast(p[1:], jnp.float16)[0])
    elif kind == "drop":
        p = p[:1]
    elif kind == "extra":
        p = (*p, p[-1])
    elif kind == "swap":
        p = tuple(Dense(layer.b, layer.w) for layer in p)
    elif kind == "tuples":
        p = tuple(tuple(layer) for layer in p)
    elif kind == "dict":
        p = {"layers": p}
    elif kind == "transposed":
        p = tuple(Dense(layer.w.T, layer.b) for layer in p)
    elif kind == "junk":
        return draw(JUNK)
    return stacked(p) if stack else p


def _all_arrays(tree) -> bool:
    leaves = jax.tree.leaves(tree)
    return all(isinstance(a, (np.ndarray, jax.Array)) for a in leaves)


def _shaped(v, shape, dtypes) -> bool:
    return getattr(v, "shape", None) == shape and str(getattr(v, "dtype", "")) in dtypes


def _finite(v) -> bool:
    return bool(jnp.isfinite(jnp.asarray(v, jnp.complex64)).all())


def _malformed(shape, dtypes, finite=True):
    """``near(shape)`` or junk, never a valid value (NaN/Inf count as invalid when ``finite``)."""

    def valid(v):
        return _shaped(v, shape, dtypes) and (not finite or _finite(v))

    return st.one_of(near(shape).filter(lambda v: not valid(v)), JUNK_SOME)


# One defect per call, always invalid: the entry point must refuse it eagerly, naming it.
FIT_DEFECTS = {
    "x": _malformed((N, 3), ("float32",)),
    "y": _malformed((N, 2), ("float32", "bool")),
    "params": st.sampled_from(["other", "int", "complex", "nan", "drop", "dict", "str"]),
    "loss": NAMES.filter(lambda n: not (isinstance(n, str) and n in jaxmlp.LOSSES)),
    "key": st.one_of(st.integers(), st.none(), st.just("key"), st.just(np.zeros(3, np.uint32))),
    "optimizer": st.one_of(st.text(max_size=4), st.integers(), st.just(optax.adam)),
    "epochs": st.one_of(st.integers(-2, 0), st.floats(0.5, 3), st.text(max_size=2)),
    "batch_size": st.one_of(st.integers(-2, 0), st.floats(0.5, 3), st.none()),
    "method": NAMES.filter(lambda n: n not in jaxmlp.METHODS),
    "l2": st.one_of(st.floats(max_value=-1e-3), st.sampled_from([math.nan, math.inf, "0"])),
    "sample_weight": st.one_of(_malformed((N,), ("float32", "bool")), st.just(-jnp.ones(N))),
    "validation_data": st.one_of(JUNK_SOME, st.tuples(near((N, 3)), st.just(None))),
    "early_stopping": st.one_of(st.integers(), st.text(max_size=2), st.just(dict(patience=2))),
}
ENSEMBLE_DEFECTS = {
    "x": FIT_DEFECTS["x"],
    "y": FIT_DEFECTS["y"],
    "num_models": st.one_of(st.integers(-2, 0), st.floats(0.5, 3), st.none(), st.text(max_size=2)),
    "learning_rates": st.one_of(
        st.lists(st.floats(0.01, 1), max_size=1),
        st.sampled_from([[0.1, -0.1], [0.1, math.nan], ["fast", "slow"]]),
    ),
    "params": st.sampled_from(["unstacked", "other", "int", "nan", "str", "three"]),
    "key": FIT_DEFECTS["key"],
    "validation_data": FIT_DEFECTS["validation_data"],
}
GRADCHECK_DEFECTS = {
    "x": _malformed((N, 3), ("float32",), finite=False),
    "y": _malformed((N, 2), ("float32", "bool"), finite=False),
    "params": st.sampled_from(["other", "int", "drop", "dict", "str"]),
    "loss": FIT_DEFECTS["loss"],
    "num_directions": st.one_of(st.integers(-3, 0), st.floats(0.5, 2), st.none()),
    "key": st.one_of(st.integers(), st.text(max_size=2), st.just(np.zeros(3, np.uint32))),
}


def _bad_params(e, kind, stack=False):
    p = {"other": e.other, "int": cast(e.p, jnp.int32), "complex": cast(e.p, jnp.complex64),
         "nan": with_nan(e.p), "drop": e.p[:1], "dict": {"w": e.p[0].w}, "str": "params",
         "unstacked": e.p, "three": stacked(e.p, 3)}[kind]  # fmt: skip
    return stacked(p) if stack and kind in ("other", "int", "nan") else p


def _call_fit(data, e):
    field = data.draw(st.sampled_from(sorted(FIT_DEFECTS)), label="fit defect")
    value = data.draw(FIT_DEFECTS[field], label=field)
    args = dict(model=REG, params=e.p, x=e.x, y=e.y, loss="mse", key=jax.random.key(30))
    args |= dict(epochs=1, batch_size=3, progress=False)
    args[field] = _bad_params(e, value) if field == "params" else value
    model, params, x, y = (args.pop(k) for k in ("model", "params", "x", "y"))
    return field, lambda: jaxmlp.fit(model, params, x, y, **args)


def _call_ensemble(data, e):
    field = data.draw(st.sampled_from(sorted(ENSEMBLE_DEFECTS)), label="ensemble defect")
    value = data.draw(ENSEMBLE_DEFECTS[field], label=field)
    args = dict(x=e.x, y=e.y, num_models=2, loss="mse", key=jax.random.key(31))
    args |= dict(epochs=1, batch_size=3, progress=False)
    args[field] = _bad_params(e, value, stack=True) if field == "params" else value
    x, y = args.pop("x"), args.pop("y")
    return field, lambda: jaxmlp.fit_ensemble(REG, x, y, **args)


def _call_gradcheck(data, e):
    field = data.draw(st.sampled_from(sorted(GRADCHECK_DEFECTS)), label="gradcheck defect")
    value = data.draw(GRADCHECK_DEFECTS[field], label=field)
    args = dict(params=e.p, x=e.x, y=e.y, loss="mse", num_directions=1, key=None)
    args[field] = _bad_params(e, value) if field == "params" else value
    params, x, y, loss = (args.pop(k) for k in ("params", "x", "y", "loss"))
    return field, lambda: jaxmlp.gradcheck(REG, params, x, y, loss, **args)


def _call_any(data, e):
    """A public function called with random, mostly malformed, arguments; it may succeed."""
    target = data.draw(st.sampled_from(TARGETS), label="target")
    d = data.draw
    if target == "apply":
        params, x = d(params_like(e)), d(any_array((N, 3)))
        fn = jax.jit(REG.apply) if _all_arrays((params, x)) and d(st.booleans()) else REG.apply
        return lambda: fn(params, x)
    if target == "value_and_grad":
        loss, method, l2 = d(NAMES), d(st.sampled_from(["manual", "autodiff", "fd"])), d(JUNK)
        args = (d(params_like(e)), d(any_array((N, 3))), d(any_array((N, 2))))
        sw = d(st.one_of(st.none(), any_array((N,))))
        return lambda: jaxmlp.value_and_grad(REG, loss, method=method, l2=l2 or 0.0)(*args, sw)
    if target == "norms":
        args = (d(params_like(e)), d(any_array((N, 3))), d(any_array((N, 2))))
        return lambda: jaxmlp.per_example_grad_norms(REG, "mse")(*args)
    if target == "mlp":
        sizes = d(st.one_of(st.lists(st.one_of(st.integers(-1, 5), JUNK), max_size=4), JUNK))
        kw = dict(activation=d(NAMES), output_activation=d(NAMES), initializer=d(NAMES))
        kw["param_dtype"] = d(
            st.one_of(st.sampled_from(["float32", "int8", "bfloat16", "float64"]), JUNK)
        )
        return lambda: jaxmlp.MLP(sizes, **kw).init(jax.random.key(32))
    if target == "lookup":
        name, output = d(NAMES), d(st.booleans())
        return lambda: (jaxmlp.get_loss(name), jaxmlp.get_activation(name, output=output))
    if target == "dataset":
        name, n, noise = d(NAMES), d(st.one_of(st.integers(-2, 20), JUNK)), d(JUNK)
        return lambda: data_module.load(name, jax.random.key(33), n, noise=noise or 0.0)
    if target == "standardizer":
        a, b = d(any_array((N, 3))), d(any_array((N, 3)))
        return lambda: jaxmlp.Standardizer.fit(a).inverse_transform(b)
    if target == "metrics":
        a, b, targets = d(any_array((N, 3))), d(any_array((N,))), d(NAMES)
        return lambda: (jaxmlp.accuracy(a, b, targets), jaxmlp.r2_score(a, b))
    if target == "evaluate":
        args = (d(params_like(e)), d(any_array((N, 3))), d(any_array((N, 2))), d(NAMES))
        return lambda: jaxmlp.evaluate(REG, *args)
    if target == "split":
        a, b, fraction, size = d(any_array((N, 3))), d(any_array((N,))), d(JUNK), d(JUNK)
        return lambda: (
            jaxmlp.train_test_split(jax.random.key(34), a, b, fraction),
            list(data_module.batches(a, b, size)),
            data_module.pad_to_batches(a, b, size),
        )
    if target == "save":
        path = d(st.one_of(st.just(str(e.dir / "saved.npz")), JUNK))
        params, step, meta = d(params_like(e)), d(st.one_of(JUNK, st.integers(-2, 5))), d(JUNK)
        return lambda: jaxmlp.save_checkpoint(
            path, model=REG, params=params, step=step, metadata=meta
        )
    # load: random bytes, a truncated copy, or a copy with a few flipped bytes
    good = e.ckpt.read_bytes()
    how = d(st.sampled_from(["bytes", "truncated", "flipped"]))
    if how == "bytes":
        blob = d(st.binary(max_size=200))
    elif how == "truncated":
        blob = good[: d(st.integers(0, len(good) - 1))]
    else:
        blob = bytearray(good)
        for i in d(st.lists(st.integers(0, len(good) - 1), min_size=1, max_size=4)):
            blob[i] ^= 0xFF
    path = e.dir / "random.npz"
    path.write_bytes(bytes(blob))
    return lambda: jaxmlp.load_checkpoint(path, model=REG)


data_module = data


@settings(max_examples=50)
@given(st.data())
def test_random_malformed_input_raises_only_documented_errors(e, data):
    kind = data.draw(st.sampled_from(["fit", "fit_ensemble", "gradcheck", "any"]), label="kind")
    if kind == "any":
        call = _call_any(data, e)
        try:
            call()
        except Exception as err:  # the property: which errors come out
            assert_documented(err)
        return
    field, call = {"fit": _call_fit, "fit_ensemble": _call_ensemble, "gradcheck": _call_gradcheck}[
        kind
    ](data, e)
    # Always malformed here: an error must come out, before anything compiles, naming the field.
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert_documented(info.value)
    assert str(info.value).startswith(field), f"{field}: {info.value}"
