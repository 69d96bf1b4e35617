"""Issue 15's pieces beyond the plain stack: layer norm, dropout, residual connections, input
features (the Playground's and random Fourier features), sin/SIREN, l1, a registered activation
and layers of the test's own in the ``norm=`` slot.

For every piece and their combinations: the hand-written backward equals ``jax.grad`` (float32
and float64, tolerances from ``jaxmlp._core.gradcheck.TOLERANCES``), finite differences agree in
float64 (``gradcheck(...).ok``), the hand-written forward mode (``jax.jvp`` / ``jax.jacfwd`` of
``apply_manual``) equals ``jax.jvp`` of ``model.apply``, second derivatives work; a planted bug
in each hand-written derivative makes ``gradcheck`` fail on the rows it should; layer norm and
residual connections against the NumPy reference; and the pieces' semantics (dropout's keys,
constant rows, where skips go, counts, bad arguments, mixed precision, descriptions).

Parameters are drawn odd (weights 1.3 x LeCun, biases N(0, 0.5), scales U(0.5, 1.5), offsets
N(0, 0.5)) so that no bug hides behind zeros or ones.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_numpy as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from jaxmlp import MLP, Dense, apply_manual, fit, fit_ensemble, gradcheck, register_activation
from jaxmlp._core import backprop
from jaxmlp._core import gradcheck as gradcheck_module
from jaxmlp._core import tangent as tangent_module
from jaxmlp._core.backprop import (
    backward,
    forward,
    forward_trace,
    loss_head,
    per_example_grads,
    value_and_grad,
)
from jaxmlp._core.gradcheck import TOLERANCES
from jaxmlp._core.losses import get_loss
from jaxmlp._core.stack import run_backward, run_tangent
from jaxmlp.layers import Dropout, Features, FourierFeatures, Layer, LayerNorm, Norm

# Most programs here compile once and run once: no LLVM optimisation (the arithmetic stays).
FAST_COMPILE = {"xla_backend_optimization_level": 0}

# bfloat16 matmul inputs (8 significant bits, relative rounding 2^-9 ~ 2e-3 per input) against
# the float32 network: through two or three layers the rounding adds up to a few 1e-2 relative,
# the same bound test_backprop.py uses for the plain network. A wrong piece is off by O(1).
BF16_VS_FLOAT32 = (5e-2, 2e-2)


# --- pieces of the test's own: an activation and two layers ------------------------------------


def _softsign(z):
    return z / (1 + jnp.abs(z))


def _softsign_deriv(z, a):
    return 1 / (1 + jnp.abs(z)) ** 2  # d/dz z / (1 + |z|) = 1 / (1 + |z|)^2


SOFTSIGN = "softsign_test_layers"
register_activation(SOFTSIGN, _softsign, _softsign_deriv)


@dataclasses.dataclass(frozen=True)
class RMSNorm(Layer):
    """``out = scale * a * r``, ``r = (mean(a^2) + eps)^(-1/2)``: a layer of the user's with a
    dict of parameters and a hand-written backward and tangent."""

    eps: float = 1e-6
    name: ClassVar[str] = "rmsnorm"

    def init(self, key, n_in, dtype):
        return {"scale": jnp.ones((n_in,), dtype)}

    def forward(self, params, a, key):
        r = lax.rsqrt(jnp.mean(a * a, axis=-1, keepdims=True) + self.eps)
        return params["scale"][None, :] * a * r, r

    def backward(self, params, a, out, saved, d_out, need_din):
        r = saved
        grads = {"scale": jnp.sum(d_out * a * r, axis=0)}  # d out / d scale = a r
        if not need_din:
            return grads, None
        g = d_out * params["scale"][None, :]
        # dr/da_j = -r^3 a_j / n: dL/da_j = r g_j - r^3 a_j mean(g a)
        return grads, r * g - r**3 * a * jnp.mean(g * a, axis=-1, keepdims=True)

    def tangent(self, params, a, out, saved, d_params, d_a):
        r, terms = saved, []
        if d_a is not None:
            dr = -(r**3) * jnp.mean(a * d_a, axis=-1, keepdims=True)
            terms.append(params["scale"][None, :] * (d_a * r + a * dr))
        if d_params is not None and d_params.get("scale") is not None:
            terms.append(d_params["scale"][None, :] * a * r)
        return sum(terms[1:], terms[0]) if terms else None


@dataclasses.dataclass(frozen=True)
class UnitScale(Layer):
    """``out = a * s``, a learnable scale per unit held as a bare array; its forward mode is
    the protocol's default (``jax.jvp`` of ``forward``)."""

    name: ClassVar[str] = "unitscale"

    def init(self, key, n_in, dtype):
        return jnp.ones((n_in,), dtype)

    def forward(self, params, a, key):
        return a * params[None, :], None

    def backward(self, params, a, out, saved, d_out, need_din):
        return jnp.sum(d_out * a, axis=0), d_out * params[None, :] if need_din else None


# --- helpers -----------------------------------------------------------------------------------


def odd_params(model: MLP, rng: np.random.Generator, dtype):
    """Parameters for any stack: nothing zero, nothing one, nothing symmetric."""
    out = []
    for like in model.param_shapes():
        if isinstance(like, Dense):
            i, o = like.w.shape
            w = rng.normal(size=(i, o)) * 1.3 / np.sqrt(i)
            out.append(Dense(jnp.asarray(w, dtype), jnp.asarray(rng.normal(0.0, 0.5, o), dtype)))
        elif isinstance(like, Norm):
            n = like.scale.shape[0]
            out.append(
                Norm(
                    jnp.asarray(rng.uniform(0.5, 1.5, n), dtype),
                    jnp.asarray(rng.normal(0.0, 0.5, n), dtype),
                )
            )
        else:
            draw = lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), dtype)  # noqa: E731
            out.append(jax.tree.map(draw, like))
    return tuple(out)


def make_targets(loss: str, rng, batch: int, k: int, dtype):
    if loss == "softmax_cross_entropy":
        return jnp.asarray(rng.integers(0, k, batch))
    return jnp.asarray(rng.normal(size=(batch, k)), dtype)


def make_case(model, loss, *, batch=5, seed=0, dtype="float32"):
    """params, x, y (call inside ``jax.enable_x64`` for float64)."""
    rng = np.random.default_rng(seed)
    params = odd_params(model, rng, dtype)
    x = jnp.asarray(rng.normal(size=(batch, model.sizes[0])), dtype)
    return params, x, make_targets(loss, rng, batch, model.sizes[-1], dtype)


def assert_close(got, want, tol):
    """``|got - want| <= atol * scale + rtol * |want|`` leaf by leaf, ``scale`` the largest
    ``|want|`` entry over the whole tree; same structure, shapes and dtypes."""
    rtol, atol = tol
    assert jax.tree.structure(got) == jax.tree.structure(want)
    want_leaves = [np.asarray(w, np.float64) for w in jax.tree.leaves(want)]
    scale = max(float(np.abs(w).max(initial=0.0)) for w in want_leaves)
    for g, w, w_orig in zip(jax.tree.leaves(got), want_leaves, jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w_orig.dtype
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol * scale)


