"""Regression on scikit-learn's diabetes data: a small MLP beside linear least squares.

The lecture's regression recipe (its table "Regression MLP architecture"): one input unit per
feature, a ReLU hidden layer (eq. 10), one identity output unit (eq. 21: ``a^(L) = z^(L)``) and a
squared-error loss (eqs. 14-15; ``"mse"`` is eq. 15 divided by the batch size). The weights
are fitted by minibatch gradient steps through the hand-written backward pass (eqs. 18-64),
with Adam in place of eq. 17's plain gradient descent.

The data: 442 patients, 10 features, a disease-progression score one year later. A quarter
of the rows, chosen by a fixed key, is held out. Inputs and target are standardised with the
training rows' statistics only; predictions are mapped back to the original units before R^2 is
computed. The baseline is ordinary least squares with an intercept (``numpy.linalg.lstsq``).
The diabetes target is close to linear in these features, so the MLP should match the
baseline, not beat it by much: across split seeds both land between about 0.3 and 0.55, the
MLP sometimes a little above, sometimes a little below.

Run: ``python examples/02_regression.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import numpy as np
import optax

import jaxmlp
from jaxmlp.data import Standardizer, load_sklearn, train_test_split

EPOCHS = 200
SIZES = (10, 32, 1)
LEARNING_RATE = 1e-3
# One optimizer object for every call: fit caches its compiled program on it.
OPTIMIZER = optax.adam(LEARNING_RATE)
L2 = 1e-2  # a little weight decay: 331 training rows overfit a 385-parameter net quickly
BATCH_SIZE = 32


# %% Data: the diabetes rows, split by a fixed key
def load_data(key: jax.Array) -> dict[str, np.ndarray]:
    """The diabetes data split 75/25 by ``key``: ``x`` (n, 10), ``y`` (n, 1), original units."""
    x, y = load_sklearn("diabetes")
    x_train, y_train, x_test, y_test = train_test_split(key, x, y, test_fraction=0.25)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` for (n, 1) arrays."""
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


# %% Baseline: ordinary least squares with an intercept
def least_squares_r2(data: dict[str, np.ndarray]) -> float:
    """Test R^2 of the linear model ``y = [1, x] beta`` fitted by least squares on the training rows."""

    def design(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.ones((x.shape[0], 1), x.dtype), x], axis=1)

    beta, *_ = np.linalg.lstsq(design(data["x_train"]), data["y_train"], rcond=None)
    return r2(design(data["x_test"]) @ beta, data["y_test"])


# %% The MLP
def main(epochs: int | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Trains the regression MLP and returns its test R^2 beside the least-squares baseline.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (split, initialisation, shuffling).
        progress: show fit's progress bar.

    Returns:
        ``r2`` (MLP, test rows, original units), ``r2_linear`` (least squares), ``epochs``,
        ``final_loss`` (last epoch's training objective, standardised units), ``fit_seconds``
        (compilation included).
    """
    epochs = EPOCHS if epochs is None else epochs
    k_split, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    data = load_data(k_split)
    # Statistics of the training rows only: the test rows stay unseen until the end.
    x_std = Standardizer.fit(data["x_train"])
    y_std = Standardizer.fit(data["y_train"])

    model = jaxmlp.MLP(SIZES, activation="relu", output_activation="identity")
    start = time.perf_counter()
    result = jaxmlp.fit(
        model,
        model.init(k_init),
        x_std.transform(data["x_train"]),
        y_std.transform(data["y_train"]),
        loss="mse",
        key=k_fit,
        optimizer=OPTIMIZER,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        l2=L2,
        progress=progress,
    )
    jax.block_until_ready(result.params)
    fit_seconds = time.perf_counter() - start

    # Predict in standardised units, then undo the target scaling: R^2 in the original units.
    pred = y_std.inverse_transform(model.apply(result.params, x_std.transform(data["x_test"])))
    return {
        "r2": r2(np.asarray(pred), data["y_test"]),
        "r2_linear": least_squares_r2(data),
        "epochs": epochs,
        "final_loss": result.history["loss"][-1],
        "fit_seconds": fit_seconds,
    }


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    print(
        f"diabetes, 25% test split, {out['epochs']} epochs (fit took {out['fit_seconds']:.1f} s with compilation)"
    )
    print(f"  MLP {SIZES} test R^2:         {out['r2']:.3f}")
    print(f"  least squares test R^2:    {out['r2_linear']:.3f}")
