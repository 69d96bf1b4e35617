"""What the host driver calls after every epoch: history, progress, checkpoints, users' own.

A callback is a plain function ``f(epoch, metrics)`` or a :class:`Callback` (override what you
need). The driver calls ``on_epoch_end`` once per epoch, in order, after the compiled call that ran
it returns (a call runs several epochs on the device; their metrics arrive together), then
``on_call_end`` once per call with the state at its end, then ``on_train_end`` with the result.
``fit``'s history, its progress bar and its checkpoints are callbacks of this kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxmlp._checkpoint.files import checkpoint_path, prune_checkpoints


class EarlyStopping(NamedTuple):
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs.

    The monitored loss is the validation loss when validation data is given, else the
    training loss. With ``restore_best`` the result holds the best epoch's parameters.
    In an ensemble every member stops, and restores its own best, on its own.
    """

    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True


class CallState(NamedTuple):
    """What ``on_call_end`` sees after each compiled call.

    Attributes:
        epoch: epochs done so far (1-based count).
        epochs: the run's total.
        carry: the engine's state on the device: ``carry.state`` is the ``TrainState``
            (``params``, ``opt_state``, ``step``); every leaf has a leading member axis in an
            ensemble. Read it, never keep it across calls (the next call donates it). ``None``
            when no callback asks for it (see :class:`Callback`): the driver then queues each
            call on the device before the previous one's report is read.
        key: the run's PRNG key.
        history: the history so far (``History.history``).
        best_epoch: the best monitored epoch so far (``None``/0 where none), per member in an
            ensemble.
        finished: the run ends after this call.
    """

    epoch: int
    epochs: int
    carry: Any
    key: jax.Array
    history: dict[str, list[Any]]
    best_epoch: Any
    finished: bool


class Callback:
    """Base class of the driver's callbacks: override any of the three methods.

    ``metrics`` holds ``loss`` (the training objective), with validation data ``val_loss`` and
    ``val_metric``, and ``improved`` (the monitored loss beat its best by more than
    ``min_delta``): floats and bools for ``fit``, ``(K,)`` NumPy arrays for ``fit_ensemble``
    (NaN for a member that has stopped or diverged).

    A callback that overrides ``on_call_end`` gets the carry in its :class:`CallState`, and the
    driver then waits for every call's report before it starts the next; set the class attribute
    ``carry_free = True`` on one that never reads ``state.carry`` to leave the calls queued back
    to back on the device.
    """

    carry_free: bool = False

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """After every epoch; ``epoch`` is 1-based."""

    def on_call_end(self, state: CallState) -> None:
        """After every compiled call (every few epochs), with the state at its end."""

    def on_train_end(self, result: Any) -> None:
        """Once, with the ``FitResult`` or ``EnsembleResult``."""


class _Function(Callback):
    def __init__(self, f: Callable[[int, Mapping[str, Any]], Any]):
        self.f = f

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self.f(epoch, metrics)


def as_callbacks(values: Any) -> list[Callback]:
    """``callbacks=`` (``None``, one callback or a list of them) as a list of :class:`Callback`,
    plain functions wrapped."""
    if values is None:
        return []
    if isinstance(values, Callback) or callable(values):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"callbacks: expected a list of callbacks, got {type(values).__name__}")
    out: list[Callback] = []
    for i, v in enumerate(values):
        if isinstance(v, Callback):
            out.append(v)
        elif callable(v):
            out.append(_Function(v))
        else:
            kind = type(v).__name__
            raise TypeError(f"callbacks[{i}]: expected a function or a jaxmlp.Callback, got {kind}")
    return out


class History(Callback):
    """Collects every epoch's metrics and the best epoch (the early-stopping report).

    ``history`` maps ``loss`` (and ``val_loss``, ``val_metric``) to lists, one entry per epoch
    (a ``(K,)`` array per entry in an ensemble); ``best_epoch`` is the 1-based epoch of the last
    improvement (``None`` before one; per member, 0 for none, in an ensemble).
    """

    def __init__(
        self,
        has_val: bool,
        history=None,
        best_epoch=None,
        members: int | None = None,
        records_lr: bool = False,
    ):
        names = ("loss", "val_loss", "val_metric") if has_val else ("loss",)
        if records_lr:
            names = (*names, "learning_rate")
        self.records_lr = records_lr
        self.history: dict[str, list[Any]] = {k: [] for k in names}
        if history is not None:
            for k in names:
                self.history[k] = [_entry(v, members) for v in history.get(k, [])]
        self.members = members
        self.best_epoch: Any
        if members is None:
            self.best_epoch = best_epoch
        else:
            self.best_epoch = (
                np.zeros(members, np.int64)
                if best_epoch is None
                else np.asarray(best_epoch, np.int64)
            )

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        for k, v in self.history.items():
            v.append(metrics[k])
        if self.members is None:
            if metrics["improved"]:
                self.best_epoch = epoch
        else:
            self.best_epoch = np.where(metrics["improved"], epoch, self.best_epoch)

    def upto(self, epochs: int) -> dict[str, list[Any]]:
        """The first ``epochs`` entries of every list (copies)."""
        return {k: list(v[:epochs]) for k, v in self.history.items()}


def _entry(v: Any, members: int | None) -> Any:
    return float(v) if members is None else np.asarray(v, np.float64)


class ProgressBar(Callback):
    """A tqdm bar over the run's epochs, with the latest losses.

    The first call's time is mostly compilation, so the bar's clock restarts after it: the rate
    and the time left are the steady state's (the elapsed time counts from there too).
    """

    carry_free = True

    def __init__(self, epochs: int, done: int, desc: str, enabled: bool):
        self.bar: Any = None
        if enabled:  # without a bar tqdm is not even imported (0.1 s of a small script's start)
            from tqdm.auto import tqdm

            # smoothing=0: the rate is the epochs since the clock started over the time since.
            self.bar = tqdm(
                total=epochs, initial=min(done, epochs), unit="epoch", desc=desc, smoothing=0
            )
        self.last: Mapping[str, Any] | None = None
        self.shown = done
        self.compiled = False

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self.last = metrics

    def on_call_end(self, state: CallState) -> None:
        if self.bar is None:
            return
        self.bar.update(state.epoch - self.shown)
        self.shown = state.epoch
        if not (self.compiled or state.finished):
            self.compiled = True
            self.bar.initial = self.bar.n
            self.bar.start_t = self.bar.last_print_t = time.time()
        if self.last is not None:
            post = {"loss": _short(self.last["loss"])}
            if "val_loss" in self.last:
                post.update(
                    val_loss=_short(self.last["val_loss"]), val=_short(self.last["val_metric"])
                )
            self.bar.set_postfix(post)

    def on_train_end(self, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(v: Any) -> str:
    v = np.asarray(v, np.float64)
    return f"{float(v if v.ndim == 0 else np.nanmean(v) if np.isfinite(v).any() else np.nan):.4g}"


class Checkpoints(Callback):
    """Writes ``ckpt_{epoch:06d}.npz`` every ``every`` epochs and at the end, keeping ``keep``."""

    def __init__(
        self, directory: Path, every: int, keep: int, save: Callable[[Path, CallState], None]
    ):
        self.directory, self.every, self.keep, self.save = directory, every, keep, save

    def on_call_end(self, state: CallState) -> None:
        if state.finished or state.epoch % self.every == 0:
            self.save(checkpoint_path(self.directory, state.epoch), state)
            prune_checkpoints(self.directory, self.keep)
