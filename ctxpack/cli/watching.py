"""``watch``: keep a context warm and print each settled delta.

While it runs, ``fingerprint``, ``diff``, ``ls``, ``size`` and ``pack`` on
the same context ask it (:mod:`ctxpack.watch.client`, through
:mod:`ctxpack.cli.warm`) instead of walking.
"""

from __future__ import annotations

import io
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ctxpack.cli.building import build_options
from ctxpack.cli.common import context_options, handle_errors, minimal_options, open_ctx, parse_build_args
from ctxpack.errors import TransportError
from ctxpack.units import format_size

if TYPE_CHECKING:
    from ctxpack.cli.building import BuildFlags
    from ctxpack.context import BuildContext


@click.command("watch")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@context_options
@minimal_options
@click.option("--json", "json_lines", is_flag=True,
              help="One JSON object per settled delta, one per line: generation, bytes (regular files), "
                   "files and dirs ({added, modified, removed} counts), added/removed/modified "
                   "[{path, kind, bytes(, change)}] (kind: file, dir, symlink, hardlink, fifo, char, block; "
                   "bytes 0 for a dir), meta [{path, change}] (the Dockerfile or an ignore file edited), events, "
                   "elapsed, rescan, instructions. --build adds {\"build\": {...}} lines: started; image, elapsed; "
                   "error, exit_code, log (the failing step's lines); cancelled, why.")
@click.option("--build", "rebuild", is_flag=True,
              help="Build on start and after each settled change, the Dockerfile's and ignore files' own edits "
                   "included (as `ctxpack build`, with its options below), cancelling a build still running. "
                   "The watched context is the build's: the builder's rules (--builder, else the engine's "
                   "default) and its minimal selection where the build sends one. --target, --build-arg and "
                   "--platform are then the build's (no --minimal needed).")
@build_options
@handle_errors
def watch_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
                  minimal: bool, target: str | None, build_args: tuple[str, ...], platform: str | None, json_lines: bool,
                  rebuild: bool, flags: "BuildFlags") -> None:
    """Watch the context and print what changes in it, as it settles.

    Watches only directories the context can contain (never an excluded
    directory no exception reaches, such as node_modules), coalesces bursts,
    and re-reads the rules when .dockerignore or the Dockerfile changes.
    While it runs, `ctxpack fingerprint`, `diff`, `ls`, `size`, `pack` and
    `build` on this context answer from its state instead of walking.  Stop
    with Ctrl-C.  The build options apply with --build only.
    """
    from ctxpack.context import open_context
    from ctxpack.watch.channel import Inputs, Server
    from ctxpack.watch.client import spec
    from ctxpack.watch.watcher import Watcher

    if dockerfile == "-":
        raise click.UsageError("watch needs a Dockerfile it can re-read: -f - (stdin) is not supported")
    plan: _WatchPlan | None = None
    if rebuild:
        explicit = click.get_current_context().get_parameter_source("dialect") is not ParameterSource.DEFAULT
        plan = _WatchPlan.make(directory, dockerfile, dialect if explicit else None, ignore_file, minimal, target,
                               build_args, platform, flags)
        try:
            plan.decide()
        except TransportError as e:  # each build asks again; until one gets an answer, watch these rules
            plan.dialect = flags.builder or dialect
            plan.why = f"the engine did not answer ({e}); asked again before each build"
    else:
        given = flags.given()
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --build")
    first = [True]
    given_spec = None
    if plan is None:  # (watch --build: the build's context may change with the builds; clients open it)
        given_spec = spec(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, minimal=minimal,
                          target=target, build_args=parse_build_args(build_args), platform=platform)
    inputs = Inputs(given_spec) if given_spec is not None else None  # lets clients ask before opening the context

    def open_it() -> "BuildContext":
        mini, tgt, args, plat = minimal, target, build_args, platform
        rules = dialect
        if plan is not None:  # the build's context; --target etc. are build options, and the analysis's when minimal
            rules, mini, plat = plan.dialect, plan.minimal, plan.platform
            tgt, args = (target, build_args) if mini else (None, ())
        if first[0]:
            first[0] = False
            return open_ctx(directory, dockerfile, rules, ignore_file, mini, tgt, args, platform=plat)
        return open_context(directory, dockerfile=dockerfile, dialect=rules, ignore_file=ignore_file,
                            minimal=mini, target=tgt, build_args=parse_build_args(args), platform=plat)

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
        if builds is not None:
            builds.wake()
        if builds is not None and builds.building:
            raise KeyboardInterrupt  # cancels the build in flight (ctxpack.engine.builder.build)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    if plan is not None:
        old[signal.SIGUSR1] = signal.getsignal(signal.SIGUSR1)
        builds = _Builds()
    server = None
    try:
        runner = threading.Thread(target=_run_quietly, args=(watcher, stopping), name="ctxpack-watch", daemon=True)
        runner.start()
        while not watcher.ready.wait(0.2):
            if stopping.is_set():
                break
        if watcher.failed is not None:
            raise watcher.failed
        if not stopping.is_set():
            server = Server(watcher, watcher.ctx.root, inputs=inputs)
            fp = watcher.first
            n, ne = watcher.watches, fp.entries if fp else 0
            click.echo(
                f"ctxpack: watching {watcher.ctx.root}: {ne:,} entr{'y' if ne == 1 else 'ies'}, "
                f"{format_size(fp.bytes if fp else 0)}; {n:,} director{'y' if n == 1 else 'ies'} watched"
                + (f" ({plan.describe()})" if plan is not None else ""), err=True)
        if builds is not None and plan is not None and not stopping.is_set():
            builds.run(directory, plan, runner, stopping, json_lines, watcher)
        while runner.is_alive() and not stopping.is_set():
            stopping.wait(0.5)
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


