"""``build()``: stream the exact context to an engine and run the build.

The steps, as the docker CLI takes them, with ctxpack's context:

1. ``/_ping``: the API version (min of ours and the engine's) and the
   engine's default builder (``Builder-Version``: 2 is BuildKit).
2. The context in the builder's own dialect (classic ``version=1``:
   ``.dockerignore`` as the CLI applies it; BuildKit ``version=2``: the
   BuildKit rules, applied here because the engine applies none to a tar
   body).  Minimal where the analysis is sure: only what the Dockerfile
   can read; the ONBUILD triggers of external base images are read from
   the engine (``GET /images/NAME/json``), and a base image the engine does
   not have makes the analysis unsure (unless ``minimal=True`` forces it).
3. Compression per connection: none on a local socket (and over ssh to
   this machine: compression there only loads the same cores); on a remote
   link zstd where the engine accepts it (classic builder, Engine ≥ 23,
   API ≥ 1.42), gzip level 1 otherwise (bench/results/build.md: level 6
   cost more time than it saved).
4. ``POST /build`` with the query the docker CLI builds (only what differs
   from the defaults), ``X-Registry-Config`` (the docker config's
   credentials and credential helpers: :mod:`ctxpack.engine.credentials`), and the tar written by the
   packer straight into the socket as chunks — or, for BuildKit where the
   engine supports it, a BuildKit session (``POST /session``, then
   ``/build`` with an empty body; the engine pulls what it needs).
5. The message stream, handed to ``on_message`` as it arrives; the image
   ID from ``aux.ID`` (classic) or ``moby.image.id`` (BuildKit).
6. On success the snapshot ``ctxpack diff`` compares against is recorded:
   fingerprinted on a thread while the engine works, recorded only when
   nothing changed since the upload started (:class:`_Beside`).

Ctrl-C (``KeyboardInterrupt``) closes the connection, asks the engine to
cancel a BuildKit build (``POST /build/cancel?id=BUILDID``) and raises
:class:`~ctxpack.errors.BuildCancelledError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..context import BuildContext, Dialect, open_context
from ..errors import BuildCancelledError, BuildFailedError, CtxpackError, EngineVersionError, InputError
from .client import Engine, version_tuple, zstd_supported
from .credentials import registry_config
from .messages import error_message, exit_code_of, image_id_of, message_error, parse_message, printable

if TYPE_CHECKING:
    from ..walker import Entry

__all__ = ["BuildOptions", "BuildResult", "UploadStats", "build", "build_query", "BUILDERS"]

BUILDERS = ("classic", "buildkit")
#: BuildKit through ``/build`` (``version=2``) needs Engine 18.09's API.
BUILDKIT_MIN_API = "1.39"

Message = dict[str, Any]


@dataclass(frozen=True)
class BuildOptions:
    """What to build.

    ``build_args`` values of ``None`` are declared but unset (sent as JSON
    ``null``, as ``docker build --build-arg NAME`` does when ``NAME`` is not
    in the environment).  ``builder``: ``"classic"``, ``"buildkit"`` or
    ``None`` (the engine's default, or the dialect of a given context).
    ``minimal``: ``None`` only what the Dockerfile reads where the analysis
    is sure, ``True`` minimal even where it assumes (no ONBUILD in a base
    image it cannot see), ``False`` the whole context.  ``compress``:
    ``None`` chosen per connection, else ``none``/``gzip``/``zstd``.
    ``dockerfile``, ``ignore_file`` and ``stdin_dockerfile`` are used when
    ``build()`` opens the context itself (a path was given).  ``session``:
    BuildKit builds run a BuildKit session (:mod:`ctxpack.engine.session`:
    the engine pulls the files it needs) — ``None`` where the engine
    supports it, falling back to a tar body when it refuses the session;
    ``True`` always (an error if refused); ``False`` never.  ``secrets`` and
    ``ssh`` (:class:`~ctxpack.engine.session.SecretSpec`,
    :class:`~ctxpack.engine.session.SshSpec`) need the session.
    """

    tags: Sequence[str] = ()
    dockerfile: str | None = None
    stdin_dockerfile: bytes | None = None
    ignore_file: str | None = None
    target: str | None = None
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    platform: str | None = None
    network: str | None = None
    cache_from: Sequence[str] = ()
    builder: str | None = None
    minimal: bool | None = None
    compress: str | None = None
    level: int | None = None
    quiet: bool = False
    record_snapshot: bool = True
    session: bool | None = None
    secrets: Sequence[Any] = ()
    ssh: Sequence[Any] = ()


@dataclass
class UploadStats:
    """The context upload: ``entries``/``files``/``bytes`` of the tar's
    content sent so far, ``wire_bytes`` of the body as sent (after
    compression), ``seconds`` from the first byte to the last;
    ``total_files``/``total_bytes`` what it will hold in all."""

    entries: int = 0
    files: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    compression: str = "none"
    #: What the whole upload holds (regular files and their bytes), from a
    #: listing beside the packer; ``None`` until it is known.
    total_files: int | None = None
    total_bytes: int | None = None
    #: The uncompressed tar's size from the same listing (headers, padding,
    #: the end blocks; long names' PAX headers not counted): what an
    #: uncompressed upload's wire bytes are measured against.
    total_wire: int | None = None
    #: ``True`` once the last byte is sent.
    done: bool = False
    #: For a session build: what the session served
    #: (:class:`~ctxpack.engine.session.SessionStats`); ``files`` and
    #: ``bytes`` are then the files the engine requested and their bytes.
    session: Any = None

    @property
    def rate(self) -> float:
        """Body bytes per second on the wire."""
        return self.wire_bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BuildResult:
    """What a build gave: ``image_id`` (``sha256:...``), the ``tags`` asked
    for, every engine ``messages`` in order (the JSON objects), and how:
    ``builder``, ``api_version``, ``endpoint``, ``minimal`` (whether the
    minimal context was sent), ``notes`` (decisions worth telling),
    ``upload``, ``elapsed`` seconds, ``build_id`` (BuildKit)."""

    image_id: str
    tags: list[str]
    messages: list[Message]
    builder: str
    api_version: str
    endpoint: str
    minimal: bool
    notes: list[str] = field(default_factory=list)
    upload: UploadStats = field(default_factory=UploadStats)
    elapsed: float = 0.0
    build_id: str | None = None
    #: Whether the snapshot for ``ctxpack diff`` was recorded, and how long
    #: the build waited for it after the engine had finished (it is taken
    #: while the engine works).
    snapshot_recorded: bool = False
    snapshot_wait: float = 0.0
    #: Where the time went, in seconds: ``plan`` (ping, context, analysis,
    #: base-image lookups), ``upload`` (first to last byte), ``engine``
    #: (last byte to the end of the stream), ``snapshot`` (waiting for it).
    phases: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Pieces (pure where possible, so tests can check them one by one)
# --------------------------------------------------------------------------


def build_query(opts: BuildOptions, *, builder: str, dockerfile: str, api_version: str,
                build_id: str | None = None) -> list[tuple[str, str]]:
    """The ``/build`` query as the docker CLI 28 builds it: only values that
    differ from the defaults, keys sorted (Go's ``url.Values.Encode``),
    ``t`` repeated in the order given."""
    q: dict[str, list[str]] = {}
    if opts.build_args:
        q["buildargs"] = [json.dumps(dict(opts.build_args), separators=(",", ":"))]
    if opts.cache_from:
        q["cachefrom"] = [json.dumps(list(opts.cache_from), separators=(",", ":"))]
    q["dockerfile"] = [dockerfile]
    if opts.labels:
        q["labels"] = [json.dumps(dict(opts.labels), separators=(",", ":"))]
    if opts.network and opts.network != "default":
        q["networkmode"] = [opts.network]
    if opts.no_cache:
        q["nocache"] = ["1"]
    if opts.platform:
        if version_tuple(api_version) < (1, 32):
            raise EngineVersionError(f"--platform needs API 1.32; the engine speaks {api_version}")
        q["platform"] = [opts.platform.lower()]
    if opts.pull:
        q["pull"] = ["1"]
    if opts.quiet:
        q["q"] = ["1"]
    if opts.tags:
        q["t"] = list(opts.tags)
    if opts.target:
        q["target"] = [opts.target]
    if builder == "buildkit" and build_id:
        q["buildid"] = [build_id]
    q["version"] = ["2" if builder == "buildkit" else "1"]
    return [(k, v) for k in sorted(q) for v in q[k]]


def builder_from_environment() -> str | None:
    """``DOCKER_BUILDKIT`` as the docker CLI reads it (``strconv.ParseBool``:
    1/t/true turn BuildKit on, 0/f/false the classic builder); ``None`` when
    unset or empty.  CI set-ups commonly export it, and the docker CLI lets it
    decide before anything the engine says."""
    raw = os.environ.get("DOCKER_BUILDKIT", "")
    if raw == "":
        return None
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return "buildkit"
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return "classic"
    # the docker CLI's words (cli/command/cli.go, BuildKitEnabled)
    raise InputError(f"DOCKER_BUILDKIT environment variable expects boolean value: "
                     f'strconv.ParseBool: parsing "{raw}": invalid syntax')


def choose_builder(engine: Engine, requested: str | None) -> str:
    """``requested``, else ``DOCKER_BUILDKIT``, else the engine's default
    (``Builder-Version: 2`` is BuildKit); BuildKit needs API 1.39."""
    if requested is None:
        requested = builder_from_environment()
    if requested is not None and requested not in BUILDERS:
        raise InputError(f"unknown builder {requested!r} (classic or buildkit)")
    ping = engine.ping()
    api = version_tuple(engine.api_version())
    if requested == "buildkit" and api < version_tuple(BUILDKIT_MIN_API):
        raise EngineVersionError(f"BuildKit needs API {BUILDKIT_MIN_API}; the engine at {engine.url} speaks {engine.api_version()}")
    if requested:
        return requested
    if ping.builder_version == "2" and api >= version_tuple(BUILDKIT_MIN_API):
        return "buildkit"
    return "classic"


def choose_compression(engine: Engine, builder: str, requested: str | None) -> tuple[str, str | None]:
    """(compression, note): none on a local socket; zstd where the engine
    accepts it, else gzip; an explicit choice wins (with a note when the
    engine is known not to accept it)."""
    if requested is not None:
        if requested == "zstd" and not zstd_supported(engine.info(), builder="1" if builder == "classic" else "2"):
            refused = zstd_refusal(engine.info(), builder)
            if refused is not None:
                raise InputError(refused)
            return requested, (f"--compress zstd: the engine at {engine.url} (Engine {engine.info().get('Version')}, "
                               f"{builder} builder) is not known to accept zstd contexts")
        return requested, None
    if engine.transport.local:
        return "none", None
    if _ssh_to_this_machine(engine.transport):
        # The same two cores then compress, encrypt, decrypt and unpack:
        # compression only adds work (bench/results/build.md, ssh part).
        return "none", f"{engine.url} is this machine (ssh to a loopback address): no compression"
    if zstd_supported(engine.info(), builder="1" if builder == "classic" else "2"):
        return "zstd", None
    return "gzip", None


def zstd_refusal(info: Mapping[str, Any], builder: str) -> str | None:
    """Why ``--compress zstd`` cannot work on this engine (``GET /version``
    JSON), said before anything is sent, or ``None`` when its version is not
    known (then a note, and the engine decides).  The engine sniffs the
    body: Moby's classic builder knows zstd from Engine 23.0 / API 1.42
    (20.10 answers ``archive/tar: invalid tar header``); BuildKit's remote
    context sniffing knows none (it takes the body for a Dockerfile)."""
    need = "it needs Engine >= 23.0, API >= 1.42 and the classic builder"
    names = " ".join(str(c.get("Name", "")) for c in info.get("Components") or [] if isinstance(c, Mapping))
    if "podman" in names.lower():
        return f"--compress zstd: Podman's Engine API cannot read a zstd context ({need}); use gzip"
    if builder != "classic":
        return f"--compress zstd: the BuildKit builder cannot read a zstd context ({need}); use gzip"
    version, api = str(info.get("Version", "")), str(info.get("ApiVersion", ""))
    if len(version_tuple(version)) < 2 or len(version_tuple(api)) < 2:
        return None
    return f"--compress zstd: Engine {version} (API {api}) cannot read a zstd context ({need}); use gzip"


_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|::1)$")


def _ssh_to_this_machine(transport: Any) -> bool:
    """Whether an ``ssh://`` engine is this machine: ``ssh -G`` (the user's
    ssh configuration applied, as the connection will be) resolves the
    host to a loopback address, with no ProxyCommand or ProxyJump (a proxy
    makes it a real link, whatever the address).  The transport's own
    ``ssh -G`` probe, run once for its cipher choice when it connected: no
    second spawn."""
    from .transport import SshTransport

    if not isinstance(transport, SshTransport):
        return False
    if _LOOPBACK.match(transport.hostname):
        return True
    conf = transport.ssh_config()
    if conf is None:
        return False
    if conf.get("proxycommand", "none") != "none" or conf.get("proxyjump", "none") != "none":
        return False
    return bool(_LOOPBACK.match(conf.get("hostname", "")))


def engine_platform(engine: Engine) -> str | None:
    """The engine's own platform (``linux/arm64``) from ``/version``: what
    it builds for without ``--platform``; ``None`` if it does not say (then
    the analysis takes this machine's)."""
    from ..dockerfile.analysis import normalize_arch

    info = engine.info()
    os_type, arch = info.get("Os"), info.get("Arch")
    if not os_type or not arch:
        return None
    return f"{str(os_type).lower()}/{normalize_arch(str(arch))}"


def minimize(ctx: BuildContext, engine: Engine, opts: BuildOptions, notes: list[str]) -> BuildContext:
    """The minimal context where the analysis is sure (see the module
    docstring); ``ctx`` unchanged where it is not, with the reasons in
    ``notes``."""
    from ..dockerfile.analysis import Selection, analyze

    text = ctx.dockerfile_bytes()
    if text is None:
        notes.append("no Dockerfile to analyse: sending the whole context")
        return ctx
    args = {k: v for k, v in opts.build_args.items() if v is not None}
    source = ctx.dockerfile_shown("-")
    platform = opts.platform or engine_platform(engine)  # what TARGETARCH and the other platform ARGs hold
    an = analyze(text, target=opts.target, build_args=args, dialect=ctx.dialect.value, source=source,
                 platform=platform)
    if not an.whole_context and an.base_images:
        onbuild: dict[str, list[str]] = {}
        missing: list[str] = []
        for image in an.base_images:
            info = engine.inspect_image(image)
            if info is None:
                missing.append(image)
                continue
            triggers = (info.get("Config") or {}).get("OnBuild") or []
            onbuild[image] = [str(t) for t in triggers]
        if missing and opts.minimal is None:
            notes.append("sending the whole context: the engine does not have the base image"
                         f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} yet, so its ONBUILD triggers "
                         "cannot be read (pull it first, or --minimal to assume it has none)")
            return ctx
        if any(onbuild.values()):
            an = analyze(text, target=opts.target, build_args=args, dialect=ctx.dialect.value, source=source,
                         onbuild=onbuild, platform=platform)
            for image, triggers in onbuild.items():
                if triggers:
                    notes.append(f"ONBUILD triggers of {image} (from the engine): " + "; ".join(triggers))
        if missing:
            notes.append(f"--minimal: assuming the base image{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (not on the engine yet) ha{'ve' if len(missing) > 1 else 's'} no ONBUILD triggers")
    if an.whole_context:
        notes.extend(f"sending the whole context: {r}" for r in an.reasons)
        return ctx
    keep = list(an.patterns)
    # A tar body carries the Dockerfile for both builders (BuildKit reads it
    # from the remote context too); the classic daemon also reads .dockerignore.
    keep += [p for p in (ctx.dockerfile, ".dockerignore" if ctx.dialect is Dialect.CLASSIC else None) if p]
    return dataclasses.replace(ctx, analysis=an, selection=Selection(keep, ctx.root))


# --------------------------------------------------------------------------
# build()
# --------------------------------------------------------------------------


@dataclass
class _Plan:
    """What :func:`build` decided before sending anything."""

    ctx: BuildContext
    full_ctx: BuildContext  # the context `ctxpack diff` compares (no --minimal selection)
    builder: str
    api: str
    compression: str
    use_session: bool
    build_id: str | None
    query: list[tuple[str, str]]
    headers: dict[str, str]
    level: int | None = None
    #: A classic build also records the snapshot of the BuildKit rules'
    #: view of the same files (what `ctxpack diff` without --dialect opens),
    #: so that a diff after the build compares with it.
    diff_ctx: BuildContext | None = None
    #: Whether ``ctx`` is final (:func:`_narrow` has run, or had nothing to do).
    narrowed: bool = True


def _plan(ctx: BuildContext | str | os.PathLike[str], engine: Engine, opts: BuildOptions,
          note: Callable[[str], None]) -> _Plan:
    """Builder, context rules, compression, session or tar, query: all
    that ``POST /build`` needs.  The minimal context is :func:`_narrow`'s."""
    from ..walker import dockerfile_name_in_tar

    requested = opts.builder
    if requested is None and isinstance(ctx, BuildContext):
        requested = "buildkit" if ctx.dialect is Dialect.BUILDKIT else "classic"
    builder = choose_builder(engine, requested)
    if requested is None and builder_from_environment() is not None:
        note(f"{builder} builder: DOCKER_BUILDKIT={os.environ['DOCKER_BUILDKIT']}")
    api = engine.api_version()
    diff_ctx: BuildContext | None = None
    if not isinstance(ctx, BuildContext):
        path = ctx
        ctx = open_context(path, dockerfile=opts.dockerfile, dialect=builder, ignore_file=opts.ignore_file,
                           stdin_dockerfile=opts.stdin_dockerfile)
        if builder == "classic" and opts.record_snapshot and opts.stdin_dockerfile is None:
            try:
                diff_ctx = open_context(path, dockerfile=opts.dockerfile, dialect="buildkit",
                                        ignore_file=opts.ignore_file)
            except CtxpackError:
                diff_ctx = None  # the BuildKit rules refuse this context: the classic snapshot only
    elif ctx.dialect.value != builder:
        note(f"the context was opened with the {ctx.dialect.value} rules but the {builder} builder runs the build")
    for n in ctx.notes:
        note(n)
    full_ctx = dataclasses.replace(ctx, analysis=None, selection=None)
    compression, cnote = choose_compression(engine, builder, opts.compress)
    if cnote:
        note(cnote)
    if (opts.secrets or opts.ssh) and (builder != "buildkit" or opts.session is False):
        raise InputError("--secret and --ssh need a BuildKit build with a session")
    use_session = (builder == "buildkit" and opts.session is not False
                   and version_tuple(api) >= version_tuple(BUILDKIT_MIN_API))
    build_id = secrets.token_hex(16) if builder == "buildkit" else None
    # The Dockerfile's name in the tar is the same for the minimal context.
    query = build_query(opts, builder=builder, dockerfile=dockerfile_name_in_tar(ctx), api_version=api,
                        build_id=build_id)
    headers = {"Content-Type": "application/x-tar", "X-Registry-Config": registry_config(warn=note)}
    # gzip chosen for a remote link: level 1 unless asked otherwise.  The
    # compressor is single-threaded; level 6 ran at a third of level 1's
    # speed for a 2-15% smaller body in bench/results/build.md, which cost
    # more time than it saved on every link measured.
    level = opts.level if opts.level is not None or compression != "gzip" or opts.compress else 1
    return _Plan(ctx, full_ctx, builder, api, compression, use_session, build_id, query, headers, level, diff_ctx,
                 narrowed=not (opts.minimal is not False and ctx.selection is None))


def _narrow(plan: _Plan, engine: Engine, opts: BuildOptions, note: Callable[[str], None]) -> None:
    """The minimal context where the analysis is sure (:func:`minimize`),
    into ``plan.ctx``, and the plan's summary note.  A session build runs
    this after ``POST /build`` has gone (see :func:`build`)."""
    if not plan.narrowed:
        found: list[str] = []
        plan.ctx = minimize(plan.ctx, engine, opts, found)
        plan.narrowed = True
        for n in found:
            note(n)
    how = "BuildKit session" if plan.use_session else f"compression {plan.compression}"
    note(f"{plan.builder} builder, API {plan.api}, {'minimal' if plan.ctx.selection is not None else 'whole'} context, "
         f"{how}, engine {engine.url}")


def _context_entries(st: Any) -> int:
    """The entries the engine was shown (the context's listing), as a tar
    build counts its members: the largest ``context`` call's, not their sum
    (the daemon first asks for ``.dockerignore`` alone, then for the whole
    context; trial: 90 counted for 89 entries)."""
    return max((d.entries for d in st.dirs if d.dir_name == "context"), default=0)


def _native_id() -> int:
    import threading

    return threading.get_native_id()


class _Beside:
    """Work on threads while the engine works, off the critical path: the
    upload's total (a listing of what the packer sends, for the progress
    line) and the fingerprint of the context that ``ctxpack diff`` will
    compare against.

    Started once the packer has forked its walker (a fork copies no
    thread, and the packer forks only while it is the process's only
    thread): the totals during the upload, the fingerprint once the body is
    sent (``start(fingerprint=False)`` first, then ``start()``), so that it
    takes neither the GIL nor a core from the upload.  The fingerprint is *recorded* only after a successful build,
    and only when the index proves that nothing in the context changed
    since ``since_ns`` (taken before the packer read anything): then it is
    exactly the state that was sent (:func:`~ctxpack.index.snapshots.record_snapshot`).
    """

    def __init__(self, plan: _Plan, upload: UploadStats, *, snapshot: bool, totals: bool):
        import threading

        self.plan = plan
        self.upload = upload
        self.want_snapshot = snapshot
        self.want_totals = totals
        self.since_ns = time.time_ns()
        self.started = False
        self.fp_started = False
        self.fp: Any = None
        self.fp_error: str | None = None
        self.diff_fp: Any = None
        self.fp_done = threading.Event()
        self.totals_done = threading.Event()
        self._start_lock = threading.Lock()
        self._threading = threading

    def mark(self) -> None:
        """The upload is about to start: changes from now on are too late."""
        self.since_ns = time.time_ns()

    def start(self, *, fingerprint: bool = True) -> None:
        """Start the threads (idempotent); ``fingerprint=False`` starts only
        the totals."""
        with self._start_lock:  # the session's handler thread or the caller's
            parts = []
            if not self.started:
                self.started = True
                parts.append((self.want_totals, self._totals, "ctxpack-upload-total"))
                if not self.want_totals:
                    self.totals_done.set()
            if fingerprint and not self.fp_started:
                self.fp_started = True
                parts.append((self.want_snapshot, self._fingerprint, "ctxpack-snapshot"))
                if not self.want_snapshot:
                    self.fp_done.set()
        for want, target, name in parts:
            if want:
                self._threading.Thread(target=target, name=name, daemon=True).start()

    @staticmethod
    def _yield_cpu() -> None:
        """Lower this thread's priority (Linux: per thread): on a shared
        machine the engine, which is on the critical path, goes first."""
        try:
            os.setpriority(os.PRIO_PROCESS, _native_id(), 10)
        except (AttributeError, OSError):
            pass

    def _totals(self) -> None:
        from ..walker import EntryKind, entries_for_builder

        self._yield_cpu()

        files = total = tar = 0
        try:
            for e in entries_for_builder(self.plan.ctx):
                tar += 512
                if e.kind == EntryKind.FILE:
                    files += 1
                    size = len(e.data) if e.data is not None else (e.stat.st_size if e.stat is not None else 0)
                    total += size
                    tar += -(-size // 512) * 512
            self.upload.total_files, self.upload.total_bytes = files, total
            self.upload.total_wire = tar + 1024
        except (CtxpackError, OSError):
            pass  # the packer reports what is wrong with the context; the line just shows no total
        finally:
            self.totals_done.set()

    def _fingerprint(self) -> None:
        from ..index.snapshots import fingerprint

        self._yield_cpu()

        try:
            self.fp = fingerprint(self.plan.full_ctx)
            if self.plan.diff_ctx is not None:  # the digests are in the index now: a walk and lookups
                self.diff_fp = fingerprint(self.plan.diff_ctx)
        except CtxpackError as e:
            self.fp_error = str(e)
        except Exception as e:  # noqa: BLE001 - a thread's failure must not pass silently
            self.fp_error = f"{type(e).__name__}: {e}"
        finally:
            self.fp_done.set()

    def record(self, note: Callable[[str], None]) -> tuple[bool, float]:
        """After a successful build: (recorded, seconds waited for the fingerprint)."""
        from ..index.snapshots import record_snapshot

        if not self.want_snapshot:
            return False, 0.0
        self.start()
        t = time.monotonic()
        self.fp_done.wait()
        waited = time.monotonic() - t
        for warning in getattr(self.fp, "warnings", None) or []:
            note(warning)  # the index's one warning (a file moved aside, an unusable cache)
        why = self.fp_error
        if why is None:
            try:
                why = record_snapshot(self.plan.full_ctx, self.fp, unchanged_since_ns=self.since_ns)
            except CtxpackError as e:
                why = str(e)
        if why is not None:
            note(f"the snapshot for `ctxpack diff` was not recorded: {why} (run `ctxpack snapshot` to take one)")
            return False, waited
        if self.plan.diff_ctx is not None and self.diff_fp is not None:
            try:
                why = record_snapshot(self.plan.diff_ctx, self.diff_fp, unchanged_since_ns=self.since_ns)
            except CtxpackError as e:
                why = str(e)
            if why is not None:
                note(f"the snapshot for `ctxpack diff` (BuildKit rules, its default) was not recorded: {why}; "
                     "`ctxpack diff --dialect classic` compares with this build")
        return True, waited


_STEP = re.compile(r"^Step (\d+)/\d+ : ")
_VERTEX = re.compile(r"^\[(?:(\S+) )?\d+/\d+\] (.*)$", re.S)


def _failing_instruction(ctx: BuildContext, messages: list[Message], error: str | None = None) -> tuple[str, Any] | None:
    """Where the build failed: (``Dockerfile:LINE``, the instruction), from
    the engine's own messages mapped onto the Dockerfile ctxpack parsed.

    Classic: the last ``Step N/M : ...`` is the Nth instruction of the file
    (every instruction is a step, across stages).  BuildKit: the vertex
    that carries the error is named ``[STAGE i/n] TEXT`` — its numbering
    skips instructions that make no vertex, so the stage (by ``AS`` name,
    or ``stage-K``) and the instruction's text (continuations joined, as
    BuildKit shows it) find it; ``None`` when nothing matches.  Several
    vertices can fail (two COPYs run at once, both sources missing): the
    one whose error the build's ``error`` carries is taken first."""
    from ..dockerfile.parser import parse_dockerfile
    from .messages import decode_status

    try:
        data = ctx.dockerfile_data
        if data is None and ctx.dockerfile_path is not None:
            with open(ctx.dockerfile_path, "rb") as f:
                data = f.read()
        if data is None:
            return None
        source = ctx.dockerfile_shown()
        insts = parse_dockerfile(data, source).instructions
    except (CtxpackError, OSError, ValueError):
        return None
    failed: list[Any] = []  # the failed BuildKit vertices, the last first
    for m in reversed(messages):
        step = _STEP.match(str(m.get("stream", "")))
        if step is not None:
            n = int(step.group(1))
            return (f"{source}:{insts[n - 1].line}", insts[n - 1]) if 0 < n <= len(insts) else None
        if m.get("id") != "moby.buildkit.trace" or not isinstance(m.get("aux"), str):
            continue
        try:
            found = [v for v in decode_status(m["aux"]).vertexes if v.error]
        except Exception:  # noqa: BLE001 - a message we cannot read names no line
            continue
        failed += found
        if found and (not error or any(v.error in error for v in found)):
            break  # the vertex the error is about: older messages (a long RUN's logs) need no decoding
    if error:
        failed.sort(key=lambda v: v.error not in error)  # stable: the vertex the error names, then the rest
    stages: list[list[Any]] = []
    for inst in insts:
        if inst.cmd == "FROM":
            stages.append([inst])
        elif stages:
            stages[-1].append(inst)
    for v in failed:
        vm = _VERTEX.match(v.name)
        if vm is None:
            continue
        stage_name, text = vm.group(1), " ".join(vm.group(2).split())
        candidates: list[Any] = []
        for k, stage in enumerate(stages):
            args = stage[0].args
            name = args[2].lower() if len(args) >= 3 and args[1].lower() == "as" else None
            if stage_name is None or stage_name in (name, f"stage-{k}"):
                candidates += stage[1:]
        for inst in candidates:
            if " ".join(inst.text.split()) == text:
                return f"{source}:{inst.line}", inst
    return None


def _read_stream(resp: Any, session_build: Any, on_message: Callable[[Message], None] | None,
                 ctx: BuildContext | None = None, endpoint: str = "the engine") -> tuple[list[Message], str]:
    """The engine's messages until the stream ends; the image ID.  An error
    message (or status) raises :class:`~ctxpack.errors.BuildFailedError`,
    its message led by the Dockerfile line that failed when ``ctx`` shows it.
    A stream that ends without its final message (an image ID or an error:
    the engine stopped mid-build), or an error that is the daemon's echo of
    the session connection being cut, raises
    :class:`~ctxpack.errors.ConnectionDroppedError` (exit 5) naming ``endpoint``."""
    from ..errors import ConnectionDroppedError

    if resp.status != 200:
        msg = printable(error_message(resp.read()))  # never a body's bytes on the terminal
        why = f" (the upload stopped: {resp.upload_error})" if resp.upload_error else ""
        raise BuildFailedError(f"the engine refused the build (HTTP {resp.status}): {msg}{why}")
    messages: list[Message] = []
    image_id: str | None = None
    for line in resp.iter_lines():
        msg_ = parse_message(line)
        if msg_ is None:
            continue
        messages.append(msg_)
        if on_message is not None:
            on_message(msg_)
        err = message_error(msg_)
        if err is not None:
            dropped = session_build.dropped(err) if session_build else None
            if dropped is not None:
                raise ConnectionDroppedError(dropped)
            text = printable(session_build.explain(err) if session_build else err)
            where = _failing_instruction(ctx, messages, err) if ctx is not None else None
            failure = BuildFailedError(f"{where[0]}: {text}" if where else text, exit_code_of(err))
            failure.hint = _buildkit_hint(err, where[1] if where else None, ctx)
            raise failure
        image_id = image_id_of(msg_) or image_id
    image_id = image_id or _quiet_image_id(messages)
    if image_id is None:
        sess = session_build.session if session_build is not None else None
        why = f" ({sess.describe_close()})" if sess is not None and sess.closed_reason else ""
        raise ConnectionDroppedError(f"the Docker engine at {endpoint} closed the connection during the build: the "
                                     f"build's stream ended without its final message (no image ID, no error){why}")
    return messages, image_id


def _buildkit_hint(err: str, inst: Any, ctx: BuildContext | None) -> str | None:
    """What to do when the classic builder refuses a BuildKit-only Dockerfile.

    It does not set BUILDPLATFORM/TARGETPLATFORM, so ``FROM
    --platform=$BUILDPLATFORM`` fails there with an empty platform; and it
    refuses ``RUN --mount`` with "the --mount option requires BuildKit"."""
    if ctx is None or ctx.dialect is not Dialect.CLASSIC:
        return None
    how = "build with --builder buildkit (or DOCKER_BUILDKIT=1)"
    if "requires BuildKit" in err:
        return f"this Dockerfile needs BuildKit: {how}"
    if "failed to parse platform" not in err:
        return None
    flag = (inst.flag("platform") or "") if inst is not None and inst.cmd == "FROM" else ""
    if inst is None or any(v in flag for v in ("BUILDPLATFORM", "TARGETPLATFORM")):
        return f"the classic builder sets no BUILDPLATFORM/TARGETPLATFORM (FROM --platform=$BUILDPLATFORM is empty there): {how}"
    return None


def build(
    ctx: BuildContext | str | os.PathLike[str],
    engine: Engine | None = None,
    options: BuildOptions | None = None,
    *,
    on_message: Callable[[Message], None] | None = None,
    on_upload: Callable[[UploadStats], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    walked: Callable[[BuildContext], Iterable[Entry] | None] | None = None,
) -> BuildResult:
    """Build an image from ``ctx`` (a context directory, or a
    :class:`~ctxpack.context.BuildContext` used as it is) on ``engine``
    (default: the one the docker CLI would use, :meth:`Engine.connect`).

    ``on_message`` gets every engine message as it arrives; ``on_upload``
    the upload's progress (about every MiB) and its final figures;
    ``on_note`` ctxpack's decisions (builder, context, compression) before
    the upload; ``warn`` files left out while packing.  ``walked``, given
    the context about to be sent, may return its entries already walked
    (:func:`ctxpack.tar.writer.pack`'s ``walked``: a running watcher's warm
    state) or ``None`` to walk as usual.  Returns a
    :class:`BuildResult`.  Raises :class:`~ctxpack.errors.BuildFailedError`
    (the engine's message), :class:`~ctxpack.errors.TransportError`
    subclasses (unreachable, version, dropped), input errors, and
    :class:`~ctxpack.errors.BuildCancelledError` on ``KeyboardInterrupt``.
    """
    opts = options or BuildOptions()
    if not isinstance(ctx, BuildContext) and os.path.isdir(ctx) and opts.stdin_dockerfile is None:
        from ..context import require_dockerfile

        require_dockerfile(os.fspath(ctx), opts.dockerfile)  # as docker build: refused before connecting
    own_engine = engine is None
    engine = engine or Engine.connect()
    started = time.monotonic()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    try:
        plan = _plan(ctx, engine, opts, note)
        planned = time.monotonic()  # again once the context is final
        upload = UploadStats(compression=plan.compression)
        beside = _Beside(plan, upload, snapshot=opts.record_snapshot, totals=on_upload is not None)
        t_upload: list[float] = []

        def progress(written: int) -> None:  # bytes on the wire, from the socket sink
            if not t_upload:
                t_upload.append(time.monotonic())
            # The packer's walker is forked by now: the totals' listing may
            # start.  The fingerprint waits until the engine has the whole
            # body (the request's answer): on its thread it holds the GIL the
            # packer needs after every system call, and the CPU the pipe to
            # the engine (ssh, the engine's untar) needs; measured over
            # ssh://127.0.0.1 it took ~0.3 s of this process's CPU during the
            # upload.  The engine's build steps leave time for it.
            beside.start(fingerprint=False)
            upload.wire_bytes = written
            upload.seconds = time.monotonic() - t_upload[0]
            if on_upload is not None:
                on_upload(upload)

        def tar_progress(files: int, nbytes: int) -> None:
            upload.files, upload.bytes = files, nbytes

        warm: list[Iterable[Entry] | None] = []  # the hook's entries (the tar path), asked just before the request

        def body(sink: Any) -> None:  # the packer writes straight into the connection
            from ..tar.writer import PackOptions, pack  # the tar path's only (start-up time of a session build)

            beside.mark()
            t_upload.append(time.monotonic())
            stats = pack(plan.ctx, sink, PackOptions(compress=plan.compression, level=plan.level, strict=True),
                         warn=warn or (lambda m: None), progress=tar_progress, walked=warm[0] if warm else None)
            upload.entries, upload.files, upload.bytes = stats.entries, stats.files, stats.bytes
            upload.seconds = time.monotonic() - t_upload[0]
            upload.done = True
            # The listing of what was just sent is all but done: let the
            # last progress record carry the total (never wait long for it).
            beside.totals_done.wait(0.5)

        session_build = None
        try:
            if plan.use_session:
                beside.mark()
                # The session and POST /build go before the Dockerfile analysis:
                # the daemon spends 20-70 ms loading the frontend and reading
                # the Dockerfile through the session before it asks for the
                # context, and the analysis (with its GET /version and image
                # inspections) runs meanwhile.  The context's DiffCopy calls
                # wait for the analysis's context (Session(context_later=True)).
                session_build = _open_session(
                    engine, plan.ctx, plan.query, plan.headers, opts,
                    lambda why: note(f"{why}; sending the context as a tar (compression {plan.compression})"),
                    context_later=not plan.narrowed)
            try:
                _narrow(plan, engine, opts, note)
            except BaseException as e:
                if session_build is not None:
                    # The daemon is waiting for the context: tell it why there is none,
                    # end the session and cancel its build; the caller sees this error.
                    session_build.abandon(f"ctxpack could not decide the context: {e}")
                    _cancel(engine, plan.build_id)
                raise
            planned = time.monotonic()
            if session_build is not None:
                session_build.provide(plan.ctx)
                # A file that changed after it was listed is sent as it is now: say so as it happens.
                session_build.session.filesync.on_warning(warn or note)
                # The fingerprint and the totals wait until the daemon has the
                # context: during the upload this process's CPU and GIL belong
                # to the session's I/O thread (on two cores the engine needs the
                # other one).  The engine's build steps leave time for them.
                # The totals come from the session's own listing (no second walk).
                beside.want_totals = False
                session_build.session.filesync.when_uploaded(beside.start)
                upload.compression = "session"
                resp = session_build.response
            else:
                # Asked before the request, not while the engine waits for the body.
                warm[:] = [walked(plan.ctx)] if walked is not None else []
                resp = engine.request("POST", "/build", query=plan.query, body=body, headers=plan.headers,
                                      timeout=None, progress=progress)
            try:
                if session_build is None:
                    beside.start()
                if on_upload is not None:
                    on_upload(upload)
                messages, image_id = _read_stream(resp, session_build, on_message, plan.ctx, engine.url)
            finally:
                if session_build is not None:
                    session_build.close()
                    st = session_build.session.stats()
                    upload.wire_bytes, upload.files, upload.bytes = st.bytes_out, st.files_requested, st.data_bytes
                    upload.entries = _context_entries(st)
                    upload.seconds = st.upload_seconds
                    upload.session = st
                    totals = session_build.session.filesync.totals("context")
                    if totals is not None:
                        upload.total_files, upload.total_bytes = totals
                    if on_upload is not None:
                        on_upload(upload)
                else:
                    resp.close()
        except KeyboardInterrupt:
            if session_build is not None:
                session_build.close()
            _cancel(engine, plan.build_id)
            raise BuildCancelledError(
                "build cancelled" + (f" (BuildKit build {plan.build_id})" if plan.build_id else "")) from None
        # Only a successful build records its snapshot; the fingerprint was
        # taken while the engine worked, so usually there is nothing to wait for.
        streamed = time.monotonic()
        recorded, waited = beside.record(note)
        sent_at = planned + upload.seconds if session_build is not None or not t_upload else t_upload[0] + upload.seconds
        phases = {"plan": planned - started, "upload": upload.seconds, "engine": max(0.0, streamed - sent_at),
                  "snapshot": waited}
        return BuildResult(
            image_id=image_id, tags=list(opts.tags), messages=messages, builder=plan.builder,
            api_version=plan.api, endpoint=engine.url, minimal=plan.ctx.selection is not None, notes=notes,
            upload=upload, elapsed=time.monotonic() - started, build_id=plan.build_id,
            snapshot_recorded=recorded, snapshot_wait=waited, phases=phases,
        )
    finally:
        if own_engine:
            engine.close()


def _open_session(engine: Engine, ctx: BuildContext, query: list[tuple[str, str]], headers: dict[str, str],
                  opts: BuildOptions, note: Callable[[str], None], *, context_later: bool = False) -> Any:
    """A :class:`~ctxpack.engine.session.SessionBuild` (session attached,
    ``/build`` sent), or ``None`` when the engine refuses a session and
    ``opts.session`` is ``None`` (then the tar body is used, with a note).
    ``context_later``: the context it serves comes with
    :meth:`~ctxpack.engine.session.SessionBuild.provide` (its
    :attr:`~ctxpack.engine.session.SessionBuild.response` then waits for that)."""
    from ..errors import SessionError
    from .session import SessionBuild

    if ctx.dialect is not Dialect.BUILDKIT:
        raise InputError("a BuildKit session serves the BuildKit dialect's context")
    try:
        sb = SessionBuild(engine, ctx, query, headers=headers, secrets=opts.secrets, ssh=opts.ssh, timeout=None,
                          context_later=context_later)
        for n in sb.session.notes:
            note(n)
        return sb
    except SessionError as e:
        if opts.session is None and not (opts.secrets or opts.ssh):
            note(f"no BuildKit session ({e})")
            return None
        raise


_FULL_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def _quiet_image_id(messages: list[Message]) -> str | None:
    """With ``q=1`` the classic builder sends only ``{"stream": "sha256:..."}``."""
    for m in reversed(messages):
        text = str(m.get("stream", "")).strip()
        if _FULL_ID.match(text):
            return text
    return None


def _cancel(engine: Engine, build_id: str | None) -> None:
    """Ask the engine to stop a BuildKit build (classic builds stop when
    their connection closes, which has happened by now)."""
    if build_id is None:
        return
    try:
        with engine.request("POST", "/build/cancel", query={"id": build_id}, timeout=10) as r:
            r.read()
    except (CtxpackError, KeyboardInterrupt):
        pass
