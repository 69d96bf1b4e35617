"""The hand-written backward pass: the chain rule layer by layer (lecture eqs. 18-64).

Notation (the lecture's backpropagation section, eqs. 18-64):
    a[0] = x                          the input, (batch, sizes[0])
    z[l] = a[l-1] @ w[l] + b[l]       pre-activation of layer l (eqs. 20, 39)
    a[l] = f_l(z[l])                  activation of layer l (eqs. 18, 40)
    dz[l] = dL/dz[l]                  the layer's "delta"
The lecture writes z = W a + b with W[to, from]; our batch-major w[from, to] is W transposed,
so its ``W^T delta`` becomes ``delta @ w.T`` here and ``delta a^T`` becomes ``a.T @ delta``.

Contractions are written with ``lax.dot_general`` naming the contracted axes, so XLA never
materialises a transposed copy of ``a`` or ``w``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxmlp._checks import check_choice, check_nonnegative
from jaxmlp._core.activations import get_activation
from jaxmlp._core.losses import Loss, get_loss
from jaxmlp._core.mlp import (
    MLP,
    Dense,
    Params,
    as_array,
    as_batch,
    as_rows,
    check_params,
    dense,
    unrows,
)

METHODS = ("manual", "autodiff")


class Trace(NamedTuple):
    """What the forward pass keeps for the backward pass.

    Attributes:
        z: pre-activations ``(z[1], ..., z[L])``, each ``(batch, sizes[l])``.
        a: activations ``(a[0] = x, a[1], ..., a[L])``; ``a[L]`` is the network output.
    """

    z: tuple[jax.Array, ...]
    a: tuple[jax.Array, ...]


class LossFn(Protocol):
    """What :func:`loss_fn` builds: ``f(params, x, y, sample_weight=None) -> loss_value``,
    a scalar."""

    def __call__(
        self, params: Params, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> jax.Array: ...


class ValueAndGradFn(Protocol):
    """What :func:`value_and_grad` builds: ``f(params, x, y, sample_weight=None) ->
    (loss_value, grads)``, ``grads`` shaped like ``params``."""

    def __call__(
        self, params: Params, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> tuple[jax.Array, Params]: ...


class PerExampleGradsFn(Protocol):
    """What :func:`per_example_grads` builds: ``f(params, x, y) -> grads``, every leaf with a
    leading ``(batch,)`` axis."""

    def __call__(self, params: Params, x: ArrayLike, y: ArrayLike) -> Params: ...


class PerExampleGradNormsFn(Protocol):
    """What :func:`per_example_grad_norms` builds: ``f(params, x, y) -> (batch,)``."""

    def __call__(self, params: Params, x: ArrayLike, y: ArrayLike) -> jax.Array: ...


class Backward(NamedTuple):
    """The manual backward pass's results.

    Attributes:
        grads: dL/dparams, the same pytree as the parameters.
        deltas: ``(dz[1], ..., dz[L])``, dL/dz for each layer, each ``(batch, sizes[l])``.
        dx: dL/dx ``(batch, sizes[0])``, or ``None`` when not asked for.
    """

    grads: Params
    deltas: tuple[jax.Array, ...]
    dx: jax.Array | None


def _mm(model: MLP, lhs, rhs, contract: tuple[int, int], out_dtype) -> jax.Array:
    """``lhs`` x ``rhs`` contracting ``lhs`` axis ``contract[0]`` with ``rhs`` axis ``contract[1]``."""
    if model.compute_dtype is not None:
        cd = jnp.dtype(model.compute_dtype)
        lhs, rhs = lhs.astype(cd), rhs.astype(cd)
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(lhs, rhs, dims, preferred_element_type=out_dtype)


def forward(model: MLP, params: Params, x: jax.Array) -> Trace:
    """The forward pass (eq. 18, 39-42), keeping every ``z[l]`` and ``a[l]``.

    Args:
        x: ``(batch, sizes[0])`` in the parameters' dtype (use ``forward_trace`` for raw input).
    """
    zs, acts = [], [x]
    for l, (layer, name) in enumerate(zip(params, model.activations, strict=True)):
        z = dense(model, layer, acts[-1])  # z[l] = a[l-1] w[l] + b[l]          (eq. 39)
        act = get_activation(name, output=l == model.num_layers - 1)
        zs.append(z)
        acts.append(act.fn(z))  # a[l] = f(z[l])                        (eq. 40)
    return Trace(tuple(zs), tuple(acts))


def forward_trace(model: MLP, params: Params, x: jax.typing.ArrayLike) -> Trace:
    """Checks the inputs and runs :func:`forward` on ``x`` of shape ``(batch, sizes[0])``."""
    check_params(model, params)
    xb, _ = as_batch(model, x, params)
    return forward(model, params, xb)


def backward(
    model: MLP, params: Params, trace: Trace, dz_out: jax.Array, *, need_dx: bool = False
) -> Backward:
    """The manual backward pass from the output delta ``dz_out = dL/dz[L]``.

    Args:
        model: the network description.
        params: its parameters, the point the trace was computed at.
        trace: the forward :class:`Trace`.
        dz_out: ``(batch, sizes[-1])``, dL/dz of the output layer.
        need_dx: also return dL/dx ``(batch, sizes[0])`` in ``Backward.dx``.

    Each line carries the chain-rule factor it computes (eqs. 44-64).
    """
    _check_backward_args(model, params, trace, dz_out)
    L = model.num_layers
    # Filled from the last layer back to the first, then reversed.
    grads: list[Dense] = []
    deltas: list[jax.Array] = []
    dz = dz_out  # dL/dz[L] = dL/da[L] * da[L]/dz[L]        (eqs. 23, 44)
    dx = None
    for l in reversed(range(L)):
        w = params[l].w
        a_prev = trace.a[l]
        deltas.append(dz)
        # dL/dw[l] = a[l-1]^T dz[l]: dz[l]/dw[l] = a[l-1]       (eqs. 23, 44, 48, 57)
        dw = _mm(model, a_prev, dz, (0, 0), w.dtype)
        # dL/db[l] = sum over the batch of dz[l]: dz[l]/db[l] = 1 (eqs. 24, 45, 49, 58)
        db = jnp.sum(dz, axis=0)
        grads.append(Dense(dw, db))
        if l == 0 and not need_dx:
            break
        # dL/da[l-1] = dz[l] w[l]^T: dz[l]/da[l-1] = w[l]       (eqs. 32, 48)
        da = _mm(model, dz, w, (1, 1), w.dtype)
        if l == 0:
            dx = da
            break
        act = get_activation(model.activations[l - 1])
        # dL/dz[l-1] = dL/da[l-1] * f'(z[l-1])                 (eqs. 33-34, 52, 63-64)
        dz = act.vjp(trace.z[l - 1], trace.a[l], da)
    return Backward(tuple(reversed(grads)), tuple(reversed(deltas)), dx)


def _check_backward_args(model: MLP, params: Params, trace: Any, dz_out: Any) -> None:
    check_params(model, params)
    L = model.num_layers
    if not (isinstance(trace, Trace) and len(trace.z) == L and len(trace.a) == L + 1):
        raise TypeError(f"trace: expected a Trace of {L} layers (from forward_trace)")
    expected = (trace.a[0].shape[0], model.sizes[-1])
    if tuple(getattr(dz_out, "shape", ())) != expected:
        raise ValueError(
            f"dz_out: expected shape {expected}, got {getattr(dz_out, 'shape', dz_out)}"
        )


def check_loss_pairing(model: MLP, loss: Loss) -> None:
    """Cross entropies read logits: their output activation must be identity or their own."""
    if loss.logits and model.output_activation not in ("identity", loss.fuses_with):
        raise ValueError(
            f"loss: {loss.name!r} works on logits and pairs with output_activation 'identity' "
            f"or {loss.fuses_with!r}, got {model.output_activation!r}"
        )


def check_targets(model: MLP, loss: Loss, y: Any, batch: int, dtype, argname: str = "y"):
    """Checks ``y`` against the loss and returns it in the form the loss reads."""
    y = as_array(y, argname)
    k = model.sizes[-1]
    if jnp.issubdtype(y.dtype, jnp.complexfloating) or (
        y.dtype == jnp.bool_ and loss.targets == "classes"
    ):
        raise TypeError(f"{argname}: dtype {y.dtype} is not supported")
    if loss.targets == "classes":
        if y.ndim == 1:
            if not jnp.issubdtype(y.dtype, jnp.integer):
                raise TypeError(f"{argname}: class labels (batch,) must be integers, got {y.dtype}")
            if y.shape[0] != batch:
                raise ValueError(f"{argname}: {y.shape[0]} labels for {batch} rows of x")
            return y
        expected = f"integer labels ({batch},) or probabilities ({batch}, {k})"
    else:
        if y.ndim == 1 and k == 1 and y.shape[0] == batch:
            y = y[:, None]
        expected = f"({batch}, {k})" + (f" or ({batch},)" if k == 1 else "")
    if y.ndim != 2 or y.shape != (batch, k):
        raise ValueError(
            f"{argname}: expected shape {expected} for loss {loss.name!r}, got {tuple(y.shape)}"
        )
    if not (
        jnp.issubdtype(y.dtype, jnp.floating)
        or jnp.issubdtype(y.dtype, jnp.integer)
        or y.dtype == jnp.bool_
    ):
        raise TypeError(f"{argname}: dtype {y.dtype}, expected a real array")
    return y.astype(dtype)


def _check_weight(sample_weight: Any, batch: int) -> jax.Array | None:
    if sample_weight is None:
        return None
    sw = as_array(sample_weight, "sample_weight")
    if sw.shape != (batch,):
        raise ValueError(f"sample_weight: expected shape ({batch},), got {tuple(sw.shape)}")
    if not (
        jnp.issubdtype(sw.dtype, jnp.floating)
        or jnp.issubdtype(sw.dtype, jnp.integer)
        or sw.dtype == jnp.bool_
    ):
        raise TypeError(f"sample_weight: dtype {sw.dtype}, expected a real array")
    return sw


def loss_head(
    model: MLP, loss: Loss, trace: Trace, y, sample_weight
) -> tuple[jax.Array, jax.Array]:
    """The loss value and the output delta ``dL/dz[L]`` (eqs. 22-24, 43-45)."""
    z_out, out = trace.z[-1], trace.a[-1]
    if loss.logits:
        # Cross entropy on logits: fused, stable gradient, e.g. (softmax(z) - y) / n
        return loss.value(z_out, y, sample_weight), loss.grad(z_out, y, sample_weight)
    out_act = get_activation(model.output_activation, output=True)
    # dL/da[L], then dL/dz[L] = dL/da[L] * da[L]/dz[L] (softmax: its Jacobian-vector product)
    dout = loss.grad(out, y, sample_weight)
    return loss.value(out, y, sample_weight), out_act.vjp(z_out, out, dout)


def _l2_value(params: Params, l2: float):
    # (l2 / 2) sum_l ||w[l]||^2 over weights only
    return 0.5 * l2 * sum(jnp.sum(p.w * p.w) for p in params)


def _objective(model: MLP, loss: Loss, l2: float, params: Params, xb, yb, sw) -> jax.Array:
    """The scalar training objective: the loss of the forward pass plus the L2 term."""
    trace = forward(model, params, xb)
    out = trace.z[-1] if loss.logits else trace.a[-1]
    value = loss.value(out, yb, sw)
    # l2 == 0 skips the term: XLA keeps 0 * sum ||w||^2 and its gradient 0 * w otherwise.
    return value + _l2_value(params, l2) if l2 else value


def _prepare(model, loss, params, x, y, sample_weight):
    check_params(model, params)
    xb, single = as_batch(model, x, params)
    if single:
        y = jnp.asarray(y)[None]
        sample_weight = None if sample_weight is None else jnp.asarray(sample_weight)[None]
    dtype = xb.dtype
    yb = check_targets(model, loss, y, xb.shape[0], dtype)
    return xb, yb, _check_weight(sample_weight, xb.shape[0])


def check_model_loss(model: Any, loss: str | Loss) -> Loss:
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a jaxmlp.MLP, got {type(model).__name__}")
    loss = get_loss(loss)
    check_loss_pairing(model, loss)
    return loss


def loss_fn(model: MLP, loss: str | Loss, *, l2: float = 0.0) -> LossFn:
    """Builds ``f(params, x, y, sample_weight=None) -> loss_value`` (the objective alone)."""
    loss = check_model_loss(model, loss)
    l2 = check_nonnegative(l2, "l2")

    def f(
        params: Params, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> jax.Array:
        xb, yb, sw = _prepare(model, loss, params, x, y, sample_weight)
        return _objective(model, loss, l2, params, xb, yb, sw)

    return f


def value_and_grad(
    model: MLP, loss: str | Loss, *, method: str = "manual", l2: float = 0.0
) -> ValueAndGradFn:
    """Builds ``f(params, x, y, sample_weight=None) -> (loss_value, grads)``.

    Args:
        model: the network description.
        loss: a loss name (``jaxmlp.LOSSES``) or a :class:`jaxmlp.Loss`.
        method: ``"manual"`` (the hand-written backward) or ``"autodiff"``
            (``jax.value_and_grad`` of the same forward pass and loss).
        l2: adds ``(l2 / 2) * sum ||w||^2`` over the weights (not the biases).

    The returned function takes ``x`` ``(batch, sizes[0])`` (or one example ``(sizes[0],)``),
    ``y`` as the loss expects and ``sample_weight`` ``(batch,)`` (weighted mean; zero masks a
    row). ``grads`` has the structure, shapes and dtypes of ``params``. Pure: jit and vmap it.
    """
    loss = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")

    objective = functools.partial(_objective, model, loss, l2)

    def manual(
        params: Params, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> tuple[jax.Array, Params]:
        xb, yb, sw = _prepare(model, loss, params, x, y, sample_weight)
        trace = forward(model, params, xb)
        value, dz_out = loss_head(model, loss, trace, yb, sw)
        grads = backward(model, params, trace, dz_out).grads
        if l2:
            value = value + _l2_value(params, l2)
            # d/dw (l2/2)||w||^2 = l2 w
            grads = tuple(Dense(g.w + l2 * p.w, g.b) for g, p in zip(grads, params, strict=True))
        return value, grads

    def autodiff(
        params: Params, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> tuple[jax.Array, Params]:
        xb, yb, sw = _prepare(model, loss, params, x, y, sample_weight)
        return jax.value_and_grad(objective)(params, xb, yb, sw)

    return manual if method == "manual" else autodiff


def apply_manual(model: MLP, params: Params, x: jax.typing.ArrayLike) -> jax.Array:
    """``model.apply`` whose derivatives in both modes are the hand-written passes.

    Reverse mode (``jax.grad``, ``jax.vjp``, ``jax.jacrev``) of any function written on top of
    it runs :func:`backward`; forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) runs
    the hand-written tangent pass (``jaxmlp/_core/tangent.py``), with respect to ``params``, to
    ``x`` or both. Higher orders (``jax.hessian``, Laplacians in ``x``) differentiate those passes.
    The result is the same function as ``model.apply``, on ``x`` ``(..., sizes[0])`` with any
    leading axes.
    """
    # Imported here: manual_apply.py builds on this module's forward and backward passes.
    from jaxmlp._core.manual_apply import apply_rows

    check_params(model, params)
    xb, lead = as_rows(model, x, params)
    return unrows(apply_rows(model, params, xb), lead)


def _per_example_setup(model, loss, l2):
    loss = check_model_loss(model, loss)
    return loss, check_nonnegative(l2, "l2")


def _per_example_deltas(model, loss, params, x, y):
    """Forward trace and every layer's delta for the per-example losses ``l_n`` (no 1/n)."""
    xb, yb, _ = _prepare(model, loss, params, x, y, None)
    trace = forward(model, params, xb)
    z_out, out = trace.z[-1], trace.a[-1]
    if loss.logits:
        dz_out = loss.example_grad(z_out, yb)
    else:
        out_act = get_activation(model.output_activation, output=True)
        dz_out = out_act.vjp(z_out, out, loss.example_grad(out, yb))
    return trace, backward(model, params, trace, dz_out).deltas


