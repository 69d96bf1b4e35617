"""The small PyTorch modules :func:`jaxmlp.interop.to_torch` emits where ``torch.nn`` has no
exact counterpart, and that :func:`jaxmlp.interop.from_torch` reads back.

Importing this module imports PyTorch (``pip install jaxmlp[torch]``); ``jaxmlp.interop`` itself
does not.
"""

from __future__ import annotations

from typing import Any

import torch  # pyright: ignore[reportMissingImports]
from torch import nn  # pyright: ignore[reportMissingImports]

from jaxmlp._core.layers import Features as _FeaturesLayer

__all__ = ["Features", "FourierFeatures", "Heaviside", "Residual", "Sin", "Softplus"]


class Sin(nn.Module):
    """``sin(z)``, jaxmlp's ``"sin"`` activation (SIREN)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)


class Heaviside(nn.Module):
    """``1`` where ``z > 0``, else ``0`` (``heaviside(0) = 0``): jaxmlp's ``"heaviside"``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z > 0).to(z.dtype)


class Softplus(nn.Module):
    """``log(1 + e^z)`` for every ``z``, as ``jax.nn.softplus`` computes it
    (``logaddexp(z, 0)``). ``torch.nn.Softplus`` returns ``z`` itself above its ``threshold``
    (20), which differs from ``log(1 + e^z)`` by up to ``2e-9``: exact in float32, not in
    float64."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(z, torch.zeros((), dtype=z.dtype, device=z.device))


class Residual(nn.Sequential):
    """A residual block: ``x + block(x)`` with ``block`` the modules given, run in order
    (jaxmlp's ``a[l] = a[l-1] + f(z[l])``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        return x + super().forward(x)


class Features(nn.Module):
    """The Playground's named input features (``x1``, ``x1^2``, ``x1*x2``, ``sin(x1)``, inputs
    numbered from 1), one output column per name, as :class:`jaxmlp.layers.Features`.

    Args:
        spec: the model's ``features``: ``"playground"`` or a tuple of names.
        n_in: the raw input width (``sizes[0]``).
    """

    def __init__(self, spec: Any, n_in: int):
        super().__init__()
        self.spec = spec
        self.n_in = int(n_in)
        self.layer = _FeaturesLayer(spec)
        self.names = self.layer.names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = []
        for kind, idx in self.layer.terms:
            xi = x[..., idx[0]]
            if kind == "id":
                cols.append(xi)
            elif kind == "sq":
                cols.append(xi * xi)
            elif kind == "mul":
                cols.append(xi * x[..., idx[1]])
            else:
                cols.append(torch.sin(xi))
        return torch.stack(cols, dim=-1)

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, names={self.names}"


class FourierFeatures(nn.Module):
    """Random Fourier features ``[sin(x M), cos(x M)]`` with the fixed matrix ``M = 2 pi B``
    (a buffer, not a parameter), as :class:`jaxmlp.layers.FourierFeatures` with ``n``,
    ``scale`` and ``seed`` (kept for the way back)."""

    matrix: torch.Tensor

    def __init__(self, n: int, scale: float, seed: int, matrix: torch.Tensor):
        super().__init__()
        self.n, self.scale, self.seed = int(n), float(scale), int(seed)
        self.register_buffer("matrix", matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x @ self.matrix
        return torch.cat([torch.sin(p), torch.cos(p)], dim=-1)

    def extra_repr(self) -> str:
        return f"n={self.n}, scale={self.scale:g}, seed={self.seed}"
