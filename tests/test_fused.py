"""The fused Pallas kernels (jaxmlp.fused) against jaxmlp's XLA paths, run through Pallas's
interpreter on the CPU: forward and backward over every supported width, depth, activation, loss
head and dtype; ragged batches; the custom VJP; training; a planted bug; the lowering for CUDA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import jaxmlp
from jaxmlp import MLP, Dense, fused
from jaxmlp.fused import _calls, _kernels

# Small tiles so that a handful of rows already spans several tiles and programs; interpreted on
# the CPU, compiled on a GPU (benchmarks/gpu_fused.sh runs this file there).
SMALL = fused.FusedConfig(tile_rows=16, tiles=2)
# max |fused - reference| / max |reference| over all gradients; half precision against the
# float32 XLA gradients (the 1e-2), float32 against the XLA path in float32.
TOLERANCES = {"float32": 2e-5, "float16": 1e-2, "bfloat16": 1e-2}
REGRESSION = ("sse", "mse", "half_mse", "mae", "huber")


def odd_params(model: MLP, seed: int) -> tuple[Dense, ...]:
    """Weights 1.3 x a LeCun draw, biases N(0, 0.5): nothing is zero, nothing is symmetric."""
    rng = np.random.default_rng(seed)
    return tuple(
        Dense(jnp.asarray(rng.normal(size=(i, o)) * 1.3 / np.sqrt(i), model.param_dtype),
              jnp.asarray(rng.normal(0.0, 0.5, o), model.param_dtype))
        for i, o in model.layer_shapes()
    )  # fmt: skip


def make_data(model: MLP, loss: str, batch: int, seed: int):
    rng = np.random.default_rng(seed + 1)
    x = jnp.asarray(rng.normal(size=(batch, model.sizes[0])), model.param_dtype)
    k = model.sizes[-1]
    if loss == "softmax_cross_entropy":
        y = jnp.asarray(rng.integers(0, k, batch))
    elif loss == "sigmoid_binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, (batch, k)), model.param_dtype)
    else:
        y = jnp.asarray(rng.normal(size=(batch, k)), model.param_dtype)
    return x, y


def as_float32(model: MLP, params):
    """The same network and weights in float32, no mixed precision: the reference."""
    ref = MLP(model.sizes, model.activation, model.output_activation)
    return ref, jax.tree.map(lambda a: a.astype(jnp.float32), params)


def rel_err(got, want) -> float:
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    scale = max(float(jnp.max(jnp.abs(w.astype(jnp.float32)))) for w in want)
    diff = max(float(jnp.max(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32))))
               for g, w in zip(got, want, strict=True))  # fmt: skip
    return diff / scale if scale else diff  # all-zero gradients: softmax over one class


def check_against_xla(
    model, loss, *, batch=37, seed=0, weighted=False, config=SMALL, l2=0.0,
    methods=("manual", "autodiff"),
):  # fmt: skip
    """Fused value, gradients and forward pass against the manual XLA path and jax.grad."""
    params = odd_params(model, seed)
    x, y = make_data(model, loss, batch, seed)
    sw = jnp.asarray(np.random.default_rng(seed).uniform(0, 2, batch)) if weighted else None
    value, grads = jax.jit(fused.value_and_grad(model, loss, config=config, l2=l2))(
        params, x, y, sw
    )
    assert value.dtype == jnp.dtype(model.param_dtype)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
        assert g.shape == p.shape and g.dtype == p.dtype
    ref_model, ref_params = as_float32(model, params)
    x32, y32 = x.astype(jnp.float32), y if y.ndim == 1 else y.astype(jnp.float32)
    tol = TOLERANCES[model.compute_dtype or model.param_dtype]
    for method in methods:
        v_ref, g_ref = jax.jit(jaxmlp.value_and_grad(ref_model, loss, method=method, l2=l2))(
            ref_params, x32, y32, sw
        )
        assert abs(float(value) - float(v_ref)) <= tol * max(1.0, abs(float(v_ref)))
        assert rel_err(grads, g_ref) <= tol, (method, rel_err(grads, g_ref))
    out = fused.apply(model, params, x, config=config)
    assert out.dtype == jnp.dtype(model.param_dtype)
    assert rel_err(out, ref_model.apply(ref_params, x32)) <= tol
    return grads


# Every width (and widths between them: padded), depths 1 to 8, every activation, head and dtype.
CASES = {
    "w32_tanh_sigmoid_out_sse": (MLP((5, 32, 32, 3), "tanh", "sigmoid"), "sse", True),
    "w64_sin_identity_softmax_ce": (MLP((7, 64, 64, 10), ("sin", "identity")), "softmax_cross_entropy", True),
    "w128_sigmoid_bce": (MLP((3, 128, 4), "sigmoid"), "sigmoid_binary_cross_entropy", False),
    "depth8_mixed_half_mse": (MLP((2,) + (20,) * 7 + (1,), ("relu", "tanh", "sin", "sigmoid", "identity", "relu", "tanh"), "tanh"), "half_mse", False),
    "depth1_w16_huber_unfused_head": (MLP((16, 2), "relu", "sigmoid"), "huber", True),
    "bf16_compute": (MLP((32, 64, 64, 3), "relu", compute_dtype="bfloat16"), "mse", False),
    "f16_params": (MLP((32, 64, 64, 3), "tanh", param_dtype="float16"), "mse", True),
    "bf16_params_ce": (MLP((6, 32, 5), "relu", param_dtype="bfloat16"), "softmax_cross_entropy", False),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_matches_xla_paths(case):
    model, loss, weighted = CASES[case]
    check_against_xla(model, loss, weighted=weighted)


@st.composite
def networks(draw):
    depth = draw(st.integers(1, 8))
    sizes = tuple(draw(st.lists(st.sampled_from([1, 3, 16, 17, 32, 64, 100, 128]),
                                min_size=depth + 1, max_size=depth + 1)))  # fmt: skip
    acts = tuple(draw(st.sampled_from(fused.HIDDEN_ACTIVATIONS)) for _ in range(depth - 1))
    loss = draw(st.sampled_from(("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mae")))  # fmt: skip
    out = "identity" if loss != "mse" else draw(st.sampled_from(fused.OUTPUT_ACTIVATIONS))
    dtype = ("float32", None)
    if loss != "mae":  # its sign(out - y) flips on half-precision rounding: float32 only
        dtype = draw(st.sampled_from([dtype, ("float32", "bfloat16"), ("float16", None)]))
    model = MLP(sizes, acts, out, param_dtype=dtype[0], compute_dtype=dtype[1])
    return model, loss, draw(st.integers(1, 70)), draw(st.booleans())


# No shrinking: each example compiles its own kernels (seconds), and shrinking a failure would
# take minutes of CI; the failing example is printed as drawn.
@settings(max_examples=3, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(networks())
def test_random_networks_match_xla(c):
    model, loss, batch, weighted = c
    check_against_xla(model, loss, batch=batch, weighted=weighted)


@pytest.mark.slow
@settings(max_examples=4, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(networks())
def test_random_networks_match_xla_long(c):
    model, loss, batch, weighted = c
    check_against_xla(model, loss, batch=batch, weighted=weighted, seed=batch)


@pytest.mark.parametrize("batch", [1, 33, 100], ids=lambda b: f"batch{b}")
def test_ragged_batches_are_exact(batch):
    # Padded rows (to 32 a program) must add nothing: the float32 gradients agree to rounding.
    check_against_xla(
        MLP((3, 16, 2), "tanh"), "mse", batch=batch, weighted=True, methods=("manual",)
    )


def test_one_example_and_leading_axes():
    model = MLP((4, 16, 2), "tanh")
    params = odd_params(model, 3)
    x, y = make_data(model, "mse", 6, 3)
    v1, g1 = fused.value_and_grad(model, "mse", config=SMALL)(params, x[0], y[0])
    v2, g2 = jaxmlp.value_and_grad(model, "mse")(params, x[0], y[0])
    assert rel_err((v1, g1), (v2, g2)) < 1e-6
    grid = x.reshape(2, 3, 4)
    out = fused.apply(model, params, grid, config=SMALL)
    np.testing.assert_allclose(out, model.apply(params, grid), rtol=1e-6, atol=1e-6)


def test_grad_of_any_loss_through_apply_runs_the_fused_backward():
    # jax.grad of a loss jaxmlp does not know, with respect to the parameters and the input.
    model = MLP((3, 32, 17, 2), ("sin", "tanh"), "sigmoid")
    params = odd_params(model, 4)
    x, _ = make_data(model, "mse", 40, 4)

    def objective(apply):
        return lambda p, x: jnp.sum(jnp.cos(apply(p, x)) * jnp.arange(2.0)[None, :]) + jnp.sum(x**2)

    fused_apply = lambda p, x: fused.apply(model, p, x, config=SMALL)  # noqa: E731
    got = jax.jit(jax.grad(objective(fused_apply), argnums=(0, 1)))(params, x)
    want = jax.grad(objective(model.apply), argnums=(0, 1))(params, x)
    assert rel_err(got, want) < 1e-5
    jaxpr = str(jax.make_jaxpr(jax.grad(objective(fused_apply)))(params, x))
    assert jaxpr.count("pallas_call") == 2  # the forward kernel and the backward kernel


def test_penalties_and_dispatch_through_jaxmlp_value_and_grad():
    model = MLP((5, 16, 3), "relu")
    params = odd_params(model, 5)
    x, y = make_data(model, "mse", 20, 5)
    got = jaxmlp.value_and_grad(model, "mse", method="fused", l2=0.1, l1=0.01)(params, x, y)
    want = jaxmlp.value_and_grad(model, "mse", method="manual", l2=0.1, l1=0.01)(params, x, y)
    assert rel_err(got, want) < 1e-5


def test_planted_bug_is_caught(monkeypatch):
    # A kernel with tanh'(z) = 1 - a (instead of 1 - a^2) must fail the comparison.
    right = _kernels._deriv

    def wrong(name, z, a):
        return 1.0 - a if name == "tanh" else right(name, z, a)

    monkeypatch.setattr(_kernels, "_deriv", wrong)
    _calls.forward_call.cache_clear()
    _calls.backward_call.cache_clear()
    try:
        with pytest.raises(AssertionError):
            check_against_xla(MLP((3, 16, 16, 2), "tanh"), "mse")
    finally:
        _calls.forward_call.cache_clear()
        _calls.backward_call.cache_clear()


def neural_field(n=256, seed=0):
    """A tiny neural field: random Fourier features of 2-D points -> a smooth value."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=(n, 2))
    b = rng.normal(size=(2, 16)) * 3
    x = np.concatenate([np.cos(2 * np.pi * p @ b), np.sin(2 * np.pi * p @ b)], axis=1)
    y = np.sin(6 * p[:, :1]) * np.cos(4 * p[:, 1:])
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.slow
def test_fit_fused_reaches_the_manual_loss():
    x, y = neural_field()
    model = MLP((32, 32, 32, 1), "relu")
    params = model.init(jax.random.key(1))
    runs = {
        method: jaxmlp.fit(model, params, x, y, loss="mse", method=method, epochs=15,
                           batch_size=64, key=jax.random.key(0), optimizer=optax.adam(3e-3),
                           progress=False)
        for method in ("manual", "fused")
    }  # fmt: skip
    manual, fused_run = (runs[m].history["loss"] for m in ("manual", "fused"))
    assert manual[-1] < 0.2 * manual[0]  # it learned
    np.testing.assert_allclose(fused_run, manual, rtol=1e-4)


