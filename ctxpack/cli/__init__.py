"""The ``ctxpack`` command line (the only place click is imported).

:data:`main` is the command for ``python -m ctxpack`` and a console-script
entry point (``ctxpack.cli:main``, as installs made before ``bin/ctxpack``
have it) and, for everything else, the click group
(:data:`ctxpack.cli.app.main`): called as a script calls it (no
arguments), it first lets a running ``ctxpack watch`` answer
``diff``/``fingerprint`` (:func:`ctxpack.watchlink.run`), before click is
even imported; any other use is the group's.  The installed command
(``bin/ctxpack``) does the same without importing this package first.
Both end a `build` with :func:`quick_exit` (no orderly shutdown of the
interpreter once its output is flushed).
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
            from ctxpack.watchlink import run

            code = run(sys.argv[1:], this_only=True)
            if code is not None:
                raise SystemExit(code)
            try:
                return _group()()
            except SystemExit as e:
                quick_exit(e)
                raise
        return _group()(*args, **kwargs)

    def __getattr__(self, name: str) -> "Any":
        return getattr(_group(), name)  # CliRunner().invoke(main, ...), main.commands, ...

    def __repr__(self) -> str:
        return "<the ctxpack command (ctxpack.cli.app.main), with the watcher's fast path>"


def quick_exit(e: SystemExit) -> None:
    """The command line's own process (the console script, ``python -m``,
    ``bin/ctxpack``) ends here, without the interpreter's orderly shutdown,
    when the command that ran allows it (``ctxpack.cli.common.QUICK_EXIT``,
    :func:`ctxpack.cli.common.exit_now`); else it returns."""
    common = sys.modules.get("ctxpack.cli.common")  # not imported: no command ran
    if common is not None and common.QUICK_EXIT:
        common.exit_now(e.code)


#: ``ctxpack`` (see the module docstring).
main = _Main()

