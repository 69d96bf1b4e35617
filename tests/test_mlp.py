"""MLP: the lecture's counts, validation, hashing, serialisation, the forward pass and its checks."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import MLP, Dense

LECTURE = {(3, 4, 2): (26, 2), (3, 4, 3, 2): (39, 3)}


# --- the lecture's networks --------------------------------------------------------------


@pytest.mark.parametrize(("sizes", "expected"), list(LECTURE.items()), ids=["3-4-2", "3-4-3-2"])
def test_lecture_parameter_counts(sizes, expected):
    count, layers = expected
    model = MLP(sizes)
    assert model.count_params() == count
    assert model.num_layers == layers
    params = model.init(jax.random.key(0))
    assert sum(p.w.size + p.b.size for p in params) == count
    assert model.layer_shapes() == tuple(itertools.pairwise(sizes))


def test_summary_shows_each_layers_count():
    text = MLP((3, 4, 3, 2), activation="tanh").summary()
    for fragment in ("(3+1)*4 = 16", "(4+1)*3 = 15", "(3+1)*2 = 8", "39", "3 layers"):
        assert fragment in text
    assert "(3, 4)" in text and "(4,)" in text and "tanh" in text and "identity" in text
    assert "26" in MLP((3, 4, 2)).summary()


def test_activations_per_layer():
    model = MLP((3, 4, 5, 2), activation=["tanh", "relu"], output_activation="softmax")
    assert model.activation == ("tanh", "relu")  # the list became a hashable tuple
    assert model.hidden_activations == ("tanh", "relu")
    assert model.activations == ("tanh", "relu", "softmax")
    assert MLP((3, 2)).activations == ("identity",)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "error"),
    [
        ((3,), ValueError),
        ((), ValueError),
        ((3, 0, 2), ValueError),
        ((3, -4, 2), ValueError),
        ((3, 4.0, 2), TypeError),
        ((3, True, 2), TypeError),
        ((3, "4", 2), TypeError),
        ("342", TypeError),
        (342, TypeError),
        (None, TypeError),
    ],
    ids=repr,
)
def test_bad_sizes_name_sizes(sizes, error):
    with pytest.raises(error, match="sizes"):
        MLP(sizes)


def test_numpy_integer_sizes_are_accepted_and_normalised():
    model = MLP(tuple(np.asarray([3, 4, 2])))  # numpy integers, e.g. from a sweep grid
    assert model.sizes == (3, 4, 2) and all(type(s) is int for s in model.sizes)
    assert model == MLP([3, 4, 2])


@pytest.mark.parametrize("activation", [("tanh",), ("tanh", "relu", "relu"), ()], ids=repr)
def test_activation_list_of_wrong_length(activation):
    with pytest.raises(ValueError, match="activation"):
        MLP((3, 4, 5, 2), activation=activation)


def test_unknown_activation_names():
    with pytest.raises(ValueError, match="activation"):
        MLP((3, 4, 2), activation="swish")
    with pytest.raises(ValueError, match=r"activation\[1\]"):
        MLP((3, 4, 5, 2), activation=("tanh", "sofmax"))
    with pytest.raises(ValueError, match="activation"):
        MLP((3, 4, 2), activation="softmax")  # softmax is an output activation only
    with pytest.raises(ValueError, match="output_activation"):
        MLP((3, 4, 2), output_activation="relu")
    with pytest.raises(ValueError, match="output_activation"):
        MLP((3, 4, 2), output_activation="linear")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("param_dtype", "int32"),
        ("param_dtype", "floaty"),
        ("param_dtype", None),
        ("param_dtype", "complex64"),
        ("compute_dtype", "int8"),
        ("compute_dtype", "half-ish"),
    ],
)
def test_bad_dtypes(field, value):
    with pytest.raises(ValueError, match=field):
        MLP((3, 4, 2), **{field: value})


def test_dtypes_are_normalised_to_names():
    model = MLP((3, 2), param_dtype=jnp.float32, compute_dtype=jnp.bfloat16)
    assert model.param_dtype == "float32" and model.compute_dtype == "bfloat16"
    assert model == MLP((3, 2), compute_dtype="bfloat16")


# --- hashing, jit, serialisation -----------------------------------------------------------


def test_hashable_and_equal_by_value():
    a = MLP([3, 4, 2], activation=["tanh"])
    b = MLP((3, 4, 2), activation=("tanh",))
    assert a == b and hash(a) == hash(b)
    assert a != MLP((3, 4, 2), activation="relu")
    assert len({a, b, MLP((3, 5, 2))}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sizes = (1, 2)


def test_usable_as_a_static_jit_argument():
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def forward(model, params, x):
        traces.append(model)
        return model.apply(params, x)

    model = MLP((3, 4, 2), activation="tanh")
    params = model.init(jax.random.key(0))
    x = jnp.ones((5, 3))
    out1 = forward(model, params, x)
    out2 = forward(MLP((3, 4, 2), activation="tanh"), params, x)  # equal: no retrace
    np.testing.assert_array_equal(out1, out2)
    assert len(traces) == 1
    forward(MLP((3, 4, 2), activation="relu"), params, x)
    assert len(traces) == 2


def test_jit_takes_an_mlp_as_an_ordinary_argument():
    traces = []

    @jax.jit
    def forward(model, params, x):
        traces.append(model)
        return model.apply(params, x)

    model = MLP((3, 4, 2), activation="tanh")
    params = model.init(jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    out1 = forward(model, params, x)
    np.testing.assert_allclose(out1, model.apply(params, x), rtol=1e-6, atol=1e-6)
    out2 = forward(MLP((3, 4, 2), activation="tanh"), params, x)  # equal: no retrace
    np.testing.assert_array_equal(out1, out2)
    assert len(traces) == 1
    assert isinstance(traces[0], MLP)  # the description itself, not a tracer
    out3 = forward(MLP((3, 4, 2), activation="relu"), params, x)  # different: retrace
    assert len(traces) == 2
    assert not np.allclose(out1, out3)


def test_lambda_under_jit_takes_an_mlp():
    model = MLP((3, 4, 2), activation="tanh")
    params = model.init(jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    out = jax.jit(lambda m, p, x: m.apply(p, x))(model, params, x)
    np.testing.assert_allclose(out, model.apply(params, x), rtol=1e-6, atol=1e-6)


def test_an_mlp_is_a_pytree_without_leaves():
    model = MLP((3, 4, 2), activation=("tanh",))
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert leaves == []
    assert jax.tree_util.tree_unflatten(treedef, []) == model
    assert jax.tree_util.tree_map(lambda a: a + 1, model) == model


def test_grad_over_a_function_taking_an_mlp():
    model = MLP((3, 4, 2), activation="tanh")
    params = model.init(jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    grads = jax.grad(lambda p, m, x: m.apply(p, x).sum())(params, model, x)
    expected = jax.grad(lambda p: model.apply(p, x).sum())(params)
    chex.assert_trees_all_close(grads, expected, rtol=1e-6, atol=1e-6)
    # Differentiating with respect to the model itself gives the model back: it has no leaves.
    loss = lambda m, p, x: m.apply(p, x).sum()  # noqa: E731
    assert jax.grad(loss, argnums=(0, 1))(model, params, x)[0] == model


def test_vmap_over_params_with_a_shared_mlp():
    model = MLP((3, 4, 2), activation="tanh")
    stacked = jax.vmap(model.init)(jax.random.split(jax.random.key(1), 4))
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    out = jax.vmap(lambda m, p, x: m.apply(p, x), in_axes=(None, 0, None))(model, stacked, x)
    assert out.shape == (4, 5, 2)
    for k in range(4):
        member = jax.tree_util.tree_map(lambda a, k=k: a[k], stacked)
        np.testing.assert_allclose(out[k], model.apply(member, x), rtol=1e-6, atol=1e-6)
    # in_axes=0 for the model is accepted too: a pytree with no leaves has nothing to map.
    out0 = jax.vmap(lambda m, p: m.apply(p, x), in_axes=(0, 0))(model, stacked)
    np.testing.assert_array_equal(out0, out)


def test_an_mlp_still_keys_an_lru_cache():
    calls = []

    @functools.lru_cache(maxsize=4)
    def build(model):
        calls.append(model)
        return jax.jit(model.apply)

    assert build(MLP((3, 4, 2))) is build(MLP([3, 4, 2]))
    assert len(calls) == 1
    build(MLP((3, 5, 2)))
    assert len(calls) == 2


ROUNDTRIP = {
    "default": dict(sizes=(3, 4, 2)),
    "per-layer": dict(sizes=(3, 4, 3, 2), activation=("tanh", "gelu"), output_activation="softmax"),
    "sigmoid": dict(sizes=(5, 1), output_activation="sigmoid", initializer="lecun_normal"),
    "softplus": dict(sizes=(5, 3, 1), activation="elu", output_activation="softplus"),
    "dtypes": dict(sizes=(2, 8, 2), param_dtype="float64", compute_dtype="bfloat16"),
}


@pytest.mark.parametrize("kwargs", ROUNDTRIP.values(), ids=ROUNDTRIP.keys())
def test_to_dict_from_dict_roundtrip(kwargs, x64):
    model = MLP(**kwargs)
    d = model.to_dict()
    assert MLP.from_dict(d) == model
    assert MLP.from_dict(json.loads(json.dumps(d))) == model


def test_from_dict_rejects_unknown_fields():
    d = MLP((3, 2)).to_dict()
    d["momentum"] = 0.5
    with pytest.raises(ValueError, match="momentum"):
        MLP.from_dict(d)


# --- the forward pass ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lecture_net():
    model = MLP((3, 4, 3, 2), activation=("tanh", "relu"), output_activation="sigmoid")
    keys = jax.random.split(jax.random.key(42), 2)
    params = tuple(
        Dense(p.w * 1.3, jax.random.normal(k, p.b.shape) * 0.5)
        for p, k in zip(model.init(keys[0]), jax.random.split(keys[1], 3), strict=True)
    )
    x = jax.random.normal(jax.random.key(43), (5, 3))
    return model, params, x


def test_apply_is_the_layer_by_layer_formula(lecture_net):
    model, params, x = lecture_net
    a = np.asarray(x, np.float64)
    for p, f in zip(
        params,
        [np.tanh, lambda z: np.maximum(z, 0), lambda z: 1 / (1 + np.exp(-z))],
        strict=True,
    ):
        a = f(a @ np.asarray(p.w, np.float64) + np.asarray(p.b, np.float64))
    out = model.apply(params, x)
    assert out.shape == (5, 2) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model(params, x), out)


def test_single_example_and_int_input(lecture_net):
    model, params, x = lecture_net
    out = model.apply(params, x)
    single = model.apply(params, x[2])
    assert single.shape == (2,)
    np.testing.assert_allclose(single, out[2], rtol=1e-6)
    xi = jnp.asarray([[1, 0, -2]], jnp.int32)
    np.testing.assert_allclose(
        model.apply(params, xi), model.apply(params, xi.astype(jnp.float32)), rtol=1e-6
    )
    # nested Python lists are accepted as well
    np.testing.assert_allclose(model.apply(params, [[1.0, 0.0, -2.0]]), model.apply(params, xi))


def test_float64_params_give_float64_output(x64):
    model = MLP((3, 4, 2), param_dtype="float64")
    params = model.init(jax.random.key(0))
    assert model.apply(params, jnp.ones((2, 3), jnp.float32)).dtype == jnp.float64


@pytest.mark.parametrize("dtype", ["float64", jnp.float64, np.dtype("float64")], ids=repr)
@pytest.mark.parametrize("field", ["param_dtype", "compute_dtype"])
def test_float64_without_x64_is_refused_saying_how_to_enable_it(field, dtype):
    # JAX would silently hold float32 while the model claimed float64.
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match=f"^{field}: 'float64' needs JAX's 64-bit mode") as err:
        MLP((3, 4, 2), **{field: dtype})
    assert 'jax.config.update("jax_enable_x64", True)' in str(err.value)
    assert "jax.enable_x64(True)" in str(err.value)


def test_float64_model_built_under_x64_refuses_to_init_without_it():
    with jax.enable_x64(True):
        model = MLP((3, 4, 2), param_dtype="float64")
        assert model.init(jax.random.key(0))[0].w.dtype == jnp.float64
    with pytest.raises(ValueError, match=r"^param_dtype: 'float64' needs JAX's 64-bit mode"):
        model.init(jax.random.key(0))


# --- inputs with leading axes -----------------------------------------------------------------


LEADING_SHAPES = [(5,), (4, 5), (2, 3, 4), (1, 1)]


@pytest.mark.parametrize("lead", LEADING_SHAPES, ids=str)
def test_apply_keeps_any_leading_axes(lecture_net, lead):
    model, params, _ = lecture_net
    x = jax.random.normal(jax.random.key(44), (*lead, 3))
    rows = model.apply(params, x.reshape(-1, 3))
    out = model.apply(params, x)
    assert out.shape == (*lead, 2)
    np.testing.assert_array_equal(out, rows.reshape(*lead, 2))
    np.testing.assert_array_equal(jax.jit(model.apply)(params, x), out)


def test_apply_on_a_coordinate_grid():
    # A neural field: (grid_h, grid_w, 2) coordinates in, (grid_h, grid_w, out) values out.
    model = MLP((2, 16, 3), activation="tanh", output_activation="sigmoid")
    params = model.init(jax.random.key(3))
    u, v = jnp.meshgrid(jnp.linspace(-1, 1, 7), jnp.linspace(-1, 1, 5), indexing="ij")
    grid = jnp.stack([u, v], axis=-1)
    image = model.apply(params, grid)
    assert image.shape == (7, 5, 3)
    np.testing.assert_allclose(image[6, 2], model.apply(params, grid[6, 2]), rtol=1e-6)


def test_apply_manual_and_its_gradient_keep_leading_axes(lecture_net):
    model, params, _ = lecture_net
    x = jax.random.normal(jax.random.key(45), (2, 3, 3))
    np.testing.assert_array_equal(jaxmlp.apply_manual(model, params, x), model.apply(params, x))

    def head(apply, p, xx):
        return jnp.sum(jnp.sin(apply(p, xx)) * jnp.arange(1.0, 3.0)[None, None, :])

    manual = jax.grad(lambda p, xx: head(functools.partial(jaxmlp.apply_manual, model), p, xx), (0, 1))  # fmt: skip
    auto = jax.grad(lambda p, xx: head(model.apply, p, xx), (0, 1))
    chex.assert_trees_all_close(manual(params, x), auto(params, x), rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_output(lecture_net):
    model, params, x = lecture_net
    mixed = MLP(model.sizes, model.activation, model.output_activation, compute_dtype="bfloat16")
    with jax.default_matmul_precision("highest"):
        out = mixed.apply(params, x)
        ref = model.apply(params, x)
    assert out.dtype == jnp.float32
    # bf16 inputs carry 8 bits of mantissa: a relative error of a few 1e-3 per product
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)
    assert not np.array_equal(out, ref)


# --- bad input: clear errors at trace time, eager and under jit --------------------------------


def _bad_inputs(model, params, x):
    p = list(params)
    return {
        "x rank 0": (params, jnp.float32(1.0), ValueError, r"x: expected shape \(\.\.\., 3\)"),
        "x empty leading axis": (params, x[None, :0], ValueError, "x: empty batch"),
        "x features, leading axes": (params, x[None, :, :2], ValueError, "x: expected 3 features"),
        "x features": (params, jnp.ones((5, 4)), ValueError, r"x: expected 3 features"),
        "x complex": (params, jnp.ones((5, 3), jnp.complex64), TypeError, "x"),
        "x bool": (params, jnp.ones((5, 3), bool), TypeError, "x"),
        "too few layers": (tuple(p[:2]), x, ValueError, "params: got 2 layers"),
        "too many layers": ((*p, p[-1]), x, ValueError, "params: got 4 layers"),
        "w shape": (
            (p[0]._replace(w=p[0].w.T), *p[1:]),
            x,
            ValueError,
            r"params\[0\]\.w: shape \(4, 3\)",
        ),
        "b shape": (
            (p[0], p[1]._replace(b=jnp.zeros((4,))), p[2]),
            x,
            ValueError,
            r"params\[1\]\.b",
        ),
        "int w": (
            (p[0]._replace(w=p[0].w.astype(jnp.int32)), *p[1:]),
            x,
            TypeError,
            r"params\[0\]\.w: dtype int32",
        ),
        "mixed dtypes": (
            (p[0], p[1]._replace(b=p[1].b.astype(jnp.bfloat16)), p[2]),
            x,
            TypeError,
            r"params\[1\]\.b",
        ),
        "not a tuple": ({"w": 1}, x, TypeError, "params"),
        "not Dense": ((p[0], (p[1].w, p[1].b), p[2]), x, TypeError, r"params\[1\]"),
    }


BAD_CASES = [
    "x rank 0",
    "x empty leading axis",
    "x features, leading axes",
    "x features",
    "x complex",
    "x bool",
    "too few layers",
    "too many layers",
    "w shape",
    "b shape",
    "int w",
    "mixed dtypes",
    "not a tuple",
    "not Dense",
]


def test_bad_case_list_is_complete(lecture_net):
    assert list(_bad_inputs(*lecture_net)) == BAD_CASES


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_the_argument(lecture_net, case, jit):
    model, params, x = lecture_net
    bad_params, bad_x, error, match = _bad_inputs(model, params, x)[case]
    apply = jax.jit(model.apply) if jit else model.apply
    with pytest.raises(error, match=match):
        apply(bad_params, bad_x)