@pytest.mark.slow
def test_ensembles_vmap_the_kernels():
    x, y = neural_field(96)
    model = MLP((32, 16, 1), "tanh")
    runs = [jaxmlp.fit_ensemble(model, x, y, loss="mse", method=method, num_models=2, epochs=2,
                                batch_size=32, key=jax.random.key(0), progress=False)
            for method in ("manual", "fused")]  # fmt: skip
    assert rel_err(runs[1].params, runs[0].params) < 1e-5


UNSUPPORTED = {
    "norm": (MLP((3, 16, 1), norm="layernorm"), "model: the fused kernels run the plain stack only, not norm"),
    "width": (MLP((3, 129, 1)), "model: the fused kernels take widths up to 128"),
    "depth": (MLP((3,) + (8,) * 9), "model: the fused kernels take up to 8 layers"),
    "activation": (MLP((3, 16, 1), "gelu"), "activation: 'gelu' has no fused kernel"),
    "output": (MLP((3, 16, 1), "relu", "softplus"), "output_activation: 'softplus' has no fused kernel"),
}  # fmt: skip


@pytest.mark.parametrize("case", UNSUPPORTED, ids=list(UNSUPPORTED))
def test_unsupported_models_are_refused_by_name(case):
    model, message = UNSUPPORTED[case]
    assert not fused.supports(model)
    assert fused.unsupported(model, "mse").startswith(message)
    with pytest.raises(ValueError, match=f"^{message}"):
        jaxmlp.value_and_grad(model, "mse", method="fused")
    with pytest.raises(ValueError, match=f"^{message}"):
        fused.apply(model, model.init(jax.random.key(0)), jnp.ones((2, 3)))


