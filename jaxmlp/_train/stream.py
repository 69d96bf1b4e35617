"""Streaming: ``fit`` on rows gathered on the host, chunk by chunk, in the epoch's row order.

Each epoch visits the rows in the order the in-memory program would (the same
:func:`jaxmlp._engine.orders.epoch_permutations` draw, the same padding of the last batch with
weight-0 slots that read row 0), so the same key gives the same parameters. The host gathers a
chunk of many steps' rows from the source, checks and converts them, and places them on the device
while the device runs the previous chunk (a background thread prepares chunk k+1; at most two
chunks are on the device at once). A chunk's size comes from the device's free memory unless
``chunk_steps`` is given.

In a multi-process run each process's source may hold only its own rows (``offset`` and
``global_rows``, see :class:`jaxmlp.RowSource`): every process draws the same global order, and
for each global minibatch gathers the rows it owns into its share of the batch (padded with
weight-0 slots); the shares form one global batch across processes, so the sum over a batch's rows
is the single-process one (to float rounding: the rows are summed in another order).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checks import check_int
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP
from jaxmlp._distributed import put, replicated, sharded
from jaxmlp._engine.chunks import chunk_program, epoch_end_program
from jaxmlp._engine.program import Spec, _wide
from jaxmlp._train.sources import RowSource

# A chunk's share of the device's free memory, and bounds on it: two chunks sit on the device and
# up to two more are being prepared, so four chunks stay well inside the free memory.
_CHUNK_SHARE = 1 / 16
_CHUNK_BYTES = (1 << 20, 16 << 20)


def is_source(x: Any) -> bool:
    """Whether ``x`` is a row source (``len`` and ``take``) rather than arrays."""
    return isinstance(x, RowSource) and not hasattr(x, "shape")


def free_device_bytes(device: Any = None) -> int:
    """The free memory of ``device`` (default the first local one): its allocator's limit minus
    what is in use; on a CPU, the host's available memory."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30


