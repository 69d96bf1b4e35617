"""The lecture's networks, one equation at a time: counts, a forward pass, the chain rule, a step.

The lecture (L3a, "NNs for structured data") draws two small networks: 3 inputs, 4 hidden
units, 2 outputs (3-4-2), and the same with a second hidden layer of 3 units (3-4-3-2). This
script walks through them with jaxmlp:

1. parameter counts: each layer has ``(n_in + 1) * n_out`` parameters (weights plus biases);
2. one forward pass (eqs. 18, 39-42), printing ``z^(l)`` and ``a^(l)`` for every layer;
3. one manual backward pass (eqs. 19, 23-24, 32-36, 44-64), printing every chain-rule factor
   for every layer, then checking it against ``jaxmlp.backward``;
4. one gradient-descent update (eq. 17) and the loss before and after it (``main(epochs=n)``
   takes ``n`` steps);
5. the agreement with ``jax.grad`` and a ``gradcheck`` table (finite differences as well).

Notation. The code follows the lecture's backpropagation section: ``z`` is the pre-activation,
``a`` the activation, ``a^(0) = x``. In code ``trace.z[l-1]`` is the lecture's ``z^(l)`` and
``trace.a[l]`` its ``a^(l)`` (``trace.a[0]`` is the input). ``dz``, ``dw``, ``db``, ``da`` are
dL/dz, dL/dw, dL/db, dL/da. The lecture writes ``z = W a + b`` with ``W[to, from]`` acting on
column vectors; jaxmlp stores one example per row, so ``z = a @ w + b`` and ``w[from, to]`` is
the lecture's ``W`` transposed. Every gradient below prints in jaxmlp's orientation; transpose
``dw`` to read the lecture's ``dL/dW``.

The loss is the lecture's squared error ``C = (a^(L) - y)^2`` summed over the outputs (eqs. 22,
43), jaxmlp's ``"sse"``; the hidden units use the sigmoid ``sigma`` of eq. 18 and the output is
linear (eq. 21, ``a^(L) = z^(L)``), the lecture's regression network.

Run: ``python examples/01_lecture_networks.py`` (a few seconds, CPU).
"""

# %% Imports and the two networks
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from jaxmlp import MLP, Dense

SMALL = MLP((3, 4, 2), activation="sigmoid")  # one hidden layer: 2 layers with parameters
DEEP = MLP((3, 4, 3, 2), activation="sigmoid")  # two hidden layers: 3 layers with parameters
LEARNING_RATE = 0.1  # eta in eq. 17


def show(label: str, value) -> None:
    """Prints one labelled array on one line, four decimals."""
    text = np.array2string(np.asarray(value), precision=4, suppress_small=True, separator=", ")
    print(f"    {label:<44} {' '.join(text.split())}")


# %% 1. Parameter counts: (n_in + 1) * n_out per layer
def count_parameters() -> dict[str, int]:
    """Prints both summaries; returns the totals."""
    counts = {}
    for model in (SMALL, DEEP):
        print(model.summary(), end="\n\n")
        counts["-".join(map(str, model.sizes))] = model.count_params()
    # 3-4-2: (3+1)*4 + (4+1)*2 = 16 + 10 = 26; 3-4-3-2: 16 + (4+1)*3 + (3+1)*2 = 39
    assert counts == {"3-4-2": 26, "3-4-3-2": 39}
    return counts


# %% 2. One forward pass (eqs. 18, 39-42)
def lecture_parameters(model: MLP, key: jax.Array) -> tuple[Dense, ...]:
    """Initial weights from the initialiser, and non-zero biases so that every term shows."""
    w_key, b_key = jax.random.split(key)
    params = model.init(w_key)
    b_keys = jax.random.split(b_key, model.num_layers)
    return tuple(
        Dense(p.w, 0.5 * jax.random.normal(k, p.b.shape))
        for p, k in zip(params, b_keys, strict=True)
    )


