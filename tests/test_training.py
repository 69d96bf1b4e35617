"""Tests for jaxmlp._train.fit: the jitted step, the fused fit, early stopping, divergence."""

from __future__ import annotations

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp._engine.orders import epoch_permutations, order_seed
from jaxmlp._engine.step import TRACE_COUNTS

REG = jaxmlp.MLP((3, 8, 2), activation="tanh")
CLS = jaxmlp.MLP((2, 8, 3), activation="relu", output_activation="softmax")


def regression_data(seed: int, n: int = 50):
    kx, kn = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1) + 0.01 * jax.random.normal(
        kn, (n, 2)
    )
    return x, y


def class_data(seed: int, n: int = 60):
    x = jax.random.normal(jax.random.key(seed), (n, 2))
    y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 1).astype(jnp.int32)
    return x, y


def trees_equal(a, b) -> bool:
    return all(
        bool(jnp.array_equal(p, q))
        for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def reg():
    x, y = regression_data(1)
    return x, y, REG.init(jax.random.key(2))


def test_train_step_is_gradient_descent(reg):
    x, y, params = reg
    step = jaxmlp.make_train_step(REG, "mse", optax.sgd(0.1))
    state = jaxmlp.TrainState.create(params, optax.sgd(0.1))
    new_state, loss = step(state, x, y)
    value, grads = jaxmlp.value_and_grad(REG, "mse")(params, x, y)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    chex.assert_trees_all_close(new_state.params, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loss, value, rtol=1e-6)
    assert int(new_state.step) == 1
    # Donation consumed the state's copy, never the caller's parameters.
    assert np.isfinite(np.asarray(params[0].w)).all()


def test_default_optimizer_is_sgd_with_documented_rate(reg):
    x, y, params = reg
    step = jaxmlp.make_train_step(REG, "mse")
    new_state, _ = step(jaxmlp.TrainState.create(params), x, y)
    _, grads = jaxmlp.value_and_grad(REG, "mse")(params, x, y)
    expected = jax.tree.map(lambda p, g: p - jaxmlp.DEFAULT_LEARNING_RATE * g, params, grads)
    chex.assert_trees_all_close(new_state.params, expected, rtol=1e-6, atol=1e-7)


def test_fit_learns_and_keeps_callers_params(reg):
    x, y, params = reg
    before = jax.tree.map(np.asarray, params)
    result = jaxmlp.fit(
        REG, params, x, y, loss="mse", key=jax.random.key(3), optimizer=optax.adam(0.02),
        epochs=60, batch_size=16, progress=False,
    )  # fmt: skip
    assert len(result.history["loss"]) == 60
    # Over keys 0-19 the loss ends at 0.05-0.18 of the first epoch's (after 30 epochs: 0.33-0.58,
    # too close to any bound for a test of learning that another shuffle must not break).
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert result.step == 60 * 4  # ceil(50 / 16) = 4 steps per epoch
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, params), before)
    assert result.metric == "r2"


def test_fit_is_bit_identical_and_compiles_once(reg):
    x, y, params = reg
    kwargs = dict(
        loss="mse", optimizer=jaxmlp.DEFAULT_OPTIMIZER, epochs=6, batch_size=16, progress=False
    )
    first = jaxmlp.fit(REG, params, x, y, key=jax.random.key(4), **kwargs)
    traces = dict(TRACE_COUNTS)
    second = jaxmlp.fit(REG, params, x, y, key=jax.random.key(4), **kwargs)
    assert trees_equal(first.params, second.params)
    assert first.history == second.history
    # Another key, another epoch count, other data of the same shape: no new trace either.
    x2, y2 = regression_data(5)
    third = jaxmlp.fit(REG, params, x2, y2, key=jax.random.key(6), **{**kwargs, "epochs": 9})
    assert TRACE_COUNTS == traces
    assert not trees_equal(first.params, third.params)


def test_epochs_per_call_does_not_change_the_result(reg):
    x, y, params = reg
    kwargs = dict(loss="mse", epochs=5, batch_size=16, progress=False)
    one = jaxmlp.fit(REG, params, x, y, key=jax.random.key(7), epochs_per_call=1, **kwargs)
    four = jaxmlp.fit(REG, params, x, y, key=jax.random.key(7), epochs_per_call=4, **kwargs)
    chex.assert_trees_all_close(one.params, four.params, rtol=1e-6, atol=1e-7)
    assert len(four.history["loss"]) == 5


