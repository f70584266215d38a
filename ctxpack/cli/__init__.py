"""The ``ctxpack`` command line (the only place click is imported).

:data:`main` is the console script's entry point (``ctxpack.cli:main``) and,
for everything else, the click group (:data:`ctxpack.cli.app.main`): called
as the script calls it (no arguments), it first lets a running ``ctxpack
watch`` answer ``diff``/``fingerprint`` (:mod:`ctxpack.cli.fast`), before
click is even imported; any other use is the group's.
"""

import sys

TYPE_CHECKING = False  # not typing's: this module is on every command's start-up
if TYPE_CHECKING:
    from typing import Any

    import click

__all__ = ["main"]


def _group() -> "click.Group":
    from ctxpack.cli.app import main as group

    return group


class _Main:
    """The entry point: the fast path, then click (see the module docstring)."""

    def __call__(self, *args: "Any", **kwargs: "Any") -> "Any":
        if not args and not kwargs:  # the console script, `python -m ctxpack.cli`
            from ctxpack.cli.fast import run

            code = run(sys.argv[1:], one_command=True)
            if code is not None:
                raise SystemExit(code)
        return _group()(*args, **kwargs)

    def __getattr__(self, name: str) -> "Any":
        return getattr(_group(), name)  # CliRunner().invoke(main, ...), main.commands, ...

    def __repr__(self) -> str:
        return "<the ctxpack command (ctxpack.cli.app.main), with the watcher's fast path>"


#: ``ctxpack`` (see the module docstring).
main = _Main()
