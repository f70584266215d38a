"""The ``ctxpack`` command line: parses arguments, calls the library, formats.

Exit codes: 0 success; 2 usage or input error (bad pattern, unreadable file,
missing directory); other codes as each command documents.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ctxpack import explainer as api
from ctxpack.audit import SizeReport, format_size, parse_size
from ctxpack.context import BuildContext, Dialect, open_context
from ctxpack.errors import ClosedPipeError, CtxpackError, InputError

F = TypeVar("F", bound=Callable[..., Any])


def _fsbytes(name: str) -> bytes:
    # Names keep undecodable bytes as surrogate escapes: write the original bytes.
    return name.encode("utf-8", "surrogateescape")


def _fail(message: str, code: int) -> None:
    click.echo(f"ctxpack: error: {message}", err=True)
    sys.exit(code)


def _quiet_exit(code: int) -> None:
    # The reader went away: say nothing, and keep Python from complaining
    # about flushing stdout at exit.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)


def _handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CtxpackError as e:
            if isinstance(e, ClosedPipeError):
                _quiet_exit(e.exit_code)
            _fail(str(e), e.exit_code)
        except BrokenPipeError:
            # The reader went away (`ctxpack ls | head`): not an error of ours.
            sys.stderr.close()
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


def _context_options(fn: F) -> F:
    fn = click.option(
        "--ignore-file",
        type=click.Path(dir_okay=False),
        help="Use this ignore file instead of the context's .dockerignore.",
    )(fn)
    fn = click.option(
        "--dialect",
        type=click.Choice([d.value for d in Dialect]),
        default=Dialect.BUILDKIT.value,
        show_default=True,
        help="Which builder's rules: buildkit (docker build) or classic (docker CLI upload, API clients).",
    )(fn)
    fn = click.option(
        "-f",
        "--file",
        "dockerfile",
        help="Dockerfile path, relative to the current directory ('-' for stdin).",
    )(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ctxpack")
def main() -> None:
    """ctxpack: Docker build contexts, exactly as Docker decides them."""


def _minimal_options(fn: F) -> F:
    fn = click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                      help="Build argument for --minimal (repeatable).")(fn)
    fn = click.option("--target", help="Build stage for --minimal (default: the last).")(fn)
    fn = click.option("--minimal", is_flag=True, help="Only what the Dockerfile can read (COPY/ADD/RUN --mount sources).")(fn)
    return fn


def _parse_build_args(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
        elif item in os.environ:
            out[item] = os.environ[item]  # as docker: --build-arg NAME takes the environment's value
    return out


def _open(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
          minimal: bool = False, target: str | None = None, build_args: tuple[str, ...] = ()) -> BuildContext:
    stdin = sys.stdin.buffer.read() if dockerfile == "-" else None
    if (target or build_args) and not minimal:
        raise click.UsageError("--target and --build-arg only make sense with --minimal")
    ctx = open_context(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, stdin_dockerfile=stdin,
                       minimal=minimal, target=target, build_args=_parse_build_args(build_args))
    for note in ctx.notes:
        click.echo(f"ctxpack: note: {note}", err=True)
    for warning in api.source_warnings(ctx):
        click.echo(f"ctxpack: warning: {warning}", err=True)
    return ctx


@main.command("ls")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@_minimal_options
@click.option("--excluded", is_flag=True, help="List what was left out, with the deciding rule.")
@click.option("-0", "null", is_flag=True, help="Separate entries with NUL instead of newline.")
@_handle_errors
def ls_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
               minimal: bool, target: str | None, build_args: tuple[str, ...], excluded: bool, null: bool) -> None:
    """List the context's entries in upload order (directories end with /)."""
    ctx = _open(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    end = b"\0" if null else b"\n"
    out = sys.stdout.buffer
    chunks: list[bytes] = []
    for e in api.list_entries(ctx, excluded=excluded):
        if excluded:
            if e.included:
                continue
            rule = str(e.rule) if e.rule else "no rule"
            chunks.append(_fsbytes(e.name) + b"\t" + _fsbytes(rule) + end)
        else:
            chunks.append(_fsbytes(e.name) + end)
        if len(chunks) >= 512:
            out.write(b"".join(chunks))
            chunks.clear()
    out.write(b"".join(chunks))
    out.flush()


@main.command("explain")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1, required=True)
@_context_options
@_handle_errors
def explain_command(directory: str, paths: tuple[str, ...], dockerfile: str | None, dialect: str, ignore_file: str | None) -> None:
    """Say for each PATH (relative to DIRECTORY) whether it is sent, and by which rule."""
    for mine, other in api.explain(directory, list(paths), dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file):
        line = f"{mine.path}: {mine.describe()}"
        if mine.sent != other.sent:
            verdict = "sends" if other.sent else "does not send"
            line += f" [{other.dialect.value} {verdict} it: {other.describe()}]"
        click.echo(line)


