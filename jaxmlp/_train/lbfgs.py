"""``fit_lbfgs``: full-batch training with optax's L-BFGS and its zoom line search.

The whole run is one compiled ``lax.while_loop``: each iteration takes optax's L-BFGS direction,
lets the line search pick the step (it evaluates the objective and its gradient at each trial
point), and checks the stopping rules of scipy's L-BFGS-B as scikit-learn's ``solver="lbfgs"``
runs it:

- not converged: ``max_iter`` iterations, or ``max_fun`` objective evaluations (the first one
  and every line-search trial count), or a non-finite objective; as in scipy these budgets are
  checked first after each iteration;
- converged: the largest gradient entry is ``<= tol`` (scipy's ``gtol``), or the relative
  decrease ``(f_prev - f) / max(|f_prev|, |f|, 1)`` is ``<= ftol`` (scipy's default
  ``2.22e-9``; in float32 that is "no decrease at all").

With ``method="manual"`` every gradient, the line search's included, is jaxmlp's hand-written
backward pass (the objective is a ``jax.custom_vjp`` whose backward returns it).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxmlp._checks import check_choice, check_int, check_nonnegative
from jaxmlp._core.backprop import METHODS, check_model_loss, value_and_grad
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Params, check_params
from jaxmlp._train.inputs import check_sample_weight, prepare_data

# scipy's L-BFGS-B default: factr 1e7 times the float64 machine epsilon.
FTOL = 1e7 * 2.220446049250313e-16
STATUS = ("converged: gradient <= tol", "converged: no relative decrease", "max_iter reached",
          "max_fun reached", "the objective became non-finite")  # fmt: skip
_RUNNING = -1


class LbfgsResult(NamedTuple):
    """What :func:`fit_lbfgs` returns.

    Attributes:
        params: the final parameters.
        loss: the objective at ``params`` (the data loss plus the L2 term).
        n_iter: L-BFGS iterations taken.
        n_fun: objective evaluations (with its gradient), line-search trials included.
        status: an index into ``STATUS``: 0 and 1 converged, 2 ``max_iter``, 3 ``max_fun``,
            4 non-finite.
        message: ``STATUS[status]``.
    """

    params: Params
    loss: float
    n_iter: int
    n_fun: int
    status: int
    message: str

    @property
    def converged(self) -> bool:
        """True when a convergence rule (``status`` 0 or 1) ended the run."""
        return self.status in (0, 1)


class _Carry(NamedTuple):
    params: Any
    opt_state: Any
    value: jax.Array
    grad: Any
    n_iter: jax.Array
    n_fun: jax.Array
    status: jax.Array


def _objective(model: MLP, loss: Loss, method: str, l2: float, l1: float = 0.0):
    """``f(params, x, y, sw) -> value`` whose gradient is ``method``'s."""
    vg = value_and_grad(model, loss, method=method, l2=l2, l1=l1)
    if method == "autodiff":
        return lambda params, x, y, sw: vg(params, x, y, sw)[0]

    @jax.custom_vjp
    def f(params, x, y, sw):
        return vg(params, x, y, sw)[0]

    def f_fwd(params, x, y, sw):
        value, grads = vg(params, x, y, sw)
        return value, (grads, x, y, sw)

    def f_bwd(res, ct):
        grads, x, y, sw = res
        zeros = jax.tree.map(jnp.zeros_like, (x, y, sw))
        return (jax.tree.map(lambda g: ct * g, grads), *zeros)

    f.defvjp(f_fwd, f_bwd)
    return f


def _max_abs(tree: Any) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


