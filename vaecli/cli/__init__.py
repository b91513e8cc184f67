"""The ``vae`` command line (``vaecli.cli.app``), one module per command or family of them."""

from vaecli.cli.app import COMMANDS, app, main

__all__ = ["COMMANDS", "app", "main"]
