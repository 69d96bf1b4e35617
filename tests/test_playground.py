"""The Playground's server (jaxmlp.playground) through Starlette's test client: the page, every
control, the URL hash (TF Playground's own links), bad and hostile messages, one session per
tab, CSV uploads and their limits, the backward view, gradcheck, downloads and speed."""

from __future__ import annotations

import base64
import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("starlette", reason="the playground extra is not installed")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import jaxmlp
from jaxmlp.playground import _app, _config, create_app

STATIC = Path(_app.__file__).parent / "static"
TF_HASH = (
    "#activation=tanh&batchSize=10&dataset=circle&regDataset=reg-plane&learningRate=0.03"
    "&regularizationRate=0&noise=0&networkShape=4,2&seed=0.12345&showTestData=false"
    "&discretize=false&percTrainData=50&x=true&y=true&xTimesY=false&xSquared=false"
    "&ySquared=false&cosX=false&sinX=false&cosY=false&sinY=false&collectStats=false"
    "&problem=classification&initZero=false&hideText=false"
)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(autouse=True)
def watchdog():
    """A socket that never answers would hang the suite: end the process after 5 minutes
    (with every thread's traceback) instead."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def receive(ws, kind: str, limit: int = 200) -> dict:
    """The next message of type ``kind`` (frames and others before it are skipped)."""
    for _ in range(limit):
        msg = ws.receive_json()
        if msg["type"] == kind:
            return msg
    raise AssertionError(f"no {kind!r} message in {limit}")


def opened(ws) -> dict:
    """The four messages a new tab gets: config, data, history, frame."""
    got = {m["type"]: m for m in (ws.receive_json() for _ in range(4))}
    assert set(got) == {"config", "data", "history", "frame"}
    return got


def configure(ws, **changes) -> dict:
    ws.send_json({"type": "config", "config": changes})
    return receive(ws, "config")


def error(ws, msg) -> str:
    ws.send_text(msg if isinstance(msg, str) else json.dumps(msg))
    return receive(ws, "error")["message"]


def session():
    (only,) = _app.SESSIONS
    return only


def step(ws) -> dict:
    """One epoch: the step's frame (the last before the status message that follows it)."""
    ws.send_json({"type": "step"})
    frame = None
    while (msg := ws.receive_json())["type"] != "status":
        assert msg["type"] != "error", msg["message"]
        frame = msg if msg["type"] == "frame" else frame
    assert frame is not None
    return frame


# ---------------------------------------------------------------- the page


def test_page_and_static_files_are_served_offline(client):
    page = client.get("/")
    assert page.status_code == 200
    for element in ("play-pause", "step", "reset", "epoch", "loss-train", "loss-test", "dataset",
                    "activation", "learning-rate", "heatmap"):  # fmt: skip
        assert f'id="{element}"' in page.text
    for name in ("playground.js", "playground.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../_app.py").status_code == 404
    assert client.get("/static/%2e%2e/_app.py").status_code == 404
    for path in STATIC.iterdir():  # nothing fetched from the internet (the SVG namespace is a name)
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, path.name


def test_a_new_tab_gets_tf_playgrounds_defaults(client):
    with client.websocket_connect("/ws") as ws:
        got = opened(ws)
        c = got["config"]["config"]
        assert (c["activation"], c["learningRate"], c["batchSize"], c["networkShape"]) == ("tanh", 0.03, 10, [4, 2])  # fmt: skip
        assert (c["dataset"], c["percTrainData"], c["noise"], c["problem"]) == ("circle", 50, 0, "classification")  # fmt: skip
        assert got["config"]["features"] == ["x1", "x2"]
        data = got["data"]
        assert len(data["train"]) == len(data["test"]) == 250 and data["classes"] == 2
        frame = got["frame"]
        assert frame["epoch"] == 0 and np.isfinite(frame["lossTrain"])
        assert [np.shape(w) for w in frame["weights"]] == [(2, 4), (4, 2), (2, 1)]
        neurons = base64.b64decode(frame["heat"]["neurons"])
        assert len(neurons) == (2 + 4 + 2) * frame["heat"]["neuronGrid"] ** 2
        assert len(base64.b64decode(frame["heat"]["out"])) == frame["heat"]["outGrid"] ** 2
        assert frame["agreement"]["cosine"] > 0.99999


# ---------------------------------------------------------------- play, pause, step, reset


