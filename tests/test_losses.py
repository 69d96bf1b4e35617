"""Losses: values vs independent NumPy formulas, gradients vs ``jax.grad``, reductions, weights."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp._core.losses import CLASSIFICATION_LOSSES, LOSSES, Loss, get_loss

# (rtol, atol) per dtype: values against float64 NumPy formulas, gradients against jax.grad.
TOLERANCES = {"float32": (2e-6, 1e-7), "float64": (1e-12, 1e-15)}

N, K = 6, 3
_rng = np.random.default_rng(1234)
OUT = _rng.normal(0.2, 1.5, (N, K))
Y_REG = _rng.normal(0.0, 1.0, (N, K))
LABELS = _rng.integers(0, K, N)
PROBS = _rng.dirichlet(np.ones(K), N)
Y_01 = _rng.integers(0, 2, (N, K)).astype(np.float64)
Y_SOFT = _rng.uniform(0, 1, (N, K))
WEIGHTS = _rng.uniform(0.2, 2.0, N)

# (loss, target name) -> targets; every loss with each kind of target it accepts.
CASES = {
    **{(name, "float"): Y_REG for name in ("sse", "mse", "half_mse", "mae", "huber")},
    ("softmax_cross_entropy", "labels"): LABELS,
    ("softmax_cross_entropy", "probs"): PROBS,
    ("sigmoid_binary_cross_entropy", "binary"): Y_01,
    ("sigmoid_binary_cross_entropy", "soft"): Y_SOFT,
}
CASE_IDS = [f"{loss}-{t}" for loss, t in CASES]


def _log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _per_example(name: str, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's loss, written independently of jaxmlp (float64 NumPy)."""
    r = out - y if name not in CLASSIFICATION_LOSSES else None
    if name == "sse":
        return (r**2).sum(axis=1)
    if name == "mse":
        return (r**2).mean(axis=1)
    if name == "half_mse":
        return 0.5 * (r**2).mean(axis=1)
    if name == "mae":
        return np.abs(r).mean(axis=1)
    if name == "huber":
        return np.where(np.abs(r) <= 1.0, 0.5 * r**2, np.abs(r) - 0.5).mean(axis=1)
    if name == "softmax_cross_entropy":
        onehot = np.eye(out.shape[1])[y] if y.ndim == 1 else y
        return -(onehot * _log_softmax(out)).sum(axis=1)
    if name == "sigmoid_binary_cross_entropy":
        s = 1 / (1 + np.exp(-out))
        return (-(y * np.log(s) + (1 - y) * np.log(1 - s))).mean(axis=1)
    raise AssertionError(name)


def _reference_value(name, out, y, weights=None):
    per = _per_example(name, out, y)
    w = np.ones(len(per)) if weights is None else weights
    if name == "sse":
        return float((w * per).sum())
    return float((w * per).sum() / w.sum())


@functools.cache
def _evaluate(dtype: str):
    """value, grad and jax.grad(value) for every case, with and without weights (one compile)."""

    def run(out, targets, weights):
        result = {}
        for (name, kind), y in targets.items():
            loss = get_loss(name)
            for weighted in (False, True):
                sw = weights if weighted else None
                result[name, kind, weighted] = {
                    "value": loss.value(out, y, sw),
                    "grad": loss.grad(out, y, sw),
                    "autodiff": jax.grad(loss.value)(out, y, sw),
                }
        return result

    with jax.enable_x64(dtype == "float64"):
        targets = {
            key: jnp.asarray(y) if y.dtype.kind == "i" else jnp.asarray(y, dtype)
            for key, y in CASES.items()
        }
        res = jax.jit(run)(jnp.asarray(OUT, dtype), targets, jnp.asarray(WEIGHTS, dtype))
        return jax.tree.map(np.asarray, res)


def test_every_loss_is_covered():
    assert {name for name, _ in CASES} == set(LOSSES)


def test_data_reaches_both_huber_regions():
    r = np.abs(OUT - Y_REG)
    assert (r < 1).any() and (r > 1).any()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES), ids=CASE_IDS)
