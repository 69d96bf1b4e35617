"""Tests for any objective through the engine, custom losses without a hand-written gradient, and
continuing a fit from its result (jaxmlp._core.objective, jaxmlp._train.fit)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp
from jaxmlp._core.objective import objective_value_and_grad

MODEL = jaxmlp.MLP((2, 8, 1), activation="tanh")


def mse_rows(apply, params, rows):
    """The MSE loss written as an objective: the engine must train it exactly as loss="mse"."""
    return jnp.mean((apply(params, rows["x"]) - rows["y"]) ** 2, axis=-1)


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.key(0), (50, 2))
    return x, jnp.sin(x[:, :1]) * x[:, 1:]


@pytest.mark.parametrize("method", ["manual", "autodiff"])
def test_an_objective_trains_as_the_equivalent_loss(data, method):
    # Same rows, weights, padding, orders and validation: the same run as loss="mse".
    x, y = data
    params = MODEL.init(jax.random.key(1))
    common = dict(epochs=4, batch_size=16, method=method, progress=False,
                  optimizer=optax.adam(0.01), sample_weight=jnp.linspace(0, 1, 50))  # fmt: skip
    ref = jaxmlp.fit(MODEL, params, x, y, loss="mse", key=jax.random.key(2),
                     validation_data=(x[:10], y[:10]), **common)  # fmt: skip
    got = jaxmlp.fit(MODEL, params, {"x": x, "y": y}, loss=mse_rows, key=jax.random.key(2),
                     validation_data={"x": x[:10], "y": y[:10]}, **common)  # fmt: skip
    chex.assert_trees_all_close(got.params, ref.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.history["loss"], ref.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(got.history["val_loss"], ref.history["val_loss"], rtol=1e-5)
    assert got.metric == "none" and np.isnan(got.history["val_metric"]).all()


@pytest.mark.slow  # a long hypothesis run (eight compiled programs and an eager jax.grad each)
@settings(max_examples=8)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    act=st.sampled_from(["tanh", "sigmoid", "relu", "gelu"]),
    seed=st.integers(0, 2**16),
)
def test_objective_gradients_match_jax_grad_in_both_methods(sizes, act, seed):
    # A PINN-like objective with an input derivative inside: manual (apply_manual's backward) and
    # autodiff give jax.grad's gradient of the same function, in float64.
    with jax.enable_x64(True):
        model = jaxmlp.MLP(tuple(sizes), activation=act, param_dtype="float64")
        params = model.init(jax.random.key(seed))
        rows = {"x": jax.random.normal(jax.random.key(seed + 1), (7, sizes[0]), jnp.float64)}

        def objective(apply, params, rows):
            u = lambda x: jnp.sum(apply(params, x[None]) ** 2)  # noqa: E731
            du = jax.vmap(jax.grad(u))(rows["x"])
            return jnp.sum(du**2, axis=1) + jnp.sum(apply(params, rows["x"]), axis=1)

        want = jax.grad(
            lambda p: (
                jnp.mean(objective(model.apply, p, rows)) + 0.05 * sum(jnp.sum(l.w**2) for l in p)
            )
        )(params)
        w = jnp.ones((7,), jnp.float64)
        for method in ("manual", "autodiff"):
            vg = objective_value_and_grad(model, jaxmlp.Objective(objective), method, 0.1)
            _, grads = jax.jit(vg)(params, rows, None, w)
            chex.assert_trees_all_close(grads, want, rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # trains 150 epochs with second derivatives; the gradient checks stay fast
def test_a_pinn_solves_poisson_and_ensembles_take_objectives():
    # u'' = -pi^2 sin(pi x) on [0, 1], u(0) = u(1) = 0: the solution is sin(pi x).
    model = jaxmlp.MLP((1, 16, 1), activation="tanh")

    def poisson(apply, params, rows):
        u = lambda x: apply(params, x[None])[0, 0]  # noqa: E731
        u_xx = jax.vmap(lambda x: jax.hessian(u)(x)[0, 0])(rows["x"])
        edge = (
            jax.vmap(u)(jnp.zeros_like(rows["x"])) ** 2 + jax.vmap(u)(jnp.ones_like(rows["x"])) ** 2
        )
        return (u_xx + jnp.pi**2 * jnp.sin(jnp.pi * rows["x"][:, 0])) ** 2 + edge

    xs = jnp.linspace(0, 1, 32)[:, None]
    r = jaxmlp.fit(model, model.init(jax.random.key(3)), {"x": xs}, loss=poisson,
                   key=jax.random.key(4), epochs=150, batch_size=32, optimizer=optax.adam(2e-2),
                   progress=False)  # fmt: skip
    err = jnp.max(jnp.abs(model.apply(r.params, xs)[:, 0] - jnp.sin(jnp.pi * xs[:, 0])))
    assert r.history["loss"][-1] < 1e-2 * r.history["loss"][0] and float(err) < 0.05
    ens = jaxmlp.fit_ensemble(model, {"x": xs}, num_models=2, loss=poisson, key=jax.random.key(5),
                              epochs=3, batch_size=16, optimizer=optax.adam(2e-2), progress=False)  # fmt: skip
    assert ens.history["loss"].shape == (3, 2) and np.isfinite(ens.history["loss"]).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(y=jnp.zeros((50, 1))), ValueError, r"^y: an objective"),
        (dict(x={"x": jnp.zeros((50, 2)), "y": jnp.zeros((49, 1))}), ValueError, r"^x: every leaf"),
        (
            dict(x={"x": jnp.full((50, 2), jnp.nan), "y": jnp.zeros((50, 1))}),
            ValueError,
            r"^x\['x'\]: contains NaN",
        ),
        (dict(loss=lambda apply, p, rows: apply(p, rows["x"])), ValueError, r"one value per row"),
    ],
    ids=["y-given", "ragged-rows", "nan-rows", "not-per-row"],
)
def test_objective_errors_name_the_argument(data, kwargs, exc, match):
    x, y = data
    args = dict(x={"x": x, "y": y}, loss=mse_rows) | kwargs
    with pytest.raises(exc, match=match):
        jaxmlp.fit(MODEL, MODEL.init(jax.random.key(6)), args.pop("x"), args.pop("y", None),
                   key=jax.random.key(7), epochs=1, progress=False, **args)  # fmt: skip
    with pytest.raises(TypeError, match=r"^y: a loss needs targets"):
        jaxmlp.fit(MODEL, MODEL.init(jax.random.key(6)), x, loss="mse", key=jax.random.key(8))


# --- custom losses without a hand-written gradient ---------------------------------------------


def _quantile(q):
    def per_example(out, y):
        d = y - out
        return jnp.mean(jnp.maximum(q * d, (q - 1) * d), axis=-1)

    return per_example


@pytest.mark.parametrize("method", ["manual", "autodiff"])
def test_a_loss_needs_no_hand_written_gradient(data, method):
    x, y = data
    loss = jaxmlp.Loss("pinball", _quantile(0.9))
    vg = jaxmlp.value_and_grad(MODEL, loss, method=method)
    params = MODEL.init(jax.random.key(9))
    value, grads = vg(params, x, y)
    want = jax.value_and_grad(lambda p: jnp.mean(_quantile(0.9)(MODEL.apply(p, x), y)))(params)
    chex.assert_trees_all_close((value, grads), want, rtol=1e-5, atol=1e-7)
    r = jaxmlp.fit(MODEL, params, x, y, loss=loss, key=jax.random.key(10), epochs=30,
                   optimizer=optax.adam(0.02), method=method, progress=False)  # fmt: skip
    # A 0.9 quantile fit leaves about 90% of the targets below the prediction.
    below = float(jnp.mean(y <= MODEL.apply(r.params, x)))
    assert 0.75 < below <= 1.0, below
    per = jaxmlp.per_example_grads(MODEL, loss)(params, x[:3], y[:3])
    assert per[0].w.shape == (3, 2, 8)


def test_a_wrong_hand_written_gradient_is_refused_before_training(data):
    x, y = data
    right = jaxmlp.Loss("sq", lambda o, t: jnp.sum((o - t) ** 2, -1), lambda o, t: 2 * (o - t))
    wrong = right._replace(name="sq_wrong", per_example_grad=lambda o, t: -2 * (o - t))
    params = MODEL.init(jax.random.key(11))
    jaxmlp.fit(MODEL, params, x, y, loss=right, key=jax.random.key(12), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^loss: per_example_grad of 'sq_wrong' disagrees"):
        jaxmlp.fit(
            MODEL, params, x, y, loss=wrong, key=jax.random.key(13), epochs=1, progress=False
        )
    bad_shape = right._replace(name="sq_shape", per_example_grad=lambda o, t: (o - t)[:, 0])
    with pytest.raises(ValueError, match=r"^loss: per_example_grad of 'sq_shape' returns shape"):
        jaxmlp.fit_ensemble(MODEL, x, y, num_models=2, loss=bad_shape, key=jax.random.key(14))


# --- continuing a run ---------------------------------------------------------------------------


@pytest.mark.parametrize("stopping", [False, True], ids=["plain", "early-stopping"])
def test_continuing_a_fit_equals_one_longer_run(data, stopping):
    x, y = data
    params = MODEL.init(jax.random.key(15))
    schedule = optax.exponential_decay(0.05, transition_steps=4, decay_rate=0.8)
    common = dict(loss="mse", batch_size=16, optimizer=optax.adam(schedule), progress=False,
                  validation_data=(x[:10], y[:10]),
                  early_stopping=jaxmlp.EarlyStopping(patience=40) if stopping else None)  # fmt: skip
    whole = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(16), epochs=9, **common)
    first = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(16), epochs=4, **common)
    first_params = jax.tree.map(np.asarray, first.params)
    # The key given now is ignored: the run goes on with its own, as a resumed checkpoint does.
    more = jaxmlp.fit(MODEL, first, x, y, key=jax.random.key(99), epochs=9, **common)
    chex.assert_trees_all_equal(more.params, whole.params)
    chex.assert_trees_all_equal(more.opt_state, whole.opt_state)  # the schedule's count went on
    assert more.history == whole.history and more.step == whole.step == 36
    assert more.best_epoch == whole.best_epoch
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, first.params), first_params)  # intact


def test_continuing_refuses_another_model_or_optimizer(data):
    x, y = data
    first = jaxmlp.fit(MODEL, MODEL.init(jax.random.key(17)), x, y, loss="mse",
                       key=jax.random.key(18), epochs=1, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"^optimizer: "):
        jaxmlp.fit(MODEL, first, x, y, loss="mse", key=jax.random.key(19), epochs=2,
                   optimizer=optax.adam(0.1), progress=False)  # fmt: skip
    other = jaxmlp.MLP((2, 8, 1), activation="relu")
    with pytest.raises(ValueError, match=r"^params: "):
        jaxmlp.fit(other, first, x, y, loss="mse", key=jax.random.key(20), epochs=2, progress=False)


# --- the objective examples, in short form ------------------------------------------------------


def _example(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / name
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pinn_example_learns_the_heat_equation():
    out = _example("06_pinn.py").main(epochs=150)
    assert out["final_loss"] < 0.05 * out["first_loss"]
    assert out["max_error"] < 0.2 and out["rms_error"] < 0.05, out


@pytest.mark.slow
def test_neural_field_example_fourier_features_beat_coordinates():
    out = _example("07_neural_field.py").main(epochs=10)
    assert out["psnr"]["fourier"] > out["psnr"]["coordinates"] + 10, out


def test_history_records_the_learning_rate_an_optimizer_exposes(data):
    x, y = data
    schedule = optax.exponential_decay(0.1, transition_steps=4, decay_rate=0.5)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    r = jaxmlp.fit(MODEL, MODEL.init(jax.random.key(21)), x, y, loss="mse", key=jax.random.key(22),
                   epochs=3, batch_size=25, optimizer=opt, progress=False)  # fmt: skip
    # Two steps per epoch; the stored rate is the one the epoch's last step used.
    np.testing.assert_allclose(
        r.history["learning_rate"], [schedule(1), schedule(3), schedule(5)], rtol=1e-6
    )
    plain = jaxmlp.fit(MODEL, MODEL.init(jax.random.key(23)), x, y, loss="mse",
                       key=jax.random.key(24), epochs=1, progress=False)  # fmt: skip
    assert "learning_rate" not in plain.history
    sweep = jaxmlp.fit_ensemble(MODEL, x, y, num_models=2, loss="mse", key=jax.random.key(25),
                                learning_rates=[0.1, 0.2], epochs=2, progress=False)  # fmt: skip
    np.testing.assert_allclose(sweep.history["learning_rate"], [[0.1, 0.2]] * 2, rtol=1e-6)
