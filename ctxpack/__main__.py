"""``python -m ctxpack``: the command line."""

from ctxpack.cli import main

if __name__ == "__main__":
    main()
