"""The ``ctxpack`` command line (the only place click is imported).

:func:`script` is what the installed command runs (``bin/ctxpack``, the
wheel's script): a running ``ctxpack watch`` may answer ``diff`` or
``fingerprint`` first (:mod:`ctxpack.cli.fast`), before click is even
imported; else the click group (:data:`ctxpack.cli.app.main`) runs it.
:data:`main` is the same for ``python -m ctxpack`` and a console-script
entry point (``ctxpack.cli:main``, as an install made before the script
has it) and, for everything else, the click group itself.
"""

import os
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


def script() -> None:
    """The installed ``ctxpack`` command (``bin/ctxpack``): :data:`main`,
    except that a command the watcher answered ends with ``os._exit`` once
    its output is written and flushed: this process has nothing else to do,
    and the interpreter's orderly shutdown (every module torn down) costs
    about 2.5 ms here, as much as the rest of the answer (issue 14)."""
    from ctxpack.cli.fast import run

    code = run(sys.argv[1:], one_command=True)
    if code is not None:
        os._exit(code)
    _group()()
