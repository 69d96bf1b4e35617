"""The ``sgd``/``adam`` solvers of :mod:`jaxmlp.sklearn`: scikit-learn's epoch loop, its stopping
rules and learning-rate schedules, on top of :func:`jaxmlp.fit`.

``fit`` runs several epochs per compiled call; scikit-learn decides after every epoch whether to
stop (or, with ``learning_rate="adaptive"``, to divide the rate by 5). Both meet exactly: the
epochs are run in chunks that end where the next decision could first fire. With ``c`` epochs
already counted without improvement, the count cannot exceed ``n_iter_no_change`` before
``n_iter_no_change + 1 - c`` more epochs, so a chunk of that many epochs never runs past a stop;
each chunk goes on from the previous one's ``FitResult`` (same row orders, optimizer state and
step count as one longer run). With ``early_stopping`` every epoch is a chunk: the validation
score (accuracy or R^2, scikit-learn's ``score``) is computed on the host after each, and the
best epoch's weights are kept.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from jaxmlp import DivergenceError, fit, make_train_step
from jaxmlp._engine.step import TrainState
from jaxmlp.sklearn._utils import (
    _ROW_MULTIPLE,
    _logits_program,
    _minibatch_pass,
    _pad,
    _round_up,
    _set_rate,
    _validation_split,
    on_device,
)

NONFINITE_MESSAGE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and "
    "need to be preprocessed."
)


class LearningRate:
    """The current learning rate, as scikit-learn's ``_optimizer.learning_rate`` shows it."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate


def _with_rate(result, lr: float):
    """A ``FitResult`` whose state (the one ``fit`` goes on from) runs at rate ``lr``."""
    assert result.state is not None
    fs = result.state
    ts = fs.carry.state
    ts = ts._replace(opt_state=_set_rate(ts.opt_state, lr))
    return result._replace(state=fs._replace(carry=fs.carry._replace(state=ts)))


def _update_no_improvement(est, score: float | None) -> None:
    """scikit-learn's ``_update_no_improvement_count`` after one epoch."""
    if score is not None:
        est.validation_scores_.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        return
    loss = est.loss_curve_[-1]
    if loss > est.best_loss_ - est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    est.best_loss_ = min(est.best_loss_, loss)


def _epoch_ends(est, early: bool) -> bool:
    """The learning-rate update and stopping decision at the end of an epoch; True: stop."""
    rate = est._optimizer
    if est.solver == "sgd" and est.learning_rate == "invscaling":
        rate.learning_rate = float(est.learning_rate_init) / (est.t_ + 1) ** float(est.power_t)
    if est._no_improvement_count <= est.n_iter_no_change:
        return False
    what = "Validation score" if early else "Training loss"
    msg = (
        f"{what} did not improve more than tol={est.tol:f} for "
        f"{est.n_iter_no_change:d} consecutive epochs."
    )
    if est.solver == "sgd" and est.learning_rate == "adaptive":
        if rate.learning_rate > 1e-6:
            rate.learning_rate /= 5.0
            if est.verbose:
                print(f"{msg} Setting learning rate to {rate.learning_rate:f}")
            est._no_improvement_count = 0
            return False
        msg += " Learning rate too small."
    if est.verbose:
        print(f"{msg} Stopping.")
    return True


def _chunk(est, done: int, early: bool) -> int:
    left = int(est.max_iter) - done
    if early or est.n_iter_no_change == math.inf:
        return 1 if early else left
    return max(1, min(left, int(est.n_iter_no_change) + 1 - est._no_improvement_count))


