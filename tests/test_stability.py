"""Numerical stability at the extremes (issue 5): logits of +-1e4 for both cross entropies,
inputs of 1e6, saturated sigmoid/tanh, all-zero inputs, softmax output + MSE with huge logits,
binary cross entropy with soft targets and huge logits. Losses and gradients stay finite and the
manual backward pass agrees with ``jax.grad``.

Agreement is measured per parameter block relative to its scale: ``max |m - a| <= rtol * max |a|``
with ``rtol`` from ``RTOL`` (float32: 1e-5, a few ulps of accumulated rounding in sums over the
batch; bfloat16: 1e-2; float64: 1e-12). Where the mathematics gives an exact zero (a saturated
unit, a zero input feeding a weight, a one-hot softmax) the test demands an exact zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import Dense

RTOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-2}
HUGE = 1e4


def both_methods(model, loss, params, x, y, sample_weight=None):
    """(value, grads) from the manual backward pass and from jax.grad, in one compiled call."""
    manual = jaxmlp.value_and_grad(model, loss, method="manual")
    auto = jaxmlp.value_and_grad(model, loss, method="autodiff")
    both = jax.jit(lambda *args: (manual(*args), auto(*args)))
    return both(params, x, y, sample_weight)


def assert_finite(tree):
    for leaf in jax.tree.leaves(tree):
        assert bool(jnp.all(jnp.isfinite(leaf))), leaf


def assert_agree(manual, auto, dtype="float32"):
    (vm, gm), (va, ga) = manual, auto
    assert_finite((vm, gm, va, ga))
    rtol = RTOL[dtype]
    np.testing.assert_allclose(np.float64(vm), np.float64(va), rtol=rtol)
    for m, a in zip(jax.tree.leaves(gm), jax.tree.leaves(ga), strict=True):
        m, a = np.asarray(m, np.float64), np.asarray(a, np.float64)
        assert np.max(np.abs(m - a), initial=0.0) <= rtol * np.max(np.abs(a), initial=0.0), (m, a)


def identity_layer(k, output_activation, dtype="float32"):
    """A one-layer network whose logits are its input: ``z = x @ I + 0``."""
    model = jaxmlp.MLP((k, k), output_activation=output_activation, param_dtype=dtype)
    return model, (Dense(jnp.eye(k, dtype=dtype), jnp.zeros((k,), dtype)),)


# Each row is one example's logits; every row has a +-1e4 gap, one row ties two classes.
LOGITS3 = np.array(
    [[HUGE, -HUGE, 0.0], [-HUGE, HUGE, HUGE], [HUGE, HUGE, -HUGE], [-HUGE, -HUGE, -HUGE]]
)


def _log_softmax64(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


CE_CASES = [
    ("labels", "identity", "float32"),
    ("labels", "softmax", "float32"),
    ("probabilities", "identity", "float32"),
    ("labels", "softmax", "bfloat16"),
    ("probabilities", "identity", "float64"),
]


@pytest.mark.parametrize(
    ("targets", "output_activation", "dtype"), CE_CASES, ids=["-".join(c) for c in CE_CASES]
)
def test_softmax_cross_entropy_with_logits_of_1e4(request, targets, output_activation, dtype):
    if dtype == "float64":
        request.getfixturevalue("x64")
    model, params = identity_layer(3, output_activation, dtype)
    x = jnp.asarray(LOGITS3, dtype)
    if targets == "labels":
        y = jnp.array([1, 0, 2, 1])
        p = np.eye(3)[np.asarray(y)]
    else:
        p = np.array([[0.1, 0.2, 0.7], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]])
        y = jnp.asarray(p, dtype)
    manual, auto = both_methods(model, "softmax_cross_entropy", params, x, y)
    assert_agree(manual, auto, dtype)
    # The exact values: L = -mean_n sum_k p_nk log softmax(z_n)_k, dL/db = mean_n (softmax - p).
    logp = _log_softmax64(np.asarray(x, np.float64))
    np.testing.assert_allclose(
        float(manual[0]), -np.mean(np.sum(p * logp, axis=1)), rtol=RTOL[dtype]
    )
    expected_db = np.mean(np.exp(logp) - p, axis=0)
    np.testing.assert_allclose(
        np.asarray(manual[1][0].b, np.float64), expected_db, atol=RTOL[dtype]
    )


BCE_TARGETS = np.array([[0.0, 1.0], [0.25, 0.75], [0.5, 1.0], [1.0, 0.0]])
BCE_LOGITS = np.array([[HUGE, -HUGE], [HUGE, -HUGE], [-HUGE, 0.0], [50.0, -50.0]])


@pytest.mark.parametrize(
    ("output_activation", "dtype"),
    [("identity", "float32"), ("sigmoid", "float32"), ("sigmoid", "bfloat16")],
    ids=["identity-float32", "sigmoid-float32", "sigmoid-bfloat16"],
)
def test_binary_cross_entropy_with_soft_targets_and_logits_of_1e4(dtype, output_activation):
    model, params = identity_layer(2, output_activation, dtype)
    x, y = jnp.asarray(BCE_LOGITS, dtype), jnp.asarray(BCE_TARGETS, dtype)
    manual, auto = both_methods(model, "sigmoid_binary_cross_entropy", params, x, y)
    assert_agree(manual, auto, dtype)
    z, t = np.asarray(x, np.float64), BCE_TARGETS
    # -[t log s(z) + (1-t) log(1 - s(z))] = softplus(z) - t z: 7500 for z = 1e4, t = 0.25
    expected = np.mean(np.logaddexp(0.0, z) - t * z)
    np.testing.assert_allclose(float(manual[0]), expected, rtol=RTOL[dtype])
    # dL/db = mean over examples and outputs of (s(z) - t): exactly representable here.
    sig = 0.5 * (1 + np.tanh(z / 2))
    expected_db = np.sum(sig - t, axis=0) / z.size
    np.testing.assert_allclose(
        np.asarray(manual[1][0].b, np.float64), expected_db, atol=RTOL[dtype]
    )


# Every hidden activation, one per layer of a stack (one compile per stack); the saturating ones
# get their own network, since behind them every gradient is exactly zero.
STACKS = [
    ("relu", "leaky_relu", "elu"),
    ("gelu", "gelu_tanh", "silu", "softplus"),
    ("tanh", "sigmoid"),
]


@pytest.mark.parametrize("activations", STACKS, ids=["-".join(a) for a in STACKS])
def test_inputs_of_1e6_through_a_network(activations):
    model = jaxmlp.MLP((3, *(8,) * len(activations), 2), activation=activations)
    params = model.init(jax.random.key(0))
    kx, ky = jax.random.split(jax.random.key(1))
    x = 1e6 * jax.random.normal(kx, (6, 3))
    y = jax.random.normal(ky, (6, 2))
    assert_agree(*both_methods(model, "mse", params, x, y))
    # Per-example norms (computed without the per-example gradients) match the gradients' norms.
    norms_fn = jaxmlp.per_example_grad_norms(model, "mse")
    grads_fn = jaxmlp.per_example_grads(model, "mse")

    @jax.jit
    def norms_and_direct(params, x, y):
        grads = grads_fn(params, x, y)
        flat = jnp.concatenate([g.reshape(6, -1) for g in jax.tree.leaves(grads)], axis=1)
        return norms_fn(params, x, y), jnp.sqrt(jnp.sum(flat**2, axis=1))

    norms, direct = norms_and_direct(params, x, y)
    assert_finite((norms, direct))
    np.testing.assert_allclose(norms, direct, rtol=1e-4)


@pytest.mark.parametrize(
    ("loss", "output_activation", "y"),
    [
        ("softmax_cross_entropy", "softmax", jnp.array([0, 1, 2, 3, 0, 1])),
        ("sigmoid_binary_cross_entropy", "sigmoid", jnp.full((6, 4), 0.5)),
    ],
    ids=["softmax-ce", "sigmoid-bce"],
)
def test_inputs_of_1e6_drive_cross_entropy_logits_far_past_1e4(loss, output_activation, y):
    model = jaxmlp.MLP((3, 16, 4), activation="relu", output_activation=output_activation)
    params = model.init(jax.random.key(2))
    x = 1e6 * jax.random.normal(jax.random.key(3), (6, 3))
    logits = jaxmlp.forward_trace(model, params, x).z[-1]
    assert float(jnp.max(jnp.abs(logits))) > 1e5
    assert_agree(*both_methods(model, loss, params, x, y))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturated_derivatives_are_finite_and_match_jax_grad(activation):
    act = jaxmlp.get_activation(activation)
    z = jnp.array([-1e4, -100.0, -50.0, -20.0, 20.0, 50.0, 100.0, 1e4])
    deriv = act.deriv(z, act.fn(z))
    auto = jax.vmap(jax.grad(act.fn))(z)
    assert_finite((deriv, auto))
    np.testing.assert_array_equal(deriv, auto)
    # Where f(z) rounds to exactly +-1 in float32 the derivative is exactly 0.
    saturated = jnp.abs(act.fn(z)) == 1
    assert bool(jnp.all(deriv[saturated] == 0)) and int(saturated.sum()) >= 3
    if activation == "sigmoid":
        # Below zero sigmoid never reaches 0 this early: s'(-50) = e^-50 / (1 + e^-50)^2.
        np.testing.assert_allclose(deriv[2], np.exp(-50.0), rtol=1e-5)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturated_hidden_layer_passes_back_exact_zeros(activation):
    # Hidden pre-activations of +-50 .. +-200: tanh saturates to +-1, sigmoid to 1 (or ~1e-22).
    model = jaxmlp.MLP((1, 3, 1), activation=activation)
    params = (
        Dense(jnp.array([[50.0, 100.0, -100.0]]), jnp.zeros(3)),
        Dense(jnp.array([[0.5], [-0.25], [1.0]]), jnp.array([0.1])),
    )
    x, y = jnp.array([[1.0], [2.0], [-1.0]]), jnp.array([[0.3], [-0.2], [0.9]])
    manual, auto = both_methods(model, "mse", params, x, y)
    assert_agree(manual, auto)
    for _, g in (manual, auto):
        if activation == "tanh":
            assert bool(jnp.all(g[0].w == 0)) and bool(jnp.all(g[0].b == 0))
        else:
            assert float(jnp.max(jnp.abs(g[0].w))) < 1e-20
        assert float(jnp.max(jnp.abs(g[1].w))) > 0.1  # the output layer still learns


def test_saturated_sigmoid_output_with_mse_gives_exact_zero_delta():
    model, params = identity_layer(2, "sigmoid")
    x = jnp.array([[50.0, 100.0], [HUGE, 60.0]])
    manual, auto = both_methods(model, "mse", params, x, jnp.zeros((2, 2)))
    assert_agree(manual, auto)
    for _, g in (manual, auto):
        assert bool(jnp.all(g[0].w == 0)) and bool(jnp.all(g[0].b == 0))


def test_softmax_output_with_mse_and_huge_logits():
    model, params = identity_layer(3, "softmax")
    one_hot = jnp.array([[HUGE, -HUGE, 0.0], [-HUGE, 0.0, HUGE]])  # softmax exactly one-hot
    y = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    manual, auto = both_methods(model, "mse", params, one_hot, y)
    assert_agree(manual, auto)
    for value, g in (manual, auto):
        np.testing.assert_allclose(float(value), 2 / 3, rtol=1e-6)  # (1 + 0 + 1) / 3 per row
        # The softmax Jacobian a_k (da_k - sum_j da_j a_j) vanishes exactly at a one-hot a.
        assert all(bool(jnp.all(leaf == 0)) for leaf in jax.tree.leaves(g))
    tie = jnp.array([[HUGE, HUGE, -HUGE]])  # softmax (0.5, 0.5, 0): non-zero, finite gradient
    manual, auto = both_methods(model, "mse", params, tie, y[1:])
    assert_agree(manual, auto)
    assert float(jnp.max(jnp.abs(manual[1][0].b))) > 0.1


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_all_zero_inputs(activation):
    model = jaxmlp.MLP((3, 5, 4, 2), activation=activation)
    params = model.init(jax.random.key(4))
    x, y = jnp.zeros((4, 3)), jnp.ones((4, 2))
    manual, auto = both_methods(model, "mse", params, x, y)
    assert_agree(manual, auto)
    act = jaxmlp.get_activation(activation)
    zero_maps_to_zero = float(act.fn(jnp.zeros(()))) == 0.0
    for _, g in (manual, auto):
        # dL/dw[l] = a[l-1]^T dz[l]: exactly 0 wherever the layer's input is exactly 0 (biases
        # start at 0, so with f(0) = 0 every activation stays 0).
        assert bool(jnp.all(g[0].w == 0))
        if zero_maps_to_zero:
            assert all(bool(jnp.all(layer.w == 0)) for layer in g)
        if activation == "relu":  # relu'(0) = 0: no hidden delta at all
            assert all(bool(jnp.all(layer.b == 0)) for layer in g[:-1])
        assert float(jnp.max(jnp.abs(g[-1].b))) > 0  # the output bias still learns


def test_all_zero_inputs_give_uniform_softmax_and_log_k_loss():
    model = jaxmlp.MLP((3, 5, 4), activation="relu", output_activation="softmax")
    params = model.init(jax.random.key(5))
    manual, auto = both_methods(
        model, "softmax_cross_entropy", params, jnp.zeros((4, 3)), jnp.array([0, 1, 2, 3])
    )
    assert_agree(manual, auto)
    np.testing.assert_allclose(float(manual[0]), np.log(4.0), rtol=1e-6)
    assert bool(jnp.all(manual[1][-1].b == 0))  # uniform predictions of balanced labels


def test_all_zero_sample_weights_give_zero_loss_and_gradient():
    model = jaxmlp.MLP((3, 4, 2), activation="tanh")
    params = model.init(jax.random.key(6))
    x, y = jnp.ones((3, 3)), jnp.zeros((3, 2))
    for value, g in both_methods(model, "mse", params, x, y, jnp.zeros(3)):
        assert float(value) == 0.0
        assert all(bool(jnp.all(leaf == 0)) for leaf in jax.tree.leaves(g))
