"""gradcheck: passes on correct gradients, and each of its checks (jax.grad, finite differences,
the forward mode against jax.jvp) catches a planted bug."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import MLP, Dense, apply_manual, gradcheck, value_and_grad
from jaxmlp._core import gradcheck as gradcheck_module
from jaxmlp._core import manual_apply
from jaxmlp._core.gradcheck import TOLERANCES

# 3-4-4-2: the middle weight is square, so a transposed gradient has the right shape.
MODEL = MLP((3, 4, 4, 2), ("tanh", "gelu"), "softmax")
LOSS = "softmax_cross_entropy"


def _odd_params(model, seed, dtype="float32"):
    rng = np.random.default_rng(seed)
    return tuple(
        Dense(
            jnp.asarray(rng.normal(size=(i, o)) * 1.3 / np.sqrt(i), dtype),
            jnp.asarray(rng.normal(0, 0.5, o), dtype),
        )
        for i, o in model.layer_shapes()
    )


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    params = _odd_params(MODEL, 1)
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, 6))
    return params, x, y


def _row(report, layer, name):
    (row,) = [r for r in report.rows if r.layer == layer and r.name == name]
    return row


def _row_line(text, layer, name):
    (line,) = [ln for ln in text.splitlines() if ln.split()[:2] == [str(layer), name]]
    return line


def _broken(transform, *, when=lambda dtype: True):
    """The manual ``value_and_grad`` with ``transform`` applied to its gradient when ``when``."""
    good = value_and_grad(MODEL, LOSS)

    def grad_fn(params, x, y, sample_weight=None):
        value, grads = good(params, x, y, sample_weight)
        if when(params[0].w.dtype):
            grads = transform(list(grads))
        return value, tuple(grads)

    return grad_fn


def test_correct_gradients_pass_with_a_per_layer_table(setup):
    params, x, y = setup
    report = gradcheck(MODEL, params, x, y, LOSS)
    assert report.ok
    assert report.dtype == "float32"
    assert (report.rtol, report.atol) == TOLERANCES["float32"]
    assert [(r.layer, r.name, r.shape) for r in report.rows] == [
        (1, "w", (3, 4)),
        (1, "b", (4,)),
        (2, "w", (4, 4)),
        (2, "b", (4,)),
        (3, "w", (4, 2)),
        (3, "b", (2,)),
    ]
    text = str(report)
    assert "overall: OK" in text and "NO" not in text
    for r in report.rows:
        assert _row_line(text, r.layer, r.name).endswith("yes")
        assert r.autodiff.cosine == pytest.approx(1.0, abs=1e-6)
        assert r.finite_diff.cosine == pytest.approx(1.0, abs=1e-9)
        assert r.fd_kind == "entries"  # every block here has at most 64 entries


@pytest.mark.parametrize(
    ("model", "loss", "kwargs"),
    [
        (MLP((4, 6, 3), "relu"), "mse", {"l2": 0.1, "sample_weight": True}),
        (MLP((2, 5, 2), "elu", "sigmoid"), "sigmoid_binary_cross_entropy", {}),
    ],
    ids=["relu-mse-l2-weights", "elu-sigmoid-bce"],
)
def test_more_correct_cases_pass(model, loss, kwargs):
    rng = np.random.default_rng(2)
    params = _odd_params(model, 3)
    x = jnp.asarray(rng.normal(size=(5, model.sizes[0])), jnp.float32)
    if loss == "mse":
        y = jnp.asarray(rng.normal(size=(5, model.sizes[-1])), jnp.float32)
    else:
        y = jnp.asarray(rng.integers(0, 2, (5, model.sizes[-1])), jnp.float32)
    if kwargs.pop("sample_weight", False):
        kwargs["sample_weight"] = jnp.asarray([1.0, 0.0, 2.0, 0.5, 1.0])
    report = gradcheck(model, params, x, y, loss, entrywise_max=8, **kwargs)
    assert report.ok, str(report)
    kinds = {(r.layer, r.name): r.fd_kind for r in report.rows}
    assert kinds[1, "w"] == "directions"  # more than 8 entries: random directions only
    assert kinds[model.num_layers, "b"] == "entries"


def test_float64_params_use_the_float64_tolerances(x64):
    model = MLP((3, 4, 2), "tanh")
    rng = np.random.default_rng(4)
    params = _odd_params(model, 5, "float64")
    x = jnp.asarray(rng.normal(size=(4, 3)))
    y = jnp.asarray(rng.normal(size=(4, 2)))
    report = gradcheck(model, params, x, y, "huber")
    assert report.ok and report.dtype == "float64"
    assert (report.rtol, report.atol) == TOLERANCES["float64"]
    assert max(r.autodiff.max_rel for r in report.rows) < 1e-12


def _double_bias_2(g):
    g[1] = g[1]._replace(b=2 * g[1].b)
    return g


def _transpose_w_2(g):
    g[1] = g[1]._replace(w=g[1].w.T)
    return g


def _scale_w_3(g):
    g[2] = g[2]._replace(w=1.01 * g[2].w)
    return g


@pytest.mark.parametrize(
    ("bug", "layer", "name"),
    [(_double_bias_2, 2, "b"), (_transpose_w_2, 2, "w"), (_scale_w_3, 3, "w")],
    ids=["double-bias-2", "transpose-w-2", "scale-w-3-by-1.01"],
)
def test_planted_bug_is_caught_in_its_row(setup, bug, layer, name):
    params, x, y = setup
    report = gradcheck(MODEL, params, x, y, LOSS, grad_fn=_broken(bug))
    assert not report.ok
    text = str(report)
    assert "overall: MISMATCH" in text
    for r in report.rows:
        bad = (r.layer, r.name) == (layer, name)
        # both references disagree with the broken gradient, and only in its block
        assert r.autodiff.ok is not bad and r.finite_diff.ok is not bad
        assert _row_line(text, r.layer, r.name).endswith("NO" if bad else "yes")
    row = _row(report, layer, name)
    assert row.autodiff.max_rel > 1e-3
    if bug is _transpose_w_2:
        assert row.autodiff.cosine < 0.99
    else:
        # a rescaling keeps the direction: only the magnitudes give it away
        assert row.autodiff.cosine == pytest.approx(1.0, abs=1e-6)


def test_autodiff_check_alone_catches_a_float32_only_bug(setup):
    # Wrong in float32 (compared with jax.grad), right in float64 (compared with differences).
    params, x, y = setup
    grad_fn = _broken(_double_bias_2, when=lambda dtype: dtype == jnp.float32)
    row = _row(gradcheck(MODEL, params, x, y, LOSS, grad_fn=grad_fn), 2, "b")
    assert not row.autodiff.ok and row.finite_diff.ok


def test_finite_difference_check_alone_catches_a_float64_only_bug(setup):
    # Right in float32 (so jax.grad agrees), wrong in the float64 recomputation.
    params, x, y = setup
    grad_fn = _broken(_scale_w_3, when=lambda dtype: dtype == jnp.float64)
    report = gradcheck(MODEL, params, x, y, LOSS, grad_fn=grad_fn)
    row = _row(report, 3, "w")
    assert row.autodiff.ok and not row.finite_diff.ok
    assert not report.ok and _row_line(str(report), 3, "w").endswith("NO")


# --- forward mode: the hand-written JVP against jax.jvp ----------------------------------------


def test_forward_mode_is_checked_per_block_and_for_x(setup):
    params, x, y = setup
    report = gradcheck(MODEL, params, x, y, LOSS)
    text = str(report)
    for r in report.rows:
        assert r.forward_mode is not None and r.forward_mode.ok
        assert r.forward_mode.cosine == pytest.approx(1.0, abs=1e-6)
    fx = report.input_forward_mode
    assert fx is not None and fx.ok and fx.cosine == pytest.approx(1.0, abs=1e-6)
    assert "jvp vs jax.jvp" in text
    (x_line,) = [ln for ln in text.splitlines() if ln.split()[:2] == ["input", "x"]]
    assert x_line.endswith("yes")


def _broken_jvp(where):
    """``jax.jvp`` of ``apply_manual`` with one block of the tangent doubled: a parameter block
    ``(layer, name)`` (1-based layer) or ``"x"``."""

    def jvp_fn(params, x, dparams, dx):
        if where == "x":
            dx = 2 * dx
        else:
            layer, name = where
            dparams = list(dparams)
            block = getattr(dparams[layer - 1], name)
            dparams[layer - 1] = dparams[layer - 1]._replace(**{name: 2 * block})
        f = lambda p, xx: apply_manual(MODEL, p, xx)  # noqa: E731
        return jax.jvp(f, (params, x), (tuple(dparams), dx))[1]

    return jvp_fn


@pytest.mark.parametrize("where", [(1, "w"), (2, "b"), "x"], ids=["w-1", "b-2", "x"])
def test_planted_forward_mode_bug_is_caught_in_its_row(setup, where):
    params, x, y = setup
    report = gradcheck(MODEL, params, x, y, LOSS, jvp_fn=_broken_jvp(where))
    assert not report.ok and "overall: MISMATCH" in str(report)
    fx = report.input_forward_mode
    assert fx is not None and fx.ok is (where != "x")
    for r in report.rows:
        bad = (r.layer, r.name) == where
        # the gradient checks know nothing of the forward mode
        assert r.autodiff.ok and r.finite_diff.ok
        assert r.forward_mode is not None and r.forward_mode.ok is not bad
        assert _row_line(str(report), r.layer, r.name).endswith("NO" if bad else "yes")


def test_a_bug_in_the_tangent_pass_itself_is_caught(setup, monkeypatch):
    # The default check runs the library's own tangent pass: plant a bug there (the last layer's
    # bias tangent dropped), with the compiled program rebuilt rather than cached.
    params, x, y = setup
    good = manual_apply.tangent

    def bad(model, params, trace, dparams, dx):
        if dparams is not None and dparams[-1] is not None:
            dparams = (*dparams[:-1], dparams[-1]._replace(b=None))
        return good(model, params, trace, dparams, dx)

    monkeypatch.setattr(manual_apply, "tangent", bad)
    monkeypatch.setattr(gradcheck_module, "_jvp_program", gradcheck_module._jvp_program.__wrapped__)
    report = gradcheck(MODEL, params, x, y, LOSS)
    assert not report.ok
    for r in report.rows:
        assert r.forward_mode is not None and r.forward_mode.ok is ((r.layer, r.name) != (3, "b"))
    assert report.input_forward_mode is not None and report.input_forward_mode.ok


def test_jvp_fn_must_be_callable(setup):
    params, x, y = setup
    with pytest.raises(TypeError, match="jvp_fn: expected a callable"):
        gradcheck(MODEL, params, x, y, LOSS, jvp_fn="jax.jvp")  # pyright: ignore[reportArgumentType]
