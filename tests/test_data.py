"""Tests for jaxmlp.data: generators, registry, scikit-learn loaders, standardisation, split, batching."""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxmlp import data
from jaxmlp._core.losses import get_loss

CLASSIFICATION = ["circle", "xor", "gaussians", "spiral", "moons"]
REGRESSION = ["plane", "sine"]
ALL = CLASSIFICATION + REGRESSION
N = 401  # odd, so balanced classes differ by exactly one row


def _make(name, seed=0, n=N, noise=0.0):
    x, y = data.load(name, jax.random.key(seed), n, noise=noise)
    return np.asarray(x), np.asarray(y)


# --- generators: shapes, dtypes, labels, determinism ---------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION, ids=CLASSIFICATION)
def test_classification_shapes_dtypes_and_balanced_labels(name):
    x, y = data.DATASETS[name](jax.random.key(1), N, noise=0.1)
    assert x.shape == (N, 2) and x.dtype == jnp.float32
    assert y.shape == (N,) and y.dtype == jnp.int32
    assert np.bincount(np.asarray(y)).tolist() == [201, 200]
    assert data.TASKS[name] == "classification"


@pytest.mark.parametrize("name", REGRESSION, ids=REGRESSION)
def test_regression_shapes_and_dtypes(name):
    x, y = data.DATASETS[name](jax.random.key(1), N, noise=0.1)
    assert x.shape == (N, 1 if name == "sine" else 2) and x.dtype == jnp.float32
    assert y.shape == (N, 1) and y.dtype == jnp.float32
    assert data.TASKS[name] == "regression"


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_same_key_same_data_other_key_other_data(name):
    x1, y1 = _make(name, seed=5, noise=0.1)
    x2, y2 = _make(name, seed=5, noise=0.1)
    x3, _ = _make(name, seed=6, noise=0.1)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert np.all(np.isfinite(x1)) and np.all(np.isfinite(y1))


@pytest.mark.parametrize("name", ALL, ids=ALL)
def test_noise_jitters_the_same_clean_points(name):
    x0, y0 = _make(name, seed=2, noise=0.0)
    x1, y1 = _make(name, seed=2, noise=0.2)
    # Classification: labels kept, inputs jittered; regression: inputs kept, targets jittered.
    if name in CLASSIFICATION:
        (kept0, kept1), (clean, noisy) = (y0, y1), (x0, x1)
    else:
        (kept0, kept1), (clean, noisy) = (x0, x1), (y0, y1)
    np.testing.assert_array_equal(kept0, kept1)
    assert abs(float(np.std(noisy - clean)) - 0.2) < 0.02


def test_generators_stay_float32_under_x64(x64):
    x, y = data.circle(jax.random.key(0), N)
    assert x.dtype == jnp.float32 and y.dtype == jnp.int32
    x, y = data.sine(jax.random.key(1), N, noise=0.1)
    assert x.dtype == jnp.float32 and y.dtype == jnp.float32


def test_generator_consumes_its_key():
    key = jax.random.key(0)
    data.circle(key, N)
    with pytest.raises(jax.errors.KeyReuseError):
        data.circle(key, N)


def test_load_matches_generator_and_rejects_unknown_names():
    x1, y1 = data.load("spiral", jax.random.key(3), N, noise=0.05)
    x2, y2 = data.spiral(jax.random.key(3), N, noise=0.05)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match=r"^name: .*'swirl'"):
        data.load("swirl", jax.random.key(0))
    with pytest.raises(ValueError, match="load_sklearn"):
        data.load("iris", jax.random.key(0))


# --- generators: exact geometry at noise=0 --------------------------------------------------


def test_circle_class_is_set_by_radius():
    x, y = _make("circle")
    r = np.linalg.norm(x, axis=1)
    assert np.all(r[y == 0] <= 0.5 + 1e-6)
    assert np.all((r[y == 1] >= 0.7 - 1e-6) & (r[y == 1] <= 1.0 + 1e-6))
    np.testing.assert_array_equal(y, (r > 0.6).astype(np.int32))


def test_xor_label_is_the_sign_product():
    x, y = _make("xor")
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(np.int32))
    assert np.all(np.abs(x) >= 0.05 - 1e-6) and np.all(np.abs(x) <= 1.0 + 1e-6)
    # All four quadrants are populated.
    quadrant = 2 * (x[:, 0] > 0) + (x[:, 1] > 0)
    assert set(quadrant.tolist()) == {0, 1, 2, 3}


