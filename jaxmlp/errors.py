"""The exceptions and the warning class that jaxmlp raises, shared by every module."""

from __future__ import annotations

from typing import Any


class JaxmlpWarning(UserWarning):
    """Every warning jaxmlp itself issues (the test suite turns these into errors)."""


class DivergenceError(FloatingPointError):
    """The training loss became non-finite.

    Attributes:
        epoch: the (1-based) epoch in which it happened.
        step: the (1-based) minibatch step within that epoch (``None`` if it could not be
            located; ``params`` then hold the state at the start of that epoch).
        params, opt_state: the last finite training state (no update from the bad step applied).
        history: the per-epoch history up to the last complete epoch.
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        step: int | None,
        params: Any,
        opt_state: Any,
        history=None,
    ):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.params = params
        self.opt_state = opt_state
        self.history = history


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, of another format, or does not fit."""
