"""``apply_manual``'s derivatives in both modes: two primitives that route JAX to the hand-written passes.

JAX allows ``custom_jvp`` or ``custom_vjp`` on a function, never both, and this JAX (0.10) has no
``custom_transpose``; ``jax.custom_derivatives.linear_call`` (a linear function with a custom
transpose) has no batching rule and no derivative with respect to its residuals, so ``jacfwd``,
``jacrev`` and Hessians through it fail. A *hijax primitive*
(``jax.experimental.hijax.VJPHiPrimitive``, experimental) is a real primitive with a Python
implementation and one rule per transformation, which is what is needed here:

- :class:`ManualApply` is ``model.apply`` on rows ``(batch, sizes[0])``. Its JVP rule runs the
  forward pass and emits a :class:`Tangent`; its VJP rule (``jax.grad``, ``jax.vjp``,
  ``jax.jacrev``) runs :func:`~jaxmlp._core.backprop.backward`.
- :class:`Tangent` is the hand-written tangent pass (:func:`~jaxmlp._core.tangent.tangent`),
  linear in ``(dparams, dx)``. Its transpose rule is the backward pass, so reverse mode reached
  by transposing the forward mode (``jax.checkpoint``, ``jax.linear_transpose``) runs the
  hand-written backward too.

First derivatives in either mode are the hand-written passes. A second derivative
differentiates one of them with respect to the point (``params``, ``x``): JAX differentiates the
hand-written first-order code there (no ``f''`` is written by hand), as it did with the former
``custom_vjp``.

Under ``vmap`` a primitive records which inputs the new axis maps (moved to the front) and its
rules run under ``jax.vmap`` with those ``in_axes``: unmapped inputs stay as they are, so a
Jacobian's basis vectors or an ensemble's members batch into the same matrix products. A vmap
over ``x`` alone of a :class:`ManualApply` folds into its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.hijax import ShapedArray, VJPHiPrimitive, Zero, instantiate_zeros

from jaxmlp._core.activations import get_activation
from jaxmlp._core.backprop import Trace, backward, forward
from jaxmlp._core.mlp import MLP, Params
from jaxmlp._core.tangent import ParamTangents, tangent


def _is_zero(t: Any) -> bool:
    return isinstance(t, Zero)


def _or_none(t: Any) -> Any:
    """A symbolic zero tangent as ``None``, the tangent pass's zero."""
    return None if _is_zero(t) else t


def _param_tangents(dparams: Any) -> ParamTangents:
    """The parameters' tangent with every symbolic zero block as ``None`` (a whole entry
    ``None`` when all its blocks are)."""
    if dparams is None:
        return None
    out = []
    for d in dparams:
        d = None if d is None else jax.tree.map(_or_none, d, is_leaf=_is_zero)
        out.append(None if d is None or not jax.tree.leaves(d) else d)
    return None if all(d is None for d in out) else tuple(out)


def _zeros_like(t: Any, primal: Any) -> Any:
    """Symbolic zeros in ``t`` as arrays shaped like ``primal``'s (inside vmap: per member)."""
    return jax.tree.map(
        lambda tt, p: jnp.zeros_like(p) if _is_zero(tt) else tt, t, primal, is_leaf=_is_zero
    )


def _backward_cotangents(model: MLP, params: Params, trace: Trace, g: jax.Array):
    """``(dL/dparams, dL/dx)`` for the output cotangent ``g``: the hand-written backward pass."""
    out_act = get_activation(model.output_activation, output=True)
    # dL/dz[L] = dL/da[L] * da[L]/dz[L] (softmax: its Jacobian-vector product)
    dz_out = out_act.vjp(trace.z[-1], trace.a[-1], g)
    result = backward(model, params, trace, dz_out, need_dx=True)
    return result.grads, result.dx


def _keep(t: Any, g: jax.Array) -> Any:
    return None if t is None else g


def _cut(tangents: tuple[Any, Any], grads: Params, gx: jax.Array | None) -> tuple[Any, Any]:
    """``(grads, gx)`` cut to the blocks ``tangents = (dparams, dx)`` holds (``None`` stays)."""
    dparams, dx = tangents
    if dparams is not None:
        dparams = tuple(
            None if d is None else jax.tree.map(_keep, d, g, is_leaf=lambda t: t is None)
            for d, g in zip(dparams, grads, strict=True)
        )
    return dparams, None if dx is None else gx


def _summed(fn, flat: tuple[int | None, ...]):
    """``fn``, whose output leaves have the dims ``flat`` (0: mapped; ``None``: an unmapped
    input's cotangent computed per example, so summed over the axis, a broadcast's transpose)."""

    def summed(*args):
        leaves, tree = jax.tree.flatten(fn(*args))
        leaves = [c if d == 0 else jnp.sum(c, axis=0) for c, d in zip(leaves, flat, strict=True)]
        return jax.tree.unflatten(tree, leaves)

    return summed