@dataclass
class _WatchPlan:
    """What ``watch --build`` decides asking the engine, as ``ctxpack build``
    does (:meth:`decide`: at the start, or before a build while the engine
    has not answered yet): the builder (so the dialect watched), whether
    the build sends a minimal context (so whether the watcher watches only
    that), and the options every build gets."""

    directory: str
    dockerfile: str | None
    given_dialect: str | None
    ignore_file: str | None
    target: str | None
    build_args: tuple[str, ...]
    flags: "BuildFlags"
    opts: Any
    dialect: str = "buildkit"
    minimal: bool = False
    platform: str | None = None
    why: str = ""
    decided: bool = False

    @classmethod
    def make(cls, directory: str, dockerfile: str | None, given_dialect: str | None, ignore_file: str | None,
             minimal: bool, target: str | None, build_args: tuple[str, ...], platform: str | None,
             flags: "BuildFlags") -> "_WatchPlan":
        """Check the options as ``ctxpack build`` does before it connects."""
        from ctxpack.cli.building import _check_before_connecting

        flags.check()
        if flags.builder and given_dialect and given_dialect != flags.builder:
            raise click.UsageError(f"--dialect {given_dialect} and --builder {flags.builder} disagree: watch --build "
                                   "watches the build's own rules (drop --dialect)")
        _check_before_connecting(directory, dockerfile, flags.tags, flags.iidfile)
        opts = flags.options(dockerfile=dockerfile, ignore_file=ignore_file, target=target, build_args=build_args,
                             platform=platform, minimal=minimal)
        return cls(directory, dockerfile, given_dialect, ignore_file, target, build_args, flags, opts)

    def describe(self) -> str:
        return f"the {self.dialect} builder's context{', minimal' if self.minimal else ''}: {self.why}"

    def decide(self) -> None:
        """Ask the engine (raises its :class:`~ctxpack.errors.TransportError`)."""
        import dataclasses

        from ctxpack.context import open_context
        from ctxpack.engine.builder import choose_builder, engine_platform, minimize
        from ctxpack.engine.client import Engine

        flags, opts = self.flags, self.opts
        engine = Engine.connect(flags.host, flags.docker_context, timeout=flags.timeout)
        try:
            builder = choose_builder(engine, flags.builder)
            if self.given_dialect is not None and self.given_dialect != builder:
                raise click.UsageError(
                    f"--dialect {self.given_dialect} and the {builder} builder the build runs disagree: watch "
                    f"--build watches the build's own rules (drop --dialect, or give --builder {self.given_dialect})")
            why = "--builder" if flags.builder else "the engine's default builder"
            opts = dataclasses.replace(opts, builder=builder)  # every build runs the builder watched
            watch_minimal, watch_platform = False, None
            if opts.minimal is not False:
                # The build's own decision (ONBUILD triggers and the engine's
                # platform included); the watcher watches that selection only
                # when its own analysis finds the same sources, else the whole
                # context (more rebuilds, never a missed one).
                ctx = open_context(self.directory, dockerfile=self.dockerfile, dialect=builder,
                                   ignore_file=self.ignore_file)
                notes: list[str] = []
                sent = minimize(ctx, engine, opts, notes)
                if sent.analysis is not None and sent.selection is not None:
                    watch_platform = opts.platform or engine_platform(engine)
                    mine = open_context(self.directory, dockerfile=self.dockerfile, dialect=builder,
                                        ignore_file=self.ignore_file, minimal=True, target=self.target,
                                        build_args=parse_build_args(self.build_args), platform=watch_platform)
                    watch_minimal = mine.analysis is not None and mine.selection is not None and \
                        list(mine.analysis.patterns) == list(sent.analysis.patterns)
                why += "; " + ("the minimal context the build sends" if watch_minimal else
                               (notes[-1] if notes else "the whole context the build sends"))
            else:
                why += "; --full"
        finally:
            engine.close()
        self.opts, self.dialect, self.minimal = opts, builder, watch_minimal
        self.platform = watch_platform if watch_minimal else None
        self.why, self.decided = why, True


