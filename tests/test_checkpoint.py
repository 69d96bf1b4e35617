"""Checkpoints: exact round trips, atomic saves under SIGKILL, a clear error for every bad file."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmlp._checkpoint.files import (
    FORMAT_VERSION,
    Checkpoint,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from jaxmlp._core.mlp import MLP, Dense
from jaxmlp.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
MODEL = MLP((3, 5, 2), activation="tanh")


def _params(model: MLP, seed: int):
    """Odd, non-zero weights and biases (so nothing hides behind zeros), made with numpy so
    that no test pays for compiling an initialiser."""
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(model.param_dtype)
    return tuple(
        Dense(
            jnp.asarray((rng.standard_normal((i, o)) * 0.7).astype(dtype)),
            jnp.asarray((np.arange(o) * 0.37 - 0.11).astype(dtype)),
        )
        for i, o in model.layer_shapes()
    )


def _bits(leaf) -> tuple[str, tuple[int, ...], bytes]:
    """dtype, shape and raw bytes of a leaf (typed keys through their key data)."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return str(leaf.dtype), leaf.shape, np.asarray(jax.random.key_data(leaf)).tobytes()
    a = np.asarray(leaf)
    return str(a.dtype), a.shape, a.tobytes()


def assert_bit_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert _bits(x) == _bits(y)


@pytest.fixture
def saved(tmp_path):
    """A small checkpoint with an Adam state; returns (path, params, opt_state)."""
    params = _params(MODEL, 0)
    opt_state = optax.adam(1e-2).init(params)
    path = save_checkpoint(
        tmp_path / "c.npz", model=MODEL, params=params, opt_state=opt_state, step=3
    )
    return path, params, opt_state


