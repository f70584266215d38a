"""``pack``: the context's tar to a file or stdout."""

from __future__ import annotations

import os
import sys

import click

from ctxpack.cli.common import ProgressLine, context_options, handle_errors, minimal_options, open_ctx, say
from ctxpack.tar.sinks import COMPRESSIONS  # light: zlib; zstandard loads when used
from ctxpack.units import format_size


@click.command("pack")
@click.argument("directory", default=".", type=click.Path())
@context_options
@click.option("-o", "--output", help="Write the tar to FILE ('-' for stdout, the default when stdout is not a terminal).")
@click.option("--compress", type=click.Choice(COMPRESSIONS), default="none", show_default=True)
@click.option("--level", type=int, help="Compression level (gzip 1-9, zstd 1-22).")
@click.option("--reproducible", is_flag=True, help="Deterministic tar: mtimes clamped to SOURCE_DATE_EPOCH (or 0), hard links as files.")
@click.option("--snapshot", "take_snapshot", is_flag=True, help="Also record a snapshot for `ctxpack diff`.")
@minimal_options
@handle_errors
def pack_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    output: str | None, compress: str, level: int | None, reproducible: bool, take_snapshot: bool,
    minimal: bool, target: str | None, platform: str | None, build_args: tuple[str, ...],
) -> None:
    """Write the build context as the tar a builder receives.

    `ctxpack pack . | docker build -` works.  Exit codes: 0 written, 1 a file
    changed or vanished beyond retry, 2 usage or input error, 3 output error.
    """
    from ctxpack.cli.warm import warm
    from ctxpack.context import missing_dockerfile_error
    from ctxpack.tar.writer import PackOptions, pack
    from ctxpack.fs import temporary_name
    from ctxpack.tar.sinks import FdSink, open_output

    to_stdout = output in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("refusing to write a tar to a terminal: use -o FILE or a pipe")
    if level is not None:
        bounds = {"gzip": (1, 9), "zstd": (1, 22)}.get(compress)
        if bounds is None or not bounds[0] <= level <= bounds[1]:
            raise click.UsageError(f"--level {level} is not valid with --compress {compress}")
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        epoch = int(sde) if sde else None
    except ValueError:
        raise click.UsageError(f"SOURCE_DATE_EPOCH must be an integer, not {sde!r}") from None
    opts = PackOptions(compress=compress, level=level, reproducible=reproducible, source_date_epoch=epoch)
    ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args, describing=False, platform=platform)
    missing = missing_dockerfile_error(ctx)
    if missing is not None:
        raise missing  # as docker build: no tar without a Dockerfile
    progress = ProgressLine()

    def warn(msg: str) -> None:
        say("warning", f"{msg}")

    try:
        if to_stdout:
            sys.stdout.flush()
            walked = warm("entries", ctx)  # a running `ctxpack watch` answers without walking
            stats = pack(ctx, FdSink(sys.stdout.fileno()), opts, warn=warn, progress=progress, walked=walked)
        else:
            assert output is not None
            # Our own output is never part of the context: neither the file
            # of the last run nor the temporary file being written now.
            ctx = ctx.omitting(output, temporary_name(output))
            walked = warm("entries", ctx)
            with open_output(output) as sink:
                stats = pack(ctx, sink, opts, warn=warn, progress=progress, walked=walked)
    finally:
        progress.done()
    if take_snapshot:
        from ctxpack.index.snapshots import snapshot

        for warning in snapshot(ctx).warnings:
            say("warning", warning)
    if sys.stderr.isatty() and progress.shown:
        click.echo(f"ctxpack: {stats.entries:,} entries, {format_size(stats.bytes)} in {stats.elapsed:.1f}s", err=True)