def test_value_matches_independent_formula(case, dtype, weighted):
    got = _evaluate(dtype)[(*case, weighted)]["value"]
    want = _reference_value(case[0], OUT, CASES[case], WEIGHTS if weighted else None)
    rtol, atol = TOLERANCES[dtype]
    assert got.dtype == np.dtype(dtype) and got.shape == ()
    np.testing.assert_allclose(got, want, rtol=rtol * 2, atol=atol)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES), ids=CASE_IDS)
def test_grad_matches_jax_grad_of_value(case, dtype, weighted):
    r = _evaluate(dtype)[(*case, weighted)]
    rtol, atol = TOLERANCES[dtype]
    scale = np.abs(r["autodiff"]).max()
    assert r["grad"].shape == (N, K) and r["grad"].dtype == np.dtype(dtype)
    assert scale > 0
    np.testing.assert_allclose(r["grad"], r["autodiff"], rtol=rtol, atol=atol * scale)


def _value(name, out, y, sw=None):
    return float(get_loss(name).value(jnp.asarray(out), jnp.asarray(y), sw))


def test_reductions_by_hand():
    out = np.asarray([[1.0, 2.0], [0.0, -1.0]])
    y = np.asarray([[0.0, 0.0], [0.0, 1.0]])
    # squared residuals 1, 4, 0, 4: sum 9 over 2 samples x 2 outputs
    assert _value("sse", out, y) == pytest.approx(9.0)
    assert _value("mse", out, y) == pytest.approx(9.0 / 4)
    assert _value("half_mse", out, y) == pytest.approx(9.0 / 8)
    assert _value("mae", out, y) == pytest.approx((1 + 2 + 0 + 2) / 4)


def test_huber_is_quadratic_inside_and_linear_outside_delta_one():
    out = np.asarray([[0.3], [2.5], [-4.0]])
    y = np.zeros((3, 1))
    # 0.5 * 0.3^2, then |r| - 0.5 for |r| > 1
    per = [0.5 * 0.09, 2.5 - 0.5, 4.0 - 0.5]
    assert _value("huber", out, y) == pytest.approx(np.mean(per))
    grad = np.asarray(get_loss("huber").grad(jnp.asarray(out), jnp.asarray(y)))
    np.testing.assert_allclose(grad[:, 0], np.asarray([0.3, 1.0, -1.0]) / 3, rtol=1e-6)


def test_softmax_cross_entropy_labels_equal_one_hot():
    loss = get_loss("softmax_cross_entropy")
    out = jnp.asarray(OUT, jnp.float32)
    onehot = jax.nn.one_hot(LABELS, K)
    assert float(loss.value(out, jnp.asarray(LABELS))) == pytest.approx(
        float(loss.value(out, onehot)), rel=1e-6
    )
    np.testing.assert_allclose(
        loss.grad(out, jnp.asarray(LABELS)), loss.grad(out, onehot), rtol=1e-6, atol=1e-8
    )
    # the fused gradient (softmax(z) - y) / n
    p = np.exp(_log_softmax(OUT))
    np.testing.assert_allclose(
        loss.grad(out, onehot), (p - np.eye(K)[LABELS]) / N, rtol=1e-5, atol=1e-7
    )


def test_binary_cross_entropy_matches_the_probability_form():
    s = 1 / (1 + np.exp(-OUT))
    for y in (Y_01, Y_SOFT):
        want = np.mean(-(y * np.log(s) + (1 - y) * np.log(1 - s)))
        assert _value("sigmoid_binary_cross_entropy", OUT, y) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("case", list(CASES), ids=CASE_IDS)