def assert_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _tree_differs(a, b) -> bool:
    return any(
        not np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _head(out):
    """An arbitrary scalar head: every output entry gets its own cotangent."""
    return jnp.sum(jnp.sin(3.0 * out) * jnp.arange(1, out.shape[-1] + 1)[None, :])


def _derivatives(model, loss, l2, l1, params, x, y, dparams, dx, key, *, jacfwd_params=False):
    """Everything compared for one model: the loss gradient both ways (training mode with
    ``key``), and the output's derivatives through ``apply_manual`` and ``model.apply`` in
    forward mode (jvp; jacfwd in x, and with ``jacfwd_params`` in the parameters too: the
    jvp's parameter directions cover them for less compile time) and reverse mode (vjp, for
    dL/dx too)."""
    manual = value_and_grad(model, loss, method="manual", l2=l2, l1=l1)
    autodiff = value_and_grad(model, loss, method="autodiff", l2=l2, l1=l1)
    key2 = None if key is None else jax.random.clone(key)
    out = {"manual": manual(params, x, y, key=key), "autodiff": autodiff(params, x, y, key=key2)}
    for name, apply in (("m", functools.partial(apply_manual, model)), ("a", model.apply)):
        out[name] = {
            "jvp": jax.jvp(apply, (params, x), (dparams, dx)),
            "jacfwd": jax.jacfwd(apply, argnums=(0, 1) if jacfwd_params else 1)(params, x),
            "vjp": jax.grad(lambda p, xx, f=apply: _head(f(p, xx)), argnums=(0, 1))(params, x),
        }
    return out


def check_derivatives(results, dtype):
    tol = TOLERANCES[dtype]
    (vm, gm), (va, ga) = results["manual"], results["autodiff"]
    assert vm.dtype == va.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(float(vm), float(va), rtol=tol[0])
    assert_close(gm, ga, tol)
    # the output's derivatives on one scale, the largest of them all (as gradcheck's forward
    # mode does): a derivative that is a cancellation of O(1) terms (d out / dx through a layer
    # norm of width 2, an RMS norm of width 1: nearly constant in x) is compared with the
    # rounding of those terms, not with itself
    assert_close(results["m"], results["a"], tol)


def derivative_args(model, loss, batch, seed, dtype, train):
    params, x, y = make_case(model, loss, batch=batch, seed=seed, dtype=dtype)
    dparams, dx, _ = make_case(model, loss, batch=batch, seed=seed + 1, dtype=dtype)
    key = jax.random.key(seed) if train else None
    return params, x, y, dparams, dx, key


# --- the pieces, one by one and together ---------------------------------------------------------

# name -> (model, loss, options): "train" checks training mode (a dropout key), l1/l2 penalties.
PIECES = {
    "layernorm": (MLP((3, 5, 4, 2), "tanh", norm="layernorm"), "mse", {}),
    "dropout": (MLP((3, 5, 4, 2), "tanh", dropout=0.4), "mse", {"train": True}),
    "residual": (MLP((3, 4, 4, 4, 2), "tanh", residual=True), "huber", {}),
    "playground": (MLP((2, 5, 2), "tanh", features="playground"), "mse", {}),
    "named features": (
        MLP((3, 4, 2), "tanh", features=("x1*x1", "x2*x3", "x3^2", "sin(x2)", "x1")),
        "mse",
        {},
    ),
    "fourier": (
        MLP((2, 5, 2), "tanh", features=FourierFeatures(n=3, scale=1.0, seed=7)),
        "mse",
        {},
    ),
    "sin siren": (MLP((2, 6, 6, 1), "sin", initializer="siren"), "mse", {}),
    "l1 l2": (MLP((3, 5, 2), "tanh"), "mse", {"l1": 0.1, "l2": 0.05}),
    "registered activation": (MLP((3, 5, 4, 2), SOFTSIGN), "mse", {}),
    "own layer: rmsnorm": (MLP((3, 5, 5, 2), "tanh", norm=RMSNorm()), "mse", {}),
    "own layer: unit scale": (MLP((3, 5, 5, 2), "gelu", norm=UnitScale()), "mse", {}),
    "layernorm dropout residual": (
        MLP(
            (3, 5, 5, 5, 3),
            ("tanh", "gelu", SOFTSIGN),
            norm="layernorm",
            dropout=0.3,
            residual=True,
        ),
        "softmax_cross_entropy",
        {"train": True, "l1": 0.05, "l2": 0.1},
    ),
    "everything, playground": (
        MLP(
            (2, 7, 7, 3),
            ("sin", "tanh"),
            norm="layernorm",
            dropout=0.25,
            residual=True,
            features="playground",
        ),
        "mse",
        {"train": True, "l1": 0.05},
    ),
    "everything, own norm and fourier": (
        MLP(
            (3, 4, 4, 4, 2),
            "tanh",
            norm=RMSNorm(),
            dropout=0.25,
            residual=True,
            features=FourierFeatures(n=2, scale=0.5, seed=1),
        ),
        "huber",
        {"train": True, "l1": 0.05},
    ),
}


@functools.cache
def _piece_results(dtype: str):
    """Every piece's :func:`_derivatives` from one compiled program per dtype."""

    def run(cases):
        return {
            name: _derivatives(
                PIECES[name][0],
                PIECES[name][1],
                PIECES[name][2].get("l2", 0.0),
                PIECES[name][2].get("l1", 0.0),
                *args,
                jacfwd_params=dtype == "float64",
            )
            for name, args in cases.items()
        }

    with jax.enable_x64(dtype == "float64"):
        cases = {
            name: derivative_args(m, loss, 5, 13, dtype, opts.get("train", False))
            for name, (m, loss, opts) in PIECES.items()
        }
        return jax.tree.map(np.asarray, jax.jit(run, compiler_options=FAST_COMPILE)(cases))


# One program per dtype holds every piece; float64 is slow-tier (the fast tier's float64 checks
# are the combinations' gradchecks, which compare with jax.grad in float64 too).
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
@pytest.mark.parametrize("piece", list(PIECES))
def test_each_piece_manual_matches_autodiff_in_both_modes(piece, dtype):
    check_derivatives(_piece_results(dtype)[piece], dtype)


# One gradcheck (four compiled programs) per piece: slow-tier, but for the combination of the
# three pieces with hand-written layer derivatives (layer norm, dropout, residual) and the penalties.
FAST_GRADCHECK = "layernorm dropout residual"


@pytest.mark.parametrize(
    "piece",
    [p if p == FAST_GRADCHECK else pytest.param(p, marks=pytest.mark.slow) for p in PIECES],
)
def test_each_piece_passes_gradcheck_in_float64(piece, x64):
    _gradcheck_piece(piece)


def _gradcheck_piece(piece):
    model, loss, opts = PIECES[piece]
    params, x, y = make_case(model, loss, batch=4, seed=5, dtype="float64")
    key = jax.random.key(8) if opts.get("train") else None
    report = gradcheck(
        model, params, x, y, loss, l2=opts.get("l2", 0.0), l1=opts.get("l1", 0.0), train_key=key
    )
    assert report.ok, str(report)
    assert report.input_forward_mode is not None and report.input_forward_mode.ok
    assert all(r.forward_mode is not None for r in report.rows)


def test_siren_init():
    model = MLP((2, 6, 6, 1), "sin", initializer="siren")
    params = model.init(jax.random.key(0))
    w0, b0 = np.asarray(params[0].w), np.asarray(params[0].b)
    # first layer: w = 30 U(-1/fan_in, 1/fan_in), b = 30 U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(w0).max() <= 30 / 2 and np.abs(w0).max() > 30 / 2 / 4
    assert np.abs(b0).max() <= 30 / math.sqrt(2) and np.all(b0 != 0)
    # later layers: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), biases drawn too
    assert np.abs(np.asarray(params[1].w)).max() <= math.sqrt(6 / 6)
    assert np.all(np.asarray(params[1].b) != 0)


@pytest.mark.slow  # a float32 gradcheck: the sin pieces' float64 one is in the all-pieces program
def test_siren_gradient_at_its_init():
    model = MLP((2, 6, 6, 1), "sin", initializer="siren")
    params = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 2), minval=-1, maxval=1)
    y = jnp.sin(3 * x[:, :1])
    report = gradcheck(model, params, x, y, "mse")  # float32 vs jax.grad, float64 differences
    assert report.ok, str(report)


