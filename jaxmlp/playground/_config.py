"""The Playground's configuration: every control's value, checked, and its URL hash.

The keys are TensorFlow Playground's own (``activation``, ``learningRate``, ``networkShape``, ...)
plus ours (``optimizer``, ``method``, ``loss``, ``norm``, ``dropout``, ``residual``, ``speed``), so a
TensorFlow Playground link's hash opens the same experiment. Every value is checked here, and a
bad one raises ``ValueError`` or ``TypeError`` with a message that starts with the key.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

CLASSIFY_DATASETS = ("circle", "xor", "gauss", "spiral", "moons", "gauss3", "spiral3", "csv")
REGRESS_DATASETS = ("reg-plane", "reg-gauss", "csv")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear", "leaky_relu", "elu", "gelu", "silu", "sin")
# TF Playground's feature keys in its order, and the jaxmlp feature each one names.
FEATURES = {
    "x": "x1",
    "y": "x2",
    "xSquared": "x1^2",
    "ySquared": "x2^2",
    "xTimesY": "x1*x2",
    "sinX": "sin(x1)",
    "sinY": "sin(x2)",
}
# Keys TF Playground writes that change nothing here (cosX/cosY: old links; it dropped them too).
IGNORED_KEYS = ("cosX", "cosY", "collectStats", "hideText", "tutorial")
MAX_LAYERS, MAX_WIDTH = 10, 128


@dataclass(frozen=True)
class Config:
    """One tab's experiment; field names are the URL hash's keys."""

    problem: str = "classification"
    dataset: str = "circle"
    regDataset: str = "reg-plane"
    percTrainData: int = 50
    noise: int = 0
    batchSize: int = 10
    networkShape: tuple[int, ...] = (4, 2)
    activation: str = "tanh"
    learningRate: float = 0.03
    regularization: str = "none"
    regularizationRate: float = 0.0
    seed: str = "0.5"
    showTestData: bool = False
    discretize: bool = False
    initZero: bool = False
    x: bool = True
    y: bool = True
    xSquared: bool = False
    ySquared: bool = False
    xTimesY: bool = False
    sinX: bool = False
    sinY: bool = False
    # Beyond TF Playground.
    optimizer: str = "sgd"
    method: str = "manual"
    loss: str = "auto"
    norm: str = "none"
    dropout: float = 0.0
    residual: bool = False
    speed: str = "normal"

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f for key, f in FEATURES.items() if getattr(self, key))

    @property
    def data_name(self) -> str:
        return self.dataset if self.problem == "classification" else self.regDataset

    @property
    def seed_int(self) -> int:
        return zlib.crc32(self.seed.encode())


# Keys whose change keeps the network's weights (TF Playground applies these live too).
LIVE_KEYS = frozenset(
    {"learningRate", "regularizationRate", "batchSize", "showTestData", "discretize", "speed",
     "method", "regularization"}
)  # fmt: skip
DATA_KEYS = frozenset({"problem", "dataset", "regDataset", "percTrainData", "noise", "seed"})
_CHOICES: dict[str, tuple[str, ...]] = {
    "problem": ("classification", "regression"),
    "dataset": CLASSIFY_DATASETS,
    "regDataset": REGRESS_DATASETS,
    "activation": ACTIVATIONS,
    "regularization": ("none", "L1", "L2"),
    "optimizer": ("sgd", "momentum", "adam"),
    "method": ("manual", "autodiff"),
    "loss": ("auto", "half_mse", "cross_entropy"),
    "norm": ("none", "layernorm"),
    "speed": ("normal", "max"),
}
_RANGES: dict[str, tuple[float, float]] = {
    "percTrainData": (10, 90),
    "noise": (0, 50),
    "batchSize": (1, 256),
    "learningRate": (1e-5, 10.0),
    "regularizationRate": (0.0, 10.0),
    "dropout": (0.0, 0.9),
}
_TYPES = {f.name: f.type for f in fields(Config)}


def _check(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    if kind == "bool":
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise TypeError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind == "tuple[int, ...]":
        if isinstance(value, str):
            parts = [p for p in value.split(",") if p.strip()]
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise ValueError(f"{key}: expected comma-separated ints like 4,2, got {value!r}") from None  # fmt: skip
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise TypeError(f"{key}: expected a list of ints, got {value!r}")
        if len(value) > MAX_LAYERS or not all(1 <= v <= MAX_WIDTH for v in value):
            raise ValueError(
                f"{key}: at most {MAX_LAYERS} hidden layers of 1 to {MAX_WIDTH} neurons, got {list(value)}"
            )
        return tuple(value)
    if key == "seed":
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not 0 < len(value) <= 40:
            raise ValueError(f"seed: expected a short string or number, got {value!r}")
        return value
    if key in _CHOICES:
        if key == "regularization" and value in (None, "null", ""):
            value = "none"
        if not isinstance(value, str) or value not in _CHOICES[key]:
            raise ValueError(f"{key}: expected one of {list(_CHOICES[key])}, got {value!r}")
        return value
    low, high = _RANGES[key]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{key}: expected a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
    if kind == "int":
        if value != int(value):
            raise ValueError(f"{key}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def update(config: Config, changes: Any) -> Config:
    """``config`` with ``changes`` (a dict of keys to values) applied, every value checked."""
    if not isinstance(changes, dict):
        raise TypeError(f"config: expected an object of keys to values, got {type(changes).__name__}")  # fmt: skip
    unknown = [k for k in changes if k not in _TYPES]
    if unknown:
        raise ValueError(f"config: unknown key {unknown[0]!r}; valid keys are {sorted(_TYPES)}")
    new = replace(config, **{k: _check(k, v) for k, v in changes.items()})
    if not new.features:
        raise ValueError("features: turn on at least one input feature")
    return new


def from_hash(text: str) -> tuple[Config, list[str]]:
    """A URL hash (``#activation=tanh&...``, TF Playground's or ours) as a Config, and the keys
    that were ignored (known to TF Playground, without effect here)."""
    if not isinstance(text, str) or len(text) > 4000:
        raise ValueError("hash: expected a URL hash of at most 4000 characters")
    changes: dict[str, Any] = {}
    ignored: list[str] = []
    for part in text.lstrip("#").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key in IGNORED_KEYS:
            if value not in ("false", ""):
                ignored.append(key)
            continue
        changes[key] = value
    if changes.get("regularization") in ("null", "undefined"):
        changes["regularization"] = "none"
    return update(Config(), changes), ignored


def to_hash(config: Config) -> str:
    """The URL hash (without ``#``) that :func:`from_hash` reads back to ``config``."""
    parts = []
    for key, value in asdict(config).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    return "&".join(parts)


def as_json(config: Config) -> dict[str, Any]:
    out = asdict(config)
    out["networkShape"] = list(config.networkShape)
    return out
