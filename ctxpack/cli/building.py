"""``build``: stream the exact context to a Docker engine and build.

Exit codes: 0 built; 1 the build failed (the engine's message, a failing
RUN's exit code); 2 usage or input error; 5 the engine could not be
reached, refused the API version, or dropped the connection; 130
interrupted (the build is cancelled on the engine).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar, cast

import click

from ctxpack.cli.common import handle_errors, say, timeout_option
from ctxpack.errors import InputError, OutputError


F = TypeVar("F", bound=Callable[..., Any])


def _flag_error(value: str, flag: str, why: str) -> InputError:
    """The docker CLI's words for a flag value it refuses before connecting."""
    return InputError(f'invalid argument "{value}" for "{flag}" flag: {why}')


def _build_args(items: tuple[str, ...]) -> dict[str, str | None]:
    """``K=V``, or ``K`` alone: the environment's value, or declared-but-unset
    (``null``) when the environment has none, as ``docker build`` does."""
    from ctxpack.engine.reference import env_error

    out: dict[str, str | None] = {}
    for item in items:
        why = env_error(item)
        if why is not None:
            raise _flag_error(item, "--build-arg", why)
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
        else:
            out[item] = os.environ.get(item)
    return out


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise click.UsageError(f"invalid label {item!r}: the key is empty")
        out[k] = v
    return out


@dataclass(frozen=True)
class BuildFlags:
    """The options ``build`` and ``watch --build`` share (:func:`build_options`)."""

    tags: tuple[str, ...]
    labels: tuple[str, ...]
    no_cache: bool
    pull: bool
    network: str | None
    builder: str | None
    full: bool
    compress: str | None
    level: int | None
    progress: str
    iidfile: str | None
    no_snapshot: bool
    no_session: bool
    secrets: tuple[str, ...]
    ssh: tuple[str, ...]
    host: str | None
    docker_context: str | None
    timeout: float | None

    def check(self) -> None:
        """What is refused before anything is read or connected."""
        if self.level is not None and self.compress in (None, "none"):
            raise click.UsageError("--level needs --compress gzip or zstd")
        if self.level is not None:
            lo, hi = {"gzip": (1, 9), "zstd": (1, 22)}[self.compress or "gzip"]
            if not lo <= self.level <= hi:
                raise click.UsageError(f"--level {self.level} is not valid with --compress {self.compress}")

    def given(self) -> list[str]:
        """The flags given (for a command where they need another one, such as ``watch --build``)."""
        flag = {"tags": "--tag", "labels": "--label", "secrets": "--secret", "docker_context": "--context"}
        return [flag.get(f.name, f"--{f.name.replace('_', '-')}") for f in dataclasses.fields(self)
                if f.name != "progress" and getattr(self, f.name) not in (None, False, ())] + (
            ["--progress"] if self.progress != "auto" else [])

    def options(self, *, dockerfile: str | None, ignore_file: str | None, target: str | None,
                build_args: tuple[str, ...], platform: str | None, minimal: bool = False,
                stdin: bytes | None = None, quiet: bool = False) -> Any:
        """The :class:`~ctxpack.engine.builder.BuildOptions` these flags and
        the context's own options make (``minimal``: --minimal was given)."""
        from ctxpack.engine.builder import BuildOptions

        secret_specs: list[object] = []
        ssh_specs: list[object] = []
        if self.secrets or self.ssh:  # the session's code loads only when needed (start-up time)
            from ctxpack.engine.session import parse_secret, parse_ssh

            secret_specs = [parse_secret(x) for x in self.secrets]
            ssh_specs = [parse_ssh(x) for x in self.ssh]
        if minimal and self.full:
            raise click.UsageError("--full and --minimal exclude each other")
        return BuildOptions(
            tags=self.tags, dockerfile=dockerfile, stdin_dockerfile=stdin, ignore_file=ignore_file, target=target,
            build_args=_build_args(build_args), labels=_labels(self.labels), no_cache=self.no_cache, pull=self.pull,
            platform=platform, network=self.network, builder=self.builder,
            minimal=True if minimal else False if self.full else None, compress=self.compress, level=self.level,
            quiet=quiet, record_snapshot=not self.no_snapshot, session=False if self.no_session else None,
            secrets=secret_specs, ssh=ssh_specs,
        )


