"""What every ``jaxmlp`` command shares to report a mistake: the usage error and the one-line
error report. It imports nothing heavy, so the command line is parsed before JAX loads."""

from __future__ import annotations

import sys


class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__


def _fail(err: BaseException | str, status: int) -> int:
    text = err if isinstance(err, str) else _message(err)
    print(f"jaxmlp: error: {text}", file=sys.stderr)
    return status