def test_zero_weights_equal_dropping_the_rows(case):
    name, _ = case
    loss = get_loss(name)
    y = CASES[case]
    keep = np.asarray([True, False, True, True, False, True])
    w = np.where(keep, WEIGHTS, 0.0)
    out = jnp.asarray(OUT, jnp.float32)
    yj = jnp.asarray(y) if y.dtype.kind == "i" else jnp.asarray(y, jnp.float32)
    value = loss.value(out, yj, jnp.asarray(w, jnp.float32))
    grad = np.asarray(loss.grad(out, yj, jnp.asarray(w, jnp.float32)))
    kept_w = jnp.asarray(WEIGHTS[keep], jnp.float32)
    value_kept = loss.value(out[keep], yj[keep], kept_w)
    grad_kept = np.asarray(loss.grad(out[keep], yj[keep], kept_w))
    np.testing.assert_allclose(value, value_kept, rtol=1e-6)
    np.testing.assert_allclose(grad[keep], grad_kept, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(grad[~keep], 0.0)


def test_all_zero_weights_give_zero_not_nan():
    loss = get_loss("mse")
    out, y = jnp.asarray(OUT, jnp.float32), jnp.asarray(Y_REG, jnp.float32)
    zeros = jnp.zeros((N,), jnp.float32)
    assert float(loss.value(out, y, zeros)) == 0.0
    np.testing.assert_array_equal(loss.grad(out, y, zeros), 0.0)


def test_sum_reduction_weights_each_example():
    w = jnp.asarray(WEIGHTS, jnp.float32)
    want = float((WEIGHTS * ((OUT - Y_REG) ** 2).sum(axis=1)).sum())
    assert _value("sse", OUT.astype(np.float32), Y_REG.astype(np.float32), w) == pytest.approx(
        want, rel=1e-6
    )


def test_weights_scale_free_for_the_mean():
    out, y = jnp.asarray(OUT, jnp.float32), jnp.asarray(Y_REG, jnp.float32)
    w = jnp.asarray(WEIGHTS, jnp.float32)
    assert _value("mse", out, y, w) == pytest.approx(_value("mse", out, y, 7.0 * w), rel=1e-6)
    assert _value("mse", out, y, jnp.ones((N,))) == pytest.approx(_value("mse", out, y), rel=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["plus", "minus"])
@pytest.mark.parametrize("name", CLASSIFICATION_LOSSES)
def test_huge_logits_stay_finite(name, sign):
    loss = get_loss(name)
    z = jnp.asarray([[sign * 1e4, -sign * 1e4, 0.0], [1e4, 1e4, -1e4]], jnp.float32)
    if name == "softmax_cross_entropy":
        y = jnp.asarray([1, 2])
        # -log softmax(z)_y = logsumexp(z) - z_y, per row, then the mean over the two rows
        row1 = 2e4 if sign > 0 else 0.0
        want = (row1 + 2e4 + np.log(2.0)) / 2
    else:
        y = jnp.asarray([[0.0, 1.0, 0.5], [1.0, 0.0, 1.0]], jnp.float32)
        # softplus(z) - y z per entry, then the mean over all six entries
        row1 = 2e4 + np.log(2.0) if sign > 0 else np.log(2.0)
        want = (row1 + 2e4) / 6
    value = loss.value(z, y)
    grad = loss.grad(z, y)
    autodiff = jax.grad(loss.value)(z, y)
    assert np.isfinite(value) and np.isfinite(grad).all() and np.isfinite(autodiff).all()
    assert float(value) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(grad, autodiff, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["cross_entropy", "MSE", ""], ids=repr)
def test_unknown_loss_lists_valid_names(name):
    with pytest.raises(ValueError, match="loss") as err:
        get_loss(name)
    for valid in LOSSES:
        assert repr(valid) in str(err.value)


def test_non_name_is_a_type_error():
    with pytest.raises(TypeError, match="loss"):
        get_loss(3)


def test_custom_loss_passes_through_and_bad_reduction_is_rejected():
    custom = Loss("l4", lambda o, y: jnp.sum((o - y) ** 4, -1), lambda o, y: 4 * (o - y) ** 3)
    assert get_loss(custom) is custom
    with pytest.raises(ValueError, match="reduction"):
        get_loss(custom._replace(reduction="max"))
