"""fit with checkpoint_dir / resume: pruning, exact resume, the diverged state on disk."""

from __future__ import annotations

import dataclasses
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp._checkpoint.files import list_checkpoints, load_checkpoint

MODEL = jaxmlp.MLP((3, 8, 2), activation="tanh")
OPT = optax.adam(0.01)


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.key(1), (50, 3))
    return x, x[:, :2] ** 2, MODEL.init(jax.random.key(2))


def kwargs(x, y):
    return dict(loss="mse", optimizer=OPT, batch_size=16, progress=False, validation_data=(x, y),
                early_stopping=jaxmlp.EarlyStopping(patience=50))  # fmt: skip


def test_interrupted_and_resumed_run_is_bit_identical(data, tmp_path):
    x, y, params = data
    full = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(3), epochs=10, **kwargs(x, y))
    jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(3), epochs=5, checkpoint_dir=tmp_path,
               checkpoint_every=2, keep=2, **kwargs(x, y))  # fmt: skip
    assert [e for e, _ in list_checkpoints(tmp_path)] == [4, 5]
    # The stored key wins over the one passed on resume, so the data order resumes exactly.
    resumed = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(99), epochs=10, checkpoint_dir=tmp_path,
                         checkpoint_every=2, keep=2, resume=True, **kwargs(x, y))  # fmt: skip
    chex.assert_trees_all_equal(resumed.params, full.params)
    chex.assert_trees_all_equal(resumed.opt_state, full.opt_state)
    assert resumed.history == full.history
    assert resumed.step == full.step == 40
    assert [e for e, _ in list_checkpoints(tmp_path)] == [8, 10]
    final = load_checkpoint(
        tmp_path / "ckpt_000010.npz", model=MODEL, opt_state_like=OPT.init(params)
    )
    chex.assert_trees_all_equal(final.params, resumed.params)
    assert final.metadata["epoch"] == 10 and final.step == 40


def test_calls_cut_at_checkpoints_match_one_long_call(data, tmp_path):
    # epochs_per_call=4 with checkpoint_every=3: calls end at epochs 3, 6, 9 and 11, so the row
    # orders drawn ahead for epochs 4, 8, ... are discarded and redrawn; nothing may change.
    x, y, params = data
    plain = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(5), epochs=11, **kwargs(x, y))
    cut = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(5), epochs=11, epochs_per_call=4,
                     checkpoint_dir=tmp_path, checkpoint_every=3, keep=10, **kwargs(x, y))  # fmt: skip
    chex.assert_trees_all_equal(cut.params, plain.params)
    assert cut.history == plain.history
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3, 6, 9, 11]


def test_resume_without_checkpoints_starts_fresh(data, tmp_path):
    x, y, params = data
    fresh = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(4), epochs=3, **kwargs(x, y))
    resumed = jaxmlp.fit(MODEL, params, x, y, key=jax.random.key(4), epochs=3, checkpoint_dir=tmp_path,
                         resume=True, **kwargs(x, y))  # fmt: skip
    chex.assert_trees_all_equal(fresh.params, resumed.params)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 3]


def test_resume_into_another_architecture_fails(data, tmp_path):
    x, y, params = data
    jaxmlp.fit(
        MODEL,
        params,
        x,
        y,
        key=jax.random.key(5),
        epochs=1,
        checkpoint_dir=tmp_path,
        **kwargs(x, y),
    )
    other = jaxmlp.MLP((3, 8, 2), activation="relu")
    with pytest.raises(jaxmlp.CheckpointError, match="activation"):
        jaxmlp.fit(other, other.init(jax.random.key(6)), x, y, key=jax.random.key(7), epochs=2,
                   checkpoint_dir=tmp_path, resume=True, **kwargs(x, y))  # fmt: skip


def test_resume_needs_a_directory(data):
    x, y, params = data
    with pytest.raises(ValueError, match="resume"):
        jaxmlp.fit(
            MODEL, params, x, y, key=jax.random.key(8), epochs=1, resume=True, **kwargs(x, y)
        )


