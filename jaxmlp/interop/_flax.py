"""``to_flax_params`` and ``from_flax_params``: the parameter tuple as Flax linen would name it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxmlp._core.layers import Affine, Dense, LayerNorm, Norm
from jaxmlp._core.mlp import MLP, check_params

# flax.linen's auto-names in a compact module: the class name and a counter per class.
_NAMES = {Affine: "Dense", LayerNorm: "LayerNorm"}


def _layout(model: MLP) -> list[tuple[int, str, type]]:
    """``(slot, module name, kind)`` per layer with parameters, in stack order."""
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a jaxmlp.MLP, got {type(model).__name__}")
    counters: dict[str, int] = {}
    out = []
    for i, (layer, slot) in enumerate(zip(model.layers, model.param_slots, strict=True)):
        if slot is None:
            continue
        kind = type(layer)
        if kind not in _NAMES:
            raise ValueError(
                f"model.layers[{i}]: the layer {kind.__name__} ({layer.describe()}) has no Flax "
                "linen counterpart (Dense and LayerNorm only)"
            )
        base = _NAMES[kind]
        n = counters.get(base, 0)
        counters[base] = n + 1
        out.append((slot, f"{base}_{n}", kind))
    return out


def to_flax_params(model: MLP, params: Any) -> dict[str, Any]:
    layout = _layout(model)
    check_params(model, params)
    tree: dict[str, Any] = {}
    for slot, name, kind in layout:
        p = params[slot]
        if kind is Affine:
            tree[name] = {"kernel": p.w, "bias": p.b}
        else:
            tree[name] = {"scale": p.scale, "bias": p.offset}
    return {"params": tree}


def _mapping(value: Any, argname: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise TypeError(f"{argname}: expected a dict, got {type(value).__name__}")
    return value


def from_flax_params(model: MLP, variables: Any) -> tuple[Any, ...]:
    layout = _layout(model)
    variables = _mapping(variables, "variables")
    if set(variables) != {"params"}:
        raise ValueError(
            f"variables: expected {{'params': ...}} (flax.linen's variables), got the keys "
            f"{sorted(map(str, variables))}"
        )
    tree = _mapping(variables["params"], "variables['params']")
    expected = {name for _, name, _ in layout}
    if set(tree) != expected:
        missing, extra = sorted(expected - set(tree)), sorted(set(map(str, tree)) - expected)
        raise ValueError(
            f"variables['params']: expected the modules {sorted(expected)}; missing {missing}, "
            f"unexpected {extra}"
        )
    params: list[Any] = [None] * len(layout)
    shapes = model.param_shapes()
    for slot, name, kind in layout:
        entry = _mapping(tree[name], f"variables['params'][{name!r}]")
        fields = ("kernel", "bias") if kind is Affine else ("scale", "bias")
        if set(entry) != set(fields):
            raise ValueError(
                f"variables['params'][{name!r}]: expected the keys {list(fields)}, got "
                f"{sorted(map(str, entry))}"
            )
        for f, like in zip(fields, shapes[slot], strict=True):
            shape = tuple(getattr(entry[f], "shape", ()))
            if shape != tuple(like.shape):
                raise ValueError(
                    f"variables['params'][{name!r}][{f!r}]: shape {shape}, expected "
                    f"{tuple(like.shape)} for sizes {model.sizes}"
                )
        params[slot] = (Dense if kind is Affine else Norm)(*(entry[f] for f in fields))
    out = tuple(params)
    check_params(model, out, "variables")
    return out
