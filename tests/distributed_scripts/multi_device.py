"""Run in a subprocess with 8 virtual CPU devices; prints one JSON line of comparisons."""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import optax

import jaxmlp


def max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


model = jaxmlp.MLP((3, 16, 2), activation="tanh")
x = jax.random.normal(jax.random.key(1), (100, 3))
y = x[:, :2] ** 2
params = model.init(jax.random.key(2))
mesh = jaxmlp.data_parallel_mesh()
kw = dict(
    loss="mse",
    optimizer=optax.adam(0.01),
    batch_size=16,
    epochs=5,
    progress=False,
    validation_data=(x, y),
)
single = jaxmlp.fit(model, params, x, y, key=jax.random.key(3), **kw)
parallel = jaxmlp.fit(model, params, x, y, key=jax.random.key(3), mesh=mesh, **kw)
out = {
    "devices": len(jax.devices()),
    "fit_params": max_diff(single.params, parallel.params),
    "fit_loss": max(
        abs(a - b) for a, b in zip(single.history["loss"], parallel.history["loss"], strict=True)
    ),
    "replicated": parallel.params[0].w.sharding.is_fully_replicated,
}
try:
    jaxmlp.fit(model, params, x, y, key=jax.random.key(3), mesh=mesh, **{**kw, "batch_size": 12})
except ValueError as err:
    out["indivisible_error"] = str(err)

opt = optax.sgd(0.1)
step = jaxmlp.make_train_step(model, "mse", opt, mesh=mesh)
state, loss = step(jaxmlp.TrainState.create(params, opt, mesh=mesh), x[:16], y[:16])
ref, ref_loss = jaxmlp.make_train_step(model, "mse", opt)(
    jaxmlp.TrainState.create(params, opt), x[:16], y[:16]
)
out["step_params"] = max_diff(state.params, ref.params)
out["step_all_reduces"] = step.lower(state, x[:16], y[:16]).compile().as_text().count("all-reduce")

ens_kw = dict(num_models=8, loss="mse", epochs=4, batch_size=20, progress=False)
plain = jaxmlp.fit_ensemble(model, x, y, key=jax.random.key(4), **ens_kw)
spread = jaxmlp.fit_ensemble(model, x, y, key=jax.random.key(4), mesh=mesh, **ens_kw)
out["ensemble_params"] = max_diff(plain.params, spread.params)
out["ensemble_sharded"] = str(spread.params[0].w.sharding.spec)
print(json.dumps(out))
