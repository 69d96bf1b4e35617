"""The fused kernels as jaxmlp functions: checks, padding, the custom VJP, ``value_and_grad``."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxmlp._checks import check_key, check_nonnegative
from jaxmlp._core.backprop import (
    ValueAndGradFn,
    check_model_loss,
    check_targets,
    penalty_grads,
    penalty_value,
)
from jaxmlp._core.losses import Loss, get_loss, is_builtin
from jaxmlp._core.mlp import MLP, Dense, Params, as_array, as_batch, as_rows, check_params, unrows
from jaxmlp.fused import _kernels as K

MAX_WIDTH = K.WIDTHS[-1]
MAX_DEPTH = 8
DTYPES = ("float32", "float16", "bfloat16")
# Programs per GPU launch the default block size aims at: two per SM of an H100 (132 SMs).
_TARGET_PROGRAMS = 264
# Forces Pallas's interpreter ("1") or compiled kernels ("0"); unset: interpret on CPU only.
INTERPRET_ENV = "JAXMLP_FUSED_INTERPRET"


@dataclasses.dataclass(frozen=True)
class FusedConfig:
    """How the kernels cut the batch (hashable; the defaults suit an H100).

    Args:
        tile_rows: rows per tile, a power of two >= 16 (default: 128 compiled; interpreted,
            the batch rounded up to a power of two, at most 512, so the CPU loops little).
        tiles: tiles per program, a power of two (default: enough for about 264 programs
            compiled, 1 interpreted). Each program writes one partial weight gradient.
        interpret: ``True`` runs Pallas's interpreter (any device, slow), ``False`` compiles
            for the GPU; ``None``: interpret when JAX's default backend is the CPU, or as the
            environment variable ``JAXMLP_FUSED_INTERPRET`` (``1``/``0``) says.
        num_warps: Triton's warps per program.
        num_stages: Triton's software-pipelining stages.
        accumulate: where a program sums its tiles' weight gradients: ``"registers"`` (loop
            carries), ``"memory"`` (its output block, tile by tile) or ``"auto"``: registers
            while all the float32 accumulators together hold at most 16384 numbers (64 KiB;
            the width-64 neural field), memory beyond (width 128).
    """

    tile_rows: int | None = None
    tiles: int | None = None
    interpret: bool | None = None
    num_warps: int = 4
    num_stages: int = 1
    accumulate: str = "auto"

    def __post_init__(self):
        if self.accumulate not in ("auto", "registers", "memory"):
            raise ValueError(
                f"accumulate: expected 'auto', 'registers' or 'memory', got {self.accumulate!r}"
            )
        for name in ("tile_rows", "tiles"):
            v = getattr(self, name)
            low = 16 if name == "tile_rows" else 1
            if v is not None and (not isinstance(v, int) or v < low or v & (v - 1)):
                raise ValueError(f"{name}: expected a power of two >= {low}, got {v!r}")


def _interpret(config: FusedConfig) -> bool:
    if config.interpret is not None:
        return bool(config.interpret)
    env = os.environ.get(INTERPRET_ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return jax.default_backend() == "cpu"


def unsupported(model: Any, loss: str | Loss | None = None) -> str | None:
    """Why the fused kernels cannot run ``model`` (and ``loss``), as a message that starts with
    the argument's name; ``None`` when they can."""
    if not isinstance(model, MLP):
        return f"model: expected a jaxmlp.MLP, got {type(model).__name__}"
    if not model.plain:
        pieces = [n for n, on in (("norm", model.norm is not None), ("dropout", model.dropout),
                                  ("residual", model.residual), ("features", model.features))
                  if on]  # fmt: skip
        return f"model: the fused kernels run the plain stack only, not {', '.join(pieces)}"
    if max(model.sizes) > MAX_WIDTH:
        return f"model: the fused kernels take widths up to {MAX_WIDTH}, got sizes {model.sizes}"
    if model.num_layers > MAX_DEPTH:
        return f"model: the fused kernels take up to {MAX_DEPTH} layers, got {model.num_layers}"
    for name in model.hidden_activations:
        if name not in K.HIDDEN_ACTIVATIONS:
            return (
                f"activation: {name!r} has no fused kernel; use one of {list(K.HIDDEN_ACTIVATIONS)}"
            )
    for field in ("param_dtype", "compute_dtype"):
        dtype = getattr(model, field)
        if dtype is not None and dtype not in DTYPES:
            return f"{field}: the fused kernels take {list(DTYPES)}, got {dtype!r}"
    logits = loss is not None and get_loss(loss).logits
    if not logits and model.output_activation not in K.OUTPUT_ACTIVATIONS:
        return (
            f"output_activation: {model.output_activation!r} has no fused kernel; use one of "
            f"{list(K.OUTPUT_ACTIVATIONS)} (or a cross entropy on logits)"
        )
    return None