class _Progress:
    """A progress line on stderr, only on a terminal and only after a moment."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.start = time.monotonic()
        self.shown = False
        try:  # how long "a moment" is (tests set 0)
            self.after = float(os.environ.get("CTXPACK_PROGRESS_AFTER", "0.5"))
        except ValueError:
            self.after = 0.5

    def __call__(self, files: int, nbytes: int) -> None:
        elapsed = time.monotonic() - self.start
        if not self.enabled or elapsed < self.after:
            return
        self.shown = True
        rate = format_size(int(nbytes / elapsed)) + "/s" if elapsed > 0 else ""
        click.echo(f"\r\033[K{files:,} files, {format_size(nbytes)} ({rate})", err=True, nl=False)

    def done(self) -> None:
        if self.shown:
            click.echo("\r\033[K", err=True, nl=False)


def _json(obj: object) -> str:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable file names: keep the document valid UTF-8 with \udcXX
        # escapes (json.loads gives back the surrogate-escaped name).
        text = json.dumps(obj, indent=2)
    return text


def _styled(text: str, **kw: Any) -> str:
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return click.style(text, **kw)


def _fit(path: str, width: int) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def _print_size(rep: SizeReport, width: int) -> None:
    name = rep.ignore_file or "no ignore file"
    click.echo(_styled(f"Context {rep.context} ({rep.dialect}, {name})", bold=True))
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
        click.echo(_styled("\nHeaviest directories", bold=True))
        for d in rep.directories:
            label = _fit("  " * d.depth + d.path.rsplit("/", 1)[-1] + "/", pw)
            click.echo(f"  {label:<{pw}} {format_size(d.bytes):>10} {d.files:>8,} {d.share:>6.1%}")
    if rep.largest:
        click.echo(_styled("\nLargest files", bold=True))
        for f in rep.largest:
            click.echo(f"  {format_size(f.bytes):>10}  {_fit(f.path, width - 14)}")
    if rep.extensions:
        click.echo(_styled("\nBy extension", bold=True))
        for x in rep.extensions:
            click.echo(f"  {x.extension:<16} {format_size(x.bytes):>10} {x.files:>8,} file{'' if x.files == 1 else 's'}")
    if rep.rules:
        click.echo(_styled("\nKept out by rule", bold=True))
        for r in rep.rules:
            click.echo(f"  {_fit(r.rule, pw):<{pw}} {format_size(r.bytes):>10} {r.files:>8,} file{'' if r.files == 1 else 's'}")


@main.command("size")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@_minimal_options
@click.option("--top", type=click.IntRange(1, 1000), default=None, help="Rows per section (default: fit the terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in docs/size.md).")
@click.option("--max-size", help="Exit 1 if the context sends more bytes (e.g. 200MB, 1.5GiB).")
@click.option("--max-files", type=click.IntRange(0), help="Exit 1 if the context sends more files.")
@_handle_errors
def size_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    minimal: bool, target: str | None, build_args: tuple[str, ...],
    top: int | None, as_json: bool, max_size: str | None, max_files: int | None,
) -> None:
    """Audit the context: what is sent, where the bytes are, what the rules save.

    Exit codes: 0 within budget, 1 over --max-size/--max-files, 2 usage or input error.
    """
    limit = parse_size(max_size) if max_size is not None else None
    cols, lines = shutil.get_terminal_size((100, 40))
    if top is None:
        top = max(3, min(10, (lines - 12) // 4))
    ctx = _open(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    progress = _Progress()
    try:
        rep = api.size(ctx, top=top, progress=progress, compare_full=minimal)
    finally:
        progress.done()
    if as_json:
        click.echo(_json(rep.to_json()))
    else:
        _print_size(rep, cols)
    over = []
    if limit is not None and rep.bytes > limit:
        over.append(f"context is {format_size(rep.bytes)} ({rep.bytes:,} bytes), over --max-size {max_size} ({limit:,} bytes)")
    if max_files is not None and rep.files > max_files:
        over.append(f"context has {rep.files:,} files, over --max-files {max_files:,}")
    if over:
        click.echo("ctxpack: over budget: " + "; ".join(over), err=True)
        sys.exit(1)


@main.command("lint")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
@click.option("--fix", is_flag=True, help="Apply the suggested .dockerignore edits (shows the diff first).")
@click.option("--allow-secrets", is_flag=True, help="Report likely secrets as info instead of errors.")
@_handle_errors
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
        click.echo(_json({"ignore_file": report.ignore_file, "findings": [f.to_json() for f in report.findings]}))
    else:
        for f in report.findings:
            where = f"{f.file}:{f.line}" if f.line else (f.path or f.file or "")
            sev = _styled(f.severity, fg={"error": "red", "warning": "yellow"}.get(f.severity, "blue"))
            click.echo(f"{where}: {sev}: {f.message} [{f.kind}]")
            click.echo(f"    fix: {f.fix}")
        if not report.findings:
            click.echo("no findings")
    sys.exit(1 if report.errors else 0)


@main.command("pack")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@click.option("-o", "--output", help="Write the tar to FILE ('-' for stdout, the default when stdout is not a terminal).")
@click.option("--compress", type=click.Choice(["none", "gzip", "zstd"]), default="none", show_default=True)
@click.option("--level", type=int, help="Compression level (gzip 1-9, zstd 1-22).")
@click.option("--reproducible", is_flag=True, help="Deterministic tar: mtimes clamped to SOURCE_DATE_EPOCH (or 0), hard links as files.")
@click.option("--snapshot", "take_snapshot", is_flag=True, help="Also record a snapshot for `ctxpack diff`.")
@_minimal_options
@_handle_errors
def pack_command(
    directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
    output: str | None, compress: str, level: int | None, reproducible: bool, take_snapshot: bool,
    minimal: bool, target: str | None, build_args: tuple[str, ...],
) -> None:
    """Write the build context as the tar a builder receives.

    `ctxpack pack . | docker build -` works.  Exit codes: 0 written, 1 a file
    changed or vanished beyond retry, 2 usage or input error, 3 output error.
    """
    from ctxpack.tar.writer import PackOptions, pack
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
    ctx = _open(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    progress = _Progress()

    def warn(msg: str) -> None:
        click.echo(f"ctxpack: warning: {msg}", err=True)

    try:
        if to_stdout:
            sys.stdout.flush()
            stats = pack(ctx, FdSink(sys.stdout.fileno()), opts, warn=warn, progress=progress)
        else:
            assert output is not None
            with open_output(output) as sink:
                stats = pack(ctx, sink, opts, warn=warn, progress=progress)
    finally:
        progress.done()
    if take_snapshot:
        from ctxpack.index.snapshots import snapshot

        snapshot(ctx)
    if sys.stderr.isatty() and progress.shown:
        click.echo(f"ctxpack: {stats.entries:,} entries, {format_size(stats.bytes)} in {stats.elapsed:.1f}s", err=True)


@main.command("fingerprint")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@_minimal_options
@click.option("--json", "as_json", is_flag=True, help="Print {fingerprint, entries, files, bytes, hashed, hashed_bytes}.")
@_handle_errors
def fingerprint_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
                        minimal: bool, target: str | None, build_args: tuple[str, ...], as_json: bool) -> None:
    """Print one stable digest of exactly what the build context contains.

    Same content, same fingerprint (fresh clones included); mtimes and
    ownership do not count.  Recipe: docs/fingerprint.md.
    """
    from ctxpack.index.snapshots import fingerprint

    ctx = _open(directory, dockerfile, dialect, ignore_file, minimal, target, build_args)
    fp = fingerprint(ctx)
    for note in fp.notes:
        click.echo(f"ctxpack: note: {note}", err=True)
    click.echo(_json(fp.to_json()) if as_json else fp.fingerprint)


@main.command("snapshot")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@_handle_errors
def snapshot_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None) -> None:
    """Record the context's entries and digests; `ctxpack diff` compares with it."""
    from ctxpack.index.snapshots import snapshot

    ctx = _open(directory, dockerfile, dialect, ignore_file)
    fp = snapshot(ctx)
    for note in fp.notes:
        click.echo(f"ctxpack: note: {note}", err=True)
    click.echo(fp.fingerprint)


