"""docker-py's build-context functions with Docker's exact semantics.

docker-py 7 (``docker.utils.build``) computes the build context itself, and
differs from Docker on a good share of contexts (``docs/docker-py-agreement.md``:
case-insensitive matching, inverted ``[!x]``/``[^x]``, no escapes, the old
single-parent logic, ``.dockerignore`` read as text with its own parsing) and
writes the whole archive to a temporary file before it sends a byte.

This module has the same three functions with the same signatures and return
types, giving the tar the docker CLI uploads (classic builder) byte for byte::

    from ctxpack.compat.dockerpy import tar
    f = tar("app")                      # reads app/.dockerignore as Docker does
    client.api.build(fileobj=f, custom_context=True, tag="app")

and :func:`install`, one line that makes an unmodified docker-py program
(``client.images.build(path=...)``, ``APIClient.build(path=...)``) stream
ctxpack's exact context instead — no temporary file, chunked transfer::

    import ctxpack.compat.dockerpy; ctxpack.compat.dockerpy.install()

Differences from docker-py that are on purpose (they are Docker's behaviour):

* ``exclude=None`` reads the context's ``.dockerignore`` (for
  ``dialect="buildkit"``, the ``<Dockerfile>.dockerignore`` beside the
  Dockerfile first); docker-py then excludes nothing.  A list is taken as
  the lines of an ignore file (comments, ``!``, cleaning as Docker parses
  them); docker-py's ``APIClient.build`` pre-parses with its own rules.
* The Dockerfile and ``.dockerignore`` are re-added only where the docker
  CLI re-adds them; the caller's lists are never mutated.
* Entries come in the CLI's depth-first walk order with its headers (uid and
  gid 0, no user names); a Dockerfile from outside the context (docker-py's
  ``(name, contents)`` tuple) is added under ``name`` with the CLI's rewritten
  ``.dockerignore``, as ``docker build -f ../Dockerfile`` does.
* Errors are ctxpack's (:class:`~ctxpack.errors.CtxpackError`: a pattern
  Docker refuses names its line in ``exclude`` or ``.dockerignore``), raised
  before anything is sent.

docker (the ``docker`` package) is imported only by :func:`install`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from ctxpack.context import BuildContext, Dialect, open_context
from ctxpack.errors import ContextError, InputError
from ctxpack.fs import bytes_key
from ctxpack.ignore.reader import RawRule, parse_lines
from ctxpack.tar.sinks import CallbackSink, FdSink, Sink
from ctxpack.tar.writer import PackOptions, iter_tar, pack, pack_entries
from ctxpack.walker import Entry, EntryKind, HardLinks, dockerfile_name_in_tar, kind_of, list_entries

__all__ = [
    "tar",
    "exclude_paths",
    "create_archive",
    "build_context",
    "context_stream",
    "ContextStream",
    "install",
    "uninstall",
    "installed",
]

#: docker-py's ``(name, contents)`` Dockerfile tuple: ``contents`` is None when
#: the Dockerfile is ``name`` inside the context.
DockerfileTuple = tuple[str | None, str | None]

_EXCLUDE_SOURCE = "exclude"


def _rules(patterns: Iterable[str]) -> list[RawRule]:
    # Each item is one line of an ignore file (its line number: index + 1).
    return parse_lines(patterns, source=_EXCLUDE_SOURCE)


def build_context(
    root: str | os.PathLike[str],
    exclude: Iterable[str] | None = None,
    dockerfile: str | None = None,
    dockerfile_contents: str | bytes | None = None,
    *,
    dialect: Dialect | str = Dialect.CLASSIC,
) -> BuildContext:
    """The :class:`~ctxpack.BuildContext` behind :func:`tar` and :func:`exclude_paths`.

    ``dockerfile`` is docker-py's Dockerfile name: relative to ``root`` (or
    absolute); with ``dockerfile_contents`` it is the tar name under which
    those contents travel (docker-py's ``.dockerfile.<hex>`` for a Dockerfile
    outside the context).  A name that does not exist is still used for the
    CLI's "re-add the Dockerfile" rule, as docker-py's ``exclude_paths``
    does; the daemon will then say it cannot find it.
    """
    root = os.path.abspath(os.fspath(root))
    rules = None if exclude is None else _rules(exclude)
    if dockerfile_contents is not None:
        data = dockerfile_contents.encode("utf-8") if isinstance(dockerfile_contents, str) else dockerfile_contents
        # What the CLI does with a Dockerfile from stdin or outside the
        # context: it travels as an extra member that .dockerignore names.
        ctx = open_context(root, dockerfile="-", stdin_dockerfile=data, dialect=dialect, rules=rules)
        return dataclasses.replace(ctx, injected_name=dockerfile or None)
    if dockerfile is None:
        return open_context(root, dialect=dialect, rules=rules)
    path = dockerfile if os.path.isabs(dockerfile) else os.path.join(root, dockerfile)
    if os.path.lexists(path):
        return open_context(root, dockerfile=path, dialect=dialect, rules=rules)
    ctx = open_context(root, dialect=dialect, rules=rules)
    rel = os.path.relpath(path, ctx.root).replace(os.sep, "/")
    appended = [a for a in ctx.appended if a == "!.dockerignore"]
    if ctx.dialect is Dialect.CLASSIC and ctx.file_matcher.matches_single_parent(rel):
        appended.append("!" + rel)
    matcher = ctx.file_matcher.with_extra(appended) if appended else ctx.file_matcher
    return dataclasses.replace(ctx, dockerfile=None, dockerfile_path=None, appended=tuple(appended), matcher=matcher)


def _split_dockerfile(dockerfile: DockerfileTuple | Sequence[str | None] | None) -> tuple[str | None, str | None]:
    if not dockerfile:
        return None, None
    name, contents = dockerfile[0], dockerfile[1] if len(dockerfile) > 1 else None
    return name, contents


def tar(
    path: str | os.PathLike[str],
    exclude: Iterable[str] | None = None,
    dockerfile: DockerfileTuple | Sequence[str | None] | None = None,
    fileobj: IO[bytes] | None = None,
    gzip: bool = False,
    *,
    dialect: Dialect | str = Dialect.CLASSIC,
) -> IO[bytes]:
    """``docker.utils.build.tar`` with Docker's context: the tar the docker CLI
    uploads for ``path``, written to ``fileobj`` (default: a new
    ``NamedTemporaryFile``) and returned seeked to the start.

    ``exclude``: None reads the ignore file the ``dialect``'s builder reads;
    a list of lines replaces it.  ``dockerfile``: docker-py's ``(name,
    contents)`` tuple (``contents`` None: ``name`` is inside the context).
    ``gzip`` compresses the stream.  ``dialect="buildkit"`` gives what a
    BuildKit upload needs instead (its ignore file and order, Dockerfile
    always present).
    """
    name, contents = _split_dockerfile(dockerfile)
    ctx = build_context(path, exclude, name, contents, dialect=dialect)
    opts = PackOptions(compress="gzip" if gzip else "none")
    if fileobj is None:
        out: IO[bytes] = tempfile.NamedTemporaryFile()
        try:
            pack(ctx, FdSink(out.fileno()), opts)
        except BaseException:
            out.close()
            raise
    else:
        out = fileobj
        pack(ctx, CallbackSink(out.write), opts)
    out.seek(0)
    return out


def exclude_paths(
    root: str | os.PathLike[str],
    patterns: Iterable[str],
    dockerfile: str | None = None,
    *,
    dialect: Dialect | str = Dialect.CLASSIC,
) -> set[str]:
    """``docker.utils.build.exclude_paths``: the relative paths (files and
    directories, no trailing slash) that Docker sends for ``root`` when its
    ignore file holds the lines ``patterns``.  ``patterns`` is not modified.

    ``dockerfile`` (relative to ``root``; default ``Dockerfile``, or
    ``dockerfile`` when only that exists) is re-added where the docker CLI
    re-adds it.
    """
    ctx = build_context(root, list(patterns), dockerfile, dialect=dialect)
    return {e.path for e in list_entries(ctx)}


def _walk_key(path: str) -> list[bytes]:
    # The CLI's order: depth first, each directory's names byte-wise
    # ("a", "a/x", "a.b"), which is not the order of whole paths.
    return [bytes_key(part) for part in path.split("/")]


def _listed_entries(root: str, files: Iterable[str], skip: set[str]) -> Iterator[Entry]:
    """Entries for a caller's list of paths, hard links as the CLI finds them
    (a later name of an inode already sent becomes a link to the first)."""
    links = HardLinks()
    for rel in files:
        rel = os.fspath(rel).replace(os.sep, "/")
        if rel in skip:
            continue  # extra files replace context files of the same name
        full = os.path.join(root, rel)
        try:
            s = os.lstat(full)
        except OSError as e:
            raise ContextError(f"can not read file in context: {full}: {e.strerror}", full) from None
        kind = kind_of(s.st_mode)
        if kind is None:
            continue  # sockets: Docker's tar writer skips them (so does docker-py)
        link = os.readlink(full) if kind == EntryKind.SYMLINK else None
        first = links.first_name(rel, s)
        if first is not None:
            kind, link = EntryKind.HARDLINK, first
        yield Entry(rel, kind, s, link=link)


def create_archive(
    root: str | os.PathLike[str],
    files: Iterable[str] | None = None,
    fileobj: IO[bytes] | None = None,
    gzip: bool = False,
    extra_files: Iterable[tuple[str, str]] | None = None,
) -> IO[bytes]:
    """``docker.utils.build.create_archive``: a tar of ``files`` (paths
    relative to ``root``) with Docker's headers, then ``extra_files``
    (``(name, contents)`` pairs, which replace context files of the same
    name), written to ``fileobj`` (default: a new ``NamedTemporaryFile``)
    and returned seeked to the start.

    ``files=None`` means the whole directory in Docker's walk order (no
    ignore rules: that is :func:`tar`'s job).  A list or tuple keeps the
    caller's order; a set (what :func:`exclude_paths` returns) is put in
    Docker's walk order.  Extra files are added as the docker CLI adds the
    files it synthesises (mode 0600).
    """
    root = os.path.abspath(os.fspath(root))
    extras = [(name, contents) for name, contents in (extra_files or [])]
    skip = {name for name, _ in extras}
    entries: Iterable[Entry]
    if files is None:
        whole = open_context(root, dialect=Dialect.CLASSIC, rules=[])
        entries = (e for e in list_entries(whole) if e.path not in skip)
    else:
        ordered = list(files) if isinstance(files, (list, tuple)) else sorted(files, key=_walk_key)
        entries = _listed_entries(root, ordered, skip)

    def everything() -> Iterator[Entry]:
        yield from entries
        for name, contents in extras:
            yield Entry(name, EntryKind.FILE, None, forced=True, data=contents.encode("utf-8"))

    opts = PackOptions(compress="gzip" if gzip else "none")
    out: IO[bytes] = fileobj if fileobj is not None else tempfile.NamedTemporaryFile()
    sink: Sink = FdSink(out.fileno()) if fileobj is None else CallbackSink(out.write)
    try:
        pack_entries(root, everything(), sink, opts)
    except BaseException:
        if fileobj is None:
            out.close()
        raise
    out.seek(0)
    return out


# --------------------------------------------------------------------------
# install(): docker-py's APIClient.build sends ctxpack's streamed context
# --------------------------------------------------------------------------

_REMOTE_PREFIXES = ("http://", "https://", "git://", "github.com/", "git@")
_install_lock = threading.Lock()
#: (object, attribute, original value) for everything install() replaced.
_patched: list[tuple[Any, str, Any]] = []


class ContextStream:
    """A context as a request body for docker-py: iterate it for the tar's
    chunks (no length, so requests sends it with chunked transfer encoding
    while it is packed); ``dockerfile`` and ``encoding`` are the values to
    pass to ``APIClient.build`` with it.  Close it when the request is over.

    Made by :func:`context_stream`.
    """

    def __init__(self, chunks: Iterator[bytes], dockerfile: str, encoding: str | None):
        self._chunks = chunks
        self.dockerfile = dockerfile
        self.encoding = encoding
        # The first chunk is produced now: a pattern Docker refuses, or an
        # unreadable context, fails before the request starts (as the CLI's
        # "error checking context" does), not half-way through the upload.
        self._first: bytes | None = next(chunks, b"")

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._chunks

    def close(self) -> None:
        """Stop packing (the upload is over, or failed)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def context_stream(
    path: str | os.PathLike[str],
    dockerfile: str | None = None,
    gzip: bool = False,
    *,
    dialect: Dialect | str = Dialect.CLASSIC,
) -> ContextStream:
    """The docker CLI's context for ``path`` as a streamed request body::

        body = context_stream("app", gzip=True)
        with contextlib.closing(body):
            client.api.build(fileobj=body, custom_context=True, encoding=body.encoding,
                             dockerfile=body.dockerfile, tag="app")

    ``dockerfile`` is docker-py's ``dockerfile=``: relative to ``path`` (or
    absolute; outside the context it travels in the tar as the CLI sends
    it).  Errors in the ignore file or the context are raised here, before
    any request starts.
    """
    path = os.fspath(path)
    if dockerfile and not os.path.isabs(dockerfile):
        dockerfile = os.path.join(path, dockerfile)  # docker-py: relative to the context
    ctx = open_context(path, dockerfile=dockerfile, dialect=dialect)
    chunks = iter_tar(ctx, PackOptions(compress="gzip" if gzip else "none"))
    return ContextStream(chunks, dockerfile_name_in_tar(ctx), "gzip" if gzip else None)


