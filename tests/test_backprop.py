"""The manual backward pass against jax.grad / jax.vjp, finite differences and a NumPy reference.

Every gradient comparison uses ``jaxmlp._core.gradcheck.TOLERANCES`` (one dtype-keyed table):
``|manual - autodiff| <= atol * scale + rtol * |autodiff|`` with ``scale`` the largest
``|autodiff|`` entry over the whole gradient. Parameters are drawn with non-zero biases
(N(0, 0.5)) and weights scaled by 1.3 so that no bug can hide behind zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import reference_numpy as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmlp import MLP, Dense, apply_manual, per_example_grad_norms, per_example_grads
from jaxmlp._core import manual_apply
from jaxmlp._core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, get_activation
from jaxmlp._core.backprop import (
    backward,
    forward,
    forward_trace,
    loss_fn,
    loss_head,
    value_and_grad,
)
from jaxmlp._core.gradcheck import TOLERANCES
from jaxmlp._core.losses import LOSSES, get_loss

# Most programs here are compiled once and run once: skipping LLVM's optimisations halves the
# compile time and leaves the arithmetic (what the comparisons are about) as it is.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Mixed precision (bf16 matmul inputs) against the full float32 gradient: (rtol, atol x scale).
BF16_VS_FLOAT32 = (5e-2, 2e-2)

REGRESSION = ("sse", "mse", "half_mse", "mae", "huber")
# The losses each output activation pairs with (the cross entropies read the logits).
COMPATIBLE = {
    "identity": LOSSES,
    "sigmoid": (*REGRESSION, "sigmoid_binary_cross_entropy"),
    "softmax": (*REGRESSION, "softmax_cross_entropy"),
}


# --- helpers -----------------------------------------------------------------------------------


def odd_params(model: MLP, rng: np.random.Generator, dtype) -> tuple[Dense, ...]:
    """Weights 1.3 x a LeCun draw, biases N(0, 0.5): nothing is zero, nothing is symmetric."""
    return tuple(
        Dense(
            jnp.asarray(rng.normal(size=(i, o)) * 1.3 / np.sqrt(i), dtype),
            jnp.asarray(rng.normal(0.0, 0.5, o), dtype),
        )
        for i, o in model.layer_shapes()
    )


def make_targets(loss: str, rng, batch: int, k: int, dtype, kind: str = "default"):
    """Targets the loss accepts; ``kind`` picks labels/probabilities or {0,1}/[0,1]."""
    if loss == "softmax_cross_entropy":
        if kind == "probs":
            return jnp.asarray(rng.dirichlet(np.ones(k), batch), dtype)
        return jnp.asarray(rng.integers(0, k, batch))
    if loss == "sigmoid_binary_cross_entropy":
        if kind == "soft":
            return jnp.asarray(rng.uniform(0, 1, (batch, k)), dtype)
        return jnp.asarray(rng.integers(0, 2, (batch, k)), dtype)
    return jnp.asarray(rng.normal(size=(batch, k)), dtype)


def make_weights(rng, batch: int, dtype):
    """Positive weights with one row masked out (when there is more than one row)."""
    w = rng.uniform(0.2, 2.0, batch)
    if batch > 1:
        w[rng.integers(0, batch)] = 0.0
    return jnp.asarray(w, dtype)


def make_case(model, loss, *, batch=5, seed=0, dtype="float32", kind="default", weighted=False):
    """params, x, y, sample_weight for a gradient comparison (call inside x64 for float64)."""
    rng = np.random.default_rng(seed)
    params = odd_params(model, rng, dtype)
    x = jnp.asarray(rng.normal(size=(batch, model.sizes[0])), dtype)
    y = make_targets(loss, rng, batch, model.sizes[-1], dtype, kind)
    sw = make_weights(rng, batch, dtype) if weighted else None
    return params, x, y, sw


def assert_grads_close(got, want, tol):
    """``|got - want| <= atol * scale + rtol * |want|`` leaf by leaf, same structure and dtypes."""
    rtol, atol = tol
    assert jax.tree.structure(got) == jax.tree.structure(want)
    want_leaves = [np.asarray(w, np.float64) for w in jax.tree.leaves(want)]
    scale = max(float(np.abs(w).max()) for w in want_leaves)
    for g, w, w_orig in zip(jax.tree.leaves(got), want_leaves, jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w_orig.dtype
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol * scale)


@functools.cache
def both_methods(model: MLP, loss: str, l2: float = 0.0):
    """One compiled program returning the manual and the autodiff ``(value, grads)``."""
    manual = value_and_grad(model, loss, method="manual", l2=l2)
    autodiff = value_and_grad(model, loss, method="autodiff", l2=l2)
    both = lambda p, x, y, sw: (manual(p, x, y, sw), autodiff(p, x, y, sw))  # noqa: E731
    return jax.jit(both, compiler_options=FAST_COMPILE)


def compare_methods(model, loss, params, x, y, sw=None, *, l2=0.0, tol=None):
    dtype = jnp.dtype(params[0].w.dtype).name
    (vm, gm), (va, ga) = both_methods(model, loss, l2)(params, x, y, sw)
    tol = tol or TOLERANCES[dtype]
    assert vm.dtype == va.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(float(vm), float(va), rtol=tol[0])
    assert_grads_close(gm, ga, tol)
    return gm, ga


# --- one layer at a time: backward vs jax.vjp ---------------------------------------------------


def _layer_models():
    """A model per activation: the output ones as a single layer, the hidden ones as layer 1."""
    models = {f"out-{o}": MLP((4, 3), output_activation=o) for o in OUTPUT_ACTIVATIONS}
    models |= {f"hidden-{h}": MLP((4, 5, 3), activation=h) for h in HIDDEN_ACTIVATIONS}
    return models


LAYER_MODELS = _layer_models()


def _forward_with_offsets(model, params, x, offsets):
    """The forward pass with ``offsets[l]`` added to ``z[l]``: d out / d offsets are the deltas."""
    a = x
    for l, (p, name) in enumerate(zip(params, model.activations, strict=True)):
        z = a @ p.w + p.b[None, :] + offsets[l]
        a = get_activation(name, output=l == model.num_layers - 1).fn(z)
    return a


@functools.cache
def _layer_results(dtype: str):
    """Manual backward and jax.vjp for every layer model under a random output cotangent."""

    def run(cases):
        out = {}
        for name, (params, x, g) in cases.items():
            model = LAYER_MODELS[name]
            trace = forward(model, params, x)
            out_act = get_activation(model.output_activation, output=True)
            dz_out = out_act.vjp(trace.z[-1], trace.a[-1], g)
            manual = backward(model, params, trace, dz_out, need_dx=True)
            _, vjp = jax.vjp(lambda p, xx, m=model: forward(m, p, xx).a[-1], params, x)
            zeros = tuple(jnp.zeros_like(z) for z in trace.z)
            _, vjp_dz = jax.vjp(
                lambda o, m=model, p=params, xx=x: _forward_with_offsets(m, p, xx, o), zeros
            )
            out[name] = {"manual": manual, "autodiff": vjp(g), "deltas": vjp_dz(g)[0]}
        return out

    rng = np.random.default_rng(3)
    with jax.enable_x64(dtype == "float64"):
        cases = {
            name: (
                odd_params(m, rng, dtype),
                jnp.asarray(rng.normal(size=(6, 4)), dtype),
                jnp.asarray(rng.normal(size=(6, 3)), dtype),
            )
            for name, m in LAYER_MODELS.items()
        }
        return jax.tree.map(np.asarray, jax.jit(run, compiler_options=FAST_COMPILE)(cases))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(LAYER_MODELS))
def test_layer_backward_matches_jax_vjp(name, dtype):
    r = _layer_results(dtype)[name]
    manual, (g_params, g_x) = r["manual"], r["autodiff"]
    tol = TOLERANCES[dtype]
    assert_grads_close(manual.grads, g_params, tol)
    assert_grads_close(manual.dx, g_x, tol)
    assert_grads_close(manual.deltas, r["deltas"], tol)


# --- the whole network: manual vs autodiff over random architectures --------------------------


@st.composite
def configs(draw):
    # tanh and softplus outputs have their own random architectures in test_activations.py
    out_act = draw(st.sampled_from(tuple(COMPATIBLE)))
    loss = draw(st.sampled_from(COMPATIBLE[out_act]))
    n_hidden = draw(st.integers(0, 3))
    k_min = 2 if loss == "softmax_cross_entropy" or out_act == "softmax" else 1
    sizes = (
        draw(st.integers(1, 5)),
        *draw(st.lists(st.integers(1, 6), min_size=n_hidden, max_size=n_hidden)),
        draw(st.integers(k_min, 4)),
    )
    hidden = tuple(draw(st.sampled_from(HIDDEN_ACTIVATIONS)) for _ in range(n_hidden))
    return {
        "model": MLP(sizes, activation=hidden, output_activation=out_act),
        "loss": loss,
        "l2": draw(st.sampled_from([0.0, 0.1])),
        "batch": draw(st.integers(1, 6)),
        "kind": draw(st.sampled_from(["default", "probs", "soft"])),
        "weighted": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def _check_config(c, dtype):
    params, x, y, sw = make_case(
        c["model"],
        c["loss"],
        batch=c["batch"],
        seed=c["seed"],
        dtype=dtype,
        kind=c["kind"],
        weighted=c["weighted"],
    )
    gm, _ = compare_methods(c["model"], c["loss"], params, x, y, sw, l2=c["l2"])
    for g, p in zip(gm, params, strict=True):
        assert g.w.dtype == p.w.dtype == jnp.dtype(dtype)


# Each example compiles a program: a share of the profile's budget (25 -> 20 and 15).
@pytest.mark.slow  # the longest hypothesis runs; make test-fast keeps the named pairings
@settings(max_examples=max(1, settings.default.max_examples * 4 // 5))
@given(configs())
def test_manual_matches_autodiff_float32(c):
    _check_config(c, "float32")


@pytest.mark.slow  # the longest hypothesis runs; make test-fast keeps the named pairings
@settings(max_examples=max(1, settings.default.max_examples * 3 // 5))
@given(configs())
def test_manual_matches_autodiff_float64(c):
    with jax.enable_x64(True):
        _check_config(c, "float64")


# Hand-picked pairings, each a path through loss_head the random search may visit rarely.
NAMED_CASES = {
    "softmax-mse (true Jacobian)": (MLP((4, 5, 3), "tanh", "softmax"), "mse", {}),
    "softmax-ce labels": (MLP((4, 5, 3), "relu", "softmax"), "softmax_cross_entropy", {}),
    "softmax-ce probs": (
        MLP((4, 5, 3), "gelu", "softmax"),
        "softmax_cross_entropy",
        {"kind": "probs"},
    ),
    "identity-ce (logits)": (MLP((4, 5, 3), "silu"), "softmax_cross_entropy", {}),
    "sigmoid-bce fused": (
        MLP((4, 5, 3), "elu", "sigmoid"),
        "sigmoid_binary_cross_entropy",
        {},
    ),
    "identity-bce soft": (
        MLP((4, 5, 3), "softplus"),
        "sigmoid_binary_cross_entropy",
        {"kind": "soft"},
    ),
    "sigmoid-mse": (MLP((4, 5, 3), "leaky_relu", "sigmoid"), "mse", {}),
    "tanh-huber weighted": (MLP((4, 5, 3), "relu", "tanh"), "huber", {"weighted": True}),
    "softplus-mse l2": (MLP((4, 5, 3), "silu", "softplus"), "mse", {"l2": 0.1}),
    "sse weighted": (MLP((4, 5, 5, 3), ("tanh", "gelu_tanh")), "sse", {"weighted": True}),
    "huber weighted l2": (MLP((4, 6, 3), "relu"), "huber", {"weighted": True, "l2": 0.3}),
    "mae l2": (MLP((4, 6, 2), "sigmoid"), "mae", {"l2": 0.05}),
    "heaviside": (MLP((4, 5, 3), "heaviside"), "half_mse", {}),
    "deep per-layer": (
        MLP((4, 5, 4, 5, 4, 3), ("relu", "tanh", "silu", "identity"), "softmax"),
        "softmax_cross_entropy",
        {"weighted": True, "l2": 0.01},
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(NAMED_CASES))
def test_named_pairings(case, dtype):
    model, loss, opts = NAMED_CASES[case]
    opts = dict(opts)
    l2 = opts.pop("l2", 0.0)
    with jax.enable_x64(dtype == "float64"):
        params, x, y, sw = make_case(model, loss, batch=7, seed=11, dtype=dtype, **opts)
        gm, _ = compare_methods(model, loss, params, x, y, sw, l2=l2)
    if case == "heaviside":
        # the step's derivative is 0: only the output layer learns
        np.testing.assert_array_equal(gm[0].w, 0.0)
        np.testing.assert_array_equal(gm[0].b, 0.0)
        assert np.abs(np.asarray(gm[1].w)).max() > 0


def test_l2_adds_l2_times_w_to_weights_only():
    model = MLP((4, 5, 3), "tanh")
    params, x, y, _ = make_case(model, "mse", seed=2)
    f0 = jax.jit(value_and_grad(model, "mse"))
    f1 = jax.jit(value_and_grad(model, "mse", l2=0.5))
    (v0, g0), (v1, g1) = f0(params, x, y), f1(params, x, y)
    penalty = 0.25 * sum(float(jnp.sum(p.w**2)) for p in params)
    assert float(v1) == pytest.approx(float(v0) + penalty, rel=1e-6)
    for a, b, p in zip(g0, g1, params, strict=True):
        np.testing.assert_allclose(b.w, a.w + 0.5 * p.w, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(b.b, a.b)


def test_zero_weight_rows_do_not_change_the_gradient():
    model = MLP((4, 5, 3), "tanh", "softmax")
    loss = "softmax_cross_entropy"
    params, x, y, _ = make_case(model, loss, batch=6, seed=5)
    w = jnp.asarray([1.0, 0.0, 2.0, 0.5, 0.0, 1.5])
    keep = np.asarray(w) > 0
    (vm, gm), _ = both_methods(model, loss)(params, x, y, w)
    (vk, gk), _ = both_methods(model, loss)(params, x[keep], y[keep], w[keep])
    np.testing.assert_allclose(vm, vk, rtol=1e-6)
    assert_grads_close(gm, gk, TOLERANCES["float32"])


def test_relu_at_exact_zero_agrees_with_autodiff():
    # Zero biases (as from init) and an all-zero input row put every pre-activation of that row
    # at the kink; positive weights and a positive row keep the other row's units active.
    model = MLP((3, 4, 4, 2), "relu")
    rng = np.random.default_rng(0)
    params = tuple(
        Dense(jnp.asarray(np.abs(rng.normal(size=s)), jnp.float32), jnp.zeros(s[1]))
        for s in model.layer_shapes()
    )
    x = jnp.asarray([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    y = jnp.ones((2, 2))
    gm, _ = compare_methods(model, "mse", params, x, y)
    assert np.abs(np.asarray(gm[0].w)).max() > 0


@pytest.mark.parametrize(
    ("loss", "output_activation"),
    [
        ("softmax_cross_entropy", "sigmoid"),
        ("sigmoid_binary_cross_entropy", "softmax"),
    ],
)
def test_invalid_pairings_are_rejected(loss, output_activation):
    model = MLP((4, 5, 3), "tanh", output_activation)
    for build in (
        functools.partial(value_and_grad, method="manual"),
        functools.partial(value_and_grad, method="autodiff"),
        loss_fn,
        per_example_grads,
        per_example_grad_norms,
    ):
        with pytest.raises(ValueError, match=f"loss: '{loss}'.*{output_activation}"):
            build(model, loss)


# --- apply_manual in reverse mode: finite differences and agreement with model.apply -----------


APPLY_MODELS = {
    "tanh-softmax": MLP((3, 4, 3, 2), ("tanh", "gelu"), "softmax"),
    "relu-sigmoid": MLP((3, 5, 2), "relu", "sigmoid"),
    "elu-identity": MLP((2, 4, 3), "elu"),
}


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", list(APPLY_MODELS))
def test_apply_manual_passes_finite_differences(name, order, x64):
    model = APPLY_MODELS[name]
    params, x, _, _ = make_case(model, "mse", batch=4, seed=9, dtype="float64")
    # jit: the finite differences evaluate the function many times
    f = jax.jit(lambda p, xx: apply_manual(model, p, xx))
    # both modes (the tangent pass and the backward pass); order 2 also their derivatives
    jax.test_util.check_grads(f, (params, x), order=order, modes=["fwd", "rev"])


@functools.cache
def _grads_through_apply(model):
    def scalar(out):
        # an arbitrary scalar head so that every output entry gets its own cotangent
        return jnp.sum(jnp.sin(3.0 * out) * jnp.arange(1, out.shape[-1] + 1)[None, :])

    def both(params, x):
        manual = jax.grad(lambda p, xx: scalar(apply_manual(model, p, xx)), (0, 1))(params, x)
        auto = jax.grad(lambda p, xx: scalar(model.apply(p, xx)), (0, 1))(params, x)
        return apply_manual(model, params, x), model.apply(params, x), manual, auto

    return jax.jit(both, compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("name", list(APPLY_MODELS))
def test_grad_through_apply_manual_equals_grad_through_apply(name):
    model = APPLY_MODELS[name]
    params, x, _, _ = make_case(model, "mse", batch=5, seed=4)
    out_m, out_a, g_manual, g_auto = _grads_through_apply(model)(params, x)
    np.testing.assert_array_equal(out_m, out_a)
    assert_grads_close(g_manual, g_auto, TOLERANCES["float32"])


def test_apply_manual_is_one_primitive_and_keeps_single_examples():
    model = APPLY_MODELS["tanh-softmax"]
    params, x, _, _ = make_case(model, "mse", batch=3, seed=1)
    jaxpr = str(jax.make_jaxpr(lambda p: apply_manual(model, p, x))(params))
    assert "call_hi_primitive" in jaxpr and "ManualApply" in jaxpr
    single, batch = jax.jit(lambda p: (apply_manual(model, p, x[1]), model.apply(p, x)))(params)
    assert single.shape == (2,)
    np.testing.assert_allclose(single, batch[1], rtol=1e-6)
    with pytest.raises(ValueError, match="x"):
        apply_manual(model, params, jnp.ones((3, 5)))


# --- apply_manual in forward mode: the hand-written tangent pass ---------------------------------


def _tree_vdot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _first_order(apply, params, x, dparams, dx):
    """Every forward-mode way in, and the reverse-mode ones, through ``apply(params, x)``."""
    return {
        "jvp": jax.jvp(apply, (params, x), (dparams, dx)),
        "jvp x": jax.jvp(lambda xx: apply(params, xx), (x,), (dx,))[1],
        "jvp params": jax.jvp(lambda p: apply(p, x), (params,), (dparams,))[1],
        "linearize": jax.linearize(apply, params, x)[1](dparams, dx),
        "jacfwd x": jax.jacfwd(apply, argnums=1)(params, x),
        "jacfwd params": jax.jacfwd(apply)(params, x),
        "jacrev x": jax.jacrev(apply, argnums=1)(params, x),
        "vjp": jax.vjp(apply, params, x)[1](jnp.sin(apply(params, x))),
    }


@functools.cache
def _first_order_both(model: MLP):
    """One program: :func:`_first_order` through ``apply_manual`` and through ``model.apply``."""

    def both(*args):
        manual = _first_order(functools.partial(apply_manual, model), *args)
        return manual, _first_order(model.apply, *args)

    return jax.jit(both, compiler_options=FAST_COMPILE)


def _tangent_case(model, batch, seed, dtype="float64"):
    """params, x and a tangent (dparams, dx), all non-zero and odd."""
    params, x, _, _ = make_case(model, "mse", batch=batch, seed=seed, dtype=dtype)
    dparams, dx, _, _ = make_case(model, "mse", batch=batch, seed=seed + 1, dtype=dtype)
    return params, x, dparams, dx


def _assert_modes_close(manual, auto, tol):
    assert manual.keys() == auto.keys()
    for key in manual:
        assert_grads_close(manual[key], auto[key], tol)


@st.composite
def architectures(draw):
    out_act = draw(st.sampled_from(OUTPUT_ACTIVATIONS))
    n_hidden = draw(st.integers(0, 3))
    sizes = (
        draw(st.integers(1, 4)),
        *draw(st.lists(st.integers(1, 5), min_size=n_hidden, max_size=n_hidden)),
        draw(st.integers(2 if out_act == "softmax" else 1, 3)),
    )
    hidden = tuple(draw(st.sampled_from(HIDDEN_ACTIVATIONS)) for _ in range(n_hidden))
    model = MLP(sizes, activation=hidden, output_activation=out_act)
    return model, draw(st.integers(1, 4)), draw(st.integers(0, 2**16))


# Each example compiles one program: a share of the profile's budget (25 -> 10).
@pytest.mark.slow  # a long hypothesis run; make test-fast keeps every activation's named case
@settings(max_examples=max(1, settings.default.max_examples * 2 // 5))
@given(architectures())
def test_forward_mode_matches_jax_jvp_of_apply(arch):
    model, batch, seed = arch
    with jax.enable_x64(True):
        manual, auto = _first_order_both(model)(*_tangent_case(model, batch, seed))
        _assert_modes_close(manual, auto, TOLERANCES["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(LAYER_MODELS))
def test_forward_mode_through_every_activation(name, dtype):
    model = LAYER_MODELS[name]
    with jax.enable_x64(dtype == "float64"):
        manual, auto = _first_order_both(model)(*_tangent_case(model, 3, 5, dtype))
        _assert_modes_close(manual, auto, TOLERANCES[dtype])


def test_forward_mode_with_bfloat16_compute_matches_the_float32_jvp():
    mixed = MLP((4, 6, 5, 3), ("gelu", "tanh"), "softmax", compute_dtype="bfloat16")
    full = MLP((4, 6, 5, 3), ("gelu", "tanh"), "softmax")
    params, x, dparams, dx = _tangent_case(mixed, 5, 7, "float32")
    got = jax.jvp(functools.partial(apply_manual, mixed), (params, x), (dparams, dx))
    want = jax.jvp(full.apply, (params, x), (dparams, dx))
    assert got[1].dtype == jnp.float32
    assert_grads_close(got, want, BF16_VS_FLOAT32)


def _second_order(apply, params, x, dparams, dx):
    """Second derivatives through ``apply``: Hessians, Hessian-vector products in three
    orders, input Laplacians (forward-over-reverse and forward-over-forward) and a PINN's
    parameter gradient of a Laplacian."""

    def loss(p, xx):
        out = apply(p, xx)
        return jnp.sum(jnp.sin(3.0 * out) * jnp.arange(1, out.shape[-1] + 1)[None, :])

    def u(p, xi):
        # one output of one input row: the field a PINN differentiates twice in x
        return apply(p, xi[None])[0, 0]

    def laplacians(p, how):
        hess = how(how(u, argnums=1), argnums=1)
        return jax.vmap(lambda xi: jnp.trace(hess(p, xi)))(x)

    grad = jax.grad(loss)
    return {
        "hessian params": jax.hessian(loss)(params, x),
        "hessian x": jax.hessian(loss, argnums=1)(params, x),
        "hvp fwd-over-rev": jax.jvp(lambda p: grad(p, x), (params,), (dparams,))[1],
        "hvp rev-over-fwd": jax.grad(lambda p: jax.jvp(lambda q: loss(q, x), (p,), (dparams,))[1])(
            params
        ),
        "hvp rev-over-rev": jax.grad(lambda p: _tree_vdot(grad(p, x), dparams))(params),
        "mixed x-params": jax.jvp(lambda xx: grad(params, xx), (x,), (dx,))[1],
        "laplacian fwd-over-rev": laplacians(params, jax.jacrev),
        "laplacian fwd-over-fwd": laplacians(params, jax.jacfwd),
        "pinn grad (rev)": jax.grad(lambda p: jnp.sum(laplacians(p, jax.jacrev) ** 2))(params),
        "pinn grad (fwd)": jax.grad(lambda p: jnp.sum(laplacians(p, jax.jacfwd) ** 2))(params),
    }


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "tanh-softmax" else n for n in APPLY_MODELS],
)
def test_second_order_through_apply_manual_matches_apply(name, x64):
    model = APPLY_MODELS[name]

    def both(*args):
        manual = _second_order(functools.partial(apply_manual, model), *args)
        return manual, _second_order(model.apply, *args)

    manual, auto = jax.jit(both, compiler_options=FAST_COMPILE)(*_tangent_case(model, 3, 11))
    _assert_modes_close(manual, auto, TOLERANCES["float64"])


@pytest.mark.slow  # many compiles; the per-mode and second-order checks stay fast
def test_vmap_over_params_and_x_in_both_modes(x64):
    # ensembles map the parameters, per-point derivatives map x; both nest with jvp and grad
    model = APPLY_MODELS["tanh-softmax"]
    params, x, dparams, dx = _tangent_case(model, 4, 13)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a, -a]), params)
    xs = jnp.stack([x, 2 * x])

    def modes(apply):
        per_member = jax.vmap(lambda p: _first_order(apply, p, x, dparams, dx))(stacked)
        per_x = jax.vmap(lambda xx: _first_order(apply, params, xx, dparams, dx))(xs)
        return per_member, per_x

    manual = jax.jit(lambda: modes(functools.partial(apply_manual, model)))()
    auto = jax.jit(lambda: modes(model.apply))()
    for m, a in zip(manual, auto, strict=True):
        _assert_modes_close(m, a, TOLERANCES["float64"])


# --- which pass runs: a planted bug shows up in its own mode only ---------------------------------


def _routes(model, params, x, dparams, dx):
    """Each derivative of ``apply_manual``, eagerly (so a patched pass is traced afresh)."""
    apply = functools.partial(apply_manual, model)
    ct = jnp.cos(model.apply(params, x))

    def loss(p):
        return _tree_vdot(apply(p, x), ct)

    return {
        "forward: jvp": jax.jvp(apply, (params, x), (dparams, dx))[1],
        "forward: jacfwd": jax.jacfwd(apply)(params, x),
        "forward: linearize": jax.linearize(apply, params, x)[1](dparams, dx),
        "reverse: grad": jax.grad(loss)(params),
        "reverse: vjp": jax.vjp(apply, params, x)[1](ct),
        "reverse: jacrev": jax.jacrev(apply)(params, x),
        # reverse mode by transposing the forward mode: the Tangent primitive's transpose rule
        "reverse: checkpoint grad": jax.grad(jax.checkpoint(loss))(params),
        "reverse: linear_transpose": jax.linear_transpose(
            jax.linearize(lambda p: apply(p, x), params)[1], params
        )(ct),
    }


def _double_first_bias_gradient(good):
    """The backward pass with the first layer's bias gradient doubled."""

    def backward(*args, **kwargs):
        r = good(*args, **kwargs)
        return r._replace(grads=(r.grads[0]._replace(b=2 * r.grads[0].b), *r.grads[1:]))

    return backward


