"""The ``ctxpack`` command line: parses arguments, calls the library, formats.

One module per group of commands; this one holds the group and adds them.
Exit codes come from the error tree (``ctxpack.errors``): 0 success; 1 as
each command documents (over budget, findings, changes); 2 usage or input
error; 3 output error; 4 internal error; 5 engine unreachable, API version
refused or connection dropped (`build`); 130 interrupted.
"""

from __future__ import annotations

from typing import Any

import click

from ctxpack import __version__
from ctxpack.cli.common import show_click_error


class _Group(click.Group):
    """The group, with click's own errors (unknown option, bad value, missing
    argument) in ctxpack's style: ``ctxpack: error: ...`` and a usage hint."""

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



def _register() -> None:
    from ctxpack.cli import building, describe, indexing, linting, packing, watching

    for cmd in (describe.ls_command, describe.explain_command, describe.size_command, linting.lint_command,
                packing.pack_command, indexing.fingerprint_command, indexing.snapshot_command,
                indexing.diff_command, indexing.cache_group, building.build_command, watching.watch_command):
        main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
