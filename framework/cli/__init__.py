"""The ``gptf`` command line (typer), one module per group of commands:

* :mod:`gptf.cli.train`   -- run, inspect, plugins, data check
* :mod:`gptf.cli.ask`     -- generate, eval, chat, serve, export
* :mod:`gptf.cli.explore` -- ablate, attention, tokenize, plugin check

Each command is a thin layer over the engine; importing a module registers its commands
on the one app in :mod:`gptf.cli.app`.
"""

from gptf.cli import train  # noqa: F401  (registers run, inspect, ...: first, so first in --help)

# isort: split
from gptf.cli import ask, explore  # noqa: F401  (registers the other commands)
from gptf.cli.app import app


def main() -> None:
    """Console-script entry point (also ``python -m gptf``)."""
    app(prog_name="gptf")


__all__ = ["app", "main"]
