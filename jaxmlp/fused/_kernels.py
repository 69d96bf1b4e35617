"""The Pallas kernels: the whole network's forward pass, and its backward pass, in one launch each.

Layout. The batch is cut into blocks of ``tile_rows * tiles`` rows, one per program of a 1-D
grid; a program walks its block ``tile_rows`` rows at a time. For each tile the activations go
from the input to the output (and, in the backward kernel, the deltas from the output back to
the input) without leaving the chip: only ``x`` (and the targets) are read from memory and only
the output (or the per-program partial gradients) are written. The backward kernel recomputes
the tile's forward pass rather than reading saved activations: for a narrow network the
arithmetic is cheaper than the memory traffic it replaces.

Weight gradients are split-K reductions: each program accumulates ``dw = sum_tiles a^T dz`` over
its own rows in float32 and writes one ``(fan_in, fan_out)`` partial; the partials (one per
program, a few hundred on a GPU) are summed afterwards by XLA.

Widths are padded to 16, 32, 64 or 128 (the GPU's matrix-instruction multiples) with zero
weights and zero biases: a padded unit's activation ``f(0)`` only ever meets zero weights, so
the real units see exactly the unpadded network. Padded output columns are masked out of the
loss heads, and padded rows carry a loss coefficient of 0.

Notation as in :mod:`jaxmlp._core.backprop`: ``z[l] = a[l-1] @ w[l] + b[l]``,
``a[l] = f_l(z[l])``, ``dz[l] = dL/dz[l]``; ``w`` is ``(fan_in, fan_out)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# The widths the kernels pad to: multiples of the tensor cores' 16 x 16 fragments.
WIDTHS = (16, 32, 64, 128)
HIDDEN_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "sin")
OUTPUT_ACTIVATIONS = ("identity", "tanh", "sigmoid")
# Loss heads computed inside the backward kernel; "cotangent" reads dL/d(output) from memory.
HEADS = ("sse", "mse", "half_mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")


def padded_width(n: int) -> int:
    """The smallest of :data:`WIDTHS` that holds ``n`` units (``n <= 128``)."""
    return next(p for p in WIDTHS if p >= n)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything static a kernel is built from (hashable: kernels are cached on it).

    Attributes:
        widths: the real widths, input first (``MLP.sizes``).
        activations: one name per layer, the output's last (``"identity"`` under a
            logits head).
        compute_dtype: the matmul inputs' dtype; products accumulate in float32.
        out_dtype: the output's (and the gradients') dtype.
        tile_rows: rows per tile (a power of two, at least 16).
        tiles: tiles per program (a power of two).
        interpret: run through Pallas's interpreter (CPU) instead of compiling for a GPU.
        precision: ``lax.Precision`` name of the float32 matmuls (``"HIGHEST"``: IEEE float32,
            else TF32 on a GPU); ignored for half-precision inputs.
        num_warps, num_stages: Triton's launch parameters.
        accumulate: where a program sums its tiles' weight gradients: ``"registers"`` (loop
            carries, float32) or ``"memory"`` (added into its output block tile by tile: no
            register pressure from the accumulators, a read-modify-write that stays in cache).
    """

    widths: tuple[int, ...]
    activations: tuple[str, ...]
    compute_dtype: str
    out_dtype: str
    tile_rows: int
    tiles: int
    interpret: bool
    precision: str = "DEFAULT"
    num_warps: int = 4
    num_stages: int = 1
    accumulate: str = "registers"

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(padded_width(n) for n in self.widths)

    @property
    def block_rows(self) -> int:
        return self.tile_rows * self.tiles

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1


def _act(name: str, z: jax.Array) -> jax.Array:
    """``a = f(z)`` in float32."""
    if name == "relu":
        return jnp.maximum(z, 0.0)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(-z))
    if name == "sin":
        return jnp.sin(z)
    return z


def _deriv(name: str, z: jax.Array, a: jax.Array) -> jax.Array | None:
    """``f'(z)``, from the output where the activation allows (as jaxmlp's own derivatives);
    ``None`` for the identity (a factor of 1)."""
    if name == "relu":
        return (a > 0).astype(jnp.float32)  # relu'(0) = 0, as jax.grad of jax.nn.relu
    if name == "tanh":
        return 1.0 - a * a
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "sin":
        return jnp.cos(z)
    return None