#: APIClient.build arguments the session path understands; any other one
#: given a non-default value keeps the build on the classic tar path.
_SESSION_ARGS = frozenset((
    "self", "path", "tag", "quiet", "fileobj", "nocache", "rm", "timeout", "custom_context", "encoding", "pull",
    "forcerm", "dockerfile", "decode", "buildargs", "gzip", "labels", "target", "network_mode", "platform",
    "use_config_proxy", "container_limits",
))
_SESSION_MIN_API = (1, 39)


def _api_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(version).split("."))
    except ValueError:
        return (0,)


def _session_socket(client: Any, a: dict[str, Any], signature: inspect.Signature) -> str | None:
    """The unix socket for a BuildKit session build of these arguments, or
    None when the build stays classic (a TCP/ssh connection, an API below
    1.39, or an argument only the classic path carries)."""
    for name, value in a.items():
        if name not in _SESSION_ARGS and value != signature.parameters[name].default:
            return None
    if a.get("container_limits") or a.get("gzip") or a.get("encoding"):
        return None
    adapter = getattr(client, "_custom_adapter", None)
    path = getattr(adapter, "socket_path", None)
    if not isinstance(path, str) or _api_tuple(getattr(client, "_version", "0")) < _SESSION_MIN_API:
        return None
    return path


