"""One process of a two-process data-parallel fit on 127.0.0.1: argv = process_id port out_dir."""

import json
import sys

import jax
import numpy as np
import optax

import jaxmlp
from jaxmlp._distributed import initialize, local

pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
initialize(f"127.0.0.1:{port}", 2, pid)
model = jaxmlp.MLP((3, 16, 2), activation="tanh")
x = jax.random.normal(jax.random.key(1), (100, 3))
y = x[:, :2] ** 2
params = model.init(jax.random.key(2))
result = jaxmlp.fit(
    model, params, x, y, key=jax.random.key(3), loss="mse", optimizer=optax.adam(0.01), batch_size=16,
    epochs=5, progress=False, mesh=jaxmlp.data_parallel_mesh(), checkpoint_dir=f"{out}/ckpt",
)  # fmt: skip
leaves = [np.asarray(local(a)).tolist() for a in jax.tree.leaves(result.params)]
with open(f"{out}/process{pid}.json", "w") as f:
    json.dump(
        {"processes": jax.process_count(), "devices": len(jax.devices()), "params": leaves}, f
    )
