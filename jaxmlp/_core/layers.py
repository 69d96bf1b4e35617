"""The layer protocol: a network is a stack of layers, each with its forward pass and its
hand-written derivatives in both directions.

A :class:`Layer` is a frozen, hashable dataclass (so a model holding it stays a static jit
argument). It answers five questions:

- ``out_size(n_in)``: the width it hands on;
- ``init(key, n_in, dtype)``: its parameters, any pytree of arrays, or ``None`` for none;
- ``forward(params, a, key)``: ``(out, saved)``, the output for the input rows ``a`` ``(batch,
  n_in)`` and what its derivatives need besides ``a`` and ``out`` (``key`` is ``None`` at
  inference, a fresh key per call in training);
- ``backward(params, a, out, saved, d_out, need_din)``: ``(d_params, d_a)``, the chain rule read
  from the output to the input: ``dL/dparams`` and ``dL/da`` from ``d_out = dL/dout``;
- ``tangent(params, a, out, saved, d_params, d_a)``: ``d_out``, the same derivative read from the
  input to the output (forward mode): how far ``out`` moves when the parameters move by
  ``d_params`` and the input by ``d_a``. ``None`` is a zero tangent (a block not differentiated).

The built-in pieces below (:class:`Affine`, :class:`ActivationLayer`, :class:`LayerNorm`,
:class:`Dropout`, :class:`Features`, :class:`FourierFeatures`) are written this way, and the
stack walker in :mod:`jaxmlp._core.backprop` knows nothing else about them: a layer of your own
written to the same protocol is trained, checked and differentiated by the same code. Residual
connections are not a layer but a pair of markers (:class:`SkipBegin`, :class:`SkipEnd`) the
walker understands: ``a[l] = a[l-1] + f(z[l])``.

Notation in the comments: ``d`` is ``dL/d(out)`` in ``backward`` and a tangent (a small change,
forward mode) in ``tangent``; products are elementwise unless written ``@``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmlp._core.activations import get_activation


class Layer:
    """Base class of the layer protocol (see the module docstring). Subclass it with
    ``@dataclasses.dataclass(frozen=True)`` and write ``forward`` and ``backward``; ``tangent``
    defaults to ``jax.jvp`` of ``forward`` (write it by hand for a forward mode of your own).

    Attributes:
        name: a short label for ``MLP.summary()`` and the network picture.
    """

    name: ClassVar[str] = "layer"

    def out_size(self, n_in: int) -> int:
        """The output width for an input width ``n_in`` (default: unchanged)."""
        return n_in

    def init(self, key: jax.Array, n_in: int, dtype: Any) -> Any:
        """The layer's parameters (a pytree of ``dtype`` arrays), or ``None`` for none."""
        return None

    def forward(self, params: Any, a: jax.Array, key: jax.Array | None) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def backward(
        self,
        params: Any,
        a: jax.Array,
        out: jax.Array,
        saved: Any,
        d_out: jax.Array,
        need_din: bool,
    ) -> tuple[Any, jax.Array | None]:
        raise NotImplementedError

    def tangent(
        self, params: Any, a: jax.Array, out: jax.Array, saved: Any, d_params: Any, d_a: Any
    ) -> jax.Array | None:
        """Forward mode; this default differentiates ``forward`` with ``jax.jvp`` (inference,
        no key): write it by hand to keep forward mode hand-written for your layer."""
        if d_params is None and d_a is None:
            return None
        d_params = _zeros_for(d_params, params)
        d_a = jnp.zeros_like(a) if d_a is None else d_a
        fn = lambda p, x: self.forward(p, x, None)[0]  # noqa: E731
        return jax.jvp(fn, (params, a), (d_params, d_a))[1]

    def describe(self) -> str:
        """One line for ``MLP.summary()``."""
        return self.name


def _zeros_for(tangents: Any, primals: Any) -> Any:
    """A tangent pytree with every ``None`` (zero) block as zeros shaped like its primal."""
    if tangents is None:
        return jax.tree.map(jnp.zeros_like, primals)
    return jax.tree.map(
        lambda t, p: jnp.zeros_like(p) if t is None else t,
        tangents,
        primals,
        is_leaf=lambda t: t is None,
    )


