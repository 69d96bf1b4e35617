"""The ASGI app: the page's static files and one WebSocket per tab.

Every tab's socket owns one :class:`Session`, created when it connects and closed (its memory
and temporary folder freed) when it disconnects. Messages are JSON objects with a ``type``;
a bad one is answered with ``{"type": "error", "message": ...}`` and changes nothing. Training
runs on a worker thread while the socket keeps reading, so pause and every control answer at
once; each pass trains a chunk of epochs sized to the speed setting and sends one frame (the
epoch, both losses, the weights and every heatmap).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from jaxmlp.playground import _config, _data
from jaxmlp.playground._session import Session

STATIC = Path(__file__).parent / "static"
MAX_MESSAGE_BYTES = 2 * _data.MAX_UPLOAD_BYTES  # the upload's limit, with room for JSON escapes
FRAME_SECONDS = 1 / 15  # a frame (and the heatmaps) about 15 times a second
NORMAL_EPOCHS_PER_SECOND = 60.0
AGREEMENT_SECONDS = 0.5
SESSIONS: set[Session] = set()  # the live sessions, for tests and the page's status line
_TYPES = ("config", "hash", "play", "pause", "step", "reset", "regenerate", "set_weight",
          "upload", "backward", "gradcheck", "download")  # fmt: skip


async def _index(request) -> FileResponse:
    return FileResponse(STATIC / "index.html")


class _Tab:
    """One socket's session, its lock, and its training task."""

    def __init__(self, ws: WebSocket, session: Session) -> None:
        self.ws, self.session = ws, session
        self.lock = asyncio.Lock()
        self.playing = False
        self.task: asyncio.Task | None = None
        self.chunk = 1
        self.last_agreement = 0.0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message, allow_nan=False, default=_finite))

    async def run(self, fn, *args) -> Any:
        async with self.lock:
            return await asyncio.to_thread(fn, *args)

    async def frame(self, agreement: bool = False) -> None:
        msg = await self.run(lambda: self.session.frame(agreement=agreement))
        await self.send(msg)
        if msg["diverged"]:
            self.playing = False
            await self.send({"type": "error", "kind": "diverged",
                             "message": "training diverged (the loss is not finite): lower the learning rate and reset"})  # fmt: skip
            await self.send({"type": "status", "playing": False})

    async def train_loop(self) -> None:
        try:
            while self.playing:
                start = time.perf_counter()
                seconds = await self.run(self.session.train, self.chunk)
                speed = self.session.config.speed
                if speed == "normal":
                    self.chunk = max(1, round(NORMAL_EPOCHS_PER_SECOND * FRAME_SECONDS))
                elif seconds < FRAME_SECONDS / 2:  # "max": grow the chunk to fill a frame
                    self.chunk = min(self.chunk * 2, 4096)
                elif seconds > FRAME_SECONDS:
                    self.chunk = max(1, self.chunk // 2)
                now = time.perf_counter()
                agreement = now - self.last_agreement > AGREEMENT_SECONDS
                if agreement:
                    self.last_agreement = now
                await self.frame(agreement=agreement)
                rest = FRAME_SECONDS - (time.perf_counter() - start)
                await asyncio.sleep(max(rest, 0.0) if speed == "normal" else 0.0)
        except WebSocketDisconnect:
            self.playing = False
        except Exception as err:  # a bug of ours, or the socket closed: pause and say so
            self.playing = False
            try:
                await self.send({"type": "error", "message": f"training stopped: {type(err).__name__}: {err}"})  # fmt: skip
                await self.send({"type": "status", "playing": False})
            except Exception:  # the socket is gone: nothing to tell
                pass

    async def stop(self) -> None:
        self.playing = False
        if self.task is not None:
            await self.task
            self.task = None

    async def everything(self, note: str = "") -> None:
        s = self.session
        await self.send(await self.run(lambda: s.config_message(note)))
        await self.send(await self.run(s.data_message))
        await self.send(await self.run(s.history_message))
        await self.frame(agreement=True)

    async def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise TypeError(f"message: expected a JSON object, got {type(msg).__name__}")
        kind = msg.get("type")
        if kind not in _TYPES:
            raise ValueError(f"type: unknown message type {kind!r}; valid types are {list(_TYPES)}")
        s = self.session
        if kind == "play":
            if not self.playing:
                self.playing = True
                self.task = asyncio.create_task(self.train_loop())
            await self.send({"type": "status", "playing": True})
        elif kind == "pause":
            await self.stop()
            await self.send({"type": "status", "playing": False})
        elif kind == "step":
            await self.stop()
            await self.run(s.train, 1)
            await self.frame(agreement=True)
            await self.send({"type": "status", "playing": False})
        elif kind in ("reset", "regenerate"):
            await self.stop()
            await self.run(s.reset if kind == "reset" else s.regenerate)
            await self.send({"type": "status", "playing": False})
            await self.everything()
        elif kind in ("config", "hash", "upload"):
            await self._reconfigure(kind, msg)
        elif kind == "set_weight":
            await self.run(s.set_weight, msg.get("layer"), msg.get("source"), msg.get("target"), msg.get("value"))  # fmt: skip
            await self.frame()
        elif kind == "backward":
            await self.send(await self.run(s.backward_view, msg.get("index")))
        elif kind == "gradcheck":
            await self.send(await self.run(s.gradcheck))
        elif kind == "download":
            await self.send(await self.run(s.checkpoint))

    async def _reconfigure(self, kind: str, msg: dict[str, Any]) -> None:
        s, note = self.session, ""
        if kind == "config":
            changes = msg.get("config")
            was_playing = self.playing
            if isinstance(changes, dict) and set(changes) <= _config.LIVE_KEYS:
                async with self.lock:  # a live change: training goes on
                    effect = s.set_config(changes)
            else:
                await self.stop()
                effect = await self.run(s.set_config, changes)
            if effect == "live":
                await self.send(s.config_message())
                return
            if was_playing and not self.playing:
                await self.send({"type": "status", "playing": False})
        elif kind == "hash":
            await self.stop()
            config, ignored = _config.from_hash(msg.get("hash"))  # type: ignore[arg-type]
            if config.data_name == "csv":
                raise ValueError("hash: a CSV data set cannot come from a link; upload the file")
            changes = {k: v for k, v in _config.as_json(config).items()}
            await self.run(s.set_config, changes)
            if ignored:
                note = f"ignored (not offered here): {', '.join(ignored)}"
        else:
            text = msg.get("text")
            if isinstance(text, str) and len(text) > _data.MAX_UPLOAD_BYTES:
                raise ValueError(
                    f"csv: the file is larger than {_data.MAX_UPLOAD_BYTES // 1000} kB"
                )
            await self.stop()
            await self.run(s.upload, text)
            await self.send({"type": "status", "playing": False})
        await self.everything(note)


def _finite(value: Any) -> Any:
    raise TypeError(f"cannot send {type(value).__name__}")


async def _socket(ws: WebSocket) -> None:
    await ws.accept()
    session = await asyncio.to_thread(Session)
    SESSIONS.add(session)
    tab = _Tab(ws, session)
    try:
        await tab.everything()
        while True:
            text = await ws.receive_text()
            try:
                if len(text) > MAX_MESSAGE_BYTES:
                    raise ValueError(
                        f"message: larger than {MAX_MESSAGE_BYTES // 1000} kB "
                        f"(a CSV file may be at most {_data.MAX_UPLOAD_BYTES // 1000} kB)"
                    )
                try:
                    msg = json.loads(text)
                except json.JSONDecodeError as err:
                    raise ValueError(f"message: not JSON ({err.msg})") from None
                await tab.handle(msg)
            except (ValueError, TypeError, KeyError, OverflowError) as err:
                await tab.send({"type": "error", "message": str(err)})
            except (WebSocketDisconnect, asyncio.CancelledError):
                raise
            except Exception as err:  # a bug of ours: say so, and keep the tab's session going
                await tab.send(
                    {"type": "error", "message": f"internal error: {type(err).__name__}: {err}"}
                )
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        tab.playing = False
        if tab.task is not None:
            try:
                await tab.task
            except Exception:  # the socket is gone: nothing to report to
                pass
        SESSIONS.discard(session)
        session.close()


def create_app() -> Starlette:
    """The Playground's ASGI app: ``/`` serves the page, ``/ws`` is each tab's socket."""
    return Starlette(
        routes=[
            Route("/", _index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            WebSocketRoute("/ws", _socket),
        ]
    )
