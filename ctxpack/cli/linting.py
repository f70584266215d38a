"""``lint``: findings about the ignore file and the context, ``--fix`` and ``--diff``."""

from __future__ import annotations

import os
import sys

import click

from ctxpack.cli.common import context_options, handle_errors, printable, reader_may_leave, say, styled, to_json


def unified_diff(path: str, old: str, new: str) -> str:
    """The change as ``diff -u`` shows it, named like the file on disk."""
    import difflib

    name = os.path.relpath(path)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"))


def _write(path: str, text: str) -> None:
    from ctxpack import fs

    data = text.encode("utf-8", "surrogateescape")
    with fs.atomic_output(path) as fd:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except OSError as e:
                raise fs.output_error(e, path) from None
            view = view[n:]


def on_terminal() -> bool:
    """Whether a person can be asked (both ends of the session are a terminal)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _print_findings(report: object) -> None:
    findings = report.findings  # type: ignore[attr-defined]
    for f in findings:
        sev = styled(f.severity, fg={"error": "red", "warning": "yellow"}.get(f.severity, "blue"))
        kinds = ", ".join([f.kind, *f.also])
        # Paths in them escaped (control characters, undecodable bytes), as in every diagnostic.
        click.echo(f"{printable(f.where)}: {sev}: {printable(f.message)} [{kinds}]")
        click.echo(f"    fix: {printable(f.fix)}")
    if not findings:
        click.echo("no findings")


@click.command("lint")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@context_options
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
@click.option("--fix", is_flag=True,
              help="Apply the edits that provably change nothing the build reads: shows the diff and asks on a "
                   "terminal; elsewhere writes only with --yes.")
@click.option("--diff", "diff_only", is_flag=True, help="Print the diff --fix would apply, change nothing.")
@click.option("-y", "--yes", is_flag=True, help="With --fix: write without asking.")
@click.option("--allow-secret", "allow_secret", multiple=True, metavar="PATH",
              help="A context path (file or directory) whose credentials are known and meant to be sent: "
                   "reported as info (repeatable; also '# ctxpack: allow-secret PATH' in the ignore file).")
@click.option("--allow-secrets", "allow_all", is_flag=True, hidden=True)
@handle_errors
def lint_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    as_json: bool, fix: bool, diff_only: bool, yes: bool, allow_secret: tuple[str, ...], allow_all: bool,
) -> None:
    """Find .dockerignore mistakes, heavy directories and secrets in the context.

    Each finding names the ignore-file line with its text
    (.dockerignore:3:node_modules) or the path.  Exit codes: 0 no
    error-level findings, 1 some, 2 usage or input error.
    """
    from ctxpack.linter import lint, plan_fixes

    if allow_all:
        raise click.UsageError("--allow-secrets was removed: it also silenced real keys. "
                               "Allow each known file with --allow-secret PATH (repeatable) or a "
                               "'# ctxpack: allow-secret PATH' line in the ignore file.")
    if yes and not fix:
        raise click.UsageError("--yes only makes sense with --fix")
    stdin = sys.stdin.buffer.read() if dockerfile == "-" else None
    kw = dict(dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, allow_secrets=allow_secret,
              stdin_dockerfile=stdin)
    report = lint(directory, **kw)  # type: ignore[arg-type]
    written = False
    if fix or diff_only:
        plan = plan_fixes(report)
        diff = unified_diff(plan.path, plan.old, plan.new)
        if diff_only:
            click.echo(diff, nl=False)
            for o in plan.refused:
                say("note", f"not fixed: {o.finding.where}: {o.reason}")
            return
        click.echo(diff, err=as_json, nl=False)
        for o in plan.refused:
            click.echo(printable(f"not fixed: {o.finding.where} [{o.finding.kind}]: {o.reason}"), err=as_json)
        if plan.changed:
            if not yes and dockerfile != "-" and on_terminal():
                yes = click.confirm(f"Write these changes to {os.path.relpath(plan.path)}?", default=False)
            elif not yes:
                click.echo(f"ctxpack: note: {os.path.relpath(plan.path)} not changed: no terminal to ask; "
                           "pass --yes to write it", err=True)
            if yes:
                _write(plan.path, plan.new)
                written = True
                report = lint(directory, **kw)  # type: ignore[arg-type]
        elif not plan.outcomes:
            click.echo("nothing to fix", err=as_json)
    if as_json:
        doc: dict[str, object] = {"ignore_file": report.ignore_file, "findings": [f.to_json() for f in report.findings]}
        if fix:
            doc["fixes"] = [{"kind": o.finding.kind, "where": o.finding.where, "applied": o.applied and written,
                             "safe": o.applied, "reason": o.reason} for o in plan.outcomes]
    with reader_may_leave():  # `ctxpack lint | head`: the findings still decide the exit code
        if as_json:
            click.echo(to_json(doc))
        else:
            _print_findings(report)
    sys.exit(1 if report.errors else 0)
