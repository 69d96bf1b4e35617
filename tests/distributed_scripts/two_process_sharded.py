"""One process of a two-process fit on sharded input (127.0.0.1): argv = process_id port out_dir.

Process 0 holds rows [0, 60) of the 100 rows, process 1 rows [60, 100), each as an ArraySource
that says where its rows sit; neither sees the other's rows.
"""

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
x = np.asarray(jax.random.normal(jax.random.key(1), (100, 3)))
y = x[:, :2] ** 2
lo, hi = ((0, 60), (60, 100))[pid]
source = jaxmlp.ArraySource(x[lo:hi], y[lo:hi], offset=lo, global_rows=100)
del x, y  # this process keeps only its own rows
result = jaxmlp.fit(
    model, model.init(jax.random.key(2)), source, key=jax.random.key(3), loss="mse",
    optimizer=optax.adam(0.01), batch_size=16, epochs=5, progress=False, chunk_steps=3,
    mesh=jaxmlp.data_parallel_mesh(),
)  # fmt: skip
leaves = [np.asarray(local(a)).tolist() for a in jax.tree.leaves(result.params)]
with open(f"{out}/process{pid}.json", "w") as f:
    json.dump({"processes": jax.process_count(), "params": leaves,
               "loss": result.history["loss"]}, f)  # fmt: skip
