"""``python -m ctxpack.cli``."""

from ctxpack.cli.app import main

main()