def test_play_pause_step_reset_regenerate(client):
    with client.websocket_connect("/ws") as ws:
        start = opened(ws)["frame"]
        ws.send_json({"type": "play"})
        assert receive(ws, "status")["playing"] is True
        epochs = [receive(ws, "frame")["epoch"] for _ in range(6)]
        assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
        ws.send_json({"type": "pause"})
        assert receive(ws, "status")["playing"] is False
        s = session()
        paused = s.epoch
        assert step(ws)["epoch"] == paused + 1
        assert s.history[-1][1] < start["lossTrain"]

        before = s.state.params
        ws.send_json({"type": "reset"})
        frame = receive(ws, "frame")
        assert frame["epoch"] == 0
        assert not np.allclose(before[0].w, s.state.params[0].w)

        old_x = s.train_set.x.copy()
        ws.send_json({"type": "regenerate"})
        config = receive(ws, "config")
        assert config["config"]["seed"] != "0.5"
        assert not np.allclose(old_x, s.train_set.x)


# ---------------------------------------------------------------- every control


@pytest.mark.slow
def test_every_control_changes_what_it_should(client):
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        s = session()
        step(ws)
        # Live controls keep the weights and the epoch.
        w = np.asarray(s.state.params[0].w)
        assert configure(ws, learningRate=0.3)["config"]["learningRate"] == 0.3
        assert float(s.state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.3)
        configure(ws, batchSize=1, regularization="L2", regularizationRate=0.1, speed="max",
                  showTestData=True, discretize=True, method="autodiff")  # fmt: skip
        assert s.epoch == 1 and np.array_equal(w, s.state.params[0].w)
        assert s._penalties() == (0.0, 0.1)
        assert "showTestData=true&discretize=true" in s.config_message()["hash"]
        frame = step(ws)  # one epoch of batch size 1: 250 steps of the autodiff gradient
        assert frame["epoch"] == 2
        configure(ws, regularization="L1")
        assert s._penalties() == (0.1, 0.0)
        # The network's controls reset it.
        configure(ws, activation="relu", networkShape=[8, 8, 8], xSquared=True, sinY=True)
        assert s.epoch == 0 and s.model.activation == "relu" and s.model.sizes == (2, 8, 8, 8, 1)
        assert s.model.features == ("x1", "x2", "x1^2", "sin(x2)")
        assert next(p.w.shape for p in s.state.params) == (4, 8)
        configure(ws, activation="linear")
        assert s.model.activation == "identity"
        configure(
            ws,
            optimizer="adam",
            norm="layernorm",
            dropout=0.2,
            residual=True,
            learningRate=0.01,
            activation="tanh",
            xSquared=False,
            batchSize=10,
        )
        assert (s.model.dropout, s.model.residual) == (0.2, True)
        assert any(type(p).__name__ == "Norm" for p in s.state.params)
        assert "ScaleByAdamState" in repr(s.state.opt_state.inner_state)
        assert np.isfinite(step(ws)["lossTrain"])
        configure(
            ws, loss="cross_entropy", norm="none", dropout=0.0, residual=False, optimizer="momentum"
        )
        assert (s.loss_name(), s.model.output_activation) == (
            "sigmoid_binary_cross_entropy",
            "sigmoid",
        )
        assert np.isfinite(step(ws)["lossTrain"])
        # The data's controls.
        for name in ("xor", "gauss", "spiral", "moons"):
            configure(ws, dataset=name)
            data = receive(ws, "data")
            assert data["classes"] == 2 and len(data["train"]) == 250
        configure(ws, dataset="gauss3")
        assert receive(ws, "data")["classes"] == 3
        assert (s.loss_name(), s.model.sizes[-1]) == ("softmax_cross_entropy", 3)
        assert np.isfinite(step(ws)["lossTrain"])
        configure(ws, percTrainData=30, dataset="circle")
        assert len(receive(ws, "data")["train"]) == 150
        clean = s.train_set.x.copy()
        configure(ws, noise=50)
        assert 0.1 < np.abs(s.train_set.x - clean).mean() < 5
        configure(ws, problem="regression")
        data = receive(ws, "data")
        assert data["classes"] == 0 and len(data["train"]) + len(data["test"]) == 1200
        assert (s.loss_name(), s.model.output_activation) == ("half_mse", "identity")
        configure(ws, regDataset="reg-gauss")
        assert receive(ws, "data")["classes"] == 0
        assert np.isfinite(step(ws)["lossTrain"])
        configure(ws, initZero=True, problem="classification")
        assert all(not np.any(np.asarray(p.w)) for p in s.state.params)


