"""A neural field: an MLP that *is* an image, with random Fourier features.

A neural field maps coordinates to values: here ``(x, y) -> brightness`` of a 64 x 64 picture
drawn procedurally (rings and a square, so nothing is downloaded). Plain coordinates make an MLP
learn only the picture's blurry outline (networks are biased towards low frequencies); mapping
them first through random Fourier features ``[cos(2 pi B p), sin(2 pi B p)]`` with a fixed random
``B`` lets it learn the sharp edges. Both variants train on the same objective
(``fit(..., loss=objective)`` over rows of coordinates and pixel values) and the script reports
each one's peak signal-to-noise ratio (PSNR) on the full picture.

Model: ReLU hidden layers, identity output, Adam; the features are part of the objective, so the
hand-written backward (``method="manual"``) covers the network and JAX the feature map.

Run: ``python examples/07_neural_field.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp

SIDE = 64
EPOCHS = 300
BATCH_SIZE = 256
HIDDEN = (128, 128)
FEATURES = 64  # random frequencies; the network sees 2 * FEATURES inputs
SCALE = 6.0  # their standard deviation, in cycles per picture width
OPTIMIZER = optax.adam(2e-3)


def picture() -> np.ndarray:
    """The target: ``(SIDE, SIDE)`` brightness in ``[0, 1]``: rings around a corner, and a square."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * 6 * np.hypot(x - 0.3, y - 0.3))
    square = (np.abs(x - 0.7) < 0.15) & (np.abs(y - 0.65) < 0.15)
    return np.where(square, 1.0, 0.8 * rings).astype(np.float32)


def rows_of(img: np.ndarray) -> dict[str, jax.Array]:
    """One row per pixel: its coordinates in ``[0, 1)^2`` and its value."""
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] / img.shape[0]
    coords = np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)
    return {"p": jnp.asarray(coords), "v": jnp.asarray(img.reshape(-1, 1))}


def fourier(b: jax.Array | None):
    """The input map: identity for ``b`` None, else random Fourier features."""
    if b is None:
        return lambda p: p
    return lambda p: jnp.concatenate(
        [jnp.cos(2 * jnp.pi * p @ b), jnp.sin(2 * jnp.pi * p @ b)], axis=-1
    )


def squared_error(features):
    """The objective: each pixel's squared error."""

    def objective(apply, params, rows):
        return jnp.sum((apply(params, features(rows["p"])) - rows["v"]) ** 2, axis=-1)

    return objective


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for values in ``[0, 1]``."""
    return float(10 * np.log10(1.0 / np.mean((np.clip(pred, 0, 1) - target) ** 2)))


# %% Train one field per input map
def main(epochs: int | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Fits the picture with plain coordinates and with Fourier features.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key.
        progress: show the progress bars.

    Returns:
        ``psnr``: variant -> PSNR in dB on the whole picture; ``fit_seconds``: variant -> seconds;
        ``epochs``.
    """
    epochs = EPOCHS if epochs is None else epochs
    k_b, *keys = jax.random.split(jax.random.key(seed), 5)
    img = picture()
    rows = rows_of(img)
    b = SCALE * jax.random.normal(k_b, (2, FEATURES))
    out: dict = {"psnr": {}, "fit_seconds": {}, "epochs": epochs}
    variants = (("coordinates", None, keys[:2]), ("fourier", b, keys[2:]))
    for name, bb, (k_init, k_fit) in variants:
        features = fourier(bb)
        n_in = 2 if bb is None else 2 * FEATURES
        model = jaxmlp.MLP((n_in, *HIDDEN, 1), activation="relu")
        start = time.perf_counter()
        result = jaxmlp.fit(
            model, model.init(k_init), rows, loss=squared_error(features), key=k_fit,
            optimizer=OPTIMIZER, epochs=epochs, batch_size=BATCH_SIZE, progress=progress,
        )  # fmt: skip
        jax.block_until_ready(result.params)
        out["fit_seconds"][name] = time.perf_counter() - start
        pred = np.asarray(model.apply(result.params, features(rows["p"]))).reshape(img.shape)
        out["psnr"][name] = psnr(pred, img)
    return out


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    for name, value in out["psnr"].items():
        print(
            f"{name:12s} PSNR {value:5.1f} dB ({out['epochs']} epochs, {out['fit_seconds'][name]:.1f} s)"
        )
