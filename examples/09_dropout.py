"""Dropout on a small noisy data set: 60 training points, a network far too wide for them.

The target is ``y = sin(2 x1) + x2 x3 + noise`` (noise standard deviation 0.5) on five standard
normal inputs, of which two are irrelevant; 60 rows train, 2000 fresh rows test. A 5-256-256-1
ReLU network (67 000 parameters) can memorise 60 noisy rows; with dropout (``MLP(...,
dropout=0.5)``: inverted dropout on both hidden layers, active in training only) it cannot rely
on any one unit and memorises less.

Each variant is an ensemble of 8 members trained in one program by ``fit_ensemble`` (each member
its own initialisation and, with dropout, its own masks: ``fold_in(root, member)``, then one fresh
key per step). The same seed, optimizer, epochs and full-batch steps for both. The script reports
the members' mean training and test loss (both at inference, no dropout) and the gap between them.

Run: ``python examples/09_dropout.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp

EPOCHS = 500
N_TRAIN, N_TEST = 60, 2000
NOISE = 0.5
SIZES = (5, 256, 256, 1)
RATES = (0.0, 0.5)
MEMBERS = 8
OPTIMIZER = optax.adam(3e-3)


# %% Data
def make_data(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` rows: ``x`` (n, 5) standard normal, ``y = sin(2 x1) + x2 x3 + noise`` (n, 1)."""
    k_x, k_noise = jax.random.split(key)
    x = jax.random.normal(k_x, (n, 5))
    clean = jnp.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    return x, clean + NOISE * jax.random.normal(k_noise, (n, 1))


def member_mse(model: jaxmlp.MLP, params, x: jax.Array, y: jax.Array) -> np.ndarray:
    """Each member's mean squared error at inference (no key: no dropout), ``(members,)``."""
    return np.asarray(jax.vmap(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params))


# %% Train an ensemble per dropout rate
def main(
    epochs: int | None = None,
    *,
    seed: int = 0,
    members: int = MEMBERS,
    progress: bool = False,
) -> dict:
    """Trains ``members`` networks per dropout rate and measures their train/test gap.

    Args:
        epochs: training epochs, one full-batch step each (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (data, initialisation, masks).
        members: the ensemble size per rate.
        progress: show the progress bars.

    Returns:
        per rate (``"p=0"``, ``"p=0.5"``): ``train`` and ``test`` (the members' mean MSE),
        ``gap`` (the mean of test - train per member), ``gap_per_member``, ``fit_seconds``;
        and ``epochs``, ``members``, ``noise_floor`` (the noise variance: the best test MSE
        any model can reach).
    """
    epochs = EPOCHS if epochs is None else epochs
    k_train, k_test, k_fit = jax.random.split(jax.random.key(seed), 3)
    x, y = make_data(k_train, N_TRAIN)
    x_test, y_test = make_data(k_test, N_TEST)
    out: dict = {"epochs": epochs, "members": members, "noise_floor": NOISE**2}
    for rate in RATES:
        model = jaxmlp.MLP(SIZES, activation="relu", dropout=rate)
        start = time.perf_counter()
        # The same key for both rates: the same initialisations (masks come on top).
        result = jaxmlp.fit_ensemble(
            model, x, y, num_models=members, loss="mse", key=jax.random.clone(k_fit),
            optimizer=OPTIMIZER, epochs=epochs, batch_size=N_TRAIN, progress=progress,
        )  # fmt: skip
        jax.block_until_ready(result.params)
        seconds = time.perf_counter() - start
        train = member_mse(model, result.params, x, y)
        test = member_mse(model, result.params, x_test, y_test)
        out[f"p={rate:g}"] = {
            "train": float(train.mean()),
            "test": float(test.mean()),
            "gap": float((test - train).mean()),
            "gap_per_member": (test - train).tolist(),
            "fit_seconds": seconds,
        }
    return out


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    print(
        f"{N_TRAIN} training rows (noise variance {out['noise_floor']:.2f}), {SIZES}, "
        f"{out['members']} members per rate, {out['epochs']} full-batch epochs"
    )
    for rate in RATES:
        r = out[f"p={rate:g}"]
        spread = np.std(r["gap_per_member"])
        print(
            f"  dropout {rate:3g}: train MSE {r['train']:.4f}  test MSE {r['test']:.3f}  "
            f"gap {r['gap']:.3f} (+- {spread:.3f} over members)  {r['fit_seconds']:.1f} s"
        )
