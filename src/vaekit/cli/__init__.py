"""The `vaekit` command line: a thin layer over the Python API, one module per command group
(`train`, `evaluate`, `generate`, `coding`, `anomaly`); `options` holds what they share."""

from vaekit.cli import anomaly, coding, evaluate, generate, train  # noqa: F401  (the commands)
from vaekit.cli.options import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
