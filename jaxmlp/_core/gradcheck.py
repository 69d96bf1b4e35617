"""``gradcheck``: manual gradients against ``jax.grad`` and against central finite differences,
and the manual forward mode against ``jax.jvp``.

Three numbers per layer and per ``w``/``b``, for each comparison:
    max abs error      max |g_manual - g_ref|
    max rel error      max abs error / max |g_ref| over the whole gradient (its scale)
    cosine similarity  <g_manual, g_ref> / (||g_manual|| ||g_ref||)
Manual vs autodiff runs in the parameters' own dtype. Finite differences run in float64 (under
``jax.enable_x64``) on the manual gradient recomputed in float64: along random unit directions
for every block, and entry by entry for blocks with at most ``entrywise_max`` entries.
Forward mode: the hand-written tangent pass (``jax.jvp`` of ``apply_manual``) against ``jax.jvp``
of the plain forward pass (``model.apply``), along random unit directions in each block and in
``x``, in the parameters' dtype and with the same tolerances as the gradient against ``jax.grad``.
With ``against="torch"``, PyTorch autograd is a further reference: the network converted by
``jaxmlp.interop.to_torch`` in float64, differentiated by ``loss.backward()``, against the manual
gradient in float64 with the float64 tolerances.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmlp._checks import check_key
from jaxmlp._core.backprop import (
    apply_manual,
    backward,
    check_model_loss,
    forward,
    loss_fn,
    loss_head,
    prepare_batch,
    value_and_grad,
)
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Params, as_array, check_params

# Manual vs autodiff, in the parameters' dtype: |m - a| <= atol * scale + rtol * |a|,
# scale = max |a| over the whole gradient.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    "bfloat16": (2e-2, 2e-3),
    "float16": (1e-2, 1e-3),
}
# Finite differences (float64, central, step FD_EPS): truncation ~eps^2, rounding ~1e-16/eps.
FD_EPS = 1e-6
FD_RTOL, FD_ATOL = 1e-6, 1e-8
# The references gradcheck can add to jax.grad and the finite differences.
AGAINST = ("torch",)


class Comparison(NamedTuple):
    """One block's agreement with a reference gradient."""

    max_abs: float
    max_rel: float
    cosine: float
    ok: bool


class GradCheckRow(NamedTuple):
    """One parameter block (layer ``layer``, ``w`` or ``b``).

    ``forward_mode`` compares the output's hand-written JVP along directions in this block with
    ``jax.jvp`` of the plain forward pass (``None``: not checked); ``torch`` the manual gradient
    (float64) with PyTorch autograd's (``None``: not checked, ``against=None``).
    """

    layer: int
    name: str
    shape: tuple[int, ...]
    autodiff: Comparison
    finite_diff: Comparison
    fd_kind: str
    forward_mode: Comparison | None = None
    torch: Comparison | None = None

    @property
    def ok(self) -> bool:
        """Whether this block agrees with every reference it was checked against."""
        return (
            self.autodiff.ok
            and self.finite_diff.ok
            and all(c is None or c.ok for c in (self.forward_mode, self.torch))
        )


