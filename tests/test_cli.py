"""Tests for the ``jaxmlp`` command line, run in-process through ``main(argv)``.

One subprocess run proves the ``python -m jaxmlp`` entry point; everything else calls
``main`` directly so that compiled programs are shared between the tests.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp import cli
from jaxmlp._checkpoint.files import load_checkpoint
from jaxmlp.cli import _commands as _cli_commands
from jaxmlp.cli import _data as _cli_data
from jaxmlp.cli import _train as _cli_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1024, path
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50, path
    pixels = image[::4, ::4].reshape(-1, image.shape[2])  # a sample keeps np.unique quick
    assert len(np.unique(pixels, axis=0)) > 10, path


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxmlp: error: "), err


# ---------------------------------------------------------------- train on a built-in dataset


@pytest.fixture(scope="module")
def circle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("circle")
    # The network and loss of GRADCHECK below, so that the gradient checks share compilations.
    argv = ["train", "--dataset", "circle", "--n", "120", "--hidden", "8,8", "--activation",
            "tanh", "--loss", "mse", "--epochs", "6", "--batch-size", "16", "--lr", "0.05",
            "--out", out, "--no-progress"]  # fmt: skip
    code = cli.main([str(a) for a in argv])
    return code, out


@pytest.mark.slow
def test_train_builtin_writes_every_file(circle_run, capsys):
    code, out = circle_run
    assert code == 0
    header, rows = read_rows(out / "metrics.csv")
    assert header == ["epoch", "loss", "val_loss", "val_metric"]
    assert [int(r[0]) for r in rows] == list(range(1, 7))
    assert all(np.isfinite(float(v)) for r in rows for v in r[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert {"final", "config", "timings", "model", "files", "task"} <= set(summary)
    assert summary["task"] == "classification" and summary["rows"] == {"train": 96, "val": 24}
    assert {"loss", "accuracy"} == set(summary["final"]["train"]) == set(summary["final"]["val"])
    assert summary["final"]["epochs"] == 6 and summary["final"]["gradcheck_ok"] is True
    assert summary["config"]["hidden"] == [8, 8] and summary["timings"]["total_s"] > 0
    pictures = ["loss.png", "decision_boundary.png", "neurons.png", "gradcheck.png", "network.png"]
    assert summary["files"] == ["model.npz", "metrics.csv", "summary.json", *pictures]
    for name in pictures:
        assert_png(out / name)
    ck = load_checkpoint(out / "model.npz")
    # mse on classes: one-hot targets and softmax outputs
    assert ck.model == jaxmlp.MLP((2, 8, 8, 2), "tanh", "softmax")
    assert ck.metadata["encoding"] == "onehot" and ck.metadata["loss"] == "mse"
    assert ck.metadata["classes"] == ["0", "1"] and ck.metadata["features"] == ["x1", "x2"]
    assert len(ck.metadata["x_mean"]) == len(ck.metadata["x_scale"]) == 2


@pytest.mark.slow
def test_summary_of_a_checkpoint(circle_run, capsys):
    code, out, err = run(capsys, "summary", "--checkpoint", circle_run[1])
    assert code == 0 and err == ""
    assert "(2, 8)" in out and "total" in out and "classes: ['0', '1']" in out


# ---------------------------------------------------------------- CSV in, predictions out


def blobs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Three well separated clusters named by strings that do not sort like their indices."""
    rng = np.random.default_rng(seed)
    names = np.array(["emu", "cat", "dog"])
    centres = np.array([[3.0, 0.0], [-3.0, 3.0], [-3.0, -3.0]])
    k = np.arange(n) % 3
    return centres[k] + 0.5 * rng.standard_normal((n, 2)), list(names[k])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    x, labels = blobs(90, 0)
    rows = [[f"{a:.4f}", lab, f"{b:.4f}"] for (a, b), lab in zip(x, labels, strict=True)]
    train_csv = write_csv(root / "train.csv", ["width", "species", "height"], rows)
    argv = ["train", "--data", train_csv, "--target", "species", "--hidden", "8", "--epochs",
            "30", "--lr", "0.05", "--out", root / "run", "--no-progress", "--no-plots"]  # fmt: skip
    return cli.main([str(a) for a in argv]), root


