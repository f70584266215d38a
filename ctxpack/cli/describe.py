"""``ls``, ``explain`` and ``size``: what the upload carries, and why."""

from __future__ import annotations

import shutil
import sys

import click

from ctxpack import explainer as api
from ctxpack.audit import SizeReport, format_size, parse_size
from ctxpack.cli.common import ProgressLine, context_options, fit, fsbytes, handle_errors, minimal_options, open_ctx, say, styled, to_json


@click.command("ls")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@context_options
@minimal_options
@click.option("--excluded", is_flag=True, help="List what was left out, with the deciding rule.")
@click.option("-0", "null", is_flag=True, help="Separate entries with NUL instead of newline.")
@handle_errors
def ls_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
               minimal: bool, target: str | None, build_args: tuple[str, ...], excluded: bool, null: bool) -> None:
    """List the context's entries in upload order (directories end with /)."""
    ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    end = b"\0" if null else b"\n"
    out = sys.stdout.buffer
    chunks: list[bytes] = []
    warn = lambda message: say("warning", message)  # noqa: E731
    for e in api.list_entries(ctx, excluded=excluded, warn=warn):
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


@click.command("explain")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1, required=True)
@context_options
@handle_errors
def explain_command(directory: str, paths: tuple[str, ...], dockerfile: str | None, dialect: str, ignore_file: str | None) -> None:
    """Say for each PATH (relative to DIRECTORY) whether it is sent, and by which rule."""
    for mine, other in api.explain(directory, list(paths), dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file):
        line = f"{mine.path}: {mine.describe()}"
        if mine.sent != other.sent:
            verdict = "sends" if other.sent else "does not send"
            line += f" [{other.dialect.value} {verdict} it: {other.describe()}]"
        click.echo(line)


def _print_size(rep: SizeReport, width: int) -> None:
    name = rep.ignore_file or "no ignore file"
    click.echo(styled(f"Context {rep.context} ({rep.dialect}, {name})", bold=True))
    click.echo(
        f"Sends {rep.entries:,} entries: {rep.files:,} files, {format_size(rep.bytes)}"
        + (f"; ignore rules keep out {rep.excluded_files:,} files, {format_size(rep.excluded_bytes)}" if rep.excluded_files else "")
    )
    if rep.full_files is not None and rep.full_bytes is not None:
        click.echo(
            f"--minimal saves {rep.full_files - rep.files:,} files, {format_size(rep.full_bytes - rep.bytes)} "
            f"over the full context ({rep.full_files:,} files, {format_size(rep.full_bytes)})"
        )
    pw = max(20, width - 34)
    if rep.directories:
        click.echo(styled("\nHeaviest directories", bold=True))
        for d in rep.directories:
            label = fit("  " * d.depth + d.path.rsplit("/", 1)[-1] + "/", pw)
            click.echo(f"  {label:<{pw}} {format_size(d.bytes):>10} {d.files:>8,} {d.share:>6.1%}")
    if rep.largest:
        click.echo(styled("\nLargest files", bold=True))
        for f in rep.largest:
            click.echo(f"  {format_size(f.bytes):>10}  {fit(f.path, width - 14)}")
    if rep.extensions:
        click.echo(styled("\nBy extension", bold=True))
        for x in rep.extensions:
            click.echo(f"  {x.extension:<16} {format_size(x.bytes):>10} {x.files:>8,} file{'' if x.files == 1 else 's'}")
    if rep.rules:
        click.echo(styled("\nKept out by rule", bold=True))
        for r in rep.rules:
            click.echo(f"  {fit(r.rule, pw):<{pw}} {format_size(r.bytes):>10} {r.files:>8,} file{'' if r.files == 1 else 's'}")


@click.command("size")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
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
    minimal: bool, target: str | None, build_args: tuple[str, ...],
    top: int | None, as_json: bool, max_size: str | None, max_files: int | None, html_out: str | None,
) -> None:
    """Audit the context: what is sent, where the bytes are, what the rules save.

    Exit codes: 0 within budget, 1 over --max-size/--max-files, 2 usage or input error.
    """
    limit = parse_size(max_size) if max_size is not None else None
    cols, lines = shutil.get_terminal_size((100, 40))
    if top is None:
        top = max(3, min(10, (lines - 12) // 4))
    ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    if html_out == "-" and as_json:
        raise click.UsageError("--html - and --json both write to stdout: give --html a file name")
    progress = ProgressLine()
    try:
        if html_out is None:
            rep = api.size(ctx, top=top, progress=progress, compare_full=minimal)
        else:  # the same measurement, drawn (ctxpack.report)
            from ctxpack.report import html_report, write_html

            model, page = html_report(ctx, dockerfile=dockerfile, ignore_file=ignore_file, top=top, progress=progress)
            write_html(page, html_out)
            rep = model.size
    finally:
        progress.done()
    if html_out not in (None, "-"):
        click.echo(f"ctxpack: wrote {html_out} ({format_size(len(page))}, {model.nodes:,} rectangles)", err=True)
    if as_json:
        click.echo(to_json(rep.to_json()))
    elif html_out != "-":
        _print_size(rep, cols)
    over = []
    if limit is not None and rep.bytes > limit:
        over.append(f"context is {format_size(rep.bytes)} ({rep.bytes:,} bytes), over --max-size {max_size} ({limit:,} bytes)")
    if max_files is not None and rep.files > max_files:
        over.append(f"context has {rep.files:,} files, over --max-files {max_files:,}")
    if over:
        click.echo("ctxpack: over budget: " + "; ".join(over), err=True)
        sys.exit(1)