def _double_first_bias_tangent(good):
    """The tangent pass with the first layer's bias tangent doubled."""

    def tangent(model, params, trace, dparams, dx):
        if dparams is not None and dparams[0] is not None and dparams[0].b is not None:
            dparams = (dparams[0]._replace(b=2 * dparams[0].b), *dparams[1:])
        return good(model, params, trace, dparams, dx)

    return tangent


PLANTED = {"backward": _double_first_bias_gradient, "tangent": _double_first_bias_tangent}


@pytest.mark.parametrize("broken", list(PLANTED))
def test_each_mode_runs_its_hand_written_pass(monkeypatch, broken, x64):
    model = MLP((3, 4, 2), "tanh")
    params, x, dparams, dx = _tangent_case(model, 3, 17)
    right = _routes(model, params, x, dparams, dx)
    auto = _first_order(model.apply, params, x, dparams, dx)
    assert_grads_close(right["forward: jvp"], auto["jvp"][1], TOLERANCES["float64"])
    assert_grads_close(
        right["reverse: jacrev"], jax.jacrev(model.apply)(params, x), TOLERANCES["float64"]
    )

    # the name the primitives call it by
    monkeypatch.setattr(manual_apply, broken, PLANTED[broken](getattr(manual_apply, broken)))
    wrong = _routes(model, params, x, dparams, dx)
    for key in right:
        changed = key.startswith("reverse" if broken == "backward" else "forward")
        same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(right[key]), jax.tree.leaves(wrong[key]), strict=True)
        )
        assert same is not changed, key


