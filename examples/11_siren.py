"""A SIREN fitting a picture: sine activations against ReLU, with and without Fourier features.

The picture is drawn in code (64 x 64, nothing downloaded): concentric rings in one corner, a
checkerboard in another, a brightness gradient elsewhere. Each network maps a pixel's coordinates
``(x, y)`` in ``[-1, 1]^2`` to its brightness; the fit is plain regression (``fit(...,
loss="mse")``) over the 4096 pixels, and the score is the peak signal-to-noise ratio (PSNR, dB)
of the reconstruction on the whole picture.

Three networks with the same hidden layers (3 x 64), optimizer, epochs and keys:

- **SIREN**: ``MLP(..., activation="sin", initializer="siren")``: ``sin`` everywhere, the first
  layer's weights scaled by omega0 = 30 so the first layer sees high frequencies from the start,
  the later layers' weights drawn so every pre-activation stays about standard normal;
- **ReLU**: the same widths with ReLU and He initialisation: biased towards smooth,
  low-frequency functions, it misses the rings and the checkerboard;
- **ReLU + Fourier**: ReLU on random Fourier features ``[sin(2 pi x B), cos(2 pi x B)]``
  (``features=jaxmlp.layers.FourierFeatures(n=32, scale=3, seed=0)``: ``B`` is fixed by the
  seed, part of the description, not trained).

With matplotlib installed, ``out=`` a folder saves the target and the three reconstructions.

Run: ``python examples/11_siren.py`` (pictures in ``demo_out/``).
"""

# %% Imports
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
from jaxmlp.layers import FourierFeatures

SIDE = 64
EPOCHS = 150
BATCH_SIZE = 256
HIDDEN = (64, 64, 64)
OPTIMIZER = optax.adam(1e-3)
VARIANTS = {
    "siren": {"activation": "sin", "initializer": "siren"},
    "relu": {"activation": "relu"},
    "relu+fourier": {"activation": "relu", "features": FourierFeatures(n=32, scale=3.0, seed=0)},
}


# %% The picture and its pixels
def coordinates() -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres ``(x, y)``, each ``(SIDE, SIDE)`` in ``(-1, 1)``."""
    y, x = (np.mgrid[0:SIDE, 0:SIDE] + 0.5) / SIDE * 2 - 1
    return x, y


def picture() -> np.ndarray:
    """The target, ``(SIDE, SIDE)`` float32 in ``[0, 1]``: rings, a checkerboard, a gradient."""
    x, y = coordinates()
    rings = 0.5 + 0.4 * np.cos(2 * np.pi * 4 * np.hypot(x + 0.4, y + 0.4))
    checker = (np.floor((x + 1) * 4) + np.floor((y + 1) * 4)) % 2
    gradient = 0.25 + 0.5 * (x + 1) / 2 * (y + 1) / 2
    img = np.where((x > 0.1) & (y > 0.1), 0.2 + 0.6 * checker, gradient)
    return np.where(x + y < -0.2, rings, img).astype(np.float32)


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for values in ``[0, 1]``."""
    return float(10 * np.log10(1.0 / np.mean((np.clip(pred, 0, 1) - target) ** 2)))


def draw(images: dict[str, np.ndarray], scores: dict[str, float], path: Path) -> Path | None:
    """The target and the reconstructions side by side; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.3))
    for ax, (name, img) in zip(axes, images.items(), strict=True):
        ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name if name not in scores else f"{name}: {scores[name]:.1f} dB")
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# %% Fit the picture with each network
def main(
    epochs: int | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
    out: str | Path | None = None,
) -> dict:
    """Fits the picture with the three networks.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (initialisation, pixel order).
        progress: show the progress bars.
        out: a folder for ``11_siren.png`` (needs matplotlib); ``None``: no picture.

    Returns:
        ``psnr``: variant -> PSNR in dB; ``params``: variant -> parameter count;
        ``fit_seconds``: variant -> seconds; ``epochs``; ``picture`` (its path, or ``None``).
    """
    epochs = EPOCHS if epochs is None else epochs
    k_init, k_fit = jax.random.split(jax.random.key(seed))
    img = picture()
    x, y = coordinates()
    coords = jnp.asarray(np.stack([x.ravel(), y.ravel()], axis=1), jnp.float32)
    values = jnp.asarray(img.reshape(-1, 1))
    result: dict = {"psnr": {}, "params": {}, "fit_seconds": {}, "epochs": epochs}
    images = {"target": img}
    for name, options in VARIANTS.items():
        model = jaxmlp.MLP((2, *HIDDEN, 1), **options)
        start = time.perf_counter()
        # The same keys for every variant (clone: reused on purpose).
        fitted = jaxmlp.fit(
            model, model.init(jax.random.clone(k_init)), coords, values, loss="mse",
            key=jax.random.clone(k_fit), optimizer=OPTIMIZER, epochs=epochs,
            batch_size=BATCH_SIZE, progress=progress,
        )  # fmt: skip
        jax.block_until_ready(fitted.params)
        result["fit_seconds"][name] = time.perf_counter() - start
        images[name] = np.asarray(model.apply(fitted.params, coords)).reshape(img.shape)
        result["psnr"][name] = psnr(images[name], img)
        result["params"][name] = model.count_params()
    picture_path = None if out is None else draw(images, result["psnr"], Path(out) / "11_siren.png")
    result["picture"] = None if picture_path is None else str(picture_path)
    return result


# %% Run
if __name__ == "__main__":
    out = main(progress=True, out="demo_out")
    print(f"{SIDE}x{SIDE} picture, hidden {HIDDEN}, Adam, {out['epochs']} epochs")
    for name, value in out["psnr"].items():
        print(
            f"  {name:13s} PSNR {value:5.2f} dB ({out['params'][name]} parameters, "
            f"{out['fit_seconds'][name]:.1f} s)"
        )
    if out["picture"]:
        print(f"  picture: {out['picture']}")
