"""The ``innerloop`` command line."""

from innerloop.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
