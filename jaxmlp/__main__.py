"""``python -m jaxmlp``: the command line of :mod:`jaxmlp.cli`."""

from jaxmlp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
