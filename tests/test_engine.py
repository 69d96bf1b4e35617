"""Tests for jaxmlp._engine.program's host-side pieces: row orders, seeds, state initialisation, call sizes."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp._core.losses import get_loss
from jaxmlp._core.mlp import check_finite_params, nonfinite, nonfinite_and_key
from jaxmlp._engine.orders import (
    call_permutations,
    epoch_permutations,
    order_seed,
    seed_from_words,
)
from jaxmlp._engine.program import (
    Spec,
    _read_plan,
    _report,
    fresh_carry,
    make_epoch,
    make_plan,
    read_report,
)
from jaxmlp._engine.step import DEFAULT_OPTIMIZER, TrainState
from jaxmlp._train.inputs import _auto_epochs_per_call

MODEL = jaxmlp.MLP((3, 8, 2), activation="tanh")


def spec(shuffle=True, epochs_per_call=4, members=None, optimizer=DEFAULT_OPTIMIZER) -> Spec:
    return Spec(model=MODEL, loss=get_loss("mse"), optimizer=optimizer, method="manual", l2=0.0,
                batch_size=8, drop_last=False, shuffle=shuffle, epochs_per_call=epochs_per_call,
                track_best=False, has_val=False, members=members)  # fmt: skip


def test_epoch_permutations_are_permutations_that_depend_only_on_key_and_epoch():
    seed = order_seed(jax.random.key(3))
    all_at_once = epoch_permutations(seed, range(6), 37)
    assert all_at_once.dtype == np.int32 and all_at_once.shape == (6, 37)
    np.testing.assert_array_equal(np.sort(all_at_once, axis=1), np.tile(np.arange(37), (6, 1)))
    # Any grouping of epochs (one call, several calls, a resumed run) gives the same orders.
    one_by_one = np.concatenate([epoch_permutations(seed, [e], 37) for e in range(6)])
    np.testing.assert_array_equal(all_at_once, one_by_one)
    np.testing.assert_array_equal(all_at_once[3:], epoch_permutations(seed, [3, 4, 5], 37))
    # Different epochs and different keys shuffle differently.
    assert len({tuple(p) for p in all_at_once}) == 6
    other = epoch_permutations(order_seed(jax.random.key(4)), range(6), 37)
    assert not np.array_equal(all_at_once, other)


def test_epoch_permutations_are_uniform_enough():
    # Over 4000 epochs every row lands in every position about equally often (chi-square-ish).
    orders = epoch_permutations(order_seed(jax.random.key(0)), range(4000), 8)
    counts = np.stack([np.bincount(orders[:, pos], minlength=8) for pos in range(8)])
    assert counts.min() > 400 and counts.max() < 600, counts


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_order_seed_reads_any_key_type_and_batch(impl):
    keys = jax.random.split(jax.random.key(1, impl=impl), 3)
    seeds = order_seed(keys)
    assert seeds.shape == (3, 2) and seeds.dtype == np.uint64
    assert len({s.tobytes() for s in seeds}) == 3
    np.testing.assert_array_equal(order_seed(keys[1]), seeds[1])


def test_call_permutations_fills_only_the_epochs_that_run():
    seed = order_seed(jax.random.key(2))
    perms = call_permutations(spec(epochs_per_call=4), seed, 5, 7, 10)
    assert perms.shape == (4, 10)
    np.testing.assert_array_equal(perms[:2], epoch_permutations(seed, [5, 6], 10))
    assert not perms[2:].any()  # epochs 7 and 8 are past the limit: the call skips them
    assert call_permutations(spec(shuffle=False), seed, 0, 3, 10) is None


def test_auto_epochs_per_call_is_a_power_of_two_within_its_budgets():
    small = _auto_epochs_per_call(MODEL, n_batches=4, batch_size=8)
    assert small == 64  # tiny work per epoch: the epoch cap
    big = jaxmlp.MLP((1024, 2048, 2048, 10))
    assert _auto_epochs_per_call(big, n_batches=100, batch_size=1024) == 1  # > 16 GFLOP per epoch
    rows = _auto_epochs_per_call(
        MODEL, n_batches=1 << 15, batch_size=32
    )  # 1M rows: 4 MiB per order
    assert rows == 16 and rows & (rows - 1) == 0
    assert _auto_epochs_per_call(MODEL, 4, 8, members=64) <= small


class _Unhashable:
    """An optimizer part that cannot be a static jit argument (defines __eq__ without __hash__)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return self is other

    __hash__ = None  # type: ignore[assignment]


