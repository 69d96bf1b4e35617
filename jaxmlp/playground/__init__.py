"""The Playground: TensorFlow Playground's experience in a browser, trained by jaxmlp.

``jaxmlp playground`` (or :func:`serve`) starts a local web server, on 127.0.0.1 unless told
otherwise, and opens the page. The page (``static/``: plain HTML, JavaScript and CSS, no build
step, nothing fetched from the internet) talks to the server over one WebSocket per tab; each
tab gets its own session (model, parameters, optimizer state, data), freed when the tab closes.
Training is jaxmlp's own compiled step (:func:`jaxmlp.make_train_step`) with the hand-written
backward pass, whole epochs at a time on the device.

Needs the ``playground`` extra: ``pip install 'jaxmlp[playground]'`` (Starlette and uvicorn).
"""

from __future__ import annotations

import threading
import webbrowser
from typing import Any

__all__ = ["create_app", "serve"]


def _require() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "the Playground needs Starlette and uvicorn; install them with: "
            "pip install 'jaxmlp[playground]'"
        ) from err


def create_app() -> Any:
    """The Playground's ASGI app (a Starlette app): ``/`` is the page, ``/ws`` a tab's socket."""
    _require()
    from jaxmlp.playground._app import create_app as make

    return make()


def serve(host: str = "127.0.0.1", port: int = 8765, *, open_browser: bool = True) -> None:
    """Serves the Playground until interrupted, opening the page in the default browser.

    Args:
        host: the address to bind; the default keeps it to this machine.
        port: the TCP port (0: any free one).
        open_browser: open ``http://host:port/`` in the default browser once it listens.
    """
    _require()
    import uvicorn

    from jaxmlp.playground._app import MAX_MESSAGE_BYTES

    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        log_level="warning",
        ws_max_size=MAX_MESSAGE_BYTES + 4096,
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/"
        print(f"jaxmlp playground: {url} (Ctrl+C stops it)", flush=True)
        if open_browser:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
