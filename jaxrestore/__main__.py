"""``python -m jaxrestore``: the ``jaxrestore`` command line."""

from jaxrestore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