def _rewrite(path: Path, meta_fn=None, arrays_fn=None) -> None:
    """Rebuilds ``path`` with public numpy calls, after editing its metadata or arrays."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__jaxmlp__").tobytes())
    if meta_fn:
        meta_fn(meta)
    if arrays_fn:
        arrays_fn(arrays)
    arrays["__jaxmlp__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


# ---------------------------------------------------------------- round trips


def test_round_trip_float32_everything(tmp_path):
    params = _params(MODEL, 1)
    best = _params(MODEL, 2)
    opt_state = optax.adam(1e-2).init(params)
    key = jax.random.key(7)
    extra = {"key": key, "best_params": best, "best_loss": np.float32(0.25), "epoch": 4}
    meta = {"run": "a", "history": [1.5, 0.5], "nested": {"lr": 0.01}}
    path = save_checkpoint(
        tmp_path / "sub" / "c.npz",
        model=MODEL,
        params=params,
        opt_state=opt_state,
        step=np.int64(12),
        metadata=meta,
        extra_arrays=extra,
    )
    assert path == tmp_path / "sub" / "c.npz"
    ck = load_checkpoint(path, model=MODEL, opt_state_like=optax.adam(1e-2).init(params))
    assert isinstance(ck, Checkpoint)
    assert ck.model == MODEL and ck.step == 12 and ck.metadata == meta
    assert isinstance(ck.params, tuple) and all(isinstance(d, Dense) for d in ck.params)
    assert all(isinstance(a, jax.Array) for a in jax.tree_util.tree_leaves(ck.params))
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.opt_state, opt_state)
    assert_bit_equal(ck.extra["key"], key)
    assert_bit_equal(ck.extra["best_params"], best)
    assert isinstance(ck.extra["best_params"][1], Dense)
    assert float(ck.extra["best_loss"]) == 0.25 and int(ck.extra["epoch"]) == 4
    # without model/opt_state_like: the description is rebuilt, the state comes back by key path
    bare = load_checkpoint(path)
    assert bare.model == MODEL
    assert set(bare.opt_state) == {
        "[0].count",
        *(f"[0].{m}[{l}].{f}" for m in ("mu", "nu") for l in (0, 1) for f in "wb"),
    }
    assert_bit_equal(bare.opt_state["[0].mu[1].w"], opt_state[0].mu[1].w)


def test_file_is_a_plain_npz_with_json_metadata(saved):
    path, params, _ = saved
    with np.load(path, allow_pickle=False) as npz:
        names = set(npz.files)
        meta = json.loads(npz["__jaxmlp__"].tobytes())
        np.testing.assert_array_equal(npz["params[1].w"], np.asarray(params[1].w))
    assert {"params[0].w", "params[0].b", "opt_state[0].mu[0].w", "opt_state[0].count"} <= names
    assert meta["format"] == "jaxmlp-checkpoint" and meta["format_version"] == FORMAT_VERSION
    assert meta["model"] == MODEL.to_dict() and meta["step"] == 3
    assert set(meta["versions"]) == {"jaxmlp", "jax", "jaxlib", "numpy"}
    assert meta["arrays"]["params[0].w"] == {"dtype": "float32", "shape": [3, 5]}
    assert meta["arrays"]["opt_state[0].count"]["dtype"] == "int32"
    assert len(meta["sha256"]) == 64


def test_round_trip_float64(tmp_path, x64):
    model = MLP((4, 3, 1), param_dtype="float64")
    params = _params(model, 3)
    assert params[0].w.dtype == jnp.float64
    opt_state = optax.sgd(0.1, momentum=0.9).init(params)
    save_checkpoint(tmp_path / "c.npz", model=model, params=params, opt_state=opt_state)
    ck = load_checkpoint(tmp_path / "c.npz", model=model, opt_state_like=opt_state)
    assert ck.params[0].w.dtype == jnp.float64
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.opt_state, opt_state)


def test_float64_params_without_x64_are_refused_not_narrowed(tmp_path):
    with jax.enable_x64(True):
        model = MLP((4, 3, 1), param_dtype="float64")
        save_checkpoint(tmp_path / "c.npz", model=model, params=_params(model, 3))
    # The float64 model itself is refused (JAX would hold it in float32), saying how to enable x64.
    with pytest.raises(CheckpointError, match=r"param_dtype: 'float64' needs JAX's 64-bit mode"):
        load_checkpoint(tmp_path / "c.npz")


def test_round_trip_bfloat16_bit_exact(tmp_path):
    model = MLP((6, 4, 3), param_dtype="bfloat16", compute_dtype="bfloat16")
    params = _params(model, 4)
    # Awkward bit patterns too: a NaN payload, -0.0, the smallest subnormal.
    odd = np.array([0x7FC1, 0x8000, 0x0001], np.uint16).view(jnp.bfloat16)
    params = (Dense(params[0].w, params[0].b), Dense(params[1].w, jnp.asarray(odd)))
    f8 = jnp.asarray([0.5, -1.0, 448.0], jnp.float8_e4m3fn)
    save_checkpoint(tmp_path / "c.npz", model=model, params=params, extra_arrays={"f8": f8})
    ck = load_checkpoint(tmp_path / "c.npz", model=model)
    assert ck.params[1].b.dtype == jnp.bfloat16 and ck.extra["f8"].dtype == jnp.float8_e4m3fn
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.extra["f8"], f8)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:
        assert npz["params[1].b"].dtype == np.uint16  # stored as raw bits, no pickle needed


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"], ids=["threefry", "rbg"])
def test_typed_prng_key_reloads_as_the_same_typed_key(tmp_path, impl):
    key = jax.random.key(11, impl=impl)
    keys = jax.random.split(jax.random.key(12, impl=impl), 3)
    expected = jax.random.normal(jax.random.key(11, impl=impl), (4,))
    save_checkpoint(
        tmp_path / "c.npz",
        model=MODEL,
        params=_params(MODEL, 5),
        extra_arrays={"key": key, "keys": keys},
    )
    ck = load_checkpoint(tmp_path / "c.npz")
    assert jnp.issubdtype(ck.extra["key"].dtype, jax.dtypes.prng_key)
    assert str(jax.random.key_impl(ck.extra["key"])) == impl
    assert ck.extra["keys"].shape == (3,)
    assert_bit_equal(ck.extra["keys"], keys)
    np.testing.assert_array_equal(jax.random.normal(ck.extra["key"], (4,)), expected)


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=1e-3),
    "clip_chain": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    "multisteps_int_counts": lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.sgd)(
        learning_rate=0.1, momentum=0.5
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_optax_state_round_trips_and_training_continues_identically(tmp_path, name):
    optimizer = OPTIMIZERS[name]()
    params = _params(MODEL, 6)
    state = optimizer.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), params)
    update = jax.jit(optimizer.update)  # one compilation instead of one per eager op
    for _ in range(4):  # a non-trivial state: counts > 0, moments non-zero
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    save_checkpoint(tmp_path / "c.npz", model=MODEL, params=params, opt_state=state, step=2)
    ck = load_checkpoint(tmp_path / "c.npz", model=MODEL, opt_state_like=optimizer.init(params))
    assert_bit_equal(ck.opt_state, state)
    ints = [
        x for x in jax.tree_util.tree_leaves(ck.opt_state) if jnp.issubdtype(x.dtype, jnp.integer)
    ]
    assert ints == [] or any(int(x) > 0 for x in ints)
    u1, s1 = update(grads, state, params)
    u2, s2 = update(grads, ck.opt_state, ck.params)
    assert_bit_equal((u1, s1), (u2, s2))


# ---------------------------------------------------------------- errors


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_checkpoint(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "cut", [lambda n: 10, lambda n: n // 2, lambda n: n - 1], ids=["10_bytes", "half", "last_byte"]
)
def test_truncated_file(saved, cut):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes(data[: cut(len(data))])
    with pytest.raises(CheckpointError, match=r"c\.npz: unreadable or corrupted"):
        load_checkpoint(path)


def _member_data_span(path: Path, member: str) -> tuple[int, int]:
    """Byte range of ``member``'s stored data inside the zip (its .npy header, then the array)."""
    info = zipfile.ZipFile(path).getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