class GradCheckReport(NamedTuple):
    """The result of :func:`gradcheck`; ``print`` it for the per-layer table.

    ``input_forward_mode`` compares the hand-written JVP along directions in ``x`` with
    ``jax.jvp`` of the plain forward pass; ``input_autodiff`` and ``input_finite_diff`` the
    hand-written backward's ``dL/dx`` with ``jax.grad`` in ``x`` and with central differences
    along directions in ``x`` (float64): the only check of a layer before every parameter,
    such as an input feature map (``None``: not checked).
    """

    rows: tuple[GradCheckRow, ...]
    dtype: str
    rtol: float
    atol: float
    input_forward_mode: Comparison | None = None
    input_autodiff: Comparison | None = None
    input_finite_diff: Comparison | None = None

    @property
    def ok(self) -> bool:
        """True when every block agrees with both references (and PyTorch autograd, when
        checked), and the forward mode with ``jax.jvp``, within the tolerances; ``dL/dx``
        too."""
        checks = (self.input_forward_mode, self.input_autodiff, self.input_finite_diff)
        return all(r.ok for r in self.rows) and all(c is None or c.ok for c in checks)

    def __str__(self) -> str:
        head = (
            f"{'layer':>5} {'param':>6} {'shape':>10} | {'vs jax.grad: max abs':>20} {'max rel':>9} "
            f"{'cosine':>10} | {'vs finite diff: max abs':>23} {'max rel':>9} {'cosine':>10} {'how':>10} "
            f"| {'jvp vs jax.jvp: max rel':>23} {'cosine':>10}"
        )
        with_torch = any(r.torch is not None for r in self.rows)
        if with_torch:
            head += f" | {'vs torch: max rel':>17} {'cosine':>10}"
        head += " | ok"
        lines = [
            f"gradcheck: manual backward vs jax.grad ({self.dtype}, rtol={self.rtol:g}, "
            f"atol={self.atol:g} x scale) and vs central finite differences (float64); "
            "manual forward mode (jvp) vs jax.jvp (float64)"
            + ("; vs PyTorch autograd (float64)" if with_torch else ""),
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            ad, fd, fm = r.autodiff, r.finite_diff, r.forward_mode
            torch_cells = ""
            if with_torch:
                tc = r.torch
                cells = "not checked" if tc is None else f"{tc.max_rel:>17.2e} {tc.cosine:>10.7f}"
                torch_cells = f" | {cells:>28}"
            lines.append(
                f"{r.layer:>5} {r.name:>6} {r.shape!s:>10} | {ad.max_abs:>20.3e} {ad.max_rel:>9.2e} "
                f"{ad.cosine:>10.7f} | {fd.max_abs:>23.3e} {fd.max_rel:>9.2e} {fd.cosine:>10.7f} "
                f"{r.fd_kind:>10} | {_forward_cells(fm)}{torch_cells} | {'yes' if r.ok else 'NO'}"
            )
        fx, ax, dx = self.input_forward_mode, self.input_autodiff, self.input_finite_diff
        if (fx, ax, dx) != (None, None, None):
            torch_cells = f" | {'':>28}" if with_torch else ""
            ok = all(c is None or c.ok for c in (fx, ax, dx))
            ad_cells = (
                f"{'':>20} {'':>9} {'':>10}"
                if ax is None
                else f"{ax.max_abs:>20.3e} {ax.max_rel:>9.2e} {ax.cosine:>10.7f}"
            )
            fd_cells = (
                f"{'':>23} {'':>9} {'':>10} {'':>10}"
                if dx is None
                else f"{dx.max_abs:>23.3e} {dx.max_rel:>9.2e} {dx.cosine:>10.7f} {'directions':>10}"
            )
            lines.append(
                f"{'input':>5} {'x':>6} {'':>10} | {ad_cells} | {fd_cells} | "
                f"{_forward_cells(fx)}{torch_cells} | {'yes' if ok else 'NO'}"
            )
        lines.append(f"overall: {'OK' if self.ok else 'MISMATCH'}")
        return "\n".join(lines)


def _forward_cells(c: Comparison | None) -> str:
    if c is None:
        return f"{'not checked':>23} {'':>10}"
    return f"{c.max_rel:>23.2e} {c.cosine:>10.7f}"


def _compare(m: np.ndarray, ref: np.ndarray, scale: float, rtol: float, atol: float) -> Comparison:
    m, ref = np.asarray(m, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    err = np.abs(m - ref)
    max_abs = float(err.max(initial=0.0))
    denom = np.linalg.norm(m) * np.linalg.norm(ref)
    # Two zero vectors agree perfectly; one zero and one not do not.
    if denom > 0:
        cosine = float(np.dot(m, ref) / denom)
    else:
        cosine = 1.0 if max_abs == 0 else 0.0
    ok = bool(np.all(err <= atol * scale + rtol * np.abs(ref)))
    return Comparison(max_abs, max_abs / scale if scale > 0 else max_abs, cosine, ok)


def _blocks(params: Params) -> list[tuple[int, str, Any]]:
    """``(entry, name, array)`` per parameter array, in pytree order: ``w`` and ``b`` of a
    Dense, ``scale`` and ``offset`` of a Norm, a key path for a layer of the user's."""
    out = []
    for l, p in enumerate(params):
        for path, leaf in jax.tree.leaves_with_path(p):
            name = jax.tree_util.keystr(path)
            out.append((l, name[1:] if name.startswith(".") else name, leaf))
    return out


def _replace_block(params: Params, b: int, value) -> Params:
    """``params`` with its ``b``-th array (in pytree order) replaced by ``value``."""
    leaves, tree = jax.tree.flatten(params)
    leaves[b] = value
    return jax.tree.unflatten(tree, leaves)


def _directions(p64: Params, key, num_directions: int, entrywise_max: int):
    """Random unit directions per block (plus the unit vectors of blocks with at most
    ``entrywise_max`` entries), drawn on the host from ``key``, each padded to the largest
    block: ``(which block, direction)`` rows for :func:`_differences`."""
    blocks = _blocks(p64)
    width = max(p_block.size for _, _, p_block in blocks)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    dirs, which = [], []
    for b, (_, _, p_block) in enumerate(blocks):
        d = rng.standard_normal((num_directions, p_block.size))
        d /= np.sqrt(np.sum(d**2, axis=1, keepdims=True))
        if p_block.size <= entrywise_max:
            d = np.concatenate([d, np.eye(p_block.size)])
        dirs.append(np.pad(d, ((0, 0), (0, width - p_block.size))))
        which.append(np.full(d.shape[0], b))
    return np.concatenate(which), np.concatenate(dirs)


def _shifted(b: int, p64: Params, v: jax.Array, step: float) -> Params:
    p_block = jax.tree.leaves(p64)[b]
    return _replace_block(p64, b, p_block + step * v[: p_block.size].reshape(p_block.shape))


def _differences(objective, p64: Params, data, which: jax.Array, dirs: jax.Array) -> jax.Array:
    """Central differences of ``objective`` along each row of ``dirs`` (in block ``which``).

    One copy of the objective: a ``lax.switch`` adds the direction to its block and
    ``lax.map`` runs the directions one after another, so memory stays that of one forward
    pass and the program compiles once for all blocks.
    """
    branches = [functools.partial(_shifted, b) for b in range(len(jax.tree.leaves(p64)))]

    def along(args):
        b, v = args
        # central difference (L(p + eps v) - L(p - eps v)) / (2 eps) along v
        plus = objective(lax.switch(b, branches, p64, v, FD_EPS), *data)
        minus = objective(lax.switch(b, branches, p64, v, -FD_EPS), *data)
        return (plus - minus) / (2 * FD_EPS)

    return lax.map(along, (which, dirs))


def _jvp_directions(params: Params, x: jax.Array, key, num_directions: int):
    """``num_directions`` random unit directions in each parameter block and in ``x``, drawn on
    the host: ``(which, direction)`` rows, ``which`` the block (the last for ``x``), each padded
    to the largest block."""
    sizes = [p_block.size for _, _, p_block in _blocks(params)] + [x.size]
    width = max(sizes)
    # a stream of its own: these directions are not the finite differences' ones
    rng = np.random.default_rng([*np.asarray(jax.random.key_data(key)).ravel().tolist(), 1])
    dirs, which = [], []
    for b, size in enumerate(sizes):
        d = rng.standard_normal((num_directions, size))
        d /= np.sqrt(np.sum(d**2, axis=1, keepdims=True))
        dirs.append(np.pad(d, ((0, 0), (0, width - size))))
        which.append(np.full(num_directions, b))
    return np.concatenate(which), np.concatenate(dirs)


def _jvps(model: MLP, jvp_fn: Callable, params: Params, x: jax.Array, which, dirs):
    """The JVP under test and ``jax.jvp`` of ``model.apply`` along each row of ``dirs``.

    Like :func:`_differences`: a ``lax.switch`` puts the direction in its block of an otherwise
    zero tangent ``(dparams, dx)``, and ``lax.map`` runs the directions one after another.
    """
    zeros = jax.tree.map(jnp.zeros_like, params)
    dx0 = jnp.zeros_like(x)

    def in_params(b, v):
        return _shifted(b, zeros, v, 1.0), dx0

    def in_x(v):
        return zeros, v[: x.size].reshape(x.shape).astype(x.dtype)

    n_blocks = len(jax.tree.leaves(params))
    branches = [functools.partial(in_params, b) for b in range(n_blocks)] + [in_x]

    def along(args):
        b, v = args
        dparams, dx = lax.switch(b, branches, v.astype(x.dtype))
        reference = jax.jvp(model.apply, (params, x), (dparams, dx))[1]
        return jvp_fn(params, x, dparams, dx), reference

    return lax.map(along, (which, dirs))


def _manual_jvp(model: MLP):
    """``(params, x, dparams, dx) -> d out``: ``jax.jvp`` of ``apply_manual``, the tangent pass."""

    def jvp_fn(params, x, dparams, dx):
        return jax.jvp(functools.partial(apply_manual, model), (params, x), (dparams, dx))[1]

    return jvp_fn


@functools.lru_cache(maxsize=32)
def _jvp_program(model: MLP):
    """The compiled forward-mode comparison with the hand-written JVP, cached on the model."""
    return jax.jit(functools.partial(_jvps, model, _manual_jvp(model)))


@functools.lru_cache(maxsize=32)
def _programs(model: MLP, loss: str | Loss, l2: float, l1: float):
    """The compiled manual, autodiff and finite-difference programs, cached on the static
    description so that repeated checks of one model compile once. Each takes a training key
    (``None``: inference) as its last argument."""
    objective = loss_fn(model, loss, l2=l2, l1=l1)
    keyed = lambda f: lambda p, x, y, sw, k: f(p, x, y, sw, key=k)  # noqa: E731
    return (
        jax.jit(keyed(value_and_grad(model, loss, method="manual", l2=l2, l1=l1))),
        jax.jit(keyed(value_and_grad(model, loss, method="autodiff", l2=l2, l1=l1))),
        jax.jit(functools.partial(_differences, keyed(objective))),
    )


def gradcheck(
    model: MLP,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    loss: str | Loss,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    sample_weight: jax.typing.ArrayLike | None = None,
    train_key: jax.Array | None = None,
    grad_fn: Callable | None = None,
    jvp_fn: Callable | None = None,
    num_directions: int = 4,
    entrywise_max: int = 64,
    key: jax.Array | None = None,
    against: str | None = None,
) -> GradCheckReport:
    """Checks the manual gradient of ``loss`` at ``params`` against two independent references.

    Args:
        model: the network.
        params: the point to check at.
        x: ``(batch, sizes[0])``.
        y: targets as ``loss`` expects.
        loss: a loss name or ``jaxmlp.Loss``.
        l2: as in ``value_and_grad``.
        l1: as in ``value_and_grad``.
        sample_weight: as in ``value_and_grad``.
        train_key: checks training mode (dropout) with the masks this key draws: every
            gradient and every finite difference sees the same masks. ``None``: inference.
        grad_fn: the gradient under test, ``(params, x, y, sample_weight) -> (value, grads)``;
            defaults to ``value_and_grad(model, loss, method="manual", l2=l2, l1=l1)``; with
            ``train_key`` it is called with ``key=train_key`` too. Pass a deliberately broken
            one to see the check fail.
        jvp_fn: the forward mode under test, ``(params, x, dparams, dx) -> d out`` (the
            output's change along the tangent ``(dparams, dx)``); defaults to ``jax.jvp`` of
            ``apply_manual``, the hand-written tangent pass. It is compared with ``jax.jvp`` of
            ``model.apply`` along ``num_directions`` random unit directions in each block and
            in ``x``.
        num_directions: random unit directions per block for the directional differences and
            for the forward-mode comparison.
        entrywise_max: blocks with at most this many entries are also checked entry by entry.
        key: PRNG key for the directions (default ``jax.random.key(0)``).
        against: ``"torch"`` adds PyTorch autograd as a further reference (a column of the
            table, ``GradCheckRow.torch``): the network as ``jaxmlp.interop.to_torch`` builds it,
            in float64, and ``loss.backward()`` through it; the loss's own derivative with
            respect to the network's output comes from ``jax.grad`` of the loss (it is the same
            function on both sides), the rest of the chain rule and the ``l2``/``l1``
            penalties from PyTorch. Compared with the manual gradient in float64, with the
            float64 tolerances. Inference mode only (``train_key=None``: PyTorch cannot draw
            jaxmlp's dropout masks). ``None``: no further reference.

    Returns:
        A :class:`GradCheckReport`; ``.ok`` is the verdict, ``str()`` the table.

    Raises:
        ImportError: ``against="torch"`` without PyTorch installed (``pip install
            jaxmlp[torch]``).
    """
    check_params(model, params)
    for value, argname, low in (
        (num_directions, "num_directions", 1),
        (entrywise_max, "entrywise_max", 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{argname}: expected an int >= {low}, got {value!r}")
    for fn, argname in ((grad_fn, "grad_fn"), (jvp_fn, "jvp_fn")):
        if fn is not None and not callable(fn):
            raise TypeError(f"{argname}: expected a callable, got {type(fn).__name__}")
    key = jax.random.key(0) if key is None else check_key(key)
    if against is not None and against not in AGAINST:
        raise ValueError(f"against: expected None or one of {list(AGAINST)}, got {against!r}")
    if against == "torch":
        if train_key is not None:
            raise ValueError(
                "against: 'torch' checks inference mode only; pass train_key=None (PyTorch "
                "cannot draw jaxmlp's dropout masks)"
            )
        from jaxmlp.interop._torch import require_torch

        require_torch("gradcheck(against='torch')")
    # Arrays before jit: jit's own error for a string or None names no argument.
    x, y = as_array(x, "x"), as_array(y, "y")
    sample_weight = None if sample_weight is None else as_array(sample_weight, "sample_weight")
    dtype = jnp.dtype(jax.tree.leaves(params)[0].dtype).name
    if dtype not in TOLERANCES:
        raise ValueError(f"params: no tolerance for dtype {dtype}")
    rtol, atol = TOLERANCES[dtype]
    train_key = None if train_key is None else check_key(train_key, "train_key")
    manual, autodiff, differences = _programs(model, loss, l2, l1)
    if grad_fn is None:
        grad_fn = manual
    else:
        user_fn = grad_fn
        if train_key is None:
            grad_fn = jax.jit(lambda p, x, y, sw, k: user_fn(p, x, y, sw))
        else:
            grad_fn = jax.jit(lambda p, x, y, sw, k: user_fn(p, x, y, sw, key=k))
    _, g_manual = grad_fn(params, x, y, sample_weight, train_key)
    _, g_auto = autodiff(params, x, y, sample_weight, train_key)
    # NumPy, not jnp: eager jnp ops compile once per block shape.
    scale = max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(g_auto))
    with jax.enable_x64(True):
        f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), t)  # noqa: E731
        p64, x64 = f64(params), jnp.asarray(np.asarray(x, np.float64))
        y_np = np.asarray(y)
        y64 = jnp.asarray(
            y_np if np.issubdtype(y_np.dtype, np.integer) else y_np.astype(np.float64)
        )
        sw64 = None if sample_weight is None else jnp.asarray(np.asarray(sample_weight, np.float64))
        value64, g64 = grad_fn(p64, x64, y64, sw64, train_key)
        # Forward mode in float64, like the finite differences: two float32 tangent passes that
        # sum in different orders differ by a few ulps of the output's largest entry (more through a
        # saturated softmax), which is rounding, not a bug; in float64 any real slip stands out.
        forward = _forward_mode(
            model, p64, x64, key, num_directions, jvp_fn, *TOLERANCES["float64"]
        )
        gnorm = float(np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(g64))))
        # Rounding in the loss values limits the differences to ~1e-16 |L| / eps.
        fd_scale = gnorm + abs(float(value64))
        which, dirs = _directions(p64, key, num_directions, entrywise_max)
        fd_all = np.asarray(differences(p64, (x64, y64, sw64, train_key), which, dirs))
        torch_cmp: list[Comparison | None] = [None] * len(_blocks(g64))
        if against == "torch":
            g_torch = _torch_grads(model, loss, l2, l1, p64, x64, y64, sw64)
            t_scale = max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(g_torch))
            torch_cmp = [
                _compare(g_m, g_t, t_scale, *TOLERANCES["float64"])
                for (_, _, g_m), (_, _, g_t) in zip(_blocks(g64), _blocks(g_torch), strict=True)
            ]

        rows = []
        for b, ((l, name, g_m), (_, _, g_a), (_, _, g_m64)) in enumerate(
            zip(_blocks(g_manual), _blocks(g_auto), _blocks(g64), strict=True)
        ):
            ad = _compare(g_m, g_a, scale, rtol, atol)
            size = np.size(g_m64)
            # the analytic directional derivative <v, g> next to the difference along v
            analytic = dirs[which == b, :size] @ np.asarray(g_m64).ravel()
            fd = fd_all[which == b]
            rows.append(
                GradCheckRow(
                    l + 1,
                    name,
                    tuple(np.shape(g_m64)),
                    ad,
                    _compare(analytic, fd, fd_scale, FD_RTOL, FD_ATOL),
                    "entries" if size <= entrywise_max else "directions",
                    forward[b],
                    torch_cmp[b],
                )
            )
        input_ad, input_fd = _input_grads(
            model, loss, l2, l1, (params, x, y, sample_weight), (p64, x64, y64, sw64),
            train_key, key, num_directions, scale, (rtol, atol),
        )  # fmt: skip
    return GradCheckReport(tuple(rows), dtype, rtol, atol, forward[-1], input_ad, input_fd)