def test_last_partial_batch_is_padded_not_dropped(reg):
    x, y, params = reg
    # shuffle=False: batches are rows [0:16], [16:32], [32:48], [48:50] in order.
    result = jaxmlp.fit(
        REG, params, x, y, loss="mse", key=jax.random.key(8), optimizer=optax.sgd(0.1),
        epochs=2, batch_size=16, shuffle=False, progress=False,
    )  # fmt: skip
    step = jaxmlp.make_train_step(REG, "mse", optax.sgd(0.1))
    state = jaxmlp.TrainState.create(params, optax.sgd(0.1))
    for _ in range(2):
        for start in range(0, 50, 16):
            state, _ = step(state, x[start : start + 16], y[start : start + 16])
    chex.assert_trees_all_close(result.params, state.params, rtol=1e-5, atol=1e-6)
    assert result.step == 8

    dropped = jaxmlp.fit(
        REG, params, x, y, loss="mse", key=jax.random.key(9), epochs=2, batch_size=16,
        drop_last=True, progress=False,
    )  # fmt: skip
    assert dropped.step == 6


def test_sample_weight_equals_repeated_rows(reg):
    x, y, params = reg
    w = jnp.ones((50,)).at[:10].set(2.0)
    kwargs = dict(loss="mse", optimizer=optax.sgd(0.05), epochs=3, shuffle=False, progress=False)
    weighted = jaxmlp.fit(
        REG, params, x, y, key=jax.random.key(10), batch_size=50, sample_weight=w, **kwargs
    )
    xr, yr = jnp.concatenate([x, x[:10]]), jnp.concatenate([y, y[:10]])
    repeated = jaxmlp.fit(REG, params, xr, yr, key=jax.random.key(11), batch_size=60, **kwargs)
    chex.assert_trees_all_close(weighted.params, repeated.params, rtol=1e-5, atol=1e-6)


def test_batch_size_larger_than_data_warns_and_clips(reg):
    x, y, params = reg
    with pytest.warns(jaxmlp.JaxmlpWarning, match="batch_size=500"):
        result = jaxmlp.fit(
            REG,
            params,
            x,
            y,
            loss="mse",
            key=jax.random.key(12),
            epochs=2,
            batch_size=500,
            progress=False,
        )
    assert result.step == 2