def test_flipped_bytes_in_array_data(saved):
    path = saved[0]
    _, end = _member_data_span(path, "params[0].w.npy")
    data = bytearray(path.read_bytes())
    data[end - 3] ^= 0xFF  # inside the last weight's float32 bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.npz: .*corrupted.*(CRC|SHA-256)"):
        load_checkpoint(path)


def test_edited_arrays_fail_the_sha256(saved):
    """An array changed and re-zipped (valid zip CRCs) is still caught by the recorded hash."""
    path = saved[0]

    def nudge(arrays):
        arrays["params[1].b"] = arrays["params[1].b"] + np.float32(1e-3)

    _rewrite(path, arrays_fn=nudge)
    with pytest.raises(CheckpointError, match=r"c\.npz: corrupted: the SHA-256"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "signature", [b"PK\x01\x02", b"PK\x05\x06"], ids=["central_dir", "end_record"]
)
def test_flipped_bytes_in_zip_structure(saved, signature):
    path = saved[0]
    data = bytearray(path.read_bytes())
    at = data.rfind(signature)
    data[at + 1] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.npz: unreadable or corrupted"):
        load_checkpoint(path)


def test_text_file_and_npy_file_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("epoch 3: loss 0.25\n")
    with pytest.raises(CheckpointError, match=r"notes\.npz: unreadable .* not a valid \.npz"):
        load_checkpoint(text)
    npy = tmp_path / "w.npz"
    with open(npy, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(CheckpointError, match=r"single \.npy array"):
        load_checkpoint(npy)


def test_npz_without_our_metadata(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.ones((3, 5)), b=np.zeros(5))
    with pytest.raises(
        CheckpointError, match=r"plain\.npz: not a jaxmlp checkpoint \(no '__jaxmlp__'"
    ):
        load_checkpoint(tmp_path / "plain.npz")


def test_other_format_name(saved):
    _rewrite(saved[0], meta_fn=lambda m: m.update(format="someone-else"))
    with pytest.raises(CheckpointError, match="not a jaxmlp checkpoint"):
        load_checkpoint(saved[0])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.pop("trees"), r"its metadata lacks \['trees'\]"),
        (
            lambda m: m["trees"].update(params=["params[9].w"]),
            r"params does not have the model's parameter structure \(stored '\[9\].w', the "
            r"model has '\[0\].w'",
        ),
        (lambda m: m["arrays"]["params[0].b"].update(dtype="no_such_dtype"), "cannot decode"),
        (lambda m: m["model"].update(sizes=[3, -5, 2]), "invalid model description"),
    ],
    ids=["missing_key", "unknown_entry", "bad_dtype", "bad_model"],
)
def test_malformed_metadata(saved, edit, match):
    _rewrite(saved[0], meta_fn=edit)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(saved[0])