@functools.lru_cache(maxsize=32)
def _input_programs(model: MLP, loss: str | Loss, l2: float, l1: float):
    """``dL/dx`` from the hand-written backward, from ``jax.grad`` in ``x``, and central
    differences of the objective along directions in ``x`` (compiled once per model)."""
    lossf = check_model_loss(model, loss)
    objective = loss_fn(model, lossf, l2=l2, l1=l1)

    def manual(p, x, y, sw, k):
        xb, yb, swb = prepare_batch(model, lossf, p, x, y, sw)
        trace = forward(model, p, xb, k)
        _, dz_out = loss_head(model, lossf, trace, yb, swb)
        dx = backward(model, p, trace, dz_out, need_dx=True).dx
        assert dx is not None  # need_dx
        return dx.reshape(x.shape)

    def autodiff(p, x, y, sw, k):
        return jax.grad(lambda xx: objective(p, xx, y, sw, key=k))(x)

    def differences(p, x, y, sw, k, dirs):
        def along(v):
            v = v.reshape(x.shape)
            plus = objective(p, x + FD_EPS * v, y, sw, key=k)
            minus = objective(p, x - FD_EPS * v, y, sw, key=k)
            return (plus - minus) / (2 * FD_EPS)

        return lax.map(along, dirs)

    return jax.jit(manual), jax.jit(autodiff), jax.jit(differences)