class _Primitive(VJPHiPrimitive):
    """What both primitives share: construction, vmap, and running the rules under it.

    Subclasses write each rule for one example of every vmap (``_expand``, ``_jvp``, ``_lin``,
    ``_linearized``, ``_vjp_bwd``). ``levels`` holds one entry per vmap the primitive sits
    under, outermost first: for each input leaf, 0 when that vmap maps it (on its leading
    axes, in the levels' order) and ``None`` when not.
    """

    model: MLP
    tree: Any
    levels: tuple[tuple[int | None, ...], ...]

    def __init__(self, model: MLP, *args: Any, levels: tuple[tuple[int | None, ...], ...] = ()):
        self.in_avals = jax.tree.map(jax.typeof, args)
        self.model, self.tree, self.levels = model, jax.tree.structure(args), levels
        self.params = {"model": model, "tree": self.tree, "levels": levels}
        self.out_aval = self._out_aval(*args)
        super().__init__()

    def _out_aval(self, *args) -> ShapedArray:
        out = jax.eval_shape(self._mapped(self._expand, lambda d: d), *args)
        return ShapedArray(out.shape, out.dtype)

    def _mapped(self, fn, in_axes, *, cotangents: slice | None = None):
        """``fn`` under one ``jax.vmap`` per level (its output mapped on axis 0); ``in_axes(d)``
        builds a level's ``in_axes`` from the inputs' ``d``. ``cotangents``: ``fn`` returns
        the cotangents of these inputs (a slice of their leaves), and each gets its own summed
        over the levels that do not map its input."""
        for flat in reversed(self.levels):  # the innermost vmap first
            fn = jax.vmap(fn, in_axes=in_axes(jax.tree.unflatten(self.tree, flat)))
            if cotangents is not None:
                fn = _summed(fn, flat[cotangents])
        return fn

    # the rules for one example of every vmap, written by each subclass
    _expand: Callable[..., Any]  # (*args) -> out
    _jvp: Callable[[Any, Any], Any]  # (primals, tangents) -> (out, out's tangent)
    _lin: Callable[..., Any]  # (*primals) -> (out, residuals beyond the primals)
    _linearized: Callable[[Any, Any, Any], Any]  # (primals, residuals, tangents) -> out's tangent
    _vjp_bwd: Callable[[Any, Any, Any], Any]  # (primals, residuals, g) -> the inputs' cotangents

    def expand(self, *args):
        return self._mapped(self._expand, lambda d: d)(*args)

    def jvp(self, primals, tangents):
        # a tangent has its primal's shape, so the same axes
        return self._mapped(self._jvp, lambda d: (d, d))(primals, tangents)

    def _lin_with_primals(self, primals):
        out, residuals = self._mapped(self._lin, lambda d: d)(*primals)
        return out, (primals, residuals)

    def lin(self, nzs_in, *primals):
        return self._lin_with_primals(primals)

    def linearized(self, residuals, *tangents):
        primals, rest = residuals
        return self._mapped(self._linearized, lambda d: (d, 0, d))(primals, rest, tangents)

    def vjp_fwd(self, nzs_in, *primals):
        return self._lin_with_primals(primals)

    def vjp_bwd_retval(self, res, g):
        primals, rest = res
        cts = self._mapped(self._vjp_bwd, lambda d: (d, 0, 0), cotangents=slice(None))
        return cts(primals, rest, instantiate_zeros(g))

    def batch(self, axis_data, args, dims):
        flat = self.tree.flatten_up_to(dims)
        if all(d is None for d in flat):
            # JAX asks even when nothing is mapped along this axis: then the output is not
            return self(*args), None
        leaves = self.tree.flatten_up_to(args)
        moved = [
            a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(leaves, flat, strict=True)
        ]
        args = jax.tree.unflatten(self.tree, moved)
        level = tuple(None if d is None else 0 for d in flat)
        return type(self)(self.model, *args, levels=(level, *self.levels))(*args), 0