def test_train_csv_with_string_labels_then_predict(classifier, capsys):
    code, root = classifier
    assert code == 0
    ck = load_checkpoint(root / "run" / "model.npz")
    assert ck.metadata["classes"] == ["cat", "dog", "emu"]
    assert ck.metadata["features"] == ["width", "height"] and ck.metadata["target"] == "species"
    # Columns in another order, an extra column, no target: matched by name.
    x, labels = blobs(30, 1)
    rows = [[i, f"{b:.4f}", f"{a:.4f}"] for i, (a, b) in enumerate(x)]
    new = write_csv(root / "new.csv", ["id", "height", "width"], rows)
    code, _, err = run(capsys, "predict", "--checkpoint", root / "run", "--data", new,
                         "--out", root / "preds.csv")  # fmt: skip
    assert code == 0 and "Traceback" not in err
    header, preds = read_rows(root / "preds.csv")
    assert header == ["prediction", "prob_cat", "prob_dog", "prob_emu"]
    assert len(preds) == 30
    probs = np.array([[float(v) for v in r[1:]] for r in preds])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    predicted = [r[0] for r in preds]
    assert set(predicted) <= {"cat", "dog", "emu"}
    assert [header[1:][i] for i in probs.argmax(axis=1)] == [f"prob_{p}" for p in predicted]
    # The names come back in the right places: the clusters are easy, so nearly all match.
    assert np.mean([p == t for p, t in zip(predicted, labels, strict=True)]) >= 0.9


def test_predict_to_stdout_reports_accuracy_when_target_present(classifier, capsys):
    root = classifier[1]
    code, out, err = run(capsys, "predict", "--checkpoint", root / "run" / "model.npz",
                         "--data", root / "train.csv")  # fmt: skip
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("prediction,") and len(lines) == 91
    assert "accuracy" in err and "species" in err


def test_predict_keep_carries_named_columns_through(classifier, capsys):
    root = classifier[1]
    x, labels = blobs(12, 2)
    rows = [[f"r{i:03d}", f"{a:.4f}", lab, f"{b:.4f}", f"2024-01-{i + 1:02d}"]
            for i, ((a, b), lab) in enumerate(zip(x, labels, strict=True))]  # fmt: skip
    data = write_csv(root / "ids.csv", ["id", "width", "species", "height", "date"], rows)
    code, _, err = run(capsys, "predict", "--checkpoint", root / "run", "--data", data,
                       "--keep", "date,id", "--out", root / "kept.csv")  # fmt: skip
    assert code == 0, err
    header, preds = read_rows(root / "kept.csv")
    assert header == ["date", "id", "prediction", "prob_cat", "prob_dog", "prob_emu"]
    assert [r[:2] for r in preds] == [[r[4], r[0]] for r in rows]  # row for row, as given
    # The predictions themselves are those of a run without --keep.
    code, out, _ = run(capsys, "predict", "--checkpoint", root / "run", "--data", data)
    assert code == 0
    assert [r[2:] for r in preds] == [line.split(",") for line in out.strip().splitlines()[1:]]


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (
            "id,nope",
            "--keep: {data} has no column 'nope'; its columns are ['id', 'width', 'height']",
        ),
        ("prediction", "--keep: {data} has no column 'prediction'"),
        ("width,prediction_x", "--keep: {data} has no column 'prediction_x'"),
    ],
    ids=["missing", "missing-output-name", "missing-second"],
)
def test_predict_keep_names_a_missing_column(classifier, capsys, keep, message):
    root = classifier[1]
    data = write_csv(root / "few.csv", ["id", "width", "height"], [["a", 1.0, 2.0]])
    code, out, err = run(capsys, "predict", "--checkpoint", root / "run", "--data", data,
                         "--keep", keep)  # fmt: skip
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert message.format(data=data) in err


