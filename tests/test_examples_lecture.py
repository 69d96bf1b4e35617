"""examples/01_lecture_networks.py: runs it and checks what it prints and returns."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxmlp

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "01_lecture_networks.py"

# Every test here runs the example script: slow tier (`make test`, not `make test-fast`).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(SCRIPT), run_name="lecture_example")


@pytest.fixture(scope="module")
def run(example):
    """``main()``'s result and everything it printed (one run for the whole module)."""
    with pytest.MonkeyPatch.context() as mp:
        lines: list[str] = []
        mp.setitem(example["main"].__globals__, "print", lambda *a, **k: lines.append(_fmt(a, k)))
        result = example["main"]()
    return result, "".join(lines)


def _fmt(args, kwargs):
    return kwargs.get("sep", " ").join(map(str, args)) + kwargs.get("end", "\n")


def test_parameter_counts_and_summaries(run):
    result, out = run
    assert result["counts"] == {"3-4-2": 26, "3-4-3-2": 39}
    for fragment in ("(3+1)*4 = 16", "(4+1)*2 = 10", "(4+1)*3 = 15", "(3+1)*2 = 8"):
        assert fragment in out
    assert "2 layers (input not counted)" in out and "3 layers (input not counted)" in out


def test_forward_pass_prints_every_layer(run):
    _, out = run
    for l in (1, 2, 3):
        assert f"z^({l}) = a^({l - 1}) @ w^({l}) + b^({l})" in out
        assert re.search(rf"a\^\({l}\) = (sigmoid|identity)\(z\^\({l}\)\)", out)


def test_backward_pass_prints_each_chain_rule_factor_per_layer(run):
    _, out = run
    for l in (1, 2, 3):
        assert f"dC/da^({l})" in out
        assert f"da^({l})/dz^({l})" in out
        assert f"dC/dz^({l}) = product" in out
        assert f"dz^({l})/dw^({l}) = a^({l - 1})" in out
        assert f"dC/dw^({l}) = a^({l - 1})^T dz" in out
        assert f"the lecture's dC/dW^({l})[to, from] = dw.T" in out
        assert f"dC/db^({l}) = dz * 1" in out
    assert "dz^(3)/da^(2) = W^(3)" in out and "dz^(2)/da^(1) = W^(2)" in out


def test_gradient_descent_step_lowers_the_loss(run):
    result, out = run
    match = re.search(r"loss before ([\d.]+)\s+after ([\d.]+)", out)
    assert match is not None
    before, after = map(float, match.groups())
    assert after < before
    assert (before, after) == pytest.approx((result["loss_before"], result["loss_after"]), abs=1e-6)


def test_agrees_with_jax_grad_and_gradcheck(run):
    result, out = run
    assert result["max_diff_vs_jax_grad"] < 1e-6
    assert result["gradcheck_ok"]
    assert "overall: OK" in out
    for l in (1, 2, 3):
        for name in ("w", "b"):
            assert re.search(rf"^\s+{l}\s+{name}\s.*\| yes$", out, re.MULTILINE)


def test_hand_written_backward_matches_the_library_on_the_small_network(example):
    # The walk-through's chain rule is general: on 3-4-2 too it gives jaxmlp's gradient.
    model = example["SMALL"]
    params = example["lecture_parameters"](model, jax.random.key(3))
    x = np.asarray([[1.0, 0.5, -0.25], [0.0, 2.0, 1.0]], np.float32)
    y = np.asarray([[0.5, 0.0], [-1.0, 1.0]], np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(example["backward_pass"].__globals__, "print", lambda *a, **k: None)
        trace = jaxmlp.forward_trace(model, params, x)
        grads = example["backward_pass"](model, params, trace, y)
    _, want = jax.jit(jaxmlp.value_and_grad(model, "sse"))(params, x, y)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
