"""Initialisers: shapes, dtypes, the variance each promises, the "auto" choice, name errors."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
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


# --- callable initializers ---------------------------------------------------------------------


ORTHOGONAL = jax.nn.initializers.orthogonal()


def test_a_callable_initializer_draws_every_layers_weight():
    model = MLP((6, 5, 4, 3), activation="tanh", initializer=ORTHOGONAL)
    params = model.init(jax.random.key(8))
    for p, (i, o) in zip(params, model.layer_shapes(), strict=True):
        assert p.w.shape == (i, o) and p.w.dtype == jnp.float32
        np.testing.assert_allclose(p.w.T @ p.w, np.eye(o), atol=1e-5)  # orthonormal columns
        np.testing.assert_array_equal(p.b, 0.0)
    # The same key as a named initializer: split once per layer, in the same order.
    keys = jax.random.split(jax.random.key(8), 3)
    np.testing.assert_array_equal(params[1].w, ORTHOGONAL(keys[1], (5, 4), jnp.float32))


def test_a_callable_initializer_gets_the_requested_dtype(x64):
    calls = []

    def init(key, shape, dtype):
        calls.append((shape, jnp.dtype(dtype)))
        return jax.random.normal(key, shape, dtype)

    params = MLP((3, 4, 2), initializer=init, param_dtype="float64").init(jax.random.key(1))
    assert calls == [((3, 4), jnp.dtype("float64")), ((4, 2), jnp.dtype("float64"))]
    assert all(p.w.dtype == jnp.float64 for p in params)


def test_a_model_with_a_callable_initializer_is_hashable_and_compares_by_identity():
    a = MLP((3, 4, 2), initializer=ORTHOGONAL)
    assert a == MLP((3, 4, 2), initializer=ORTHOGONAL) and hash(a) == hash(MLP((3, 4, 2), initializer=ORTHOGONAL))  # fmt: skip
    assert a != MLP((3, 4, 2), initializer=jax.nn.initializers.orthogonal())  # another object
    traces = []

    @jax.jit
    def f(model, params, x):
        traces.append(model)
        return model.apply(params, x)

    params = a.init(jax.random.key(0))
    f(a, params, jnp.ones((2, 3)))
    f(MLP((3, 4, 2), initializer=ORTHOGONAL), params, jnp.ones((2, 3)))
    assert len(traces) == 1


@pytest.mark.parametrize(
    ("init", "match"),
    [
        (lambda key, shape, dtype: jnp.zeros(shape[::-1], dtype), "returned (4, 3) float32"),
        (lambda key, shape, dtype: jnp.zeros(shape, jnp.float16), "returned (3, 4) float16"),
        (lambda key, shape, dtype: None, "returned None NoneType"),
    ],
    ids=["transposed", "dtype", "none"],
)
def test_a_callable_returning_the_wrong_weight_is_refused_at_init(init, match):
    model = MLP((3, 4, 2), initializer=init)
    want = f"initializer: asked for a (3, 4) float32 weight, {match}"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        model.init(jax.random.key(0))


@pytest.mark.parametrize("init", [3, ["he_normal"], None], ids=repr)
def test_an_initializer_neither_name_nor_callable_is_a_type_error(init):
    with pytest.raises(TypeError, match=r"^initializer: expected a name or a callable"):
        MLP((3, 2), initializer=init)


def test_to_dict_names_a_callable_and_from_dict_refuses_it():
    d = MLP((3, 4, 2), initializer=ORTHOGONAL).to_dict()
    assert d["initializer"] == "callable:jax._src.nn.initializers.orthogonal.<locals>.init"
    with pytest.raises(ValueError, match=r"^initializer: the model had the callable initializer "
                       r".*orthogonal.*pass the model itself"):  # fmt: skip
        MLP.from_dict(d)


def test_a_checkpoint_of_a_callable_initializer_loads_only_given_the_model(tmp_path):
    model = MLP((3, 4, 2), activation="tanh", initializer=ORTHOGONAL)
    params = model.init(jax.random.key(4))
    path = jaxmlp.save_checkpoint(tmp_path / "c.npz", model=model, params=params, step=2)
    with pytest.raises(jaxmlp.CheckpointError, match=r"callable initializer.*load_checkpoint\(path, model=model\)"):  # fmt: skip
        jaxmlp.load_checkpoint(path)
    ck = jaxmlp.load_checkpoint(path, model=model)
    assert ck.model is model and ck.step == 2
    np.testing.assert_array_equal(ck.params[0].w, params[0].w)
    # Another model is still told apart: here another name where the file holds the callable.
    with pytest.raises(jaxmlp.CheckpointError, match="initializer"):
        jaxmlp.load_checkpoint(path, model=MLP((3, 4, 2), activation="tanh"))


@pytest.mark.parametrize(
    "initializer", ["auto", "he_normal", "lecun_normal", "glorot_normal", "siren"]
)
def test_init_is_one_compiled_program_that_draws_what_eager_draws(initializer):
    # MLP.init jits every layer's draws into one program (issue 16: eager draws compiled about
    # ten small programs); the weights must be bit for bit the eager ones, which XLA would break
    # by folding a normal draw's scale into its constants without the initialisers' barrier.
    from jaxmlp._core.mlp import _init_program

    act = "sin" if initializer == "siren" else "relu"
    model = MLP((5, 9, 7, 3), activation=act, initializer=initializer)
    for seed in range(3):
        key = jax.random.key(seed)
        jitted, eager = model.init(jax.random.clone(key)), model._draw(key)
        for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    before = _init_program.cache_info().hits
    MLP((5, 9, 7, 3), activation=act, initializer=initializer).init(jax.random.key(9))
    assert _init_program.cache_info().hits == before + 1  # an equal model reuses the program


def test_init_with_an_initializer_jit_cannot_trace_draws_eagerly():
    def numpy_init(key, shape, dtype):
        seed = int(jax.random.randint(key, (), 0, 1000))  # concrete only outside jit
        return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)

    model = MLP((3, 4, 2), initializer=numpy_init)
    params = model.init(jax.random.key(0))
    assert params[0].w.shape == (3, 4) and params[1].w.shape == (4, 2)
