"""The Playground's streaming speed: epochs a second and heatmap frames a second that reach a
client over the WebSocket, for the default network (TF Playground's: features x1, x2; hidden
4 and 2 tanh; batch 10; 250 training points), at both speed settings.

    .venv/bin/python benchmarks/bench_playground.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import time
import warnings

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from jaxmlp.playground import create_app


def measure(ws, seconds: float) -> tuple[float, float]:
    def frame():
        while (msg := ws.receive_json())["type"] != "frame":
            pass
        return msg

    ws.send_json({"type": "play"})
    for _ in range(10):  # the first frames compile
        frame()
    start, first = time.perf_counter(), frame()
    frames, last = 0, first
    while time.perf_counter() - start < seconds:
        last = frame()
        frames += "heat" in last
    elapsed = time.perf_counter() - start
    ws.send_json({"type": "pause"})
    while ws.receive_json()["type"] != "status":
        pass
    return (last["epoch"] - first["epoch"]) / elapsed, frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with TestClient(create_app()) as client, client.websocket_connect("/ws") as ws:
        for _ in range(4):  # config, data, history, frame
            ws.receive_json()
        print("| speed setting | epochs/s streamed | heatmap frames/s |")
        print("|---|---|---|")
        for speed in ("normal", "max"):
            ws.send_json({"type": "config", "config": {"speed": speed}})
            epochs, frames = measure(ws, args.seconds)
            print(f"| {speed} | {epochs:.0f} | {frames:.1f} |")


if __name__ == "__main__":
    main()
