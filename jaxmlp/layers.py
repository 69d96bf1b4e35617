"""The layer protocol and the built-in layers, for networks beyond the plain stack.

``MLP(sizes, norm=..., dropout=..., residual=..., features=...)`` builds its stack from these
(:attr:`jaxmlp.MLP.layers`); a :class:`Layer` of your own, written to the same protocol (its
parameters, forward pass and hand-written backward), goes into the ``norm`` slot (after every
hidden affine layer) or the ``features`` slot (before the first), and ``value_and_grad``,
``gradcheck``, ``apply_manual``, ``fit`` and ``fit_ensemble`` use it with no other change.
See the docs' page "Layers beyond the plain stack".
"""

from jaxmlp._core.layers import (
    PLAYGROUND_FEATURES,
    ActivationLayer,
    Affine,
    Dense,
    Dropout,
    Features,
    FourierFeatures,
    Layer,
    LayerNorm,
    Norm,
    SkipBegin,
    SkipEnd,
)

__all__ = [
    "PLAYGROUND_FEATURES",
    "ActivationLayer",
    "Affine",
    "Dense",
    "Dropout",
    "Features",
    "FourierFeatures",
    "Layer",
    "LayerNorm",
    "Norm",
    "SkipBegin",
    "SkipEnd",
]