def test_the_learning_rate_moves_training(client):
    """A live control's effect on training itself: at 1e-5 one epoch hardly moves the weights."""
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        s = session()
        configure(ws, learningRate=0.00001)
        w = np.asarray(s.state.params[0].w)
        step(ws)
        slow = np.abs(np.asarray(s.state.params[0].w) - w).max()
        configure(ws, learningRate=1)
        w = np.asarray(s.state.params[0].w)
        step(ws)
        assert np.abs(np.asarray(s.state.params[0].w) - w).max() > 1000 * slow


def test_set_weight_edits_one_weight_and_the_loss(client):
    with client.websocket_connect("/ws") as ws:
        before = opened(ws)["frame"]
        ws.send_json({"type": "set_weight", "layer": 1, "source": 2, "target": 0, "value": 3.5})
        frame = receive(ws, "frame")
        assert frame["weights"][1][2][0] == 3.5
        assert frame["weights"][0] == before["weights"][0]
        assert frame["lossTrain"] != before["lossTrain"]
        ws.send_json({"type": "set_weight", "layer": 2, "source": -1, "target": 0, "value": -1.25})
        assert receive(ws, "frame")["biases"][2] == [-1.25]


# ---------------------------------------------------------------- the URL hash


def test_a_real_tf_playground_hash_opens_the_same_experiment(client):
    config, ignored = _config.from_hash(TF_HASH)
    assert ignored == []
    assert (config.activation, config.batchSize, config.dataset, config.learningRate) == ("tanh", 10, "circle", 0.03)  # fmt: skip
    assert (config.networkShape, config.seed, config.percTrainData, config.regularization) == ((4, 2), "0.12345", 50, "none")  # fmt: skip
    assert config.features == ("x1", "x2")
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        ws.send_json({"type": "hash", "hash": TF_HASH.replace("networkShape=4,2", "networkShape=3,3,1")
                      .replace("xSquared=false", "xSquared=true").replace("regularizationRate=0", "regularizationRate=0.003")
                      + "&regularization=L1&activation=relu"})  # fmt: skip
        msg = receive(ws, "config")
        assert msg["config"]["networkShape"] == [3, 3, 1] and msg["config"]["activation"] == "relu"
        assert msg["features"] == ["x1", "x2", "x1^2"]
        assert session().model.sizes == (2, 3, 3, 1, 1) and session()._penalties() == (0.003, 0.0)
        ws.send_json({"type": "hash", "hash": TF_HASH.replace("cosX=false", "cosX=true")})
        assert "cosX" in receive(ws, "config")["note"]


def test_the_hash_round_trips():
    config = _config.update(_config.Config(), {
        "activation": "relu", "networkShape": [8, 1, 6], "learningRate": 0.003, "xTimesY": True,
        "x": False, "regularization": "L2", "regularizationRate": 0.01, "problem": "regression",
        "regDataset": "reg-gauss", "seed": "0.98765", "optimizer": "adam", "norm": "layernorm",
        "dropout": 0.1, "residual": True, "showTestData": True, "percTrainData": 70, "noise": 25,
    })  # fmt: skip
    text = _config.to_hash(config)
    assert _config.from_hash("#" + text) == (config, [])
    assert _config.from_hash(text)[0] != _config.Config()


# ---------------------------------------------------------------- bad and hostile messages


