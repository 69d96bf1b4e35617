"""Initialisers: shapes, dtypes, the variance each promises, the "auto" choice, name errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import MLP
from jaxmlp._core.initializers import INITIALIZERS, get_initializer

FAN_IN, FAN_OUT = 400, 300
# name -> (promised variance, normal?)
PROMISES = {
    "he_normal": (2.0 / FAN_IN, True),
    "lecun_normal": (1.0 / FAN_IN, True),
    "glorot_uniform": (2.0 / (FAN_IN + FAN_OUT), False),
    "glorot_normal": (2.0 / (FAN_IN + FAN_OUT), True),
}
# Share of draws within one standard deviation of 0: erf(1/sqrt 2) for a normal, 1/sqrt 3
# for a uniform of the same variance.
WITHIN_ONE_SD = {True: math.erf(1 / math.sqrt(2)), False: 1 / math.sqrt(3)}


def test_every_initializer_is_covered():
    assert set(PROMISES) == set(INITIALIZERS)


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_shape_and_default_dtype(name):
    w = INITIALIZERS[name](jax.random.key(0), (5, 3))
    assert w.shape == (5, 3) and w.dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_requested_dtype(name, dtype, x64):
    w = INITIALIZERS[name](jax.random.key(1), (4, 6), jnp.dtype(dtype))
    assert w.shape == (4, 6) and w.dtype == jnp.dtype(dtype)
    assert bool(jnp.all(jnp.isfinite(w)))


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_variance_and_shape_of_the_distribution(name):
    variance, normal = PROMISES[name]
    w = np.asarray(INITIALIZERS[name](jax.random.key(7), (FAN_IN, FAN_OUT)), np.float64)
    n = w.size
    # 120000 draws: the sample variance's relative standard error is about sqrt(2/n) = 0.4 %,
    # so 5 % is generous yet far below the factor-of-two slips (fan_in vs fan_out, 1 vs 2).
    assert w.var() / variance == pytest.approx(1.0, abs=0.05)
    assert abs(w.mean()) < 6 * math.sqrt(variance / n)
    share = np.mean(np.abs(w) < math.sqrt(variance))
    assert share == pytest.approx(WITHIN_ONE_SD[normal], abs=0.01)
    if not normal:
        limit = math.sqrt(6.0 / (FAN_IN + FAN_OUT))
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_same_key_same_draw_other_key_other_draw(name):
    init = INITIALIZERS[name]
    a = init(jax.random.key(3), (8, 8))
    b = init(jax.random.key(3), (8, 8))
    c = init(jax.random.key(4), (8, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("relu", "he_normal"),
        ("leaky_relu", "he_normal"),
        ("elu", "he_normal"),
        ("gelu", "he_normal"),
        ("silu", "he_normal"),
        ("tanh", "glorot_uniform"),
        ("sigmoid", "glorot_uniform"),
        ("identity", "glorot_uniform"),
        ("softmax", "glorot_uniform"),
    ],
)
def test_auto_picks_by_activation(activation, expected):
    assert get_initializer("auto", activation) is INITIALIZERS[expected]


@pytest.mark.parametrize("name", ["xavier", "He_normal", ""], ids=repr)
def test_unknown_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match="initializer") as err:
        get_initializer(name, "relu")
    for valid in ("auto", *INITIALIZERS):
        assert repr(valid) in str(err.value)
    with pytest.raises(ValueError, match="initializer"):
        MLP((3, 2), initializer=name)


def test_mlp_init_uses_each_layers_own_activation_and_zero_biases():
    # layer 1 (relu): He, variance 2/400; layer 2 (identity output): Glorot, 2/(200+100)
    model = MLP((400, 200, 100), activation="relu")
    params = model.init(jax.random.key(11))
    w1, w2 = (np.asarray(p.w, np.float64) for p in params)
    assert w1.var() / (2 / 400) == pytest.approx(1.0, abs=0.05)
    assert w2.var() / (2 / 300) == pytest.approx(1.0, abs=0.05)
    assert np.abs(w2).max() <= math.sqrt(6 / 300)  # uniform: bounded
    for p in params:
        np.testing.assert_array_equal(p.b, 0.0)


def test_mlp_init_layers_draw_from_distinct_keys():
    model = MLP((6, 6, 6, 6), activation="tanh", initializer="lecun_normal")
    params = model.init(jax.random.key(5))
    ws = [np.asarray(p.w) for p in params]
    assert not np.allclose(ws[0], ws[1]) and not np.allclose(ws[1], ws[2])


@pytest.mark.parametrize("param_dtype", ["float32", "float64", "bfloat16"])
def test_mlp_init_dtype_follows_param_dtype(param_dtype, x64):
    params = MLP((3, 4, 2), param_dtype=param_dtype).init(jax.random.key(2))
    for p in params:
        assert p.w.dtype == jnp.dtype(param_dtype) and p.b.dtype == jnp.dtype(param_dtype)


def test_mlp_init_accepts_legacy_keys_and_rejects_non_keys():
    model = MLP((3, 4, 2))
    legacy = model.init(jax.random.PRNGKey(0))
    typed = model.init(jax.random.key(0))
    np.testing.assert_array_equal(legacy[0].w, typed[0].w)
    with pytest.raises(TypeError, match="key"):
        model.init(0)
    with pytest.raises(TypeError, match="key"):
        model.init(jnp.zeros((3,), jnp.float32))
    with pytest.raises(ValueError, match="key"):
        model.init(jax.random.split(jax.random.key(1), 2))