def test_divergence_writes_the_last_finite_state(data, tmp_path):
    x, y, params = data
    opt = optax.sgd(1e20)
    with pytest.raises(jaxmlp.DivergenceError) as info:
        jaxmlp.fit(MODEL, params, x, y, loss="mse", key=jax.random.key(9), optimizer=opt, epochs=3,
                   batch_size=10, checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    saved = load_checkpoint(tmp_path / "diverged.npz", model=MODEL, opt_state_like=opt.init(params))
    chex.assert_trees_all_equal(saved.params, info.value.params)
    assert saved.metadata["diverged_epoch"] == info.value.epoch
    assert saved.metadata["diverged_step"] == info.value.step


def test_layernorm_dropout_run_resumes_bit_for_bit(tmp_path):
    """A model with every piece: the checkpoint holds Norm entries (params, Adam state, early
    stopping's best params), and the dropout masks depend only on (key, global step), so a run
    resumed from epoch 4's checkpoint ends where the uninterrupted run does."""

    model = jaxmlp.MLP((3, 8, 8, 2), activation="tanh", norm="layernorm", dropout=0.3,
                       residual=True, features=("x1", "x2", "x3", "x1*x2", "sin(x3)"))  # fmt: skip
    x = jax.random.normal(jax.random.key(11), (40, 3))
    y = jnp.stack([x[:, 0] * x[:, 1], jnp.sin(x[:, 2])], axis=1)
    params = model.init(jax.random.key(12))
    kw = dict(kwargs(x, y), l1=1e-3, l2=1e-3)
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = jaxmlp.fit(model, params, x, y, key=jax.random.key(13), epochs=6,
                      checkpoint_dir=full_dir, checkpoint_every=2, keep=10, **kw)  # fmt: skip
    assert [e for e, _ in list_checkpoints(full_dir)] == [2, 4, 6]
    cut_dir.mkdir()
    shutil.copy(full_dir / "ckpt_000004.npz", cut_dir)  # as if the run had died after epoch 4
    resumed = jaxmlp.fit(model, params, x, y, key=jax.random.key(99), epochs=6,
                         checkpoint_dir=cut_dir, checkpoint_every=2, resume=True, **kw)  # fmt: skip
    chex.assert_trees_all_equal(resumed.params, full.params)
    chex.assert_trees_all_equal(resumed.opt_state, full.opt_state)
    assert resumed.history == full.history and resumed.step == full.step == 18
    # dropout was on: training without it (or with other masks) ends elsewhere
    nodrop = jaxmlp.fit(dataclasses.replace(model, dropout=0.0), params, x, y,
                        key=jax.random.key(13), epochs=6, **kw)  # fmt: skip
    assert not np.array_equal(np.asarray(nodrop.params[0].w), np.asarray(full.params[0].w))
    ck = load_checkpoint(cut_dir / "ckpt_000006.npz", model=model, opt_state_like=OPT.init(params))
    chex.assert_trees_all_equal(ck.params, full.params)
    assert type(ck.params[1]).__name__ == "Norm"
    assert type(ck.extra["best_params"][3]).__name__ == "Norm"


def test_layernorm_dropout_ensemble_resumes_bit_for_bit(tmp_path):
    """fit_ensemble's checkpoint holds every member's Norm entries (stacked), its Adam state and
    its best params; resumed from epoch 2 it ends where the uninterrupted run does."""
    model = jaxmlp.MLP((3, 6, 6, 2), activation="tanh", norm="layernorm", dropout=0.25,
                       residual=True)  # fmt: skip
    x = jax.random.normal(jax.random.key(21), (32, 3))
    y = x[:, :2] ** 2
    kw = dict(num_models=2, loss="mse", optimizer=OPT, batch_size=16, progress=False,
              validation_data=(x, y), early_stopping=jaxmlp.EarlyStopping(patience=50), l1=1e-3)  # fmt: skip
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = jaxmlp.fit_ensemble(model, x, y, key=jax.random.key(22), epochs=4,
                               checkpoint_dir=full_dir, checkpoint_every=2, keep=10, **kw)  # fmt: skip
    cut_dir.mkdir()
    shutil.copy(full_dir / "ckpt_000002.npz", cut_dir)
    resumed = jaxmlp.fit_ensemble(model, x, y, key=jax.random.key(22), epochs=4,
                                  checkpoint_dir=cut_dir, checkpoint_every=2, resume=True, **kw)  # fmt: skip
    chex.assert_trees_all_equal(resumed.params, full.params)
    assert type(resumed.params[1]).__name__ == "Norm" and resumed.params[1].scale.shape == (2, 6)
    ck = load_checkpoint(cut_dir / "ckpt_000004.npz", model=model)
    assert ck.members == 2
    chex.assert_trees_all_equal(ck.params, full.params)
