"""The model description (:class:`MLP`), its parameters (a tuple of :class:`Dense`) and the forward pass.

Convention (batch-major): ``x`` is ``(batch, sizes[0])``, a layer's weight ``w`` is
``(fan_in, fan_out)`` and ``z = a_prev @ w + b``. The lecture writes ``z = W a + b`` with
``W[to, from]``; our ``w[from, to]`` is its transpose, so each row of ``x`` is one example.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmlp._checks import check_key, host_nonfinite, on_host
from jaxmlp._core.activations import get_activation
from jaxmlp._core.initializers import Initializer, get_initializer
from jaxmlp._core.layers import (
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
    count,
)
from jaxmlp._quick import setup_jit

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# to_dict's stand-in for a callable initializer, which no file can hold: "callable:<qualname>".
CALLABLE_INITIALIZER = "callable:"


# A tuple with one entry per layer that has parameters: a Dense per affine layer (the lecture's
# plain network is a tuple of Dense), a Norm per layer normalisation, a layer of your own's pytree.
Params = tuple[Any, ...]
NORMS = ("layernorm",)
# to_dict's stand-in for a layer object of the user's: "layer:<qualname>".
LAYER_OBJECT = "layer:"


def _dtype_name(value: Any, argname: str, allow_none: bool = False) -> str | None:
    if value is None:
        # jnp.dtype(None) is float64, which would silently become float32 without x64.
        if allow_none:
            return None
        raise ValueError(f"{argname}: must be one of {list(_FLOAT_DTYPES)}, got None")
    try:
        name = jnp.dtype(value).name
    except TypeError as err:
        raise ValueError(f"{argname}: not a dtype: {value!r}") from err
    if name not in _FLOAT_DTYPES:
        raise ValueError(f"{argname}: must be one of {list(_FLOAT_DTYPES)}, got {name!r}")
    check_x64(name, argname)
    return name


def check_x64(dtype: str, argname: str) -> None:
    """Raises ``ValueError`` for a 64-bit ``dtype`` while JAX's x64 mode is off: JAX would
    silently make its arrays 32-bit, and a model would claim float64 while holding float32."""
    if jax.dtypes.canonicalize_dtype(dtype) != jnp.dtype(dtype):
        raise ValueError(
            f"{argname}: {dtype!r} needs JAX's 64-bit mode, which is off (JAX would silently "
            'hold float32); enable it at start-up with jax.config.update("jax_enable_x64", True), '
            "or build and use the model inside `with jax.enable_x64(True):`"
        )


def _callable_name(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


# A static pytree node with no leaves: jit, vmap and grad take an MLP as an ordinary argument, and
# jit keys its cache on the description's hash and equality (an equal MLP reuses the compiled call).
@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class MLP:
    """A multilayer perceptron's static description: hashable, and a static pytree node, so it
    can be passed to ``jax.jit``, ``jax.vmap`` and ``jax.grad`` as an ordinary argument (or as a
    ``static_argnums`` argument).

    Args:
        sizes: layer widths including the input, e.g. ``(3, 4, 2)`` is the lecture's
            two-layer network (3 inputs, 4 hidden units, 2 outputs).
        activation: one hidden activation name for every hidden layer, or a sequence with one
            name per hidden layer.
        output_activation: one of ``OUTPUT_ACTIVATIONS``: ``"identity"``, ``"sigmoid"``,
            ``"softmax"``, ``"tanh"`` (targets in (-1, 1)) or ``"softplus"`` (positive targets).
        initializer: weight initialiser name (``"auto"``: He for the ReLU family, Glorot
            else), or a callable ``(key, shape, dtype) -> array`` such as
            ``jax.nn.initializers.orthogonal()``, called once per layer with the weight's
            ``(fan_in, fan_out)`` shape. A callable compares by identity (pass the same object
            to reuse compiled programs), and no file can hold it: ``to_dict`` writes
            ``"callable:<its qualified name>"``, which ``from_dict`` refuses, so a checkpoint of
            such a model loads only when given the model (``load_checkpoint(path, model=...)``).
        param_dtype: dtype of the parameters ``init`` creates. ``"float64"`` needs JAX's x64
            mode (``jax.config.update("jax_enable_x64", True)`` or ``jax.enable_x64(True)``),
            else a ``ValueError``: JAX would silently make the parameters float32.
        compute_dtype: mixed precision: matmul inputs are cast to this dtype (e.g.
            ``"bfloat16"``) while products accumulate, and the loss and gradients stay, in the
            parameters' dtype. ``None`` computes in the parameters' dtype.
        norm: ``"layernorm"`` normalises every hidden layer's pre-activation over its units,
            with a learnable scale and offset per unit (affine, layer norm, activation); or a
            width-keeping :class:`jaxmlp.layers.Layer` of your own, placed there instead.
        dropout: inverted dropout on the hidden activations with this rate, in ``[0, 1)``;
            active only when a key is given (``apply(..., key=k)``, training), never at
            inference.
        residual: ``a[l] = a[l-1] + f(z[l])`` for every hidden layer whose input and output
            widths are equal; the others stay plain.
        features: an input feature map applied before the first layer: ``"playground"`` (the
            TensorFlow Playground's ``x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2)``), a tuple of
            such names, a :class:`jaxmlp.layers.FourierFeatures`, or any
            :class:`jaxmlp.layers.Layer` without parameters of your own. ``sizes[0]`` stays the
            raw input width.
    """

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...] = "relu"
    output_activation: str = "identity"
    initializer: str | Initializer = "auto"
    param_dtype: str = "float32"
    compute_dtype: str | None = None
    norm: str | Layer | None = None
    dropout: float = 0.0
    residual: bool = False
    features: str | tuple[str, ...] | Layer | None = None

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise TypeError(f"sizes: expected a sequence of ints, got {type(sizes).__name__}")
        if len(sizes) < 2:
            raise ValueError(
                f"sizes: need at least an input and an output size, got {tuple(sizes)}"
            )
        clean = []
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"sizes: every size must be an int, got {s!r} in {tuple(sizes)}")
            if s <= 0:
                raise ValueError(f"sizes: every size must be positive, got {tuple(sizes)}")
            clean.append(int(s))
        object.__setattr__(self, "sizes", tuple(clean))

        n_hidden = len(clean) - 2
        act = self.activation
        if isinstance(act, str):
            get_activation(act)
        else:
            if not isinstance(act, Sequence):
                raise TypeError(
                    f"activation: expected a name or a sequence of names, got {type(act).__name__}"
                )
            act = tuple(act)
            if len(act) != n_hidden:
                raise ValueError(
                    f"activation: got {len(act)} names for {n_hidden} hidden layers of sizes {self.sizes}"
                )
            for i, a in enumerate(act):
                get_activation(a, argname=f"activation[{i}]")
            object.__setattr__(self, "activation", act)
        get_activation(self.output_activation, output=True, argname="output_activation")
        if not (isinstance(self.initializer, str) or callable(self.initializer)):
            raise TypeError(
                "initializer: expected a name or a callable (key, shape, dtype) -> array, "
                f"got {type(self.initializer).__name__}"
            )
        for name in self.activations:
            get_initializer(self.initializer, name)
        object.__setattr__(self, "param_dtype", _dtype_name(self.param_dtype, "param_dtype"))
        object.__setattr__(
            self, "compute_dtype", _dtype_name(self.compute_dtype, "compute_dtype", allow_none=True)
        )
        self._check_pieces()

    def _check_pieces(self) -> None:
        norm = self.norm
        if norm is not None and not isinstance(norm, Layer):
            if not isinstance(norm, str) or norm not in NORMS:
                raise ValueError(
                    f"norm: expected None, one of {list(NORMS)} or a jaxmlp.layers.Layer, "
                    f"got {norm!r}"
                )
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"dropout: expected a float rate in [0, 1), got {p!r}")
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout: the rate must be in [0, 1), got {p!r}")
        object.__setattr__(self, "dropout", float(p))
        if not isinstance(self.residual, (bool, np.bool_)):
            raise TypeError(f"residual: expected True or False, got {self.residual!r}")
        object.__setattr__(self, "residual", bool(self.residual))
        f = self.features
        if f is None or isinstance(f, Layer):
            pass
        elif isinstance(f, str) and f != "playground":
            f = (f,)
        elif not isinstance(f, str):
            if not isinstance(f, Sequence):
                raise TypeError(
                    "features: expected 'playground', a sequence of names or a "
                    f"jaxmlp.layers.Layer, got {type(f).__name__}"
                )
            f = tuple(f)
        if isinstance(f, (str, tuple)):
            layer = Features(f)  # type: ignore[arg-type]  # checks the names
            if layer.n_inputs() > self.sizes[0]:
                raise ValueError(
                    f"features: {layer.names} read {layer.n_inputs()} inputs, but sizes[0] is "
                    f"{self.sizes[0]}"
                )
        object.__setattr__(self, "features", f)
        if self.layers:  # builds the stack once: a layer of the user's must init and fit
            self.param_slots  # noqa: B018

    @functools.cached_property
    def feature_layer(self) -> Layer | None:
        """The input feature map as a layer, or ``None``."""
        f = self.features
        if f is None or isinstance(f, Layer):
            return f
        return Features(f)  # type: ignore[arg-type]

    @property
    def in_features(self) -> int:
        """The width the first affine layer reads: ``sizes[0]``, or the feature map's width."""
        fl = self.feature_layer
        return self.sizes[0] if fl is None else fl.out_size(self.sizes[0])

    def widths(self) -> tuple[int, ...]:
        """The affine layers' input widths followed by the output width: ``sizes`` with
        ``sizes[0]`` replaced by the feature map's width."""
        return (self.in_features, *self.sizes[1:])

    def has_skip(self, l: int) -> bool:
        """Whether hidden layer ``l`` (0-based) carries a residual connection."""
        w = self.widths()
        return self.residual and l < self.num_layers - 1 and w[l] == w[l + 1]

    @functools.cached_property
    def layers(self) -> tuple[Layer, ...]:
        """The network as a stack of :class:`jaxmlp.layers.Layer`: (features), then per hidden
        layer (skip begin) affine, (norm), activation, (dropout), (skip end); then the output
        affine and the output activation (always the last two)."""
        stack: list[Layer] = []
        if self.feature_layer is not None:
            stack.append(self.feature_layer)
        w = self.widths()
        for l, act in enumerate(self.activations):
            init = get_initializer(self.initializer, act, first=l == 0)
            affine = Affine(w[l + 1], init, self.compute_dtype)
            if l == self.num_layers - 1:
                stack += [affine, ActivationLayer(act, output=True)]
                break
            block: list[Layer] = [affine]
            if self.norm is not None:
                block.append(LayerNorm() if self.norm == "layernorm" else self.norm)  # type: ignore[list-item]
            block.append(ActivationLayer(act))
            if self.dropout:
                block.append(Dropout(self.dropout))
            if self.has_skip(l):
                block = [SkipBegin(), *block, SkipEnd()]
            stack += block
        return tuple(stack)

    @functools.cached_property
    def param_slots(self) -> tuple[int | None, ...]:
        """For each layer of :attr:`layers`, its index in the parameter tuple, or ``None`` for
        a layer without parameters."""
        slots, n, n_in = [], 0, self.sizes[0]
        dtype = jnp.dtype(self.param_dtype)
        for i, layer in enumerate(self.layers):
            shapes = _init_shapes(layer, n_in, dtype)
            if shapes is None:
                slots.append(None)
            else:
                slots.append(n)
                n += 1
            n_out = layer.out_size(n_in)
            if not isinstance(n_out, (int, np.integer)) or n_out <= 0:
                raise ValueError(f"layers[{i}]: out_size({n_in}) returned {n_out!r}")
            if isinstance(layer, (LayerNorm, Dropout)) or layer is self.norm:
                if n_out != n_in:
                    raise ValueError(
                        f"norm: the layer must keep the width, maps {n_in} to {n_out} units"
                    )
            if layer is self.feature_layer and shapes is not None:
                raise ValueError("features: a feature map cannot have parameters")
            n_in = int(n_out)
        return tuple(slots)

    @property
    def num_params_entries(self) -> int:
        """The length of the parameter tuple (one entry per layer with parameters)."""
        return sum(s is not None for s in self.param_slots)

    @property
    def plain(self) -> bool:
        """The lecture's network: affine layers and activations only."""
        return (
            self.norm is None
            and not self.dropout
            and self.features is None
            and not any(self.has_skip(l) for l in range(self.num_layers - 1))
        )

    def affine_slots(self) -> tuple[int, ...]:
        """The parameter tuple's indices of the affine layers' ``Dense``, in order."""
        return tuple(
            s for s, layer in zip(self.param_slots, self.layers, strict=True)
            if isinstance(layer, Affine) and s is not None
        )  # fmt: skip

    @property
    def num_layers(self) -> int:
        """Layers with parameters (the input is not counted): ``len(sizes) - 1``."""
        return len(self.sizes) - 1

    @property
    def hidden_activations(self) -> tuple[str, ...]:
        """One activation name per hidden layer."""
        if isinstance(self.activation, str):
            return (self.activation,) * (self.num_layers - 1)
        return self.activation

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation name per layer, the output activation last."""
        return (*self.hidden_activations, self.output_activation)

    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(fan_in, fan_out)`` of each affine layer's weight."""
        w = self.widths()
        return tuple(itertools.pairwise(w))

    def param_shapes(self) -> Params:
        """The parameter tuple's structure with ``jax.ShapeDtypeStruct`` leaves."""
        out, n_in = [], self.sizes[0]
        dtype = jnp.dtype(self.param_dtype)
        for layer, slot in zip(self.layers, self.param_slots, strict=True):
            if slot is not None:
                out.append(_init_shapes(layer, n_in, dtype))
            n_in = layer.out_size(n_in)
        return tuple(out)

    def count_params(self) -> int:
        """Total parameter count: the lecture's ``sum (n_in + 1) * n_out`` for the plain
        network, plus a scale and an offset per unit of every layer norm."""
        return count(self.param_shapes())

    def init(self, key: jax.Array) -> Params:
        """Draws the parameters: weights from the initialiser, biases zero (SIREN: drawn too),
        layer norms' scales one and offsets zero.

        Args:
            key: a ``jax.random.key`` (or legacy ``PRNGKey``); split once per layer with
                parameters.
        """
        key = check_key(key)
        # A model built under jax.enable_x64 and used outside it would draw float32 weights.
        check_x64(self.param_dtype, "param_dtype")
        # One compiled program for every layer's draws: drawn eagerly, each random op compiles
        # on its own (about ten small programs, a second of a small script's cold start).
        try:
            program = _init_program(self, bool(jax.config.read("jax_enable_x64")))
        except TypeError:  # an unhashable initializer: draw eagerly
            return self._draw(key)
        try:
            return program(key)
        except Exception:
            # An initializer that cannot be traced (NumPy inside) draws eagerly; a bad one fails
            # there again, with its own message rather than one wrapped by the trace.
            return self._draw(key)

    def _draw(self, key: jax.Array) -> Params:
        dtype = jnp.dtype(self.param_dtype)
        keys = jax.random.split(key, self.num_params_entries)
        out, n_in = [], self.sizes[0]
        for layer, slot in zip(self.layers, self.param_slots, strict=True):
            if slot is not None:
                out.append(layer.init(keys[slot], n_in, dtype))
            n_in = layer.out_size(n_in)
        return tuple(out)

    def apply(
        self, params: Params, x: jax.typing.ArrayLike, *, key: jax.Array | None = None
    ) -> jax.Array:
        """The forward pass, output activation included.

        Args:
            params: the parameter tuple (a tuple of ``Dense`` for the plain network).
            x: ``(..., sizes[0])``: a batch ``(batch, sizes[0])``, one example ``(sizes[0],)``,
                or any number of leading axes, e.g. a ``(grid_h, grid_w, sizes[0])`` grid.
            key: ``None`` for inference (no dropout); a key for training mode (dropout masks
                drawn from it; the same key gives the same masks).

        Returns:
            ``(..., sizes[-1])``: the leading axes of ``x`` kept, e.g. ``(batch, sizes[-1])``,
            ``(sizes[-1],)`` or ``(grid_h, grid_w, sizes[-1])``.
        """
        from jaxmlp._core.stack import run_forward

        check_params(self, params)
        xb, lead = as_rows(self, x, params)
        key = None if key is None else check_key(key)
        values, _ = run_forward(self, params, xb, key)
        return unrows(values[-1], lead)

    def __call__(
        self, params: Params, x: jax.typing.ArrayLike, *, key: jax.Array | None = None
    ) -> jax.Array:
        return self.apply(params, x, key=key)

    def summary(self) -> str:
        """A per-layer table: weight and bias shapes, activation, parameter count; a layer's
        other pieces (layer norm, dropout, a residual connection ``skip``) beside its
        activation, and an input feature map as layer 0."""
        shapes = self.param_shapes()
        # per affine layer: its number, (fan_in, fan_out), its pieces, its other parameters
        table: list[list[Any]] = []
        rows = [("layer", "w shape", "b shape", "activation", "params (n_in+1)*n_out")]
        if self.feature_layer is not None:
            rows.append(("0", "", "", self.feature_layer.describe(), "0"))
        for layer, slot in zip(self.layers, self.param_slots, strict=True):
            if isinstance(layer, Affine):
                table.append([len(table) + 1, self.layer_shapes()[len(table)], [], 0])
            elif isinstance(layer, (SkipBegin, Features, FourierFeatures)) or not table:
                continue
            else:
                name = layer.activation if isinstance(layer, ActivationLayer) else layer.describe()
                table[-1][2].append("skip" if isinstance(layer, SkipEnd) else name)
                table[-1][3] += 0 if slot is None else count(shapes[slot])
        for l, (i, o), pieces, extra in table:
            plus = f" + {extra}" if extra else ""
            count_text = f"({i}+1)*{o}{plus} = {(i + 1) * o + extra}"
            rows.append((str(l), f"({i}, {o})", f"({o},)", ", ".join(pieces), count_text))
        rows.append(("total", "", "", "", str(self.count_params())))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [
            f"MLP sizes={self.sizes}: {self.num_layers} layers (input not counted)",
            *(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows),
        ]
        lines.insert(2, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; ``MLP.from_dict`` inverts it, except for a callable
        initializer, written as ``"callable:<module>.<qualified name>"``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["sizes"] = list(self.sizes)
        if not isinstance(self.activation, str):
            d["activation"] = list(self.activation)
        if not isinstance(self.initializer, str):
            d["initializer"] = CALLABLE_INITIALIZER + _callable_name(self.initializer)
        # The pieces beyond the lecture's network are written only when used, so a plain
        # model's description is what it always was.
        for name, default in _PIECE_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        if isinstance(self.norm, Layer):
            d["norm"] = LAYER_OBJECT + _callable_name(type(self.norm))
        f = self.features
        if isinstance(f, FourierFeatures):
            d["features"] = {"fourier": {"n": f.n, "scale": f.scale, "seed": f.seed}}
        elif isinstance(f, Layer):
            d["features"] = LAYER_OBJECT + _callable_name(type(f))
        elif isinstance(f, tuple):
            d["features"] = list(f)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLP:
        """Rebuilds a description written by ``to_dict``.

        Raises:
            ValueError: for a malformed description, and for one written from a model with a
                callable initializer (a description cannot hold the function: pass the model
                itself, e.g. ``load_checkpoint(path, model=model)``).
        """
        if not isinstance(d, dict) or "sizes" not in d:
            raise ValueError(f"MLP description: expected a dict with 'sizes', got {d!r:.80}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"MLP description has unknown fields {sorted(unknown)}")
        init = d.get("initializer")
        if isinstance(init, str) and init.startswith(CALLABLE_INITIALIZER):
            raise ValueError(
                f"initializer: the model had the callable initializer "
                f"{init[len(CALLABLE_INITIALIZER) :]}, which a description cannot hold; pass "
                "the model itself (for a checkpoint: load_checkpoint(path, model=model))"
            )
        for name in ("norm", "features"):
            v = d.get(name)
            if isinstance(v, str) and v.startswith(LAYER_OBJECT):
                raise ValueError(
                    f"{name}: the model had the layer {v[len(LAYER_OBJECT) :]} of its own, which "
                    "a description cannot hold; pass the model itself (for a checkpoint: "
                    "load_checkpoint(path, model=model))"
                )
        act = d.get("activation", "relu")
        d = {
            **d,
            "sizes": tuple(d["sizes"]) if isinstance(d["sizes"], list) else d["sizes"],
            "activation": tuple(act) if isinstance(act, list) else act,
        }
        f = d.get("features")
        if isinstance(f, dict):
            if set(f) != {"fourier"} or not isinstance(f["fourier"], dict):
                raise ValueError(f"features: malformed description {f!r:.80}")
            d["features"] = FourierFeatures(**f["fourier"])
        elif isinstance(f, list):
            d["features"] = tuple(f)
        return cls(**d)


@functools.lru_cache(maxsize=64)
def _init_program(model: MLP, x64: bool) -> Any:
    """``model``'s parameter draws as one jitted program (cached per model and x64 mode)."""
    return jax.jit(model._draw)


_PIECE_DEFAULTS = {"norm": None, "dropout": 0.0, "residual": False, "features": None}


def _init_shapes(layer: Layer, n_in: int, dtype: Any) -> Any:
    """The shapes of ``layer``'s parameters for input width ``n_in`` (``None``: none)."""
    if isinstance(layer, Affine):
        o = layer.n_out
        w, b = jax.ShapeDtypeStruct((n_in, o), dtype), jax.ShapeDtypeStruct((o,), dtype)
        return Dense(w, b)  # pyright: ignore[reportArgumentType]
    if isinstance(layer, LayerNorm):
        shape = jax.ShapeDtypeStruct((n_in,), dtype)
        return Norm(shape, shape)  # pyright: ignore[reportArgumentType]
    if isinstance(layer, (ActivationLayer, Dropout, SkipBegin, SkipEnd, Features, FourierFeatures)):
        return None
    out = jax.eval_shape(lambda k: layer.init(k, n_in, dtype), jax.random.key(0))
    return None if out is None or not jax.tree.leaves(out) else out


def dense(model: MLP, layer: Dense, a: jax.Array) -> jax.Array:
    """``z = a @ w + b`` for ``a`` ``(batch, fan_in)``, honouring ``model.compute_dtype``."""
    if model.compute_dtype is None:
        return a @ layer.w + layer.b[None, :]
    cd = jnp.dtype(model.compute_dtype)
    z = lax.dot_general(
        a.astype(cd),
        layer.w.astype(cd),
        (((1,), (0,)), ((), ())),
        preferred_element_type=layer.w.dtype,
    )
    return z + layer.b[None, :]


def check_params(model: MLP, params: Any, argname: str = "params") -> None:
    """Raises a clear error when ``params`` does not fit ``model`` (runs at trace time)."""
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a jaxmlp.MLP, got {type(model).__name__}")
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"{argname}: expected a tuple of Dense, got {type(params).__name__}")
    expected = model.param_shapes()
    if len(params) != len(expected):
        what = "layers" if model.plain else "entries (one per layer with parameters)"
        raise ValueError(
            f"{argname}: got {len(params)} {what}, expected {len(expected)} for sizes {model.sizes}"
        )
    dtype = None
    for l, (entry, like) in enumerate(zip(params, expected, strict=True)):
        kind = type(like).__name__
        fields = getattr(like, "_fields", None)
        if fields is not None and not all(hasattr(entry, f) for f in fields):
            fields_text = ", ".join(fields)
            raise TypeError(
                f"{argname}[{l}]: expected a {kind}({fields_text}), got {type(entry).__name__}"
            )
        if fields is not None:
            pairs = [(f".{f}", getattr(entry, f), getattr(like, f)) for f in fields]
        else:
            try:
                leaves = jax.tree.leaves_with_path(entry)
                if jax.tree.structure(entry) != jax.tree.structure(like):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"{argname}[{l}]: structure {jax.tree.structure(entry)}, expected "
                    f"{jax.tree.structure(like)}"
                ) from None
            pairs = [
                (jax.tree_util.keystr(p), a, s)
                for (p, a), s in zip(leaves, jax.tree.leaves(like), strict=True)
            ]
        for name, arr, spec in pairs:
            if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
                raise TypeError(
                    f"{argname}[{l}]{name}: expected an array, got {type(arr).__name__}"
                )
            if tuple(arr.shape) != tuple(spec.shape):
                raise ValueError(
                    f"{argname}[{l}]{name}: shape {tuple(arr.shape)}, expected {tuple(spec.shape)} "
                    f"for sizes {model.sizes}"
                )
            if not jnp.issubdtype(arr.dtype, jnp.floating):
                raise TypeError(f"{argname}[{l}]{name}: dtype {arr.dtype}, expected a float dtype")
            if dtype is None:
                dtype = arr.dtype
            elif arr.dtype != dtype:
                raise TypeError(
                    f"{argname}[{l}]{name}: dtype {arr.dtype} differs from the first layer's {dtype}"
                )


def params_dtype(params: Params) -> jnp.dtype:
    """The parameters' (common) dtype."""
    return jax.tree.leaves(params)[0].dtype


@setup_jit
def _nonfinite(arrays: list[jax.Array], key: jax.Array | None) -> jax.Array:
    flags = [(~jnp.all(jnp.isfinite(a))).astype(jnp.uint32)[None] for a in arrays]
    words = [] if key is None else [jax.random.key_data(key).ravel().astype(jnp.uint32)]
    return jnp.concatenate([jnp.zeros((0,), jnp.uint32), *flags, *words])


def nonfinite_and_key(arrays: Any, key: jax.Array | None) -> tuple[list[bool], np.ndarray | None]:
    """:func:`nonfinite` of ``arrays``, plus ``key``'s raw bits (uint32 words shaped
    ``key.shape + (words,)``; ``None`` without a key).

    Arrays NumPy reads in place (NumPy's, and JAX's on a CPU) are checked on the host: a compiled
    call and its read cost more there than the check. The others go to one compiled call whose
    one read also brings ``key``'s bits: ``fit`` needs both before it starts, and on a GPU every
    separate device-to-host read costs about 0.1-0.2 ms."""
    floats = [i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.inexact)]
    out = [False] * len(arrays)
    device = []  # the indices of the arrays left to the compiled check
    for i in floats:
        if on_host(arrays[i]):
            out[i] = host_nonfinite(arrays[i])
        else:
            device.append(i)
    if key is None and not device:
        return out, None
    if key is not None and not device and on_host(key):
        words = np.asarray(jax.random.key_data(key), np.uint32)
        return out, words.reshape(*jnp.shape(key), -1)
    words = np.asarray(jax.device_get(_nonfinite([arrays[i] for i in device], key)))
    for i, flag in zip(device, words[: len(device)], strict=True):
        out[i] = bool(flag)
    if key is None:
        return out, None
    return out, words[len(device) :].reshape(*jnp.shape(key), -1)


