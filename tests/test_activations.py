"""Activations: values vs ``jax.nn``, hand-written derivatives vs ``jax.grad``, kinks, lookup."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp
from jaxmlp._core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, get_activation
from jaxmlp._core.gradcheck import TOLERANCES as GRAD_TOLERANCES

# (rtol, atol) per dtype for values and derivatives against jax.nn / jax.grad. The two sides
# evaluate the same formula in a different order, so they differ by a few ulps of the
# function's scale (about 1 here), more where 1 + tanh(u) cancels in gelu_tanh's tail.
TOLERANCES = {"float32": (4e-6, 1e-6), "float64": (1e-13, 1e-15)}

# The jax.nn function each of our activations must reproduce (value and gradient).
JAX_REFERENCE = {
    "identity": lambda z: z,
    "heaviside": lambda z: jnp.heaviside(z, 0.0),
    "sigmoid": jax.nn.sigmoid,
    "tanh": jax.nn.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "sin": jnp.sin,
}
ELEMENTWISE = tuple(
    dict.fromkeys(n for n in (*HIDDEN_ACTIVATIONS, *OUTPUT_ACTIVATIONS) if n != "softmax")
)

# Kinks, tiny values on both sides of them, ordinary values and saturating tails.
GRID = np.concatenate(
    [
        [0.0, -0.0, 1e-7, -1e-7, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 8.0, -8.0, 25.0, -25.0],
        np.linspace(-4.0, 4.0, 41),
    ]
)


def test_every_activation_has_a_reference():
    assert set(ELEMENTWISE) == set(JAX_REFERENCE)
    assert "softmax" in OUTPUT_ACTIVATIONS and "softmax" not in HIDDEN_ACTIVATIONS
    assert {"tanh", "softplus"} <= set(OUTPUT_ACTIVATIONS)


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_output_tanh_and_softplus_are_the_hidden_ones_read_from_the_output(name):
    # One Activation each: the output layer uses the same function and derivative, and the
    # derivative reads only a (tanh: 1 - a^2; softplus: sigmoid(z) = 1 - exp(-a)).
    act = get_activation(name, output=True)
    assert act is get_activation(name) and act.uses_output_only


def test_softplus_derivative_from_the_output_keeps_its_digits_in_the_tail():
    # a = softplus(-30) ~ 9.4e-14: 1 - exp(-a) would round to 0 in float32, -expm1(-a) does not.
    act = get_activation("softplus", output=True)
    z = np.asarray([-30.0, -80.0], np.float32)
    want = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(act.deriv(z, act.fn(z)), want, rtol=1e-5)


@functools.cache
def _on_grid(dtype: str) -> dict[str, dict[str, np.ndarray]]:
    """Every activation's value and derivative on GRID next to jax.nn's and jax.grad's.

    One compiled program for all names (per dtype) keeps the module fast.
    """

    def table(z):
        out = {}
        for name in ELEMENTWISE:
            act = get_activation(name, output=name in OUTPUT_ACTIVATIONS)
            a = act.fn(z)
            out[name] = {
                "a": a,
                "a_ref": JAX_REFERENCE[name](z),
                "deriv": act.deriv(z, a),
                "grad_ref": jax.vmap(jax.grad(JAX_REFERENCE[name]))(z),
                "grad_own": jax.vmap(jax.grad(act.fn))(z),
            }
        return out

    with jax.enable_x64(dtype == "float64"):
        result = jax.jit(table)(jnp.asarray(GRID, dtype))
        return jax.tree.map(np.asarray, result)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_value_matches_jax_nn(name, dtype):
    r = _on_grid(dtype)[name]
    rtol, atol = TOLERANCES[dtype]
    assert r["a"].dtype == np.dtype(dtype)
    np.testing.assert_allclose(r["a"], r["a_ref"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_jax_grad(name, dtype):
    r = _on_grid(dtype)[name]
    rtol, atol = TOLERANCES[dtype]
    assert r["deriv"].dtype == np.dtype(dtype)
    np.testing.assert_allclose(r["deriv"], r["grad_ref"], rtol=rtol, atol=atol)
    # and against the gradient of our own forward function (the autodiff path's derivative)
    np.testing.assert_allclose(r["deriv"], r["grad_own"], rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("name", "value", "slope"),
    [
        ("relu", 0.0, 0.0),
        ("leaky_relu", 0.0, 1.0),
        ("elu", 0.0, 1.0),
        ("heaviside", 0.0, 0.0),
        ("identity", 0.0, 1.0),
        ("softplus", np.log(2.0), 0.5),
        ("sigmoid", 0.5, 0.25),
        ("tanh", 0.0, 1.0),
        ("gelu", 0.0, 0.5),
        ("gelu_tanh", 0.0, 0.5),
        ("silu", 0.0, 0.5),
    ],
    ids=lambda v: str(v),
)
def test_exact_value_and_slope_at_zero(name, value, slope):
    r = _on_grid("float32")[name]
    assert GRID[0] == 0.0
    np.testing.assert_allclose(r["a"][0], value, rtol=1e-7)
    assert r["deriv"][0] == np.float32(slope)
    # jax.grad of the matching jax.nn function, and of our own forward function, take the same
    # one-sided choice at the kink, so the manual and the autodiff backward agree there.
    assert r["grad_ref"][0] == np.float32(slope)
    assert r["grad_own"][0] == np.float32(slope)


def test_heaviside_steps_only_above_zero():
    act = get_activation("heaviside")
    z = np.asarray([-2.0, -1e-30, 0.0, 1e-30, 2.0], np.float32)
    np.testing.assert_array_equal(act.fn(z), [0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(act.deriv(z, act.fn(z)), np.zeros(5))


OUTPUT_ONLY = tuple(n for n in ELEMENTWISE if get_activation(n).uses_output_only)


@functools.cache
def _with_garbage_z() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def both(z):
        acts = {n: get_activation(n) for n in OUTPUT_ONLY}
        nan = jnp.full_like(z, jnp.nan)
        return {n: (a.deriv(nan, a.fn(z)), a.deriv(z, a.fn(z))) for n, a in acts.items()}

    return jax.tree.map(np.asarray, jax.jit(both)(jnp.asarray(GRID, jnp.float32)))


@pytest.mark.parametrize("name", OUTPUT_ONLY)
def test_output_only_derivatives_ignore_z(name):
    # The backward pass may drop z for these: the derivative must not read it.
    from_a_only, with_z = _with_garbage_z()[name]
    assert not np.isnan(from_a_only).any()
    np.testing.assert_array_equal(from_a_only, with_z)


def test_elu_derivative_keeps_its_digits_in_the_tail():
    # exp(z), not a + 1: at z = -30 a + 1 rounds to 0 in float32, exp(-30) does not.
    act = get_activation("elu")
    z = np.asarray([-30.0], np.float32)
    np.testing.assert_allclose(act.deriv(z, act.fn(z)), np.exp(z.astype(np.float64)), rtol=1e-5)


def test_gelu_keeps_its_digits_in_the_tail():
    # Phi(z) through erfc: 1 + erf(z / sqrt 2) would cancel to (nearly) 0 at z = -7.
    z = -7.0
    got = get_activation("gelu").fn(np.asarray([z], np.float32))
    # gelu(z) = z Phi(z), Phi(z) ~ phi(z) / |z| (1 - 1/z^2 + 3/z^4 - 15/z^6) for large negative z
    phi = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    want = -phi * (1 - z**-2 + 3 * z**-4 - 15 * z**-6)
    np.testing.assert_allclose(got, [want], rtol=1e-4)


@functools.cache
def _vjps() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def both(z, da):
        out = {}
        for name in ELEMENTWISE:
            act = get_activation(name, output=name in OUTPUT_ACTIVATIONS)
            a, vjp = jax.vjp(JAX_REFERENCE[name], z)
            out[name] = (act.vjp(z, a, da), vjp(da)[0])
        return out

    z = jax.random.normal(jax.random.key(0), (5, 4)) * 2.0 + 0.3
    da = jax.random.normal(jax.random.key(1), (5, 4))
    return jax.tree.map(np.asarray, jax.jit(both)(z, da))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_vjp_matches_jax_vjp(name):
    got, want = _vjps()[name]
    rtol, atol = TOLERANCES["float32"]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_vjp_matches_jax_vjp(dtype):
    act = get_activation("softmax", output=True)

    def both(z, da):
        a, vjp = jax.vjp(functools.partial(jax.nn.softmax, axis=-1), z)
        return act.fn(z), a, act.vjp(z, a, da), vjp(da)[0]

    with jax.enable_x64(dtype == "float64"):
        z = (jax.random.normal(jax.random.key(2), (6, 5)) * 3.0).astype(dtype)
        da = jax.random.normal(jax.random.key(3), (6, 5)).astype(dtype)
        # to NumPy inside the x64 context: a jax float64 array used after it would be truncated
        ours, a, got, want = (np.asarray(v) for v in jax.jit(both)(z, da))
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(ours, a, rtol=rtol, atol=atol)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    # rows of softmax sum to one, so its vjp is orthogonal to the all-ones direction
    np.testing.assert_allclose(np.sum(got, axis=-1), 0.0, atol=atol * 10)


def test_softmax_vjp_is_the_true_jacobian_not_its_diagonal():
    act = get_activation("softmax", output=True)
    z = np.asarray([[0.2, -1.0, 0.7]])
    a = np.exp(z) / np.exp(z).sum()
    da = np.asarray([[1.0, 0.0, 0.0]])
    jac = np.diag(a[0]) - np.outer(a[0], a[0])  # d a_i / d z_j = a_i (delta_ij - a_j)
    got = np.asarray(act.vjp(z, a, da))
    np.testing.assert_allclose(got[0], da[0] @ jac, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got, da * a * (1 - a))


@pytest.mark.parametrize("name", ["relu6", "Relu", "", "softmax"], ids=repr)
def test_unknown_hidden_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match="activation") as err:
        get_activation(name)
    for valid in HIDDEN_ACTIVATIONS:
        assert repr(valid) in str(err.value)


@pytest.mark.parametrize("name", ["relu", "gelu", "heaviside", "bogus"])
def test_unknown_output_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match="output_activation") as err:
        get_activation(name, output=True, argname="output_activation")
    for valid in OUTPUT_ACTIVATIONS:
        assert repr(valid) in str(err.value)


@pytest.mark.parametrize("name", [None, 3, ("relu",)], ids=repr)
def test_non_string_name_is_a_value_error(name):
    with pytest.raises(ValueError, match="activation"):
        get_activation(name)


# --- the regression outputs: tanh and softplus under the losses they pair with ---------------

OUTPUT_LOSSES = [
    ("tanh", "mse"),
    ("tanh", "huber"),
    ("softplus", "mse"),
    ("softplus", "mae"),
    ("softplus", "sse"),
]


@pytest.mark.parametrize(
    ("output", "loss"), OUTPUT_LOSSES, ids=["-".join(c) for c in OUTPUT_LOSSES]
)
def test_tanh_and_softplus_outputs_pass_gradcheck(output, loss):
    # The manual backward (output delta = dL/da * f'(z) from the output) against jax.grad and
    # float64 finite differences, with non-zero biases and pre-activations of both signs.
    model = jaxmlp.MLP((3, 5, 2), activation="tanh", output_activation=output)
    k_p, k_b, k_x, k_y = jax.random.split(jax.random.key(len(loss) + len(output)), 4)
    params = tuple(
        jaxmlp.Dense(p.w * 1.3, 0.4 * jax.random.normal(k, p.b.shape))
        for p, k in zip(model.init(k_p), jax.random.split(k_b, 2), strict=True)
    )
    x = jax.random.normal(k_x, (7, 3)) * 1.5
    y = jax.random.uniform(k_y, (7, 2), minval=-0.9 if output == "tanh" else 0.1, maxval=0.9)
    report = jaxmlp.gradcheck(model, params, x, y, loss, key=jax.random.key(9))
    assert report.ok, str(report)
    assert all(r.autodiff.cosine > 0.999999 for r in report.rows)


@st.composite
def regression_networks(draw):
    """A random network with a tanh or softplus output, a regression loss and a batch."""
    n_hidden = draw(st.integers(0, 2))
    sizes = (
        draw(st.integers(1, 4)),
        *draw(st.lists(st.integers(1, 5), min_size=n_hidden, max_size=n_hidden)),
        draw(st.integers(1, 3)),
    )
    hidden = tuple(draw(st.sampled_from(HIDDEN_ACTIVATIONS)) for _ in range(n_hidden))
    output = draw(st.sampled_from(["tanh", "softplus"]))
    return {
        "model": jaxmlp.MLP(sizes, activation=hidden, output_activation=output),
        "loss": draw(st.sampled_from(["sse", "mse", "half_mse", "mae", "huber"])),
        "l2": draw(st.sampled_from([0.0, 0.1])),
        "batch": draw(st.integers(1, 5)),
        "weighted": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.slow  # a long hypothesis run; the named tanh/softplus pairings stay fast
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(regression_networks(), st.sampled_from(["float32", "float64"]))
def test_tanh_and_softplus_outputs_manual_matches_autodiff(c, dtype):
    # The whole network, random architectures: the hand-written backward from the output delta
    # f'(z) = 1 - a^2 or 1 - e^-a against jax.grad of the same forward pass.
    model, rng = c["model"], np.random.default_rng(c["seed"])
    with jax.enable_x64(dtype == "float64"):
        params = tuple(
            jaxmlp.Dense(
                jnp.asarray(rng.normal(size=(i, o)) * 1.3 / np.sqrt(i), dtype),
                jnp.asarray(rng.normal(0.0, 0.5, o), dtype),
            )
            for i, o in model.layer_shapes()
        )
        x = jnp.asarray(rng.normal(size=(c["batch"], model.sizes[0])) * 1.5, dtype)
        y = jnp.asarray(rng.uniform(0.1, 0.9, (c["batch"], model.sizes[-1])), dtype)
        sw = jnp.asarray(rng.uniform(0.2, 2.0, c["batch"]), dtype) if c["weighted"] else None
        methods = [jaxmlp.value_and_grad(model, c["loss"], method=m, l2=c["l2"]) for m in ("manual", "autodiff")]  # fmt: skip
        (vm, gm), (va, ga) = jax.jit(lambda *a: [f(*a) for f in methods])(params, x, y, sw)
        vm, va, gm, ga = jax.tree.map(np.asarray, (vm, va, gm, ga))
    rtol, atol = GRAD_TOLERANCES[dtype]
    assert vm.dtype == np.dtype(dtype)
    np.testing.assert_allclose(vm, va, rtol=rtol)
    scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(ga))
    for got, want in zip(jax.tree.leaves(gm), jax.tree.leaves(ga), strict=True):
        assert got.dtype == want.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
@pytest.mark.parametrize("output", ["tanh", "softplus"])
def test_cross_entropies_refuse_tanh_and_softplus_outputs(output, loss):
    # The cross entropies read logits; only identity or their own sigmoid/softmax gives them.
    with pytest.raises(ValueError, match=f"^loss: '{loss}' works on logits.*'{output}'"):
        jaxmlp.value_and_grad(jaxmlp.MLP((3, 2), output_activation=output), loss)


def test_a_planted_bug_in_an_output_derivative_fails_gradcheck(monkeypatch):
    # The check above can fail: 1 - a instead of 1 - a^2 for the tanh output is caught.
    from jaxmlp._core import activations

    wrong = activations._ACTIVATIONS["tanh"]._replace(deriv=lambda z, a: 1 - a)
    monkeypatch.setitem(activations._ACTIVATIONS, "tanh", wrong)
    model = jaxmlp.MLP((4, 3, 2), activation="relu", output_activation="tanh")  # a fresh program
    params = model.init(jax.random.key(5))
    x, y = jax.random.normal(jax.random.key(6), (6, 4)), jnp.full((6, 2), 0.5)
    report = jaxmlp.gradcheck(model, params, x, y, "mse", key=jax.random.key(7))
    assert not report.ok
    last = [r for r in report.rows if r.layer == len(params)]  # layers count from 1
    assert len(last) == 2 and not any(r.autodiff.ok for r in last)
