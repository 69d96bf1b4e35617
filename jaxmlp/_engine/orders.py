"""Row orders for the fused epochs, drawn on the host.

Epoch ``e``'s order is a NumPy permutation from a Philox stream keyed by the training key's bits
with ``e`` in the counter, so it depends only on ``(key, e)``: any grouping of epochs into
compiled calls, a resumed run and an ensemble member trained alone all see the same orders.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np


def order_seed(key: jax.Array) -> np.ndarray:
    """The 128-bit NumPy seeds, ``(..., 2)`` uint64, of the row orders of ``key`` (any batch
    shape): its raw bits, read to the host once."""
    return seed_from_words(np.asarray(jax.device_get(jax.random.key_data(key)), np.uint32))


def seed_from_words(words: np.ndarray) -> np.ndarray:
    """:func:`order_seed` from a key's raw bits already on the host (uint32, ``(..., w)``)."""
    words = np.asarray(words, np.uint32)
    w = words.shape[-1]
    if w > 4:  # a key type wider than 128 bits: fold the extra words in
        words = np.pad(words, [(0, 0)] * (words.ndim - 1) + [(0, -w % 4)])
        words = np.bitwise_xor.reduce(words.reshape(*words.shape[:-1], -1, 4), axis=-2)
    words = np.pad(words, [(0, 0)] * (words.ndim - 1) + [(0, 4 - words.shape[-1])])
    return np.ascontiguousarray(words).view(np.uint64)


def epoch_permutations(seed: np.ndarray, epochs: Sequence[int], n: int) -> np.ndarray:
    """``(len(epochs), n)`` int32 row orders, drawn on the host: epoch ``e``'s order is a NumPy
    permutation from a Philox stream keyed by ``seed`` (see :func:`order_seed`) with ``e`` in the
    counter's top word.

    Each epoch's order depends only on ``(key, e)``, so resuming mid-run or drawing a call's
    epochs in any grouping gives the same orders. Drawn on the host because XLA's sort, which
    ``jax.random.permutation`` uses, costs as much per 1024 rows as a few small training steps
    on a CPU; the orders travel to the device with the call's other arguments.
    """
    bits = np.random.Philox(key=seed)
    fresh = bits.state  # an empty buffer: each epoch starts its stream from scratch
    rng = np.random.Generator(bits)
    out = np.empty((len(epochs), n), np.int32)
    for i, e in enumerate(epochs):
        counter = np.array([0, 0, 0, int(e)], np.uint64)
        bits.state = {**fresh, "state": {"counter": counter, "key": fresh["state"]["key"]}}
        out[i] = rng.permutation(n)
    return out


def call_permutations(spec, seed: np.ndarray, done: int, limit: int, n: int) -> np.ndarray | None:
    """The row orders of one compiled call covering epochs ``done, done+1, ...``: ``None``
    without shuffling, else ``(epochs_per_call, n)`` for one model (``seed`` ``(2,)``) or
    ``(epochs_per_call, members, n)`` for an ensemble (``seed`` ``(members, 2)``; members that
    share a seed share one draw). Rows for epochs at or past ``limit`` (which the call does not
    run) are left as zeros."""
    if not spec.shuffle:
        return None
    epochs = range(done, min(done + spec.epochs_per_call, limit))
    if spec.members is None:
        out = np.zeros((spec.epochs_per_call, n), np.int32)
        out[: len(epochs)] = epoch_permutations(seed, epochs, n)
        return out
    out = np.zeros((spec.epochs_per_call, spec.members, n), np.int32)
    drawn: dict[bytes, np.ndarray] = {}
    for m, s in enumerate(seed):
        if s.tobytes() not in drawn:
            drawn[s.tobytes()] = epoch_permutations(s, epochs, n)
        out[: len(epochs), m] = drawn[s.tobytes()]
    return out