def nonfinite(*arrays: Any) -> list[bool]:
    """For each array, whether it holds a NaN or Inf (integer and bool arrays never do).

    One compiled call and one read of one flag vector for all of them: checking each array
    eagerly costs a dispatch and a blocking read apiece, which adds up in ``fit``'s per-call
    overhead (and on a GPU every separate read is a device-to-host copy).
    """
    return nonfinite_and_key(arrays, None)[0]


def check_finite_params(
    params: Params, argname: str = "params", *others: Any, key: jax.Array | None = None
) -> tuple[list[bool], np.ndarray | None]:
    """Eager value check: raises ``ValueError`` naming the first block holding NaN or Inf.

    ``others`` are checked in the same compiled call; returns their :func:`nonfinite` flags and,
    with ``key``, its raw bits read alongside (:func:`nonfinite_and_key`).
    """
    paths = jax.tree.leaves_with_path(tuple(params))
    flags, words = nonfinite_and_key([*(leaf for _, leaf in paths), *others], key)
    for (path, _), bad in zip(paths, flags, strict=False):
        if bad:
            raise ValueError(f"{argname}{jax.tree_util.keystr(path)}: contains NaN or Inf")
    return flags[len(paths) :], words


def as_array(value: Any, argname: str) -> Any:
    """``value`` itself when it is an array, else ``jnp.asarray(value)``; a ``TypeError`` naming
    ``argname`` for what cannot become a numeric array (None, strings, ragged lists)."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        try:
            value = jnp.asarray(value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{argname}: expected a numeric array, got {type(value).__name__} {value!r:.60}"
            ) from err
    if not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == jnp.bool_):
        raise TypeError(f"{argname}: expected a numeric array, got dtype {value.dtype}")
    return value


def _real_input(x: Any, argname: str) -> Any:
    x = as_array(x, argname)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{argname}: dtype {x.dtype}, expected a real (float or int) array")
    return x


def as_rows(
    model: MLP, x: Any, params: Params, argname: str = "x"
) -> tuple[jax.Array, tuple[int, ...]]:
    """Checks ``x`` ``(..., in)`` (any leading axes, or none) and returns it as rows
    ``(n, in)`` in the parameters' dtype, plus its leading shape for :func:`unrows`."""
    x = _real_input(x, argname)
    k = model.sizes[0]
    if x.ndim == 0:
        raise ValueError(f"{argname}: expected shape (..., {k}) or ({k},), got ()")
    if x.shape[-1] != k:
        raise ValueError(f"{argname}: expected {k} features (sizes[0]), got shape {tuple(x.shape)}")
    lead = tuple(x.shape[:-1])
    if 0 in lead:
        raise ValueError(f"{argname}: empty batch, shape {tuple(x.shape)}")
    x = jnp.asarray(x, params_dtype(params))
    return (x if x.ndim == 2 else x.reshape(-1, k)), lead