_FLAGS = [
    click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="Name the image (repeatable)."),
    click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Image label (repeatable)."),
    click.option("--no-cache", is_flag=True, help="Do not use the build cache."),
    click.option("--pull", is_flag=True, help="Always try to pull newer versions of the base images."),
    click.option("--network", help="Network mode for RUN (e.g. none, host)."),
    click.option("--builder", type=click.Choice(["classic", "buildkit"]), help="Builder (default: DOCKER_BUILDKIT if set, else the engine's)."),
    click.option("--full", is_flag=True, help="Send everything the ignore rules let through."),
    click.option("--compress", type=click.Choice(["none", "gzip", "zstd"]),
                 help="Compress the upload (default: none on a local socket, zstd where the engine accepts it, "
                      "else gzip -1)."),
    click.option("--level", type=int, help="Compression level (gzip 1-9, zstd 1-22)."),
    click.option("--progress", type=click.Choice(["auto", "plain", "tty", "json"]), default="auto", show_default=True,
                 help="Output: auto (live on a terminal), plain, tty, or json (the engine's messages, one per line)."),
    click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID to this file."),
    click.option("--no-snapshot", is_flag=True, help="Do not record the snapshot `ctxpack diff` compares against."),
    click.option("--no-session", is_flag=True,
                 help="BuildKit: send the context as a tar instead of through a BuildKit session."),
    click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=FILE|env=VAR",
                 help="BuildKit secret for RUN --mount=type=secret (repeatable; needs the session)."),
    click.option("--ssh", "ssh", multiple=True, metavar="default|ID[=SOCKET]",
                 help="ssh agent for RUN --mount=type=ssh (repeatable; needs the session)."),
    click.option("-H", "--host", help="Engine to use (unix://, tcp://, ssh://), as docker -H."),
    click.option("--context", "docker_context", help="Docker context to use, as docker --context."),
    timeout_option,
]
_FLAG_NAMES = [f.name for f in dataclasses.fields(BuildFlags)]


