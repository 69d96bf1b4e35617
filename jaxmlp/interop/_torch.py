"""``to_torch`` and ``from_torch``: a jaxmlp network as a ``torch.nn.Sequential`` and back."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxmlp._core.activations import OUTPUT_ACTIVATIONS
from jaxmlp._core.layers import (
    ActivationLayer,
    Affine,
    Dense,
    Dropout,
    Features,
    FourierFeatures,
    LayerNorm,
    Norm,
    SkipBegin,
    SkipEnd,
)
from jaxmlp._core.mlp import MLP, check_params, params_dtype

INSTALL_HINT = "PyTorch is not installed: pip install jaxmlp[torch]"
# The attribute of a module from to_torch that keeps the jaxmlp description it came from: the
# initializer and the compute dtype, which no torch module holds, come back from it.
MODEL_ATTR = "jaxmlp_model"
_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")


def require_torch(what: str) -> Any:
    """``import torch``, or an ``ImportError`` naming the extra that installs it."""
    try:
        import torch  # pyright: ignore[reportMissingImports]
    except ImportError as err:
        raise ImportError(f"{what}: {INSTALL_HINT}") from err
    return torch


# ---------------------------------------------------------------------------------------------
# jaxmlp -> torch


def _tensor(torch: Any, a: Any, transpose: bool = False) -> Any:
    """A jax array as a torch tensor of the same dtype and bits (a copy)."""
    arr = np.asarray(a)
    if transpose:
        arr = arr.T
    name = jnp.dtype(arr.dtype).name
    if name == "bfloat16":  # NumPy has no bfloat16 torch reads; float32 holds it exactly
        return torch.from_numpy(np.ascontiguousarray(arr, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True, order="C"))


def _activation_module(torch: Any, name: str, where: str) -> Any:
    from jaxmlp.interop import torch_modules as tm

    nn = torch.nn
    table = {
        "identity": nn.Identity,
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": lambda: nn.LeakyReLU(0.01),
        "elu": lambda: nn.ELU(alpha=1.0),
        "gelu": lambda: nn.GELU(approximate="none"),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "silu": nn.SiLU,
        "softplus": tm.Softplus,
        "sin": tm.Sin,
        "heaviside": tm.Heaviside,
        "softmax": lambda: nn.Softmax(dim=-1),
    }
    if name not in table:
        raise ValueError(
            f"{where}: the activation {name!r} has no PyTorch counterpart in to_torch "
            f"(supported: {sorted(table)})"
        )
    return table[name]()


def to_torch(model: MLP, params: Any) -> Any:
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a jaxmlp.MLP, got {type(model).__name__}")
    check_params(model, params)
    if model.compute_dtype is not None:
        raise ValueError(
            f"model: compute_dtype={model.compute_dtype!r} (mixed precision) has no torch.nn.Linear "
            "counterpart; convert dataclasses.replace(model, compute_dtype=None)"
        )
    torch = require_torch("to_torch")
    from jaxmlp.interop import torch_modules as tm

    nn = torch.nn
    # the parameters' dtype (gradcheck converts a float32 model's parameters to float64)
    dtype_name = params_dtype(params).name
    dtype = getattr(torch, dtype_name)
    out: list[Any] = []
    block: list[Any] | None = None  # the modules of an open residual block
    n_in = model.sizes[0]
    for i, (layer, slot) in enumerate(zip(model.layers, model.param_slots, strict=True)):
        where = f"model.layers[{i}]"
        p: Any = None if slot is None else params[slot]
        target = out if block is None else block
        if isinstance(layer, SkipBegin):
            block = []
        elif isinstance(layer, SkipEnd):
            out.append(tm.Residual(*(block or [])))
            block = None
        elif isinstance(layer, Affine):
            lin = nn.Linear(n_in, layer.n_out, device="meta", dtype=dtype)
            lin.weight = nn.Parameter(_tensor(torch, p.w, transpose=True))
            lin.bias = nn.Parameter(_tensor(torch, p.b))
            target.append(lin)
        elif isinstance(layer, ActivationLayer):
            target.append(_activation_module(torch, layer.activation, where))
        elif isinstance(layer, LayerNorm):
            ln = nn.LayerNorm(n_in, eps=layer.eps, device="meta", dtype=dtype)
            ln.weight = nn.Parameter(_tensor(torch, p.scale))
            ln.bias = nn.Parameter(_tensor(torch, p.offset))
            target.append(ln)
        elif isinstance(layer, Dropout):
            target.append(nn.Dropout(layer.rate))
        elif isinstance(layer, FourierFeatures):
            m = _tensor(torch, layer.matrix(n_in, dtype_name))
            target.append(tm.FourierFeatures(layer.n, layer.scale, layer.seed, m))
        elif isinstance(layer, Features):
            target.append(tm.Features(model.features, n_in))
        else:
            raise ValueError(
                f"{where}: the layer {type(layer).__name__} ({layer.describe()}) has no PyTorch "
                "counterpart in to_torch"
            )
        n_in = layer.out_size(n_in)
    module = nn.Sequential(*out)
    setattr(module, MODEL_ATTR, model)  # a plain attribute: the description, for from_torch
    return module.eval()


# ---------------------------------------------------------------------------------------------
# torch -> jaxmlp


def _supported_text() -> str:
    return (
        "supported: torch.nn.Linear, LayerNorm, Dropout, Identity, ReLU, Tanh, Sigmoid, "
        "LeakyReLU(0.01), ELU(1.0), GELU (both forms), SiLU, Softplus(beta=1), Softmax(dim=-1), "
        "and jaxmlp.interop.torch_modules' Residual, Sin, Heaviside, Softplus, Features, "
        "FourierFeatures"
    )


def _activation_name(torch: Any, m: Any, where: str) -> str | None:
    """jaxmlp's name for an activation module, or ``None`` when ``m`` is not one."""
    from jaxmlp.interop import torch_modules as tm

    nn = torch.nn
    simple = {
        nn.Identity: "identity",
        nn.ReLU: "relu",
        nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid",
        nn.SiLU: "silu",
        tm.Sin: "sin",
        tm.Heaviside: "heaviside",
        tm.Softplus: "softplus",
    }
    kind = type(m)
    if kind in simple:
        return simple[kind]
    if kind is nn.LeakyReLU:
        if m.negative_slope != 0.01:
            raise ValueError(
                f"{where}: LeakyReLU(negative_slope={m.negative_slope}); jaxmlp's leaky_relu has "
                "slope 0.01"
            )
        return "leaky_relu"
    if kind is nn.ELU:
        if m.alpha != 1.0:
            raise ValueError(f"{where}: ELU(alpha={m.alpha}); jaxmlp's elu has alpha 1.0")
        return "elu"
    if kind is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}[m.approximate]
    if kind is nn.Softplus:
        if m.beta != 1:
            raise ValueError(f"{where}: Softplus(beta={m.beta}); jaxmlp's softplus has beta 1")
        return "softplus"
    if kind is nn.Softmax:
        if m.dim not in (-1, 1):
            raise ValueError(
                f"{where}: Softmax(dim={m.dim}); jaxmlp's softmax runs over the features (dim=-1)"
            )
        return "softmax"
    return None


