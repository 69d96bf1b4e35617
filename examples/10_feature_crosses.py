"""The TensorFlow Playground's feature crosses: circle and spiral with and without them.

``MLP(..., features="playground")`` feeds the network the Playground's seven inputs
``x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2)`` computed from the raw two (``sizes[0]`` stays 2;
the map has no parameters, and gradients with respect to the raw input flow through it).

- **circle** (a disc inside a ring): a linear model, no hidden layer (``MLP((2, 2))``: softmax
  of an affine map), cannot separate a disc from a ring with a line; on the crosses ``x1^2 +
  x2^2`` is one of its weighted sums, and the same linear model separates them.
- **spiral** (two interleaved arms): a small 2-8-8-2 tanh network on the raw inputs against the
  same network on the crosses.

Same optimizer, epochs, batch size and keys with and without the features; accuracies on 1000
fresh test points drawn with the same noise.

Run: ``python examples/10_feature_crosses.py``.
"""

# %% Imports
from __future__ import annotations

import time

import jax
import optax

import jaxmlp
from jaxmlp.data import circle, spiral

EPOCHS = 200
NOISE = 0.05
BATCH_SIZE = 32
OPTIMIZER = optax.adam(0.01)
# data set -> (generator, training rows, sizes)
TASKS = {
    "circle": (circle, 200, (2, 2)),
    "spiral": (spiral, 400, (2, 8, 8, 2)),
}
FEATURES = {"raw": None, "playground": "playground"}


# %% Train each task with and without the feature map
def main(epochs: int | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Trains every (task, features) pair and reports accuracies.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (data, initialisation, data order).
        progress: show the progress bars.

    Returns:
        per task (``circle``, ``spiral``), per input (``raw``, ``playground``): ``train`` and
        ``test`` accuracy, ``params``, ``fit_seconds``; and ``epochs``.
    """
    epochs = EPOCHS if epochs is None else epochs
    out: dict = {"epochs": epochs}
    task_keys = jax.random.split(jax.random.key(seed), len(TASKS))
    for (task, (generate, n, sizes)), k_task in zip(TASKS.items(), task_keys, strict=True):
        k_train, k_test, k_init, k_fit = jax.random.split(k_task, 4)
        x, y = generate(k_train, n, noise=NOISE)
        x_test, y_test = generate(k_test, 1000, noise=NOISE)
        out[task] = {}
        for name, features in FEATURES.items():
            model = jaxmlp.MLP(
                sizes, activation="tanh", output_activation="softmax", features=features
            )
            start = time.perf_counter()
            # The same keys with and without the features (clone: reused on purpose).
            result = jaxmlp.fit(
                model, model.init(jax.random.clone(k_init)), x, y,
                loss="softmax_cross_entropy", key=jax.random.clone(k_fit), optimizer=OPTIMIZER,
                epochs=epochs, batch_size=BATCH_SIZE, progress=progress,
            )  # fmt: skip
            jax.block_until_ready(result.params)
            seconds = time.perf_counter() - start
            out[task][name] = {
                "train": float(jaxmlp.accuracy(model.apply(result.params, x), y)),
                "test": float(jaxmlp.accuracy(model.apply(result.params, x_test), y_test)),
                "params": model.count_params(),
                "fit_seconds": seconds,
            }
    return out


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    print(f"noise {NOISE}, {out['epochs']} epochs, Adam, batch {BATCH_SIZE}")
    for task, (_, n, sizes) in TASKS.items():
        for name in FEATURES:
            r = out[task][name]
            print(
                f"  {task:6s} {sizes} on {name:10s}: train accuracy {r['train']:.3f}, "
                f"test {r['test']:.3f} ({n} training rows, {r['params']} parameters, "
                f"{r['fit_seconds']:.1f} s)"
            )