def per_example_grads(model: MLP, loss: str | Loss, *, l2: float = 0.0) -> PerExampleGradsFn:
    """Builds ``f(params, x, y) -> grads`` with a leading batch axis on every leaf.

    ``grads[l].w[n]`` is the gradient of the loss of example ``n`` alone (a batch of one), from
    a single batched backward pass: ``dw_n = a_prev_n (outer) dz_n``, ``db_n = dz_n``.
    """
    loss, l2 = _per_example_setup(model, loss, l2)

    def f(params: Params, x: ArrayLike, y: ArrayLike) -> Params:
        trace, deltas = _per_example_deltas(model, loss, params, x, y)
        out = []
        for p, a_prev, dz in zip(params, trace.a[:-1], deltas, strict=True):
            # dw_n = a_prev_n^T dz_n (an outer product per example), plus l2 w
            dw = jnp.einsum("ni,no->nio", a_prev, dz).astype(p.w.dtype)
            out.append(Dense(dw + l2 * p.w[None] if l2 else dw, dz.astype(p.b.dtype)))
        return tuple(out)

    return f


def per_example_grad_norms(
    model: MLP, loss: str | Loss, *, l2: float = 0.0
) -> PerExampleGradNormsFn:
    """Builds ``f(params, x, y) -> (batch,)``, each example's gradient L2 norm.

    Never materialises the per-example gradients: for a dense layer
    ``||a_n dz_n^T||^2 = ||a_n||^2 ||dz_n||^2`` and ``||db_n||^2 = ||dz_n||^2``; with ``l2`` the
    weight block is ``a_n dz_n^T + l2 w``, adding ``2 l2 a_n^T w dz_n + l2^2 ||w||^2``.
    """
    loss, l2 = _per_example_setup(model, loss, l2)

    def f(params: Params, x: ArrayLike, y: ArrayLike) -> jax.Array:
        trace, deltas = _per_example_deltas(model, loss, params, x, y)
        total = 0.0
        for p, a_prev, dz in zip(params, trace.a[:-1], deltas, strict=True):
            dz2 = jnp.sum(dz * dz, axis=1)
            total = total + jnp.sum(a_prev * a_prev, axis=1) * dz2 + dz2
            if l2:
                cross = jnp.sum((a_prev @ p.w) * dz, axis=1)
                total = total + 2 * l2 * cross + l2 * l2 * jnp.sum(p.w * p.w)
        return jnp.sqrt(total)

    return f