def _input_grads(model, loss, l2, l1, data, data64, train_key, key, num_directions, scale, tol):
    """The hand-written backward's ``dL/dx`` against ``jax.grad`` (in the parameters' dtype,
    on the parameter gradients' scale) and against central differences along random unit
    directions in ``x`` (float64)."""
    manual, autodiff, differences = _input_programs(model, loss, l2, l1)
    params, x, y, sw = data
    x = jnp.asarray(x, jax.tree.leaves(params)[0].dtype)
    gx_m, gx_a = manual(params, x, y, sw, train_key), autodiff(params, x, y, sw, train_key)
    scale = max(scale, float(np.max(np.abs(np.asarray(gx_a)))))
    ad = _compare(np.asarray(gx_m), np.asarray(gx_a), scale, *tol)
    p64, x64, y64, sw64 = data64
    rng = np.random.default_rng([*np.asarray(jax.random.key_data(key)).ravel().tolist(), 2])
    dirs = rng.standard_normal((num_directions, x64.size))
    dirs /= np.sqrt(np.sum(dirs**2, axis=1, keepdims=True))
    gx64 = np.asarray(manual(p64, x64, y64, sw64, train_key)).ravel()
    fd = np.asarray(differences(p64, x64, y64, sw64, train_key, jnp.asarray(dirs)))
    value = float(loss_fn(model, loss, l2=l2, l1=l1)(p64, x64, y64, sw64, key=train_key))
    fd_scale = float(np.sqrt(np.sum(gx64**2))) + abs(value)
    return ad, _compare(dirs @ gx64, fd, fd_scale, FD_RTOL, FD_ATOL)