# --- jit, vmap, single examples --------------------------------------------------------------


def test_jit_equals_eager():
    model = MLP((4, 3), (), "softmax")
    loss = "softmax_cross_entropy"
    params, x, y, sw = make_case(model, loss, weighted=True, seed=8)
    f = value_and_grad(model, loss, l2=0.1)
    ve, ge = f(params, x, y, sw)
    vj, gj = jax.jit(f)(params, x, y, sw)
    np.testing.assert_allclose(ve, vj, rtol=1e-6)
    assert_grads_close(ge, gj, TOLERANCES["float32"])


PER_EXAMPLE_CASES = {
    "mse": (MLP((4, 5, 3), "tanh", "sigmoid"), "mse", 0.0),
    "ce-l2": (MLP((4, 5, 3), "gelu", "softmax"), "softmax_cross_entropy", 0.2),
    "sse": (MLP((4, 6, 2), "relu"), "sse", 0.0),
}


@functools.cache
def _per_example_results(name):
    model, loss, l2 = PER_EXAMPLE_CASES[name]
    single = value_and_grad(model, loss, l2=l2)

    def run(params, x, y):
        vmapped = jax.vmap(single, in_axes=(None, 0, 0))(params, x, y)
        batched = per_example_grads(model, loss, l2=l2)(params, x, y)
        norms = per_example_grad_norms(model, loss, l2=l2)(params, x, y)
        return vmapped, batched, norms

    return jax.jit(run, compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("name", list(PER_EXAMPLE_CASES))
def test_vmapped_single_example_grads_equal_per_example_grads(name):
    model, loss, _ = PER_EXAMPLE_CASES[name]
    params, x, y, _ = make_case(model, loss, batch=6, seed=6)
    (values, vmapped), batched, norms = _per_example_results(name)(params, x, y)
    assert values.shape == (6,)
    for leaf, p in zip(jax.tree.leaves(batched), jax.tree.leaves(params), strict=True):
        assert leaf.shape == (6, *p.shape)
    assert_grads_close(batched, vmapped, TOLERANCES["float32"])
    squares = (
        np.sum(np.asarray(g) ** 2, axis=tuple(range(1, g.ndim))) for g in jax.tree.leaves(vmapped)
    )
    want = np.sqrt(sum(squares))
    np.testing.assert_allclose(norms, want, rtol=1e-5)


def test_single_example_equals_batch_of_one():
    model = MLP((4, 5, 3), "tanh", "softmax")
    loss = "softmax_cross_entropy"
    params, x, y, _ = make_case(model, loss, batch=2, seed=7)
    f = jax.jit(value_and_grad(model, loss))
    v1, g1 = f(params, x[0], y[0])
    vb, gb = f(params, x[:1], y[:1])
    np.testing.assert_allclose(v1, vb, rtol=1e-6)
    assert_grads_close(g1, gb, TOLERANCES["float32"])
    # and a regression target given as (k,) for one example
    reg = MLP((4, 3), output_activation="identity")
    rp, rx, ry, _ = make_case(reg, "mse", batch=1, seed=3)
    v1, _ = value_and_grad(reg, "mse")(rp, rx[0], ry[0])
    vb, _ = value_and_grad(reg, "mse")(rp, rx, ry)
    np.testing.assert_allclose(v1, vb, rtol=1e-6)


# --- bad input: clear errors at trace time, also under jit ---------------------------------------


BAD_MODEL = MLP((4, 5, 3), "tanh")


@functools.cache
def _bad_calls():
    params, x, y, _ = make_case(BAD_MODEL, "mse", batch=5)
    labels = jnp.asarray([0, 1, 2, 0, 1])
    return {
        "y wrong shape": ("mse", (params, x, y[:, :2]), ValueError, r"y: expected shape \(5, 3\)"),
        "y wrong batch": ("mse", (params, x, y[:4]), ValueError, "y: expected shape"),
        "y rank 3": ("mse", (params, x, y[None]), ValueError, "y"),
        "y complex": ("mse", (params, x, y.astype(jnp.complex64)), TypeError, "y"),
        "float labels": (
            "softmax_cross_entropy",
            (params, x, labels.astype(jnp.float32)),
            TypeError,
            "y: class labels",
        ),
        "label count": (
            "softmax_cross_entropy",
            (params, x, labels[:4]),
            ValueError,
            "y: 4 labels for 5 rows",
        ),
        "probs shape": (
            "softmax_cross_entropy",
            (params, x, jnp.ones((5, 2)) / 2),
            ValueError,
            "y: expected shape",
        ),
        "sample_weight shape": (
            "mse",
            (params, x, y, jnp.ones((4,))),
            ValueError,
            r"sample_weight: expected shape \(5,\)",
        ),
        "sample_weight rank": (
            "mse",
            (params, x, y, jnp.ones((5, 1))),
            ValueError,
            "sample_weight",
        ),
        "sample_weight complex": (
            "mse",
            (params, x, y, jnp.ones((5,), jnp.complex64)),
            TypeError,
            "sample_weight",
        ),
        "x features": ("mse", (params, x[:, :3], y), ValueError, "x: expected 4 features"),
        "x rank": ("mse", (params, x[None], y), ValueError, "x"),
        "params layers": ("mse", (params[:1], x, y), ValueError, "params: got 1 layers"),
        "params int": (
            "mse",
            ((params[0]._replace(b=jnp.zeros(5, jnp.int32)), params[1]), x, y),
            TypeError,
            r"params\[0\]\.b",
        ),
    }


BAD_CALLS = list(_bad_calls())


@pytest.mark.parametrize("method", ["manual", "autodiff"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_names_the_argument(case, jit, method):
    loss, args, error, match = _bad_calls()[case]
    f = value_and_grad(BAD_MODEL, loss, method=method)
    with pytest.raises(error, match=match):
        (jax.jit(f) if jit else f)(*args)


@pytest.mark.parametrize("case", ["y wrong shape", "float labels", "x features"])
def test_per_example_functions_check_their_input(case):
    loss, args, error, match = _bad_calls()[case]
    for build in (per_example_grads, per_example_grad_norms, loss_fn):
        with pytest.raises(error, match=match):
            jax.jit(build(BAD_MODEL, loss))(*args[:3])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "numeric"}, ValueError, "method"),
        ({"l2": -0.1}, ValueError, "l2"),
        ({"l2": True}, TypeError, "l2"),
        ({"l2": "0.1"}, TypeError, "l2"),
        ({"loss": "cross_entropy"}, ValueError, "loss"),
        ({"model": "mlp"}, TypeError, "model"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_configuration(kwargs, error, match):
    args = {"model": BAD_MODEL, "loss": "mse", **kwargs}
    with pytest.raises(error, match=match):
        value_and_grad(args.pop("model"), args.pop("loss"), **args)


# --- dtypes and mixed precision ----------------------------------------------------------------


def test_float64_params_give_float64_grads(x64):
    model = MLP((4, 5, 3), "tanh", param_dtype="float64")
    params, _, _, _ = make_case(model, "mse", dtype="float64")
    x, y = jnp.ones((2, 4), jnp.float32), jnp.ones((2, 3), jnp.float32)
    for method in ("manual", "autodiff"):
        value, grads = jax.jit(value_and_grad(model, "mse", method=method))(params, x, y)
        assert value.dtype == jnp.float64
        assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(grads))


def test_float32_params_stay_float32_even_under_x64(x64):
    model = MLP((4, 5, 3), "tanh")
    params, _, _, _ = make_case(model, "mse", dtype="float32")
    x, y = jnp.ones((2, 4), jnp.float64), jnp.ones((2, 3), jnp.float64)
    for method in ("manual", "autodiff"):
        value, grads = jax.jit(value_and_grad(model, "mse", method=method))(params, x, y)
        assert value.dtype == jnp.float32
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    ("activation", "output_activation", "loss"),
    [
        ("tanh", "identity", "mse"),
        ("relu", "softmax", "softmax_cross_entropy"),
        ("gelu", "sigmoid", "sigmoid_binary_cross_entropy"),
    ],
)
def test_bfloat16_compute_manual_matches_autodiff(activation, output_activation, loss):
    model = MLP((4, 8, 6, 3), activation, output_activation, compute_dtype="bfloat16")
    params, x, y, sw = make_case(model, loss, batch=8, seed=12, weighted=True)
    with jax.default_matmul_precision("highest"):
        # bf16 matmul inputs keep 8 mantissa bits: the two backward passes round differently
        gm, _ = compare_methods(model, loss, params, x, y, sw, tol=TOLERANCES["bfloat16"])
        full = MLP(model.sizes, activation, output_activation)
        (_, g32), _ = both_methods(full, loss)(params, x, y, sw)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(gm))
    # and it is the float32 gradient up to bf16 rounding (inputs of 8 significant bits
    # through three layers: a few 1e-2 relative), not something else
    assert_grads_close(gm, g32, BF16_VS_FLOAT32)