BAD = [
    ("not json", "not JSON"),
    ([1, 2], "expected a JSON object"),
    ({"type": "launch"}, "unknown message type"),
    ({"config": {}}, "unknown message type"),
    ({"type": "config", "config": {"colour": "red"}}, "unknown key 'colour'"),
    ({"type": "config", "config": "activation=relu"}, "expected an object"),
    ({"type": "config", "config": {"learningRate": "fast"}}, "learningRate: expected a number"),
    ({"type": "config", "config": {"learningRate": 1e9}}, "learningRate: must be between"),
    ({"type": "config", "config": {"batchSize": 10**12}}, "batchSize: must be between"),
    ({"type": "config", "config": {"batchSize": 2.5}}, "whole number"),
    ({"type": "config", "config": {"noise": -1}}, "noise: must be between"),
    ({"type": "config", "config": {"showTestData": "yes"}}, "showTestData: expected true or false"),
    ({"type": "config", "config": {"networkShape": [1000] * 50}}, "networkShape: at most"),
    (
        {"type": "config", "config": {"networkShape": "4,x"}},
        "networkShape: expected comma-separated",
    ),
    (
        {"type": "config", "config": {"networkShape": [[4]]}},
        "networkShape: expected a list of ints",
    ),
    ({"type": "config", "config": {"dataset": "../../etc/passwd"}}, "dataset: expected one of"),
    ({"type": "config", "config": {"dataset": "csv"}}, "upload a CSV file first"),
    ({"type": "config", "config": {"x": False, "y": False}}, "at least one input feature"),
    ({"type": "config", "config": {"seed": "9" * 1000}}, "seed: expected a short string"),
    ({"type": "hash", "hash": "activation=banana"}, "activation: expected one of"),
    ({"type": "hash", "hash": "x" * 10_000}, "at most 4000 characters"),
    ({"type": "hash", "hash": 42}, "hash: expected a URL hash"),
    (
        {"type": "set_weight", "layer": "/etc/passwd", "source": 0, "target": 0, "value": 1},
        "layer: expected an int",
    ),
    ({"type": "set_weight", "layer": 0, "source": 99, "target": 0, "value": 1}, "source, target"),
    (
        {"type": "set_weight", "layer": 0, "source": 0, "target": 0, "value": "NaN"},
        "value: expected a finite number",
    ),
    ({"type": "backward", "index": 10**9}, "index: expected 0 to"),
    ({"type": "backward", "index": None}, "index: expected an int"),
    ({"type": "upload", "text": None}, "csv: expected the file's text"),
    ({"type": "upload", "text": "/etc/passwd"}, "csv: expected a header row"),
]