def _session_stream(client: Any, a: dict[str, Any], socket_path: str) -> Iterator[Any]:
    """A BuildKit build through ctxpack's session, as docker-py's build()
    output: the engine's JSON messages (dicts with ``decode``, else bytes
    lines), then the image id as the classic builder reports it (what
    ``client.images.build`` looks for)."""
    import queue

    from ctxpack.engine.session import session_build

    path = os.fspath(a["path"])
    dockerfile = a.get("dockerfile")
    if dockerfile and not os.path.isabs(dockerfile):
        dockerfile = os.path.join(path, dockerfile)
    ctx = open_context(path, dockerfile=dockerfile, dialect=Dialect.BUILDKIT)  # input errors raise here
    build_args: dict[str, str | None] = dict(a.get("buildargs") or {})
    if a.get("use_config_proxy", True):
        for k, v in client._proxy_configs.get_environment().items():
            build_args.setdefault(k, v)
    tag = a.get("tag")
    # The rest of docker-py's query, as docker-py would send it.
    extra: dict[str, str] = {}
    if a.get("pull"):
        extra["pull"] = "1"
    if a.get("quiet"):
        extra["q"] = "1"
    if a.get("platform"):
        extra["platform"] = str(a["platform"])
    if a.get("labels"):
        import json

        extra["labels"] = json.dumps(a["labels"])
    out: queue.Queue[object] = queue.Queue()
    done = object()

    def run() -> None:
        try:
            result = session_build(
                ctx, socket_path, tags=[tag] if tag else [], target=a.get("target"), build_args=build_args,
                network_mode=a.get("network_mode"), no_cache=bool(a.get("nocache")), on_message=out.put,
                timeout=float(a.get("timeout") or 3600), extra_query=extra,
            )
            if result.ok and result.image_id:
                out.put({"aux": {"ID": result.image_id}})
                out.put({"stream": f"Successfully built {result.image_id.split(':')[-1]}\n"})
            elif not any("error" in m for m in result.messages if isinstance(m, dict)):
                message = result.error or "the build failed"
                out.put({"errorDetail": {"message": message}, "error": message})
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            out.put(e)
        out.put(done)

    threading.Thread(target=run, name="ctxpack-dockerpy-session", daemon=True).start()
    decode = bool(a.get("decode"))

    def messages() -> Iterator[Any]:
        import json

        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item if decode else json.dumps(item).encode() + b"\r\n"

    return messages()


