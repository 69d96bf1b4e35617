"""A physics-informed network: the heat equation solved by an MLP trained on its residual.

The 1-D heat equation ``u_t = ALPHA u_xx`` on ``x in [0, 1]``, ``t in [0, T]``, with
``u(x, 0) = sin(pi x)`` and ``u(0, t) = u(1, t) = 0``, has the solution
``u = exp(-ALPHA pi^2 t) sin(pi x)``. No solution values are used for training: the network
``u(x, t)`` is trained on an *objective* (``fit(..., loss=objective)``) that penalises the
equation's residual ``u_t - ALPHA u_xx`` at random collocation points, the initial condition at
``t = 0`` and the boundary condition at ``x = 0, 1``. The derivatives of the network with respect
to its inputs are taken inside the objective (here by ``jax.grad``, which runs the hand-written
backward; ``jax.jacfwd`` would run the hand-written tangent pass); with ``method="manual"`` the
gradient with respect to the parameters runs jaxmlp's hand-written passes too (``apply_manual``).
The script reports the error against the exact solution on a grid.

Model: tanh hidden layers (smooth second derivatives; ReLU's are zero), identity output, Adam.

Run: ``python examples/06_pinn.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp

ALPHA = 0.1
T_END = 1.0
EPOCHS = 2000
N_POINTS = 512
BATCH_SIZE = 128
SIZES = (2, 32, 32, 1)
OPTIMIZER = optax.adam(optax.exponential_decay(5e-3, transition_steps=2000, decay_rate=0.3))


def exact(x: jax.Array, t: jax.Array) -> jax.Array:
    """``exp(-ALPHA pi^2 t) sin(pi x)``."""
    return jnp.exp(-ALPHA * jnp.pi**2 * t) * jnp.sin(jnp.pi * x)


# %% The objective: one value per collocation point
def heat(apply, params, rows):
    """Residual, initial and boundary terms at each row's three points (``rows`` holds ``xt``
    ``(batch, 2)`` interior points, ``x0`` ``(batch,)`` initial points and ``tb`` ``(batch,)``
    boundary times)."""

    def u(x, t):
        return apply(params, jnp.stack([x, t])[None])[0, 0]

    x, t = rows["xt"][:, 0], rows["xt"][:, 1]
    u_t = jax.vmap(jax.grad(u, argnums=1))(x, t)
    u_xx = jax.vmap(jax.grad(jax.grad(u, argnums=0), argnums=0))(x, t)
    residual = u_t - ALPHA * u_xx
    initial = jax.vmap(u)(rows["x0"], jnp.zeros_like(rows["x0"])) - jnp.sin(jnp.pi * rows["x0"])
    left = jax.vmap(u)(jnp.zeros_like(rows["tb"]), rows["tb"])
    right = jax.vmap(u)(jnp.ones_like(rows["tb"]), rows["tb"])
    return residual**2 + initial**2 + left**2 + right**2


def collocation(key: jax.Array, n: int) -> dict[str, jax.Array]:
    """``n`` random interior points, initial points and boundary times."""
    k1, k2, k3 = jax.random.split(key, 3)
    xt = jax.random.uniform(k1, (n, 2)) * jnp.array([[1.0, T_END]])
    return {
        "xt": xt,
        "x0": jax.random.uniform(k2, (n,)),
        "tb": jax.random.uniform(k3, (n,)) * T_END,
    }


# %% Train and compare with the exact solution
def main(
    epochs: int | None = None, *, seed: int = 0, method: str = "manual", progress: bool = False
) -> dict:
    """Trains the PINN and measures its error against the exact solution.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key.
        method: ``"manual"`` (hand-written backward for the network) or ``"autodiff"``.
        progress: show the progress bar.

    Returns:
        ``max_error`` and ``rms_error`` on a 41 x 41 grid of ``(x, t)``; ``first_loss`` and
        ``final_loss`` (the objective); ``fit_seconds``; ``epochs``.
    """
    epochs = EPOCHS if epochs is None else epochs
    k_points, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    model = jaxmlp.MLP(SIZES, activation="tanh")
    start = time.perf_counter()
    result = jaxmlp.fit(
        model,
        model.init(k_init),
        collocation(k_points, N_POINTS),
        loss=heat,
        key=k_fit,
        optimizer=OPTIMIZER,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        method=method,
        progress=progress,
    )
    jax.block_until_ready(result.params)
    fit_seconds = time.perf_counter() - start
    gx, gt = np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, T_END, 41))
    grid = np.stack([gx, gt], axis=-1).astype(
        np.float32
    )  # (41, 41, 2): apply takes any leading axes
    pred = np.asarray(model.apply(result.params, grid.reshape(-1, 2))).reshape(41, 41)
    err = pred - np.asarray(exact(gx, gt))
    return {
        "max_error": float(np.max(np.abs(err))),
        "rms_error": float(np.sqrt(np.mean(err**2))),
        "first_loss": result.history["loss"][0],
        "final_loss": result.history["loss"][-1],
        "fit_seconds": fit_seconds,
        "epochs": epochs,
    }


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    print(
        f"heat equation PINN, {out['epochs']} epochs in {out['fit_seconds']:.1f} s: objective "
        f"{out['first_loss']:.3g} -> {out['final_loss']:.3g}; error against the exact solution: "
        f"max {out['max_error']:.4f}, rms {out['rms_error']:.4f}"
    )