#: watch --build starts a build once no delta has come for this long (s) ...
BUILD_QUIET = 0.3
#: ... or this long after the first delta, whichever is first.
BUILD_WAIT = 2.0


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

    def _settle(self, stopping: threading.Event) -> None:
        """Wait until no delta has come for :data:`BUILD_QUIET` (at most
        :data:`BUILD_WAIT` in all): a tool that writes in phases (``git
        commit``: objects, index, refs, logs; a copy of a big tree) gives
        several deltas within a second, and each would start a build the
        next one cancels."""
        deadline = time.monotonic() + BUILD_WAIT
        while not stopping.is_set() and time.monotonic() < deadline:
            if not self._wanted.wait(min(BUILD_QUIET, max(0.0, deadline - time.monotonic()))):
                return
            self._wanted.clear()

    def wake(self) -> None:
        """Stopping: the loop waiting for a change looks again now."""
        self._wanted.set()

    def wanted(self) -> None:
        """A change settled (watcher thread): build again, cancelling a build in flight."""
        self._wanted.set()
        if self.building:
            signal.pthread_kill(self._main, signal.SIGUSR1)

    def run(self, directory: str, plan: _WatchPlan, runner: threading.Thread, stopping: threading.Event,
            as_json: bool, watcher: Any) -> None:
        from ctxpack.cli.warm import warm
        from ctxpack.engine.builder import build
        from ctxpack.engine.client import Engine
        from ctxpack.engine.progress import make_renderer
        from ctxpack.errors import BuildCancelledError, BuildFailedError, CtxpackError, OutputError
        from ctxpack.tar.sinks import open_output

        flags = plan.flags
        shown = flags.progress != "auto"  # --progress given: the build's output as `ctxpack build` shows it

        def say(obj: dict[str, object], text: str) -> None:
            if as_json:
                click.echo(json.dumps({"build": obj}, ensure_ascii=False))
            else:
                click.echo(f"ctxpack: {text}", err=True)

        self._wanted.set()  # build once at the start
        first = True
        while runner.is_alive() and not stopping.is_set():
            if not self._wanted.wait(0.5) or stopping.is_set():
                continue
            self._wanted.clear()
            if not first:
                self._settle(stopping)
            first = False
            if not plan.decided:  # the engine did not answer at the start: ask before this build
                before = (plan.dialect, plan.minimal)
                try:
                    plan.decide()
                except TransportError as e:
                    say({"error": str(e), "exit_code": e.exit_code}, f"build failed: {e}")
                    continue
                if (plan.dialect, plan.minimal) != before:
                    watcher.reopen(f"the engine answered: watching {plan.describe()}")
            say({"started": time.strftime("%H:%M:%S")}, "building")
            log = io.StringIO()  # the build's output, kept for a failure's report
            if shown:
                renderer = make_renderer(flags.progress, out=sys.stdout,
                                         err=sys.stderr)
            else:
                renderer = make_renderer("plain", out=log, err=log)
            try:
                engine = Engine.connect(flags.host, flags.docker_context, timeout=flags.timeout)
                try:
                    self.building = True
                    try:
                        result = build(directory, engine, plan.opts, on_message=renderer.message,
                                       on_upload=renderer.upload, on_note=renderer.note if shown else None,
                                       walked=lambda ctx: warm("entries", ctx))
                    finally:
                        self.building = False
                        renderer.finish()
                finally:
                    engine.close()
            except (BuildCancelledError, KeyboardInterrupt):
                if stopping.is_set():
                    say({"cancelled": True, "why": "stopping"}, "build cancelled (stopping)")
                    return
                say({"cancelled": True, "why": "newer changes"}, "build cancelled: newer changes")
                continue
            except CtxpackError as e:
                lines = failing_step(log.getvalue()) if isinstance(e, BuildFailedError) and not shown else []
                if as_json:
                    say({"error": str(e), "exit_code": e.exit_code, "log": lines}, "")
                else:
                    for line in lines:
                        click.echo(f"  | {line}", err=True)
                    say({}, f"build failed: {e}")
                continue
            onbuild = any(n.startswith("ONBUILD triggers of") for n in result.notes)
            if plan.minimal and (not result.minimal or onbuild):
                # The build sent more than the watcher's own analysis reads
                # (a Dockerfile edit it cannot be sure of; a base image's
                # ONBUILD triggers, which only the engine knows): watch all.
                plan.minimal, plan.platform = False, None
                why = "the build read a base image's ONBUILD triggers" if onbuild else "the build sent the whole context"
                plan.why = why
                watcher.reopen(f"{why}: watching the whole context")
            if flags.iidfile:
                try:
                    with open_output(flags.iidfile) as sink:
                        sink.write(result.image_id.encode())
                except OutputError as e:
                    say({"error": f"--iidfile {flags.iidfile}: cannot write the image ID ({e})", "exit_code": 3},
                        f"--iidfile {flags.iidfile}: cannot write the image ID ({e})")
            tagged = f" ({', '.join(result.tags)})" if result.tags else ""
            say({"image": result.image_id, "elapsed": round(result.elapsed, 3)},
                f"built {result.image_id}{tagged} in {result.elapsed:.1f}s")


