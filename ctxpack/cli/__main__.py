"""``python -m ctxpack.cli``: the console script's entry point, fast path included."""

from ctxpack.cli import main

if __name__ == "__main__":
    main()