def _streaming_build(original: Callable[..., Any], builder: str = "classic") -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def build(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        path = a.get("path")
        if (
            path is None
            or a.get("fileobj") is not None
            or a.get("custom_context")
            or (a.get("gzip") and a.get("encoding") is not None)  # docker-py's own error
            or str(path).startswith(_REMOTE_PREFIXES)
            or not os.path.isdir(path)  # docker-py raises its TypeError
        ):
            return original(*bound.args, **bound.kwargs)
        if builder != "classic":
            socket_path = _session_socket(self, dict(a), signature)
            if socket_path is not None:
                return _session_stream(self, dict(a), socket_path)
            if builder == "buildkit":
                raise InputError("install(builder='buildkit'): this build cannot go through a BuildKit session "
                                 "(it needs a unix socket, API 1.39, and no gzip, encoding or container_limits)")
        body = context_stream(path, a.get("dockerfile"), bool(a.get("gzip")))
        a.update(
            path=None,
            fileobj=body,
            custom_context=True,
            gzip=False,
            encoding=body.encoding or a.get("encoding"),
            dockerfile=body.dockerfile,
        )
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            body.close()  # the upload is over (or failed): stop the packer

    build._ctxpack_original = original  # type: ignore[attr-defined]
    return build


def install(builder: str = "classic") -> None:
    """Make docker-py build with ctxpack's exact, streamed context.

    After ``ctxpack.compat.dockerpy.install()``, ``APIClient.build(path=...)``
    and ``client.images.build(path=...)`` upload the tar the docker CLI
    would (classic builder: ``<path>/.dockerignore`` with Docker's rules, the
    CLI's order and headers), streamed with chunked transfer encoding while
    it is packed: no temporary file, flat memory.  ``gzip=True`` streams it
    gzip-compressed.  ``docker.utils.tar``, ``exclude_paths`` and
    ``create_archive`` become this module's functions.  Builds from
    ``fileobj``, URLs and ``custom_context`` are left as they were.
    Idempotent (call :func:`uninstall` first to change ``builder``);
    :func:`uninstall` restores docker-py.

    ``builder="auto"`` lets a build go to BuildKit through ctxpack's session
    where the daemon supports it (a unix socket, API 1.39 or later, and only
    arguments a session build carries): BuildKit's ignore file and selection,
    only the files the Dockerfile reads are transferred, and the output is the
    engine's BuildKit messages followed by the image id as docker-py expects
    it.  Elsewhere it streams the classic tar.  ``builder="buildkit"``
    refuses the classic fallback; ``"classic"`` (the default) is docker-py's
    own builder.
    """
    if builder not in ("classic", "auto", "buildkit"):
        raise InputError(f"install(builder={builder!r}): classic, auto or buildkit")
    import docker.api.build
    import docker.utils
    import docker.utils.build

    with _install_lock:
        if _patched:
            return
        mixin = docker.api.build.BuildApiMixin
        replacements: list[tuple[Any, str, Any]] = [(mixin, "build", _streaming_build(mixin.build, builder))]
        for module in (docker.utils, docker.utils.build):
            for name, fn in (("tar", tar), ("exclude_paths", exclude_paths), ("create_archive", create_archive)):
                if hasattr(module, name):
                    replacements.append((module, name, fn))
        for obj, name, value in replacements:
            _patched.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)


def uninstall() -> None:
    """Undo :func:`install` (nothing happens if it was not installed)."""
    with _install_lock:
        while _patched:
            obj, name, value = _patched.pop()
            setattr(obj, name, value)


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_patched)
