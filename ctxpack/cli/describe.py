"""``ls``, ``explain`` and ``size``: what the upload carries, and why."""

from __future__ import annotations

import os
import shutil
import sys

from typing import TYPE_CHECKING

import click

from ctxpack.cli.common import (
    ProgressLine, Unreadable, context_options, fit, fsbytes, handle_errors, minimal_options, open_ctx, printable, reader_may_leave, say, styled,
    to_json,
)
from ctxpack.ignore.dialect import Dialect
from ctxpack.units import format_size, parse_size

if TYPE_CHECKING:
    from ctxpack.audit import SizeReport


@click.command("ls")
@click.argument("directory", default=".", type=click.Path())
@context_options
@minimal_options
@click.option("--excluded", is_flag=True, help="List what was left out, with the deciding rule.")
@click.option("-0", "null", is_flag=True, help="Separate entries with NUL instead of newline.")
@handle_errors
def ls_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
               minimal: bool, target: str | None, platform: str | None, build_args: tuple[str, ...], excluded: bool, null: bool) -> None:
    """List the context's entries in upload order (directories end with /)."""
    from ctxpack import explainer as api
    from ctxpack.cli.warm import warm

    ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args, platform=platform)
    end = b"\0" if null else b"\n"
    out = sys.stdout.buffer
    chunks: list[bytes] = []
    warn = lambda message: say("warning", message)  # noqa: E731
    unreadable = Unreadable()
    walked = warm("walk", ctx, excluded=excluded)  # a running `ctxpack watch` answers without walking
    # BuildKit: sockets too, as the session serves them (empty files; a tar never holds one).
    sockets = ctx.dialect is Dialect.BUILDKIT
    for e in api.list_entries(ctx, excluded=excluded, warn=warn, on_error=unreadable, walked=walked, sockets=sockets):
        if excluded:
            if e.included:
                continue
            rule = str(e.rule) if e.rule else "no rule"
            chunks.append(fsbytes(e.name) + b"\t" + fsbytes(rule) + end)
        else:
            chunks.append(fsbytes(e.name) + end)
        if len(chunks) >= 512:
            out.write(b"".join(chunks))
            chunks.clear()
    out.write(b"".join(chunks))
    out.flush()
    unreadable.report()


@click.command("explain")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-C", "--context", "directory", default=".", show_default=True, type=click.Path(), metavar="DIR",
              help="The context directory; PATHs are relative to it (or absolute).")
@context_options
@handle_errors
def explain_command(paths: tuple[str, ...], directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None) -> None:
    """Say for each PATH whether it is sent, and by which rule.

    The context is the current directory unless -C DIR says otherwise, as
    for `docker build .`.  Exit codes: 0 every path explained; 2 a path is
    outside the context or empty, or the builder could not read it.
    """
    from ctxpack import explainer as api
    from ctxpack.context import open_context
    from ctxpack.errors import ContextError

    mine_d = Dialect(dialect)
    other_d = Dialect.CLASSIC if mine_d is Dialect.BUILDKIT else Dialect.BUILDKIT
    mine_ctx = open_ctx(directory, dockerfile, dialect, ignore_file)
    other_ctx = open_context(directory, dockerfile=dockerfile, dialect=other_d, ignore_file=ignore_file,
                             stdin_dockerfile=mine_ctx.dockerfile_data if mine_ctx.dockerfile_stdin else None)
    failed = False
    for p in paths:
        try:
            rel = api.context_path(mine_ctx, p, directory)
        except ContextError as e:
            failed = True
            say("error", str(e))
            continue
        mine, other = api.explain_path(mine_ctx, rel), api.explain_path(other_ctx, rel)
        name = rel or "."
        line = f"{name}: {mine.describe()}"
        if mine.sent != other.sent:
            verdict = "sends" if other.sent else "does not send"
            line += f" [{other.dialect.value} {verdict} it: {other.verdict()}]"
        failed = failed or mine.docker_error is not None
        click.echo(printable(line))  # a name's control bytes escaped, as in every diagnostic
    if _looks_like_old_form(directory, paths):
        say("hint", f"PATHs are relative to the context, here the current directory; "
                    f"to explain paths of the context {paths[0]}, say: ctxpack explain -C {paths[0]} PATH...")
    if failed:
        sys.exit(2)


