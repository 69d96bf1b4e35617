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

import jax
import jax.numpy as jnp
from jax import lax

from jaxmlp._core.activations import get_activation
from jaxmlp._core.backprop import Trace
from jaxmlp._core.mlp import MLP, Dense, Params

# A tangent of the parameters with ``None`` for zero blocks: per layer a Dense (its w or b may be
# None) or None.
ParamTangents = Sequence[Dense | None] | None


def _matmul(model: MLP, a: jax.Array, w: jax.Array) -> jax.Array:
    """``a @ w`` honouring ``model.compute_dtype``, as the forward pass's ``dense`` does."""
    if model.compute_dtype is None:
        return a @ w
    cd = jnp.dtype(model.compute_dtype)
    dims = (((1,), (0,)), ((), ()))
    return lax.dot_general(a.astype(cd), w.astype(cd), dims, preferred_element_type=w.dtype)


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

    Each line carries the partial derivative it multiplies by (the lecture's eqs. 18-64, read
    from the input to the output).
    """
    L = model.num_layers
    da = dx  # da[0] = dx: the input moves by dx
    for l in range(L):
        w, a_prev, z, a = params[l].w, trace.a[l], trace.z[l], trace.a[l + 1]
        dp = None if dparams is None else dparams[l]
        terms = []
        if da is not None:
            # da[l-1] w[l]: dz[l]/da[l-1] = w[l]                   (eqs. 32, 48)
            terms.append(_matmul(model, da, w))
        if dp is not None and dp.w is not None:
            # a[l-1] dw[l]: dz[l]/dw[l] = a[l-1]                   (eqs. 23, 44, 48, 57)
            terms.append(_matmul(model, a_prev, dp.w))
        if dp is not None and dp.b is not None:
            # db[l]: dz[l]/db[l] = 1, the same for every row        (eqs. 24, 45, 49, 58)
            terms.append(jnp.broadcast_to(dp.b[None, :], z.shape))
        if not terms:
            da = None  # nothing before layer l moves
            continue
        # dz[l] = da[l-1] w[l] + a[l-1] dw[l] + db[l]            (eqs. 20, 39)
        dz = sum(terms[1:], terms[0])
        act = get_activation(model.activations[l], output=l == L - 1)
        if act.deriv is None:
            # softmax: da[L] = (diag(a) - a a^T) dz = a * (dz - sum(a * dz))      (eq. 65)
            da = a * (dz - jnp.sum(a * dz, axis=-1, keepdims=True))
        else:
            # da[l] = f'(z[l]) dz[l]: da[l]/dz[l] = f'(z[l])        (eqs. 33-34, 52, 63-64)
            da = act.deriv(z, a) * dz
    return jnp.zeros_like(trace.a[-1]) if da is None else da
