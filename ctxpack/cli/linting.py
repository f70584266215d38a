"""``lint``: findings about the ignore file and the context, and ``--fix``."""

from __future__ import annotations

import sys

import click

from ctxpack.cli.common import context_options, handle_errors, styled, to_json


@click.command("lint")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@context_options
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
@click.option("--fix", is_flag=True, help="Apply the suggested .dockerignore edits (shows the diff first).")
@click.option("--allow-secrets", is_flag=True, help="Report likely secrets as info instead of errors.")
@handle_errors
def lint_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    as_json: bool, fix: bool, allow_secrets: bool,
) -> None:
    """Find .dockerignore mistakes, heavy directories and secrets in the context.

    Exit codes: 0 no error-level findings, 1 some, 2 usage or input error.
    """
    from ctxpack.linter.checks import apply_fixes, lint, unified_diff
    from ctxpack.tar.sinks import open_output

    report = lint(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, allow_secrets=allow_secrets)
    if fix:
        change = apply_fixes(report)
        if change is not None:
            path, old, new = change
            click.echo(unified_diff(path, old, new), err=as_json, nl=False)
            with open_output(path) as sink:
                sink.write(new.encode("utf-8", "surrogateescape"))
            report = lint(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, allow_secrets=allow_secrets)
    if as_json:
        click.echo(to_json({"ignore_file": report.ignore_file, "findings": [f.to_json() for f in report.findings]}))
    else:
        for f in report.findings:
            where = f"{f.file}:{f.line}" if f.line else (f.path or f.file or "")
            sev = styled(f.severity, fg={"error": "red", "warning": "yellow"}.get(f.severity, "blue"))
            click.echo(f"{where}: {sev}: {f.message} [{f.kind}]")
            click.echo(f"    fix: {f.fix}")
        if not report.findings:
            click.echo("no findings")
    sys.exit(1 if report.errors else 0)
