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
  Jacobian of softmax or sigmoid), never through the fused logit formulas jaxmlp uses;
- layer normalisation and residual connections (:func:`forward_backward_layers`): the layer
  norm's full ``(n, n)`` Jacobian built factor by factor from its definition (``dc/dz``,
  ``dvar/dz``, ``dr/dz``, the product rule), never the compact ``r (g - mean(g) - x_hat
  mean(g x_hat))`` jaxmlp writes, and the skip path as an identity added to ``dL/da``.

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


# --- layer normalisation and residual connections ------------------------------------------------


def layer_norm(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    """Layer normalisation of one column vector ``z`` (n, 1) over its n units, from the
    definitions: ``mu = sum(z) / n``, ``var = sum((z - mu)^2) / n``, ``r = (var + eps)^(-1/2)``,
    ``x_hat = (z - mu) r``, ``out = gamma x_hat + beta``. Returns ``(out, x_hat, r, c)`` with
    ``c = z - mu``."""
    n = z.shape[0]
    mu = float(np.sum(z)) / n
    c = z - mu
    var = float(np.sum(c * c)) / n
    r = 1.0 / math.sqrt(var + eps)
    x_hat = c * r
    return gamma.reshape(-1, 1) * x_hat + beta.reshape(-1, 1), x_hat, r, c


def layer_norm_jacobian(gamma: np.ndarray, r: float, c: np.ndarray) -> np.ndarray:
    """The full Jacobian ``d out / d z`` (n, n) of :func:`layer_norm`, factor by factor:

    dc/dz    = I - 1 1^T / n                       (c = z - mu, dmu/dz = 1^T / n)
    dvar/dz  = (2 / n) c^T dc/dz                   (a row vector)
    dr/dz    = -(1/2) (var + eps)^(-3/2) dvar/dz = -(r^3 / 2) dvar/dz
    dx_hat/dz = r dc/dz + c dr/dz                  (product rule; c dr/dz an outer product)
    dout/dz  = diag(gamma) dx_hat/dz
    """
    n = c.shape[0]
    dc_dz = np.eye(n) - np.ones((n, n)) / n
    dvar_dz = (2.0 / n) * c.T @ dc_dz
    dr_dz = -0.5 * r**3 * dvar_dz
    dxhat_dz = r * dc_dz + c @ dr_dz
    return np.diagflat(gamma) @ dxhat_dz


class LayerResult:
    """:func:`forward_backward_layers`' results (lecture orientation, as :class:`Result`).

    Attributes:
        loss: the reduced loss (plus the L2 term).
        dW, db: per affine layer, ``dL/dW`` ``(n_out, n_in)`` and ``dL/db``.
        dgamma, dbeta: per hidden layer with layer norm, ``dL/dscale`` and ``dL/doffset``
            (``None`` for a layer without).
        deltas: ``dL/dz`` at every affine layer's output, each ``(batch, n_out)``.
        z: every affine layer's output ``(batch, n_out)``.
        a: what each affine layer reads (``a[0] = x``), then the network output.
        dx: ``dL/dx`` ``(batch, n_in)``.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)


def forward_backward_layers(
    Ws: list[np.ndarray],
    bs: list[np.ndarray],
    activations: list[str],
    loss: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    norms: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
    residual: bool = False,
    eps: float = 1e-5,
    l2: float = 0.0,
) -> LayerResult:
    """The lecture's network with layer norm and residual connections, one example at a time.

    Hidden layer ``l`` computes ``z = W a[l-1] + b``, then ``n = LN(z)`` when ``norms[l]`` is a
    ``(gamma, beta)`` pair (``n = z`` otherwise), ``h = f(n)``, and ``a[l] = a[l-1] + h`` when
    ``residual`` and ``W`` is square (``a[l] = h`` otherwise). The output layer is
    ``a[L] = f_out(W a[L-1] + b)``. The backward sweep multiplies full Jacobians: the
    activation's, the layer norm's (:func:`layer_norm_jacobian`), ``W``, and the identity of the
    skip path, which adds ``dL/da[l]`` to ``dL/da[l-1]``.
    """
    n_examples, L = x.shape[0], len(Ws)
    norms = norms if norms is not None else [None] * (L - 1)
    coef = np.ones(n_examples) if loss in SUM_LOSSES else np.full(n_examples, 1.0 / n_examples)
    dW = [np.zeros_like(W) for W in Ws]
    db = [np.zeros_like(b) for b in bs]
    dgamma = [None if p is None else np.zeros_like(p[0]) for p in norms]
    dbeta = [None if p is None else np.zeros_like(p[1]) for p in norms]
    deltas = [np.zeros((n_examples, W.shape[0])) for W in Ws]
    zs = [np.zeros((n_examples, W.shape[0])) for W in Ws]
    acts = [np.asarray(x, np.float64)] + [np.zeros((n_examples, W.shape[0])) for W in Ws]
    dx = np.zeros_like(acts[0])
    total = 0.0
    for n in range(n_examples):
        a = [x[n].reshape(-1, 1).astype(np.float64)]
        cache = []  # per layer: z, the layer norm's (x_hat, r, c) or None, the activation's input
        for l in range(L):
            z = Ws[l] @ a[l] + bs[l].reshape(-1, 1)
            zs[l][n] = z.ravel()
            ln = None
            pre = z
            if l < L - 1 and norms[l] is not None:
                pre, x_hat, r, c = layer_norm(z, norms[l][0], norms[l][1], eps)
                ln = (x_hat, r, c)
            h = activate(activations[l], pre)
            skip = residual and l < L - 1 and Ws[l].shape[0] == Ws[l].shape[1]
            a.append(a[l] + h if skip else h)
            acts[l + 1][n] = a[l + 1].ravel()
            cache.append((z, ln, pre, skip))
        value, dL_da = example_loss(loss, a[L], y[n].reshape(-1, 1))
        total += coef[n] * value
        dL_da = coef[n] * dL_da
        for l in range(L - 1, -1, -1):
            z, ln, pre, skip = cache[l]
            # through the activation: dL/d(pre) = (da/d(pre))^T dL/da
            dL_dpre = jacobian(activations[l], pre).T @ dL_da
            if ln is not None:
                x_hat, r, c = ln
                dgamma[l] += (dL_dpre * x_hat).ravel()  # d out / d gamma = x_hat
                dbeta[l] += dL_dpre.ravel()  # d out / d beta = 1
                dL_dz = layer_norm_jacobian(norms[l][0], r, c).T @ dL_dpre
            else:
                dL_dz = dL_dpre
            deltas[l][n] = dL_dz.ravel()
            dW[l] += dL_dz @ a[l].T  # dz/dW = a[l-1]
            db[l] += dL_dz.ravel()  # dz/db = 1
            # dz/da[l-1] = W; the skip path a[l] = a[l-1] + h adds the identity
            dL_da = Ws[l].T @ dL_dz + (dL_da if skip else 0.0)
        dx[n] = dL_da.ravel()
    total += 0.5 * l2 * sum(float(np.sum(W**2)) for W in Ws)
    dW = [g + l2 * W for g, W in zip(dW, Ws, strict=True)]
    return LayerResult(
        loss=total, dW=dW, db=db, dgamma=dgamma, dbeta=dbeta, deltas=deltas, z=zs, a=acts, dx=dx
    )