def test_gaussians_blobs_sit_on_either_side_of_the_diagonal():
    x, y = _make("gaussians")
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1] > 0).astype(np.int32))
    np.testing.assert_allclose(x[y == 1].mean(axis=0), [0.5, 0.5], atol=0.03)
    np.testing.assert_allclose(x[y == 0].mean(axis=0), [-0.5, -0.5], atol=0.03)


def test_spiral_points_lie_on_their_arm():
    x, y = _make("spiral")
    r = np.linalg.norm(x, axis=1)
    arm = r[:, None] * np.stack([np.sin(3.5 * np.pi * r), np.cos(3.5 * np.pi * r)], axis=1)
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    np.testing.assert_allclose(x, sign * arm, atol=1e-5)


def test_moons_points_lie_on_their_half_circle():
    x, y = _make("moons")
    centre = np.where(y[:, None] == 0, [-0.5, -0.25], [0.5, 0.25])
    np.testing.assert_allclose(np.linalg.norm(x - centre, axis=1), 1.0, atol=1e-5)
    assert np.all(x[y == 0, 1] >= -0.25 - 1e-6) and np.all(x[y == 1, 1] <= 0.25 + 1e-6)


def test_plane_and_sine_targets_are_exact():
    x, y = _make("plane")
    np.testing.assert_allclose(y[:, 0], (x[:, 0] + x[:, 1]) / 2, atol=1e-6)
    assert np.all(np.abs(x) <= 1.0)
    x, y = _make("sine")
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    assert np.all(np.abs(x) <= np.pi + 1e-6)


# --- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argname", "exc"),
    [
        ({"n": 0}, "n", ValueError),
        ({"n": -3}, "n", ValueError),
        ({"n": 2.5}, "n", TypeError),
        ({"n": True}, "n", TypeError),
        ({"noise": -0.1}, "noise", ValueError),
        ({"noise": math.nan}, "noise", ValueError),
        ({"noise": math.inf}, "noise", ValueError),
        ({"noise": "0.1"}, "noise", TypeError),
    ],
    ids=["n0", "n-neg", "n-float", "n-bool", "noise-neg", "noise-nan", "noise-inf", "noise-str"],
)
@pytest.mark.parametrize("name", ["circle", "sine"], ids=["circle", "sine"])
def test_bad_generator_arguments_name_the_argument(name, kwargs, argname, exc):
    # A value of the wrong type is a TypeError, a value out of range a ValueError (jaxmlp._checks).
    with pytest.raises(exc, match=rf"^{argname}: "):
        data.DATASETS[name](jax.random.key(0), **kwargs)


@pytest.mark.parametrize("key", [0, np.zeros(2, np.uint32)], ids=["int", "numpy"])
def test_bad_key_names_the_argument(key):
    with pytest.raises(TypeError, match=r"^key: "):
        data.circle(key, N)


def test_legacy_uint32_key_is_accepted():
    x, _ = data.xor(jax.random.PRNGKey(0), N)
    assert x.shape == (N, 2)


# --- scikit-learn loaders -------------------------------------------------------------------

SKLEARN_SHAPES = {
    "digits": ((1797, 64), (1797,), 10),
    "diabetes": ((442, 10), (442, 1), None),
    "breast_cancer": ((569, 30), (569,), 2),
    "iris": ((150, 4), (150,), 3),
}


@pytest.mark.parametrize("name", data.SKLEARN_DATASETS, ids=data.SKLEARN_DATASETS)
def test_load_sklearn_shapes_and_dtypes(name):
    x, y = data.load_sklearn(name)
    x_shape, y_shape, classes = SKLEARN_SHAPES[name]
    assert isinstance(x, np.ndarray) and x.shape == x_shape and x.dtype == np.float32
    assert y.shape == y_shape
    if classes is None:
        assert y.dtype == np.float32 and data.TASKS[name] == "regression"
    else:
        assert y.dtype == np.int32 and set(np.unique(y).tolist()) == set(range(classes))


def test_load_sklearn_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"jaxmlp\[sklearn\]"):
        data.load_sklearn("iris")
    with pytest.raises(ValueError, match=r"^name: "):
        data.load_sklearn("mnist")


# --- standardisation ------------------------------------------------------------------------


def _features():
    rng = np.random.default_rng(0)
    x = rng.normal([3.0, -2.0, 0.0], [5.0, 0.01, 1.0], size=(64, 3)).astype(np.float32)
    x[:, 2] = 0.1  # a constant feature whose float mean is not exactly 0.1
    return x


