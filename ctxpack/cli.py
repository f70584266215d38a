"""The ``ctxpack`` command line: parses arguments, calls the library, formats.

Exit codes: 0 success; 2 usage or input error (bad pattern, unreadable file,
missing directory); other codes as each command documents.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from . import api
from .context import Dialect, open_context
from .errors import CtxpackError

F = TypeVar("F", bound=Callable[..., Any])


def _fsbytes(name: str) -> bytes:
    # Names keep undecodable bytes as surrogate escapes: write the original bytes.
    return name.encode("utf-8", "surrogateescape")


def _fail(message: str, code: int) -> None:
    click.echo(f"ctxpack: error: {message}", err=True)
    sys.exit(code)


def _handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CtxpackError as e:
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


@main.command("ls")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@_context_options
@click.option("--excluded", is_flag=True, help="List what was left out, with the deciding rule.")
@click.option("-0", "null", is_flag=True, help="Separate entries with NUL instead of newline.")
@_handle_errors
def ls_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None, excluded: bool, null: bool) -> None:
    """List the context's entries in upload order (directories end with /)."""
    ctx = open_context(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file)
    for note in ctx.notes:
        click.echo(f"ctxpack: note: {note}", err=True)
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


if __name__ == "__main__":  # pragma: no cover
    main()