def test_future_format_version(saved):
    _rewrite(saved[0], meta_fn=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        CheckpointError, match=rf"format version {FORMAT_VERSION + 1} is not supported.*upgrade"
    ):
        load_checkpoint(saved[0])


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (
            MLP((3, 6, 2), activation="tanh"),
            r"sizes: stored \[3, 5, 2\], given \[3, 6, 2\].*layer shapes",
        ),
        (MLP((3, 5, 2), activation="relu"), "activation: stored 'tanh', given 'relu'"),
        (
            MLP((3, 5, 2), activation="tanh", param_dtype="bfloat16"),
            "param_dtype: stored 'float32', given 'bfloat16'",
        ),
    ],
    ids=["sizes", "activation", "param_dtype"],
)
def test_model_mismatch_names_the_field(saved, other, match):
    with pytest.raises(CheckpointError, match=r"c\.npz was saved for a different model: " + match):
        load_checkpoint(saved[0], model=other)


def test_arrays_that_do_not_fit_the_stored_model(saved):
    """Description (3, 4, 2), arrays (3, 5, 2): the error names the layer and both shapes."""
    _rewrite(saved[0], meta_fn=lambda m: m["model"].update(sizes=[3, 4, 2]))
    with pytest.raises(
        CheckpointError,
        match=r"does not fit its model: params\[0\]\.w: shape \(3, 5\), expected \(3, 4\)",
    ):
        load_checkpoint(saved[0])


def test_opt_state_like_mismatch(saved, tmp_path):
    path, params, _ = saved
    with pytest.raises(
        CheckpointError, match="opt_state_like has 4 leaves, the stored optimizer state has 9"
    ):
        load_checkpoint(path, opt_state_like=optax.sgd(0.1, momentum=0.9).init(params))
    wider = _params(MLP((3, 6, 2), activation="tanh"), 0)
    with pytest.raises(
        CheckpointError,
        match=r"leaf \[0\]\.mu\[0\]\.w is float32\[3, 6\], "
        r"the stored 'opt_state\[0\]\.mu\[0\]\.w' is float32\[3, 5\]",
    ):
        load_checkpoint(path, opt_state_like=optax.adam(1e-2).init(wider))
    half = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float16) if a.dtype == jnp.float32 else a,
        optax.adam(1e-2).init(params),
    )
    with pytest.raises(
        CheckpointError, match=r"is float16\[3, 5\], the stored .* is float32\[3, 5\]"
    ):
        load_checkpoint(path, opt_state_like=half)
    save_checkpoint(tmp_path / "no_opt.npz", model=MODEL, params=params)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "no_opt.npz", opt_state_like=optax.adam(1e-2).init(params))


def test_save_rejects_bad_arguments(tmp_path):
    params = _params(MODEL, 8)
    with pytest.raises(TypeError, match="metadata: must be JSON-serialisable"):
        save_checkpoint(tmp_path / "c.npz", model=MODEL, params=params, metadata={"f": object()})
    with pytest.raises(ValueError, match=r"params\[0\]\.w: shape \(3, 5\), expected \(3, 4\)"):
        save_checkpoint(tmp_path / "c.npz", model=MLP((3, 4, 2)), params=params)
    with pytest.raises(ValueError, match="step: must be >= 0"):
        save_checkpoint(tmp_path / "c.npz", model=MODEL, params=params, step=-1)
    with pytest.raises(TypeError, match="cannot store an array of dtype"):
        save_checkpoint(
            tmp_path / "c.npz", model=MODEL, params=params, extra_arrays={"s": np.array(["a"])}
        )
    assert not list(tmp_path.iterdir())  # nothing written, no temp file left


