"""An independent pure-NumPy MLP: forward and backward written from the lecture's equations.

This is the third implementation the tests compare (after jaxmlp's manual backward and
``jax.grad``). It deliberately differs from jaxmlp in every way that could hide a shared bug:

- the lecture's orientation: ``W[to, from]`` and column vectors, ``z = W a + b`` (eqs. 13, 18,
  39), so jaxmlp's ``w[from, to]`` is compared against ``W.T``;
- one example at a time (explicit loops over examples and over layers), float64 throughout;
- the chain rule written factor by factor (eqs. 19, 23-24, 32-36, 44-64): ``dL/da``, then the
  full Jacobian ``da/dz`` of the activation (a diagonal matrix, or ``diag(p) - p p^T`` for
  softmax), then ``dz/dW = a^(l-1)`` and ``dz/db = 1``;
- the losses differentiated through the probabilities (cross entropy as ``-y / p`` times the
  Jacobian of softmax or sigmoid), never through the fused logit formulas jaxmlp uses.

Only NumPy and ``math`` are used.
"""

from __future__ import annotations

import math

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gelu_tanh_inner(z):
    return _SQRT_2_OVER_PI * (z + 0.044715 * z**3)


# name -> (f(z), f'(z)), both elementwise on a column vector.
ELEMENTWISE = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "heaviside": (lambda z: (z > 0).astype(np.float64), lambda z: np.zeros_like(z)),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 / np.cosh(z) ** 2),
    "relu": (lambda z: np.where(z > 0, z, 0.0), lambda z: np.where(z > 0, 1.0, 0.0)),
    "leaky_relu": (
        lambda z: np.where(z >= 0, z, 0.01 * z),
        lambda z: np.where(z >= 0, 1.0, 0.01),
    ),
    "elu": (
        lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1),
        lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0))),
    ),
    "softplus": (lambda z: np.log1p(np.exp(z)), _sigmoid),
    "silu": (
        lambda z: z * _sigmoid(z),
        lambda z: _sigmoid(z) + z * _sigmoid(z) * (1 - _sigmoid(z)),
    ),
    "gelu": (
        lambda z: z * 0.5 * (1 + _erf(z / math.sqrt(2))),
        lambda z: (
            0.5 * (1 + _erf(z / math.sqrt(2))) + z * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "gelu_tanh": (
        lambda z: 0.5 * z * (1 + np.tanh(_gelu_tanh_inner(z))),
        lambda z: (
            0.5 * (1 + np.tanh(_gelu_tanh_inner(z)))
            + 0.5
            * z
            / np.cosh(_gelu_tanh_inner(z)) ** 2
            * _SQRT_2_OVER_PI
            * (1 + 3 * 0.044715 * z**2)
        ),
    ),
}


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """``a = f(z)`` for a column vector ``z`` (n, 1)."""
    if name == "softmax":
        e = np.exp(z - z.max())
        return e / e.sum()
    return ELEMENTWISE[name][0](z)


def jacobian(name: str, z: np.ndarray) -> np.ndarray:
    """The full Jacobian ``da/dz`` (n, n) of the activation at the column vector ``z``."""
    if name == "softmax":
        p = activate("softmax", z)
        return np.diagflat(p) - p @ p.T  # d p_i / d z_j = p_i (delta_ij - p_j)
    return np.diagflat(ELEMENTWISE[name][1](z))


def example_loss(name: str, out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """One example's loss and ``dL/d out`` (a column vector), for a network output ``out``.

    For the cross entropies ``out`` is a probability (the softmax or sigmoid of the logits).
    """
    k = out.shape[0]
    r = out - y
    if name == "sse":
        return float(np.sum(r**2)), 2 * r
    if name == "mse":
        return float(np.sum(r**2) / k), 2 * r / k
    if name == "half_mse":
        return float(np.sum(r**2) / (2 * k)), r / k
    if name == "mae":
        return float(np.sum(np.abs(r)) / k), np.sign(r) / k
    if name == "huber":
        inside = np.abs(r) <= 1.0
        value = np.where(inside, 0.5 * r**2, np.abs(r) - 0.5)
        return float(np.sum(value) / k), np.where(inside, r, np.sign(r)) / k
    if name == "softmax_cross_entropy":
        return float(-np.sum(y * np.log(out))), -y / out
    if name == "sigmoid_binary_cross_entropy":
        value = -(y * np.log(out) + (1 - y) * np.log(1 - out))
        return float(np.sum(value) / k), (-y / out + (1 - y) / (1 - out)) / k
    raise ValueError(f"unknown loss {name!r}")


SUM_LOSSES = ("sse",)


class Result:
    """The reference's forward/backward results, every array in the lecture's orientation.

    Attributes:
        loss: the reduced loss (plus the L2 term).
        dW: ``dL/dW^(l)``, each ``(n_out, n_in)`` (the lecture's ``W[to, from]``).
        db: ``dL/db^(l)``, each ``(n_out,)``.
        deltas: ``dL/dz^(l)`` per layer, each ``(batch, n_out)`` (one row per example).
        z, a: per layer, each ``(batch, n)``; ``a[0]`` is the input.
    """

    def __init__(self, loss, dW, db, deltas, z, a):
        self.loss, self.dW, self.db, self.deltas, self.z, self.a = loss, dW, db, deltas, z, a


def forward_backward(
    Ws: list[np.ndarray],
    bs: list[np.ndarray],
    activations: list[str],
    loss: str,
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    l2: float = 0.0,
) -> Result:
    """The loss and its gradient, one example at a time and one layer at a time.

    Args:
        Ws: ``W^(l)`` of shape ``(n_out, n_in)`` (lecture orientation), l = 1..L.
        bs: ``b^(l)`` of shape ``(n_out,)``.
        activations: one name per layer, the output activation last. For the cross entropies
            the output activation must be the matching softmax/sigmoid (the loss reads ``p``).
        loss: a jaxmlp loss name.
        x: ``(batch, n_in)``; y: ``(batch, k)`` targets (one-hot or probabilities for
            the cross entropies).
        sample_weight: ``(batch,)``; the mean becomes ``sum w_n l_n / sum w_n``.
        l2: adds ``l2 / 2 * sum ||W||^2``.
    """
    n_examples = x.shape[0]
    L = len(Ws)
    if sample_weight is None:
        sample_weight = np.ones(n_examples)
    if loss in SUM_LOSSES:
        coef = np.asarray(sample_weight, np.float64)
    else:
        coef = np.asarray(sample_weight, np.float64) / np.sum(sample_weight)

    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(b) for b in bs]
    deltas = [np.zeros((n_examples, W.shape[0])) for W in Ws]
    zs = [np.zeros((n_examples, W.shape[0])) for W in Ws]
    acts = [np.asarray(x, np.float64)] + [np.zeros((n_examples, W.shape[0])) for W in Ws]
    total = 0.0
    for n in range(n_examples):
        # Forward sweep (eqs. 18, 39-42): z^(l) = W^(l) a^(l-1) + b^(l), a^(l) = f(z^(l)).
        a = [x[n].reshape(-1, 1).astype(np.float64)]
        z = [None]
        for l in range(1, L + 1):
            z.append(Ws[l - 1] @ a[l - 1] + bs[l - 1].reshape(-1, 1))
            a.append(activate(activations[l - 1], z[l]))
            zs[l - 1][n] = z[l].ravel()
            acts[l][n] = a[l].ravel()
        value, dL_da = example_loss(loss, a[L], y[n].reshape(-1, 1))
        total += coef[n] * value
        dL_da = coef[n] * dL_da  # dL/da^(L) for this example's share of the loss
        # Backward sweep (eqs. 44-64), layer L down to 1.
        for l in range(L, 0, -1):
            # dL/dz^(l) = (da^(l)/dz^(l))^T dL/da^(l)   (the first two factors of eqs. 23-24)
            dL_dz = jacobian(activations[l - 1], z[l]).T @ dL_da
            deltas[l - 1][n] = dL_dz.ravel()
            # dz^(l)/dW^(l) = a^(l-1): dL/dW^(l) = dL/dz^(l) a^(l-1)^T   (eq. 23)
            dW[l - 1] += dL_dz @ a[l - 1].T
            # dz^(l)/db^(l) = 1                                         (eq. 24)
            db[l - 1] += dL_dz.ravel()
            # dz^(l)/da^(l-1) = W^(l): dL/da^(l-1) = W^(l)^T dL/dz^(l)   (eq. 32)
            dL_da = Ws[l - 1].T @ dL_dz
    total += 0.5 * l2 * sum(float(np.sum(W**2)) for W in Ws)
    dW = [g + l2 * W for g, W in zip(dW, Ws, strict=True)]
    return Result(total, dW, db, deltas, zs, acts)