def test_float64_is_refused(x64):
    model = MLP((3, 16, 1), param_dtype="float64")
    message = (
        "param_dtype: the fused kernels take ['float32', 'float16', 'bfloat16'], got 'float64'"
    )
    assert fused.unsupported(model) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        fused.value_and_grad(model, "mse")


def test_bad_config_and_a_non_gpu_backend_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"^tile_rows: expected a power of two >= 16"):
        fused.FusedConfig(tile_rows=24)
    with pytest.raises(ValueError, match=r"^tiles: expected a power of two"):
        fused.FusedConfig(tiles=0)
    with pytest.raises(ValueError, match=r"^accumulate: expected 'auto', 'registers' or"):
        fused.FusedConfig(accumulate="shared")
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    with pytest.raises(ValueError, match=r"^config: the fused kernels compile for GPUs only"):
        fused.check(MLP((3, 16, 1)))
    fused.check(MLP((3, 16, 1)), config=fused.FusedConfig(interpret=True))


# (param dtype, compute dtype, loss, hidden activations, kernels per step, accumulation)
LOWERINGS = {
    "f32_mse": ("float32", None, "mse", "relu", 1, "registers"),
    "bf16_compute_softmax_ce": ("float32", "bfloat16", "softmax_cross_entropy", "tanh", 1, "memory"),
    "f16_bce": ("float16", None, "sigmoid_binary_cross_entropy", "sigmoid", 1, "registers"),
    "bf16_huber_two_kernels": ("bfloat16", None, "huber", "sin", 2, "registers"),
}  # fmt: skip