def forward_pass(model: MLP, params, x: jax.Array) -> jaxmlp.Trace:
    """Runs the forward pass on one example and prints z^(l) and a^(l) per layer."""
    trace = jax.jit(jaxmlp.forward_trace, static_argnums=0)(model, params, x)
    print("forward pass, one example (a^(0) = x):")
    show("a^(0) = x", trace.a[0][0])
    for l in range(1, model.num_layers + 1):
        act = model.activations[l - 1]
        # eq. 39: z^(l) = W^(l) a^(l-1) + b^(l), here a^(l-1) @ w^(l) + b^(l)
        show(f"z^({l}) = a^({l - 1}) @ w^({l}) + b^({l})   (eq. 39)", trace.z[l - 1][0])
        # eq. 40: a^(l) = sigma(z^(l)); eq. 21 for the linear output layer
        show(
            f"a^({l}) = {act}(z^({l}))   (eq. {40 if l < model.num_layers else 42})", trace.a[l][0]
        )
    return trace


# %% 3. One manual backward pass: every chain-rule factor (eqs. 19, 23-24, 32-36, 44-64)
def backward_pass(model: MLP, params, trace: jaxmlp.Trace, y: jax.Array):
    """The chain rule by hand, layer L down to 1, printing each factor; returns the grads."""
    # NumPy from here on: the arithmetic is plain enough to read, and it is a third opinion.
    trace, params, y = jax.tree.map(np.asarray, (trace, params, y))
    L = model.num_layers
    out = trace.a[L]
    # C = sum_k (a_k^(L) - y_k)^2 (eqs. 22, 43), so dC/da^(L) = 2 (a^(L) - y) (eq. 23)
    da = 2 * (out - y)
    grads = [None] * L
    print(f"\nbackward pass, C = sum (a^({L}) - y)^2 = {float(np.sum((out - y) ** 2)):.4f}:")
    for l in range(L, 0, -1):
        z, a, a_prev, w = trace.z[l - 1], trace.a[l], trace.a[l - 1], params[l - 1].w
        act = jaxmlp.get_activation(model.activations[l - 1], output=l == L)
        print(f"  layer {l}{' (output, eqs. 44-45)' if l == L else ''}:")
        show(f"dC/da^({l})   [code: da]", da[0])
        fprime = np.asarray(act.deriv(z, a))
        show(f"da^({l})/dz^({l}) = {act.name}'(z^({l}))", fprime[0])
        dz = da * fprime  # dC/dz^(l) = dC/da^(l) * f'(z^(l)), the layer's "delta"
        show(f"dC/dz^({l}) = product   [code: dz, deltas[{l - 1}]]", dz[0])
        show(f"dz^({l})/dw^({l}) = a^({l - 1})", a_prev[0])
        # eq. 23: dC/dw = dC/dz * a^(l-1); over a batch a^(l-1)^T dz, shape (from, to)
        dw = a_prev.T @ dz
        # eq. 24: dz/db = 1, so dC/db = dC/dz (summed over the batch)
        db = np.sum(dz, axis=0)
        show(f"dC/dw^({l}) = a^({l - 1})^T dz   [code: grads[{l - 1}].w]", dw)
        show(f"  the lecture's dC/dW^({l})[to, from] = dw.T", dw.T)
        show(f"dC/db^({l}) = dz * 1   [code: grads[{l - 1}].b]", db)
        grads[l - 1] = Dense(dw, db)
        if l > 1:
            # eq. 32: dz^(l)/da^(l-1) = W^(l), so dC/da^(l-1) = dz w^(l)^T (W^T delta in the lecture)
            show(f"dz^({l})/da^({l - 1}) = W^({l})   (eq. 32)", w.T)
            da = dz @ w.T
    return tuple(grads)