def _array(torch: Any, t: Any) -> Any:
    """A torch tensor as a jax array of the same dtype and bits."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), jnp.bfloat16)
    return jnp.asarray(t.numpy())


class _Group:
    """One affine layer of the torch network and what follows it."""

    def __init__(self, linear: Any, where: str, residual: bool):
        self.linear, self.where, self.residual = linear, where, residual
        self.norm: Any = None
        self.act: str | None = None
        self.act_where = where
        self.dropout: Any = None
        self.dropout_where = where


def _walk(torch: Any, modules: list[tuple[str, Any]], groups: list[_Group], residual: bool) -> Any:
    """Reads ``(path, module)`` pairs into ``groups``; returns the feature module, if any."""
    from jaxmlp.interop import torch_modules as tm

    nn = torch.nn
    features = None
    for path, m in modules:
        where = f"module{path}"
        cur = groups[-1] if groups else None
        if isinstance(m, tm.Residual):
            if residual:
                raise ValueError(f"{where}: a Residual inside a Residual has no jaxmlp counterpart")
            before = len(groups)
            _walk(torch, [(f"{path}[{i}]", c) for i, c in enumerate(m)], groups, True)
            if len(groups) != before + 1:
                raise ValueError(
                    f"{where}: a Residual must hold exactly one Linear (with its LayerNorm, "
                    f"activation and Dropout), got {len(groups) - before}"
                )
            continue
        if isinstance(m, (tm.Features, tm.FourierFeatures)):
            if groups or features is not None or residual:
                raise ValueError(f"{where}: a feature map must be the first module")
            features = m
        elif type(m) is nn.Linear:
            groups.append(_Group(m, where, residual))
        elif type(m) is nn.LayerNorm:
            if (
                cur is None
                or cur.norm is not None
                or cur.act is not None
                or cur.residual != residual
            ):
                raise ValueError(
                    f"{where}: a LayerNorm must follow a Linear directly (jaxmlp: affine, layer "
                    "norm, activation)"
                )
            cur.norm = m
        elif type(m) is nn.Dropout:
            if (
                cur is None
                or cur.act is None
                or cur.dropout is not None
                or cur.residual != residual
            ):
                raise ValueError(
                    f"{where}: a Dropout must follow a hidden layer's activation (jaxmlp drops "
                    "hidden activations only)"
                )
            cur.dropout, cur.dropout_where = m, where
        else:
            name = _activation_name(torch, m, where)
            if name is None:
                raise ValueError(
                    f"{where}: {type(m).__module__}.{type(m).__qualname__} has no jaxmlp "
                    f"counterpart; {_supported_text()}"
                )
            if cur is None or cur.act is not None or cur.dropout is not None:
                raise ValueError(
                    f"{where}: the activation {type(m).__name__} must follow a Linear (or its "
                    "LayerNorm); two activations in a row have no jaxmlp counterpart"
                )
            if cur.residual != residual:
                raise ValueError(f"{where}: an activation must sit inside its layer's Residual")
            cur.act, cur.act_where = name, where
    return features


def _dtype_of(torch: Any, groups: list[_Group]) -> str:
    dtypes = set()
    for g in groups:
        for m in (g.linear, g.norm):
            if m is not None:
                dtypes |= {p.dtype for p in m.parameters()}
    names = {str(d).removeprefix("torch.") for d in dtypes}
    if len(names) != 1:
        raise ValueError(f"module: the parameters have several dtypes {sorted(names)}")
    (name,) = names
    if name not in _TORCH_DTYPES:
        raise ValueError(f"module: parameters of dtype {name}, expected one of {_TORCH_DTYPES}")
    return name


def from_torch(module: Any) -> tuple[MLP, tuple[Any, ...]]:
    torch = require_torch("from_torch")
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if type(module) is not nn.Sequential:
        raise TypeError(
            f"module: expected a torch.nn.Sequential, got {type(module).__module__}."
            f"{type(module).__qualname__}"
        )
    groups: list[_Group] = []
    features = _walk(torch, [(f"[{i}]", m) for i, m in enumerate(module)], groups, False)
    if not groups:
        raise ValueError("module: holds no torch.nn.Linear")
    dtype = _dtype_of(torch, groups)

    # the widths: the feature map's input, then each Linear's
    if features is None:
        n_raw = groups[0].linear.in_features
        width = n_raw
    elif hasattr(features, "matrix"):
        n_raw, width = features.matrix.shape[0], 2 * features.n
    else:
        n_raw, width = features.n_in, len(features.names)
    sizes = [n_raw]
    for g in groups:
        if g.linear.in_features != width:
            raise ValueError(
                f"{g.where}: Linear({g.linear.in_features}, {g.linear.out_features}) reads "
                f"{g.linear.in_features} features, the module before it gives {width}"
            )
        width = g.linear.out_features
        sizes.append(width)

    *hidden, last = groups
    output = last.act or "identity"
    if output not in OUTPUT_ACTIVATIONS:
        raise ValueError(
            f"{last.act_where}: the output activation {output!r} is not one of jaxmlp's output "
            f"activations {list(OUTPUT_ACTIVATIONS)}"
        )
    for what, bad in (
        ("LayerNorm", last.norm),
        ("Dropout", last.dropout),
        ("Residual", last.residual or None),
    ):
        if bad is not None:
            raise ValueError(
                f"{last.where}: a {what} on the output layer has no jaxmlp counterpart"
            )
    acts = []
    for g in hidden:
        act = g.act or "identity"
        if act == "softmax":
            raise ValueError(f"{g.act_where}: softmax is an output activation only in jaxmlp")
        acts.append(act)

    norms = [g.norm is not None for g in hidden]
    if any(norms) and not all(norms):
        missing = next(g.where for g in hidden if g.norm is None)
        raise ValueError(
            f"{missing}: jaxmlp puts a LayerNorm after every hidden Linear or after none; "
            "this one has none"
        )
    for g in hidden:
        if g.norm is None:
            continue
        ln = g.norm
        if tuple(ln.normalized_shape) != (g.linear.out_features,):
            raise ValueError(f"{g.where}: LayerNorm{tuple(ln.normalized_shape)} must normalise "
                             f"the Linear's {g.linear.out_features} features")  # fmt: skip
        if ln.eps != 1e-5:
            raise ValueError(
                f"{g.where}: LayerNorm(eps={ln.eps}); jaxmlp's layer norm has eps 1e-5"
            )
    rates = {0.0 if g.dropout is None else float(g.dropout.p) for g in hidden}
    if len(rates) > 1:
        raise ValueError(
            f"module: jaxmlp applies one dropout rate to every hidden layer, got {sorted(rates)}"
        )
    rate = rates.pop() if rates else 0.0
    residual = any(g.residual for g in hidden)
    for g in hidden:
        w_in = g.linear.in_features
        same = w_in == g.linear.out_features
        if g.residual and not same:
            raise ValueError(
                f"{g.where}: a Residual around Linear({w_in}, {g.linear.out_features}) changes the "
                "width"
            )
        if residual and same and not g.residual:
            raise ValueError(
                f"{g.where}: jaxmlp's residual=True adds a skip to every hidden layer that keeps "
                f"the width; this Linear({w_in}, {w_in}) has no Residual around it"
            )

    if features is None:
        feat: Any = None
    elif hasattr(features, "matrix"):
        feat = FourierFeatures(features.n, features.scale, features.seed)
    else:
        feat = features.spec
    model = MLP(
        tuple(sizes),
        activation=acts[0] if acts and len(set(acts)) == 1 else (tuple(acts) if acts else "relu"),
        output_activation=output,
        param_dtype=dtype,
        norm="layernorm" if any(norms) else None,
        dropout=rate,
        residual=residual,
        features=feat,
    )
    if isinstance(feat, FourierFeatures):
        expect = np.asarray(feat.matrix(sizes[0], dtype), np.float64)
        got = _array(torch, features.matrix)  # pyright: ignore[reportOptionalMemberAccess]
        if not np.array_equal(np.asarray(got, np.float64), expect):
            raise ValueError(
                "module[0]: the FourierFeatures matrix is not 2 pi B drawn from its seed "
                f"{feat.seed}; jaxmlp keeps B in the description (n, scale, seed), not in the "
                "parameters"
            )
    carried = getattr(module, MODEL_ATTR, None)
    if isinstance(carried, MLP) and _same_network(carried, model):
        model = carried  # keeps the initializer and the activation's spelling

    params: list[Any] = []
    for g in groups:
        lin = g.linear
        b = (
            lin.bias
            if lin.bias is not None
            else torch.zeros(lin.out_features, dtype=lin.weight.dtype)
        )
        params.append(Dense(_array(torch, lin.weight.T), _array(torch, b)))
        if g.norm is not None:
            ln, n = g.norm, g.linear.out_features
            scale = ln.weight if ln.weight is not None else torch.ones(n, dtype=lin.weight.dtype)
            offset = ln.bias if ln.bias is not None else torch.zeros(n, dtype=lin.weight.dtype)
            params.append(Norm(_array(torch, scale), _array(torch, offset)))
    out = tuple(params)
    check_params(model, out)
    return model, out


def _same_network(a: MLP, b: MLP) -> bool:
    """Whether two descriptions compute the same function from the same parameters."""
    skips = lambda m: tuple(m.has_skip(l) for l in range(m.num_layers - 1))  # noqa: E731
    return (
        a.sizes == b.sizes
        and a.activations == b.activations
        and a.param_dtype == b.param_dtype
        and a.norm == b.norm
        and a.dropout == b.dropout
        and skips(a) == skips(b)
        and a.feature_layer == b.feature_layer
        and a.compute_dtype is None
    )