def supports(model: Any, loss: str | Loss | None = None) -> bool:
    """Whether the fused kernels can run ``model`` (with ``loss``); :func:`check` says why not."""
    return unsupported(model, loss) is None


def check(model: Any, loss: str | Loss | None = None, config: FusedConfig | None = None) -> None:
    """Raises ``ValueError`` (``TypeError`` for a non-model) naming what does not fit: a model
    beyond the plain stack, a width over 128, more than 8 layers, an activation or dtype without
    a kernel, or a device the kernels cannot compile for (anything but a GPU, uninterpreted)."""
    reason = unsupported(model, loss)
    if reason is not None:
        raise (TypeError if reason.startswith("model: expected") else ValueError)(reason)
    config = FusedConfig() if config is None else config
    # interpret=False is taken at its word (it lowers for a GPU anywhere, e.g. ahead of time)
    backend = jax.default_backend()
    if config.interpret is None and not _interpret(config) and backend != "gpu":
        raise ValueError(
            f"config: the fused kernels compile for GPUs only, the default backend is "
            f"{backend!r}; pass FusedConfig(interpret=True) to interpret them"
        )


def _layout(model: MLP, rows: int, config: FusedConfig, logits: bool) -> K.Layout:
    interpret = _interpret(config)
    tile = config.tile_rows
    if tile is None:
        tile = min(max(16, 1 << (rows - 1).bit_length()), 512) if interpret else 128
    tiles = config.tiles
    if tiles is None:
        want = -(-rows // (tile * _TARGET_PROGRAMS))
        tiles = 1 if interpret else min(1 << (want - 1).bit_length(), 64)
    acts = (*model.hidden_activations, "identity" if logits else model.output_activation)
    param = model.param_dtype
    # float32 matmuls follow JAX's precision setting: "highest" asks for IEEE float32.
    highest = str(jax.default_matmul_precision.value) in ("highest", "float32")
    return K.Layout(
        widths=model.sizes,
        activations=acts,
        compute_dtype=model.compute_dtype or param,
        out_dtype=param,
        tile_rows=tile,
        tiles=tiles,
        interpret=interpret,
        precision="HIGHEST" if highest else "DEFAULT",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        accumulate=_accumulate(config.accumulate, model.sizes),
    )


# The most float32 weight-gradient accumulators "auto" keeps in registers (64 KiB).
_REGISTER_ACCUMULATORS = 16384


def _accumulate(choice: str, sizes: tuple[int, ...]) -> str:
    if choice != "auto":
        return choice
    p = [K.padded_width(n) for n in sizes]
    floats = sum(a * b + b for a, b in itertools.pairwise(p))
    return "registers" if floats <= _REGISTER_ACCUMULATORS else "memory"


def _pad(a: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    a = a if dtype is None else a.astype(dtype)
    return jnp.pad(a, [(0, s - n) for s, n in zip(shape, a.shape, strict=True)])


def _padded_rows(lay: K.Layout, n: int) -> int:
    return -(-n // lay.block_rows) * lay.block_rows


def _weights(lay: K.Layout, params: Params) -> list[jax.Array]:
    p, cd = lay.padded, jnp.dtype(lay.compute_dtype)
    ws = [_pad(d.w, (p[l], p[l + 1]), cd) for l, d in enumerate(params)]
    bs = [_pad(d.b[None, :], (1, p[l + 1]), jnp.float32) for l, d in enumerate(params)]
    return ws + bs


def _forward(lay: K.Layout, params: Params, x: jax.Array) -> jax.Array:
    n, rows = x.shape[0], _padded_rows(lay, x.shape[0])
    xp = _pad(x, (rows, lay.padded[0]), lay.compute_dtype)
    out = K.forward_call(lay, rows)(xp, *_weights(lay, params))
    return out[:n, : lay.widths[-1]]


def _grads(lay: K.Layout, params: Params, parts) -> Params:
    L, w = lay.num_layers, lay.widths
    dws, dbs = parts[:L], parts[L : 2 * L]
    return tuple(
        Dense(jnp.sum(dw, 0)[: w[l], : w[l + 1]].astype(d.w.dtype),
              jnp.sum(db, (0, 1))[: w[l + 1]].astype(d.b.dtype))
        for l, (d, dw, db) in enumerate(zip(params, dws, dbs, strict=True))
    )  # fmt: skip


def _backward(lay: K.Layout, params: Params, x, g, need_dx: bool):
    """The cotangent backward kernel: ``(grads, dx or None)`` from ``g`` = dL/d(output)."""
    n, rows = x.shape[0], _padded_rows(lay, x.shape[0])
    xp = _pad(x, (rows, lay.padded[0]), lay.compute_dtype)
    gp = _pad(g, (rows, lay.padded[-1]), jnp.float32)
    parts = K.backward_call(lay, rows, "cotangent", need_dx)(xp, gp, *_weights(lay, params))
    dx = parts[-1][:n, : lay.widths[0]].astype(x.dtype) if need_dx else None
    return _grads(lay, params, parts), dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _apply(lay: K.Layout, params: Params, x: jax.Array) -> jax.Array:
    return _forward(lay, params, x)


def _apply_fwd(lay, params, x):
    return _forward(lay, params, x), (params, x)


def _apply_bwd(lay, res, g):
    params, x = res
    grads, dx = _backward(lay, params, x, g, need_dx=True)
    return grads, dx


_apply.defvjp(_apply_fwd, _apply_bwd)


def apply(
    model: MLP, params: Params, x: ArrayLike, *, config: FusedConfig | None = None
) -> jax.Array:
    """``model.apply(params, x)`` in one fused kernel; ``jax.grad`` (reverse mode) of anything
    built on it runs the fused backward kernel, with respect to ``params`` and ``x``.

    Args:
        model: a plain network that :func:`supports` accepts.
        params: its parameter tuple.
        x: ``(..., sizes[0])``, any leading axes (rows of any number: padded inside).
        config: block sizes and interpretation (:class:`FusedConfig`).

    Returns:
        ``(..., sizes[-1])`` in the parameters' dtype, output activation included.
    """
    config = FusedConfig() if config is None else config
    check(model, None, config)
    check_params(model, params)
    xb, lead = as_rows(model, x, params)
    lay = _layout(model, xb.shape[0], config, logits=False)
    return unrows(_apply(lay, tuple(params), xb), lead)


def _targets(loss: Loss, y: jax.Array, lay: K.Layout, rows: int) -> jax.Array:
    """Targets padded for the kernel, in the output's dtype (they are read once per row: half
    precision halves the traffic; the kernel computes the head in float32)."""
    dtype = jnp.dtype(lay.out_dtype)
    if y.ndim == 1:  # class labels: one-hot over the real columns (0 and 1 are exact)
        y = jax.nn.one_hot(y, lay.widths[-1], dtype=dtype)
    return _pad(y, (rows, lay.padded[-1]), dtype)


def value_and_grad(
    model: MLP,
    loss: str | Loss,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    config: FusedConfig | None = None,
) -> ValueAndGradFn:
    """:func:`jaxmlp.value_and_grad` on the fused kernels: the same signature and results.

    The built-in squared errors (``sse``, ``mse``, ``half_mse``) and cross entropies are fused
    into the backward kernel (one launch: forward, loss, deltas, weight gradients); any other
    loss runs between the forward and the backward kernel (two launches). The penalties are
    added outside the kernels. ``key`` is accepted and unused (a plain network has no dropout).

    Raises:
        ValueError: when the kernels cannot run the model (see :func:`check`).
    """
    loss = check_model_loss(model, loss)
    config = FusedConfig() if config is None else config
    check(model, loss, config)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    head = loss.name if is_builtin(loss) and loss.name in K.HEADS else None

    def f(
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        if key is not None:
            check_key(key)
        check_params(model, params)
        xb, yb, sw = _prepare(model, loss, params, x, y, sample_weight)
        n = xb.shape[0]
        lay = _layout(model, n, config, logits=loss.logits)
        if head is None:
            out = _forward(lay, params, xb)
            value = loss.value(out, yb, sw)
            grads, _ = _backward(lay, params, xb, loss.grad(out, yb, sw), need_dx=False)
        else:
            rows = _padded_rows(lay, n)
            xp = _pad(xb, (rows, lay.padded[0]), lay.compute_dtype)
            c = _pad(loss.weights(n, jnp.float32, sw)[:, None], (rows, 1))
            call = K.backward_call(lay, rows, head, False)
            parts = call(xp, _targets(loss, yb, lay, rows), c, *_weights(lay, params))
            value = jnp.sum(parts[0][:, 0, 0]).astype(xb.dtype)
            grads = _grads(lay, params, parts[1:])
        if l2 or l1:
            value = value + penalty_value(model, params, l2, l1)
            grads = penalty_grads(model, params, grads, l2, l1)
        return value, grads

    return f


def _prepare(model: MLP, loss: Loss, params: Params, x, y, sample_weight):
    """``x`` as rows, ``y`` as the loss reads it, ``sample_weight`` checked (as the XLA path)."""
    xb, single = as_batch(model, x, params)
    if single:
        y = jnp.asarray(y)[None]
        sample_weight = None if sample_weight is None else jnp.asarray(sample_weight)[None]
    yb = check_targets(model, loss, y, xb.shape[0], xb.dtype)
    if sample_weight is None:
        return xb, yb, None
    sw = as_array(sample_weight, "sample_weight")
    if sw.shape != (xb.shape[0],):
        raise ValueError(f"sample_weight: expected shape ({xb.shape[0]},), got {tuple(sw.shape)}")
    return xb, yb, sw