# %% 4. One gradient-descent step (eq. 17) and the loss before and after
def gradient_descent_step(model: MLP, params, grads, x, y):
    """w_new = w_old - eta dC/dw (eq. 17, and eqs. 25-26, 37-38, 46-47 layer by layer)."""
    new = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
    loss = jax.jit(jaxmlp.loss_fn(model, "sse"))
    before, after = float(loss(params, x, y)), float(loss(new, x, y))
    print(f"\ngradient descent (eq. 17), eta = {LEARNING_RATE}:")
    print(f"    loss before {before:.6f}  after {after:.6f}  (decrease {before - after:.6f})")
    return new, before, after


# %% 5. The same gradient from jax.grad, and a gradcheck table
def compare_with_jax_grad(model: MLP, params, grads, x, y):
    """The largest difference to jax.grad; then gradcheck on a small batch."""
    _, g_auto = jax.jit(jaxmlp.value_and_grad(model, "sse", method="autodiff"))(params, x, y)
    _, g_lib = jax.jit(jaxmlp.value_and_grad(model, "sse", method="manual"))(params, x, y)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), grads, g_auto))
    lib_diffs = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), grads, g_lib))
    max_diff = max(float(d) for d in diffs)
    print("\nthe hand-written chain rule against jax.grad (and jaxmlp.value_and_grad):")
    print(f"    max |by hand - jax.grad|          = {max_diff:.2e}")
    print(f"    max |by hand - jaxmlp manual|     = {max(float(d) for d in lib_diffs):.2e}")

    xb = jax.random.normal(jax.random.key(7), (8, model.sizes[0]))
    yb = jax.random.normal(jax.random.key(8), (8, model.sizes[-1]))
    report = jaxmlp.gradcheck(model, params, xb, yb, "sse")
    print(f"\n{report}")
    return max_diff, report


# %% Run everything
def main(epochs: int | None = None) -> dict:
    """Walks the 3-4-3-2 network through one example, then checks the result against jax.grad.

    Args:
        epochs: gradient-descent steps on the one example (default 1: the lecture's single
            update, eq. 17). The first step uses the gradient computed by hand above; further
            steps use ``jaxmlp.value_and_grad(method="manual")``. The example is the whole
            batch, so a step is an epoch.

    Returns:
        ``counts`` (parameters per network), ``loss_before`` and ``loss_after`` (the loss before
        and after the first step), ``loss_final`` (after ``epochs`` steps), ``epochs``,
        ``max_diff_vs_jax_grad`` (the hand-written chain rule against ``jax.grad``) and
        ``gradcheck_ok``.
    """
    epochs = 1 if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {epochs}")
    counts = count_parameters()
    # jit: one compiled program instead of one per eager operation and shape
    params = jax.jit(lecture_parameters, static_argnums=0)(DEEP, jax.random.key(0))
    x = jnp.asarray([[0.5, -1.0, 2.0]])  # one example, a row: the lecture's column x transposed
    y = jnp.asarray([[1.0, -0.5]])
    trace = forward_pass(DEEP, params, x)
    grads = backward_pass(DEEP, params, trace, y)
    new, before, after = gradient_descent_step(DEEP, params, grads, x, y)
    final = after
    if epochs > 1:
        grad_fn = jax.jit(jaxmlp.value_and_grad(DEEP, "sse", method="manual"))
        for _ in range(epochs - 1):
            _, g = grad_fn(new, x, y)
            new = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, new, g)
        final = float(jax.jit(jaxmlp.loss_fn(DEEP, "sse"))(new, x, y))
        print(f"    loss after {epochs} steps {final:.6f}")
    max_diff, report = compare_with_jax_grad(DEEP, params, grads, x, y)
    return {
        "counts": counts,
        "loss_before": before,
        "loss_after": after,
        "loss_final": final,
        "epochs": epochs,
        "max_diff_vs_jax_grad": max_diff,
        "gradcheck_ok": report.ok,
    }


if __name__ == "__main__":
    main()