def test_manual_and_autodiff_fits_agree(reg):
    x, y, params = reg
    kwargs = dict(loss="mse", optimizer=optax.sgd(0.1), epochs=4, batch_size=16, progress=False)
    manual = jaxmlp.fit(REG, params, x, y, key=jax.random.key(13), method="manual", **kwargs)
    auto = jaxmlp.fit(REG, params, x, y, key=jax.random.key(13), method="autodiff", **kwargs)
    chex.assert_trees_all_close(manual.params, auto.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(manual.history["loss"], auto.history["loss"], rtol=1e-5)


def test_validation_metric_is_accuracy_for_classification():
    x, y = class_data(14)
    params = CLS.init(jax.random.key(15))
    result = jaxmlp.fit(
        CLS, params, x, y, loss="softmax_cross_entropy", key=jax.random.key(16), optimizer=optax.adam(0.05),
        epochs=20, batch_size=20, validation_data=(x, y), progress=False,
    )  # fmt: skip
    assert result.metric == "accuracy"
    acc = float(jnp.mean(jnp.argmax(CLS.apply(result.params, x), axis=1) == y))
    assert result.history["val_metric"][-1] == pytest.approx(acc, abs=1e-6)
    assert acc > 0.8
    val_loss, _ = jaxmlp.evaluate(
        CLS, result.params, x, y, loss=jaxmlp.get_loss("softmax_cross_entropy")
    )
    assert result.history["val_loss"][-1] == pytest.approx(float(val_loss), rel=1e-5)


def test_validation_r2_for_regression(reg):
    x, y, params = reg
    result = jaxmlp.fit(
        REG, params, x, y, loss="mse", key=jax.random.key(17), optimizer=optax.adam(0.02), epochs=5,
        batch_size=25, validation_data=(x, y), progress=False,
    )  # fmt: skip
    pred = REG.apply(result.params, x)
    r2 = 1 - jnp.sum((y - pred) ** 2, axis=0) / jnp.sum((y - y.mean(0, keepdims=True)) ** 2, axis=0)
    assert result.history["val_metric"][-1] == pytest.approx(float(jnp.mean(r2)), abs=1e-5)


def test_early_stopping_stops_and_restores_best(reg):
    x, y, params = reg
    xv, yv = regression_data(18, n=20)
    # A large learning rate makes the validation loss bounce, so the run stops early.
    result = jaxmlp.fit(
        REG, params, x, y, loss="mse", key=jax.random.key(19), optimizer=optax.adam(0.3), epochs=200,
        batch_size=10, validation_data=(xv, yv), early_stopping=jaxmlp.EarlyStopping(patience=3),
        epochs_per_call=4, progress=False,
    )  # fmt: skip
    n = len(result.history["val_loss"])
    assert n < 200 and result.stopped_epoch == n
    # No update after the stopping epoch, even inside a call of 4 epochs.
    assert result.step == n * -(-x.shape[0] // 10)
    best = int(np.argmin(result.history["val_loss"])) + 1
    assert result.best_epoch == best and n == best + 3
    val_loss, _ = jaxmlp.evaluate(REG, result.params, xv, yv, loss=jaxmlp.get_loss("mse"))
    assert float(val_loss) == pytest.approx(min(result.history["val_loss"]), rel=1e-5)


def test_divergence_raises_with_last_finite_state(reg):
    x, y, params = reg
    opt = optax.sgd(1e4)
    with pytest.raises(jaxmlp.DivergenceError, match=r"epoch \d+, step \d+") as info:
        jaxmlp.fit(REG, params, x, y, loss="mse", key=jax.random.key(20), optimizer=opt, epochs=3,
                   batch_size=10, shuffle=False, progress=False)  # fmt: skip
    err = info.value
    assert err.epoch >= 1 and 1 <= err.step <= 5
    assert len(err.history["loss"]) == err.epoch - 1
    # Replaying the steps before the bad one reproduces the state the error carries.
    step = jaxmlp.make_train_step(REG, "mse", opt)
    state = jaxmlp.TrainState.create(params, opt)
    for s in range(5 * (err.epoch - 1) + err.step - 1):
        state, _ = step(
            state, x[10 * (s % 5) : 10 * (s % 5) + 10], y[10 * (s % 5) : 10 * (s % 5) + 10]
        )
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(err.params))
    chex.assert_trees_all_close(err.params, state.params, rtol=1e-5)
    # ... and the step it refused really produces a non-finite loss or parameters.
    bad = slice(10 * (err.step - 1), 10 * err.step)
    after, bad_loss = step(state, x[bad], y[bad])
    finite_after = all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(after.params))
    assert not (np.isfinite(float(bad_loss)) and finite_after)


def test_divergence_in_a_later_shuffled_epoch_is_located_by_replay(reg):
    # 12 steps at a small rate, then an enormous one: the run turns non-finite early in epoch 3
    # (5 steps per epoch) inside one fused, shuffling call. fit's fast path checks whole epochs;
    # the replay of epoch 3 must find the step and the state before it, in that epoch's order.
    x, y, params = reg
    opt = optax.sgd(optax.piecewise_constant_schedule(0.01, {12: 1e22}))
    with pytest.raises(jaxmlp.DivergenceError) as info:
        jaxmlp.fit(REG, params, x, y, loss="mse", key=jax.random.key(30), optimizer=opt,
                   epochs=6, batch_size=10, progress=False)  # fmt: skip
    err = info.value
    assert err.epoch == 3 and 3 <= err.step <= 5
    assert len(err.history["loss"]) == 2 and all(np.isfinite(err.history["loss"]))
    step = jaxmlp.make_train_step(REG, "mse", opt)
    state = jaxmlp.TrainState.create(params, opt)
    orders = epoch_permutations(order_seed(jax.random.key(30)), range(3), 50)
    for s in range(10 + err.step - 1):
        idx = orders[s // 5][10 * (s % 5) : 10 * (s % 5) + 10]
        state, _ = step(state, x[idx], y[idx])
    assert int(state.step) == 10 + err.step - 1
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(err.params))
    chex.assert_trees_all_close(err.params, state.params, rtol=1e-5)
    chex.assert_trees_all_close(err.opt_state, state.opt_state)