class _Payload:
    """Unpickling this would create ``marker``: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_array_is_refused_without_running_code(saved, tmp_path):
    path = saved[0]
    marker = tmp_path / "pwned"
    evil = np.empty((3, 5), dtype=object)
    evil[...] = _Payload(str(marker))
    _rewrite(path, arrays_fn=lambda arrays: arrays.update({"params[0].w": evil}))
    with pytest.raises(CheckpointError, match=r"c\.npz: unreadable .*allow_pickle=False"):
        load_checkpoint(path)
    assert not marker.exists()
    # The file really is hostile: a loader that allowed pickle would have run the payload.
    with np.load(path, allow_pickle=True) as npz:
        npz["params[0].w"]
    assert marker.exists()


# ---------------------------------------------------------------- directory helpers


def test_checkpoint_helpers(tmp_path):
    assert list_checkpoints(tmp_path / "absent") == [] and latest_checkpoint(tmp_path) is None
    assert checkpoint_path(tmp_path, 7) == tmp_path / "ckpt_000007.npz"
    params = _params(MODEL, 9)
    for epoch in (3, 12, 1, 1000000):
        save_checkpoint(checkpoint_path(tmp_path, epoch), model=MODEL, params=params, step=epoch)
    (tmp_path / "ckpt_x.npz").write_text("not ours")
    (tmp_path / ".ckpt_000099.npz.tmp-1-0123abcd").write_text("a temp file")
    assert list_checkpoints(tmp_path) == [
        (e, checkpoint_path(tmp_path, e)) for e in (1, 3, 12, 1000000)
    ]
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_1000000.npz"
    removed = prune_checkpoints(tmp_path, keep=2)
    assert removed == [checkpoint_path(tmp_path, 1), checkpoint_path(tmp_path, 3)]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [12, 1000000]
    assert prune_checkpoints(tmp_path, keep=5) == []
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 1000000
    assert (tmp_path / "ckpt_x.npz").exists()
    with pytest.raises(ValueError, match="keep: must be >= 1"):
        prune_checkpoints(tmp_path, keep=0)
    with pytest.raises(ValueError, match="epoch: must be >= 0"):
        checkpoint_path(tmp_path, -1)


# ---------------------------------------------------------------- atomic writes


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_cleaned_but_live_ones_kept(tmp_path):
    target = tmp_path / "c.npz"
    dead = tmp_path / f".c.npz.tmp-{_dead_pid()}-0badc0de"
    mine = tmp_path / f".c.npz.tmp-{os.getpid()}-00000001"
    other_target = tmp_path / f".d.npz.tmp-{_dead_pid()}-0badc0de"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".c.npz.tmp-{sleeper.pid}-abcdef01"
        for f in (dead, mine, other_target, live):
            f.write_bytes(b"partial")
        save_checkpoint(target, model=MODEL, params=_params(MODEL, 10))
        assert not dead.exists()  # its writer is gone
        assert mine.exists() and live.exists()  # a live writer's (or our thread's) file stays
        assert other_target.exists()  # another target's temp file is not ours to judge
        old = time.time() - 3600
        os.utime(live, (old, old))
        load_checkpoint(target)
        assert not live.exists()  # alive but untouched for an hour: a hung writer
        assert mine.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


_WRITER = """
import sys
import numpy as np
from jaxmlp._checkpoint.files import save_checkpoint
from jaxmlp._core.mlp import MLP, Dense

path, n = sys.argv[1], int(sys.argv[2])
model = MLP((n, n))
w, b = np.empty((n, n), np.float32), np.empty((n,), np.float32)
version = int(sys.stdin.readline())  # imported and waiting: the parent says when to start
while True:
    w.fill(version)
    b.fill(version)
    save_checkpoint(path, model=model, params=(Dense(w, b),), step=version)
    print(version, flush=True)
    version += 1