def build_options(fn: F) -> F:
    """The build options ``build`` and ``watch --build`` share, defined once:
    the command gets them as one ``flags: BuildFlags`` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        flags = BuildFlags(**{k: kw.pop(k) for k in _FLAG_NAMES})
        return fn(*args, flags=flags, **kw)

    out: Any = wrapper
    for opt in reversed(_FLAGS):
        out = opt(out)
    return cast(F, out)


@click.command("build")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("-f", "--file", "dockerfile", help="Dockerfile path, relative to the current directory ('-' for stdin).")
@click.option("--target", help="Build this stage.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]",
              help="Build-time variable (repeatable); KEY alone takes the value from the environment.")
@click.option("--platform", help="Target platform (os/arch[/variant]).")
@click.option("--minimal", is_flag=True,
              help="Only what the Dockerfile reads, even where that assumes (ONBUILD of a base image not yet pulled).")
@click.option("--ignore-file", type=click.Path(dir_okay=False), help="Use this ignore file instead of .dockerignore.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--print-endpoint", is_flag=True, help="Say which engine would be used and why, then exit.")
@build_options
@handle_errors
def build_command(
    directory: str, dockerfile: str | None, target: str | None, build_args: tuple[str, ...], platform: str | None,
    minimal: bool, ignore_file: str | None, quiet: bool, print_endpoint: bool, flags: BuildFlags,
) -> None:
    """Build an image from DIRECTORY, sending exactly its context.

    The context follows the builder's own rules (BuildKit's or the classic
    builder's), minimal where the Dockerfile analysis is sure; BuildKit
    builds run a BuildKit session where the engine supports one
    (--no-session: a tar body).  The engine
    is the docker CLI's: -H, --context, DOCKER_HOST, DOCKER_CONTEXT, the
    current context.  Exit codes: 0 built, 1 build failed, 2 usage or input
    error, 5 engine unreachable / API version refused / connection dropped,
    7 engine timed out (--timeout), 130 interrupted.
    """
    from ctxpack.engine.builder import build
    from ctxpack.engine.client import Engine
    from ctxpack.engine.hosts import resolve_endpoint
    from ctxpack.engine.progress import make_renderer
    from ctxpack.tar.sinks import open_output

    from ctxpack.cli import common
    from ctxpack.cli.warm import warm

    # Nothing but stdout and stderr is left to finish when this returns: the
    # session's threads are joined, the index and the --iidfile closed.
    common.QUICK_EXIT = True
    flags.check()
    tags, iidfile, progress, timeout = flags.tags, flags.iidfile, flags.progress, flags.timeout
    if print_endpoint:
        click.echo(resolve_endpoint(flags.host, flags.docker_context).describe())
        return
    _check_before_connecting(directory, dockerfile, tags, iidfile)
    stdin = sys.stdin.buffer.read() if dockerfile == "-" else None
    opts = flags.options(dockerfile=dockerfile, ignore_file=ignore_file, target=target, build_args=build_args,
                         platform=platform, minimal=minimal, stdin=stdin, quiet=quiet)
    out = sys.stdout
    err = sys.stderr
    renderer = make_renderer(progress, quiet=quiet, out=out, err=err)

    def warn(msg: str) -> None:
        say("warning", f"{msg}")

    try:
        engine = Engine.connect(flags.host, flags.docker_context, timeout=timeout)
        try:
            result = build(directory, engine, opts, on_message=renderer.message, on_upload=renderer.upload,
                           on_note=renderer.note, warn=warn, walked=lambda ctx: warm("entries", ctx))
        finally:
            renderer.finish()
            engine.close()
    except KeyboardInterrupt:
        click.echo("\nctxpack: interrupted", err=True)
        sys.exit(130)
    if iidfile:
        try:
            with open_output(iidfile) as sink:
                sink.write(result.image_id.encode())
        except OutputError as e:  # it names the temporary file beside iidfile: name the user's path
            raise OutputError(f"--iidfile {iidfile}: cannot write the image ID ({e})") from None
    if progress == "json" and not quiet:  # -q: only the ID, whatever --progress says (as docker build)  # the engine's messages carried the ID already; then ctxpack's own record
        aux = {"image_id": result.image_id, "elapsed": round(result.elapsed, 3),
               "phases": {k: round(v, 3) for k, v in result.phases.items()},
               "snapshot_recorded": result.snapshot_recorded, "minimal": result.minimal}
        click.echo(json.dumps({"id": "ctxpack.build", "aux": aux}))
        return
    if not quiet:
        tagged = f" ({', '.join(result.tags)})" if result.tags else ""
        click.echo(f"ctxpack: built {result.image_id}{tagged} in {result.elapsed:.1f}s", err=True)
    if quiet or not out.isatty():  # on a terminal the line above has said it already
        click.echo(result.image_id)


def _check_before_connecting(directory: str, dockerfile: str | None, tags: tuple[str, ...],
                             iidfile: str | None) -> None:
    """What the docker CLI refuses before it connects: a bad -t, no
    Dockerfile; and an --iidfile that could not be written after the build."""
    from ctxpack.context import require_dockerfile
    from ctxpack.engine.reference import reference_error

    for tag in tags:
        why = reference_error(tag)
        if why is not None:
            raise _flag_error(tag, "-t, --tag", why)
    if os.path.isdir(directory):  # a missing directory: open_context's own error
        require_dockerfile(directory, dockerfile)
    if iidfile:
        parent = os.path.dirname(os.path.abspath(iidfile))
        if not os.path.isdir(parent):
            raise OutputError(f"--iidfile {iidfile}: no such directory {parent}")