def test_standardizer_round_trip_and_moments():
    x = _features()
    st = data.Standardizer.fit(x)
    assert st.mean.shape == (1, 3) and st.scale.shape == (1, 3)
    z = np.asarray(st.transform(x))
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(st.inverse_transform(z), x, rtol=1e-6, atol=1e-6)


def test_standardizer_constant_feature_maps_to_exact_zero():
    st = data.Standardizer.fit(_features())
    z = np.asarray(st.transform(_features()))
    assert float(st.scale[0, 2]) == 1.0
    assert np.all(z[:, 2] == 0.0) and np.all(np.isfinite(z))
    one_row = data.Standardizer.fit(np.array([[1.0, 2.0]], np.float32))
    np.testing.assert_array_equal(one_row.transform(np.array([[1.0, 2.0]])), [[0.0, 0.0]])


def test_standardizer_works_under_jit_and_as_a_pytree():
    x = jnp.asarray(_features())
    eager = data.Standardizer.fit(x)
    jitted = jax.jit(data.Standardizer.fit)(x)
    np.testing.assert_allclose(jitted.mean, eager.mean, rtol=1e-6)
    np.testing.assert_allclose(jitted.scale, eager.scale, rtol=1e-6)
    z = jax.jit(lambda s, v: s.transform(v))(eager, x)
    np.testing.assert_allclose(z, eager.transform(x), rtol=1e-6)


def test_standardizer_int_input_becomes_float():
    st = data.Standardizer.fit(np.arange(10).reshape(5, 2))
    assert st.mean.dtype == jnp.float32
    np.testing.assert_allclose(st.mean, [[4.0, 5.0]])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_standardizer_rejects_non_finite_data(bad):
    x = _features()
    x[3, 1] = bad
    with pytest.raises(ValueError, match=r"^x: .*NaN or Inf"):
        data.Standardizer.fit(x)


def test_standardizer_rejects_empty_data():
    with pytest.raises(ValueError, match=r"^x: "):
        data.Standardizer.fit(np.zeros((0, 3), np.float32))


# --- train/test split -----------------------------------------------------------------------


@pytest.mark.parametrize("as_jax", [False, True], ids=["numpy", "jax"])
def test_split_sizes_and_no_row_lost_or_duplicated(as_jax):
    x = np.arange(80, dtype=np.float32).reshape(40, 2)
    y = np.arange(40, dtype=np.int32)
    if as_jax:
        x, y = jnp.asarray(x), jnp.asarray(y)
    x_tr, y_tr, x_te, y_te = data.train_test_split(jax.random.key(0), x, y, 0.25)
    assert x_tr.shape == (30, 2) and y_tr.shape == (30,)
    assert x_te.shape == (10, 2) and y_te.shape == (10,)
    assert isinstance(x_tr, jax.Array) == as_jax
    rows = np.concatenate([np.asarray(x_tr), np.asarray(x_te)])
    np.testing.assert_array_equal(rows[np.argsort(rows[:, 0])], np.asarray(x))
    # Rows keep their labels, the order is shuffled, and the same key gives the same split.
    np.testing.assert_array_equal(np.asarray(x_tr)[:, 0], 2 * np.asarray(y_tr))
    assert not np.array_equal(np.asarray(y_tr), np.sort(np.asarray(y_tr)))
    again = data.train_test_split(jax.random.key(0), x, y, 0.25)
    np.testing.assert_array_equal(again[3], y_te)


@pytest.mark.parametrize(
    ("n", "fraction", "n_test"),
    [(2, 0.5, 1), (10, 0.01, 1), (10, 0.99, 9), (7, 0.3, 2)],
    ids=["two", "tiny", "huge", "rounding"],
)
def test_split_keeps_a_row_on_each_side(n, fraction, n_test):
    x = np.zeros((n, 1), np.float32)
    _, _, x_te, _ = data.train_test_split(jax.random.key(1), x, np.zeros(n), fraction)
    assert x_te.shape[0] == n_test


@pytest.mark.parametrize(
    ("n_y", "fraction", "argname"),
    [(9, 0.25, "y"), (10, 0.0, "test_fraction"), (10, 1.0, "test_fraction"), (1, 0.5, "x")],
    ids=["rows", "zero", "one", "single-row"],
)
def test_split_bad_arguments_name_the_argument(n_y, fraction, argname):
    x = np.zeros((10 if argname != "x" else 1, 2), np.float32)
    with pytest.raises(ValueError, match=rf"^{argname}: "):
        data.train_test_split(jax.random.key(0), x, np.zeros(n_y), fraction)


