"""Objectives: any training loss written with the model's apply, over rows of any pytree.

A loss (:class:`jaxmlp.Loss`) compares the network's output with targets row by row. An objective
is more general: ``fn(apply, params, rows) -> (batch,)`` gets the model's apply function, the
parameters and a batch of *rows* (any pytree of arrays with a leading row axis: collocation
points, coordinates and pixel values, unlabelled inputs) and returns one value per row. The
training objective is their (weighted) mean, so padded rows and ``sample_weight`` work as for a
loss. A PINN residual, a neural field's reconstruction error or an unsupervised loss fits here.

With ``method="manual"`` ``apply`` is :func:`jaxmlp.apply_manual`: the gradient with respect to the
parameters runs the hand-written backward pass for the network's part and JAX's for the rest of
the objective; with ``"autodiff"`` it is ``model.apply`` and JAX differentiates all of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from jaxmlp._core.backprop import apply_manual, penalty_value
from jaxmlp._core.mlp import MLP, Params

ApplyFn = Callable[[Params, jax.Array], jax.Array]
ObjectiveFn = Callable[[ApplyFn, Params, Any], jax.Array]


class Objective(NamedTuple):
    """A training objective: ``fn(apply, params, rows) -> (batch,)`` per-row values.

    Attributes:
        fn: the objective; ``apply(params, x)`` is the network (``x`` ``(..., sizes[0])``),
            ``rows`` a pytree whose leaves share a leading batch axis. Pure and jittable.
        name: a name for messages and checkpoints.
        reduction: ``"mean"`` (weighted mean over rows) or ``"sum"``.

    Example:
        A 1-D Poisson residual ``u'' + f = 0`` at collocation points ``rows["x"]`` ``(batch, 1)``::

            def poisson(apply, params, rows):
                u = lambda x: apply(params, x[None])[0, 0]
                u_xx = jax.vmap(jax.hessian(u))(rows["x"])[:, 0, 0]
                return (u_xx + rows["f"]) ** 2
    """

    fn: ObjectiveFn
    name: str = "objective"
    reduction: str = "mean"


def as_objective(value: Any, argname: str = "loss") -> Objective | None:
    """``value`` as an :class:`Objective` when it is one or a plain function, else ``None``."""
    if isinstance(value, Objective):
        if not callable(value.fn):
            raise TypeError(f"{argname}: Objective.fn must be a callable")
        if value.reduction not in ("mean", "sum"):
            raise ValueError(
                f"{argname}: reduction must be 'mean' or 'sum', got {value.reduction!r}"
            )
        return value
    if callable(value) and not isinstance(value, tuple):
        return Objective(cast(ObjectiveFn, value), getattr(value, "__name__", "objective"))
    return None


def apply_for(model: MLP, method: str) -> ApplyFn:
    """The apply function an objective sees: the hand-written backward or JAX's."""
    if method == "manual":
        return functools.partial(apply_manual, model)
    return model.apply


def reduce_rows(objective: Objective, values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """The objective's value from its per-row values: the (weighted) mean or sum."""
    if values.ndim != 1:
        raise ValueError(
            f"loss: objective {objective.name!r} must return one value per row, shape (batch,), "
            f"got shape {tuple(values.shape)}"
        )
    if weights is None:
        return jnp.mean(values) if objective.reduction == "mean" else jnp.sum(values)
    w = weights.astype(values.dtype)
    if objective.reduction == "sum":
        return jnp.sum(w * values)
    total = jnp.sum(w)
    return jnp.sum(w * values) / jnp.where(total > 0, total, 1)


def objective_value_and_grad(
    model: MLP, objective: Objective, method: str, l2: float, l1: float = 0.0
) -> Callable[[Params, Any, Any, jax.Array | None], tuple[jax.Array, Params]]:
    """``f(params, rows, _, weights) -> (value, grads)``, the engine's step function for an
    objective (the third argument, a loss's targets, is unused)."""
    apply = apply_for(model, method)

    def total(params: Params, rows: Any, weights: jax.Array | None) -> jax.Array:
        value = reduce_rows(objective, objective.fn(apply, params, rows), weights)
        if l2 or l1:
            # (l2 / 2) sum ||w||^2 + l1 sum |w| over the affine weights
            value = value + penalty_value(model, params, l2, l1)
        return value

    def f(params: Params, rows: Any, _: Any, weights: jax.Array | None = None):
        return jax.value_and_grad(total)(params, rows, weights)

    return f


def objective_evaluate(model: MLP, objective: Objective, params: Params, rows: Any):
    """The objective's mean over ``rows`` (no l2 term), and NaN for the metric (none applies)."""
    value = reduce_rows(objective, objective.fn(model.apply, params, rows), None)
    return value, jnp.full_like(value, jnp.nan)
