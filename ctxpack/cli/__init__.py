"""The ``ctxpack`` command line (the only place click is imported)."""

from ctxpack.cli.app import main

__all__ = ["main"]
