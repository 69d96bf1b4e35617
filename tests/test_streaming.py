"""Data bigger than a device (issue 21): one device copy in memory, streamed rows, sharded shares.

Streaming gathers the rows of every minibatch on the host in the epoch's row order; for the same
key it gives the in-memory parameters bit for bit on a CPU (the same steps on the same rows).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp._core.losses import get_loss
from jaxmlp._engine.program import Spec, fresh_carry, make_epoch
from jaxmlp._engine.step import DEFAULT_OPTIMIZER
from jaxmlp._train import inputs
from jaxmlp._train.inputs import pad_rows, prepare_training
from jaxmlp._train.stream import Shards, epoch_slots, local_slots, use_stream

RNG = np.random.default_rng(0)
X = RNG.normal(size=(203, 5)).astype(np.float32)
Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1).astype(np.float32)
LABELS = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
REG = jaxmlp.MLP((5, 12, 2), activation="tanh")
CLS = jaxmlp.MLP((5, 12, 3), activation="relu")


def _fit(model, x, y, **kw):
    kw = {"loss": "mse", "batch_size": 16, "epochs": 4, "progress": False, **kw}
    return jaxmlp.fit(model, model.init(jax.random.key(2)), x, y, key=jax.random.key(3), **kw)


def _same(a, b):
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert a.history == b.history and a.step == b.step


CONFIGS = {
    "padded": {},
    "small-chunks": {"chunk_steps": 3},
    "whole-batches": {"batch_size": 29, "chunk_steps": 2},  # 203 = 7 * 29: no weights
    "drop-last": {"drop_last": True, "chunk_steps": 4},
    "no-shuffle": {"shuffle": False},
    "summed-loss": {"loss": "sse", "optimizer": optax.sgd(1e-4)},
    "sample-weight": {"sample_weight": RNG.uniform(0.1, 2, 203).astype(np.float32)},
    "validation-early-stopping": {
        "validation_data": (X[:40], Y[:40]),
        "early_stopping": jaxmlp.EarlyStopping(patience=1),
        "optimizer": optax.adam(0.05),
        "epochs": 8,
    },
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_streamed_fit_equals_in_memory_fit_bit_for_bit(config):
    _same(_fit(REG, X, Y, stream=False, **config), _fit(REG, X, Y, stream=True, **config))


def test_streamed_classification_with_int64_labels_equals_in_memory():
    kw = {"loss": "softmax_cross_entropy", "chunk_steps": 5, "optimizer": optax.adam(0.01)}
    _same(_fit(CLS, X, LABELS, stream=False, **kw), _fit(CLS, X, LABELS, stream=True, **kw))


class Recorder:
    """A row source over arrays that records every request."""

    def __init__(self, x, y, bad=None):
        self.x, self.y, self.requests, self.bad = x, y, [], bad

    def __len__(self):
        return len(self.x)

    def take(self, indices):
        self.requests.append(np.array(indices))
        x, y = self.x[indices], self.y[indices]
        if self.bad == "short" and len(self.requests) > 1:
            return x[:-1], y[:-1]
        if self.bad == "nan" and len(self.requests) > 1:
            x = x.copy()
            x[0, 0] = np.nan
        return x, y


def test_a_row_source_streams_in_chunks_and_equals_arrays():
    src = Recorder(X, Y)
    got = _fit(REG, src, None, chunk_steps=4)
    _same(_fit(REG, X, Y, stream=False, chunk_steps=4), got)
    probe, *chunks = src.requests
    assert probe.size == 16  # the first batch's rows, checked as the in-memory path checks all
    # 13 steps of 16 rows per epoch (the last padded), in chunks of at most 4 steps.
    assert max(c.size for c in chunks) == 4 * 16
    assert sum(c.size for c in chunks) == 4 * 13 * 16
    # Each epoch requests every row once, plus five padding slots (208 - 203) that read row 0.
    per_epoch = np.concatenate(chunks).reshape(4, 13 * 16)
    for e in range(4):
        rows = np.sort(per_epoch[e])
        np.testing.assert_array_equal(rows, np.concatenate([[0] * 5, np.arange(203)]))


def test_a_memmap_streams_by_default_and_equals_in_memory(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert use_stream("auto", xm) and not use_stream("auto", X)
    _same(_fit(REG, X, Y, stream=False), _fit(REG, xm, ym))
    src = jaxmlp.ArraySource(xm, ym)
    assert isinstance(src, jaxmlp.RowSource) and len(src) == 203
    x, y = src.take(np.array([5, 1, 5, 200]))
    np.testing.assert_array_equal(x, X[[5, 1, 5, 200]])
    np.testing.assert_array_equal(y, Y[[5, 1, 5, 200]])


def test_streamed_divergence_names_the_same_step_as_in_memory():
    kw = {"optimizer": optax.sgd(1e6), "chunk_steps": 3}
    with pytest.raises(jaxmlp.DivergenceError) as mem:
        _fit(REG, X, Y * 1e3, stream=False, **kw)
    with pytest.raises(jaxmlp.DivergenceError) as streamed:
        _fit(REG, X, Y * 1e3, stream=True, **kw)
    assert (streamed.value.epoch, streamed.value.step) == (mem.value.epoch, mem.value.step)
    assert streamed.value.step is not None
    pairs = zip(
        jax.tree.leaves(mem.value.params), jax.tree.leaves(streamed.value.params), strict=True
    )
    for u, v in pairs:
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": Recorder(X, Y, bad="short")}, ValueError, r"^x: the source returned inputs"),
        ({"x": Recorder(X, Y, bad="nan")}, ValueError, r"^x: the source returned rows that contain"),
        ({"x": Recorder(X, Y), "y": Y}, ValueError, r"^y: a row source returns its own targets"),
        ({"x": Recorder(X, Y), "stream": False}, ValueError, r"^stream: x is a row source"),
        ({"stream": "yes"}, ValueError, r"^stream: expected True, False or 'auto'"),
        ({"stream": True, "chunk_steps": 0}, ValueError, r"^chunk_steps"),
        ({"x": Recorder(X, np.full(203, 7)), "loss": "softmax_cross_entropy"}, ValueError,
         r"^y: class labels must lie in \[0, 3\)"),
    ],
    ids=["short-take", "nan-rows", "source-and-y", "source-not-streamed", "bad-stream",
         "bad-chunk-steps", "labels-out-of-range"],
)  # fmt: skip
def test_streaming_mistakes_are_clear_errors(kwargs, error, match):
    source = isinstance(kwargs.get("x"), Recorder)
    kw = {"x": X, "y": None if source else Y, "chunk_steps": 2, **kwargs}
    x, y = kw.pop("x"), kw.pop("y")
    model = CLS if kw.get("loss") == "softmax_cross_entropy" else REG
    with pytest.raises(error, match=match):
        _fit(model, x, y, **kw)


def test_an_objective_is_not_streamed():
    with pytest.raises(ValueError, match=r"^stream: an objective's rows are not streamed"):
        _fit(REG, {"x": X}, None, loss=lambda apply, p, r: jnp.sum(apply(p, r["x"]), 1),
             stream=True)  # fmt: skip


def test_a_shard_without_a_mesh_is_a_clear_error():
    src = jaxmlp.ArraySource(X[:100], Y[:100], offset=0, global_rows=203)
    with pytest.raises(ValueError, match=r"^mesh: x holds 100 of 203 rows"):
        _fit(REG, src, None)
    with pytest.raises(ValueError, match=r"^offset: rows \[150, 250\)"):
        jaxmlp.ArraySource(X[:100], Y[:100], offset=150, global_rows=203)


def test_numpy_rows_are_staged_once_already_padded():
    loss = get_loss("mse")
    params = REG.init(jax.random.key(0))
    xb, yb, *_, n = prepare_training(REG, loss, params, X, Y, None, jax.random.key(1),
                                     rows_to=lambda rows: 208)  # fmt: skip
    assert n == 203 and xb.shape == (208, 5) and yb.shape == (208, 2)
    np.testing.assert_array_equal(np.asarray(xb[:203]), X)
    assert not np.asarray(xb[203:]).any()
    # Padding leaves a staged leaf as it is (no copy) and pads the rest.
    sw = jnp.ones(203)
    xp, yp, swp = pad_rows((xb, yb, sw), 208)
    assert xp is xb and yp is yb and swp.shape == (208,)


DEFERRED = {
    "regression": (REG, Y, {}),
    "labels": (CLS, LABELS, {"loss": "softmax_cross_entropy"}),
    "probabilities": (CLS, np.eye(3, dtype=np.float32)[LABELS], {"loss": "softmax_cross_entropy"}),
    "weights-validation": (REG, Y, {"sample_weight": RNG.uniform(0.1, 2, 203).astype(np.float32),
                                    "validation_data": (X[:40], Y[:40])}),
    "no-shuffle-drop-last": (REG, Y, {"shuffle": False, "drop_last": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", DEFERRED.values(), ids=DEFERRED.keys())
def test_large_numpy_data_staged_after_compiling_train_alike(case, monkeypatch):
    # Data from DEFER_BYTES on are staged only once the epoch program is compiled (so that the
    # compiler's working memory and the data's copy do not add up): the same run, bit for bit.
    model, y, kw = case
    eager = _fit(model, X, y, **kw)
    monkeypatch.setattr(inputs, "DEFER_BYTES", 0)
    _same(_fit(model, X, y, **kw), eager)
    kw = {"loss": "mse", "batch_size": 16, "epochs": 2, "progress": False, **kw}
    members = jaxmlp.fit_ensemble(model, X, y, num_models=2, key=jax.random.key(4),
                                  bootstrap=True, **kw)  # fmt: skip
    monkeypatch.setattr(inputs, "DEFER_BYTES", 1 << 60)
    again = jaxmlp.fit_ensemble(model, X, y, num_models=2, key=jax.random.key(4),
                                bootstrap=True, **kw)  # fmt: skip
    for u, v in zip(jax.tree.leaves(members.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_deferred_data_compile_the_epoch_program_once(monkeypatch, caplog):
    monkeypatch.setattr(inputs, "DEFER_BYTES", 0)
    model = jaxmlp.MLP((5, 11, 2))  # a program no other test compiled
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        _fit(model, X, Y)
    runs = [r for r in caplog.records if "Finished XLA compilation of jit(run)" in r.getMessage()]
    assert len(runs) == 1


def test_deferred_data_are_checked_before_training(monkeypatch):
    monkeypatch.setattr(inputs, "DEFER_BYTES", 0)
    bad = X.copy()
    bad[150, 2] = np.inf
    with pytest.raises(ValueError, match=r"^x: contains NaN or Inf"):
        _fit(REG, bad, Y)
    # Checked as staged: a float64 value beyond float32's range would train as Inf.
    wide = X.astype(np.float64)
    wide[7, 1] = 1e39
    with pytest.raises(ValueError, match=r"^x: contains NaN or Inf"):
        _fit(REG, wide, Y)
    with pytest.raises(
        ValueError, match=r"^y: sigmoid_binary_cross_entropy targets must lie in \[0, 1\]"
    ):
        _fit(jaxmlp.MLP((5, 4, 1)), X, X[:, :1] + 2, loss="sigmoid_binary_cross_entropy")
    xb, yb, *_ = prepare_training(REG, get_loss("mse"), REG.init(jax.random.key(0)), X, Y, None,
                                  jax.random.key(1), rows_to=lambda rows: 208, defer=True)  # fmt: skip
    assert isinstance(xb, inputs.Deferred) and xb.shape == (208, 5) and yb.shape == (208, 2)
    staged = xb.stage()
    np.testing.assert_array_equal(np.asarray(staged[:203]), X)
    assert not np.asarray(staged[203:]).any()


def test_an_epoch_holds_no_gathered_copy_of_the_data():
    # Each step gathers its own rows: the compiled epoch's temporaries stay far below the data
    # (gathering the epoch's minibatches at once would take as much again as x).
    spec = Spec(model=jaxmlp.MLP((64, 8, 1)), loss=get_loss("mse"), optimizer=DEFAULT_OPTIMIZER,
                method="manual", l2=0.0, batch_size=32, drop_last=False, shuffle=True,
                epochs_per_call=1, track_best=False, has_val=False)  # fmt: skip
    x, y = jnp.zeros((4096, 64)), jnp.zeros((4096, 1))
    carry = fresh_carry(spec.model.init(jax.random.key(0)), DEFAULT_OPTIMIZER, jnp.float32, False)
    perm = np.arange(4096, dtype=np.int32)
    compiled = (
        jax.jit(make_epoch(spec, check_steps=False))
        .lower(carry.state, False, np.int32(-1), x, y, None, perm, np.int32(4096))
        .compile()
    )
    assert compiled.memory_analysis().temp_size_in_bytes < x.nbytes // 8


def test_epoch_slots_pad_the_last_batch_with_weight_zero_row_zero():
    idx, w = epoch_slots(np.array([4, 2, 0, 1, 3]), 5, 2, False, None, np.float32)
    np.testing.assert_array_equal(idx, [4, 2, 0, 1, 3, 0])
    np.testing.assert_array_equal(w, [1, 1, 1, 1, 1, 0])
    idx, w = epoch_slots(np.array([4, 2, 0, 1, 3]), 5, 2, True, None, np.float32)
    np.testing.assert_array_equal(idx, [4, 2, 0, 1])
    assert w is None


def test_sharded_shares_cover_every_global_batch_exactly_once():
    order = RNG.permutation(203)
    idx, w = epoch_slots(order, 203, 16, False, None, np.float32)
    offsets, rows = np.array([0, 120]), np.array([120, 83])
    shares = [local_slots(idx, w, Shards(offsets, rows, p), 16, np.float32) for p in (0, 1)]
    assert shares[0][2] == shares[1][2]  # every process feeds the same number of slots
    share = shares[0][2]
    assert share < 16  # less than a whole batch per process
    for b in range(13):
        got = []
        for p, (li, lw, _) in enumerate(shares):
            real = lw[b * share : (b + 1) * share] > 0
            got += list(li[b * share : (b + 1) * share][real] + offsets[p])
        want = idx[b * 16 : (b + 1) * 16][w[b * 16 : (b + 1) * 16] > 0]
        np.testing.assert_array_equal(np.sort(got), np.sort(want))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_sharded_input_train_like_one_with_all_rows(tmp_path):
    # Process 0 holds rows [0, 60), process 1 rows [60, 100); neither sees the other's.
    script = str(Path(__file__).parent / "distributed_scripts" / "two_process_sharded.py")
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, script, str(pid), port, str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for pid in (0, 1)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    model = jaxmlp.MLP((3, 16, 2), activation="tanh")
    x = np.asarray(jax.random.normal(jax.random.key(1), (100, 3)))
    single = jaxmlp.fit(
        model, model.init(jax.random.key(2)), x, x[:, :2] ** 2, key=jax.random.key(3),
        loss="mse", optimizer=optax.adam(0.01), batch_size=16, epochs=5, progress=False,
    )  # fmt: skip
    for pid in (0, 1):
        got = json.loads((tmp_path / f"process{pid}.json").read_text())
        assert got["processes"] == 2
        # The same rows in each global batch, summed in another order: float32 rounding.
        for a, b in zip(got["params"], jax.tree.leaves(single.params), strict=True):
            np.testing.assert_allclose(np.array(a), np.asarray(b), atol=1e-6)
        np.testing.assert_allclose(got["loss"], single.history["loss"], rtol=1e-6)


def test_array_source_reads_a_memmap_block_by_block_in_the_requested_order(tmp_path):
    big = np.arange(30000, dtype=np.float32).reshape(10000, 3)
    np.save(tmp_path / "big.npy", big)
    xm = np.load(tmp_path / "big.npy", mmap_mode="r")
    labels = np.arange(10000) % 7
    want = np.random.default_rng(1).integers(0, 10000, 9001)  # three blocks, with repeats
    # A whole memmap is read from its file; a view of one through the mapping.
    for xs in (xm, xm[0:]):
        x, y = jaxmlp.ArraySource(xs, labels).take(want)
        np.testing.assert_array_equal(x, big[want])
        np.testing.assert_array_equal(y, labels[want])
        assert x.ctypes.data % 64 == 0  # a CPU device can use the buffer as it is
    x, _ = jaxmlp.ArraySource(xm, labels).take(np.arange(17, 9017))  # one run: one read
    np.testing.assert_array_equal(x, big[17:9017])


def test_chunk_steps_come_from_the_argument_or_the_free_memory():
    from jaxmlp._train.stream import choose_chunk_steps, free_device_bytes

    assert free_device_bytes() > 0
    assert choose_chunk_steps(5, 1 << 20, 1000) == 5
    assert choose_chunk_steps(5000, 1 << 20, 1000) == 1000  # at most an epoch
    auto = choose_chunk_steps(None, 1 << 20, 1000)  # 1 MiB a step: at most 16 steps
    assert 1 <= auto <= 16
    assert choose_chunk_steps(None, 1 << 30, 1000) == 1  # a step larger than the budget


@pytest.mark.parametrize("members, shuffle, dtype", [(None, True, np.float32), (3, True, np.float64), (None, False, np.float32)])  # fmt: skip
def test_plan_length_is_make_plans(members, shuffle, dtype):
    from jaxmlp._engine.program import make_plan, plan_length

    spec = Spec(model=REG, loss=get_loss("mse"), optimizer=DEFAULT_OPTIMIZER, method="manual",
                l2=0.0, batch_size=16, drop_last=False, shuffle=shuffle, epochs_per_call=4,
                track_best=False, has_val=False, members=members)  # fmt: skip
    shape = (4, *(() if members is None else (members,)), 203)
    perms = np.zeros(shape, np.int32) if shuffle else None
    assert plan_length(spec, dtype, 203) == make_plan(0, 1, 0, 0.0, dtype, perms).size
