"""An ensemble of 32 MLPs trained at once, and where its members disagree.

``fit_ensemble`` trains K networks in one compiled program: the per-member epoch that ``fit``
uses is ``jax.vmap``-ed over a leading member axis of the parameters, so 32 models cost one
XLA program of batched matrix products rather than 32 Python loops. Each member starts from
its own initial parameters and sees the data in its own order (and, with ``bootstrap=True``,
its own resample of the rows).

The toy problem: ``y = sin(x) + noise`` with training inputs in ``[-3, -1]`` and ``[1, 3]``,
so nothing is observed in the gap ``(-1, 1)`` or beyond ``|x| = 3``. Where there is data the
members are pulled to the same curve; in the gap and outside the range nothing constrains
them, and their predictions fan out. The standard deviation across members (from
``predict_ensemble``) is a cheap signal of where a single network's prediction should not be
trusted; the script prints it per region beside the ensemble mean's error.

Model: ReLU hidden layers, identity output, MSE (the lecture's regression recipe, eqs. 10,
15, 21), Adam.

Run: ``python examples/05_ensemble.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp

EPOCHS = 200
NUM_MODELS = 32
SIZES = (1, 32, 32, 1)
N_TRAIN = 128
NOISE = 0.1
BATCH_SIZE = 32
# One optimizer object for every call: fit_ensemble caches its compiled program on it.
OPTIMIZER = optax.adam(3e-3)
# Where the spread is measured: x on a grid over [-4.5, 4.5].
REGIONS = {
    "data": lambda g: (np.abs(g) >= 1) & (np.abs(g) <= 3),
    "gap": lambda g: np.abs(g) < 1,
    "outside": lambda g: np.abs(g) > 3,
}


# %% Data: a noisy sine with a gap
def make_data(key: jax.Array, n: int = N_TRAIN) -> tuple[jax.Array, jax.Array]:
    """``n`` points with ``x`` (n, 1) uniform on ``[-3, -1] U [1, 3]``, ``y = sin(x) + noise`` (n, 1)."""
    k_x, k_noise = jax.random.split(key)
    u = jax.random.uniform(k_x, (n, 1), minval=0.0, maxval=4.0)
    # [0, 2) -> [-3, -1), [2, 4) -> [1, 3): two equal pieces with the gap between them.
    x = jnp.where(u < 2.0, u - 3.0, u - 1.0)
    return x, jnp.sin(x) + NOISE * jax.random.normal(k_noise, (n, 1))


# %% Train all members at once, then look at their spread
def main(
    epochs: int | None = None,
    *,
    seed: int = 0,
    num_models: int = NUM_MODELS,
    bootstrap: bool = False,
    progress: bool = False,
) -> dict:
    """Trains the ensemble and measures the members' spread per region.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (data, initialisation, data orders, bootstrap).
        num_models: K, the number of members.
        bootstrap: each member trains on its own bootstrap resample.
        progress: show the progress bar.

    Returns:
        ``spread``: region -> mean standard deviation of the members' predictions;
        ``error``: region -> mean ``|ensemble mean - sin(x)|``; ``final_loss`` (mean over
        members); ``fit_seconds``; ``epochs``; ``num_models``.
    """
    epochs = EPOCHS if epochs is None else epochs
    k_data, k_fit = jax.random.split(jax.random.key(seed))
    x, y = make_data(k_data)
    model = jaxmlp.MLP(SIZES, activation="relu", output_activation="identity")
    start = time.perf_counter()
    result = jaxmlp.fit_ensemble(
        model,
        x,
        y,
        num_models=num_models,
        loss="mse",
        key=k_fit,
        optimizer=OPTIMIZER,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        bootstrap=bootstrap,
        progress=progress,
    )
    jax.block_until_ready(result.params)
    fit_seconds = time.perf_counter() - start

    grid = np.linspace(-4.5, 4.5, 181, dtype=np.float32)
    mean, var = jaxmlp.predict_ensemble(model, result.params, grid[:, None])
    std, err = np.sqrt(np.asarray(var[:, 0])), np.abs(np.asarray(mean[:, 0]) - np.sin(grid))
    masks = {name: region(grid) for name, region in REGIONS.items()}
    return {
        "spread": {name: float(std[m].mean()) for name, m in masks.items()},
        "error": {name: float(err[m].mean()) for name, m in masks.items()},
        "final_loss": float(np.mean(result.history["loss"][-1])),
        "fit_seconds": fit_seconds,
        "epochs": epochs,
        "num_models": num_models,
    }


# %% Run
if __name__ == "__main__":
    for boot in (False, True):
        out = main(bootstrap=boot, progress=True)
        print(
            f"{out['num_models']} members, {out['epochs']} epochs, bootstrap={boot} "
            f"(fit took {out['fit_seconds']:.1f} s, mean final loss {out['final_loss']:.4f})"
        )
        for name in REGIONS:
            print(
                f"  {name:8s} spread (std) {out['spread'][name]:.3f}   "
                f"|mean - sin| {out['error'][name]:.3f}"
            )
