"""What every command shares: error handling and exit codes, the context
options, opening a context, and small output helpers.

Light on purpose (every command loads it): the context, the matcher and
the walker are imported where a context is opened, not here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ctxpack.errors import ClosedPipeError, ContextError, CtxpackError
from ctxpack.ignore.dialect import Dialect
from ctxpack.printing import Chunk, diagnostic, notes_chunks
from ctxpack.printing import printable as printable, to_json as to_json  # the commands' names for them
from ctxpack.units import format_size

if TYPE_CHECKING:
    from ctxpack.context import BuildContext


F = TypeVar("F", bound=Callable[..., Any])


def fsbytes(name: str) -> bytes:
    # Names keep undecodable bytes as surrogate escapes: write the original bytes.
    return name.encode("utf-8", "surrogateescape")


def say(kind: str, message: str) -> None:
    """One diagnostic line on stderr: ``ctxpack: KIND: message`` (escaped)."""
    echo_chunks([diagnostic(kind, message)])


def echo_chunks(chunks: "list[Chunk]") -> None:
    """Print what :mod:`ctxpack.printing` rendered, a ``click.echo`` per chunk."""
    for stream, text in chunks:
        click.echo(text, err=stream == 2, nl=False)


def fail(message: str, code: int, hint: str | None = None) -> None:
    say("error", message)
    if hint:
        say("hint", hint)
    sys.exit(code)


def show_click_error(e: click.ClickException) -> None:
    """click's own errors in ctxpack's one style; usage errors get the
    command's usage and where its help is as a hint."""
    message = e.format_message().strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]  # "No such option" -> "no such option", as ours read
    say("error", message)
    if isinstance(e, click.UsageError) and e.ctx is not None:
        usage = e.ctx.get_usage().replace("Usage: ", "", 1)
        say("hint", f"usage: {usage}; see '{e.ctx.command_path} --help'")


def _stdout_gone() -> None:
    # The reader went away: say nothing more there, and keep Python from
    # complaining about flushing stdout at exit.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def quiet_exit(code: int) -> None:
    _stdout_gone()
    sys.exit(code)


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Around a report whose command decides its exit status afterwards
    (``size --max-size``, ``lint``): a reader that goes away (``| head``
    under ``pipefail``) ends the report, not the command, which goes on to
    its messages on stderr and its own exit status (:func:`handle_errors`
    would exit 0 at once)."""
    try:
        yield
    except BrokenPipeError:
        _stdout_gone()


#: Set by a command whose process may end with :func:`exit_now` once it has
#: finished (``build``): nothing of it is left to flush or join but stdout
#: and stderr.  Only the command line's own process entry uses it
#: (:func:`ctxpack.cli.quick_exit`), never a caller that invokes the group
#: (tests, ``CliRunner``).
QUICK_EXIT = False


def exit_now(code: object) -> None:
    """End the process with ``code`` (``SystemExit``'s: ``None``, an int, or
    a message) after flushing stdout and stderr, without the interpreter's
    orderly shutdown: after a session build of the 100k-file bench tree it
    collects ~34k objects left in reference cycles (the session, its
    listings) and tears every module down, 0.04-0.09 s from the command's
    end to the process's end measured against ~0.01 s this way
    (``bin/ctxpack`` does the same for a watcher's answer)."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe or stream: nothing more can be said there
    os._exit(status)


def handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CtxpackError as e:
            if isinstance(e, ClosedPipeError):
                quiet_exit(e.exit_code)
            fail(str(e), e.exit_code, e.hint)
        except BrokenPipeError:
            # The reader went away (`ctxpack ls | head`): not an error of ours.
            sys.stderr.close()
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


def context_options(fn: F) -> F:
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


def timeout_option(fn: F) -> F:
    """``--timeout SECONDS`` for the commands that talk to an engine."""
    return click.option(
        "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
        help="Longest wait to connect to the engine and longest silence while it answers, a build's output "
             "included (default: $DOCKER_CLIENT_TIMEOUT, else 30 s to connect and no limit on a build's output); "
             "past it: exit 7.",
    )(fn)


def minimal_options(fn: F) -> F:
    fn = click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                      help="Build argument for --minimal (repeatable).")(fn)
    fn = click.option("--platform", metavar="OS/ARCH[,...]",
                      help="Platform(s) built, for --minimal's TARGETARCH etc. (default: this machine's).")(fn)
    fn = click.option("--target", help="Build stage for --minimal (default: the last).")(fn)
    fn = click.option("--minimal", is_flag=True, help="Only what the Dockerfile can read (COPY/ADD/RUN --mount sources).")(fn)
    return fn


def parse_build_args(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
        elif item in os.environ:
            out[item] = os.environ[item]  # as docker: --build-arg NAME takes the environment's value
    return out


def open_ctx(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
          minimal: bool = False, target: str | None = None, build_args: tuple[str, ...] = (),
          describing: bool = True, platform: str | None = None) -> "BuildContext":
    """Open the context and print its notes and warnings.  ``describing``:
    the command only describes the tree (a missing Dockerfile is a note);
    otherwise the caller decides what is an error."""
    from ctxpack.context import open_context

    stdin = sys.stdin.buffer.read() if dockerfile == "-" else None
    if (target or build_args or platform) and not minimal:
        raise click.UsageError("--target, --build-arg and --platform only make sense with --minimal")
    ctx = open_context(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, stdin_dockerfile=stdin,
                       minimal=minimal, target=target, build_args=parse_build_args(build_args), platform=platform)
    # The sources to warn about come from the Dockerfile's analysis, which
    # only a --minimal context has: without one, the explainer (and with it
    # the audit) is not imported, some ms of every fingerprint/diff/pack.
    warnings: list[str] = []
    if ctx.analysis is not None:
        from ctxpack import explainer as api

        warnings = api.source_warnings(ctx)
    show_notes(ctx.notes, warnings, describing=describing, dockerfile=ctx.dockerfile_path is not None)
    return ctx


def show_notes(notes: "tuple[str, ...] | list[str]", warnings: list[str], *, describing: bool = True,
               dockerfile: bool = True) -> None:
    """A context's notes and warnings on stderr, as :func:`open_ctx` says
    them (also for an answer from a running watcher)."""
    echo_chunks(notes_chunks(notes, warnings, describing=describing, dockerfile=dockerfile))


class Unreadable:
    """Collects the paths the builder could not read, for the commands that
    describe the upload (``ls``, ``size``): they go on with the rest and
    report every such path after their output, then exit 2 (the build would
    fail, as ``pack`` does at the first one)."""

    def __init__(self) -> None:
        self.errors: dict[str, ContextError] = {}

    def __call__(self, error: ContextError) -> None:
        self.errors.setdefault(error.path or str(error), error)  # the classic validation and walk meet it twice

    def to_json(self, root: str) -> list[dict[str, str]]:
        """``[{"path": relative to the context, "error": the builder's message}]``."""
        return [{"path": os.path.relpath(p, root), "error": str(e)} for p, e in self.errors.items()]

    def report(self) -> None:
        for e in self.errors.values():
            say("error", f"docker build would fail: {e}")
        if self.errors:
            sys.exit(2)


class ProgressLine:
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


def styled(text: str, **kw: Any) -> str:
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return click.style(text, **kw)


def fit(path: str, width: int) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]

