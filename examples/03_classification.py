"""Classification of scikit-learn's 8x8 handwritten digits with a softmax MLP.

The lecture's classification recipe (its table "Classification MLP architecture"): one input
unit per pixel (64), a ReLU hidden layer (eq. 10), one output unit per class (10) with the
softmax of eq. 65, and the cross entropy of eq. 16 as the loss. The loss reads the logits
``z^(L)``; the backward pass then starts from the fused gradient ``softmax(z^(L)) - y`` (per
example) instead of multiplying the softmax Jacobian by ``dL/da^(L)``, which is the same
number computed more stably.

The data: 1797 images of 8x8 pixels (values 0..16), split 75/25 by a fixed key; pixels are
standardised with the training rows' statistics (always-blank pixels keep scale 1).

``fit`` runs each group of epochs as one compiled program. The first call pays for tracing and
XLA compilation; a second, identical call reuses the cached program, so timing both separates
the compile cost from the training itself.

Run: ``python examples/03_classification.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import jaxmlp
from jaxmlp.data import Standardizer, load_sklearn, train_test_split

EPOCHS = 30
SIZES = (64, 64, 10)
LEARNING_RATE = 3e-3
# One optimizer object for every call: fit caches its compiled program on it (a new
# object would be a new program).
OPTIMIZER = optax.adam(LEARNING_RATE)
BATCH_SIZE = 32


# %% Data: split by a fixed key, standardise with the training statistics
def load_data(key: jax.Array) -> dict[str, jax.Array]:
    """Digits split 75/25 by ``key``: ``x`` (n, 64) standardised, ``y`` (n,) int32 labels."""
    x, y = load_sklearn("digits")
    x_train, y_train, x_test, y_test = train_test_split(key, x, y, test_fraction=0.25)
    # Training statistics only; always-blank pixels get scale 1 and map to exactly 0.
    std = Standardizer.fit(x_train)
    return {
        "x_train": std.transform(x_train),
        "y_train": jnp.asarray(y_train),
        "x_test": std.transform(x_test),
        "y_test": jnp.asarray(y_test),
    }


# %% Train (twice: the first call compiles, the second reuses the compiled program)
def main(epochs: int | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Trains the digit classifier and returns its test accuracy and fit times.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (split, initialisation, shuffling).
        progress: show fit's progress bar.

    Returns:
        ``accuracy`` (test rows), ``train_accuracy``, ``epochs``, ``first_fit_seconds``
        (trace, compile, run), ``fit_seconds`` (the same fit again: run only),
        ``compile_seconds`` (their difference: tracing and XLA compilation, plus the first
        run of the small eager input checks), ``n_train``, ``n_test``.
    """
    epochs = EPOCHS if epochs is None else epochs
    k_split, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    data = load_data(k_split)
    model = jaxmlp.MLP(SIZES, activation="relu", output_activation="softmax")
    params = model.init(k_init)

    def train() -> tuple[jaxmlp.FitResult, float]:
        start = time.perf_counter()
        # fit never consumes the caller's key or params (it donates copies), so both calls
        # start from the same state and give bit-identical results on CPU.
        result = jaxmlp.fit(
            model,
            params,
            data["x_train"],
            data["y_train"],
            loss="softmax_cross_entropy",
            key=k_fit,
            optimizer=OPTIMIZER,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            progress=progress,
        )
        jax.block_until_ready(result.params)
        return result, time.perf_counter() - start

    _, first_seconds = train()
    result, seconds = train()

    def accuracy(x: jax.Array, y: jax.Array) -> float:
        return float(jaxmlp.accuracy(model.apply(result.params, x), y))

    return {
        "accuracy": accuracy(data["x_test"], data["y_test"]),
        "train_accuracy": accuracy(data["x_train"], data["y_train"]),
        "epochs": epochs,
        "first_fit_seconds": first_seconds,
        "fit_seconds": seconds,
        "compile_seconds": max(first_seconds - seconds, 0.0),
        "n_train": int(data["y_train"].shape[0]),
        "n_test": int(data["y_test"].shape[0]),
    }


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    print(
        f"digits 8x8: {out['n_train']} training / {out['n_test']} test images, {out['epochs']} epochs"
    )
    print(f"  test accuracy:  {out['accuracy']:.4f} (training {out['train_accuracy']:.4f})")
    print(f"  fit time:       {out['fit_seconds']:.2f} s (second, identical call: run only)")
    print(
        f"  first call:     {out['first_fit_seconds']:.2f} s (about {out['compile_seconds']:.2f} s compiling)"
    )