# --- hypothesis: random architectures and combinations -------------------------------------------


NORM_CHOICES = (None, "layernorm", RMSNorm(), UnitScale())
FEATURE_CHOICES = (
    None,
    "playground",
    ("x1*x1", "x2", "sin(x1)"),
    ("x2^2", "x1*x2"),
    FourierFeatures(n=2, scale=0.7, seed=3),
)
SMOOTH = ("tanh", "sin", SOFTSIGN, "gelu")


@st.composite
def piece_configs(draw, activations=(*SMOOTH, "relu")):
    depth = draw(st.integers(1, 4))  # affine layers
    features = draw(st.sampled_from(FEATURE_CHOICES))
    n_in = draw(st.integers(1 if features is None else 2, 4))
    widths: list[int] = []
    for _ in range(depth - 1):
        # a repeated width often, so that residual connections appear
        same = bool(widths) and draw(st.booleans())
        widths.append(widths[-1] if same else draw(st.integers(1, 8)))
    loss, out_act = draw(
        st.sampled_from(
            [("mse", "identity"), ("huber", "sigmoid"), ("softmax_cross_entropy", "identity")]
        )
    )
    k = draw(st.integers(2 if loss == "softmax_cross_entropy" else 1, 3))
    dropout = draw(st.sampled_from([0.0, 0.25, 0.5]))
    model = MLP(
        (n_in, *widths, k),
        activation=tuple(draw(st.sampled_from(activations)) for _ in widths),
        output_activation=out_act,
        norm=draw(st.sampled_from(NORM_CHOICES)),
        dropout=dropout,
        residual=draw(st.booleans()),
        features=features,
    )
    return {
        "model": model,
        "loss": loss,
        "l2": draw(st.sampled_from([0.0, 0.1])),
        "l1": draw(st.sampled_from([0.0, 0.05])),
        "batch": draw(st.integers(1, 6)),
        "train": dropout > 0 and draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def _check_config(c, dtype, long_run=False):
    with jax.enable_x64(dtype == "float64"):
        args = derivative_args(c["model"], c["loss"], c["batch"], c["seed"], dtype, c["train"])
        fn = functools.partial(_derivatives, c["model"], c["loss"], c["l2"], c["l1"],
                               jacfwd_params=long_run)  # fmt: skip
        check_derivatives(jax.jit(fn, compiler_options=FAST_COMPILE)(*args), dtype)


# Each example compiles one program: a few in float32 in the fast tier (whose float64 checks are
# the gradcheck, the NumPy reference and the second order), the long runs in the slow one.
@settings(max_examples=3)
@given(piece_configs())
def test_random_pieces_manual_matches_autodiff_float32(c):
    _check_config(c, "float32")


@pytest.mark.slow
# Example counts sized to CI's 15 minutes on two cores (each example compiles its own programs).
@settings(max_examples=max(1, settings.default.max_examples * 2 // 5))
@given(piece_configs())
def test_random_pieces_long_run_float32(c):
    _check_config(c, "float32", long_run=True)


@pytest.mark.slow
@settings(max_examples=max(1, settings.default.max_examples // 5))
@given(piece_configs())
def test_random_pieces_long_run_float64(c):
    _check_config(c, "float64", long_run=True)


@pytest.mark.slow  # a gradcheck per example
@settings(max_examples=max(1, settings.default.max_examples // 5))
@given(piece_configs(activations=SMOOTH))  # no kinks: finite differences need smoothness
def test_random_pieces_pass_gradcheck_in_float64(c):
    with jax.enable_x64(True):
        params, x, y = make_case(c["model"], c["loss"], batch=c["batch"], seed=c["seed"],
                                 dtype="float64")  # fmt: skip
        key = jax.random.key(c["seed"]) if c["train"] else None
        report = gradcheck(c["model"], params, x, y, c["loss"], l2=c["l2"], l1=c["l1"],
                           train_key=key)  # fmt: skip
    assert report.ok, str(report)


# --- second order through apply_manual -----------------------------------------------------------


SECOND_ORDER_MODELS = {
    "layernorm": MLP((3, 5, 4, 2), "tanh", norm="layernorm"),
    "layernorm residual playground": MLP(
        (2, 4, 4, 2), "sin", norm="layernorm", residual=True, features="playground"
    ),
    "own rmsnorm fourier": MLP(
        (2, 4, 4, 1), "tanh", norm=RMSNorm(), features=FourierFeatures(n=2, scale=0.5)
    ),
}


@pytest.mark.parametrize(
    "name",
    [n if n == "layernorm" else pytest.param(n, marks=pytest.mark.slow) for n in
     SECOND_ORDER_MODELS],
)  # fmt: skip
def test_second_order_in_x_through_apply_manual(name, x64):
    model = SECOND_ORDER_MODELS[name]
    params, x, _ = make_case(model, "mse", batch=3, seed=4, dtype="float64")

    def second(apply):
        def u(xi):  # one output of one row: a PINN's field
            return apply(params, xi[None])[0, 0]

        return {
            "hessian x": jax.hessian(lambda xx: _head(apply(params, xx)))(x),
            "laplacian fwd-over-rev": jax.vmap(lambda xi: jnp.trace(jax.jacfwd(jax.grad(u))(xi)))(
                x
            ),
            "laplacian fwd-over-fwd": jax.vmap(lambda xi: jnp.trace(jax.jacfwd(jax.jacfwd(u))(xi)))(
                x
            ),
            "mixed x-params": jax.jacfwd(jax.grad(lambda p, xx: _head(apply(p, xx))), argnums=1)(
                params, x
            ),
        }

    manual, auto = jax.jit(
        lambda: (second(functools.partial(apply_manual, model)), second(model.apply)),
        compiler_options=FAST_COMPILE,
    )()
    assert manual.keys() == auto.keys()
    for k in manual:
        assert np.all(np.isfinite(np.asarray(jax.tree.leaves(manual[k])[0])))
        assert_close(manual[k], auto[k], TOLERANCES["float64"])


# --- planted bugs: a wrong derivative makes gradcheck fail on the rows it should ------------------


def _failing(report):
    """``(autodiff or finite-difference rows, forward-mode rows, input forward mode ok)``:
    the rows each comparison fails, as ``(layer, name)``."""
    grad_rows = {(r.layer, r.name) for r in report.rows if not (r.autodiff.ok and r.finite_diff.ok)}
    both = {(r.layer, r.name) for r in report.rows if not r.autodiff.ok or not r.finite_diff.ok}
    assert grad_rows == both
    # each wrong gradient row is wrong against both references
    for r in report.rows:
        assert r.autodiff.ok == r.finite_diff.ok, str(report)
    fwd_rows = {(r.layer, r.name) for r in report.rows if r.forward_mode and not r.forward_mode.ok}
    x_ok = report.input_forward_mode is None or report.input_forward_mode.ok
    return grad_rows, fwd_rows, x_ok


def _assert_rows_named(report, grad_rows, fwd_rows=frozenset(), x_ok=True):
    assert not report.ok
    assert _failing(report) == (set(grad_rows), set(fwd_rows), x_ok), str(report)
    text = str(report)
    assert "overall: MISMATCH" in text
    for layer, name in set(grad_rows) | set(fwd_rows):
        line = next(ln for ln in text.splitlines() if ln.split()[:2] == [str(layer), name])
        assert line.rstrip().endswith("NO"), line


@pytest.fixture
def fresh_programs():
    """gradcheck caches its compiled programs on the model: a patched pass needs new ones."""
    caches = (gradcheck_module._programs, gradcheck_module._jvp_program)
    for c in caches:
        c.cache_clear()
    yield
    for c in caches:
        c.cache_clear()


def _report(model, loss="mse", *, train=False, seed=3):
    with jax.enable_x64(True):
        params, x, y = make_case(model, loss, batch=4, seed=seed, dtype="float64")
        key = jax.random.key(seed) if train else None
        return gradcheck(model, params, x, y, loss, train_key=key, num_directions=2)


@dataclasses.dataclass(frozen=True)
class LayerNormNoXhatTerm(LayerNorm):
    """Backward without ``- x_hat mean(g x_hat)``."""

    def backward(self, params, a, out, saved, d_out, need_din):
        grads, _ = super().backward(params, a, out, saved, d_out, False)
        _, r = saved
        g = d_out * params.scale[None, :]
        return grads, r * (g - jnp.mean(g, axis=-1, keepdims=True)) if need_din else None


@dataclasses.dataclass(frozen=True)
class LayerNormScaleGradWithoutXhat(LayerNorm):
    """dL/dscale as sum(d), the offset's, instead of sum(d x_hat)."""

    def backward(self, params, a, out, saved, d_out, need_din):
        grads, da = super().backward(params, a, out, saved, d_out, need_din)
        return grads._replace(scale=jnp.sum(d_out, axis=0)), da


@dataclasses.dataclass(frozen=True)
class LayerNormTangentNoMean(LayerNorm):
    """Tangent without ``- mean(dz)``."""

    def tangent(self, params, a, out, saved, d_params, d_a):
        right = super().tangent(params, a, out, saved, d_params, d_a)
        if d_a is None:
            return right
        _, r = saved
        return right + params.scale[None, :] * r * jnp.mean(d_a, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class FeaturesSwappedPartials(Features):
    """Backward with ``d(x_i x_j)/dx_i`` taken as ``x_i`` (should be ``x_j``)."""

    def backward(self, params, a, out, saved, d_out, need_din):
        cols = [jnp.zeros_like(a[:, 0]) for _ in range(a.shape[1])]
        for f, (kind, idx) in enumerate(self.terms):
            i = idx[0]
            if kind == "mul":
                cols[i] = cols[i] + d_out[:, f] * a[:, i]  # wrong: x_i instead of x_j
                cols[idx[1]] = cols[idx[1]] + d_out[:, f] * a[:, idx[1]]
            else:
                (_, p), = self._partials(a)[f]  # fmt: skip
                cols[i] = cols[i] + d_out[:, f] * p
        return None, jnp.stack(cols, axis=-1)


@dataclasses.dataclass(frozen=True)
class FeaturesTangentCosSign(Features):
    """Tangent with ``d sin x = -cos x dx``."""

    def tangent(self, params, a, out, saved, d_params, d_a):
        right = super().tangent(params, a, out, saved, d_params, d_a)
        cols = [
            -right[:, f] if kind == "sin" else right[:, f] for f, (kind, _) in enumerate(self.terms)
        ]
        return jnp.stack(cols, axis=-1)


@dataclasses.dataclass(frozen=True)
class FourierSignSlip(FourierFeatures):
    """Backward with ``+ dc sin p`` (should be ``-``)."""

    def backward(self, params, a, out, saved, d_out, need_din):
        s, c = saved
        dp = d_out[:, : self.n] * c + d_out[:, self.n :] * s
        return None, dp @ self.matrix(a.shape[1], a.dtype).T


@dataclasses.dataclass(frozen=True)
class FourierTangentNoTwoPi(FourierFeatures):
    """Tangent that forgets the 2 pi of ``p = 2 pi x B``."""

    def tangent(self, params, a, out, saved, d_params, d_a):
        right = super().tangent(params, a, out, saved, d_params, d_a)
        return None if right is None else right / (2 * np.pi)


# name -> (model, grad rows that must fail, forward-mode rows that must fail, x forward ok).
# Features and Fourier features have no parameters and come first, so a parameter gradient never
# runs their backward: their backward bugs are planted in the norm slot (after a hidden affine
# layer of the width they keep), where it does; their tangent bugs in the features slot, where
# gradcheck's forward-mode row for x sees them.
FIRST = {(1, "w"), (1, "b")}
PLANTED_LAYERS = {
    "layernorm backward: no x_hat term": (
        MLP((3, 5, 2), "tanh", norm=LayerNormNoXhatTerm()), FIRST, set(), True),
    "layernorm backward: dscale": (
        MLP((3, 5, 2), "tanh", norm=LayerNormScaleGradWithoutXhat()), {(2, "scale")}, set(), True),
    "layernorm tangent: no mean": (
        MLP((3, 5, 2), "tanh", norm=LayerNormTangentNoMean()), set(), FIRST, False),
    "features backward: x_i x_j": (
        MLP((2, 3, 1), "tanh", norm=FeaturesSwappedPartials(("x2", "x1*x2", "sin(x3)"))),
        FIRST, set(), True),
    "features tangent: sin": (
        MLP((2, 4, 1), "tanh", features=FeaturesTangentCosSign(("x1", "sin(x2)", "x1*x2"))),
        set(), set(), False),
    "fourier backward: sign": (
        MLP((3, 4, 2), "tanh", norm=FourierSignSlip(n=2, scale=0.5, seed=2)), FIRST, set(), True),
    "fourier tangent: 2 pi": (
        MLP((2, 4, 1), "tanh", features=FourierTangentNoTwoPi(n=2, scale=0.5)),
        set(), set(), False),
}  # fmt: skip
FAST_PLANTED = ("layernorm backward: no x_hat term", "fourier backward: sign")


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_PLANTED else pytest.param(n, marks=pytest.mark.slow) for n in PLANTED_LAYERS],
)
def test_planted_layer_bug_fails_gradcheck(name):
    model, grad_rows, fwd_rows, x_ok = PLANTED_LAYERS[name]
    # the rows named, and only those, fail: the other rows are the control
    _assert_rows_named(_report(model), grad_rows, fwd_rows, x_ok)


def test_planted_dropout_backward_bug_fails_gradcheck(monkeypatch, fresh_programs):
    model = MLP((3, 5, 2), "tanh", dropout=0.5)

    def no_mask(self, params, a, out, saved, d_out, need_din):
        return None, d_out  # the mask forgotten: dL/da = d instead of d * m

    monkeypatch.setattr(Dropout, "backward", no_mask)
    gradcheck_module._programs.cache_clear()
    _assert_rows_named(_report(model, train=True), FIRST)


class _Identity(Layer):
    """What a walker that ignores the residual markers sees: a layer passing values through."""

    def forward(self, params, a, key):
        return a, None

    def backward(self, params, a, out, saved, d_out, need_din):
        return None, d_out

    def tangent(self, params, a, out, saved, d_params, d_a):
        return d_a


def _without_skips(model):
    """The walker's view of ``model`` with every skip marker an identity layer: the direct
    path of each residual connection is lost (the skip's forward sum is kept)."""
    from jaxmlp._core.layers import SkipBegin, SkipEnd

    layers = tuple(_Identity() if isinstance(l, (SkipBegin, SkipEnd)) else l for l in model.layers)
    return types.SimpleNamespace(
        layers=layers, param_slots=model.param_slots, num_params_entries=model.num_params_entries
    )


def _backward_dropping_skips(model, *args, **kwargs):
    return run_backward(_without_skips(model), *args, **kwargs)


def _tangent_dropping_skips(model, *args, **kwargs):
    return run_tangent(_without_skips(model), *args, **kwargs)


@pytest.mark.parametrize(
    ("where", "patch", "grad_rows", "fwd_rows", "x_ok"),
    [
        ("backward", (backprop, "run_backward", _backward_dropping_skips), FIRST, set(), True),
        pytest.param(
            "tangent",
            (tangent_module, "run_tangent", _tangent_dropping_skips),
            set(),
            FIRST,
            False,
            marks=pytest.mark.slow,
        ),
    ],
)
def test_planted_skip_bug_fails_gradcheck(
    monkeypatch, fresh_programs, where, patch, grad_rows, fwd_rows, x_ok
):
    # hidden layer 2 carries the skip: layer 1 sees the direct path, layers 2 and 3 do not
    model = MLP((3, 4, 4, 2), "tanh", residual=True)
    assert model.has_skip(1) and not model.has_skip(0)
    monkeypatch.setattr(*patch)
    gradcheck_module._programs.cache_clear()
    gradcheck_module._jvp_program.cache_clear()
    _assert_rows_named(_report(model), grad_rows, fwd_rows, x_ok)


@pytest.mark.parametrize(
    "layer",
    [
        FeaturesSwappedPartials(("x1", "x1*x2", "sin(x2)")),
        pytest.param(FourierSignSlip(n=2, scale=0.5, seed=2), marks=pytest.mark.slow),
    ],
    ids=["features", "fourier"],
)
def test_planted_feature_backward_bug_in_the_features_slot_shows_in_dx(layer, x64):
    """In the features slot a parameter gradient never runs the map's backward; dL/dx through
    apply_manual (reverse mode, as a PINN's objective uses it) does, and differs."""
    model = MLP((2, 4, 2), "tanh", features=layer)
    params, x, _ = make_case(model, "mse", batch=3, seed=1, dtype="float64")

    def grads(apply):
        return jax.grad(lambda p, xx: _head(apply(p, xx)), argnums=(0, 1))(params, x)

    (g_wrong, dx_wrong), (g, dx) = jax.jit(
        lambda: (grads(functools.partial(apply_manual, model)), grads(model.apply)),
        compiler_options=FAST_COMPILE,
    )()
    assert not np.allclose(dx_wrong, dx, rtol=1e-6, atol=1e-8)
    # and the parameter gradients do not notice
    assert_close(g_wrong, g, TOLERANCES["float64"])
    # gradcheck's input row compares the hand-written dL/dx with jax.grad and finite differences
    y = jnp.zeros((3, 2), jnp.float64)
    report = gradcheck(model, params, x, y, "mse")
    assert all(r.ok for r in report.rows) and not report.ok
    assert not report.input_autodiff.ok and not report.input_finite_diff.ok
    assert str(report).splitlines()[-2].split("|")[-1].strip() == "NO"


# --- a third implementation: layer norm and residual connections in NumPy ------------------------


REFERENCE_CASES = {
    "3-4-2 layernorm sigmoid sse": (MLP((3, 4, 2), "sigmoid", norm="layernorm"), "sse"),
    "3-4-4-4-2 layernorm residual tanh mse": (
        MLP((3, 4, 4, 4, 2), "tanh", norm="layernorm", residual=True),
        "mse",
    ),
    "3-4-4-3-2 residual gelu huber": (
        MLP((3, 4, 4, 3, 2), ("gelu", "silu", "tanh"), residual=True),
        "huber",
    ),
    "3-5-5-3 layernorm residual softmax ce l2": (
        MLP((3, 5, 5, 3), ("tanh", "elu"), "softmax", norm="layernorm", residual=True),
        "softmax_cross_entropy",
    ),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_layers_match_numpy_reference(case, x64):
    model, loss_name = REFERENCE_CASES[case]
    l2 = 0.2 if "l2" in case else 0.0
    params, x, y = make_case(model, loss_name, batch=4, seed=21, dtype="float64")
    loss = get_loss(loss_name)

    def run(params, x, y):
        trace = forward_trace(model, params, x)
        value, dz_out = loss_head(model, loss, trace, y, None)
        bw = backward(model, params, trace, dz_out, need_dx=True)
        return trace, value, bw, value_and_grad(model, loss_name, l2=l2)(params, x, y)

    trace, value, bw, (vm, gm) = jax.jit(run, compiler_options=FAST_COMPILE)(params, x, y)

    activations = list(model.activations)
    if loss.logits:
        activations[-1] = loss.fuses_with
    y_np = np.asarray(y, np.float64)
    if y_np.ndim == 1:
        y_np = np.eye(model.sizes[-1])[np.asarray(y)]
    dense = [params[s] for s in model.affine_slots()]
    norm_slots = [s for s, p in enumerate(params) if isinstance(p, Norm)]
    norms = [(np.asarray(params[s].scale), np.asarray(params[s].offset)) for s in norm_slots]
    r = ref.forward_backward_layers(
        [np.asarray(p.w).T for p in dense],
        [np.asarray(p.b) for p in dense],
        activations,
        loss_name,
        np.asarray(x),
        y_np,
        norms=norms or None,
        residual=model.residual,
        eps=LayerNorm().eps,
        l2=l2,
    )
    rtol, atol = TOLERANCES["float64"]
    tol = dict(rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(vm), r.loss, rtol=rtol)
    penalty = 0.5 * l2 * sum(np.sum(np.asarray(p.w) ** 2) for p in dense)
    np.testing.assert_allclose(float(value), r.loss - penalty, rtol=rtol)
    for l in range(model.num_layers):
        np.testing.assert_allclose(trace.z[l], r.z[l], **tol)
        np.testing.assert_allclose(trace.a[l], r.a[l], **tol)
        np.testing.assert_allclose(bw.deltas[l], r.deltas[l], **tol)
        s = model.affine_slots()[l]
        np.testing.assert_allclose(np.asarray(gm[s].w).T, r.dW[l], **tol)
        np.testing.assert_allclose(gm[s].b, r.db[l], **tol)
    if activations[-1] == model.output_activation:
        np.testing.assert_allclose(trace.a[-1], r.a[-1], **tol)
    for l, s in enumerate(norm_slots):
        np.testing.assert_allclose(gm[s].scale, r.dgamma[l], **tol)
        np.testing.assert_allclose(gm[s].offset, r.dbeta[l], **tol)
    np.testing.assert_allclose(bw.dx, r.dx, **tol)


def test_numpy_reference_layer_norm_jacobian_is_the_finite_difference_one():
    """The reference's own check: its factor-by-factor Jacobian against central differences."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 1))
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.normal(size=5)
    _, _, r, c = ref.layer_norm(z, gamma, beta, 1e-5)
    jac = ref.layer_norm_jacobian(gamma, r, c)
    eps = 1e-6
    fd = np.concatenate(
        [
            (ref.layer_norm(z + eps * e, gamma, beta, 1e-5)[0]
             - ref.layer_norm(z - eps * e, gamma, beta, 1e-5)[0]) / (2 * eps)
            for e in np.eye(5)[:, :, None]
        ],
        axis=1,
    )  # fmt: skip
    np.testing.assert_allclose(jac, fd, rtol=1e-7, atol=1e-9)


# --- dropout: keys and masks -------------------------------------------------------------------


def test_checks_run_with_the_key_reuse_checker_on():
    assert jax.config.jax_debug_key_reuse


def test_dropout_without_a_key_is_inference_equal_to_no_dropout():
    model = MLP((3, 6, 6, 2), "tanh", dropout=0.5, norm="layernorm", residual=True)
    plain = dataclasses.replace(model, dropout=0.0)
    params, x, y = make_case(model, "mse", batch=7, seed=3)

    def run(key):
        out = {}
        for name, m in (("dropout", model), ("plain", plain)):
            out[name] = {
                "apply": m.apply(params, x),
                "apply_manual": apply_manual(m, params, x),
                **{meth: value_and_grad(m, "mse", method=meth)(params, x, y)
                   for meth in ("manual", "autodiff")},
            }  # fmt: skip
        out["train"] = value_and_grad(model, "mse")(params, x, y, key=key)
        return out

    r = jax.jit(run, compiler_options=FAST_COMPILE)(jax.random.key(0))
    assert_equal(r["dropout"], r["plain"])
    again = jax.jit(lambda: model.apply(params, x), compiler_options=FAST_COMPILE)()
    assert_equal(again, r["dropout"]["apply"])  # deterministic
    # training mode draws masks: another gradient
    assert _tree_differs(r["train"][1], r["plain"]["manual"][1])


def test_dropout_same_key_same_mask_in_both_methods():
    model = MLP((3, 8, 8, 2), "tanh", dropout=0.5)
    params, x, y = make_case(model, "mse", batch=6, seed=4)

    def run(k1, k2, k3, k4, k5):
        return (
            model.apply(params, x, key=k1),
            value_and_grad(model, "mse", method="manual")(params, x, y, key=k2)[0],
            value_and_grad(model, "mse", method="autodiff")(params, x, y, key=k3)[0],
            model.apply(params, x, key=k4),
            model.apply(params, x, key=k5),
        )

    keys = [jax.random.key(11) for _ in range(4)] + [jax.random.key(12)]
    out, v_manual, v_auto, out_again, other = jax.jit(run)(*keys)
    # the same key: the same masks, so the same loss both ways (and the same outputs twice)
    assert float(v_manual) == float(v_auto)
    assert_equal(out, out_again)
    np.testing.assert_allclose(float(jnp.mean((out - y) ** 2)), float(v_manual), rtol=1e-6)
    # another key: other masks
    assert not np.array_equal(out, other)
    # and training mode differs from inference
    assert not np.array_equal(out, model.apply(params, x))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keeps_about_one_minus_p_and_keeps_the_mean(rate):
    model = MLP((4, 400, 1), "identity", dropout=rate)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (50, 4))
    run = jax.jit(forward, static_argnums=0, compiler_options=FAST_COMPILE)
    trace = run(model, params, x, jax.random.key(2))
    i = next(i for i, l in enumerate(model.layers) if isinstance(l, Dropout))
    a, out = np.asarray(trace.values[i]), np.asarray(trace.values[i + 1])
    kept = out != 0
    n = kept.size
    frac = kept.mean()
    # a binomial proportion: within 5 standard deviations of 1 - p
    assert abs(frac - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)
    # kept units are scaled by 1 / (1 - p), the others zero
    np.testing.assert_allclose(out[kept], a[kept] / (1 - rate), rtol=1e-6)
    # so the mean over the mask's randomness is the input: sum(out) / sum(a) is about 1
    ones = run(model, params, jnp.ones((50, 4)), jax.random.key(3))
    mask = np.asarray(ones.values[i + 1]) / np.asarray(ones.values[i])
    assert abs(mask.mean() - 1) < 5 * math.sqrt(rate / (1 - rate) / n)
    # each unit is 0 or 1 / (1 - p) (up to the rounding of out / a)
    np.testing.assert_allclose(mask[mask != 0], 1 / (1 - rate), rtol=1e-6)


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.cos(x[:, 1])], axis=1).astype(np.float32)
    return x, y


DROPOUT_FIT_MODEL = MLP((3, 6, 6, 2), "tanh", dropout=0.3, norm="layernorm", residual=True)


def _fit(params, x, y, key, epochs, **kw):
    return fit(DROPOUT_FIT_MODEL, params, x, y, loss="mse", key=key, epochs=epochs, batch_size=8,
               progress=False, **kw)  # fmt: skip


def test_fit_with_dropout_is_reproducible_and_continues_exactly():
    x, y = _data()
    params = DROPOUT_FIT_MODEL.init(jax.random.key(0))
    a = _fit(params, x, y, jax.random.key(1), 3)
    b = _fit(params, x, y, jax.random.key(1), 3)
    assert_equal(a.params, b.params)
    assert a.history["loss"] == b.history["loss"]
    # another key: other masks (and orders)
    c = _fit(params, x, y, jax.random.key(2), 3)
    assert _tree_differs(a.params, c.params)
    # 1 + 2 epochs through a FitResult: the same as 3 in one run, bit for bit
    first = _fit(params, x, y, jax.random.key(1), 1)
    went_on = _fit(first, x, y, jax.random.key(1), 3)
    assert_equal(went_on.params, a.params)
    assert went_on.step == a.step
    np.testing.assert_array_equal(went_on.history["loss"], a.history["loss"])


@pytest.mark.slow  # two more fits
def test_fit_with_dropout_other_keys_other_masks():
    x, y = _data()
    params = DROPOUT_FIT_MODEL.init(jax.random.key(0))
    # without shuffling the order is the same, so only the masks differ
    d = _fit(params, x, y, jax.random.key(1), 2, shuffle=False)
    e = _fit(params, x, y, jax.random.key(2), 2, shuffle=False)
    assert _tree_differs(d.params, e.params)
    assert not np.isclose(d.history["loss"][0], e.history["loss"][0], rtol=1e-7)


def test_ensemble_members_draw_different_masks():
    x, y = _data()
    model = MLP((3, 6, 2), "tanh", dropout=0.4)
    p = model.init(jax.random.key(0))
    same_start = jax.tree.map(lambda a: jnp.stack([a] * 3), p)
    r = fit_ensemble(model, x, y, num_models=3, loss="mse", key=jax.random.key(1), epochs=2,
                     batch_size=8, params=same_start, same_order=True, shuffle=False,
                     progress=False)  # fmt: skip
    members = [jax.tree.map(lambda a, k=k: a[k], r.params) for k in range(3)]
    # the same start and the same order: only the masks can tell the members apart
    for j in range(3):
        for k in range(j):
            assert _tree_differs(members[j], members[k]), (j, k)


# --- layer norm: constant rows -----------------------------------------------------------------


@jax.jit
def _constant_rows(params, x, y, z):
    model, layer = CONSTANT_ROWS_MODEL, LayerNorm()
    grads = [value_and_grad(model, "mse", method=m)(params, x, y) for m in ("manual", "autodiff")]
    ln_out, saved = layer.forward(params[1], z, None)
    _, dz = layer.backward(params[1], z, ln_out, saved, jnp.ones_like(z), True)
    return model.apply(params, x), *grads, ln_out, dz


CONSTANT_ROWS_MODEL = MLP((3, 5, 2), "tanh", norm="layernorm")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [0.0, 0.1, -3.7, 1e4])
def test_layernorm_is_finite_for_constant_rows(dtype, value):
    model = MLP((3, 5, 2), "tanh", norm="layernorm")
    with jax.enable_x64(dtype == "float64"):
        params, x, y = make_case(model, "mse", batch=3, seed=2, dtype=dtype)
        # a zero first weight: every unit of a row gets the same pre-activation, the bias
        dense = Dense(jnp.zeros_like(params[0].w), jnp.full_like(params[0].b, value))
        params = (dense, *params[1:])
        z = jnp.full((2, 5), value, dtype)
        out, (vm, gm), (va, ga), ln_out, dz = _constant_rows(params, x, y, z)
    for leaf in (out, vm, va, *jax.tree.leaves(gm), *jax.tree.leaves(ga), ln_out, dz):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # x_hat = 0: the output is the offset, whatever the value
    np.testing.assert_allclose(ln_out, np.broadcast_to(params[1].offset, (2, 5)), atol=1e-6)
    assert_close(gm, ga, TOLERANCES[dtype])


# --- residual connections: where they go -------------------------------------------------------


def test_residual_only_where_widths_match():
    model = MLP((3, 4, 4, 4, 2), residual=True)
    assert [model.has_skip(l) for l in range(3)] == [False, True, True]
    rows = model.summary().splitlines()[3:7]
    assert ["skip" in row for row in rows] == [False, True, True, False]
    from jaxmlp._core.layers import SkipBegin

    assert sum(isinstance(l, SkipBegin) for l in model.layers) == 2
    # the output layer never carries one, even when its width matches
    assert not MLP((4, 4, 4), residual=True).has_skip(1)
    # the feature map's width counts as the first layer's input width
    fourier = MLP((2, 4, 4, 1), residual=True, features=FourierFeatures(n=2))
    assert [fourier.has_skip(l) for l in range(2)] == [True, True]
    assert not any(MLP((3, 5, 4, 2), residual=True).has_skip(l) for l in range(2))
    assert MLP((3, 5, 4, 2), residual=True).plain


# --- counts, descriptions, bad arguments --------------------------------------------------------


def test_count_params():
    assert MLP((3, 4, 2)).count_params() == 26  # the lecture's
    assert MLP((3, 4, 3, 2)).count_params() == 39
    # layer norm: a scale and an offset per hidden unit
    assert MLP((3, 4, 2), norm="layernorm").count_params() == 26 + 2 * 4
    assert MLP((3, 4, 3, 2), norm="layernorm").count_params() == 39 + 2 * 4 + 2 * 3
    # dropout and residual connections add nothing
    assert (
        MLP((3, 4, 4, 2), dropout=0.5, residual=True).count_params()
        == MLP((3, 4, 4, 2)).count_params()
    )
    # features widen the first layer's input
    assert MLP((2, 5, 1), features="playground").count_params() == (7 + 1) * 5 + (5 + 1)
    assert MLP((2, 5, 1), features=FourierFeatures(n=3)).count_params() == (6 + 1) * 5 + 6
    assert MLP((3, 4, 2), norm=RMSNorm()).count_params() == 26 + 4
    assert MLP((3, 4, 2), norm=UnitScale()).count_params() == 26 + 4
    for m in (MLP((3, 4, 3, 2), norm="layernorm"), MLP((2, 5, 1), features="playground")):
        assert m.count_params() == sum(p.size for p in jax.tree.leaves(m.init(jax.random.key(0))))
        assert m.summary().splitlines()[-1].split()[-1] == str(m.count_params())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"norm": "batchnorm"}, ValueError, "norm"),
        ({"norm": 3}, ValueError, "norm"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"dropout": True}, TypeError, "dropout"),
        ({"dropout": "0.5"}, TypeError, "dropout"),
        ({"residual": "yes"}, TypeError, "residual"),
        ({"residual": 1}, TypeError, "residual"),
        ({"features": ("x3",)}, ValueError, "features"),
        ({"features": ("x1", "x1^3")}, ValueError, "features"),
        ({"features": ("cos(x1)",)}, ValueError, "features"),
        ({"features": ("x0",)}, ValueError, "features"),
        ({"features": ("x1", "x1")}, ValueError, "features"),
        ({"features": "circle"}, ValueError, "features"),
        ({"features": ()}, ValueError, "features"),
        ({"features": 3}, TypeError, "features"),
        ({"norm": Features(("x1", "x2"))}, ValueError, "norm"),  # 4 units to 2
        ({"features": UnitScale()}, ValueError, "features"),  # a feature map with parameters
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        m = MLP((2, 4, 1), **kwargs)
        m.param_slots  # noqa: B018  # the widths are checked when the stack is built


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be a positive int"),
        ({"n": -2}, "n must be a positive int"),
        ({"n": 2.5}, "n must be a positive int"),
        ({"n": 4, "scale": 0.0}, "scale must be > 0"),
    ],
)
def test_bad_fourier_features(kwargs, match):
    with pytest.raises(ValueError, match=f"features: FourierFeatures {match}"):
        FourierFeatures(**kwargs)


PER_EXAMPLE_MODELS = {
    "layernorm": (MLP((3, 5, 4, 2), "tanh", norm="layernorm"), "mse"),
    "layernorm residual features ce": (
        MLP((2, 5, 5, 3), "gelu", norm="layernorm", residual=True, features="playground"),
        "softmax_cross_entropy",
    ),
}


@pytest.mark.parametrize(
    "name",
    [
        n if n == "layernorm" else pytest.param(n, marks=pytest.mark.slow)
        for n in PER_EXAMPLE_MODELS
    ],
)
def test_per_example_grads_of_a_norm_model_are_batches_of_one(name):
    model, loss = PER_EXAMPLE_MODELS[name]
    params, x, y = make_case(model, loss, batch=3, seed=6)
    vg = value_and_grad(model, loss, l2=0.1, l1=0.05)

    def run(params, x, y):
        per = per_example_grads(model, loss, l2=0.1, l1=0.05)(params, x, y)
        rows = [vg(params, x[i : i + 1], y[i : i + 1])[1] for i in range(x.shape[0])]
        return per, jax.tree.map(lambda *g: jnp.stack(g), *rows)

    per, rows = jax.jit(run, compiler_options=FAST_COMPILE)(params, x, y)
    assert_close(per, rows, TOLERANCES["float32"])
    # a layer norm over the units mixes them: not the batch gradient's outer products per row
    _, batch = vg(params, x, y)
    assert_close(jax.tree.map(lambda g: g.mean(0), per), batch, TOLERANCES["float32"])


# Each piece alone, and two combinations. Not "layernorm dropout residual" at its point: there
# the float32 gradient itself moves by 3.3% of its scale when only x and the parameters are
# rounded to bfloat16 (a softmax cross entropy through three normalised, residual layers is that
# sensitive), so the comparison would measure the conditioning, not the mixed-precision path; for
# the pieces below that sensitivity is 0.25-0.85%, and the bf16 network's error is of that size.
BF16_PIECES = ["layernorm", "dropout", "residual", "playground", "named features", "fourier",
               "sin siren", "l1 l2", "registered activation", "own layer: rmsnorm",
               "own layer: unit scale", "everything, playground",
               "everything, own norm and fourier"]  # fmt: skip


@pytest.mark.parametrize(
    "piece",
    [p if p == "everything, own norm and fourier" else pytest.param(p, marks=pytest.mark.slow)
     for p in BF16_PIECES],
)  # fmt: skip
def test_bfloat16_compute_for_each_piece(piece):
    model, loss, opts = PIECES[piece]
    mixed = dataclasses.replace(model, compute_dtype="bfloat16")
    params, x, y = make_case(model, loss, batch=8, seed=12)
    l1, l2 = opts.get("l1", 0.0), opts.get("l2", 0.0)
    train = opts.get("train", False)

    def run(params, x, y, k1, k2, k3):
        keys = (k1, k2, k3) if train else (None, None, None)
        return (
            mixed.apply(params, x),
            model.apply(params, x),
            value_and_grad(mixed, loss, method="manual", l1=l1, l2=l2)(params, x, y, key=keys[0]),
            value_and_grad(mixed, loss, method="autodiff", l1=l1, l2=l2)(params, x, y, key=keys[1]),
            value_and_grad(model, loss, method="manual", l1=l1, l2=l2)(params, x, y, key=keys[2]),
        )  # fmt: skip

    with jax.default_matmul_precision("highest"):
        keys = [jax.random.key(5) for _ in range(3)]
        out16, out32, (v16, g16), (va16, ga16), (v32, g32) = jax.jit(
            run, compiler_options=FAST_COMPILE
        )(params, x, y, *keys)
    assert out16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    # both methods round the same bf16 inputs, in different orders
    np.testing.assert_allclose(float(v16), float(va16), rtol=TOLERANCES["bfloat16"][0])
    assert_close(g16, ga16, TOLERANCES["bfloat16"])
    # and it is the float32 network up to bf16 rounding
    assert_close(out16, out32, BF16_VS_FLOAT32)
    np.testing.assert_allclose(float(v16), float(v32), rtol=BF16_VS_FLOAT32[0])
    assert_close(g16, g32, BF16_VS_FLOAT32)


PLAIN_KEYS = {"sizes", "activation", "output_activation", "initializer", "param_dtype",
              "compute_dtype"}  # fmt: skip


@pytest.mark.parametrize("piece", [p for p in PIECES if "own" not in p])
def test_description_round_trip(piece):
    import json

    model = PIECES[piece][0]
    d = model.to_dict()
    back = MLP.from_dict(json.loads(json.dumps(d)))
    assert back == model and hash(back) == hash(model)
    assert back.layers == model.layers
    assert set(d) - PLAIN_KEYS <= {"norm", "dropout", "residual", "features"}


def test_a_plain_model_description_has_no_new_keys():
    d = MLP((3, 4, 3, 2), ("tanh", "relu"), "softmax").to_dict()
    assert set(d) == PLAIN_KEYS
    # and the defaults of the new pieces are written by no model that does not use them
    assert "norm" not in MLP((3, 4, 2), dropout=0.5).to_dict()
    assert set(MLP((3, 4, 2), dropout=0.5).to_dict()) == PLAIN_KEYS | {"dropout"}


def test_a_layer_of_ones_own_is_named_and_refused_by_from_dict():
    model = PIECES["own layer: rmsnorm"][0]
    d = model.to_dict()
    assert d["norm"] == "layer:test_layers.RMSNorm"
    with pytest.raises(ValueError, match=r"norm: the model had the layer test_layers\.RMSNorm"):
        MLP.from_dict(d)
