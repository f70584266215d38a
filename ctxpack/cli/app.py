"""The ``ctxpack`` command line: parses arguments, calls the library, formats.

One module per group of commands; this one holds the group and names them.
A command's module is imported only when that command runs (or when help
lists it), so ``ctxpack diff`` does not pay for ``build``'s engine client or
``pack``'s compressors: start-up is most of a warm command's time (issue 14).
Exit codes come from the error tree (``ctxpack.errors``): 0 success; 1 as
each command documents (over budget, findings, changes); 2 usage or input
error; 3 output error; 4 internal error; 5 engine unreachable, API version
refused or connection dropped (`build`); 130 interrupted.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ctxpack import __version__
from ctxpack.cli.common import say, show_click_error
from ctxpack.index import paths

#: command name -> (module of ctxpack.cli, the click command in it).  A new
#: command: its module, and one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("describe", "ls_command"),
    "explain": ("describe", "explain_command"),
    "size": ("describe", "size_command"),
    "lint": ("linting", "lint_command"),
    "pack": ("packing", "pack_command"),
    "fingerprint": ("indexing", "fingerprint_command"),
    "snapshot": ("indexing", "snapshot_command"),
    "diff": ("indexing", "diff_command"),
    "cache": ("indexing", "cache_group"),
    "build": ("building", "build_command"),
    "watch": ("watching", "watch_command"),
}


class _Group(click.Group):
    """The group: commands loaded on first use (click's lazy-group pattern:
    ``list_commands``/``get_command``), and click's own errors (unknown
    option, bad value, missing argument) in ctxpack's style: ``ctxpack:
    error: ...`` and a usage hint."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            cmd = getattr(importlib.import_module(f"ctxpack.cli.{module}"), attr)
            if not isinstance(cmd, click.Command):  # pragma: no cover - a wrong line in COMMANDS
                raise TypeError(f"ctxpack.cli.{module}.{attr} is not a click command")
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # plain `ctxpack`: the help, as click gives it
            e.show()
            raise SystemExit(e.exit_code) from None
        except click.ClickException as e:
            show_click_error(e)
            raise SystemExit(e.exit_code) from None
        except click.Abort:
            click.echo("ctxpack: error: interrupted", err=True)
            raise SystemExit(130) from None
        raise SystemExit(rv if isinstance(rv, int) else 0)


@click.group("ctxpack", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="ctxpack")
def main() -> None:
    """ctxpack: Docker build contexts, exactly as Docker decides them."""
    paths.on_wait = _waiting  # a command waiting to open the index says so


def _waiting(note: str) -> None:
    say("note", note)


if __name__ == "__main__":  # pragma: no cover
    main()
