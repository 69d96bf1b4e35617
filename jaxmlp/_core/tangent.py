"""Forward mode by hand: the tangent pass, the backward pass read from the input to the output.

The tangent (forward-mode, Jacobian-vector product) pass pushes a small change of the inputs,
``dparams`` and ``dx``, through the network from the first layer to the last, with the same
partial derivatives the backward pass multiplies in the other order:

    da[0] = dx
    dz[l] = da[l-1] @ w[l] + a[l-1] @ dw[l] + db[l]
    da[l] = f'(z[l]) * dz[l]                   (softmax: a * (dz - sum(a * dz)))
    d out = da[L]

Here ``dz``, ``da``, ``dw``, ``db`` are differentials (tangents: how far each quantity moves
along the direction ``(dparams, dx)``), not the backward pass's ``dL/d(that)``. A ``None``
tangent is a zero one (a block that is not differentiated): its term is skipped.

``jaxmlp/_core/manual_apply.py`` makes this pass the forward mode of ``apply_manual``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from jaxmlp._core.backprop import Trace
from jaxmlp._core.mlp import MLP, Params
from jaxmlp._core.stack import run_tangent

# A tangent of the parameters with ``None`` for zero blocks: per entry its pytree (a Dense whose
# w or b may be None, a Norm whose scale or offset may be None, ...) or None.
ParamTangents = Sequence[Any] | None


def tangent(
    model: MLP, params: Params, trace: Trace, dparams: ParamTangents, dx: jax.Array | None
) -> jax.Array:
    """The hand-written forward-mode pass: ``d out``, the output's change along ``(dparams, dx)``.

    Args:
        model: the network description.
        params: its parameters, the point the trace was computed at.
        trace: the forward :class:`~jaxmlp.Trace` at ``params`` and ``x``.
        dparams: the parameters' tangent (their pytree; ``None`` anywhere is a zero block).
        dx: ``(batch, sizes[0])``, the input's tangent, or ``None`` for zero.

    Returns:
        ``(batch, sizes[-1])``, the Jacobian of the output times ``(dparams, dx)``.

    Every layer's ``tangent`` (:mod:`jaxmlp._core.layers`) carries the partial derivative each
    line multiplies by (for the affine layer and the activation, the lecture's eqs. 18-64 read
    from the input to the output); :mod:`jaxmlp._core.stack` walks them first to last.
    """
    return run_tangent(model, params, trace.values, trace.saved, dparams, dx)