def _dot(lay: Layout, lhs, rhs, contract: tuple[int, int]) -> jax.Array:
    """``lhs x rhs`` contracting the named axes: inputs in the compute dtype, float32 out."""
    cd = jnp.dtype(lay.compute_dtype)
    dims = (((contract[0],), (contract[1],)), ((), ()))
    prec = lax.Precision[lay.precision] if cd == jnp.float32 else None
    return lax.dot_general(
        lhs.astype(cd), rhs.astype(cd), dims, precision=prec, preferred_element_type=jnp.float32
    )


def _tile_forward(lay: Layout, a0, w_refs, b_refs):
    """One tile's forward pass: ``(zs, as)``, each layer's pre-activation and activation in
    float32 (``as[0]`` is the input tile)."""
    zs, acts = [], [a0]
    for l in range(lay.num_layers):
        # z[l] = a[l-1] w[l] + b[l]                                 (eqs. 20, 39)
        z = _dot(lay, acts[-1], w_refs[l][...], (1, 0)) + b_refs[l][...].astype(jnp.float32)
        zs.append(z)
        # a[l] = f_l(z[l])                                          (eqs. 18, 40)
        acts.append(_act(lay.activations[l], z))
    return zs, acts


def _rows(lay: Layout, t) -> pl.Slice | slice:
    start = t * lay.tile_rows
    if not isinstance(t, int):  # a loop index: tell the compiler the start is aligned
        start = pl.multiple_of(start, lay.tile_rows)
    return pl.ds(start, lay.tile_rows)


def _over_tiles(lay: Layout, body: Callable, init):
    """``body(t, carry)`` for every tile of the program's block (a loop only when needed)."""
    if lay.tiles == 1:
        return body(0, init)
    return lax.fori_loop(0, lay.tiles, body, init)


def forward_kernel(lay: Layout, x_ref, *refs):
    L = lay.num_layers
    w_refs, b_refs, (out_ref,) = refs[:L], refs[L : 2 * L], refs[2 * L :]

    def body(t, carry):
        rows = _rows(lay, t)
        _, acts = _tile_forward(lay, x_ref[rows, :], w_refs, b_refs)
        out_ref[rows, :] = acts[-1].astype(out_ref.dtype)
        return carry

    _over_tiles(lay, body, 0)


def _column_mask(lay: Layout) -> jax.Array:
    """``(1, padded out)``: True on the real output columns."""
    cols = lax.broadcasted_iota(jnp.int32, (1, lay.padded[-1]), 1)
    return cols < lay.widths[-1]


def _head(lay: Layout, head: str, z, a, y, c):
    """The loss head on one tile: ``(sum_n c_n l_n, dz[L])`` from the output layer's ``z`` and
    ``a``, the targets ``y`` and each row's coefficient ``c`` ``(tile, 1)`` (1/n, a sample
    weight, 0 on padded rows)."""
    mask = _column_mask(lay)
    k = float(lay.widths[-1])
    if head == "softmax_cross_entropy":
        # log softmax over the real columns: padded logits are -inf, so exp() gives them 0
        zm = jnp.where(mask, z, -jnp.inf)
        shifted = zm - jnp.max(zm, axis=1, keepdims=True)
        e = jnp.exp(shifted)
        s = jnp.sum(e, axis=1, keepdims=True)
        logp = shifted - jnp.log(s)
        # l_n = -sum_k y_k log softmax(z)_k
        loss_rows = -jnp.sum(jnp.where(mask, y * logp, 0.0), axis=1, keepdims=True)
        # dl_n/dz = softmax(z) sum_k y_k - y
        dz = (e / s) * jnp.sum(y, axis=1, keepdims=True) - y
    elif head == "sigmoid_binary_cross_entropy":
        # softplus(z) - y z, written stably: max(z, 0) + log(1 + exp(-|z|))
        softplus = jnp.maximum(z, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(z)))
        loss_rows = jnp.sum(jnp.where(mask, softplus - y * z, 0.0), axis=1, keepdims=True) / k
        # dl_n/dz = (sigmoid(z) - y) / K
        dz = jnp.where(mask, 1.0 / (1.0 + jnp.exp(-z)) - y, 0.0) / k
    else:
        # squared errors on the output a[L] = f_L(z[L]): sse sum_k r^2, mse its mean, half_mse half
        scale = {"sse": 1.0, "mse": 1.0 / k, "half_mse": 0.5 / k}[head]
        r = jnp.where(mask, a - y, 0.0)
        loss_rows = scale * jnp.sum(r * r, axis=1, keepdims=True)
        # dl_n/da[L] = 2 scale r, then dl_n/dz[L] = dl_n/da[L] f_L'(z[L])
        dz = 2.0 * scale * r
        d = _deriv(lay.activations[-1], z, a)
        if d is not None:
            dz = dz * d
    return jnp.sum(c * loss_rows), c * dz


