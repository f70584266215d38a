#!/usr/bin/env python3
"""Switch the ``.dockerignore`` of a benchmark tree between known variants.

    python bench/set_ignore.py DIR typical        # the "typical" ignore file
    python bench/set_ignore.py DIR node_modules   # only **/node_modules (pruning case)
    python bench/set_ignore.py DIR none           # no .dockerignore: full context
    python bench/set_ignore.py DIR --show         # print the current variant

Only the standard library is used, so the benchmarks can import it.
"""

from __future__ import annotations

import argparse
import os
import sys

#: Ignore-file variants by name; ``None`` means "no .dockerignore at all".
VARIANTS: dict[str, str | None] = {
    "none": None,
    "typical": (
        "# bench: a typical .dockerignore (written by bench/set_ignore.py)\n"
        "**/node_modules\n"
        ".git\n"
        "**/*.log\n"
        "dist\n"
        "build\n"
        "target\n"
        "**/__pycache__\n"
        "# exceptions that are literal paths\n"
        "!build/VERSION\n"
        "!logs/keep/important.log\n"
    ),
    "node_modules": (
        "# bench: pruning case (written by bench/set_ignore.py)\n"
        "**/node_modules\n"
    ),
}


def set_ignore(directory: str | os.PathLike[str], variant: str) -> None:
    """Write (or remove) ``DIRECTORY/.dockerignore`` for ``variant``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ignore variant {variant!r}; choose from {', '.join(VARIANTS)}")
    path = os.path.join(os.fspath(directory), ".dockerignore")
    text = VARIANTS[variant]
    if text is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return  # unchanged: keep the mtime
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def current_variant(directory: str | os.PathLike[str]) -> str:
    """Name of the variant currently in place, or ``"custom"``."""
    path = os.path.join(os.fspath(directory), ".dockerignore")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return "none"
    for name, body in VARIANTS.items():
        if body == text:
            return name
    return "custom"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory")
    ap.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    ap.add_argument("--show", action="store_true", help="print the variant in place and exit")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.directory):
        ap.error(f"not a directory: {args.directory}")
    if args.show or args.variant is None:
        print(current_variant(args.directory))
        return 0
    set_ignore(args.directory, args.variant)
    print(f"{args.directory}: .dockerignore -> {args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