def count(params_shape: Any) -> int:
    """The number of scalars in a parameter pytree (of arrays or ``ShapeDtypeStruct``)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params_shape))


# ---------------------------------------------------------------------------------------------
# The affine layer: z = a @ w + b (lecture eqs. 20, 39)


class Dense(NamedTuple):
    """One fully connected layer's parameters.

    Attributes:
        w: ``(fan_in, fan_out)``; ``w[i, j]`` connects input unit ``i`` to output unit ``j``
            (the lecture's ``w_{j,i}``).
        b: ``(fan_out,)``.
    """

    w: jax.Array
    b: jax.Array


def matmul(compute_dtype: str | None, lhs, rhs, contract: tuple[int, int], out_dtype) -> jax.Array:
    """``lhs`` x ``rhs`` contracting ``lhs`` axis ``contract[0]`` with ``rhs`` axis
    ``contract[1]``, inputs cast to ``compute_dtype`` (mixed precision), accumulated in
    ``out_dtype``. Written with ``lax.dot_general`` so XLA never materialises a transpose."""
    if compute_dtype is not None:
        cd = jnp.dtype(compute_dtype)
        lhs, rhs = lhs.astype(cd), rhs.astype(cd)
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(lhs, rhs, dims, preferred_element_type=out_dtype)


@dataclasses.dataclass(frozen=True)
class Affine(Layer):
    """``z = a @ w + b``: the lecture's weighted sum (eqs. 20, 39). Parameters :class:`Dense`.

    Args:
        n_out: the output width.
        initializer: ``(key, (fan_in, fan_out), dtype) -> w``; biases start at zero.
        compute_dtype: matmul inputs cast to it (mixed precision), or ``None``.
    """

    n_out: int
    initializer: Callable = dataclasses.field(compare=True)
    compute_dtype: str | None = None
    name: ClassVar[str] = "affine"

    def out_size(self, n_in: int) -> int:
        return self.n_out

    def init(self, key, n_in, dtype):
        shape = (n_in, self.n_out)
        w = self.initializer(key, shape, dtype)
        if isinstance(w, tuple):  # an initializer that draws the bias too (SIREN)
            w, b = w
        else:
            b = jnp.zeros((self.n_out,), dtype)
        if tuple(getattr(w, "shape", ())) != shape or getattr(w, "dtype", None) != dtype:
            got = f"{getattr(w, 'shape', None)} {getattr(w, 'dtype', type(w).__name__)}"
            raise ValueError(f"initializer: asked for a {shape} {dtype} weight, returned {got}")
        return Dense(w, b)

    def forward(self, params, a, key):
        # z = a @ w + b                                              (eqs. 20, 39)
        z = matmul(self.compute_dtype, a, params.w, (1, 0), params.w.dtype)
        return z + params.b[None, :], None

    def backward(self, params, a, out, saved, d_out, need_din):
        w = params.w
        # dL/dw = a^T dz: dz/dw = a                                 (eqs. 23, 44, 48, 57)
        dw = matmul(self.compute_dtype, a, d_out, (0, 0), w.dtype)
        # dL/db = sum over the batch of dz: dz/db = 1                (eqs. 24, 45, 49, 58)
        db = jnp.sum(d_out, axis=0)
        # dL/da = dz w^T: dz/da = w                                  (eqs. 32, 48)
        da = matmul(self.compute_dtype, d_out, w, (1, 1), w.dtype) if need_din else None
        return Dense(dw, db), da

    def tangent(self, params, a, out, saved, d_params, d_a):
        terms = []
        if d_a is not None:
            # da w: dz/da = w                                        (eqs. 32, 48)
            terms.append(matmul(self.compute_dtype, d_a, params.w, (1, 0), params.w.dtype))
        if d_params is not None and d_params.w is not None:
            # a dw: dz/dw = a                                        (eqs. 23, 44, 48, 57)
            terms.append(matmul(self.compute_dtype, a, d_params.w, (1, 0), params.w.dtype))
        if d_params is not None and d_params.b is not None:
            # db: dz/db = 1, the same for every row                  (eqs. 24, 45, 49, 58)
            terms.append(jnp.broadcast_to(d_params.b[None, :], out.shape))
        # dz = da w + a dw + db
        return sum(terms[1:], terms[0]) if terms else None

    def describe(self) -> str:
        return f"affine {self.n_out}"


# ---------------------------------------------------------------------------------------------
# Activations: a = f(z) (lecture eqs. 18, 40)


@dataclasses.dataclass(frozen=True)
class ActivationLayer(Layer):
    """``a = f(z)``, elementwise (softmax: along the features), by registry name.

    Args:
        activation: a name from ``HIDDEN_ACTIVATIONS`` (or ``OUTPUT_ACTIVATIONS`` when
            ``output``), or one added with :func:`jaxmlp.register_activation`.
        output: the network's output activation.
    """

    activation: str
    output: bool = False
    name: ClassVar[str] = "activation"

    @property
    def fn(self):
        return get_activation(self.activation, output=self.output)

    def forward(self, params, a, key):
        return self.fn.fn(a), None  # a[l] = f(z[l])                 (eqs. 18, 40)

    def backward(self, params, a, out, saved, d_out, need_din):
        # dL/dz = dL/da * f'(z) (softmax: its Jacobian-vector product)  (eqs. 33-34, 52, 63-64)
        return None, self.fn.vjp(a, out, d_out)

    def tangent(self, params, a, out, saved, d_params, d_a):
        if d_a is None:
            return None
        act = self.fn
        if act.deriv is None:
            # softmax: da = (diag(a) - a a^T) dz = a * (dz - sum(a * dz))      (eq. 65)
            return out * (d_a - jnp.sum(out * d_a, axis=-1, keepdims=True))
        return act.deriv(a, out) * d_a  # da = f'(z) dz              (eqs. 33-34, 52, 63-64)

    def describe(self) -> str:
        return self.activation


# ---------------------------------------------------------------------------------------------
# Layer normalisation


class Norm(NamedTuple):
    """A normalisation layer's parameters: a learnable ``scale`` and ``offset`` per unit."""

    scale: jax.Array
    offset: jax.Array


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalisation over the features of each row, with a learnable scale and offset:

        mu = mean(z),  var = mean((z - mu)^2),  r = 1 / sqrt(var + eps)
        x_hat = (z - mu) r,  out = scale * x_hat + offset

    A constant row has ``var = 0``: ``x_hat = 0`` and ``out = offset``, with finite
    derivatives (``eps > 0``). Parameters :class:`Norm` (scale ones, offset zeros at init).
    """

    eps: float = 1e-5
    name: ClassVar[str] = "layernorm"

    def init(self, key, n_in, dtype):
        return Norm(jnp.ones((n_in,), dtype), jnp.zeros((n_in,), dtype))

    def forward(self, params, a, key):
        mu = jnp.mean(a, axis=-1, keepdims=True)  # mu = mean(z)
        c = a - mu
        var = jnp.mean(c * c, axis=-1, keepdims=True)  # var = mean((z - mu)^2)
        r = lax.rsqrt(var + self.eps)  # r = 1 / sqrt(var + eps)
        x_hat = c * r  # x_hat = (z - mu) r
        # out = scale * x_hat + offset
        return params.scale[None, :] * x_hat + params.offset[None, :], (x_hat, r)

    def backward(self, params, a, out, saved, d_out, need_din):
        x_hat, r = saved
        # dL/dscale = sum over the batch of d * x_hat; dL/doffset = sum of d
        grads = Norm(jnp.sum(d_out * x_hat, axis=0), jnp.sum(d_out, axis=0))
        if not need_din:
            return grads, None
        g = d_out * params.scale[None, :]  # dL/dx_hat = d * scale
        # dL/dz = r (g - mean(g) - x_hat mean(g x_hat)): the Jacobian of x_hat is
        # r (I - 1 1^T / n - x_hat x_hat^T / n), symmetric, applied to g
        dz = r * (
            g
            - jnp.mean(g, axis=-1, keepdims=True)
            - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True)
        )
        return grads, dz

    def tangent(self, params, a, out, saved, d_params, d_a):
        x_hat, r = saved
        terms = []
        if d_a is not None:
            # dx_hat = r (dz - mean(dz) - x_hat mean(x_hat dz)), the same Jacobian
            dx_hat = r * (
                d_a
                - jnp.mean(d_a, axis=-1, keepdims=True)
                - x_hat * jnp.mean(x_hat * d_a, axis=-1, keepdims=True)
            )
            terms.append(params.scale[None, :] * dx_hat)  # scale dx_hat
        if d_params is not None and d_params.scale is not None:
            terms.append(d_params.scale[None, :] * x_hat)  # dscale x_hat
        if d_params is not None and d_params.offset is not None:
            terms.append(jnp.broadcast_to(d_params.offset[None, :], out.shape))  # doffset
        return sum(terms[1:], terms[0]) if terms else None

    def describe(self) -> str:
        return "layernorm"


# ---------------------------------------------------------------------------------------------
# Dropout


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: in training (a key given) each unit is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``; at inference (no key) the identity.

    ``out = a * m``, ``m = keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)`` per entry,
    drawn from the key alone: the manual and the automatic gradient see the same mask.
    """

    rate: float
    name: ClassVar[str] = "dropout"

    def forward(self, params, a, key):
        if key is None or self.rate == 0:
            return a, None
        # a float32 probability: the same mask whatever the dtype (gradcheck's float64 pass)
        keep = jax.random.bernoulli(key, jnp.float32(1.0 - self.rate), a.shape)
        m = keep.astype(a.dtype) / jnp.asarray(1.0 - self.rate, a.dtype)
        return a * m, m  # out = a * m

    def backward(self, params, a, out, saved, d_out, need_din):
        # dL/da = d * m (the identity without a mask)
        return None, d_out if saved is None else d_out * saved

    def tangent(self, params, a, out, saved, d_params, d_a):
        if d_a is None:
            return None
        return d_a if saved is None else d_a * saved  # dout = m da

    def describe(self) -> str:
        return f"dropout {self.rate:g}"


# ---------------------------------------------------------------------------------------------
# Residual connections: markers the stack walker reads


@dataclasses.dataclass(frozen=True)
class _Marker(Layer):
    """A point in the stack that leaves the values and their derivatives as they are: the walker
    gives its subclasses their meaning."""

    name: ClassVar[str] = "skip"

    def forward(self, params, a, key):
        return a, None

    def backward(self, params, a, out, saved, d_out, need_din):
        return None, d_out

    def tangent(self, params, a, out, saved, d_params, d_a):
        return d_a


@dataclasses.dataclass(frozen=True)
class SkipBegin(_Marker):
    """Marks where a residual connection leaves: the walker keeps this point's value."""


@dataclasses.dataclass(frozen=True)
class SkipEnd(_Marker):
    """Marks where a residual connection returns: the walker adds the kept value,
    ``a[l] = a[l-1] + f(z[l])``; backward, ``dL/da[l-1]`` gains ``dL/da[l]`` directly."""


# ---------------------------------------------------------------------------------------------
# Input features


_TERM = r"x(\d+)"


def _parse_feature(name: str) -> tuple[str, tuple[int, ...]]:
    """``"x1"`` -> ``("id", (0,))``; ``"x1^2"`` -> ``("sq", (0,))``; ``"x1*x2"`` ->
    ``("mul", (0, 1))``; ``"sin(x1)"`` -> ``("sin", (0,))``. Indices are 0-based."""
    import re

    s = name.replace(" ", "").replace("²", "^2").replace("·", "*")
    for kind, pattern in (
        ("id", rf"^{_TERM}$"),
        ("sq", rf"^{_TERM}\^2$"),
        ("mul", rf"^{_TERM}\*{_TERM}$"),
        ("sin", rf"^sin\({_TERM}\)$"),
    ):
        m = re.match(pattern, s)
        if m:
            idx = tuple(int(g) - 1 for g in m.groups())
            if min(idx) < 0:
                break
            return kind, idx
    raise ValueError(
        f"features: unknown feature {name!r}; write x1, x1^2, x1*x2 or sin(x1) "
        "(inputs numbered from 1), or use 'playground'"
    )


PLAYGROUND_FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin(x1)", "sin(x2)")


@dataclasses.dataclass(frozen=True)
class Features(Layer):
    """A fixed feature map of the raw inputs, one output column per named feature: ``x1``,
    ``x1^2``, ``x1*x2``, ``sin(x1)`` (inputs numbered from 1). ``"playground"`` names the
    TensorFlow Playground's seven: ``x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2)``. No
    parameters; gradients with respect to the raw input flow through it."""

    names: tuple[str, ...]
    name: ClassVar[str] = "features"

    def __post_init__(self):
        names = PLAYGROUND_FEATURES if self.names == "playground" else self.names
        if isinstance(names, str) or not names:
            raise ValueError(f"features: expected 'playground' or a list of names, got {names!r}")
        names = tuple(names)
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"features: every feature must be a name, got {n!r}")
            _parse_feature(n)
        if len(set(names)) != len(names):
            raise ValueError(f"features: repeated names in {names}")
        object.__setattr__(self, "names", names)

    @functools.cached_property
    def terms(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(_parse_feature(n) for n in self.names)

    def n_inputs(self) -> int:
        """The fewest raw inputs the names refer to."""
        return 1 + max(max(idx) for _, idx in self.terms)

    def out_size(self, n_in: int) -> int:
        return len(self.names)

    def forward(self, params, a, key):
        cols = []
        for kind, idx in self.terms:
            x = a[:, idx[0]]
            if kind == "id":
                cols.append(x)  # x_i
            elif kind == "sq":
                cols.append(x * x)  # x_i^2
            elif kind == "mul":
                cols.append(x * a[:, idx[1]])  # x_i x_j
            else:
                cols.append(jnp.sin(x))  # sin x_i
        return jnp.stack(cols, axis=-1), None

    def _partials(self, a) -> list[list[tuple[int, jax.Array]]]:
        """Per feature, its nonzero partial derivatives ``(input index, d feature / d x_i)``."""
        out = []
        for kind, idx in self.terms:
            i = idx[0]
            if kind == "id":
                out.append([(i, jnp.ones_like(a[:, i]))])  # d x_i / d x_i = 1
            elif kind == "sq":
                out.append([(i, 2 * a[:, i])])  # d x_i^2 / d x_i = 2 x_i
            elif kind == "mul":
                j = idx[1]
                if i == j:
                    out.append([(i, 2 * a[:, i])])  # x_i x_i: 2 x_i
                else:
                    out.append([(i, a[:, j]), (j, a[:, i])])  # d x_i x_j: x_j and x_i
            else:
                out.append([(i, jnp.cos(a[:, i]))])  # d sin x_i / d x_i = cos x_i
        return out

    def backward(self, params, a, out, saved, d_out, need_din):
        if not need_din:
            return None, None
        # dL/dx_i = sum over features f of dL/df * df/dx_i
        cols = [jnp.zeros_like(a[:, 0]) for _ in range(a.shape[1])]
        for f, partials in enumerate(self._partials(a)):
            for i, p in partials:
                cols[i] = cols[i] + d_out[:, f] * p
        return None, jnp.stack(cols, axis=-1)

    def tangent(self, params, a, out, saved, d_params, d_a):
        if d_a is None:
            return None
        # df = sum over inputs i of df/dx_i dx_i
        cols = []
        for partials in self._partials(a):
            terms = [p * d_a[:, i] for i, p in partials]
            cols.append(sum(terms[1:], terms[0]))
        return jnp.stack(cols, axis=-1)

    def describe(self) -> str:
        return "features " + ", ".join(self.names)


@functools.lru_cache(maxsize=32)
def _fourier_matrix(seed: int, n_in: int, n: int, scale: float, dtype: str) -> np.ndarray:
    with jax.ensure_compile_time_eval():
        b = jax.random.normal(jax.random.key(seed), (n_in, n), jnp.float32) * scale
    return np.asarray(b, dtype)


@dataclasses.dataclass(frozen=True)
class FourierFeatures(Layer):
    """Random Fourier features ``[sin(2 pi x B), cos(2 pi x B)]`` (``2 n`` columns) with
    ``B`` ``(n_in, n)`` drawn from ``N(0, scale^2)`` with ``jax.random.key(seed)``.

    ``B`` is fixed, not trained: it lives in the description (the seed), not in the
    parameters, so two models with the same seed have the same ``B`` and a checkpoint holds it
    as three numbers. Gradients with respect to the raw input flow through it.
    """

    n: int = 64
    scale: float = 10.0
    seed: int = 0
    name: ClassVar[str] = "fourier"

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n <= 0:
            raise ValueError(f"features: FourierFeatures n must be a positive int, got {self.n!r}")
        if not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ValueError(f"features: FourierFeatures scale must be > 0, got {self.scale!r}")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "seed", int(self.seed))

    def matrix(self, n_in: int, dtype: Any) -> jax.Array:
        """``2 pi B``, ``(n_in, n)``."""
        b = _fourier_matrix(self.seed, n_in, self.n, self.scale, jnp.dtype(dtype).name)
        return jnp.asarray(2 * np.pi * b, dtype)

    def out_size(self, n_in: int) -> int:
        return 2 * self.n

    def forward(self, params, a, key):
        p = a @ self.matrix(a.shape[1], a.dtype)  # p = 2 pi x B
        s, c = jnp.sin(p), jnp.cos(p)
        return jnp.concatenate([s, c], axis=-1), (s, c)  # [sin p, cos p]

    def backward(self, params, a, out, saved, d_out, need_din):
        if not need_din:
            return None, None
        s, c = saved
        ds, dc = d_out[:, : self.n], d_out[:, self.n :]
        # dL/dp = ds cos p - dc sin p; dL/dx = dL/dp (2 pi B)^T
        dp = ds * c - dc * s
        return None, dp @ self.matrix(a.shape[1], a.dtype).T

    def tangent(self, params, a, out, saved, d_params, d_a):
        if d_a is None:
            return None
        s, c = saved
        dp = d_a @ self.matrix(a.shape[1], a.dtype)  # dp = dx (2 pi B)
        return jnp.concatenate([c * dp, -s * dp], axis=-1)  # [cos p dp, -sin p dp]

    def describe(self) -> str:
        return f"fourier {self.n}x2 (scale {self.scale:g}, seed {self.seed})"
