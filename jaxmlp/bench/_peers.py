"""The implementations the benchmarks time: jaxmlp's own and, when installed, other libraries'.

Every implementation trains the same network (``Problem``) with plain SGD at the same learning
rate and exposes the same small interface (:class:`Impl`): ``load`` the data once, ``step``
one minibatch update (on the loaded rows, or on rows ``idx`` gathered the library's idiomatic
way), ``sync`` until the device is idle, and ``train`` whole epochs. Peers are imported lazily,
so jaxmlp never needs them; a missing one raises :class:`Unavailable` with the reason.

The shared base lives in ``_peers_base``, the JAX implementations in ``_peers_jax`` and
PyTorch and scikit-learn in ``_peers_other``; this module names the peers, builds them and
re-exports the rest, so ``_peers.<Name>`` reaches every one.
"""

from __future__ import annotations

from jaxmlp.bench._peers_base import Impl, Problem, Unavailable
from jaxmlp.bench._peers_base import sgd as sgd
from jaxmlp.bench._peers_jax import EquinoxStep, LinenStep, NnxStep
from jaxmlp.bench._peers_jax import JaxmlpFit as JaxmlpFit
from jaxmlp.bench._peers_jax import JaxmlpLoop as JaxmlpLoop
from jaxmlp.bench._peers_jax import JaxmlpNaiveLoop as JaxmlpNaiveLoop
from jaxmlp.bench._peers_jax import JaxmlpStep as JaxmlpStep
from jaxmlp.bench._peers_other import SklearnStep, TorchStep
from jaxmlp.bench._peers_other import torch_matmul as torch_matmul

PEERS = ("flax.linen", "flax.nnx", "equinox", "torch", "torch.compile", "sklearn")
# Short names accepted by ``--peers``.
PEER_ALIASES = {
    "linen": "flax.linen",
    "nnx": "flax.nnx",
    "flax": ("flax.linen", "flax.nnx"),
    "eqx": "equinox",
    "torch.eager": "torch",
    "scikit-learn": "sklearn",
    "all": PEERS,
}


def make_peer(name: str, problem: Problem) -> Impl:
    """Builds peer ``name`` (one of ``PEERS``) for ``problem``; raises :class:`Unavailable`."""
    builders = {
        "flax.linen": LinenStep,
        "flax.nnx": NnxStep,
        "equinox": EquinoxStep,
        "torch": TorchStep,
        "torch.compile": lambda p: TorchStep(p, compiled=True),
        "sklearn": SklearnStep,
    }
    if problem.layers != "plain":
        raise Unavailable(f"layers {problem.layers!r} have no counterpart in the peer harness")
    if problem.loss not in ("mse", "softmax_cross_entropy"):
        raise Unavailable(f"loss {problem.loss!r} has no counterpart in the peer harness")
    if problem.activation not in ("relu", "tanh", "sigmoid"):
        raise Unavailable(f"activation {problem.activation!r} has no counterpart here")
    return builders[name](problem)


def parse_peers(spec: str | None) -> list[str]:
    """``"torch,flax"`` -> ``["torch", "flax.linen", "flax.nnx"]``; ``"none"``/empty -> ``[]``."""
    if not spec or spec == "none":
        return []
    out: list[str] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        names = PEER_ALIASES.get(token, token)
        for name in (names,) if isinstance(names, str) else names:
            if name not in PEERS:
                raise ValueError(f"--peers: unknown peer {token!r}; choose from {list(PEERS)}")
            if name not in out:
                out.append(name)
    return out