@functools.lru_cache(maxsize=32)
def _program(
    model: MLP, loss: Loss, method: str, l2: float, memory_size: int, steps: int, l1: float = 0.0
):
    """The compiled run: ``(params, x, y, sw, max_iter, max_fun, tol) -> _Carry``."""
    f = _objective(model, loss, method, l2, l1)
    solver = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=steps, initial_guess_strategy="one"
        ),
    )

    def run(params, x, y, sw, max_iter, max_fun, tol):
        def value_fn(p):
            return f(p, x, y, sw)

        value, grad = jax.value_and_grad(value_fn)(params)
        status = jnp.where(~jnp.isfinite(value), 4, jnp.where(_max_abs(grad) <= tol, 0, _RUNNING))
        start = _Carry(params, solver.init(params), value, grad, jnp.int32(0), jnp.int32(1),
                       status.astype(jnp.int32))  # fmt: skip

        def body(c: _Carry) -> _Carry:
            updates, opt_state = solver.update(
                c.grad, c.opt_state, c.params, value=c.value, grad=c.grad, value_fn=value_fn
            )
            params = optax.apply_updates(c.params, updates)
            value = optax.tree.get(opt_state, "value")
            grad = optax.tree.get(opt_state, "grad")
            n_iter = c.n_iter + 1
            trials = optax.tree.get(opt_state, "num_linesearch_steps")
            n_fun = c.n_fun + jnp.maximum(trials, 1).astype(jnp.int32)
            decrease = (c.value - value) / jnp.maximum(
                jnp.maximum(jnp.abs(c.value), jnp.abs(value)), 1.0
            )
            # scipy's order: the budgets are checked before the convergence tests.
            status = jnp.select(
                [~jnp.isfinite(value), n_iter >= max_iter, n_fun >= max_fun,
                 _max_abs(grad) <= tol, decrease <= FTOL],
                [4, 2, 3, 0, 1],
                _RUNNING,
            )  # fmt: skip
            return _Carry(params, opt_state, value, grad, n_iter, n_fun, status.astype(jnp.int32))

        return lax.while_loop(lambda c: c.status == _RUNNING, body, start)

    return jax.jit(run)


def fit_lbfgs(
    model: MLP,
    params: Params,
    x: Any,
    y: Any,
    *,
    loss: str | Loss,
    max_iter: int = 100,
    max_fun: int = 15000,
    tol: float = 1e-5,
    l2: float = 0.0,
    l1: float = 0.0,
    sample_weight: Any = None,
    method: str = "manual",
    memory_size: int = 10,
    max_linesearch_steps: int = 20,
) -> LbfgsResult:
    """Trains ``params`` on the whole data set at once with L-BFGS (optax's, zoom line search).

    Minimises the (weighted) mean loss plus ``(l2 / 2) * sum_l ||w_l||^2``, in one compiled
    ``lax.while_loop``, until the gradient's largest entry is ``<= tol``, the objective stops
    decreasing, or ``max_iter`` iterations or ``max_fun`` evaluations are spent (see
    ``LbfgsResult.status``). Suited to small data sets; every evaluation reads every row.

    Args:
        model: the network.
        params: its starting parameters (left untouched).
        x: ``(n, sizes[0])`` inputs.
        y: targets as ``loss`` expects.
        loss: a loss name or a :class:`jaxmlp.Loss`.
        max_iter: most L-BFGS iterations.
        max_fun: most objective evaluations (line-search trials included).
        tol: stop when ``max |grad| <= tol``.
        l2: weight decay ``(l2/2) sum ||w||^2`` in the objective.
        l1: ``l1 sum |w|`` in the objective (not smooth at 0, where L-BFGS's curvature model
            is poor: prefer a first-order optimizer for strong L1).
        sample_weight: ``(n,)`` non-negative weights (a weighted mean loss).
        method: ``"manual"`` or ``"autodiff"`` gradients, for the line search too.
        memory_size: the number of past updates L-BFGS keeps.
        max_linesearch_steps: most trials of one line search.

    Returns:
        A :class:`LbfgsResult`.

    Raises:
        ValueError: a bad argument value, checked before anything compiles.
        TypeError: an argument of the wrong type.
    """
    lossf = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    check_params(model, params)
    max_iter = check_int(max_iter, "max_iter", 1)
    max_fun = check_int(max_fun, "max_fun", 1)
    tol = check_nonnegative(tol, "tol")
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    memory_size = check_int(memory_size, "memory_size", 1)
    steps = check_int(max_linesearch_steps, "max_linesearch_steps", 1)
    xb, yb, _, _ = prepare_data(model, lossf, params, x, y, finite_params=True)
    sw = check_sample_weight(sample_weight, xb.shape[0], xb.dtype)
    program = _program(model, lossf, method, l2, memory_size, steps, l1)
    c = program(params, xb, yb, sw, max_iter, max_fun, tol)
    value, n_iter, n_fun, status = jax.device_get((c.value, c.n_iter, c.n_fun, c.status))
    status = int(status)
    return LbfgsResult(c.params, float(value), int(n_iter), int(n_fun), status, STATUS[status])
