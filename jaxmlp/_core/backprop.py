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
from jax.typing import ArrayLike

from jaxmlp._checks import check_choice, check_key, check_nonnegative
from jaxmlp._core.activations import get_activation
from jaxmlp._core.layers import Affine
from jaxmlp._core.losses import Loss, get_loss
from jaxmlp._core.mlp import (
    MLP,
    Dense,
    Params,
    as_array,
    as_batch,
    as_rows,
    check_params,
    unrows,
)
from jaxmlp._core.stack import run_backward, run_forward

METHODS = ("manual", "autodiff", "fused")


class Trace(NamedTuple):
    """What the forward pass keeps for the backward pass.

    Attributes:
        z: pre-activations ``(z[1], ..., z[L])``, each affine layer's output
            ``(batch, sizes[l])``.
        a: activations ``(a[0] = x, a[1], ..., a[L])``: what each affine layer reads (after
            the input feature map, a residual connection, ...), then the network output
            ``a[L]``.
        values: every layer's input in :attr:`jaxmlp.MLP.layers` order, then the output (for
            the lecture's network ``x, z[1], a[1], z[2], a[2], ...``).
        saved: what each layer kept for its derivatives (``None`` for most).
    """

    z: tuple[jax.Array, ...]
    a: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...] = ()
    saved: tuple[Any, ...] = ()