def test_predict_keep_refuses_a_column_named_like_an_output(classifier, capsys):
    root = classifier[1]
    data = write_csv(root / "clash.csv", ["prediction", "width", "height"], [["a", 1.0, 2.0]])
    code, _, err = run(capsys, "predict", "--checkpoint", root / "run", "--data", data,
                       "--keep", "prediction")  # fmt: skip
    assert code == 1
    assert_one_line_error(err)
    assert "--keep: column 'prediction' would repeat an output column's name" in err


@pytest.mark.parametrize("output", ["tanh", "softplus"])
def test_gradcheck_with_a_tanh_or_softplus_output(capsys, output):
    code, out, err = run(capsys, "gradcheck", "--sizes", "3,4,2", "--output-activation", output)
    assert code == 0 and err == ""
    assert "overall: OK" in out


@pytest.mark.slow
def test_regression_csv_then_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (80, 2))
    y = 100.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1]  # far from 0: only de-standardised outputs fit
    rows = [[f"{a:.5f}", f"{b:.5f}", f"{t:.5f}"] for (a, b), t in zip(x, y, strict=True)]
    data = write_csv(tmp_path / "reg.csv", ["a", "b", "price"], rows)
    code, _, err = run(capsys, "train", "--data", data, "--target", "price", "--hidden", "8",
                         "--epochs", "40", "--lr", "0.02", "--out", tmp_path / "run",
                         "--no-progress", "--no-plots", "--val-split", "0")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "regression" and {"r2", "rmse", "mae"} <= set(
        summary["final"]["train"]
    )
    assert "val" not in summary["final"]
    code, _, err = run(capsys, "predict", "--checkpoint", tmp_path / "run", "--data", data,
                         "--out", tmp_path / "p.csv")  # fmt: skip
    assert code == 0
    header, preds = read_rows(tmp_path / "p.csv")
    pred = np.array([float(r[0]) for r in preds])
    assert header == ["prediction"] and pred.shape == (80,)
    assert abs(pred.mean() - y.mean()) < 1.0 and np.corrcoef(pred, y)[0, 1] > 0.95


@pytest.mark.parametrize(
    "targets, task, expected",
    [
        (["0", "1", "1", "0", "2", "2"], "auto", ("classification", ["0", "1", "2"])),
        (["1.0", "2", "1", "2.0", "1", "2"], "auto", ("classification", ["1", "2"])),
        (["0.5", "1.5", "2.5", "0.1", "9", "3"], "auto", ("regression", None)),
        (["1", "2", "3", "4", "5", "6"], "auto", ("regression", None)),
        (["10", "9", "10", "9", "10", "9"], "classification", ("classification", ["9", "10"])),
        (["0", "1", "1", "0", "1", "0"], "regression", ("regression", None)),
    ],
    ids=["few-ints", "int-like-floats", "floats", "all-distinct", "numeric-order", "forced"],
)
def test_csv_task_detection(tmp_path, targets, task, expected):
    rows = [[str(i), t] for i, t in enumerate(targets)]
    ds = _cli_data.load_csv(write_csv(tmp_path / "t.csv", ["f", "t"], rows), "t", task)
    assert (ds.task, ds.classes) == expected
    if ds.classes:
        assert [ds.classes[i] for i in ds.y] == [_cli_data._class_name(t) for t in targets]


def test_sklearn_dataset_keeps_its_names():
    args = cli.build_parser().parse_args(["train", "--dataset", "iris"])
    ds = _cli_data.load_dataset(args, jax.random.key(0))
    assert ds.x.shape == (150, 4) and ds.task == "classification"
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert ds.features[0] == "sepal length (cm)"


# ---------------------------------------------------------------- gradcheck and summary


# The documented command, with 2 inputs like the circle run's network (shared compilations).
GRADCHECK = [
    "gradcheck",
    "--hidden",
    "8,8",
    "--activation",
    "tanh",
    "--loss",
    "mse",
    "--inputs",
    "2",
]


@pytest.mark.slow
def test_gradcheck_agrees_and_plots(tmp_path, capsys):
    code, out, err = run(capsys, *GRADCHECK, "--plot", tmp_path / "g.png")
    assert code == 0 and err == ""
    # every parameter block (and any further row, such as the input's forward mode) agrees
    assert "overall: OK" in out and out.count(" yes") >= 6 and " NO" not in out
    assert_png(tmp_path / "g.png")


