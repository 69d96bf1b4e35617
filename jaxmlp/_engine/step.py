"""The jitted single training step and the training state it carries.

``make_train_step`` is the engine's smallest program: one minibatch, one optimizer update. The
multi-epoch program of :mod:`jaxmlp._engine.program` scans the same update (:func:`apply_update`)
over whole epochs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh

from jaxmlp._checks import check_choice, check_nonnegative, check_optimizer
from jaxmlp._core.backprop import METHODS, check_model_loss, value_and_grad
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Dense, Params
from jaxmlp._distributed import check_mesh, put, replicated, sharded
from jaxmlp._quick import quick_options

DEFAULT_LEARNING_RATE = 0.01
# Plain gradient descent, the lecture's eq. 17: w <- w - eta dL/dw. One shared object, so that
# repeated calls without an optimizer reuse the compiled programs.
DEFAULT_OPTIMIZER = optax.sgd(DEFAULT_LEARNING_RATE)

# Python-level trace counts per compiled function kind (tests assert nothing retraces).
TRACE_COUNTS: dict[str, int] = {"step": 0, "epochs": 0, "ensemble": 0}


class TrainState(NamedTuple):
    """The training state pytree: parameters, optimizer state and the step counter."""

    params: Params
    opt_state: Any
    step: jax.Array

    @classmethod
    def create(
        cls,
        params: Params,
        optimizer: optax.GradientTransformation | None = None,
        *,
        mesh: Mesh | None = None,
    ) -> TrainState:
        """A fresh state; copies ``params`` so that donating the state never invalidates them.

        With ``mesh`` the state is replicated on every device of the mesh.
        """
        optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
        check_state_params(params)
        state = compiled_init(init_state, params, optimizer)
        return state if mesh is None else put(state, replicated(mesh))


class TrainStep(Protocol):
    """``step(state, x, y, sample_weight=None, *, key=None) -> (state, loss_value)``."""

    def __call__(
        self,
        state: TrainState,
        x: jax.typing.ArrayLike,
        y: jax.typing.ArrayLike,
        sample_weight: jax.typing.ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> tuple[TrainState, jax.Array]: ...


def init_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state (traced: inside ``jit`` the copies are new buffers that donation may consume)."""
    params = jax.tree.map(jnp.copy, params)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=64)
def _init_program(init: Callable, static: tuple) -> Callable:
    # The static arguments closed over: the compiled call takes the parameters alone, which keeps
    # it on JAX's fast C++ dispatch path.
    return jax.jit(lambda params: init(params, *static), compiler_options=quick_options())


def compiled_init(init: Callable, params: Params, *static: Any) -> Any:
    """``init(params, *static)`` as one compiled call (a dispatch per leaf costs more than the
    work), or eagerly when ``static`` cannot be cached on (an unhashable optimizer)."""
    try:
        program = _init_program(init, static)
    except TypeError:
        return init(params, *static)
    return program(params)


def check_state_params(params: Any) -> None:
    """Model-free structure check: a tuple (of ``Dense``, and for the pieces beyond the
    plain network their parameters) holding float arrays."""
    if not (isinstance(params, (tuple, list)) and params and isinstance(params[0], Dense)):
        raise TypeError(f"params: expected a tuple of Dense, got {type(params).__name__}")
    for path, a in jax.tree.leaves_with_path(tuple(params)):
        if not (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)):
            got = getattr(a, "dtype", type(a).__name__)
            raise TypeError(
                f"params{jax.tree_util.keystr(path)}: expected a float array, got {got}"
            )


def apply_update(
    optimizer: optax.GradientTransformation, state: TrainState, grads: Params
) -> TrainState:
    """One optimizer update (eq. 17 for plain SGD) and the step count."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1)  # type: ignore[arg-type]


def make_train_step(
    model: MLP,
    loss: str | Loss,
    optimizer: optax.GradientTransformation | None = None,
    *,
    method: str = "manual",
    l2: float = 0.0,
    l1: float = 0.0,
    mesh: Mesh | None = None,
) -> TrainStep:
    """Builds ``step(state, x, y, sample_weight=None, *, key=None) -> (state, loss_value)``,
    jitted.

    ``key`` switches training mode on: a model with dropout needs one, a fresh key per step
    (e.g. ``jax.random.fold_in(key, int(state.step))``); ``l2`` and ``l1`` are the penalties of
    :func:`jaxmlp.value_and_grad`.

    The state argument is donated: pass a ``TrainState`` from ``TrainState.create`` (which
    copies the parameters) and use only the returned state afterwards. With ``mesh`` (see
    ``data_parallel_mesh``) the batch rows are split across its ``"data"`` axis (the batch
    must divide evenly) and the state is replicated: create it with ``TrainState.create(...,
    mesh=mesh)``.
    """
    lossf = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    if mesh is not None:
        check_mesh(mesh)
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    l2, l1 = check_nonnegative(l2, "l2"), check_nonnegative(l1, "l1")
    return _train_step(model, lossf, optimizer, method, l2, l1, mesh)


@functools.lru_cache(maxsize=64)
def _train_step(model, loss, optimizer, method, l2, l1, mesh) -> TrainStep:
    vg = value_and_grad(model, loss, method=method, l2=l2, l1=l1)

    def step(state, x, y, sample_weight=None, *, key=None):
        TRACE_COUNTS["step"] += 1
        if not isinstance(state, TrainState):
            raise TypeError(
                f"state: expected a jaxmlp.TrainState (TrainState.create), got {type(state).__name__}"
            )
        if mesh is not None:
            check_mesh(mesh, jnp.shape(x)[0] if jnp.ndim(x) == 2 else None, "mesh")
            x, y, sample_weight = lax.with_sharding_constraint(
                (x, y, sample_weight),
                (sharded(mesh), sharded(mesh), None if sample_weight is None else sharded(mesh)),
            )
        if model.dropout and key is None:
            raise ValueError(
                f"key: the model has dropout={model.dropout}; pass key= (a fresh key per step) "
                "to train it"
            )
        value, grads = vg(state.params, x, y, sample_weight, key=key)
        return apply_update(optimizer, state, grads), value

    out = None if mesh is None else replicated(mesh)
    return jax.jit(step, donate_argnums=0, out_shardings=out)