def _forward_mode(model, params, x, key, num_directions, jvp_fn, rtol, atol) -> list[Comparison]:
    """The forward mode under test against ``jax.jvp`` of ``model.apply``: one comparison per
    parameter block, then one for ``x``, on a common scale (the largest reference entry)."""
    xf = jnp.asarray(x, jax.tree.leaves(params)[0].dtype)
    which, dirs = _jvp_directions(params, xf, key, num_directions)
    if jvp_fn is None:
        program = _jvp_program(model)
    else:
        program = jax.jit(functools.partial(_jvps, model, jvp_fn))
    manual, reference = (np.asarray(a) for a in program(params, xf, which, dirs))
    scale = float(np.max(np.abs(reference)))
    return [
        _compare(manual[which == b], reference[which == b], scale, rtol, atol)
        for b in range(len(jax.tree.leaves(params)) + 1)
    ]


def _torch_grads(model: MLP, loss, l2: float, l1: float, p64, x64, y64, sw64) -> Params:
    """PyTorch autograd's gradient of the objective at ``p64`` (float64): the network as
    ``to_torch`` builds it, the loss's derivative with respect to its output from ``jax.grad``
    of the loss, the penalties written in torch, then ``backward()``."""
    import torch  # pyright: ignore[reportMissingImports]

    from jaxmlp.interop._torch import from_torch, to_torch

    loss = check_model_loss(model, loss)
    xb, yb, sw = prepare_batch(model, loss, p64, x64, y64, sw64)
    module = to_torch(model, p64)
    # cross entropies read the logits: the network without its output activation
    net = module[:-1] if loss.logits else module
    out = net(torch.from_numpy(np.array(xb)))
    g_out = jax.grad(lambda o: loss.value(o, yb, sw))(jnp.asarray(out.detach().numpy()))
    # sum(out * dL/dout) has the loss's gradient with respect to every parameter (chain rule)
    total = torch.sum(out * torch.from_numpy(np.array(g_out)))
    for lin in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
        if l2:
            total = total + 0.5 * l2 * torch.sum(lin.weight * lin.weight)
        if l1:
            total = total + l1 * torch.sum(torch.abs(lin.weight))
    total.backward()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.grad)
    return from_torch(module)[1]