@main.command("diff")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@click.option("--json", "as_json", is_flag=True, help='Print {"since", "added", "removed", "modified"}.')
@click.option("--exit-code", is_flag=True, help="Exit 1 when there are changes (like git diff).")
@_handle_errors
def diff_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None, as_json: bool, exit_code: bool) -> None:
    """List entries added, removed and modified since the last snapshot."""
    from ctxpack.index.snapshots import diff

    ctx = _open(directory, dockerfile, dialect, ignore_file)
    delta = diff(ctx)
    if delta is None:
        raise InputError(f"no snapshot of {ctx.root} ({ctx.dialect.value}) yet: run 'ctxpack snapshot' or 'ctxpack pack --snapshot' first")
    if as_json:
        click.echo(_json(delta.to_json()))
    else:
        for sign, items in (("+", delta.added), ("-", delta.removed), ("M", delta.modified)):
            for c in items:
                extra = f" ({c.what})" if c.what else ""
                click.echo(f"{sign} {c.path}{extra}  {format_size(c.bytes)}")
        if not delta.changed:
            click.echo("no changes since the last snapshot", err=True)
    sys.exit(1 if exit_code and delta.changed else 0)


@main.group("cache")
def cache_group() -> None:
    """Show or empty ctxpack's index of digests and snapshots."""


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True)
@_handle_errors
def cache_info(as_json: bool) -> None:
    """Where the index is and what it holds."""
    from ctxpack.index.store import Index

    with Index() as idx:
        info = idx.info()
    if as_json:
        click.echo(_json(info.__dict__))
    else:
        click.echo(f"{info.path}: {format_size(info.bytes)}, {info.contexts} contexts, {info.files:,} files, {info.snapshots} snapshots")


@cache_group.command("clear")
@_handle_errors
def cache_clear() -> None:
    """Empty the index (digests are recomputed on the next run)."""
    from ctxpack.index.store import Index

    with Index() as idx:
        idx.clear()
        click.echo(f"cleared {idx.path}")


if __name__ == "__main__":  # pragma: no cover
    main()
