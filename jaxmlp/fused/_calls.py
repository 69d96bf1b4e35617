"""The kernels as ``pallas_call``s: grids, block specs and Triton's launch parameters (cached on the
static :class:`~jaxmlp.fused._kernels.Layout` and the padded row count)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxmlp.fused._kernels import Layout, backward_kernel, forward_kernel


def _compiler_params(lay: Layout):
    if lay.interpret:
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=lay.num_warps, num_stages=lay.num_stages)


def _weight_specs(lay: Layout) -> list[pl.BlockSpec]:
    p = lay.padded
    ws = [pl.BlockSpec((p[l], p[l + 1]), lambda i: (0, 0)) for l in range(lay.num_layers)]
    bs = [pl.BlockSpec((1, p[l + 1]), lambda i: (0, 0)) for l in range(lay.num_layers)]
    return ws + bs


def _row_spec(lay: Layout, width: int) -> pl.BlockSpec:
    return pl.BlockSpec((lay.block_rows, width), lambda i: (i, 0))


@functools.lru_cache(maxsize=256)
def forward_call(lay: Layout, rows: int) -> Callable:
    """The forward kernel for ``rows`` padded rows: ``f(x, *ws, *bs) -> out`` on padded arrays
    (``x`` ``(rows, padded[0])``, ``ws[l]`` ``(padded[l], padded[l+1])``, ``bs[l]``
    ``(1, padded[l+1])``), ``out`` ``(rows, padded[-1])``."""
    p = lay.padded
    return pl.pallas_call(
        functools.partial(forward_kernel, lay),
        out_shape=jax.ShapeDtypeStruct((rows, p[-1]), jnp.dtype(lay.out_dtype)),
        grid=(rows // lay.block_rows,),
        in_specs=[_row_spec(lay, p[0]), *_weight_specs(lay)],
        out_specs=_row_spec(lay, p[-1]),
        interpret=lay.interpret,
        compiler_params=_compiler_params(lay),
        name="jaxmlp_fused_forward",
    )


@functools.lru_cache(maxsize=256)
def backward_call(lay: Layout, rows: int, head: str, need_dx: bool) -> Callable:
    """The backward kernel for ``rows`` padded rows.

    ``head == "cotangent"``: ``f(x, g, *ws, *bs) -> (*dw_parts, *db_parts[, dx])`` with ``g``
    = dL/d(output) ``(rows, padded[-1])``. A fused head: ``f(x, y, c, *ws, *bs) -> (loss_parts,
    *dw_parts, *db_parts[, dx])`` with targets ``y`` ``(rows, padded[-1])`` (the output's
    dtype) and row coefficients ``c`` ``(rows, 1)`` float32. Partials have a leading axis of
    one entry per program.
    """
    p, L = lay.padded, lay.num_layers
    g = rows // lay.block_rows
    f32 = jnp.float32
    in_specs = [_row_spec(lay, p[0]), _row_spec(lay, p[-1])]
    out_shape: list[jax.ShapeDtypeStruct] = []
    out_specs: list[pl.BlockSpec] = []
    if head != "cotangent":
        in_specs.append(_row_spec(lay, 1))
        out_shape.append(jax.ShapeDtypeStruct((g, 1, 16), f32))
        out_specs.append(pl.BlockSpec((None, 1, 16), lambda i: (i, 0, 0)))
    in_specs += _weight_specs(lay)
    out_shape += [jax.ShapeDtypeStruct((g, p[l], p[l + 1]), f32) for l in range(L)]
    out_specs += [pl.BlockSpec((None, p[l], p[l + 1]), lambda i: (i, 0, 0)) for l in range(L)]
    out_shape += [jax.ShapeDtypeStruct((g, 1, p[l + 1]), f32) for l in range(L)]
    out_specs += [pl.BlockSpec((None, 1, p[l + 1]), lambda i: (i, 0, 0)) for l in range(L)]
    if need_dx:
        out_shape.append(jax.ShapeDtypeStruct((rows, p[0]), jnp.dtype(lay.out_dtype)))
        out_specs.append(_row_spec(lay, p[0]))
    return pl.pallas_call(
        functools.partial(backward_kernel, lay, head, need_dx),
        out_shape=tuple(out_shape),
        grid=(g,),
        in_specs=in_specs,
        out_specs=tuple(out_specs),
        interpret=lay.interpret,
        compiler_params=_compiler_params(lay),
        name="jaxmlp_fused_backward",
    )