def unrows(out: jax.Array, lead: tuple[int, ...]) -> jax.Array:
    """Rows ``(n, k)`` back to ``lead + (k,)``: the inverse of :func:`as_rows`' flattening."""
    return out if len(lead) == 1 else out.reshape(*lead, out.shape[-1])


def as_batch(model: MLP, x: Any, params: Params, argname: str = "x") -> tuple[jax.Array, bool]:
    """Checks ``x`` and returns it as ``(batch, in)`` in the parameters' dtype, plus a flag
    telling whether a single example ``(in,)`` was given."""
    x = _real_input(x, argname)
    if x.ndim not in (1, 2):
        raise ValueError(
            f"{argname}: expected shape (batch, {model.sizes[0]}) or ({model.sizes[0]},), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[-1] != model.sizes[0]:
        raise ValueError(
            f"{argname}: expected {model.sizes[0]} features (sizes[0]), got shape {tuple(x.shape)}"
        )
    if x.ndim == 2 and x.shape[0] == 0:
        # A mean over no rows is 0/0: refuse here rather than return NaN or divide by zero.
        raise ValueError(f"{argname}: empty batch, shape {tuple(x.shape)}")
    single = x.ndim == 1
    x = jnp.asarray(x, params_dtype(params))
    return (x[None, :] if single else x), single
