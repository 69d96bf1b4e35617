"""Tests for jaxmlp._train.ensemble: vmapped members equal separate fits; sweeps, bootstrap, prediction."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp._engine.step import TRACE_COUNTS

MODEL = jaxmlp.MLP((1, 16, 1), activation="tanh")


@pytest.fixture(scope="module")
def data():
    x = jnp.linspace(-2, 2, 40)[:, None]
    return x, jnp.sin(2 * x)


def member(tree, m: int):
    return jax.tree.map(lambda a: a[m], tree)


def test_each_member_equals_its_own_fit(data):
    x, y = data
    kwargs = dict(
        loss="mse", optimizer=jaxmlp.DEFAULT_OPTIMIZER, epochs=4, batch_size=16, progress=False
    )
    result = jaxmlp.fit_ensemble(MODEL, x, y, num_models=3, key=jax.random.key(0), **kwargs)
    assert jax.tree.leaves(result.params)[0].shape[0] == 3
    assert result.history["loss"].shape == (4, 3)
    # The members' keys, as fit_ensemble derives them.
    k_init, k_order, _ = jax.random.split(jax.random.key(0), 3)
    inits = jax.vmap(MODEL.init)(jax.random.split(k_init, 3))
    orders = jax.random.split(k_order, 3)
    for m in range(3):
        single = jaxmlp.fit(MODEL, member(inits, m), x, y, key=orders[m], **kwargs)
        chex.assert_trees_all_close(member(result.params, m), single.params, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result.history["loss"][:, m], single.history["loss"], rtol=1e-6)


def test_several_calls_match_one_call(data):
    # Three calls of 2, 2 (1 used) epochs, each call's row orders drawn while the previous runs.
    x, y = data
    kwargs = dict(loss="mse", num_models=3, epochs=5, batch_size=16, progress=False)
    one = jaxmlp.fit_ensemble(MODEL, x, y, key=jax.random.key(5), epochs_per_call=5, **kwargs)
    three = jaxmlp.fit_ensemble(MODEL, x, y, key=jax.random.key(5), epochs_per_call=2, **kwargs)
    chex.assert_trees_all_close(three.params, one.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(three.history["loss"], one.history["loss"], rtol=1e-6)


def test_members_differ_and_second_call_does_not_retrace(data):
    x, y = data
    kwargs = dict(loss="mse", epochs=3, batch_size=16, progress=False)
    first = jaxmlp.fit_ensemble(MODEL, x, y, num_models=4, key=jax.random.key(1), **kwargs)
    traces = dict(TRACE_COUNTS)
    again = jaxmlp.fit_ensemble(MODEL, x, y, num_models=4, key=jax.random.key(2), **kwargs)
    assert TRACE_COUNTS == traces
    w = np.asarray(first.params[0].w)
    assert not np.allclose(w[0], w[1])
    assert not np.allclose(np.asarray(again.params[0].w), w)


def test_learning_rate_sweep_uses_each_rate(data):
    x, y = data
    rates = [1e-4, 1e-2, 1e-1]
    result = jaxmlp.fit_ensemble(
        MODEL, x, y, num_models=3, loss="mse", key=jax.random.key(3), learning_rates=rates,
        epochs=20, batch_size=40, same_order=True, progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(result.learning_rates, rates)
    final = result.history["loss"][-1]
    # With the same data order the larger rate gets further in the same number of steps.
    assert final[0] > final[1] > final[2]
    np.testing.assert_allclose(
        np.asarray(result.opt_state.hyperparams["learning_rate"]), rates, rtol=1e-6
    )


def test_bootstrap_and_validation_history(data):
    x, y = data
    result = jaxmlp.fit_ensemble(
        MODEL, x, y, num_models=5, loss="mse", key=jax.random.key(4), bootstrap=True,
        optimizer=optax.adam(0.05), epochs=100, batch_size=20, validation_data=(x, y), progress=False,
    )  # fmt: skip
    assert result.metric == "r2"
    assert result.history["val_metric"].shape == (100, 5)
    assert np.all(result.history["val_metric"][-1] > 0.5)
    mean, var = jaxmlp.predict_ensemble(MODEL, result.params, x)
    assert mean.shape == (40, 1) and var.shape == (40, 1)
    outs = jaxmlp.ensemble_apply(MODEL, result.params, x)
    chex.assert_trees_all_close((mean, var), (outs.mean(0), outs.var(0)), rtol=1e-6, atol=1e-7)
    assert float(var.mean()) > 0


@pytest.mark.parametrize("bootstrap", [False, True], ids=["plain", "bootstrap"])
def test_bootstrap_alone_makes_identical_members_differ(data, bootstrap):
    x, y = data
    same = jax.tree.map(lambda a: jnp.stack([a, a]), MODEL.init(jax.random.key(7)))
    result = jaxmlp.fit_ensemble(
        MODEL, x, y, num_models=2, loss="mse", key=jax.random.key(8), params=same, same_order=True,
        bootstrap=bootstrap, epochs=3, batch_size=40, progress=False,
    )  # fmt: skip
    w = np.asarray(result.params[0].w)
    assert np.array_equal(w[0], w[1]) != bootstrap


def test_diverged_members_warn_and_keep_finite_params(data):
    x, y = data
    with pytest.warns(jaxmlp.JaxmlpWarning, match=r"members \[1\] diverged"):
        result = jaxmlp.fit_ensemble(
            MODEL, x, y * 100, num_models=2, loss="mse", key=jax.random.key(5), learning_rates=[1e-3, 1e20],
            epochs=5, batch_size=40, progress=False,
        )  # fmt: skip
    assert result.diverged.tolist() == [False, True]
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(result.params))
    # Member 1 keeps the state from the end of its last finite epoch: the same ensemble trained
    # for just those epochs (same key: same start, orders and rates) ends with it, bit for bit.
    losses = result.history["loss"][:, 1]
    last_finite = int(np.argmax(~np.isfinite(losses)))  # epochs before the first non-finite one
    assert 1 <= last_finite < 5 and np.isfinite(losses[:last_finite]).all()
    shorter = jaxmlp.fit_ensemble(
        MODEL, x, y * 100, num_models=2, loss="mse", key=jax.random.key(5), learning_rates=[1e-3, 1e20],
        epochs=last_finite, batch_size=40, progress=False,
    )  # fmt: skip
    for got, want in zip(
        jax.tree.leaves(result.params), jax.tree.leaves(shorter.params), strict=True
    ):
        np.testing.assert_array_equal(got[1], want[1])
    counts = [a for a in jax.tree.leaves(result.opt_state) if a.dtype == jnp.int32 and a.ndim == 1]
    per_epoch = -(-x.shape[0] // 40)  # steps
    assert counts and all(c.tolist() == [5 * per_epoch, last_finite * per_epoch] for c in counts)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(num_models=0), ValueError, "num_models"),
        (dict(learning_rates=[0.1]), ValueError, "learning_rates"),
        (dict(learning_rates=[0.1, 0.2], optimizer=optax.sgd(0.1)), ValueError, "optimizer"),
        (
            dict(params=(jaxmlp.Dense(jnp.zeros((3, 1, 16)), jnp.zeros((3, 16))),) * 2),
            ValueError,
            "params",
        ),
    ],
    ids=["zero_models", "rates_count", "rates_and_optimizer", "params_axis"],
)
def test_bad_ensemble_arguments(data, kwargs, exc, match):
    x, y = data
    args = dict(num_models=2, loss="mse", key=jax.random.key(6), epochs=1, progress=False) | kwargs
    with pytest.raises(exc, match=match):
        jaxmlp.fit_ensemble(MODEL, x, y, **args)


# --- one engine: everything fit offers, per member -------------------------------------------


def test_each_member_equals_its_own_fit_with_early_stopping_and_weights():
    # Members stop at different epochs; each restores its own best, exactly as fit alone would.
    # In float64: over 60 Adam epochs float32 rounding differences between the vmapped and the
    # single program (1 ulp per reduction) grow past float32 tolerances in the small biases.
    with jax.enable_x64(True):
        model = jaxmlp.MLP((1, 16, 1), activation="tanh", param_dtype="float64")
        x = jnp.linspace(-2, 2, 40, dtype=jnp.float64)[:, None]
        y = jnp.sin(2 * x)
        sw = jnp.linspace(0.5, 1.5, x.shape[0])
        kwargs = dict(
            loss="mse", optimizer=optax.adam(0.05), epochs=60, batch_size=16, progress=False,
            validation_data=(x[::3], y[::3]), sample_weight=sw,
            early_stopping=jaxmlp.EarlyStopping(patience=3, min_delta=1e-3),
        )  # fmt: skip
        K = 4
        result = jaxmlp.fit_ensemble(model, x, y, num_models=K, key=jax.random.key(11), **kwargs)
        k_init, k_order, _ = jax.random.split(jax.random.key(11), 3)
        inits = jax.vmap(model.init)(jax.random.split(k_init, K))
        orders = jax.random.split(k_order, K)
        stops = set()
        for m in range(K):
            single = jaxmlp.fit(model, member(inits, m), x, y, key=orders[m], **kwargs)
            chex.assert_trees_all_close(member(result.params, m), single.params, rtol=1e-10)
            assert result.best_epoch[m] == single.best_epoch
            assert result.stopped_epoch[m] == (single.stopped_epoch or 0)
            assert result.step[m] == single.step
            ran = len(single.history["loss"])
            np.testing.assert_allclose(
                result.history["val_loss"][:ran, m], single.history["val_loss"], rtol=1e-10
            )
            assert np.isnan(result.history["loss"][ran:, m]).all()  # it sat the later epochs out
            stops.add(single.stopped_epoch)
        assert len(stops) > 1, stops  # the members really stopped at different epochs
        assert result.history["loss"].shape[0] == max(s or 60 for s in stops)


def test_diverged_member_is_reported_and_the_others_go_on(data):
    x, y = data
    with pytest.warns(jaxmlp.JaxmlpWarning, match=r"members \[2\] diverged"):
        result = jaxmlp.fit_ensemble(
            MODEL, x, y * 100, num_models=3, loss="mse", key=jax.random.key(12),
            learning_rates=[1e-3, 2e-3, 1e20], epochs=6, batch_size=40, progress=False,
            early_stopping=jaxmlp.EarlyStopping(patience=100, restore_best=False),
        )  # fmt: skip
    assert result.diverged.tolist() == [False, False, True]
    assert result.diverged_epoch[2] >= 1 and result.diverged_epoch[:2].tolist() == [0, 0]
    assert np.isfinite(result.history["loss"][:, :2]).all()
    assert result.step[:2].tolist() == [6, 6]


def test_ensemble_resumes_from_its_checkpoints_bit_for_bit(data, tmp_path):
    x, y = data
    kwargs = dict(
        num_models=3, loss="mse", optimizer=optax.adam(0.01),
        batch_size=16, bootstrap=True, progress=False, validation_data=(x, y),
        early_stopping=jaxmlp.EarlyStopping(patience=50),
    )  # fmt: skip

    def run(**more):
        return jaxmlp.fit_ensemble(MODEL, x, y, key=jax.random.key(13), **(kwargs | more))

    whole = run(epochs=8)
    first = run(epochs=5, checkpoint_dir=tmp_path)
    assert [p.name for _, p in jaxmlp.list_checkpoints(tmp_path)] == [
        "ckpt_000003.npz", "ckpt_000004.npz", "ckpt_000005.npz",
    ]  # fmt: skip
    ck = jaxmlp.load_checkpoint(tmp_path / "ckpt_000005.npz")
    assert ck.members == 3 and ck.params[0].w.shape[0] == 3
    chex.assert_trees_all_equal(ck.extra["best_params"], first.params)  # restore_best
    # The stored key wins, as in fit: another key resumes the same run.
    resumed = jaxmlp.fit_ensemble(
        MODEL,
        x,
        y,
        key=jax.random.key(99),
        epochs=8,
        checkpoint_dir=tmp_path,
        resume=True,
        **kwargs,
    )
    chex.assert_trees_all_equal(resumed.params, whole.params)
    chex.assert_trees_all_equal(resumed.opt_state, whole.opt_state)
    for k in whole.history:
        np.testing.assert_array_equal(resumed.history[k], whole.history[k])
    np.testing.assert_array_equal(resumed.best_epoch, whole.best_epoch)
    # A one-model checkpoint folder is refused by name.
    with pytest.raises(jaxmlp.CheckpointError, match="ensemble of 2"):
        run(epochs=8, checkpoint_dir=tmp_path, resume=True, num_models=2)


def test_callbacks_see_every_epoch_of_fit_and_ensembles(data, tmp_path):
    x, y = data
    seen = []

    class Recorder(jaxmlp.Callback):
        def __init__(self):
            self.calls, self.result = [], None

        def on_call_end(self, state):
            self.calls.append(state.epoch)

        def on_train_end(self, result):
            self.result = result

    rec = Recorder()
    r = jaxmlp.fit(MODEL, MODEL.init(jax.random.key(0)), x, y, loss="mse", key=jax.random.key(1),
                   epochs=7, epochs_per_call=3, validation_data=(x, y), progress=False,
                   callbacks=[lambda e, m: seen.append((e, dict(m))), rec])  # fmt: skip
    assert [e for e, _ in seen] == list(range(1, 8))
    assert [m["loss"] for _, m in seen] == r.history["loss"]
    assert [m["val_metric"] for _, m in seen] == r.history["val_metric"]
    assert rec.calls == [3, 6, 7] and rec.result is r
    # An ensemble's metrics are (K,) arrays; a CSV logger needs nothing but the standard library.
    import csv

    class CSVLogger(jaxmlp.Callback):
        def __init__(self, path):
            self.path = path

        def on_epoch_end(self, epoch, metrics):
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow([epoch, *np.ravel(metrics["loss"])])

    ens = jaxmlp.fit_ensemble(MODEL, x, y, num_models=2, loss="mse", key=jax.random.key(2),
                              epochs=4, progress=False, callbacks=[CSVLogger(tmp_path / "log.csv")])  # fmt: skip
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose(np.asarray(rows, float)[:, 1:], ens.history["loss"], rtol=1e-6)
    with pytest.raises(TypeError, match=r"^callbacks\[0\]: "):
        jaxmlp.fit_ensemble(MODEL, x, y, num_models=2, loss="mse", key=jax.random.key(2),
                            callbacks=["not callable"])  # fmt: skip
