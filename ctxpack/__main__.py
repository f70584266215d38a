"""``python -m ctxpack``: the command line."""

from ctxpack.cli.app import main

if __name__ == "__main__":
    main()
