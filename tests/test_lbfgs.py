"""Tests for jaxmlp.fit_lbfgs: full-batch L-BFGS in one compiled loop, its budgets and stopping
rules, both gradient methods, float64."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp import fit_lbfgs
from jaxmlp._train.lbfgs import STATUS

MODEL = jaxmlp.MLP((4, 8, 3), "tanh", "softmax")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)
    return x, y


def test_converges_and_reports_the_objective(data):
    x, y = data
    params = MODEL.init(jax.random.key(0))
    r = fit_lbfgs(MODEL, params, x, y, loss="softmax_cross_entropy", max_iter=200, tol=1e-3,
                  l2=1e-3)  # fmt: skip
    assert r.converged and 0 < r.n_iter < 200 and r.n_fun >= r.n_iter + 1
    start = jaxmlp.loss_fn(MODEL, "softmax_cross_entropy", l2=1e-3)(params, x, y)
    at_end = jaxmlp.loss_fn(MODEL, "softmax_cross_entropy", l2=1e-3)(r.params, x, y)
    np.testing.assert_allclose(r.loss, float(at_end), rtol=1e-6)
    assert r.loss < 0.5 * float(start)
    if r.status == 0:  # stopped on the gradient: its largest entry is within tol
        _, grads = jaxmlp.value_and_grad(MODEL, "softmax_cross_entropy", l2=1e-3)(r.params, x, y)
        assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) <= 1e-3


def test_manual_and_autodiff_gradients_take_the_same_path(data):
    x, y = data
    params = MODEL.init(jax.random.key(1))
    kw = dict(loss="softmax_cross_entropy", max_iter=20, tol=0.0, l2=1e-3)
    a = fit_lbfgs(MODEL, params, x, y, method="manual", **kw)
    b = fit_lbfgs(MODEL, params, x, y, method="autodiff", **kw)
    assert (a.n_iter, a.status) == (b.n_iter, b.status) == (20, 2)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-3, atol=1e-4)


def test_budgets_stop_the_run(data):
    x, y = data
    params = MODEL.init(jax.random.key(2))
    r = fit_lbfgs(MODEL, params, x, y, loss="softmax_cross_entropy", max_iter=3, tol=0.0)
    assert (r.n_iter, r.status, r.converged) == (3, 2, False)
    assert r.message == STATUS[2]
    r = fit_lbfgs(MODEL, params, x, y, loss="softmax_cross_entropy", max_fun=5, tol=0.0)
    assert r.status == 3 and 5 <= r.n_fun <= 5 + 20 and r.n_iter < 5


def test_float64_under_x64(x64, data):
    x, y = data
    model = jaxmlp.MLP((4, 8, 3), "tanh", "softmax", param_dtype="float64")
    r = fit_lbfgs(model, model.init(jax.random.key(0)), x.astype(np.float64), y,
                  loss="softmax_cross_entropy", max_iter=50, tol=1e-6)  # fmt: skip
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(r.params))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(max_fun=1.5), TypeError, "max_fun"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(method="numeric"), ValueError, "method"),
        (dict(l2=float("nan")), ValueError, "l2"),
    ],
    ids=["max_iter", "max_fun", "tol", "method", "l2"],
)
def test_bad_arguments_raise_naming_them(data, kwargs, error, match):
    x, y = data
    params = MODEL.init(jax.random.key(0))
    with pytest.raises(error, match=match):
        fit_lbfgs(MODEL, params, x, y, loss="softmax_cross_entropy", **kwargs)