def backward_kernel(lay: Layout, head: str, need_dx: bool, x_ref, t_ref, *refs):
    """One program's rows: the forward pass, the head (or the cotangent ``t_ref``), the deltas
    back through every layer, and the program's partial weight and bias gradients.

    ``t_ref`` holds the targets (fused heads, with the row coefficients ``c`` as a last input)
    or dL/d(output) (``head == "cotangent"``)."""
    L = lay.num_layers
    fused = head != "cotangent"
    c_ref = refs[0] if fused else None
    refs = refs[1:] if fused else refs
    w_refs, b_refs, outs = refs[:L], refs[L : 2 * L], refs[2 * L :]
    loss_ref = outs[0] if fused else None
    outs = outs[1:] if fused else outs
    dw_refs, db_refs = outs[:L], outs[L : 2 * L]
    dx_ref = outs[2 * L] if need_dx else None

    def body(t, carry):
        loss_acc, dws, dbs = carry
        rows = _rows(lay, t)
        zs, acts = _tile_forward(lay, x_ref[rows, :], w_refs, b_refs)
        if fused:
            assert c_ref is not None
            y = t_ref[rows, :].astype(jnp.float32)
            value, dz = _head(lay, head, zs[-1], acts[-1], y, c_ref[rows, :])
            loss_acc = loss_acc + value
        else:
            # dL/dz[L] = dL/da[L] f_L'(z[L])
            dz = t_ref[rows, :].astype(jnp.float32)
            d = _deriv(lay.activations[-1], zs[-1], acts[-1])
            if d is not None:
                dz = dz * d
        dws, dbs = list(dws), list(dbs)
        for l in reversed(range(L)):
            # dL/dw[l] = a[l-1]^T dz[l]                             (eqs. 23, 44, 48, 57)
            dw = _dot(lay, acts[l], dz, (0, 0))
            # dL/db[l] = sum over rows of dz[l]                      (eqs. 24, 45, 49, 58)
            db = jnp.sum(dz, axis=0, keepdims=True)
            if in_memory:
                dw_refs[l][...] += dw
                db_refs[l][...] += db
            else:
                dws[l], dbs[l] = dws[l] + dw, dbs[l] + db
            if l == 0 and not need_dx:
                break
            # dL/da[l-1] = dz[l] w[l]^T                              (eqs. 32, 48)
            da = _dot(lay, dz, w_refs[l][...], (1, 1))
            if l == 0:
                assert dx_ref is not None
                dx_ref[rows, :] = da.astype(dx_ref.dtype)
                break
            # dz[l-1] = dL/da[l-1] f'(z[l-1])                        (eqs. 47, 56)
            d = _deriv(lay.activations[l - 1], zs[l - 1], acts[l])
            dz = da if d is None else da * d
        return loss_acc, tuple(dws), tuple(dbs)

    p = lay.padded
    in_memory = lay.accumulate == "memory"
    if in_memory:
        for l in range(L):
            dw_refs[l][...] = jnp.zeros((p[l], p[l + 1]), jnp.float32)
            db_refs[l][...] = jnp.zeros((1, p[l + 1]), jnp.float32)
    zeros = () if in_memory else tuple(
        (jnp.zeros((p[l], p[l + 1]), jnp.float32), jnp.zeros((1, p[l + 1]), jnp.float32))
        for l in range(L)
    )  # fmt: skip
    init = (jnp.zeros((), jnp.float32), tuple(z[0] for z in zeros), tuple(z[1] for z in zeros))
    loss_acc, dws, dbs = _over_tiles(lay, body, init)
    if loss_ref is not None:
        loss_ref[...] = jnp.broadcast_to(loss_acc, loss_ref.shape)
    for l in range(len(dws)):
        dw_refs[l][...] = dws[l]
        db_refs[l][...] = dbs[l]