@pytest.mark.parametrize("case", LOWERINGS, ids=list(LOWERINGS))
def test_kernels_lower_for_cuda_through_triton(case):
    # No GPU needed: the kernels are lowered (Pallas -> Triton IR) for a CUDA target ahead of time.
    dtype, compute, loss, act, launches, accumulate = LOWERINGS[case]
    model = MLP((32, 64, 64, 128, 64, 3), act, param_dtype=dtype, compute_dtype=compute)
    config = fused.FusedConfig(interpret=False, tiles=4, accumulate=accumulate)
    params = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1 << 14, 32), jnp.dtype(dtype))
    y = jax.ShapeDtypeStruct((1 << 14,) if loss == "softmax_cross_entropy" else (1 << 14, 3),
                             jnp.dtype("int32" if loss == "softmax_cross_entropy" else dtype))  # fmt: skip
    step = jax.jit(fused.value_and_grad(model, loss, config=config))
    text = step.trace(params, x, y).lower(lowering_platforms=("cuda",)).as_text()
    # one launch for forward, head and backward (two when the loss runs in XLA between them)
    assert text.count("__gpu$xla.gpu.triton") == launches
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(fused.apply(model, p, x, config=config))))
    text = grad.trace(params, x).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == 2


@pytest.mark.slow
def test_benchmark_script_quick_run(tmp_path):
    # The GPU benchmark's CPU smoke mode: every stage runs and writes its records.
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_fused.py"
    args = ["--quick", "--out", str(tmp_path), "--impls", "fused,xla,flax", "--modes", "train"]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True)
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert {r["impl"] for r in records} == {"fused", "xla", "flax"}
    assert all(r["seconds"] > 0 for r in records)
    accuracy = json.loads((tmp_path / "accuracy.json").read_text())
    assert accuracy and all(a["rel_err"] <= a["target"] for a in accuracy)
    assert "targets" in json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.slow
def test_neural_field_example_trains_the_same_with_both_methods():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "12_fused_neural_field.py"
    spec = importlib.util.spec_from_file_location("jaxmlp_example_12", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(epochs=6, side=16)
    assert out["max_curve_diff"] < 1e-4
    assert out["final_loss"]["fused"] < 0.5 * out["first_loss"]


def test_weight_gradients_accumulated_in_memory():
    # The other accumulation (each tile's dw added into the program's output block).
    config = fused.FusedConfig(tile_rows=16, tiles=4, accumulate="memory")
    check_against_xla(MLP((5, 32, 32, 3), "tanh", "sigmoid"), "sse", batch=100, weighted=True,
                      config=config, methods=("manual",))  # fmt: skip


def test_soft_targets_of_the_cross_entropy_heads():
    # Probability rows for the softmax head (sum 1, and one row summing to 0.5), soft 0..1 labels
    # for the sigmoid head.
    rng = np.random.default_rng(7)
    model = MLP((4, 16, 5), "tanh")
    params = odd_params(model, 7)
    x = jnp.asarray(rng.normal(size=(21, 4)), jnp.float32)
    probs = rng.dirichlet(np.ones(5), 21)
    probs[3] *= 0.5
    for loss, y in (("softmax_cross_entropy", probs), ("sigmoid_binary_cross_entropy",
                                                       rng.uniform(size=(21, 5)))):  # fmt: skip
        y = jnp.asarray(y, jnp.float32)
        got = fused.value_and_grad(model, loss, config=SMALL)(params, x, y)
        want = jaxmlp.value_and_grad(model, loss, method="manual")(params, x, y)
        assert rel_err(got, want) < 1e-5, loss
