"""Short runs of the examples on real data (examples/02-05, 08-11): the figures they promise.

Each example exposes ``main(epochs=None, ...) -> dict``; these tests import the scripts from
``examples/`` and run them with fewer epochs than the scripts' defaults, then assert what the
README reports: R^2 above the bar, digits accuracy >= 0.95, manual and autodiff curves equal to
float32 rounding, and an ensemble that disagrees most where it saw no data; then the pieces
beyond the plain stack: residual + norm train a deep network faster, dropout narrows the train/test
gap, feature crosses make the circle linear, and a SIREN beats ReLU on a picture.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import jaxmlp
from jaxmlp._engine.step import TRACE_COUNTS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Every test here trains an example on real data: slow tier (`make test`, not `make test-fast`).
pytestmark = pytest.mark.slow


def load_example(filename: str) -> ModuleType:
    """Imports ``examples/<filename>`` as a module (the names start with digits)."""
    name = "jaxmlp_example_" + filename.removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# %% 02: diabetes regression
@pytest.fixture(scope="module")
def regression():
    return load_example("02_regression.py").main(epochs=30)


def test_regression_r2_clears_bar(regression):
    # 30 of the script's 200 epochs (seeds 0-5 gave 0.33-0.47); the full run reaches 0.50.
    assert regression["r2"] >= 0.25, regression


def test_regression_baseline_and_r2_helper(regression):
    from sklearn.metrics import r2_score

    ex = load_example("02_regression.py")
    rng = np.random.default_rng(3)
    pred, y = rng.normal(size=(2, 50, 1))
    # The script's R^2 (used for both figures) against scikit-learn's, an independent reference.
    assert ex.r2(pred, y) == pytest.approx(r2_score(y, pred), rel=1e-12)
    # Least squares with an intercept on diabetes scores about 0.3-0.55 on a 25% split.
    assert 0.25 < regression["r2_linear"] < 0.7, regression


# %% 03: digits classification
def test_digits_accuracy_and_no_recompile():
    ex = load_example("03_classification.py")
    before = TRACE_COUNTS["epochs"]
    out = ex.main(epochs=10)
    # 10 of the script's 30 epochs: 0.976 here; seeds 0-5 gave 0.956-0.982 at 10 epochs.
    assert out["accuracy"] >= 0.95, out
    assert out["n_test"] == 449
    # The second, timed fit must reuse the first one's program, or "fit time" includes a compile.
    assert TRACE_COUNTS["epochs"] - before <= 1


# %% 04: manual vs autodiff
@pytest.fixture(scope="module")
def ex04():
    return load_example("04_manual_vs_autodiff.py")


def test_manual_and_autodiff_curves_agree(ex04):
    out = ex04.main(epochs=5)
    # Observed: 0 over 5 epochs and ~2e-7 (about 2 float32 eps) over the full 30. The bar
    # sits 100x above that, yet a 0.1% error in the gradient crosses it (next test).
    assert out["max_rel"] < 1e-4, out
    assert out["param_max_diff"] < 1e-5, out
    assert out["grad_max_diff"] < 1e-6 * max(out["grad_max_abs"], 1.0), out


def test_curve_divergence_detects_a_small_gradient_bug(ex04):
    x, y = ex04.load_data()
    ce = jaxmlp.get_loss(ex04.LOSS)
    # A planted bug: the hand-written output gradient 0.05% too large; autodiff never reads it.
    # It is below the tolerance of fit's one-batch check of a custom loss's gradient (0.1% of the
    # gradient's size in float32), so only the training curves can show it.
    planted = ce._replace(
        name="planted_ce", per_example_grad=lambda z, t: 1.0005 * ce.per_example_grad(z, t)
    )
    faulty = ex04.train("manual", x, y, epochs=5, loss=planted)
    reference = ex04.train("autodiff", x, y, epochs=5)
    assert (
        ex04.curve_divergence(faulty.history["loss"], reference.history["loss"])["max_rel"] > 1e-4
    )
    # At 0.1% fit refuses the loss before training.
    louder = planted._replace(per_example_grad=lambda z, t: 1.001 * ce.per_example_grad(z, t))
    with pytest.raises(ValueError, match="per_example_grad of 'planted_ce' disagrees"):
        ex04.train("manual", x, y, epochs=5, loss=louder)


def test_curve_divergence_rejects_unequal_lengths(ex04):
    with pytest.raises(ValueError, match="different lengths"):
        ex04.curve_divergence([1.0, 2.0], [1.0])


# %% 05: ensemble spread
def test_ensemble_spreads_where_there_is_no_data():
    # Plain members only: tests/test_ensemble.py covers bootstrap resampling itself.
    out = load_example("05_ensemble.py").main(epochs=60)
    spread = out["spread"]
    # 60 of 200 epochs; the full run gives about 0.06 on the data, 0.2 in the gap.
    assert spread["gap"] > 1.5 * spread["data"], out
    assert spread["outside"] > spread["data"], out
    assert out["error"]["data"] < 0.3, out


# %% 00 and 01: the contract the docs state, main(epochs=None, ...) -> dict, on the two
# examples without a data set (tests/test_docs.py checks every example's signature).
def test_demo_and_lecture_examples_take_epochs_and_return_dicts(capsys):
    demo = load_example("00_demo.py").main(epochs=5)
    assert isinstance(demo, dict) and demo["epochs"] == 5 and demo["gradcheck_ok"], demo
    assert demo["loss_final"] < demo["loss_first"], demo
    lecture = load_example("01_lecture_networks.py").main(epochs=3)
    assert isinstance(lecture, dict) and lecture["epochs"] == 3, lecture
    assert lecture["loss_final"] < lecture["loss_after"] < lecture["loss_before"], lecture
    assert "loss after 3 steps" in capsys.readouterr().out


# %% 08-11: the pieces beyond the plain stack (issue 15), each on its own small task
def test_residual_and_norm_train_a_deep_network_faster(tmp_path):
    out = load_example("08_deep_residual_norm.py").main(epochs=3, out=tmp_path)
    plain, resnorm = out["plain"], out["residual+norm"]
    assert out["depth"] >= 8 and len(plain["curve"]) == len(resnorm["curve"]) == 3, out
    # 3 of 30 epochs: plain 0.75, residual+norm 0.10 here (the full run: docs/layers.md).
    assert resnorm["final_loss"] < 0.5 * plain["final_loss"], out
    assert resnorm["test_accuracy"] > plain["test_accuracy"], out
    # Layer norm's scale and offset: 2 per unit of each of the 16 hidden layers.
    assert resnorm["params"] - plain["params"] == 2 * 64 * out["depth"], out
    if out["picture"] is not None:
        assert (tmp_path / "08_deep_curves.png").stat().st_size > 0


def test_dropout_narrows_the_train_test_gap():
    out = load_example("09_dropout.py").main(epochs=100, members=4)
    plain, dropped = out["p=0"], out["p=0.5"]
    # 100 of 500 epochs (8 members gave a gap of 1.41 without dropout, 0.65 with it; the full
    # run 1.63 and 0.92).
    assert dropped["gap"] < 0.75 * plain["gap"], out
    assert plain["train"] < dropped["train"], out  # without dropout it memorises more
    assert dropped["test"] < plain["test"], out
    # Every member without dropout fits its 60 rows below the noise variance.
    assert plain["train"] < out["noise_floor"], out


def test_playground_features_make_circle_linear_and_spiral_easy():
    out = load_example("10_feature_crosses.py").main(epochs=80)
    circle, spiral = out["circle"], out["spiral"]
    # 80 of 200 epochs: circle 0.46 raw, 0.99 on the features; spiral 0.58 and 0.93 (the full
    # run: 0.53, 0.995; 0.84, 0.96). Seeds 1-3 gain 0.21-0.26 on the spiral by then; after 40
    # epochs the gain was +0.19 to -0.04, too close to the bound (the compile is most of the time).
    assert circle["playground"]["test"] > 0.9, out
    assert circle["raw"]["test"] < 0.75, out  # no line separates a disc from its ring
    assert spiral["playground"]["test"] > spiral["raw"]["test"] + 0.05, out
    assert circle["raw"]["params"] == 6 and circle["playground"]["params"] == 16, out


def test_siren_fits_a_picture_better_than_relu(tmp_path):
    out = load_example("11_siren.py").main(epochs=20, out=tmp_path)
    psnr = out["psnr"]
    # 20 of 150 epochs: SIREN 20.9 dB, ReLU 13.2, ReLU + Fourier features 19.5 (the full run:
    # 26.4, 14.3, 39.8).
    assert psnr["siren"] > psnr["relu"] + 3, out
    assert psnr["relu+fourier"] > psnr["relu"] + 3, out
    assert out["params"]["siren"] == out["params"]["relu"], out
    if out["picture"] is not None:
        assert (tmp_path / "11_siren.png").stat().st_size > 0
