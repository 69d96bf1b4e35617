"""The fused kernels on a neural field: the same training with ``method="fused"`` and ``"manual"``.

A colour picture drawn procedurally (3 channels: rings, a square, a gradient) is fitted pixel by
pixel by the issue's neural-field network: 32 random Fourier features of the coordinates, four
hidden ReLU layers of width 64, 3 outputs (``MLP((32, 64, 64, 64, 64, 3))``), mean squared
error, Adam. Both runs start from the same parameters and see the same minibatches, so their
loss curves agree to float32 rounding: the fused kernels compute the same gradients as the
hand-written XLA backward, in one kernel launch per step.

On a CPU the fused kernels run through Pallas's interpreter (a correctness tool, slower than
XLA); on a GPU they are compiled by Triton. The script reports both runs' final loss and time.

Run: ``python examples/12_fused_neural_field.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import numpy as np
import optax

import jaxmlp

SIDE = 32
EPOCHS = 40
BATCH_SIZE = 256
FREQUENCIES = 16  # the network sees 2 * FREQUENCIES = 32 inputs
SCALE = 4.0  # their standard deviation, in cycles per picture width
MODEL = jaxmlp.MLP((2 * FREQUENCIES, 64, 64, 64, 64, 3), activation="relu")


def picture(side: int = SIDE) -> np.ndarray:
    """``(side, side, 3)`` colours in ``[0, 1]``."""
    y, x = np.mgrid[0:side, 0:side] / side
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * 4 * np.hypot(x - 0.3, y - 0.3))
    square = ((np.abs(x - 0.7) < 0.15) & (np.abs(y - 0.65) < 0.15)).astype(float)
    return np.stack([rings, square, x * y], axis=-1).astype(np.float32)


def rows(img: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier features of each pixel's coordinates, and its colour."""
    side = img.shape[0]
    y, x = np.mgrid[0:side, 0:side] / side
    coords = np.stack([x.ravel(), y.ravel()], axis=1)
    b = np.random.default_rng(seed).normal(0.0, SCALE, (2, FREQUENCIES))
    angles = 2 * np.pi * coords @ b
    features = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
    return features.astype(np.float32), img.reshape(-1, 3)


# %% Train with both methods
def main(epochs: int | None = None, side: int = SIDE, seed: int = 0) -> dict:
    """Trains the neural field with ``method="fused"`` and ``method="manual"``.

    Returns:
        ``final_loss`` (per method), ``seconds`` (per method, compilation included),
        ``max_curve_diff`` (the largest relative difference between the two loss curves),
        ``interpreted`` (whether the fused kernels ran through Pallas's interpreter).
    """
    epochs = EPOCHS if epochs is None else epochs
    x, y = rows(picture(side), seed)
    params = MODEL.init(jax.random.key(seed))
    curves, seconds = {}, {}
    for method in ("fused", "manual"):
        t = time.perf_counter()
        result = jaxmlp.fit(MODEL, params, x, y, loss="mse", method=method, epochs=epochs,
                            batch_size=BATCH_SIZE, optimizer=optax.adam(2e-3),
                            key=jax.random.key(seed + 1), progress=False)  # fmt: skip
        seconds[method] = time.perf_counter() - t
        curves[method] = np.asarray(result.history["loss"])
    diff = np.max(np.abs(curves["fused"] - curves["manual"]) / np.abs(curves["manual"]))
    return {
        "final_loss": {m: float(c[-1]) for m, c in curves.items()},
        "first_loss": float(curves["manual"][0]),
        "seconds": seconds,
        "max_curve_diff": float(diff),
        "interpreted": jax.default_backend() == "cpu",
    }


if __name__ == "__main__":
    out = main()
    print(f"loss: first epoch {out['first_loss']:.4f}, last epoch fused "
          f"{out['final_loss']['fused']:.5f}, manual {out['final_loss']['manual']:.5f} "
          f"(curves differ by at most {out['max_curve_diff']:.1e} relative)")  # fmt: skip
    where = "interpreted on the CPU" if out["interpreted"] else "compiled for the GPU"
    print(f"time: fused {out['seconds']['fused']:.1f} s ({where}), "
          f"manual {out['seconds']['manual']:.1f} s")  # fmt: skip
