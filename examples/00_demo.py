"""The demo behind `make demo`: the lecture's 2-layer regression network, trained by hand-written backprop.

The network is the lecture's 3-4-2 MLP (3 inputs, 4 sigmoid hidden units, 2 linear outputs: 26 parameters).
We fit it to a small synthetic regression problem with plain gradient descent (eq. 17, full batch),
computing every gradient with the manual backward pass (eqs. 18-64), print the loss going down, and
finish with the per-layer table comparing the manual gradient with jax.grad and finite differences.
"""

# %%
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import jaxmlp

STEPS = 400
LEARNING_RATE = 0.5


def make_data(key: jax.Array, n: int = 128) -> tuple[jax.Array, jax.Array]:
    """x ~ U(-1, 1)^3; two smooth targets with a little noise."""
    kx, kn = jax.random.split(key)
    x = jax.random.uniform(kx, (n, 3), minval=-1.0, maxval=1.0)
    y = jnp.stack([jnp.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2], 0.5 * x[:, 0] - x[:, 1] ** 2], axis=1)
    return x, y + 0.05 * jax.random.normal(kn, y.shape)


def main(epochs: int | None = None, *, seed: int = 0) -> dict:
    """Trains the 3-4-2 network by full-batch gradient descent and checks its gradients.

    Args:
        epochs: gradient-descent steps (default ``STEPS``); each step sees the whole batch, so a
            step is an epoch. Tests pass fewer.
        seed: the root of the data and initialisation keys.

    Returns:
        ``epochs``; ``loss_first`` and ``loss_final`` (the MSE before the first step and after
        the last); ``gradcheck_ok`` (the verdict) and ``report`` (the ``GradCheckReport``) at the
        trained parameters.
    """
    epochs = STEPS if epochs is None else epochs
    # %% The model: sizes count the input, so (3, 4, 2) is the lecture's 2-layer network.
    model = jaxmlp.MLP((3, 4, 2), activation="sigmoid", output_activation="identity")
    print(model.summary())
    k_data, k_init = jax.random.split(jax.random.key(seed))
    x, y = make_data(k_data)
    params = model.init(k_init)

    # %% Gradient descent, eq. 17: w <- w - eta dL/dw, with the manual backward pass.
    optimizer = optax.sgd(LEARNING_RATE)
    step = jaxmlp.make_train_step(model, "mse", optimizer, method="manual")
    state = jaxmlp.TrainState.create(params, optimizer)
    print(f"\nfull-batch gradient descent, eta = {LEARNING_RATE}, MSE loss, manual gradients")
    mse = jax.jit(jaxmlp.loss_fn(model, "mse"))
    loss_first = float(mse(params, x, y))
    for i in range(epochs):
        state, loss = step(state, x, y)  # the loss at the parameters before this step's update
        if i % 50 == 0:
            print(f"  step {i:4d}  loss {float(loss):.5f}")
    loss_final = float(mse(state.params, x, y))
    print(f"  step {epochs:4d}  loss {loss_final:.5f}")

    # %% Manual vs automatic gradients at the trained parameters, layer by layer.
    report = jaxmlp.gradcheck(model, state.params, x, y, "mse")
    print()
    print(report)
    return {
        "epochs": epochs,
        "loss_first": loss_first,
        "loss_final": loss_final,
        "gradcheck_ok": report.ok,
        "report": report,
    }


if __name__ == "__main__":
    raise SystemExit(0 if main()["gradcheck_ok"] else 1)