class Tangent(_Primitive):
    """:func:`~jaxmlp._core.tangent.tangent` ``(params, trace, dparams, dx)`` as a primitive,
    linear in ``(dparams, dx)`` (``None`` for a zero block).

    Transpose: the hand-written backward pass. Derivative with respect to the point
    ``(params, trace)``, a second-order term: JAX's derivative of the tangent pass.
    """

    def _out_aval(self, *args) -> ShapedArray:
        trace = args[1]  # (params, trace, dparams, dx): the output has a[L]'s shape, or more
        if not self.levels:
            return jax.typeof(trace.a[-1])  # pyright: ignore[reportReturnType]
        return super()._out_aval(*args)

    def _expand(self, params, trace, dparams, dx):
        return tangent(self.model, params, trace, dparams, dx)

    def _at(self, dparams, dx):
        """The tangent pass along ``(dparams, dx)`` as a function of the point."""
        return lambda params, trace: tangent(self.model, params, trace, dparams, dx)

    def _moved(self, primals, tangents):
        """The output's tangent: along the tangents of ``(dparams, dx)`` (linear, this same
        primitive) plus along those of the point ``(params, trace)`` (JAX's)."""
        params, trace, dparams, dx = primals
        t_point = (tangents[0], tangents[1])
        t_dparams, t_dx = _param_tangents(tangents[2]), _or_none(tangents[3])
        terms = []
        if t_dparams is not None or t_dx is not None:
            terms.append(_tangent_of(self.model, params, trace, t_dparams, t_dx))
        if any(not _is_zero(t) for t in jax.tree.leaves(t_point, is_leaf=_is_zero)):
            t_point = _zeros_like(t_point, (params, trace))
            terms.append(jax.jvp(self._at(dparams, dx), (params, trace), t_point)[1])
        return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(trace.a[-1])

    def _jvp(self, primals, tangents):
        return self._expand(*primals), self._moved(primals, tangents)

    def _lin(self, *primals):
        return self._expand(*primals), ()

    def _linearized(self, primals, residuals, tangents):
        return self._moved(primals, tangents)

    def _vjp_bwd(self, primals, residuals, g):
        params, trace, dparams, dx = primals
        # (dparams, dx): the transpose, i.e. the hand-written backward pass
        grads, gx = _backward_cotangents(self.model, params, trace, g)
        # the point (params, trace): JAX's derivative of the tangent pass (second order)
        g_params, g_trace = jax.vjp(self._at(dparams, dx), params, trace)[1](g)
        return g_params, g_trace, *_cut((dparams, dx), grads, gx)

    def transpose(self, out_ct, *args):
        # args: (params, trace, dparams, dx), the last two as accumulators of their cotangents
        if _is_zero(out_ct):
            return
        params, trace, dparams, dx = args
        present = jax.tree.map(lambda _: True, (dparams, dx))

        def cotangents(params, trace, g):
            grads, gx = _backward_cotangents(self.model, params, trace, g)
            return _cut(present, grads, gx)

        point = len(jax.tree.leaves((params, trace)))
        cts = self._mapped(cotangents, lambda d: (d[0], d[1], 0), cotangents=slice(point, None))
        cts = cts(params, trace, out_ct)
        for acc, ct in zip(jax.tree.leaves((dparams, dx)), jax.tree.leaves(cts), strict=True):
            if hasattr(acc, "accum"):
                acc.accum(ct)


def _tangent_of(model: MLP, params, trace, dparams: Any, dx: Any) -> jax.Array:
    """The output's tangent along ``(dparams, dx)`` (symbolic zeros allowed), via :class:`Tangent`."""
    dparams, dx = _param_tangents(dparams), _or_none(dx)
    if dparams is None and dx is None:
        return jnp.zeros_like(trace.a[-1])
    return Tangent(model, params, trace, dparams, dx)(params, trace, dparams, dx)


class ManualApply(_Primitive):
    """``model.apply(params, x)`` for ``x`` ``(batch, sizes[0])`` as a primitive: JVP through
    :class:`Tangent`, VJP the hand-written backward pass."""

    def _expand(self, params, x):
        return forward(self.model, params, x).a[-1]

    def _jvp(self, primals, tangents):
        trace = forward(self.model, *primals)
        return trace.a[-1], _tangent_of(self.model, primals[0], trace, *tangents)

    def _lin(self, params, x):
        trace = forward(self.model, params, x)
        return trace.a[-1], trace

    def _linearized(self, primals, trace, tangents):
        return _tangent_of(self.model, primals[0], trace, *tangents)

    def _vjp_bwd(self, primals, trace, g):
        return _backward_cotangents(self.model, primals[0], trace, g)

    def batch(self, axis_data, args, dims):
        params_dims, x_dim = dims
        if self.levels or jax.tree.leaves(params_dims) or x_dim is None:
            return super().batch(axis_data, args, dims)
        # only x is mapped: its rows, all in one batch
        params, x = args
        x = jnp.moveaxis(x, x_dim, 0)
        rows = x.reshape(-1, x.shape[-1])
        out = ManualApply(self.model, params, rows)(params, rows)
        return out.reshape(*x.shape[:-1], out.shape[-1]), 0


def apply_rows(model: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``model.apply`` on rows ``x`` ``(batch, sizes[0])`` through :class:`ManualApply`."""
    return ManualApply(model, params, x)(params, x)