"""


@pytest.mark.slow
def test_sigkill_during_large_saves_never_breaks_the_checkpoint(tmp_path):
    """A writer saving 64 MiB checkpoints in a loop is SIGKILLed at random moments: every time,
    the file loads, verifies, and is one whole saved version (w and b all equal to its step)."""
    n = 4096  # w: 4096 x 4096 float32 = 64 MiB
    path = tmp_path / "big.npz"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }

    def spawn():
        return subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    rng = random.Random(0)
    kills, landed, proc = 0, 0, spawn()
    try:
        while kills < 4 or (landed == 0 and kills < 10):
            first = 1000 * (kills + 1)
            proc.stdin.write(f"{first}\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) == first  # one whole save by this writer
            t0 = time.perf_counter()
            assert int(proc.stdout.readline()) == first + 1
            time.sleep(rng.uniform(0.0, 1.5 * (time.perf_counter() - t0)))  # ~one save time
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            completed = [first + 1, *(int(line) for line in proc.stdout.read().split())]
            killed_pid, proc = proc.pid, spawn()  # the next writer imports while we check
            leftovers = list(tmp_path.glob(".big.npz.tmp-*"))
            assert all(p.name.split("-")[1] == str(killed_pid) for p in leftovers)
            ck = load_checkpoint(path, model=MLP((n, n)))
            # The rename may have happened just before the kill, its "saved" line unprinted.
            assert ck.step in (completed[-1], completed[-1] + 1)
            w, b = np.asarray(ck.params[0].w), np.asarray(ck.params[0].b)
            assert (w == ck.step).all() and (b == ck.step).all()
            if leftovers:
                landed += 1
                assert not any(p.exists() for p in leftovers)  # the load above cleaned up
    finally:
        proc.kill()
        proc.wait()
    assert landed >= 1, f"none of {kills} kills landed inside a save"


# ---------------------------------------------------------------- layers beyond the plain stack

RICH = MLP((2, 6, 6, 2), activation="tanh", norm="layernorm", dropout=0.2, residual=True,
           features="playground")  # fmt: skip


def _perturbed(model: MLP, seed: int):
    """``model.init`` with every leaf shifted by odd values (a layer norm's scale is ones and
    its offset zeros at init: a loader that swapped or reset them must not pass by luck)."""
    params = model.init(jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    leaves = [a + jnp.asarray(rng.standard_normal(a.shape), a.dtype) * 0.3 for a in leaves]
    return jax.tree.unflatten(treedef, leaves)


def test_layernorm_model_round_trips_with_adam_state_and_best_params(tmp_path):
    from jaxmlp.layers import Norm

    params = _perturbed(RICH, 1)
    assert [type(p).__name__ for p in params] == ["Dense", "Norm", "Dense", "Norm", "Dense"]
    opt = optax.adam(1e-2)
    state = opt.init(params)
    grads = jax.tree.map(lambda a: jnp.cos(a) * 0.1, params)
    _, state = opt.update(grads, state, params)  # mu and nu non-zero, over Norm entries too
    best = jax.tree.map(lambda a: a * 2.0, params)
    path = save_checkpoint(
        tmp_path / "rich.npz", model=RICH, params=params, opt_state=state, step=5,
        extra_arrays={"best_params": best, "key": jax.random.key(3)},
    )  # fmt: skip
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert {"params[1].scale.npy", "params[1].offset.npy", "params[3].scale.npy"} <= names
    assert "opt_state[0].mu[1].scale.npy" in names
    assert "extra['best_params'][3].offset.npy" in names

    ck = load_checkpoint(path, opt_state_like=opt.init(params))  # the model from the file
    assert ck.model == RICH
    assert isinstance(ck.params[1], Norm) and isinstance(ck.params[3], Norm)
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.opt_state, state)
    assert_bit_equal(ck.extra["best_params"], best)
    assert isinstance(ck.extra["best_params"][1], Norm)
    # training continues identically from the restored state
    a = opt.update(grads, state, params)[0]
    b = opt.update(grads, ck.opt_state, ck.params)[0]
    assert_bit_equal(a, b)
    # without opt_state_like: the key paths name the Norm fields
    raw = load_checkpoint(path, model=RICH).opt_state
    assert_bit_equal(raw["[0].nu[3].scale"], state[0].nu[3].scale)


def test_layernorm_ensemble_round_trips(tmp_path):
    params = jax.vmap(lambda k: RICH.init(k))(jax.random.split(jax.random.key(4), 3))
    params = jax.tree.map(lambda a: a + 0.25, params)
    best = jax.tree.map(lambda a: -a, params)
    path = save_checkpoint(tmp_path / "e.npz", model=RICH, params=params, members=3,
                           extra_arrays={"best_params": best})  # fmt: skip
    ck = load_checkpoint(path, model=RICH)
    assert ck.members == 3
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.extra["best_params"], best)
    assert ck.params[1].scale.shape == (3, 6)


def test_fourier_features_live_in_the_description(tmp_path):
    from jaxmlp.layers import FourierFeatures

    model = MLP((2, 8, 1), activation="sin", initializer="siren",
                features=FourierFeatures(n=5, scale=3.5, seed=11))  # fmt: skip
    params = _perturbed(model, 2)
    path = save_checkpoint(tmp_path / "f.npz", model=model, params=params)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["__jaxmlp__"].tobytes())
        members = set(npz.files)
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["model"]["features"] == {"fourier": {"n": 5, "scale": 3.5, "seed": 11}}
    assert members == {"__jaxmlp__", "params[0].w", "params[0].b", "params[1].w", "params[1].b"}
    ck = load_checkpoint(path)  # no model given: B is rebuilt from n, scale and seed
    assert ck.model == model and ck.model.features == FourierFeatures(5, 3.5, 11)
    assert ck.params[0].w.shape == (10, 8)
    x = jax.random.normal(jax.random.key(0), (7, 2))
    np.testing.assert_array_equal(ck.model.apply(ck.params, x), model.apply(params, x))


def test_every_piece_is_in_the_stored_description(tmp_path):
    model = MLP((2, 3, 3, 1), activation=("tanh", "sin"), norm="layernorm", dropout=0.5,
                residual=True, features=("x1", "x1*x2", "sin(x2)"))  # fmt: skip
    path = save_checkpoint(tmp_path / "d.npz", model=model, params=_perturbed(model, 3))
    with np.load(path, allow_pickle=False) as npz:
        stored = json.loads(npz["__jaxmlp__"].tobytes())["model"]
    assert {k: stored[k] for k in ("norm", "dropout", "residual", "features")} == {
        "norm": "layernorm", "dropout": 0.5, "residual": True,
        "features": ["x1", "x1*x2", "sin(x2)"],
    }  # fmt: skip
    ck = load_checkpoint(path)
    assert ck.model == model and ck.model.summary() == model.summary()
    x = jax.random.normal(jax.random.key(1), (4, 2))
    k = jax.random.key(9)  # training mode: the same dropout masks from the same key
    np.testing.assert_array_equal(
        ck.model.apply(ck.params, x, key=k), model.apply(ck.params, x, key=k)
    )


def test_plain_model_is_described_as_before(tmp_path):
    path = save_checkpoint(tmp_path / "p.npz", model=MODEL, params=_params(MODEL, 0))
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["__jaxmlp__"].tobytes())
        members = set(npz.files)
    assert set(meta["model"]) == {"sizes", "activation", "output_activation", "initializer",
                                  "param_dtype", "compute_dtype"}  # fmt: skip
    assert members == {"__jaxmlp__", "params[0].w", "params[0].b", "params[1].w", "params[1].b"}


def test_a_norm_checkpoint_refuses_a_plain_model_naming_the_piece(tmp_path):
    path = save_checkpoint(tmp_path / "n.npz", model=RICH, params=_perturbed(RICH, 5))
    plain = MLP((2, 6, 6, 2), activation="tanh", features="playground", dropout=0.2, residual=True)
    with pytest.raises(
        CheckpointError, match="different model: norm: stored 'layernorm', given None"
    ):
        load_checkpoint(path, model=plain)


def test_edited_entry_names_are_refused_naming_the_entry(tmp_path):
    path = save_checkpoint(tmp_path / "n.npz", model=RICH, params=_perturbed(RICH, 6))

    def rename(meta):  # as if a Norm had been stored as a Dense
        meta["trees"]["params"][2:4] = ["params[1].w", "params[1].b"]

    _rewrite(path, meta_fn=rename)
    with pytest.raises(CheckpointError, match=r"stored '\[1\].w', the model has '\[1\].scale'"):
        load_checkpoint(path)


def _layer_of_our_own():
    import dataclasses

    from jaxmlp.layers import Layer

    @dataclasses.dataclass(frozen=True)
    class Gain(Layer):
        """``out = a * g + h`` with a dict of parameters (a pytree that is no NamedTuple)."""

        name = "gain"

        def init(self, key, n_in, dtype):
            return {"g": jnp.ones((n_in,), dtype), "h": jnp.zeros((n_in,), dtype)}

        def forward(self, params, a, key):
            return a * params["g"] + params["h"], None

        def backward(self, params, a, out, saved, d_out, need_din):
            grads = {"g": jnp.sum(d_out * a, axis=0), "h": jnp.sum(d_out, axis=0)}
            return grads, (d_out * params["g"] if need_din else None)

    return Gain()


def test_a_layer_of_your_own_round_trips_given_the_model(tmp_path):
    model = MLP((3, 4, 2), norm=_layer_of_our_own())
    params = _perturbed(model, 7)
    assert isinstance(params[1], dict)
    opt = optax.adam(1e-3)
    state = opt.init(params)
    path = save_checkpoint(tmp_path / "u.npz", model=model, params=params, opt_state=state,
                           extra_arrays={"best_params": params})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"invalid model description.*pass the model itself"):
        load_checkpoint(path)
    ck = load_checkpoint(path, model=model, opt_state_like=state)
    assert set(ck.params[1]) == {"g", "h"}
    assert_bit_equal(ck.params, params)
    assert_bit_equal(ck.opt_state, state)
    assert_bit_equal(ck.extra["best_params"], params)


# ---------------------------------------------------------------- older format versions

DATA = Path(__file__).resolve().parent / "data"


def test_format_version_1_files_still_load():
    """``tests/data/checkpoint_v1*.npz`` were written by format version 1's writer (commit
    a9122b5): a plain (3, 4, 2) tanh model after one Adam step from ``init(key(0))`` with
    gradients 0.5, its Adam state, a key and the initial params as ``best_params``; and an
    ensemble of two ``init`` draws."""
    with np.load(DATA / "checkpoint_v1.npz", allow_pickle=False) as npz:
        assert json.loads(npz["__jaxmlp__"].tobytes())["format_version"] == 1
    model = MLP((3, 4, 2), activation="tanh")
    p0 = model.init(jax.random.key(0))
    opt = optax.adam(0.01)
    updates, state = opt.update(
        jax.tree.map(lambda a: jnp.ones_like(a) * 0.5, p0), opt.init(p0), p0
    )
    p1 = optax.apply_updates(p0, updates)

    ck = load_checkpoint(DATA / "checkpoint_v1.npz", opt_state_like=opt.init(p0))
    assert ck.model == model and ck.step == 7 and ck.metadata["epoch"] == 3
    assert all(isinstance(d, Dense) for d in ck.params)
    assert_bit_equal(ck.params, p1)
    assert_bit_equal(ck.extra["best_params"], p0)
    assert all(isinstance(d, Dense) for d in ck.extra["best_params"])
    assert_bit_equal(ck.extra["key"], jax.random.key(42))
    assert_bit_equal(ck.opt_state, state)
    assert float(ck.extra["best_score"]) == 0.25

    ens = load_checkpoint(DATA / "checkpoint_v1_ensemble.npz", model=model)
    assert ens.members == 2
    assert_bit_equal(ens.params, jax.vmap(model.init)(jax.random.split(jax.random.key(1), 2)))


def test_a_version_1_file_reads_like_the_version_2_file_of_the_same_plain_model(tmp_path):
    params = _params(MODEL, 3)
    path = save_checkpoint(tmp_path / "v.npz", model=MODEL, params=params, step=1)
    _rewrite(path, meta_fn=lambda m: m.update(format_version=1))
    assert_bit_equal(load_checkpoint(path).params, params)