def test_state_creation_copies_and_handles_unhashable_optimizers():
    params = MODEL.init(jax.random.key(0))
    sgd = optax.sgd(0.1)
    odd = optax.GradientTransformation(_Unhashable(sgd.init), _Unhashable(sgd.update))
    with pytest.raises(TypeError):
        hash(odd)
    for opt in (optax.adam(1e-3), odd):
        state = TrainState.create(params, opt)
        assert int(state.step) == 0
        for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
            np.testing.assert_array_equal(new, old)
            assert new.unsafe_buffer_pointer() != old.unsafe_buffer_pointer()  # a copy
    carry = fresh_carry(params, odd, jnp.float32, True)
    assert carry.best_params is not None and float(carry.best_score) == np.inf
    assert not bool(carry.stopped) and not bool(carry.diverged) and int(carry.bad_step) == -1


@pytest.fixture(params=["host", "device"])
def check_path(request, monkeypatch):
    """The value checks both ways: NumPy in place (arrays on a CPU) and one compiled call (the
    path arrays on an accelerator take), forced here by making no array count as on the host."""
    if request.param == "device":
        import jaxmlp._core.mlp as mlp

        monkeypatch.setattr(mlp, "on_host", lambda a: False)
    return request.param


def test_nonfinite_checks_many_arrays_in_one_call(check_path):
    flags = nonfinite(
        jnp.ones(3),
        jnp.array([1.0, jnp.nan]),
        jnp.arange(4),
        jnp.array([jnp.inf]),
        np.zeros((2, 2)),
    )
    assert flags == [False, True, False, True, False]
    assert nonfinite(jnp.arange(3)) == [False]
    # bfloat16, which NumPy's own dtype tests do not count as a float
    half = jnp.ones((4, 3), jnp.bfloat16)
    assert nonfinite(half, half.at[1, 2].set(jnp.nan), half.at[0, 0].set(-jnp.inf)) == [
        False, True, True,
    ]  # fmt: skip


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"], ids=["threefry", "rbg"])
def test_key_bits_read_with_the_value_checks_give_the_same_seed(impl, check_path):
    def keys():  # fresh key objects each time (reading a key's bits consumes it)
        return jax.random.split(jax.random.key(5, impl=impl), 3)

    want = order_seed(keys())
    flags, words = nonfinite_and_key((jnp.ones(2), jnp.array([jnp.nan]), jnp.arange(2)), keys())
    assert flags == [False, True, False]
    np.testing.assert_array_equal(seed_from_words(words), want)
    _, words = nonfinite_and_key((), keys()[0])  # no arrays to check: the key alone
    np.testing.assert_array_equal(seed_from_words(words), want[0])
    params = MODEL.init(jax.random.key(0))
    (bad,), words = check_finite_params(params, "params", jnp.array([jnp.inf]), key=keys()[1])
    assert bad
    np.testing.assert_array_equal(seed_from_words(words), want[1])
    bad_params = (params[0]._replace(b=params[0].b.at[0].set(jnp.nan)), params[1])
    with pytest.raises(ValueError, match=r"params\[0\]\.b: contains NaN"):
        check_finite_params(bad_params, key=keys()[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_call_plan_and_report_round_trip_exactly(dtype):
    # What fit sends to the compiled program and reads back, packed into one vector each way.
    with jax.enable_x64(dtype == "float64"):
        perms = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::-1]
        min_delta = np.asarray(1e-3, dtype)  # fit rounds it to the data's dtype
        plan = make_plan(7, 40, 2**31 - 1, min_delta, dtype, perms)
        assert plan.dtype == np.int32
        got = jax.jit(lambda p: _read_plan(p, jnp.dtype(dtype), spec(epochs_per_call=3), 4))(plan)
        assert [int(v) for v in got[:3]] == [7, 40, 2**31 - 1]
        assert got[3].dtype == jnp.dtype(dtype) and got[3] == min_delta
        np.testing.assert_array_equal(got[4], perms)
        no_shuffle = jax.jit(lambda p: _read_plan(p, jnp.dtype(dtype), spec(False, 3), 4))
        assert no_shuffle(make_plan(0, 1, 5, 0.0, dtype, None))[4] is None

        carry = fresh_carry(MODEL.init(jax.random.key(0)), DEFAULT_OPTIMIZER, dtype, False)
        carry = carry._replace(
            stopped=jnp.asarray(True), bad_epoch=jnp.asarray(3), bad_step=jnp.asarray(-1),
            state=carry.state._replace(step=jnp.asarray(2**31 - 2, jnp.int32)),
        )  # fmt: skip
        loss = jnp.asarray([0.1, 1e-30, np.nan], dtype)  # tiny and NaN survive too
        hist = (
            jnp.asarray([True, True, False]),
            loss,
            2 * loss,
            -loss,
            3 * loss,  # the learning rate
            jnp.asarray([0, 1, 0], bool),
        )
        report = jax.device_get(jax.jit(_report, static_argnums=2)(hist, carry, jnp.dtype(dtype)))
        r = read_report(report, 3, dtype)
        assert r.ran.tolist() == [True, True, False] and r.improved.tolist() == [False, True, False]
        got_all = (r.train_loss, r.val_loss, r.val_metric, r.learning_rate)
        for got_loss, want in zip(got_all, hist[1:5], strict=True):
            np.testing.assert_array_equal(got_loss, np.asarray(want).astype(got_loss.dtype))
        assert (r.stopped, r.diverged, r.bad_epoch, r.bad_step, r.step) == (
            True,
            False,
            3,
            -1,
            2**31 - 2,
        )


def test_fit_in_float64_keeps_float64_history_and_min_delta():
    # A float64 run end to end through the packed plan and report: min_delta = 1e-12 (far below
    # float32's resolution at these losses) must not stop a run that improves every epoch.
    with jax.enable_x64(True):
        model = jaxmlp.MLP((3, 4, 1), param_dtype="float64")
        x = jax.random.normal(jax.random.key(1), (32, 3), jnp.float64)
        y = jnp.sum(x, axis=1, keepdims=True)
        params = model.init(jax.random.key(2))
        r = jaxmlp.fit(model, params, x, y, loss="mse", key=jax.random.key(3), epochs=6,
                       batch_size=8, progress=False,
                       early_stopping=jaxmlp.EarlyStopping(patience=2, min_delta=1e-12))  # fmt: skip
        assert len(r.history["loss"]) == 6 and r.stopped_epoch is None
        assert r.best_epoch == int(np.argmin(r.history["loss"])) + 1
        # The history keeps float64 values, not float32-rounded ones.
        assert all(float(np.float32(v)) != v for v in r.history["loss"])


def test_unchecked_epoch_matches_the_checked_one_and_keeps_the_start_state_on_failure():
    x = jax.random.normal(jax.random.key(40), (40, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1]], axis=1)
    params = MODEL.init(jax.random.key(41))
    for lr, finite in ((0.1, True), (1e30, False)):
        opt = optax.sgd(lr)
        s = spec(shuffle=False, epochs_per_call=1, optimizer=opt)
        args = (jnp.asarray(False), jnp.asarray(-1, jnp.int32), x, y, None, None)
        state = TrainState.create(params, opt)
        checked = jax.jit(make_epoch(s))(state, *args)
        fast = jax.jit(make_epoch(s, check_steps=False))(state, *args)
        assert bool(checked[1]) == bool(fast[1]) == (not finite)
        assert int(fast[2]) == -1  # the fast path never locates the step
        if finite:
            assert int(checked[2]) == -1 and int(fast[0].step) == 5
            # Two compiled programs may sum the bias gradients in another order (they do on a
            # GPU: 4e-9 apart on a bias of 2e-3), so float32 closeness, not bit equality.
            chex.assert_trees_all_close(fast[0], checked[0], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(fast[3], checked[3], rtol=1e-5)
        else:
            assert 1 <= int(checked[2]) <= 5 and int(checked[0].step) == int(checked[2]) - 1
            chex.assert_trees_all_equal(fast[0], state)  # the state the epoch started from


@pytest.mark.parametrize(
    ("n", "drop_last"),
    [(48, False), (50, True), (45, False)],
    ids=["no-padding", "drop-last", "padded-to-whole-batches"],
)
def test_fit_visits_rows_in_the_documented_orders(n, drop_last):
    # A per-step loop fed the rows in epoch_permutations' orders reaches fit's parameters.
    x = jax.random.normal(jax.random.key(20), (n, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    params = MODEL.init(jax.random.key(21))
    opt = optax.sgd(0.1)
    key = jax.random.key(22)
    result = jaxmlp.fit(MODEL, params, x, y, loss="mse", key=key, optimizer=opt, epochs=3,
                        batch_size=16, drop_last=drop_last, progress=False)  # fmt: skip
    step = jaxmlp.make_train_step(MODEL, "mse", opt)
    state = TrainState.create(params, opt)
    for order in epoch_permutations(order_seed(key), range(3), n):
        for start in range(0, n if not drop_last else n - 15, 16):
            idx = order[start : start + 16]  # the last batch of 45 rows holds 13
            state, _ = step(state, x[idx], y[idx])
    assert result.step == int(state.step) == 9
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_data_sets_less_than_a_batch_apart_share_one_program():
    # Cross-validation folds of 455 and 456 rows: both padded to 15 batches of 32, one compile,
    # and the padding never changes a result (the 455-row fit equals one on those rows alone,
    # which test_fit_visits_rows_in_the_documented_orders checks against a per-step loop).
    from jaxmlp._engine.step import TRACE_COUNTS

    x = jax.random.normal(jax.random.key(30), (456, 3))
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1]], axis=1)
    params = MODEL.init(jax.random.key(31))
    common = dict(loss="mse", epochs=2, progress=False, sample_weight=None)
    a = jaxmlp.fit(MODEL, params, x[:455], y[:455], key=jax.random.key(32), **common)
    traces = dict(TRACE_COUNTS)
    b = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(33), **common)
    assert TRACE_COUNTS == traces
    assert a.step == b.step == 2 * 15
    sw = jnp.ones((455,)).at[0].set(0.0)  # weights are padded with the rows
    jaxmlp.fit(MODEL, params, x[:455], y[:455], key=jax.random.key(34), loss="mse", epochs=1,
               progress=False, sample_weight=sw)  # fmt: skip


def test_host_value_checks_read_in_place_and_cast_as_staged():
    from jaxmlp._checks import host_nonfinite, on_host, row_slices

    x = jnp.ones((6, 2))
    assert on_host(x) and on_host(np.ones(2)) and not on_host([1.0])
    # float64 values beyond float32's range become Inf when cast for training
    assert host_nonfinite(np.array([[1e39, 0.0]]), np.float32)
    assert not host_nonfinite(np.array([[1e39, 0.0]]))
    assert not host_nonfinite(np.arange(5)) and not host_nonfinite(jnp.float32(2.0))
    assert host_nonfinite(jnp.float32(jnp.nan))
    # Read slice by slice: a NaN in the last slice is found.
    assert row_slices(10, 8, limit=24) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    big = np.zeros((10, 2))
    big[9, 1] = np.nan
    import jaxmlp._checks as checks

    assert host_nonfinite(big)
    old = checks.HOST_SLICE_BYTES
    try:
        checks.HOST_SLICE_BYTES = 16
        assert host_nonfinite(big)
    finally:
        checks.HOST_SLICE_BYTES = old