def test_divergence_whose_replay_stays_finite_reports_no_step(reg, monkeypatch):
    # Rare (the replay is another compiled program, which may round differently near a blow-up);
    # if it happens, fit must say so, not invent a step, and hand back the epoch's starting state.
    x, y, params = reg
    import jaxmlp._train.fit as training

    def finite_replay(spec):
        return lambda state, bad, bad_step, *rest: (state, jnp.asarray(False), bad_step, 0.0)

    monkeypatch.setattr(training, "replay_program", finite_replay)
    with pytest.raises(jaxmlp.DivergenceError, match=r"epoch 1, step unknown") as info:
        jaxmlp.fit(REG, params, x, y, loss="mse", key=jax.random.key(31),
                   optimizer=optax.sgd(1e30), epochs=2, batch_size=10, progress=False)  # fmt: skip
    assert info.value.step is None and info.value.epoch == 1
    chex.assert_trees_all_equal(info.value.params, params)


BAD_FIT_ARGS = [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(method="numeric"), ValueError, "method"),
    (dict(optimizer="adam"), TypeError, "optimizer"),
    (dict(l2=-1.0), ValueError, "l2"),
    (dict(key=0), TypeError, "key"),
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(early_stopping=5), TypeError, "early_stopping"),
    (dict(validation_data=np.zeros((3, 3))), TypeError, "validation_data"),
    (dict(sample_weight=np.ones(7)), ValueError, "sample_weight"),
    (dict(sample_weight=-np.ones(50)), ValueError, "sample_weight"),
]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    BAD_FIT_ARGS,
    ids=[m + str(i) for i, (_, _, m) in enumerate(BAD_FIT_ARGS)],
)
def test_fit_rejects_bad_arguments_before_compiling(reg, kwargs, exc, match):
    x, y, params = reg
    args = dict(loss="mse", key=jax.random.key(21), epochs=2, batch_size=8, progress=False) | kwargs
    traces = dict(TRACE_COUNTS)
    with pytest.raises(exc, match=match):
        jaxmlp.fit(REG, params, x, y, **args)
    assert TRACE_COUNTS == traces


BAD_DATA = [
    ("empty", lambda x, y: (x[:0], y[:0]), "x"),
    ("rows", lambda x, y: (x, y[:40]), "y"),
    ("nan_x", lambda x, y: (x.at[3, 1].set(jnp.nan), y), "x"),
    ("inf_y", lambda x, y: (x, y.at[0, 0].set(jnp.inf)), "y"),
    ("features", lambda x, y: (x[:, :2], y), "x"),
    ("rank", lambda x, y: (x[None], y), "x"),
]