def test_gradcheck_exits_1_on_a_planted_bug(monkeypatch, capsys):
    real = _cli_commands.value_and_grad

    def off_by_one_percent(*args, **kwargs):
        f = real(*args, **kwargs)

        def g(*a):
            value, grads = f(*a)
            # A backward pass that scales the first layer's weight gradient by 1.01.
            return value, (grads[0]._replace(w=1.01 * grads[0].w), *grads[1:])

        return g

    monkeypatch.setattr(_cli_commands, "value_and_grad", off_by_one_percent)
    code, out, err = run(capsys, *GRADCHECK)
    assert code == 1
    assert "overall: MISMATCH" in out and " NO" in out
    assert_one_line_error(err)


def test_without_matplotlib_train_skips_plots_and_gradcheck_plot_fails(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(_cli_data, "_import_plot", lambda: (None, "No module named 'matplotlib'"))
    assert _cli_train._train_plots(tmp_path, *[None] * 8) == []
    assert "no plots" in capsys.readouterr().err
    code, out, err = run(capsys, *GRADCHECK, "--plot", tmp_path / "g.png")
    assert code == 1 and "overall: OK" in out and not (tmp_path / "g.png").exists()
    assert_one_line_error(err)
    assert "matplotlib" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["summary", "--sizes", "3,4,2", "--activation", "sigmoid"],
        ["summary", "--inputs", "3", "--hidden", "4", "--outputs", "2"],
        ["summary"],
    ],
    ids=["sizes", "inputs-hidden-outputs", "defaults"],
)
def test_summary_from_flags(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 0 and err == ""
    assert "(3, 4)" in out and "(4, 2)" in out and out.strip().splitlines()[-1].split()[-1] == "26"


def test_bench_forwards_its_flags(monkeypatch, capsys):
    from jaxmlp import bench as benchmarking

    seen = []
    monkeypatch.setattr(
        benchmarking, "main", lambda argv, prog=None: seen.append((argv, prog)) or 0
    )
    assert run(capsys, "bench", "--quick", "--suites", "step")[0] == 0
    assert seen == [(["--quick", "--suites", "step"], "jaxmlp bench")]
    code, _, err = run(capsys, "bench", "--no-such-flag")
    assert code == 2 and seen == [(["--quick", "--suites", "step"], "jaxmlp bench")]
    assert_one_line_error(err)


@pytest.mark.slow
def test_version_in_process_and_as_a_module(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip().startswith(f"jaxmlp {jaxmlp.__version__}")
    done = subprocess.run(
        [sys.executable, "-m", "jaxmlp", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == out.strip()


# ---------------------------------------------------------------- bad input, one line each


@pytest.fixture(scope="module")
def files(tmp_path_factory, classifier):
    root = tmp_path_factory.mktemp("bad")
    good = write_csv(root / "good.csv", ["a", "b", "y"], [[1, 2, 0], [2, 1, 1], [0, 1, 0]])
    corrupt = root / "corrupt"
    corrupt.mkdir()
    data = bytearray((classifier[1] / "run" / "model.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the array data
    (corrupt / "model.npz").write_bytes(bytes(data))
    return {
        "good": good,
        "text_feature": write_csv(root / "t.csv", ["a", "y"], [["x", 0], ["1", 1]]),
        "no_width": write_csv(root / "n.csv", ["height"], [[1.0], [2.0]]),
        "ragged": write_csv(root / "r.csv", ["a", "y"], [[1, 0], [1, 2, 3]]),
        "empty": write_csv(root / "e.csv", ["a", "y"], []),
        "trained": classifier[1] / "run",
        "corrupt": corrupt,
        "not_a_run": root,
    }


BAD = {
    "unknown-activation": (["train", "--dataset", "circle", "--activation", "bogus"], 2),
    "hidden-abc": (["train", "--dataset", "circle", "--hidden", "abc"], 2),
    "hidden-zero": (["gradcheck", "--hidden", "4,0"], 2),
    "unknown-loss": (["gradcheck", "--loss", "nope"], 2),
    "no-source": (["train"], 2),
    "unknown-command": (["frobnicate"], 2),
    "unknown-dataset": (["train", "--dataset", "mnist"], 2),
    "val-split": (["train", "--dataset", "circle", "--val-split", "1.5"], 2),
    "lr-negative": (["train", "--dataset", "circle", "--lr", "-1"], 2),
    "dtype": (["gradcheck", "--dtype", "float16"], 2),
    "sizes-and-inputs": (["summary", "--sizes", "3,4,2", "--inputs", "3"], 2),
    "data-without-target": (["train", "--data", "{good}"], 2),
    "loss-vs-task": (["train", "--dataset", "plane", "--loss", "softmax_cross_entropy"], 2),
    "missing-file": (["train", "--data", "{not_a_run}/missing.csv", "--target", "y"], 1),
    "no-target-column": (["train", "--data", "{good}", "--target", "label"], 1),
    "text-feature": (["train", "--data", "{text_feature}", "--target", "y"], 1),
    "ragged-csv": (["train", "--data", "{ragged}", "--target", "y"], 1),
    "empty-csv": (["train", "--data", "{empty}", "--target", "y"], 1),
    "missing-features": (["predict", "--checkpoint", "{trained}", "--data", "{no_width}"], 1),
    "corrupt-checkpoint": (["predict", "--checkpoint", "{corrupt}", "--data", "{good}"], 1),
    "no-checkpoint": (["predict", "--checkpoint", "{not_a_run}", "--data", "{good}"], 1),
    "summary-corrupt": (["summary", "--checkpoint", "{corrupt}"], 1),
    "keep-empty-name": (
        ["predict", "--checkpoint", "{trained}", "--data", "{good}", "--keep", "id,,y"],
        2,
    ),
    "keep-repeated-name": (
        ["predict", "--checkpoint", "{trained}", "--data", "{good}", "--keep", "a,a"],
        2,
    ),
    "keep-missing": (
        ["predict", "--checkpoint", "{trained}", "--data", "{good}", "--keep", "id"],
        1,
    ),
}


@pytest.mark.parametrize("argv, status", BAD.values(), ids=BAD.keys())
def test_bad_input_gives_one_line_and_status(files, capsys, argv, status):
    code, _, err = run(capsys, *(a.format(**files) for a in argv))
    assert code == status
    assert_one_line_error(err)


# The new network flags: a usage error (status 2) naming the flag and what is wrong.
BAD_PIECES = {
    "features-unknown-name": (["--features", "x1,cos(x1)"], "--features: unknown feature 'cos(x1)'"),
    "features-input-out-of-range": (["--features", "x1,x3"], "--features: x1,x3 reads input x3, but there are 2 inputs"),
    "features-repeated": (["--features", "x1,x1"], "--features: repeated names"),
    "fourier-zero": (["--features", "fourier:0"], "--features: fourier:N:SCALE:SEED needs N >= 1"),
    "fourier-not-a-number": (["--features", "fourier:8:big"], "--features: expected fourier:N[:SCALE[:SEED]]"),
    "fourier-too-many-parts": (["--features", "fourier:8:1:2:3"], "--features: expected fourier:N[:SCALE[:SEED]]"),
    "norm": (["--norm", "batchnorm"], "--norm: invalid choice: 'batchnorm'"),
    "dropout-one": (["--dropout", "1"], "--dropout: must be in [0, 1), got 1"),
    "dropout-text": (["--dropout", "half"], "--dropout"),
    "l1-negative": (["--l1", "-0.1"], "--l1: must be >= 0.0"),
    "initializer": (["--initializer", "zeros"], "--initializer: unknown initializer 'zeros'"),
    "residual-nowhere": (["--hidden", "8,4", "--residual"], "--residual: no hidden layer keeps its width"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["train", "gradcheck", "summary"])
@pytest.mark.parametrize("flags, message", BAD_PIECES.values(), ids=BAD_PIECES.keys())
def test_bad_network_flags_name_the_flag(capsys, command, flags, message):
    base = {"train": ["--dataset", "circle", "--epochs", "1", "--no-plots", "--out", "/nonexistent/never"],
            "gradcheck": ["--inputs", "2"], "summary": ["--inputs", "2"]}[command]  # fmt: skip
    if command == "summary" and flags[0] == "--l1":
        flags = ["--norm", "batchnorm"]  # summary has no penalty
        message = BAD_PIECES["norm"][1]
    code, _, err = run(capsys, command, *base, *flags)
    assert code == 2
    assert_one_line_error(err)
    assert message in err


# ---------------------------------------------------------------- layers beyond the plain stack

PIECES = ["--norm", "layernorm", "--dropout", "0.1", "--residual", "--features", "playground"]


@pytest.mark.slow
def test_train_with_every_piece_then_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--dataset", "circle", "--n", "120", "--hidden", "8,8",
                            "--activation", "tanh", *PIECES, "--l1", "0.001", "--epochs", "4",
                            "--batch-size", "16", "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    # the plane is drawn in standardised units: the features read the standardised inputs
    assert err.strip() == (
        "jaxmlp: note: the input-plane plots show standardised inputs (the input features "
        "(--features) read the standardised inputs)"
    )
    assert "layernorm; dropout 0.1; residual on hidden layer 2" in stdout
    assert "gradcheck on 8 training rows: OK" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pieces"] == [
        "features x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2)", "layernorm", "dropout 0.1",
        "residual on hidden layer 2",
    ]  # fmt: skip
    model = jaxmlp.MLP((2, 8, 8, 2), "tanh", "softmax", norm="layernorm", dropout=0.1,
                       residual=True, features="playground")  # fmt: skip
    assert jaxmlp.MLP.from_dict(summary["model"]) == model
    assert summary["num_params"] == model.count_params() == 186
    assert summary["config"]["features"] == "playground" and summary["config"]["l1"] == 0.001
    assert summary["final"]["gradcheck_ok"] is True
    for name in [
        "loss.png",
        "decision_boundary.png",
        "neurons.png",
        "gradcheck.png",
        "network.png",
    ]:
        assert_png(out / name)
    ck = load_checkpoint(out / "model.npz")
    assert ck.model == model
    assert [type(p).__name__ for p in ck.params] == ["Dense", "Norm", "Dense", "Norm", "Dense"]
    # predict reads the raw CSV, standardises it and runs the features on it
    x, y = jaxmlp.data.load("circle", jax.random.key(1), 60)
    rows = [[f"{a:.6f}", f"{b:.6f}", str(int(t))] for (a, b), t in zip(np.asarray(x), np.asarray(y), strict=True)]  # fmt: skip
    csv_in = write_csv(tmp_path / "c.csv", ["x1", "x2", "y"], rows)
    code, _, err = run(capsys, "predict", "--checkpoint", out, "--data", csv_in, "--out", tmp_path / "p.csv")  # fmt: skip
    assert code == 0 and "accuracy" in err
    _, preds = read_rows(tmp_path / "p.csv")
    raw = np.array([[float(a), float(b)] for a, b, _ in rows])
    std = (raw - np.asarray(ck.metadata["x_mean"])) / np.asarray(ck.metadata["x_scale"])
    expected = np.asarray(ck.model.apply(ck.params, std.astype(np.float32)))  # softmax outputs
    np.testing.assert_allclose([float(r[2]) for r in preds], expected[:, 1], rtol=1e-5, atol=1e-6)


def test_gradcheck_with_every_piece_checks_training_mode(capsys):
    code, out, err = run(capsys, "gradcheck", "--inputs", "2", "--hidden", "6,6", *PIECES,
                         "--l1", "0.01", "--dtype", "float64")  # fmt: skip
    assert code == 0 and err == ""
    assert "layernorm; dropout 0.1; residual on hidden layer 2" in out
    assert "training mode: dropout 0.1 with masks from a fixed key (--seed 0)" in out
    assert out.count(" scale ") == 2 and out.count(" offset ") == 2 and "overall: OK" in out


def test_gradcheck_with_sin_siren_and_fourier(capsys):
    code, out, err = run(capsys, "gradcheck", "--inputs", "2", "--hidden", "8", "--activation",
                         "sin", "--initializer", "siren", "--features", "fourier:4:2.5:7")  # fmt: skip
    assert code == 0 and err == ""
    assert "fourier 4x2 (scale 2.5, seed 7); initializer siren" in out and "overall: OK" in out


def test_gradcheck_catches_a_planted_bug_in_a_norm_gradient(monkeypatch, capsys):
    real = _cli_commands.value_and_grad

    def scale_off(*args, **kwargs):
        f = real(*args, **kwargs)

        def g(*a, **kw):
            value, grads = f(*a, **kw)
            # a layer norm backward that gets the scale's gradient 1% wrong
            return value, (grads[0], grads[1]._replace(scale=1.01 * grads[1].scale), *grads[2:])

        return g

    monkeypatch.setattr(_cli_commands, "value_and_grad", scale_off)
    code, out, err = run(capsys, "gradcheck", "--inputs", "2", "--hidden", "6,6", *PIECES)
    assert code == 1 and "overall: MISMATCH" in out
    bad = [line for line in out.splitlines() if line.rstrip().endswith("NO")]
    assert len(bad) == 1 and bad[0].split()[:2] == ["2", "scale"]
    assert_one_line_error(err)


def test_gradcheck_biases_and_norms_start_off_their_init(capsys):
    from jaxmlp.layers import Norm

    model = jaxmlp.MLP((2, 4, 4, 1), norm="layernorm")
    params = _cli_commands._perturbed(model.init(jax.random.key(0)), jax.random.key(1))
    for p in params:
        leaves = [p.b] if isinstance(p, jaxmlp.Dense) else [p.scale - 1, p.offset]
        assert all(np.all(np.asarray(a) != 0) for a in leaves)
    assert isinstance(params[1], Norm) and params[0].w is not None


def test_summary_from_flags_shows_the_pieces(capsys):
    code, out, err = run(capsys, "summary", "--inputs", "2", "--hidden", "8,8", "--outputs", "1",
                         "--activation", "tanh", *PIECES)  # fmt: skip
    assert code == 0 and err == ""
    assert "features x1, x2, x1^2" in out and "layernorm, tanh, dropout 0.1, skip" in out
    assert out.strip().splitlines()[-1].split()[-1] == "177"


def test_summary_of_a_checkpoint_refuses_network_flags(tmp_path, capsys):
    code, _, err = run(capsys, "summary", "--checkpoint", tmp_path, "--norm", "layernorm")
    assert code == 2 and "drop the shape and network flags" in err


def test_fold_preprocessing_only_where_the_first_layer_reads_the_inputs():
    x = np.random.default_rng(0).normal(3.0, 2.0, (6, 2)).astype(np.float32)
    m, s = x.mean(0), x.std(0)
    ym, ys = np.array([5.0]), np.array([0.5])
    for model in (jaxmlp.MLP((2, 4, 1), "tanh"), jaxmlp.MLP((2, 4, 3, 1), "tanh", norm="layernorm", dropout=0.3, residual=True)):  # fmt: skip
        params = model.init(jax.random.key(0))
        folded = _cli_data.fold_preprocessing(model, params, m, s, ym, ys)
        want = np.asarray(model.apply(params, (x - m) / s)) * ys + ym
        np.testing.assert_allclose(np.asarray(model.apply(folded, x)), want, rtol=1e-5, atol=1e-5)
    # the features (or a skip around layer 1) read the standardised inputs: no folding there
    for model, why in ((jaxmlp.MLP((2, 4, 1), features="playground"), "the input features"),
                       (jaxmlp.MLP((2, 2, 1), residual=True), "residual connection")):  # fmt: skip
        params = model.init(jax.random.key(0))
        assert _cli_data.can_fold_inputs(model) is not None
        with pytest.raises(ValueError, match=f"cannot fold the inputs' standardisation: .*{why}"):
            _cli_data.fold_preprocessing(model, params, m, s)
        # the targets still fold into the last layer
        folded = _cli_data.fold_preprocessing(model, params, None, None, ym, ys)
        want = np.asarray(model.apply(params, x)) * ys + ym
        np.testing.assert_allclose(np.asarray(model.apply(folded, x)), want, rtol=1e-5, atol=1e-5)