# --- a third, independent implementation: NumPy from the lecture's equations --------------------


REFERENCE_CASES = {
    "lecture 3-4-2 (sigmoid, squared error)": (MLP((3, 4, 2), "sigmoid"), "sse", {}),
    "lecture 3-4-3-2 (sigmoid, squared error)": (MLP((3, 4, 3, 2), "sigmoid"), "sse", {}),
    "3-4-3-2 relu/tanh softmax ce": (
        MLP((3, 4, 3, 2), ("relu", "tanh"), "softmax"),
        "softmax_cross_entropy",
        {},
    ),
    "3-4-2 tanh softmax mse": (MLP((3, 4, 2), "tanh", "softmax"), "mse", {}),
    "2-5-3 gelu bce weighted l2": (
        MLP((2, 5, 3), "gelu"),
        "sigmoid_binary_cross_entropy",
        {"weighted": True, "l2": 0.2},
    ),
    "4-6-5-3 elu/silu sigmoid huber": (
        MLP((4, 6, 5, 3), ("elu", "silu"), "sigmoid"),
        "huber",
        {"weighted": True},
    ),
    "3-4-4-4-4-2 mixed mae": (
        MLP((3, 4, 4, 4, 4, 2), ("leaky_relu", "softplus", "gelu_tanh", "identity")),
        "mae",
        {},
    ),
    "3-4-2 heaviside half_mse": (MLP((3, 4, 2), "heaviside"), "half_mse", {}),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_manual_backward_matches_numpy_reference(case, x64):
    model, loss_name, opts = REFERENCE_CASES[case]
    opts = dict(opts)
    l2 = opts.pop("l2", 0.0)
    params, x, y, sw = make_case(model, loss_name, batch=4, seed=21, dtype="float64", **opts)
    loss = get_loss(loss_name)

    def run(params, x, y, sw):
        trace = forward_trace(model, params, x)
        value, dz_out = loss_head(model, loss, trace, y, sw)
        bw = backward(model, params, trace, dz_out)
        return trace, value, bw, value_and_grad(model, loss_name, l2=l2)(params, x, y, sw)

    trace, value, bw, (vm, gm) = jax.jit(run, compiler_options=FAST_COMPILE)(params, x, y, sw)

    # The reference reads the lecture's W[to, from] (our w transposed), probabilities for the
    # cross entropies (so its output activation is the fused one) and one-hot labels.
    activations = list(model.activations)
    if loss.logits:
        activations[-1] = loss.fuses_with
    y_np = np.asarray(y, np.float64)
    if y_np.ndim == 1:
        y_np = np.eye(model.sizes[-1])[np.asarray(y)]
    r = ref.forward_backward(
        [np.asarray(p.w).T for p in params],
        [np.asarray(p.b) for p in params],
        activations,
        loss_name,
        np.asarray(x),
        y_np,
        None if sw is None else np.asarray(sw),
        l2=l2,
    )
    rtol, atol = TOLERANCES["float64"]
    tol = dict(rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(vm), r.loss, rtol=rtol)
    penalty = 0.5 * l2 * sum(np.sum(np.asarray(p.w) ** 2) for p in params)
    np.testing.assert_allclose(float(value), r.loss - penalty, rtol=rtol)
    for l in range(model.num_layers):
        np.testing.assert_allclose(trace.z[l], r.z[l], **tol)
        if activations[l] == model.activations[l]:
            np.testing.assert_allclose(trace.a[l + 1], r.a[l + 1], **tol)
        np.testing.assert_allclose(bw.deltas[l], r.deltas[l], **tol)
        # the lecture's dL/dW[to, from] is our dw[from, to] transposed
        np.testing.assert_allclose(np.asarray(gm[l].w).T, r.dW[l], **tol)
        np.testing.assert_allclose(gm[l].b, r.db[l], **tol)