def test_bad_messages_get_clear_errors_and_change_nothing(client, tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with client.websocket_connect("/ws") as ws:
            opened(ws)
            s = session()
            before = _config.to_hash(s.config)
            for msg, expected in BAD:
                assert expected in error(ws, msg), msg
            assert _config.to_hash(s.config) == before
            assert step(ws)["epoch"] == 1  # the session still works
            assert Path(s.tmp.name).parent == Path(tempfile.gettempdir())
        assert list(tmp_path.iterdir()) == []
    finally:
        os.chdir(cwd)


def test_huge_messages_and_uploads_are_refused(client):
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        huge = "x,y,label\n" + "1,2,a\n" * (100_000_000 // 6)  # a 100 MB upload
        assert "a CSV file may be at most 1000 kB" in error(ws, {"type": "upload", "text": huge})
        del huge
        assert "message: larger than" in error(
            ws, json.dumps({"type": "pause", "pad": "y" * 3_000_000})
        )
        rows = "x1,x2,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(25_000))
        assert "at most 20000 rows" in error(ws, {"type": "upload", "text": rows})
        assert step(ws)["epoch"] == 1


def test_csv_uploads(client):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (120, 2))
    label = np.where(x[:, 0] > 50, "high", np.where(x[:, 1] > 50, "mid", "low"))
    text = "width,height,kind\n" + "".join(f"{a:.3f},{b:.3f},{c}\n" for (a, b), c in zip(x, label, strict=True))  # fmt: skip
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        ws.send_json({"type": "upload", "name": "mine.csv", "text": text})
        config = receive(ws, "config")
        data = receive(ws, "data")
        assert config["config"]["dataset"] == "csv" and config["loss"] == "softmax_cross_entropy"
        assert data["classes"] == 3 and data["names"] == ["high", "low", "mid"]
        xs = np.array([r[:2] for r in data["train"] + data["test"]])
        assert len(xs) == 120 and np.abs(xs).max() == pytest.approx(5, abs=1e-3)
        assert np.isfinite(step(ws)["lossTrain"])
        bad = "a,b,c\n1,2,x\n3,oops,y\n"
        assert "row 3, column 2: expected a number, got 'oops'" in error(
            ws, {"type": "upload", "text": bad}
        )
        assert "2 to 8 labels" in error(ws, {"type": "upload", "text": "a,b,c\n1,2,x\n3,4,x\n"})
        configure(ws, problem="regression")
        reg = "a,b,t\n" + "".join(f"{i},{i * i % 11},{i / 10}\n" for i in range(50))
        ws.send_json({"type": "upload", "text": reg})
        assert receive(ws, "config")["config"]["regDataset"] == "csv"
        assert receive(ws, "data")["classes"] == 0


# ---------------------------------------------------------------- sessions


def test_tabs_are_isolated_and_freed(client):
    with client.websocket_connect("/ws") as one, client.websocket_connect("/ws") as two:
        opened(one)
        opened(two)
        assert len(_app.SESSIONS) == 2
        configure(one, activation="relu")
        step(one)
        step(one)
        by_activation = {s.model.activation: s for s in _app.SESSIONS}
        assert by_activation["relu"].epoch == 2 and by_activation["tanh"].epoch == 0
        folders = [Path(s.tmp.name) for s in _app.SESSIONS]
        assert all(f.is_dir() for f in folders) and folders[0] != folders[1]
    for _ in range(100):
        if not _app.SESSIONS:
            break
        time.sleep(0.05)
    assert not _app.SESSIONS
    assert not any(f.exists() for f in folders)


# ---------------------------------------------------------------- beyond TF Playground


def test_divergence_pauses_with_a_message(client):
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        configure(
            ws,
            problem="regression",
            learningRate=10,
            activation="linear",
            networkShape=[8, 8],
            xSquared=True,
        )
        assert receive(ws, "frame")["diverged"] is False  # the new network's first frame
        ws.send_json({"type": "play"})
        frames = []
        while (msg := ws.receive_json())["type"] != "error":
            frames += [msg] if msg["type"] == "frame" else []
        assert msg["kind"] == "diverged" and "lower the learning rate" in msg["message"]
        assert frames[-1]["diverged"] is True and frames[-1]["lossTrain"] is None
        assert receive(ws, "status")["playing"] is False  # training paused itself
        assert session().epoch == frames[-1]["epoch"]
        ws.send_json({"type": "reset"})
        assert receive(ws, "frame")["diverged"] is False
        configure(ws, learningRate=0.03, activation="tanh", xSquared=False)
        assert np.isfinite(step(ws)["lossTrain"])


def test_backward_view_gives_each_neurons_delta(client):
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        s = session()
        step(ws)
        ws.send_json({"type": "backward", "index": 7})
        msg = receive(ws, "backward")
        assert [len(d) for d in msg["deltas"]] == [4, 2, 1]
        # For one point dL/db[l] is delta[l]: compare with jax.grad through the whole network.
        x, y = s.xtr[7:8], s.ytr[7:8]
        _, grads = jaxmlp.value_and_grad(s.model, s.loss_name(), method="autodiff")(s.state.params, x, y)  # fmt: skip
        for delta, g in zip(msg["deltas"], grads, strict=True):
            np.testing.assert_allclose(delta, np.asarray(g.b), rtol=1e-4, atol=1e-7)


def test_gradcheck_and_download(client, tmp_path):
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        configure(ws, networkShape=[3], activation="sigmoid")
        step(ws)
        ws.send_json({"type": "gradcheck"})
        check = receive(ws, "gradcheck")
        assert check["ok"] is True and len(check["rows"]) == 4
        ws.send_json({"type": "download"})
        msg = receive(ws, "download")
        s = session()
        (tmp_path / msg["filename"]).write_bytes(base64.b64decode(msg["checkpoint"]))
        (tmp_path / "load.py").write_text(msg["snippet"])
        loaded = jaxmlp.load_checkpoint(tmp_path / msg["filename"])
        for a, b in zip(jax.tree_util.tree_leaves(loaded.params), jax.tree_util.tree_leaves(s.state.params), strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
        expected = s.model.apply(s.state.params, jnp.zeros((1, 2)))
    run = subprocess.run([sys.executable, "load.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{float(expected[0, 0]):.4f}"[:5] in run.stdout


@pytest.mark.slow
def test_streams_at_least_30_epochs_and_10_heatmaps_a_second(client):
    """The default network at the normal speed: epochs and frames (each with every heatmap)
    counted over two seconds after the first frames (compiling) are through."""
    with client.websocket_connect("/ws") as ws:
        opened(ws)
        ws.send_json({"type": "play"})
        for _ in range(5):
            receive(ws, "frame")
        start, first = time.perf_counter(), receive(ws, "frame")
        frames = 0
        while time.perf_counter() - start < 2.0:
            last = receive(ws, "frame")
            frames += 1 if "heat" in last else 0
        seconds = time.perf_counter() - start
        ws.send_json({"type": "pause"})
        receive(ws, "status")
    epochs_per_second = (last["epoch"] - first["epoch"]) / seconds
    print(f"playground: {epochs_per_second:.0f} epochs/s, {frames / seconds:.1f} heatmap frames/s")
    assert epochs_per_second >= 30 and frames / seconds >= 10


def test_the_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "jaxmlp", "playground", "--port", "70000", "--no-browser"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1 and "--port: expected 0 to 65535" in run.stderr
    from jaxmlp.cli import build_parser

    args = build_parser().parse_args(["playground", "--no-browser"])
    assert (args.host, args.port, args.no_browser) == ("127.0.0.1", 8765, True)
