"""Layer normalisation and residual connections on a deep network: digits, 16 hidden layers.

Sixteen tanh layers of 64 units between the 64 pixels and the 10 classes, trained by plain
gradient descent (``optax.sgd``), twice from the same seed with the same optimizer, epochs and
data order:

- **plain**: the lecture's stack, ``a[l] = tanh(z[l])``;
- **residual + norm**: ``MLP(..., norm="layernorm", residual=True)``: every hidden layer is
  ``a[l] = a[l-1] + tanh(layernorm(z[l]))`` (the first one, 64 pixels to 64 units, carries a
  skip too: its widths are equal).

Plain gradient descent is where depth hurts: the signal that reaches the early layers is a product
of sixteen Jacobians. Layer norm keeps every pre-activation at unit scale, and the skips add an
identity path to each of those Jacobians, so the deep network learns as fast as a shallow one.
The script prints the two training curves (the epoch's mean loss) and each network's test
accuracy, and draws both curves when matplotlib is installed (``out=`` a folder).

Run: ``python examples/08_deep_residual_norm.py`` (pictures in ``demo_out/``).
"""

# %% Imports
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import jaxmlp
from jaxmlp.data import Standardizer, load_sklearn, train_test_split

EPOCHS = 30
DEPTH = 16  # hidden layers
WIDTH = 64
BATCH_SIZE = 64
# One optimizer object for both variants (fit caches its compiled program on it).
OPTIMIZER = optax.sgd(0.05)
VARIANTS = {
    "plain": {},
    "residual+norm": {"norm": "layernorm", "residual": True},
}


# %% Data: digits split 75/25, standardised with the training statistics
def load_data(key: jax.Array) -> dict[str, jax.Array]:
    """Digits split by ``key``: ``x`` (n, 64) standardised, ``y`` (n,) int32 labels."""
    x, y = load_sklearn("digits")
    x_train, y_train, x_test, y_test = train_test_split(key, x, y, test_fraction=0.25)
    std = Standardizer.fit(x_train)
    return {
        "x_train": std.transform(x_train),
        "y_train": jnp.asarray(y_train),
        "x_test": std.transform(x_test),
        "y_test": jnp.asarray(y_test),
    }


def build(variant: str) -> jaxmlp.MLP:
    """The deep network of ``variant`` (a key of ``VARIANTS``)."""
    sizes = (64, *[WIDTH] * DEPTH, 10)
    return jaxmlp.MLP(sizes, activation="tanh", output_activation="softmax", **VARIANTS[variant])


def epochs_to_reach(curve: list[float], level: float) -> int | None:
    """The first epoch (1-based) whose mean training loss is below ``level``, or ``None``."""
    return next((i + 1 for i, v in enumerate(curve) if v < level), None)


def draw(curves: dict[str, list[float]], path: Path) -> Path | None:
    """Both training curves on a log scale, saved to ``path``; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=name)
    ax.set(
        yscale="log", xlabel="epoch", ylabel="training loss (epoch mean)",
        title=f"digits, {DEPTH} hidden tanh layers of {WIDTH}, SGD",
    )  # fmt: skip
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# %% Train both variants from the same seed
def main(
    epochs: int | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
    out: str | Path | None = None,
) -> dict:
    """Trains the plain and the residual + norm network and compares them.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: the root of every key (split, initialisation, data order).
        progress: show fit's progress bars.
        out: a folder for ``08_deep_curves.png`` (needs matplotlib); ``None``: no picture.

    Returns:
        per variant (``plain``, ``residual+norm``): ``curve`` (training loss per epoch),
        ``final_loss``, ``train_accuracy``, ``test_accuracy``, ``epochs_to_0.1`` (the first
        epoch under 0.1, or ``None``), ``fit_seconds``, ``params``; and ``epochs``, ``depth``,
        ``picture`` (its path, or ``None``).
    """
    epochs = EPOCHS if epochs is None else epochs
    k_split, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    data = load_data(k_split)
    result: dict = {"epochs": epochs, "depth": DEPTH}
    for name in VARIANTS:
        model = build(name)
        # The same keys for both variants (same initialisation draws, same data order):
        # clone says so to JAX's key-reuse checker.
        k_i, k_f = jax.random.clone(k_init), jax.random.clone(k_fit)
        start = time.perf_counter()
        fitted = jaxmlp.fit(
            model, model.init(k_i), data["x_train"], data["y_train"],
            loss="softmax_cross_entropy", key=k_f, optimizer=OPTIMIZER, epochs=epochs,
            batch_size=BATCH_SIZE, progress=progress,
        )  # fmt: skip
        jax.block_until_ready(fitted.params)
        seconds = time.perf_counter() - start
        curve = [float(v) for v in fitted.history["loss"]]

        def accuracy(x: jax.Array, y: jax.Array, params=fitted.params, model=model) -> float:
            return float(jaxmlp.accuracy(model.apply(params, x), y))

        result[name] = {
            "curve": curve,
            "final_loss": curve[-1],
            "train_accuracy": accuracy(data["x_train"], data["y_train"]),
            "test_accuracy": accuracy(data["x_test"], data["y_test"]),
            "epochs_to_0.1": epochs_to_reach(curve, 0.1),
            "fit_seconds": seconds,
            "params": model.count_params(),
        }
    curves = {name: result[name]["curve"] for name in VARIANTS}
    picture = None if out is None else draw(curves, Path(out) / "08_deep_curves.png")
    result["picture"] = None if picture is None else str(picture)
    return result


# %% Run
if __name__ == "__main__":
    out = main(progress=True, out="demo_out")
    print(f"digits, {out['depth']} hidden tanh layers of {WIDTH}, SGD, {out['epochs']} epochs")
    marks = sorted({1, 2, 5, 10, out["epochs"]} & set(range(1, out["epochs"] + 1)))
    print("  epoch          " + " ".join(f"{e:>7d}" for e in marks))
    for name in VARIANTS:
        r = out[name]
        print(f"  {name:14s} " + " ".join(f"{r['curve'][e - 1]:7.4f}" for e in marks))
    for name in VARIANTS:
        r = out[name]
        print(
            f"  {name:14s} test accuracy {r['test_accuracy']:.4f} (train {r['train_accuracy']:.4f}),"
            f" loss < 0.1 after {r['epochs_to_0.1']} epochs, {r['params']} parameters,"
            f" {r['fit_seconds']:.1f} s"
        )
    if out["picture"]:
        print(f"  picture: {out['picture']}")