def choose_chunk_steps(chunk_steps: Any, step_bytes: int, n_batches: int) -> int:
    """Steps per chunk: ``chunk_steps`` as given (at most an epoch), or as many as fit in a
    sixteenth of the device's free memory, between 1 and 16 MiB of rows."""
    if chunk_steps is not None:
        return min(check_int(chunk_steps, "chunk_steps", 1), n_batches)
    lo, hi = _CHUNK_BYTES
    budget = min(hi, max(lo, int(free_device_bytes() * _CHUNK_SHARE)))
    return max(1, min(n_batches, budget // max(1, step_bytes)))


class RowFormat(NamedTuple):
    """How a chunk's rows are checked and converted: what the in-memory path does to them."""

    features: int
    dtype: Any  # the inputs' (and float targets') dtype: the parameters'
    loss: Loss
    outputs: int


def convert_rows(fmt: RowFormat, x: Any, y: Any, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Checks ``m`` rows a source returned and converts them as the in-memory path would."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape != (m, fmt.features):
        raise ValueError(
            f"x: the source returned inputs of shape {x.shape} for {m} rows; expected ({m}, "
            f"{fmt.features})"
        )
    if y.ndim < 1 or y.shape[0] != m:
        raise ValueError(
            f"y: the source returned {y.shape[0] if y.ndim else 0} targets for {m} rows"
        )
    x = x.astype(fmt.dtype, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("x: the source returned rows that contain NaN or Inf")
    k, loss = fmt.outputs, fmt.loss
    if loss.targets == "classes" and y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"y: class labels must be integers, got {y.dtype}")
        if m and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(
                f"y: class labels must lie in [0, {k}), got labels in [{int(y.min())}, "
                f"{int(y.max())}]"
            )
        return x, y.astype(jax.dtypes.canonicalize_dtype(y.dtype), copy=False)
    if y.ndim == 1 and k == 1:
        y = y[:, None]
    if y.shape != (m, k):
        raise ValueError(f"y: the source returned targets of shape {y.shape}; expected ({m}, {k})")
    y = y.astype(fmt.dtype, copy=False)
    if not np.isfinite(y).all():
        raise ValueError("y: the source returned targets that contain NaN or Inf")
    if loss.targets in ("classes", "binary") and m and (y.min() < 0 or y.max() > 1):
        raise ValueError(f"y: {loss.name} targets must lie in [0, 1]")
    return x, y


def row_format(model: MLP, loss: Loss, dtype: Any) -> RowFormat:
    return RowFormat(model.sizes[0], np.dtype(dtype), loss, model.sizes[-1])


def epoch_slots(
    order: np.ndarray, rows: int, batch: int, drop_last: bool, sw: np.ndarray | None, dtype
) -> tuple[np.ndarray, np.ndarray | None]:
    """The epoch's row index per batch slot, ``(n_batches * batch,)``, and each slot's weight
    (``None`` when every slot weighs 1): the in-memory program's, slot for slot. The last
    partial batch is padded with slots that read row 0 and weigh 0."""
    nb = rows // batch if drop_last else -(-rows // batch)
    slots = nb * batch
    idx = np.zeros(slots, np.int64)
    k = min(rows, slots)
    idx[:k] = order[:k]
    if sw is None and slots <= rows:  # every slot a real row: the unweighted mean
        return idx, None
    w = (np.arange(slots) < rows).astype(dtype)
    return idx, w if sw is None else w * sw[idx]


def local_slots(
    idx: np.ndarray, w: np.ndarray | None, shards: Any, batch: int, dtype
) -> tuple[np.ndarray, np.ndarray, int]:
    """This process's share of every global batch of an epoch: the batch's rows that it owns
    (indices relative to its first row), in batch order, then weight-0 slots that read its row
    0, up to ``share`` slots. ``share`` is the most rows any process owns in any batch of the
    epoch, rounded up (to a multiple of the local devices, in steps of about an eighth of a
    process's fair share, so few shapes ever compile); every process computes the same one.
    Returns ``(n_batches * share,)`` indices and weights, and ``share``."""
    nb = idx.size // batch
    idx = idx.reshape(nb, batch)
    w = (np.ones(idx.shape, dtype) if w is None else w).reshape(nb, batch)
    order = np.argsort(shards.offsets)
    owner = order[np.searchsorted(shards.offsets[order], idx, side="right") - 1]
    P = len(shards.offsets)
    most = max(int((owner == q).sum(axis=1).max(initial=0)) for q in range(P))
    d = jax.local_device_count()
    granule = d * max(1, batch // (8 * P * d))
    share = min(-(-batch // d) * d, -(-most // granule) * granule)
    own = owner == shards.process
    counts = own.sum(axis=1)
    # Stable: each batch's owned slots first, in batch order.
    pick = np.argsort(~own, axis=1, kind="stable")[:, :share]
    keep = np.arange(share)[None, :] < counts[:, None]
    offset = int(shards.offsets[shards.process])
    out_idx = np.where(keep, np.take_along_axis(idx, pick, 1) - offset, 0)
    out_w = np.where(keep, np.take_along_axis(w, pick, 1), 0).astype(dtype)
    return out_idx.ravel(), out_w.ravel(), share


class Feed:
    """Gathers an epoch's chunks from a source and runs them on the device, double-buffered."""

    def __init__(
        self,
        spec: Spec,
        source: Any,
        fmt: RowFormat,
        rows: int,
        sw: np.ndarray | None,
        chunk_steps: int,
        shard: Any = None,
    ):
        self.spec, self.source, self.fmt, self.rows, self.sw = spec, source, fmt, rows, sw
        self.chunk_steps, self.shard = chunk_steps, shard
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="jaxmlp-stream")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _slots(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        B = self.spec.batch_size
        idx, w = epoch_slots(order, self.rows, B, self.spec.drop_last, self.sw, self.fmt.dtype)
        if self.shard is not None:
            return local_slots(idx, w, self.shard, B, self.fmt.dtype)
        return idx, w, B

    def _load(self, idx: np.ndarray, w: np.ndarray | None, width: int) -> tuple:
        """One chunk's rows on the device: ``(steps, width, ...)`` each."""
        m = idx.size
        x, y = self.source.take(idx)
        x, y = convert_rows(self.fmt, x, y, m)
        steps = m // width
        xs = x.reshape(steps, width, *x.shape[1:])
        ys = y.reshape(steps, width, *y.shape[1:])
        ws = None if w is None else w.reshape(steps, width)
        mesh = self.spec.mesh
        if mesh is None:
            return jax.device_put((xs, ys, ws))
        if self.shard is None:  # every process holds every row: place the global chunk
            return put((xs, ys, ws), replicated(mesh))
        # Each process's share is its block of every global batch (axis 1).
        return tuple(
            None if a is None else jax.make_array_from_process_local_data(sharded(mesh, 1), a)
            for a in (xs, ys, ws)
        )

    def _scalars(self, *values: Any) -> Any:
        """Host scalars as the programs take them (replicated over a mesh's processes)."""
        values = tuple(np.asarray(v) for v in values)
        return values if self.spec.mesh is None else put(values, replicated(self.spec.mesh))

    def run_epoch(self, state, order: np.ndarray, check_steps: bool = False, key: Any = None):
        """Runs one epoch's steps from ``state`` (``key``: the run's training-mode root key);
        returns ``(state, bad, bad_step, values, wsum)`` (device arrays; ``values`` and ``wsum``
        over every step of the epoch)."""
        idx, w, width = self._slots(order)
        nb = idx.size // width
        S = self.chunk_steps
        bounds = [(lo, min(nb, lo + S)) for lo in range(0, nb, S)]
        program = chunk_program(self.spec, check_steps)
        pending = collections.deque()

        def submit(c: int) -> None:
            lo, hi = bounds[c]
            part = slice(lo * width, hi * width)
            wpart = None if w is None else w[part]
            pending.append(self.pool.submit(self._load, idx[part], wpart, width))

        for c in range(min(2, len(bounds))):
            submit(c)
        bad, bad_step, i = self._scalars(np.zeros((), bool), np.int32(-1), np.int32(1))
        values, wsums, in_flight = [], [], collections.deque()
        for c in range(len(bounds)):
            xs, ys, ws = pending.popleft().result()
            if c + 2 < len(bounds):
                submit(c + 2)
            state, bad, bad_step, i, v, s = program(state, bad, bad_step, i, xs, ys, ws, key)
            values.append(v)
            wsums.append(s)
            in_flight.append(i)
            if len(in_flight) > 2:  # at most two chunks queued on the device
                jax.block_until_ready(in_flight.popleft())
        values = jnp.concatenate(values)
        return state, bad, bad_step, values, None if w is None else jnp.concatenate(wsums)

    def call(self, patience: int, min_delta: float, x_val, y_val) -> Callable:
        """The driver's call for streamed epochs: ``(carry, start, perms) -> (carry, report)``,
        one epoch per call."""
        end = epoch_end_program(self.spec)
        dtype = self.fmt.dtype
        delta = np.asarray(min_delta, _wide(dtype)).astype(dtype)

        def call(carry, start: int, perms):
            order = perms[0] if perms is not None else np.arange(self.rows)
            state, _, _, values, wsum = self.run_epoch(carry.state, order, key=carry.dropout_key)
            e, p, d = self._scalars(np.int32(start), np.int32(patience), delta)
            return end(carry, e, state, values, wsum, x_val, y_val, p, d)

        return call

    def replay(self, state, order: np.ndarray, key: Any = None):
        """The epoch from ``state`` with a check after every step: ``(state, bad, bad_step)``."""
        state, bad, bad_step, _, _ = self.run_epoch(state, order, check_steps=True, key=key)
        return state, bad, bad_step


def use_stream(stream: Any, x: Any) -> bool:
    """``fit``'s ``stream`` argument: True, False or ``"auto"`` (stream a row source, a NumPy
    memmap, or host arrays larger than half the device's free memory)."""
    if stream not in (True, False, "auto"):
        raise ValueError(f"stream: expected True, False or 'auto', got {stream!r}")
    if is_source(x):
        if stream is False:
            raise ValueError("stream: x is a row source, which is always streamed; pass arrays")
        return True
    if stream != "auto":
        return bool(stream)
    if isinstance(x, np.memmap):
        return True
    return isinstance(x, np.ndarray) and x.nbytes > free_device_bytes() // 2


class StreamInput(NamedTuple):
    """A streamed run's data, checked: the source, this process's shard (``None``: all rows),
    validation rows on the device, the key's bits, the global row count, the first rows."""

    source: Any
    shard: Any
    x_val: Any
    y_val: Any
    key_words: np.ndarray
    rows: int
    probe: tuple[Any, Any]


def prepare_stream(
    model: MLP, loss: Loss | None, params: Any, x: Any, y: Any, validation_data: Any, key: Any,
    batch_size: int, mesh: Any,
) -> StreamInput:  # fmt: skip
    """Checks a streamed run's inputs: the source (or arrays wrapped in an ``ArraySource``), its
    first rows as the in-memory path checks all of them (the rest are checked chunk by chunk),
    the validation data, and where a sharded source's rows sit."""
    from jaxmlp._train.inputs import prepare_data, prepare_validation
    from jaxmlp._train.sources import ArraySource

    if loss is None:
        raise ValueError("stream: an objective's rows are not streamed; pass them in memory")
    if is_source(x):
        if y is not None:
            raise ValueError("y: a row source returns its own targets; leave y=None")
        source = x
    else:
        if y is None:
            raise TypeError("y: a loss needs targets")
        source = ArraySource(x, y)
    local_rows = len(source)
    if local_rows < 1:
        raise ValueError("x: empty data (0 rows)")
    global_rows = getattr(source, "global_rows", None)
    shard = None
    rows = local_rows
    if global_rows is not None and global_rows != local_rows:
        if mesh is None:
            raise ValueError(
                f"mesh: x holds {local_rows} of {global_rows} rows (a shard); sharded input "
                f"needs a multi-process run with mesh=data_parallel_mesh()"
            )
        shard = exchange_shards(int(getattr(source, "offset", 0)), local_rows, global_rows)
        rows = global_rows
    first = np.arange(min(batch_size, local_rows))
    px, py = source.take(first)
    if len(px) != first.size or len(py) != first.size:
        raise ValueError(
            f"x: {type(source).__name__}.take returned {len(px)} inputs and {len(py)} targets "
            f"for {first.size} rows"
        )
    xb, yb, words, _ = prepare_data(model, loss, params, px, py, finite_params=True, key=key)
    xv, yv, _ = prepare_validation(model, loss, params, validation_data)
    assert words is not None  # a key was passed
    return StreamInput(source, shard, xv, yv, words, rows, (xb, yb))


class Shards(NamedTuple):
    """Every process's rows of the global data set, and which of them this process holds."""

    offsets: np.ndarray  # (processes,)
    rows: np.ndarray  # (processes,)
    process: int  # this process


def exchange_shards(offset: int, rows: int, global_rows: int) -> Shards:
    """Every process's ``(offset, rows)``, gathered from all processes; checks that the shards
    tile ``[0, global_rows)`` without gaps or overlaps."""
    from jax.experimental import multihost_utils

    table = np.asarray(multihost_utils.process_allgather(np.array([offset, rows], np.int64)))
    table = table.reshape(-1, 2)
    order = np.argsort(table[:, 0])
    ends = np.cumsum(table[order, 1])
    starts = np.concatenate([[0], ends[:-1]])
    if not (np.array_equal(starts, table[order, 0]) and ends[-1] == global_rows):
        spans = ", ".join(f"[{a}, {a + b})" for a, b in table.tolist())
        raise ValueError(
            f"x: the processes' shards {spans} do not tile the {global_rows} global rows"
        )
    return Shards(table[:, 0], table[:, 1], jax.process_index())
