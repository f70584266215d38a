"""``watch``: keep a context warm and print each settled delta.

While it runs, ``fingerprint``, ``diff``, ``ls``, ``size`` and ``pack`` on
the same context ask it (:mod:`ctxpack.watch.client`, through
:mod:`ctxpack.cli.warm`) instead of walking.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from ctxpack.cli.common import context_options, handle_errors, minimal_options, open_ctx, parse_build_args, timeout_option
from ctxpack.units import format_size

if TYPE_CHECKING:
    from ctxpack.context import BuildContext


@click.command("watch")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@context_options
@minimal_options
@click.option("--json", "json_lines", is_flag=True,
              help="One JSON object per settled delta, one per line: generation, bytes, added/removed/modified "
                   "[{path, bytes(, change)}], events, elapsed, rescan, instructions (--build adds {\"build\": ...} lines).")
@click.option("--build", "rebuild", is_flag=True,
              help="Build on start and after each settled change (as `ctxpack build`), cancelling a build still running.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="--build: name the image (repeatable).")
@click.option("-H", "--host", help="--build: the engine to use, as docker -H.")
@click.option("--builder", type=click.Choice(["classic", "buildkit"]), help="--build: builder (default: the engine's).")
@click.option("--network", help="--build: network mode for RUN.")
@timeout_option
@handle_errors
def watch_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
                  minimal: bool, target: str | None, build_args: tuple[str, ...], platform: str | None, json_lines: bool,
                  rebuild: bool, tags: tuple[str, ...], host: str | None, builder: str | None,
                  network: str | None, timeout: float | None) -> None:
    """Watch the context and print what changes in it, as it settles.

    Watches only directories the context can contain (never an excluded
    directory no exception reaches, such as node_modules), coalesces bursts,
    and re-reads the rules when .dockerignore or the Dockerfile changes.
    While it runs, `ctxpack fingerprint`, `diff`, `ls`, `size` and `pack`
    on this context answer from its state instead of walking.  Stop with Ctrl-C.
    """
    from ctxpack.context import open_context
    from ctxpack.watch.channel import Inputs, Server
    from ctxpack.watch.client import spec
    from ctxpack.watch.watcher import Watcher

    if dockerfile == "-":
        raise click.UsageError("watch needs a Dockerfile it can re-read: -f - (stdin) is not supported")
    first = [True]
    given = spec(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, minimal=minimal,
             target=target, build_args=parse_build_args(build_args), platform=platform)
    inputs = Inputs(given) if given is not None else None  # lets clients ask before opening the context

    def open_it() -> "BuildContext":
        if first[0]:
            first[0] = False
            return open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args, platform=platform)
        return open_context(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file,
                            minimal=minimal, target=target, build_args=parse_build_args(build_args), platform=platform)

    def opener() -> "BuildContext":
        return inputs.opening(open_it) if inputs is not None else open_it()

    builds: _Builds | None = None

    def on_delta(s: Any) -> None:
        if builds is not None:
            builds.wanted()
        if json_lines:
            click.echo(json.dumps(s.to_json(), ensure_ascii=False))
            return
        stamp = time.strftime("%H:%M:%S")
        line = f"{stamp} {s.summary()}"
        if s.rescan:
            line += f"  [rescan: {s.rescan}]"
        click.echo(line)
        for label in s.instructions:
            click.echo(f"  affects {label}")

    def on_note(text: str) -> None:
        click.echo(f"ctxpack: {text}", err=True)

    extra = (ignore_file,) if ignore_file else ()
    watcher = Watcher(opener, on_delta=on_delta, on_note=on_note, extra_paths=extra)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        watcher.stop()
        if builds is not None and builds.building:
            raise KeyboardInterrupt  # cancels the build in flight (ctxpack.engine.builder.build)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    if rebuild:
        old[signal.SIGUSR1] = signal.getsignal(signal.SIGUSR1)
        builds = _Builds()
    server = None
    try:
        runner = threading.Thread(target=_run_quietly, args=(watcher,), name="ctxpack-watch", daemon=True)
        runner.start()
        while not watcher.ready.wait(0.2):
            if stopping.is_set():
                break
        if watcher.failed is not None:
            raise watcher.failed
        if not stopping.is_set():
            server = Server(watcher, watcher.ctx.root, inputs=inputs)
            fp = watcher.first
            click.echo(
                f"ctxpack: watching {watcher.ctx.root}: {fp.entries if fp else 0:,} entries, "
                f"{format_size(fp.bytes if fp else 0)}; {watcher.watches:,} directories watched", err=True)
        if builds is not None and not stopping.is_set():
            from ctxpack.engine.builder import BuildOptions

            opts = BuildOptions(tags=tags, dockerfile=dockerfile, ignore_file=ignore_file, target=target,
                                build_args=parse_build_args(build_args), builder=builder, network=network, platform=platform,
                                minimal=True if minimal else None)
            builds.run(directory, opts, host, runner, stopping, json_lines, timeout)
        while runner.is_alive() and not stopping.is_set():
            runner.join(0.5)
    finally:
        watcher.stop()
        if server is not None:
            server.close()
        runner.join(10)
        watcher.close()
        for s, h in old.items():
            signal.signal(s, h)
    if watcher.failed is not None:
        raise watcher.failed


class _Builds:
    """``watch --build``: builds run in the main thread through the library's
    :func:`~ctxpack.engine.builder.build`; a newer change interrupts the one
    in flight the way Ctrl-C does (``KeyboardInterrupt`` inside ``build``,
    which cancels it on the engine), then the next build starts."""

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self.building = False
        self._main = threading.get_ident()
        signal.signal(signal.SIGUSR1, self._interrupt)

    def _interrupt(self, signum: int, frame: object) -> None:
        if self.building:
            self.building = False  # once per build
            raise KeyboardInterrupt

    def wanted(self) -> None:
        """A change settled (watcher thread): build again, cancelling a build in flight."""
        self._wanted.set()
        if self.building:
            signal.pthread_kill(self._main, signal.SIGUSR1)

    def run(self, directory: str, opts: Any, host: str | None, runner: threading.Thread,
            stopping: threading.Event, as_json: bool, timeout: float | None = None) -> None:
        from ctxpack.engine.builder import build
        from ctxpack.engine.client import Engine
        from ctxpack.errors import BuildCancelledError, CtxpackError

        def say(obj: dict[str, object], text: str) -> None:
            if as_json:
                click.echo(json.dumps({"build": obj}, ensure_ascii=False))
            else:
                click.echo(f"ctxpack: {text}", err=True)

        self._wanted.set()  # build once at the start
        while runner.is_alive() and not stopping.is_set():
            if not self._wanted.wait(0.5):
                continue
            self._wanted.clear()
            say({"started": time.strftime("%H:%M:%S")}, "building")
            try:
                engine = Engine.connect(host, timeout=timeout)
                try:
                    self.building = True
                    try:
                        result = build(directory, engine, opts)
                    finally:
                        self.building = False
                finally:
                    engine.close()
            except (BuildCancelledError, KeyboardInterrupt):
                if stopping.is_set():
                    say({"cancelled": True, "why": "stopping"}, "build cancelled (stopping)")
                    return
                say({"cancelled": True, "why": "newer changes"}, "build cancelled: newer changes")
                continue
            except CtxpackError as e:
                say({"error": str(e), "exit_code": e.exit_code}, f"build failed: {e}")
                continue
            tagged = f" ({', '.join(result.tags)})" if result.tags else ""
            say({"image": result.image_id, "elapsed": round(result.elapsed, 3)},
                f"built {result.image_id}{tagged} in {result.elapsed:.1f}s")


def _run_quietly(watcher: Any) -> None:
    try:
        watcher.run()
    except BaseException as e:  # re-raised by watch_command in the main thread
        if watcher.failed is None:
            watcher.failed = e


if __name__ == "__main__":  # pragma: no cover
    sys.exit(watch_command())