class LossFn(Protocol):
    """What :func:`loss_fn` builds: ``f(params, x, y, sample_weight=None, *, key=None) ->
    loss_value``, a scalar."""

    def __call__(
        self,
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> jax.Array: ...


class ValueAndGradFn(Protocol):
    """What :func:`value_and_grad` builds: ``f(params, x, y, sample_weight=None, *,
    key=None) -> (loss_value, grads)``, ``grads`` shaped like ``params``."""

    def __call__(
        self,
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
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


def forward(model: MLP, params: Params, x: jax.Array, key: jax.Array | None = None) -> Trace:
    """The forward pass (eqs. 18, 39-42), keeping every layer's input: for the lecture's
    network ``z[l] = a[l-1] w[l] + b[l]`` (eq. 39) and ``a[l] = f(z[l])`` (eq. 40), layer by
    layer (:mod:`jaxmlp._core.layers`).

    Args:
        x: ``(batch, sizes[0])`` in the parameters' dtype (use ``forward_trace`` for raw input).
        key: ``None`` for inference; a key for training mode (dropout).
    """
    values, saved = run_forward(model, params, x, key)
    affine = [i for i, layer in enumerate(model.layers) if isinstance(layer, Affine)]
    z = tuple(values[i + 1] for i in affine)
    a = (*(values[i] for i in affine), values[-1])
    return Trace(z, a, values, saved)


def forward_trace(
    model: MLP, params: Params, x: jax.typing.ArrayLike, *, key: jax.Array | None = None
) -> Trace:
    """Checks the inputs and runs :func:`forward` on ``x`` of shape ``(batch, sizes[0])``."""
    check_params(model, params)
    xb, _ = as_batch(model, x, params)
    return forward(model, params, xb, None if key is None else check_key(key))


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

    Every layer's ``backward`` (:mod:`jaxmlp._core.layers`; the affine layer and the
    activation are the lecture's eqs. 44-64) carries the chain-rule factor each line computes;
    :mod:`jaxmlp._core.stack` walks them from the last layer to the first.
    """
    _check_backward_args(model, params, trace, dz_out)
    # From dL/dz[L] back through every layer but the output activation (the loss head's).
    grads, deltas, dx = run_backward(
        model, params, trace.values, trace.saved, dz_out, stop=len(model.layers) - 1,
        need_dx=need_dx,
    )  # fmt: skip
    return Backward(grads, deltas, dx)


def _check_backward_args(model: MLP, params: Params, trace: Any, dz_out: Any) -> None:
    check_params(model, params)
    L = model.num_layers
    if not (
        isinstance(trace, Trace)
        and len(trace.z) == L
        and len(trace.a) == L + 1
        and len(trace.values) == len(model.layers) + 1
    ):
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


def penalty_value(model: MLP, params: Params, l2: float, l1: float = 0.0):
    """``(l2 / 2) sum ||w||^2 + l1 sum |w|`` over the affine layers' weights (not the biases,
    not the layer norms' scales and offsets); a Python 0 when both are 0."""
    total = 0.0
    for s in model.affine_slots():
        w = params[s].w
        if l2:
            total = total + 0.5 * l2 * jnp.sum(w * w)
        if l1:
            # |w| written as w sign(w): the same value, and jax.grad of it is sign(w), 0 at
            # w = 0 like the manual derivative (jax.grad of jnp.abs gives 1 there)
            total = total + l1 * jnp.sum(w * jnp.sign(w))
    return total


def penalty_grads(model: MLP, params: Params, grads: Params, l2: float, l1: float = 0.0):
    """``grads`` plus the penalty's gradient: ``l2 w + l1 sign(w)`` on the weights. At
    ``w = 0`` the derivative of ``|w|`` is taken as 0 (``sign(0) = 0``), and
    :func:`penalty_value` is written so that ``jax.grad`` gives the same: both methods agree."""
    if not (l2 or l1):
        return grads
    out: list[Any] = list(grads)
    for s in model.affine_slots():
        w, g = params[s].w, out[s]
        dw = g.w
        if l2:
            dw = dw + l2 * w  # d/dw (l2/2)||w||^2 = l2 w
        if l1:
            dw = dw + l1 * jnp.sign(w)  # d/dw l1 |w| = l1 sign(w), 0 at w = 0
        out[s] = g._replace(w=dw)
    return tuple(out)


def _objective(
    model: MLP, loss: Loss, l2: float, l1: float, params: Params, xb, yb, sw, key=None
) -> jax.Array:
    """The scalar training objective: the loss of the forward pass plus the penalties."""
    trace = forward(model, params, xb, key)
    out = trace.z[-1] if loss.logits else trace.a[-1]
    value = loss.value(out, yb, sw)
    # l2 == l1 == 0 skips the term: XLA keeps 0 * sum ||w||^2 and its gradient otherwise.
    return value + penalty_value(model, params, l2, l1) if (l2 or l1) else value


def prepare_batch(model, loss, params, x, y, sample_weight):
    """The checked arguments of a ``value_and_grad`` function: ``params``, ``x`` as rows (one
    example becomes a batch of one), ``y`` as the loss reads it, ``sample_weight`` or ``None``."""
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


def _train_key(model: MLP, key: Any) -> jax.Array | None:
    """``key`` checked, or ``None``; a model with dropout trains only with one."""
    return None if key is None else check_key(key)


def loss_fn(model: MLP, loss: str | Loss, *, l2: float = 0.0, l1: float = 0.0) -> LossFn:
    """Builds ``f(params, x, y, sample_weight=None, *, key=None) -> loss_value`` (the
    objective alone; ``key``: training mode, as in :func:`value_and_grad`)."""
    loss = check_model_loss(model, loss)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")

    def f(
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> jax.Array:
        xb, yb, sw = prepare_batch(model, loss, params, x, y, sample_weight)
        return _objective(model, loss, l2, l1, params, xb, yb, sw, _train_key(model, key))

    return f


def value_and_grad(
    model: MLP, loss: str | Loss, *, method: str = "manual", l2: float = 0.0, l1: float = 0.0
) -> ValueAndGradFn:
    """Builds ``f(params, x, y, sample_weight=None, *, key=None) -> (loss_value, grads)``.

    Args:
        model: the network description.
        loss: a loss name (``jaxmlp.LOSSES``) or a :class:`jaxmlp.Loss`.
        method: ``"manual"`` (the hand-written backward), ``"autodiff"``
            (``jax.value_and_grad`` of the same forward pass and loss) or ``"fused"`` (the
            hand-written backward as Pallas GPU kernels, :func:`jaxmlp.fused.value_and_grad`;
            plain networks only, a ``ValueError`` for others).
        l2: adds ``(l2 / 2) * sum ||w||^2`` over the weights (not the biases).
        l1: adds ``l1 * sum |w|`` over the weights; its derivative ``l1 sign(w)`` is taken
            as 0 at ``w = 0`` by both methods.

    The returned function takes ``x`` ``(batch, sizes[0])`` (or one example ``(sizes[0],)``),
    ``y`` as the loss expects and ``sample_weight`` ``(batch,)`` (weighted mean; zero masks a
    row); ``key`` switches training mode on (dropout masks drawn from it: both methods draw
    the same masks from the same key; ``None``: inference, no dropout). ``grads`` has the
    structure, shapes and dtypes of ``params``. Pure: jit and vmap it.
    """
    loss = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    if method == "fused":
        # The kernels' room, imported only when asked for (it loads Pallas).
        from jaxmlp.fused import value_and_grad as fused_value_and_grad

        return fused_value_and_grad(model, loss, l2=l2, l1=l1)

    objective = functools.partial(_objective, model, loss, l2, l1)

    def manual(
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        xb, yb, sw = prepare_batch(model, loss, params, x, y, sample_weight)
        trace = forward(model, params, xb, _train_key(model, key))
        value, dz_out = loss_head(model, loss, trace, yb, sw)
        grads = backward(model, params, trace, dz_out).grads
        if l2 or l1:
            value = value + penalty_value(model, params, l2, l1)
            grads = penalty_grads(model, params, grads, l2, l1)
        return value, grads

    def autodiff(
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        xb, yb, sw = prepare_batch(model, loss, params, x, y, sample_weight)
        return jax.value_and_grad(objective)(params, xb, yb, sw, _train_key(model, key))

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


def _per_example_setup(model, loss, l2, l1):
    loss = check_model_loss(model, loss)
    return loss, check_nonnegative(l2, "l2"), check_nonnegative(l1, "l1")


def _per_example_deltas(model, loss, params, x, y):
    """Forward trace and every layer's delta for the per-example losses ``l_n`` (no 1/n)."""
    xb, yb, _ = prepare_batch(model, loss, params, x, y, None)
    trace = forward(model, params, xb)
    z_out, out = trace.z[-1], trace.a[-1]
    if loss.logits:
        dz_out = loss.example_grad(z_out, yb)
    else:
        out_act = get_activation(model.output_activation, output=True)
        dz_out = out_act.vjp(z_out, out, loss.example_grad(out, yb))
    return trace, backward(model, params, trace, dz_out).deltas


def _per_example_vmapped(model, loss, l2, l1):
    """Per-example gradients of a network beyond the plain one (layer norm mixes a row's
    units, so no outer-product shortcut): the hand-written backward on each example alone,
    vmapped; the loss of a batch of one is the example's loss (inference: no dropout)."""
    vg = value_and_grad(model, loss, method="manual", l2=l2, l1=l1)

    def f(params, x, y):
        xb, yb, _ = prepare_batch(model, loss, params, x, y, None)
        return jax.vmap(lambda xr, yr: vg(params, xr[None], yr[None])[1])(xb, yb)

    return f


def per_example_grads(
    model: MLP, loss: str | Loss, *, l2: float = 0.0, l1: float = 0.0
) -> PerExampleGradsFn:
    """Builds ``f(params, x, y) -> grads`` with a leading batch axis on every leaf.

    ``grads[l].w[n]`` is the gradient of the loss of example ``n`` alone (a batch of one). For
    the plain network it comes from a single batched backward pass: ``dw_n = a_prev_n (outer)
    dz_n``, ``db_n = dz_n``; with layer norm, residual connections or features, from the
    hand-written backward vmapped over the examples.
    """
    loss, l2, l1 = _per_example_setup(model, loss, l2, l1)
    if not model.plain:
        return _per_example_vmapped(model, loss, l2, l1)

    def f(params: Params, x: ArrayLike, y: ArrayLike) -> Params:
        trace, deltas = _per_example_deltas(model, loss, params, x, y)
        out = []
        for p, a_prev, dz in zip(params, trace.a[:-1], deltas, strict=True):
            # dw_n = a_prev_n^T dz_n (an outer product per example), plus the penalties'
            dw = jnp.einsum("ni,no->nio", a_prev, dz).astype(p.w.dtype)
            if l2:
                dw = dw + l2 * p.w[None]
            if l1:
                dw = dw + l1 * jnp.sign(p.w)[None]
            out.append(Dense(dw, dz.astype(p.b.dtype)))
        return tuple(out)

    return f


def per_example_grad_norms(
    model: MLP, loss: str | Loss, *, l2: float = 0.0, l1: float = 0.0
) -> PerExampleGradNormsFn:
    """Builds ``f(params, x, y) -> (batch,)``, each example's gradient L2 norm.

    For the plain network without ``l1`` it never materialises the per-example gradients: for
    a dense layer ``||a_n dz_n^T||^2 = ||a_n||^2 ||dz_n||^2`` and ``||db_n||^2 = ||dz_n||^2``;
    with ``l2`` the weight block is ``a_n dz_n^T + l2 w``, adding ``2 l2 a_n^T w dz_n + l2^2
    ||w||^2``. Otherwise the norms of :func:`per_example_grads`.
    """
    loss, l2, l1 = _per_example_setup(model, loss, l2, l1)
    if not model.plain or l1:
        grads = per_example_grads(model, loss, l2=l2, l1=l1)

        def from_grads(params: Params, x: ArrayLike, y: ArrayLike) -> jax.Array:
            g = grads(params, x, y)
            return jnp.sqrt(sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1)
                                for leaf in jax.tree.leaves(g)))  # fmt: skip

        return from_grads

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