def _looks_like_old_form(directory: str, paths: tuple[str, ...]) -> bool:
    # `explain DIR PATH...` was the form before -C: DIR first, the PATHs in it.
    if directory != "." or len(paths) < 2 or not paths[0] or not os.path.isdir(paths[0]):
        return False
    return any(p and not os.path.lexists(p) and os.path.lexists(os.path.join(paths[0], p)) for p in paths[1:])


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _print_size(rep: "SizeReport", width: int) -> None:
    name = rep.ignore_file or "no ignore file"
    click.echo(styled(f"Context {rep.context} ({rep.dialect}, {name})", bold=True))
    click.echo(
        f"Sends {_count(rep.entries, 'entry', 'entries')}: {_count(rep.files, 'file')}, {format_size(rep.bytes)}"
        + (f"; ignore rules keep out {_count(rep.excluded_files, 'file')}, {format_size(rep.excluded_bytes)}"
           if rep.excluded_files else "")
    )
    if rep.full_files is not None and rep.full_bytes is not None:
        click.echo(
            f"--minimal saves {rep.full_files - rep.files:,} files, {format_size(rep.full_bytes - rep.bytes)} "
            f"over the full context ({rep.full_files:,} files, {format_size(rep.full_bytes)})"
        )
    pw = max(20, width - 34)
    # Each section's title row names its columns.
    if rep.directories:
        click.echo("\n" + styled(f"  {'Heaviest directories':<{pw}} {'size':>10} {'files':>8} {'share':>6}", bold=True))
        above: list[str] = []  # the rows above this one, by depth
        for d in rep.directories:
            del above[d.depth:]
            name = d.path[len(above[-1]) + 1:] if above else d.path  # a chain of directories is one row
            above.append(d.path)
            label = fit("  " * d.depth + name + "/", pw)
            click.echo(f"  {label:<{pw}} {format_size(d.bytes):>10} {d.files:>8,} {d.share:>6.1%}")
    if rep.largest:
        click.echo("\n" + styled(f"  {'Largest files':<{pw}} {'size':>10}", bold=True))
        for f in rep.largest:
            click.echo(f"  {fit(f.path, pw):<{pw}} {format_size(f.bytes):>10}")
    if rep.extensions:
        click.echo("\n" + styled(f"  {'By extension':<{pw}} {'size':>10} {'files':>8}", bold=True))
        for x in rep.extensions:
            click.echo(f"  {x.extension:<{pw}} {format_size(x.bytes):>10} {x.files:>8,}")
    if rep.rules:
        click.echo("\n" + styled(f"  {'Kept out by rule':<{pw}} {'size':>10} {'files':>8}", bold=True))
        for r in rep.rules:
            click.echo(f"  {fit(r.rule, pw):<{pw}} {format_size(r.bytes):>10} {r.files:>8,}")


@click.command("size")
@click.argument("directory", default=".", type=click.Path())
@context_options
@minimal_options
@click.option("--top", type=click.IntRange(1, 1000), default=None, help="Rows per section (default: fit the terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in docs/size.md).")
@click.option("--max-size", help="Exit 1 if the context sends more bytes (e.g. 200MB, 1.5GiB).")
@click.option("--max-files", type=click.IntRange(0), help="Exit 1 if the context sends more files.")
@click.option("--html", "html_out", metavar="FILE", help="Also write a treemap report, one self-contained HTML file ('-' for stdout).")
@handle_errors
def size_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    minimal: bool, target: str | None, platform: str | None, build_args: tuple[str, ...],
    top: int | None, as_json: bool, max_size: str | None, max_files: int | None, html_out: str | None,
) -> None:
    """Audit the context: what is sent, where the bytes are, what the rules save.

    Exit codes: 0 within budget, 1 over --max-size/--max-files, 2 usage or input error.
    """
    from ctxpack import explainer as api
    from ctxpack.cli.warm import warm

    limit = parse_size(max_size) if max_size is not None else None
    cols, lines = shutil.get_terminal_size((100, 40))
    if top is None:
        top = max(3, min(10, (lines - 12) // 4))
    ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args, platform=platform)
    if html_out == "-" and as_json:
        raise click.UsageError("--html - and --json both write to stdout: give --html a file name")
    progress = ProgressLine()
    unreadable = Unreadable()
    try:
        if html_out is None:
            # A running `ctxpack watch` gives the entry list, but where the
            # walk can be forked it is not asked: the forked walk shares the
            # sizing of the pruned directories (most of size's work) between
            # two processes, and the watcher's list cannot (10x node_modules
            # bench tree: 2.9 s walking vs 5.2 s from the watcher's list).
            from ctxpack.tar.rows import can_fork

            walked = None if can_fork() else warm("entries", ctx, excluded=True)
            rep = api.size(ctx, top=top, progress=progress, compare_full=minimal, on_error=unreadable, walked=walked)
        else:  # the same measurement, drawn (ctxpack.report)
            from ctxpack.report import html_report, write_html

            model, page = html_report(ctx, dockerfile=dockerfile, ignore_file=ignore_file, top=top, progress=progress)
            write_html(page, html_out)
            rep = model.size
    finally:
        progress.done()
    if html_out not in (None, "-"):
        click.echo(f"ctxpack: wrote {html_out} ({format_size(len(page))}, {model.nodes:,} rectangles)", err=True)
    rep.unreadable = unreadable.to_json(ctx.root)
    with reader_may_leave():  # over budget all the same: the gate's exit code must not depend on the reader
        if as_json:
            click.echo(to_json(rep.to_json()))
        elif html_out != "-":
            _print_size(rep, cols)
    unreadable.report()
    over = []
    if limit is not None and rep.bytes > limit:
        over.append(f"context is {format_size(rep.bytes)} ({rep.bytes:,} bytes), over --max-size {max_size} ({limit:,} bytes)")
    if max_files is not None and rep.files > max_files:
        over.append(f"context has {rep.files:,} files, over --max-files {max_files:,}")
    if over:
        click.echo("ctxpack: over budget: " + "; ".join(over), err=True)
        sys.exit(1)
