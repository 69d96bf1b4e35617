"""What the fused kernels accept (:func:`check`) and how they cut the batch (:class:`FusedConfig`)."""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import jax

from jaxmlp._core.losses import Loss, get_loss
from jaxmlp._core.mlp import MLP
from jaxmlp.fused import _kernels as K

MAX_WIDTH = K.WIDTHS[-1]
MAX_DEPTH = 8
DTYPES = ("float32", "float16", "bfloat16")
# Programs per GPU launch the default block size aims at: two per SM of an H100 (132 SMs).
_TARGET_PROGRAMS = 264
# Forces Pallas's interpreter ("1") or compiled kernels ("0"); unset: interpret on CPU only.
INTERPRET_ENV = "JAXMLP_FUSED_INTERPRET"


@dataclasses.dataclass(frozen=True)
class FusedConfig:
    """How the kernels cut the batch (hashable; the defaults suit an H100).

    Args:
        tile_rows: rows per tile, a power of two >= 16 (default: 128 compiled; interpreted,
            the batch rounded up to a power of two, at most 512, so the CPU loops little).
        tiles: tiles per program, a power of two (default: enough for about 264 programs
            compiled, 1 interpreted). Each program writes one partial weight gradient.
        interpret: ``True`` runs Pallas's interpreter (any device, slow), ``False`` compiles
            for the GPU; ``None``: interpret when JAX's default backend is the CPU, or as the
            environment variable ``JAXMLP_FUSED_INTERPRET`` (``1``/``0``) says.
        num_warps: Triton's warps per program.
        num_stages: Triton's software-pipelining stages.
        accumulate: where a program sums its tiles' weight gradients: ``"registers"`` (loop
            carries), ``"memory"`` (its output block, tile by tile) or ``"auto"``: registers
            while all the float32 accumulators together hold at most 16384 numbers (64 KiB;
            the width-64 neural field), memory beyond (width 128).
    """

    tile_rows: int | None = None
    tiles: int | None = None
    interpret: bool | None = None
    num_warps: int = 4
    num_stages: int = 1
    accumulate: str = "auto"

    def __post_init__(self):
        if self.accumulate not in ("auto", "registers", "memory"):
            raise ValueError(
                f"accumulate: expected 'auto', 'registers' or 'memory', got {self.accumulate!r}"
            )
        for name in ("tile_rows", "tiles"):
            v = getattr(self, name)
            low = 16 if name == "tile_rows" else 1
            if v is not None and (not isinstance(v, int) or v < low or v & (v - 1)):
                raise ValueError(f"{name}: expected a power of two >= {low}, got {v!r}")


def _interpret(config: FusedConfig) -> bool:
    if config.interpret is not None:
        return bool(config.interpret)
    env = os.environ.get(INTERPRET_ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return jax.default_backend() == "cpu"


def unsupported(model: Any, loss: str | Loss | None = None) -> str | None:
    """Why the fused kernels cannot run ``model`` (and ``loss``), as a message that starts with
    the argument's name; ``None`` when they can."""
    if not isinstance(model, MLP):
        return f"model: expected a jaxmlp.MLP, got {type(model).__name__}"
    if not model.plain:
        pieces = [n for n, on in (("norm", model.norm is not None), ("dropout", model.dropout),
                                  ("residual", model.residual), ("features", model.features))
                  if on]  # fmt: skip
        return f"model: the fused kernels run the plain stack only, not {', '.join(pieces)}"
    if max(model.sizes) > MAX_WIDTH:
        return f"model: the fused kernels take widths up to {MAX_WIDTH}, got sizes {model.sizes}"
    if model.num_layers > MAX_DEPTH:
        return f"model: the fused kernels take up to {MAX_DEPTH} layers, got {model.num_layers}"
    for name in model.hidden_activations:
        if name not in K.HIDDEN_ACTIVATIONS:
            return (
                f"activation: {name!r} has no fused kernel; use one of {list(K.HIDDEN_ACTIVATIONS)}"
            )
    for field in ("param_dtype", "compute_dtype"):
        dtype = getattr(model, field)
        if dtype is not None and dtype not in DTYPES:
            return f"{field}: the fused kernels take {list(DTYPES)}, got {dtype!r}"
    logits = loss is not None and get_loss(loss).logits
    if not logits and model.output_activation not in K.OUTPUT_ACTIVATIONS:
        return (
            f"output_activation: {model.output_activation!r} has no fused kernel; use one of "
            f"{list(K.OUTPUT_ACTIVATIONS)} (or a cross entropy on logits)"
        )
    return None


def supports(model: Any, loss: str | Loss | None = None) -> bool:
    """Whether the fused kernels can run ``model`` (with ``loss``); :func:`check` says why not."""
    return unsupported(model, loss) is None


def check(model: Any, loss: str | Loss | None = None, config: FusedConfig | None = None) -> None:
    """Raises ``ValueError`` (``TypeError`` for a non-model) naming what does not fit: a model
    beyond the plain stack, a width over 128, more than 8 layers, an activation or dtype without
    a kernel, or a device the kernels cannot compile for (anything but a GPU, uninterpreted)."""
    reason = unsupported(model, loss)
    if reason is not None:
        raise (TypeError if reason.startswith("model: expected") else ValueError)(reason)
    config = FusedConfig() if config is None else config
    # interpret=False is taken at its word (it lowers for a GPU anywhere, e.g. ahead of time)
    backend = jax.default_backend()
    if config.interpret is None and not _interpret(config) and backend != "gpu":
        raise ValueError(
            f"config: the fused kernels compile for GPUs only, the default backend is "
            f"{backend!r}; pass FusedConfig(interpret=True) to interpret them"
        )


def layout(model: MLP, rows: int, config: FusedConfig, logits: bool) -> K.Layout:
    interpret = _interpret(config)
    tile = config.tile_rows
    if tile is None:
        tile = min(max(16, 1 << (rows - 1).bit_length()), 512) if interpret else 128
    tiles = config.tiles
    if tiles is None:
        want = -(-rows // (tile * _TARGET_PROGRAMS))
        tiles = 1 if interpret else min(1 << (want - 1).bit_length(), 64)
    acts = (*model.hidden_activations, "identity" if logits else model.output_activation)
    param = model.param_dtype
    # float32 matmuls follow JAX's precision setting: "highest" asks for IEEE float32.
    highest = str(jax.default_matmul_precision.value) in ("highest", "float32")
    return K.Layout(
        widths=model.sizes,
        activations=acts,
        compute_dtype=model.compute_dtype or param,
        out_dtype=param,
        tile_rows=tile,
        tiles=tiles,
        interpret=interpret,
        precision="HIGHEST" if highest else "DEFAULT",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        accumulate=_accumulate(config.accumulate, model.sizes),
    )


# The most float32 weight-gradient accumulators "auto" keeps in registers (64 KiB).
_REGISTER_ACCUMULATORS = 16384


def _accumulate(choice: str, sizes: tuple[int, ...]) -> str:
    if choice != "auto":
        return choice
    p = [K.padded_width(n) for n in sizes]
    floats = sum(a * b + b for a, b in itertools.pairwise(p))
    return "registers" if floats <= _REGISTER_ACCUMULATORS else "memory"
