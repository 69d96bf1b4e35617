"""``jaxmlp playground``: serves the Playground (:mod:`jaxmlp.playground`) and opens it."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Registers ``playground`` on the command's subparsers (imports nothing heavy)."""
    p = sub.add_parser("playground", help="TensorFlow Playground's experience in your browser, on jaxmlp")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free one)")  # fmt: skip
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.set_defaults(run=cmd_playground)


def cmd_playground(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected 0 to 65535, got {args.port}")
    from jaxmlp.playground import serve

    serve(args.host, args.port, open_browser=not args.no_browser)
    return 0