# --- batching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "expected"),
    [(10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (2, 5, True, 0), (0, 4, False, 0)],
    ids=["ragged", "drop", "exact", "too-few", "empty"],
)
def test_num_batches(n, batch_size, drop_last, expected):
    assert data.num_batches(n, batch_size, drop_last) == expected


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("drop_last", [False, True], ids=["keep", "drop"])
def test_batches_cover_every_row_once(shuffle, drop_last):
    n, bs = 23, 5
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.arange(n, dtype=np.int32)
    key = jax.random.key(4) if shuffle else None
    out = list(data.batches(x, y, bs, key=key, drop_last=drop_last))
    assert len(out) == data.num_batches(n, bs, drop_last)
    assert all(xb.shape == (bs, 1) for xb, _ in out[: n // bs])
    seen = np.concatenate([yb for _, yb in out])
    np.testing.assert_array_equal(np.concatenate([xb[:, 0] for xb, _ in out]), seen)
    assert len(seen) == (20 if drop_last else n) and len(set(seen.tolist())) == len(seen)
    assert np.array_equal(seen, np.arange(len(seen))) != shuffle


@given(
    n=st.integers(0, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    seed=st.none() | st.integers(0, 2**31),
)
def test_batches_partition_the_rows_for_any_sizes(n, batch_size, drop_last, seed):
    y = np.arange(n)
    key = None if seed is None else jax.random.key(seed)
    sizes, seen = [], []
    for xb, yb in data.batches(y[:, None], y, batch_size, key=key, drop_last=drop_last):
        np.testing.assert_array_equal(xb[:, 0], yb)
        sizes.append(len(yb))
        seen.extend(yb.tolist())
    assert len(sizes) == data.num_batches(n, batch_size, drop_last)
    assert all(size == batch_size for size in sizes[:-1]) and len(set(seen)) == len(seen)
    assert len(seen) == (n - n % batch_size if drop_last else n)


def test_batching_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"^batch_size: "):
        next(data.batches(np.zeros((4, 1)), np.zeros(4), 0))
    with pytest.raises(ValueError, match=r"^y: "):
        next(data.batches(np.zeros((4, 1)), np.zeros(3), 2))
    with pytest.raises(TypeError, match=r"^batch_size: "):
        data.pad_to_batches(np.zeros((4, 1)), np.zeros(4), 2.0)
    with pytest.raises(ValueError, match=r"^y: "):
        data.pad_to_batches(np.zeros((4, 1)), np.zeros(5), 2)


@pytest.mark.parametrize(("n", "bs"), [(10, 4), (8, 4), (3, 8)], ids=["ragged", "exact", "one"])
def test_pad_to_batches_shapes_mask_and_zero_padding(n, bs):
    x = np.arange(1, 2 * n + 1, dtype=np.float32).reshape(n, 2)
    y = np.arange(1, n + 1, dtype=np.int32)
    xb, yb, mask = data.pad_to_batches(x, y, bs)
    nb = data.num_batches(n, bs)
    assert xb.shape == (nb, bs, 2) and yb.shape == (nb, bs) and mask.shape == (nb, bs)
    assert yb.dtype == jnp.int32 and mask.dtype == jnp.float32
    assert float(mask.sum()) == n
    np.testing.assert_array_equal(np.asarray(xb).reshape(-1, 2)[:n], x)
    np.testing.assert_array_equal(np.asarray(xb).reshape(-1, 2)[n:], 0.0)
    np.testing.assert_array_equal(np.asarray(yb).reshape(-1)[n:], 0)
    np.testing.assert_array_equal(np.asarray(mask).reshape(-1), np.arange(nb * bs) < n)


def test_padded_rows_do_not_change_a_weighted_loss():
    x, y = np.ones((7, 1), np.float32), np.arange(7, dtype=np.float32)[:, None]
    xb, yb, mask = jax.jit(data.pad_to_batches, static_argnums=2)(x, y, 4)
    loss = get_loss("mse")
    flat = xb.reshape(-1, 1), yb.reshape(-1, 1), mask.reshape(-1)
    np.testing.assert_allclose(loss.value(*flat[:2], sample_weight=flat[2]), loss.value(x, y))
