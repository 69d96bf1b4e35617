"""One training run, two gradient methods: the hand-written backward pass against ``jax.grad``.

``method="manual"`` computes the gradients with the lecture's backpropagation (eqs. 18-64): a
forward sweep that keeps every ``z^(l)`` and ``a^(l)``, then the chain rule layer by layer from
the output back (``dL/dz^(l) = dL/da^(l) * phi'(z^(l))``, ``dL/dW^(l) = a^(l-1)^T dL/dz^(l)``,
``dL/da^(l-1) = dL/dz^(l) W^(l)^T`` in our batch-major layout, where ``W`` is the lecture's
matrix transposed). ``method="autodiff"`` lets ``jax.value_and_grad`` differentiate the forward
pass. Both runs here share everything else: the data, the initial parameters, the shuffling
key and the optimizer (plain minibatch gradient descent, eq. 17).

The two gradients are the same mathematics but not the same float32 operations (XLA orders the
sums differently), so they differ by a few units in the last place. Gradient descent on a
smooth loss does not amplify such differences much over a few thousand steps: the loss curves
agree to float32 rounding, and the script prints the largest gap between them over the run.
Any real mistake in a backward formula would show at the 1e-2 level within the first epoch.

Data: scikit-learn's digits (1797 x 64, 10 classes), standardised; a tanh network with a
softmax output and cross entropy (eqs. 16 and 65).

Run: ``python examples/04_manual_vs_autodiff.py``.
"""

# %% Imports
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
from jaxmlp.data import Standardizer, load_sklearn

EPOCHS = 30
SIZES = (64, 32, 32, 10)
LOSS = "softmax_cross_entropy"
BATCH_SIZE = 32
# Plain gradient descent (eq. 17); one object so both methods share it and fit's cache.
OPTIMIZER = optax.sgd(0.05)


# %% Data
def load_data() -> tuple[jax.Array, np.ndarray]:
    """Digits: ``x`` (1797, 64) standardised per pixel (blank pixels map to 0), ``y`` (1797,)."""
    x, y = load_sklearn("digits")
    return Standardizer.fit(x).transform(x), y


def model() -> jaxmlp.MLP:
    """The network both runs train."""
    return jaxmlp.MLP(SIZES, activation="tanh", output_activation="softmax")


# %% One training run per method
def train(
    method: str,
    x: jax.Array,
    y: np.ndarray,
    *,
    epochs: int,
    seed: int = 0,
    loss: str | jaxmlp.Loss = LOSS,
    progress: bool = False,
) -> jaxmlp.FitResult:
    """Trains ``model()`` from the parameters and shuffling key that ``seed`` fixes.

    Two calls that differ only in ``method`` see identical data orders and starting points.
    ``loss`` lets a test plant a faulty hand-written gradient (``Loss.per_example_grad``).
    """
    k_init, k_fit = jax.random.split(jax.random.key(seed))
    net = model()
    return jaxmlp.fit(
        net,
        net.init(k_init),
        x,
        y,
        loss=loss,
        key=k_fit,
        optimizer=OPTIMIZER,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        method=method,
        progress=progress,
    )


def curve_divergence(a: list[float], b: list[float]) -> dict:
    """The largest gap between two loss curves of equal length.

    Returns:
        ``max_abs``: ``max_e |a_e - b_e|``; ``max_rel``: ``max_e |a_e - b_e| / |b_e|``;
        ``epoch``: the 1-based epoch of ``max_rel``.
    """
    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a, b: curves of different lengths {a_arr.shape} and {b_arr.shape}")
    gap = np.abs(a_arr - b_arr)
    rel = gap / np.abs(b_arr)
    return {
        "max_abs": float(gap.max()),
        "max_rel": float(rel.max()),
        "epoch": int(rel.argmax()) + 1,
    }


def max_param_diff(p: jaxmlp._core.mlp.Params, q: jaxmlp._core.mlp.Params) -> float:
    """``max |p - q|`` over every weight and bias."""
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
    )


# %% Compare
def main(epochs: int | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Trains once per method and measures how far the runs drift apart.

    Args:
        epochs: training epochs (default ``EPOCHS``); tests pass fewer.
        seed: fixes the initial parameters and the shuffling key of both runs.
        progress: show fit's progress bars.

    Returns:
        ``max_abs``, ``max_rel``, ``epoch`` (see :func:`curve_divergence`) for the training
        loss curves; ``param_max_diff`` (final parameters); ``grad_max_diff`` and
        ``grad_max_abs`` (the two gradients at the initial parameters on all the data);
        ``final_loss`` (manual, autodiff); ``epochs``.
    """
    epochs = EPOCHS if epochs is None else epochs
    x, y = load_data()
    runs = {
        m: train(m, x, y, epochs=epochs, seed=seed, progress=progress)
        for m in ("manual", "autodiff")
    }
    manual, autodiff = runs["manual"], runs["autodiff"]

    # One step's worth of difference, for scale: both gradients at the starting point.
    net = model()
    params = net.init(jax.random.split(jax.random.key(seed))[0])
    # jit: one compile each instead of dispatching (and compiling) every small op eagerly.
    _, g_manual = jax.jit(jaxmlp.value_and_grad(net, LOSS, method="manual"))(params, x, y)
    _, g_auto = jax.jit(jaxmlp.value_and_grad(net, LOSS, method="autodiff"))(params, x, y)

    return {
        **curve_divergence(manual.history["loss"], autodiff.history["loss"]),
        "param_max_diff": max_param_diff(manual.params, autodiff.params),
        "grad_max_diff": max_param_diff(g_manual, g_auto),
        "grad_max_abs": max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_auto)),
        "final_loss": (manual.history["loss"][-1], autodiff.history["loss"][-1]),
        "epochs": epochs,
    }


# %% Run
if __name__ == "__main__":
    out = main(progress=True)
    eps = float(np.finfo(np.float32).eps)
    print(f"digits, {SIZES} tanh/softmax, SGD, {out['epochs']} epochs, manual vs autodiff")
    print(f"  final training loss:       {out['final_loss'][0]:.8f} vs {out['final_loss'][1]:.8f}")
    print(
        f"  largest loss-curve gap:    {out['max_abs']:.2e} absolute, {out['max_rel']:.2e} relative "
        f"(epoch {out['epoch']}; float32 eps = {eps:.2e})"
    )
    print(f"  final parameters differ by at most {out['param_max_diff']:.2e}")
    print(
        f"  gradients at the start differ by at most {out['grad_max_diff']:.2e} "
        f"(largest gradient entry {out['grad_max_abs']:.2e})"
    )
