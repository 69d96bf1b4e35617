"""Activation functions and their hand-written derivatives.

Each activation is an :class:`Activation`: the function ``fn(z) -> a`` and its derivative
``deriv(z, a) -> f'(z)``. The backward pass hands over both the pre-activation ``z`` and the
activation ``a``; where the mathematics allows (identity, relu, leaky_relu, sigmoid, tanh,
softplus) the derivative reads only ``a``, so XLA can drop ``z`` after the forward pass. At
kinks the derivative matches ``jax.grad`` of the matching ``jax.nn`` function: relu'(0) = 0,
leaky_relu'(0) = 1, elu'(0) = 1. heaviside(0) = 0 (the lecture's neuron fires only above its
threshold) and its derivative is taken as 0 everywhere (it is 0 almost everywhere and undefined
at 0), which is why the historic step network cannot be trained by gradient descent.

Output activations (``identity``, ``sigmoid``, ``softmax``, ``tanh``, ``softplus``) use
``vjp(z, a, da) -> dz``; for the elementwise ones that is ``da * deriv(z, a)`` (tanh:
``da * (1 - a^2)``, softplus: ``da * (1 - exp(-a))``), for softmax it is the Jacobian-vector
product ``a * (da - sum(da * a))``. A ``tanh`` output suits regression targets in (-1, 1), a
``softplus`` output positive ones; the cross entropies read logits and pair only with
``identity`` or their own ``sigmoid``/``softmax``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


class Activation(NamedTuple):
    """An activation function with its derivative.

    Attributes:
        name: the registry name.
        fn: ``z -> a``, elementwise (or along the last axis for softmax).
        deriv: ``(z, a) -> f'(z)``; elementwise only (``None`` for softmax).
        uses_output_only: True when ``deriv`` reads only ``a`` (the post-activation).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    deriv: Callable[[jax.Array, jax.Array], jax.Array] | None
    uses_output_only: bool

    def vjp(self, z: jax.Array, a: jax.Array, da: jax.Array) -> jax.Array:
        """dL/dz from dL/da: ``da * f'(z)``, or softmax's Jacobian-vector product."""
        if self.deriv is None:
            # softmax: dz_k = a_k (da_k - sum_j da_j a_j)
            return a * (da - jnp.sum(da * a, axis=-1, keepdims=True))
        return da * self.deriv(z, a)


def _heaviside(z):
    return (z > 0).astype(z.dtype)


def _relu(z):
    # jax.nn.relu, not jnp.maximum(z, 0): jax.grad of maximum is 0.5 at z = 0, and the autodiff
    # path must take the same value at the kink as the manual derivative (0).
    return jax.nn.relu(z)


def _leaky_relu(z):
    return jnp.where(z >= 0, z, LEAKY_RELU_SLOPE * z)


def _elu(z):
    # where, not minimum(z, 0): jax.grad of minimum is 0.5 at z = 0, the manual derivative 1.
    return jnp.where(z > 0, z, ELU_ALPHA * jnp.expm1(jnp.where(z > 0, 0, z)))


def _gelu(z):
    # Exact form: z * Phi(z), Phi the standard normal CDF; Phi(z) = erfc(-z / sqrt 2) / 2
    # keeps its digits in the negative tail, where 1 + erf(z / sqrt 2) cancels.
    return 0.5 * z * erfc(-z / math.sqrt(2.0))


def _gelu_deriv(z, a):
    # d/dz z*Phi(z) = Phi(z) + z * phi(z)
    phi = jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 0.5 * erfc(-z / math.sqrt(2.0)) + z * phi


def _gelu_tanh(z):
    return 0.5 * z * (1 + jnp.tanh(_SQRT_2_OVER_PI * (z + _GELU_TANH_C * z**3)))


def _gelu_tanh_deriv(z, a):
    t = jnp.tanh(_SQRT_2_OVER_PI * (z + _GELU_TANH_C * z**3))
    # 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 c z^2)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * z * z)


def _silu_deriv(z, a):
    s = jax.nn.sigmoid(z)
    # d/dz z s(z) = s + z s (1 - s)
    return s * (1 + z * (1 - s))


def _softmax(z):
    return jax.nn.softmax(z, axis=-1)


_ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", lambda z: z, lambda z, a: jnp.ones_like(a), True),
        Activation("heaviside", _heaviside, lambda z, a: jnp.zeros_like(a), True),
        Activation("sigmoid", jax.nn.sigmoid, lambda z, a: a * (1 - a), True),
        Activation("tanh", jnp.tanh, lambda z, a: 1 - a * a, True),
        Activation("relu", _relu, lambda z, a: (a > 0).astype(a.dtype), True),
        Activation(
            "leaky_relu",
            _leaky_relu,
            lambda z, a: jnp.where(a >= 0, 1.0, LEAKY_RELU_SLOPE).astype(a.dtype),
            True,
        ),
        # exp(z) rather than a + 1: a + 1 loses all digits once expm1(z) rounds to -1.
        Activation(
            "elu",
            _elu,
            lambda z, a: jnp.where(z > 0, 1.0, ELU_ALPHA * jnp.exp(jnp.minimum(z, 0))).astype(
                z.dtype
            ),
            False,
        ),
        # sigmoid(z) from the output: e^a = 1 + e^z, so sigmoid(z) = 1 - e^-a = -expm1(-a),
        # which keeps its digits where a is tiny (z very negative).
        Activation("softplus", jax.nn.softplus, lambda z, a: -jnp.expm1(-a), True),
        Activation("gelu", _gelu, _gelu_deriv, False),
        Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_deriv, False),
        Activation("silu", jax.nn.silu, _silu_deriv, False),
        # sin for SIREN networks; its derivative cos(z) needs z
        Activation("sin", jnp.sin, lambda z, a: jnp.cos(z), False),
        Activation("softmax", _softmax, None, True),
    )
}

HIDDEN_ACTIVATIONS: tuple[str, ...] = tuple(n for n in _ACTIVATIONS if n != "softmax")
OUTPUT_ACTIVATIONS: tuple[str, ...] = ("identity", "sigmoid", "softmax", "tanh", "softplus")
# Activations added with register_activation (hidden layers only).
_REGISTERED: dict[str, Activation] = {}


def register_activation(
    name: str,
    fn: Callable[[jax.Array], jax.Array],
    deriv: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    uses_output_only: bool = False,
) -> Activation:
    """Adds a hidden activation of your own, usable by name in ``MLP(activation=name)``.

    Args:
        name: a new name (the built-in ones cannot be replaced).
        fn: ``z -> a``, elementwise, written with ``jax.numpy``.
        deriv: ``(z, a) -> f'(z)``, its hand-written derivative, elementwise; the backward
            pass multiplies ``dL/da`` by it, the forward mode ``dz``.
        uses_output_only: ``deriv`` reads only ``a`` (documentation for XLA's memory).

    Returns:
        The :class:`Activation`. ``jaxmlp.gradcheck`` compares ``deriv`` with ``jax.grad`` of
        ``fn`` through a whole network; a checkpoint stores the name, so register the
        activation again before loading one (re-registering the same functions is allowed).

    Raises:
        ValueError: for a built-in name or a name registered with other functions.
        TypeError: when ``fn`` or ``deriv`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string, got {name!r}")
    if name in _ACTIVATIONS:
        raise ValueError(f"name: {name!r} is a built-in activation")
    for argname, f in (("fn", fn), ("deriv", deriv)):
        if not callable(f):
            raise TypeError(f"{argname}: expected a callable, got {type(f).__name__}")
    act = Activation(name, fn, deriv, bool(uses_output_only))
    old = _REGISTERED.get(name)
    if old is not None and (old.fn is not fn or old.deriv is not deriv):
        raise ValueError(f"name: {name!r} is registered already, with other functions")
    _REGISTERED[name] = act
    return act


def get_activation(name: str, *, output: bool = False, argname: str = "activation") -> Activation:
    """Looks an activation up by name.

    Args:
        name: one of ``HIDDEN_ACTIVATIONS`` (or ``OUTPUT_ACTIVATIONS`` when ``output``).
        output: look the name up among the output activations.
        argname: the argument name used in the error message.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    valid = OUTPUT_ACTIVATIONS if output else (*HIDDEN_ACTIVATIONS, *_REGISTERED)
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"{argname}: unknown activation {name!r}; valid names are {list(valid)}")
    return _ACTIVATIONS[name] if name in _ACTIVATIONS else _REGISTERED[name]
