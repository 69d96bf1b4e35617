"""Per-example gradients and their norms against jax.vmap(jax.grad(...))."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest

import jaxmlp

CASES = [
    ("tanh_mse", jaxmlp.MLP((4, 6, 5, 3), activation="tanh"), "mse", 0.0),
    ("relu_huber_l2", jaxmlp.MLP((4, 7, 3), activation="relu"), "huber", 0.3),
    (
        "softmax_ce",
        jaxmlp.MLP((4, 6, 3), activation="gelu", output_activation="softmax"),
        "softmax_cross_entropy",
        0.0,
    ),
    (
        "softmax_mse",
        jaxmlp.MLP((4, 5, 3), activation="silu", output_activation="softmax"),
        "mse",
        0.1,
    ),
    ("sse_sigmoid", jaxmlp.MLP((4, 5, 3), activation="sigmoid"), "sse", 0.0),
]


def _setup(model, loss, seed):
    kp, kx, ky, kb = jax.random.split(jax.random.key(seed), 4)
    params = model.init(kp)
    # Non-zero biases so a bias bug cannot hide behind zeros.
    params = tuple(
        jaxmlp.Dense(p.w * 1.3, 0.4 * jax.random.normal(k, p.b.shape))
        for p, k in zip(params, jax.random.split(kb, len(params)), strict=True)
    )
    x = jax.random.normal(kx, (9, 4))
    y = (
        jax.random.randint(ky, (9,), 0, 3)
        if loss == "softmax_cross_entropy"
        else jax.random.normal(ky, (9, 3))
    )
    return params, x, y


@pytest.mark.parametrize(("name", "model", "loss", "l2"), CASES, ids=[c[0] for c in CASES])
def test_per_example_grads_match_vmapped_autodiff(name, model, loss, l2):
    params, x, y = _setup(model, loss, 0)
    single = jaxmlp.loss_fn(model, loss, l2=l2)
    expected = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(params, x, y)
    got = jax.jit(jaxmlp.per_example_grads(model, loss, l2=l2))(params, x, y)
    chex.assert_trees_all_equal_structs(got, expected)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)
    norms = jax.jit(jaxmlp.per_example_grad_norms(model, loss, l2=l2))(params, x, y)
    expected_norms = jnp.sqrt(
        sum(jnp.sum(g.reshape(9, -1) ** 2, axis=1) for g in jax.tree.leaves(expected))
    )
    assert norms.shape == (9,)
    chex.assert_trees_all_close(norms, expected_norms, rtol=1e-5, atol=1e-6)


def test_mean_of_per_example_grads_is_the_batch_gradient():
    model = jaxmlp.MLP((4, 6, 3), activation="tanh")
    params, x, y = _setup(model, "mse", 1)
    per = jaxmlp.per_example_grads(model, "mse")(params, x, y)
    _, batch = jaxmlp.value_and_grad(model, "mse")(params, x, y)
    chex.assert_trees_all_close(jax.tree.map(lambda g: g.mean(0), per), batch, rtol=1e-5, atol=1e-6)