@pytest.mark.parametrize(("name", "mutate", "match"), BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_fit_rejects_bad_data(reg, name, mutate, match):
    x, y, params = reg
    bx, by = mutate(x, y)
    with pytest.raises(ValueError, match=match):
        jaxmlp.fit(
            REG,
            params,
            bx,
            by,
            loss="mse",
            key=jax.random.key(22),
            epochs=1,
            batch_size=8,
            progress=False,
        )


@pytest.mark.parametrize("labels", [[0, 1, 3], [-1, 0, 1]], ids=["too_high", "negative"])
def test_fit_rejects_labels_out_of_range(labels):
    x = jnp.zeros((3, 2))
    params = CLS.init(jax.random.key(23))
    with pytest.raises(ValueError, match=r"y: class labels must lie in \[0, 3\)"):
        jaxmlp.fit(
            CLS,
            params,
            x,
            jnp.array(labels),
            loss="softmax_cross_entropy",
            key=jax.random.key(24),
            progress=False,
        )


def test_progress_bar_reports_epochs(reg, capsys):
    x, y, params = reg
    jaxmlp.fit(
        REG,
        params,
        x,
        y,
        loss="mse",
        key=jax.random.key(25),
        epochs=3,
        batch_size=25,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "fit" in err and "3/3" in err and "loss=" in err


def test_progress_rate_is_the_steady_state_not_the_first_calls(capsys):
    # The first call (0.5 s here, compilation in a real run) must not set the rate: the clock
    # restarts after it, so 400 epochs in four quick calls show thousands of epochs per second,
    # where the run's average with the first call would be under 802.
    import re
    import time

    from jaxmlp._train.callbacks import CallState, ProgressBar

    bar = ProgressBar(401, 0, "fit", True)
    time.sleep(0.5)
    for epoch in (1, 101, 201, 301, 401):
        bar.on_epoch_end(epoch, {"loss": 1.0})
        bar.on_call_end(CallState(epoch, 401, None, None, {}, None, epoch == 401))
    bar.on_train_end(None)
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "401/401" in final and "loss=1" in final
    assert float(re.search(r"([0-9.]+)epoch/s", final).group(1)) > 3000, final


@pytest.mark.slow
def test_fit_without_a_progress_bar_does_not_import_tqdm():
    # issue 16: tqdm costs a small script's start 0.1 s; progress=False must not pay it.
    code = (
        "import sys, jax, numpy as np, jaxmlp\n"
        "m = jaxmlp.MLP((3, 4, 2)); p = m.init(jax.random.key(0))\n"
        "x = np.zeros((8, 3), np.float32); y = np.zeros((8, 2), np.float32)\n"
        "jaxmlp.fit(m, p, x, y, loss='mse', key=jax.random.key(1), epochs=1, progress=False)\n"
        "jaxmlp.fit_ensemble(m, x, y, loss='mse', key=jax.random.key(2), num_models=2, epochs=1,"
        " progress=False)\n"
        "assert 'tqdm' not in sys.modules, 'tqdm imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240)


@pytest.fixture
def split_first(monkeypatch):
    """The first call split as on an accelerator (on a CPU it is not: it does not pay there)."""
    import jaxmlp._train.driver as driver

    monkeypatch.setattr(driver, "_split_pays", lambda: True)


class _ReadsCarry(jaxmlp.Callback):
    """Reads the carry after every call: the driver must then wait for each call's report."""

    def __init__(self):
        self.states = []

    def on_call_end(self, state):
        self.states.append((state.epoch, np.asarray(state.carry.state.step).tolist()))


class _CountsCalls(jaxmlp.Callback):
    carry_free = True

    def __init__(self):
        self.states = []

    def on_call_end(self, state):
        self.states.append((state.epoch, state.carry))


def test_calls_start_with_a_short_head_and_queued_pass_no_carry(reg, monkeypatch):
    x, y, params = reg
    import jaxmlp._train.driver as driver
    import jaxmlp._train.fit as training

    kwargs = dict(loss="mse", epochs=40, batch_size=10, progress=False)
    # On a CPU the first call is not split (it does not pay there) ...
    whole = _CountsCalls()
    jaxmlp.fit(REG, params, x, y, key=jax.random.key(40), callbacks=whole, **kwargs)
    if jax.default_backend() == "cpu":
        assert [e for e, _ in whole.states] == [40]
    monkeypatch.setattr(driver, "_split_pays", lambda: True)  # ... as on an accelerator:

    # epochs_per_call left to the library (here 16): the first call's first eighth runs alone,
    # then the rest of that call, then whole calls.
    real = training.choose_epochs_per_call
    monkeypatch.setattr(training, "choose_epochs_per_call", lambda e, *a, **k: real(16, *a, **k))
    counted, read = _CountsCalls(), _ReadsCarry()
    queued = jaxmlp.fit(REG, params, x, y, key=jax.random.key(40), callbacks=counted, **kwargs)
    waited = jaxmlp.fit(REG, params, x, y, key=jax.random.key(40), callbacks=read, **kwargs)
    # Queued, the callbacks see no carry (the next call already holds it) ...
    assert counted.states == [(2, None), (16, None), (32, None), (40, None)]
    # ... and a callback that reads the carry gets it after each of the same calls.
    assert read.states == [(2, 10), (16, 80), (32, 160), (40, 200)]
    assert trees_equal(queued.params, waited.params)
    assert queued.history == waited.history and queued.step == waited.step == 200
    # epochs_per_call given: every call runs that many epochs.
    given = _CountsCalls()
    jaxmlp.fit(REG, params, x, y, key=jax.random.key(40), callbacks=given, epochs_per_call=16,
               **kwargs)  # fmt: skip
    assert [e for e, _ in given.states] == [16, 32, 40]


@pytest.mark.parametrize(
    "case", ["plain", "stops in the head", "stops later", "divergence", "continued"]
)
def test_queued_calls_give_what_waiting_for_every_report_gives(reg, case, split_first):
    x, y, params = reg
    xv, yv = regression_data(18, n=20)
    kwargs = dict(loss="mse", batch_size=10, progress=False)  # calls of 64: the first split at 8
    if case.startswith("stops"):  # the call queued behind the one that stops runs no epoch
        patience = 3 if case == "stops in the head" else 12
        kwargs.update(optimizer=optax.adam(0.3), epochs=200, validation_data=(xv, yv),
                      early_stopping=jaxmlp.EarlyStopping(patience=patience))  # fmt: skip
    elif case == "divergence":  # turns non-finite in epoch 11, in the call queued after the head
        kwargs.update(optimizer=optax.sgd(optax.piecewise_constant_schedule(0.01, {52: 1e22})),
                      epochs=20)  # fmt: skip
    else:
        kwargs.update(optimizer=optax.adam(0.01), epochs=20)

    def run(callbacks):
        if case == "divergence":
            with pytest.raises(jaxmlp.DivergenceError) as info:
                jaxmlp.fit(REG, params, x, y, key=jax.random.key(41), callbacks=callbacks, **kwargs)
            return info.value
        if case == "continued":
            first = jaxmlp.fit(REG, params, x, y, key=jax.random.key(41), callbacks=callbacks,
                               **{**kwargs, "epochs": 7})  # fmt: skip
            return jaxmlp.fit(REG, first, x, y, key=jax.random.key(41), callbacks=callbacks,
                              **kwargs)  # fmt: skip
        return jaxmlp.fit(REG, params, x, y, key=jax.random.key(41), callbacks=callbacks, **kwargs)

    queued, waited = run(_CountsCalls()), run(_ReadsCarry())
    assert trees_equal(queued.params, waited.params)
    assert queued.history == waited.history
    if case == "divergence":
        assert (queued.epoch, queued.step) == (waited.epoch, waited.step) and queued.epoch == 11
        assert trees_equal(queued.opt_state, waited.opt_state)
        return
    assert (queued.step, queued.stopped_epoch, queued.best_epoch) == (
        waited.step, waited.stopped_epoch, waited.best_epoch,
    )  # fmt: skip
    if case == "stops in the head":
        assert queued.stopped_epoch <= 8
    elif case == "stops later":
        assert 8 < queued.stopped_epoch < 200


def test_queued_ensemble_calls_give_what_waiting_gives(reg, split_first):
    # Members stop and diverge on their own: the queued calls carry on for the others.
    x, y, _ = reg
    xv, yv = regression_data(18, n=20)
    kwargs = dict(num_models=3, loss="mse", learning_rates=[0.05, 0.5, 1e4], optimizer_fn=optax.sgd,
                  epochs=60, batch_size=10, validation_data=(xv, yv), progress=False,
                  early_stopping=jaxmlp.EarlyStopping(patience=4))  # fmt: skip

    def run(callbacks):
        with pytest.warns(jaxmlp.JaxmlpWarning, match="diverged"):
            return jaxmlp.fit_ensemble(REG, x, y, key=jax.random.key(42), callbacks=callbacks,
                                       **kwargs)  # fmt: skip

    counted, read = _CountsCalls(), _ReadsCarry()
    queued, waited = run(counted), run(read)
    assert trees_equal(queued.params, waited.params)
    for k in waited.history:
        np.testing.assert_array_equal(queued.history[k], waited.history[k])
    np.testing.assert_array_equal(queued.stopped_epoch, waited.stopped_epoch)
    assert [e for e, _ in counted.states] == [e for e, _ in read.states]
    assert all(c is None for _, c in counted.states)
