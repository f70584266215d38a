"""``python -m ctxpack.cli``."""

from ctxpack.cli.app import main

if __name__ == "__main__":
    main()