#: At most this many lines of a failed build's log are repeated.
FAILING_LINES = 40


def failing_step(log: str) -> list[str]:
    """The lines of a build's plain output (:func:`~ctxpack.engine.progress.make_renderer`'s
    ``plain``) that belong to the step that failed: the classic builder's
    from its last ``Step N/M :`` line, BuildKit's those of the vertex that
    reported ``ERROR``; else the log's end.  At most :data:`FAILING_LINES`."""
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("ctxpack: ")]
    vertex = None
    for ln in lines:
        m = re.match(r"#(\d+) ERROR\b", ln)
        if m:
            vertex = m.group(1)
    if vertex is not None:
        picked = [ln for ln in lines if ln.startswith(f"#{vertex} ")]
    else:
        starts = [i for i, ln in enumerate(lines) if re.match(r"Step \d+/\d+ :", ln)]
        picked = lines[starts[-1]:] if starts else lines
    return picked[-FAILING_LINES:]


def _run_quietly(watcher: Any, stopping: threading.Event) -> None:
    try:
        watcher.run()
    except BaseException as e:  # re-raised by watch_command in the main thread
        if watcher.failed is None:
            watcher.failed = e
    finally:
        stopping.set()  # the main thread (waiting, or between builds) stops at once


if __name__ == "__main__":  # pragma: no cover
    sys.exit(watch_command())
