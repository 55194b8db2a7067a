"""The ``ripple`` command line: :func:`main` is the console script's entry point."""

from orchestrator.cli.main import main

__all__ = ["main"]