def fit_epochs(est, X: np.ndarray, Y: np.ndarray, sw, rs, key: jax.Array) -> None:
    """``fit`` for ``sgd``/``adam``: up to ``max_iter`` epochs with scikit-learn's rules."""
    early = bool(est.early_stopping)
    validation = None
    if early:
        X, Y, sw, validation = _validation_split(
            X, Y, sw, est.validation_fraction, rs, est._stratify_labels(Y)
        )
    n = X.shape[0]
    batch_size = est._batch_size(n)
    l2 = est._l2(batch_size, sw)
    l1 = est._l1(batch_size, sw)
    shuffle = bool(est.shuffle)
    steps = -(-n // batch_size)
    if batch_size == n:
        # One batch holds every row, so shuffling cannot change a step (and the permutation
        # is the costliest part of fit's program to compile), and weight-0 padding rows
        # leave the weighted-mean loss as it is.
        batch_size, shuffle = _round_up(n, _ROW_MULTIPLE), False
        sw = _pad(np.ones(n, X.dtype) if sw is None else sw, batch_size)
        X, Y = _pad(X, batch_size), _pad(Y, batch_size)
    model = est._model(padded=True)
    optimizer = est._get_optimizer(n, steps)
    est._optimizer = LearningRate(float(est.learning_rate_init))
    data = [on_device(_pad(X, len(X), model.sizes[0])), on_device(Y)]
    weights = None if sw is None else on_device(sw)
    if validation is not None:
        x_val = on_device(_pad(validation[0], len(validation[0]), model.sizes[0]))
        validation = (x_val, *validation[1:])
    state: Any = est._train_params()
    best = None
    done, stop, result = 0, False, None
    est.n_iter_ = 0
    while not stop and done < est.max_iter:
        k = _chunk(est, done, early)
        try:
            result = fit(model, state, *data, loss=est._loss(), key=key, optimizer=optimizer,
                         epochs=done + k, batch_size=batch_size, method=est.gradient_method,
                         shuffle=shuffle, progress=False, l2=l2, l1=l1, sample_weight=weights)  # fmt: skip
        except DivergenceError:
            if not early:
                raise ValueError(NONFINITE_MESSAGE) from None
            # scikit-learn trains on with NaN weights to max_iter, scoring NaN each epoch, and
            # keeps the best epoch's weights.
            for _ in range(done, int(est.max_iter)):
                est.n_iter_ += 1
                est.t_ += n
                est.loss_ = np.nan
                est.loss_curve_.append(np.nan)
                _update_no_improvement(est, np.nan)
            done = int(est.max_iter)
            break
        for loss in result.history["loss"][done:]:
            done += 1
            est.n_iter_ += 1
            est.t_ += n
            est.loss_ = loss
            est.loss_curve_.append(loss)
            if est.verbose:
                print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
            score = None
            if validation is not None:
                score = est._validation_score(model, result.params, validation)
            _update_no_improvement(est, score)
            if score is not None and score > est.best_validation_score_:
                est.best_validation_score_ = score
                best = jax.device_get(result.params)
            stop = _epoch_ends(est, early)
            if stop:
                break
        if est.solver == "sgd" and est.learning_rate == "adaptive" and not stop:
            result = _with_rate(result, est._optimizer.learning_rate)
        state = result
    assert result is not None or early
    if result is not None:
        est._store(best if early and best is not None else result.params, result.opt_state)
    if done == est.max_iter and not stop:
        warnings.warn(
            f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
            "optimization hasn't converged yet.",
            ConvergenceWarning,
            stacklevel=5,
        )


def partial_epoch(est, X: np.ndarray, Y: np.ndarray, sw, rs) -> None:
    """One pass over ``X`` with the jitted step, continuing the stored optimizer state."""
    n = X.shape[0]
    batch_size = est._batch_size(n)
    optimizer = est._get_optimizer()
    model = est._model(padded=True)
    step = make_train_step(
        model, est._loss(), optimizer, method=est.gradient_method,
        l2=est._l2(batch_size, sw), l1=est._l1(batch_size, sw),
    )  # fmt: skip
    params = est._train_params()
    opt_state = getattr(est, "_opt_state", None)
    opt_state = optimizer.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)
    if not isinstance(getattr(est, "_optimizer", None), LearningRate):
        est._optimizer = LearningRate(float(est.learning_rate_init))
    if est.solver == "sgd":
        opt_state = _set_rate(opt_state, est._optimizer.learning_rate)
    state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
    order = rs.permutation(n) if est.shuffle else np.arange(n)
    X = _pad(X, n, model.sizes[0])
    state, loss = _minibatch_pass(step, state, X, Y, sw, order, batch_size)
    if not np.isfinite(loss):
        raise ValueError(NONFINITE_MESSAGE)
    est._store(state.params, state.opt_state)
    est.n_iter_ = 1  # scikit-learn counts the epochs of the latest call
    est.t_ += n
    est.loss_curve_.append(loss)
    est.loss_ = loss
    if est.verbose:
        print(f"Iteration {len(est.loss_curve_)}, loss = {loss:.8f}")
    _update_no_improvement(est, None)
    _epoch_ends(est, False)


def validation_logits(model, params, x_val) -> np.ndarray:
    """The padded model's output pre-activation on the (padded) validation rows."""
    return np.asarray(_logits_program(model)(params, x_val))
