"""Interoperability with PyTorch and Flax: the same network and the same numbers elsewhere.

- :func:`to_torch` / :func:`from_torch`: a jaxmlp network as a ``torch.nn.Sequential`` computing
  the same function in the same dtype, and back (exact round trip). PyTorch is optional
  (``pip install jaxmlp[torch]``) and imported only when one of them is called.
- :func:`to_flax_params` / :func:`from_flax_params`: the parameter tuple as the variables of a
  Flax linen module made of ``nn.Dense`` and ``nn.LayerNorm`` (exact round trip; Flax itself is
  not needed).

See the docs' page "PyTorch and Flax".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxmlp.interop._flax import from_flax_params as _from_flax_params
from jaxmlp.interop._flax import to_flax_params as _to_flax_params

if TYPE_CHECKING:
    from jaxmlp._core.mlp import MLP, Params

__all__ = ["from_flax_params", "from_torch", "to_flax_params", "to_torch"]


def to_torch(model: MLP, params: Params) -> Any:
    """The network as a ``torch.nn.Sequential`` computing ``model.apply(params, x)`` in the
    parameters' dtype.

    Per hidden layer: ``nn.Linear`` (``weight = w.T``, ``bias = b``), ``nn.LayerNorm(n,
    eps=1e-5)`` (``weight = scale``, ``bias = offset``) with ``norm="layernorm"``, the activation,
    ``nn.Dropout(p)`` with ``dropout=p``, the whole wrapped in a
    :class:`~jaxmlp.interop.torch_modules.Residual` (``x + block(x)``) where the layer carries a
    skip; then the output ``nn.Linear`` and the output activation (``nn.Identity`` for
    ``"identity"``, ``nn.Softmax(dim=-1)`` for ``"softmax"``). An input feature map comes first
    (:class:`~jaxmlp.interop.torch_modules.Features`,
    :class:`~jaxmlp.interop.torch_modules.FourierFeatures` with ``2 pi B`` as a buffer).
    Activations: ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Identity``,
    ``nn.LeakyReLU(0.01)``, ``nn.ELU(1.0)``, ``nn.GELU()`` (``"gelu"``, exact),
    ``nn.GELU(approximate="tanh")`` (``"gelu_tanh"``), ``nn.SiLU``; ``"sin"``, ``"heaviside"``
    and ``"softplus"`` (``torch.nn.Softplus`` switches to the identity above 20) are small
    modules of :mod:`jaxmlp.interop.torch_modules`.

    The module is returned in ``eval()`` mode, like ``model.apply`` without a key (no dropout);
    ``.train()`` turns PyTorch's own dropout masks on. It keeps ``model`` as the plain attribute
    ``jaxmlp_model``, so :func:`from_torch` gives back the very description (initializer
    included).

    Gradients: ``params`` may be any pytree shaped like the parameters, e.g. the ``grads`` of
    ``jaxmlp.value_and_grad``; ``to_torch(model, grads)`` is then a module whose
    ``.weight``/``.bias`` are those gradients (``Linear.weight`` is ``dL/dw`` transposed), to be
    compared entry by entry with ``.weight.grad`` of ``to_torch(model, params)`` after
    ``loss.backward()``.

    Args:
        model: the network; ``compute_dtype`` must be ``None`` (``nn.Linear`` has no mixed
            precision), and a layer of your own has no counterpart.
        params: the parameter tuple (or a gradient pytree of the same structure).

    Returns:
        A ``torch.nn.Sequential`` on the CPU, in ``eval()`` mode.

    Raises:
        ImportError: PyTorch is not installed (``pip install jaxmlp[torch]``).
        ValueError: a piece without a PyTorch counterpart (named), or mixed precision.
    """
    from jaxmlp.interop._torch import to_torch as impl

    return impl(model, params)


def from_torch(module: Any) -> tuple[MLP, Params]:
    """Reads a ``torch.nn.Sequential`` back as ``(model, params)``.

    Accepted: ``nn.Linear``; after it, optionally ``nn.LayerNorm(n, eps=1e-5)`` (on every hidden
    layer or on none), an activation (missing: ``"identity"``), and after a hidden activation
    ``nn.Dropout(p)`` (the same ``p`` on every hidden layer); a
    :class:`~jaxmlp.interop.torch_modules.Residual` around one hidden layer (then every hidden
    layer that keeps the width needs one, as ``residual=True`` puts them); a feature map of
    :mod:`jaxmlp.interop.torch_modules` first. The activations are those :func:`to_torch`
    emits, plus ``nn.Softplus(beta=1)``. The last ``nn.Linear`` is the output layer; its
    activation must be one of ``jaxmlp.OUTPUT_ACTIVATIONS``.

    ``from_torch(to_torch(model, params))`` gives back ``model`` and bit-identical ``params``.

    Args:
        module: a ``torch.nn.Sequential`` (float16, bfloat16, float32 or float64; float64 needs
            JAX's x64 mode).

    Returns:
        ``(model, params)``: the description (``param_dtype`` the module's dtype) and the
        parameter tuple as JAX arrays (``w = Linear.weight.T``).

    Raises:
        ImportError: PyTorch is not installed.
        TypeError: ``module`` is not a ``torch.nn.Sequential``.
        ValueError: a module without a jaxmlp counterpart (named with its index), or an
            arrangement jaxmlp cannot describe (named).
    """
    from jaxmlp.interop._torch import from_torch as impl

    return impl(module)


def to_flax_params(model: MLP, params: Params) -> dict[str, Any]:
    """The parameters as Flax linen variables, ``{"params": {...}}``, named as a compact module
    that creates its ``nn.Dense`` and ``nn.LayerNorm`` layers in stack order without names
    would name them: ``"Dense_0"``, ``"Dense_1"``, ... (``"kernel"`` ``(in, out)`` = ``w``,
    ``"bias"`` = ``b``) and ``"LayerNorm_0"``, ... (``"scale"``, ``"bias"`` = ``offset``),
    one counter per class. Activations, dropout, residual connections and feature maps hold no
    parameters; the docs' page "PyTorch and Flax" shows such a module (note
    ``nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)``: Flax's default eps is 1e-6).

    The arrays are ``params``' own (no copy). Flax is not needed.

    Args:
        model: the network (affine layers and layer norms only carry parameters).
        params: the parameter tuple.

    Raises:
        ValueError: a layer of your own with parameters (no Flax counterpart).
    """
    return _to_flax_params(model, params)


def from_flax_params(model: MLP, variables: Any) -> Params:
    """The parameter tuple from Flax linen variables laid out as :func:`to_flax_params` writes
    them (``{"params": {"Dense_0": {"kernel", "bias"}, "LayerNorm_0": {"scale", "bias"},
    ...}}``); the exact inverse of :func:`to_flax_params`.

    Args:
        model: the network the variables belong to.
        variables: ``{"params": {...}}`` (a ``dict`` or Flax's ``FrozenDict``).

    Raises:
        ValueError: a missing or unexpected module or key, or a wrong shape (named).
        TypeError: ``variables`` is not a mapping.
    """
    return _from_flax_params(model, variables)
