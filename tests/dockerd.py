"""A real Docker engine for the test session, driven over its Engine API.

This is a test helper (not a test module).  It lets end-to-end tests send the
build contexts ctxpack packs to a real daemon and compare the images built
from them with what ctxpack said it would send.

How it works
------------
:func:`shared_daemon` (used by the ``dockerd`` fixture in ``conftest.py``):

1. checks the prerequisites: root, ``dockerd``/``containerd``/``runc`` and a
   *static* ``/bin/busybox``.  What is missing is installed from Debian's
   ``docker.io`` and ``busybox-static`` packages with apt-get (quietly, with
   a time limit), and only when running as root;
2. starts ``dockerd`` in a fresh directory ``/tmp/ctxd-XXXXXXXX`` (short, so
   the unix socket paths stay under the 108-byte limit) with its own socket,
   data root, exec root and pid file, the ``vfs`` storage driver, no
   iptables and no bridge, and an empty ``daemon.json`` so the host's
   configuration does not leak in.  dockerd runs its own containerd;
   With ``tls=True`` (the default) it also listens on ``tcp://127.0.0.1:PORT``
   with ``--tlsverify``: :func:`make_tls_files` makes a CA, a server and a
   client certificate with openssl (:attr:`Dockerd.tcp_url`,
   :attr:`Dockerd.tls_dir` as ``DOCKER_CERT_PATH``);
3. waits for ``GET /_ping`` to answer ``OK`` (or for dockerd to die);
4. imports a busybox base image as ``bb:latest``: a rootfs made in memory
   from the static busybox binary plus one absolute symlink per applet at the
   path ``busybox --list-full`` gives (what ``busybox --install -s`` does),
   sent to ``POST /images/create?fromSrc=-``.

:meth:`Dockerd.stop` sends SIGTERM, then SIGKILL to dockerd's process group
and to any process still naming the directory on its command line (its
containerd and shims: only processes this harness started), lazily
unmounts whatever is still mounted below the directory and removes it.  A
directory left by a killed session (its ``owner.pid`` dead) is cleaned the
same way on the next start.

Every request has a time limit (:class:`EngineClient` ``timeout``, plus an
overall deadline for builds); nothing here can hang the test session.

The client
----------
:class:`EngineClient` is ctxpack's own client (:class:`ctxpack.engine.client.Engine`
over :class:`ctxpack.engine.transport.UnixTransport`, requests versioned as
negotiated) plus what only tests need: :meth:`~EngineClient.version`, :meth:`~EngineClient.build`
(chunked upload of a plain, gzip or zstd tar, JSON message stream parsed
into a :class:`BuildResult`), :meth:`~EngineClient.export_fs` (the flattened
filesystem of an image, through a created-but-never-started container and
``GET /containers/{id}/export``), :meth:`~EngineClient.import_image`.

Observed on Debian bookworm's docker.io (Engine 20.10.24+dfsg1, API 1.41):

* ``version=1`` (classic): the stream is ``{"stream": ...}`` lines, then
  ``{"aux": {"ID": "sha256:..."}}`` and ``Successfully built``.  A failing
  step gives ``{"errorDetail": {...}, "error": "..."}`` with HTTP 200.
* ``version=2`` (BuildKit) works without a session (``session`` query
  parameter not needed) when the context is uploaded as a tar: the stream is
  ``{"id": "moby.buildkit.trace", "aux": "<base64 StatusResponse protobuf>"}``
  messages and the image id arrives as ``{"id": "moby.image.id", "aux":
  {"ID": "sha256:..."}}``.  ``RUN`` needs ``networkmode=none`` when dockerd
  runs with ``--bridge=none``: otherwise it fails with ``executor failed
  running [...]: network bridge not found`` (the classic builder does not
  care).  The first vertex is ``[internal] load remote build context``:
  the body is served to BuildKit as a remote context, so no ignore rules
  apply and a body that is not a recognised archive is taken for the
  Dockerfile itself.  :func:`decode_buildkit_status` decodes the trace
  messages (vertex names, errors, logs) well enough for error reports.
* ``Content-Encoding`` is ignored; the daemon sniffs the body's first bytes.
  A zstd body is not recognised by this engine (see :func:`zstd_context_supported`
  and ``ZSTD_BEHAVIOUR_20_10``).

``python tests/dockerd.py`` starts a daemon the same way and keeps it until
Ctrl-C, for poking at it by hand.  ``CTXPACK_DOCKERD_ARGS`` adds dockerd
flags (e.g. ``--debug``).

Besides ctxpack.engine only the standard library is used (zstd bodies come
ready-made from ctxpack).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import dataclasses
import io
import json
import os
import shlex
import shutil
import signal
import stat as st
import subprocess
import tarfile
import tempfile
import threading
import time
import types
import urllib.parse
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from ctxpack.engine.client import Engine, version_tuple, zstd_supported
from ctxpack.engine.messages import decode_status, error_message, image_id_of, message_error, parse_message
from ctxpack.engine.transport import Request, UnixTransport
from ctxpack.errors import CtxpackError, EngineAPIError

__all__ = [
    "BASE_IMAGE",
    "BuildResult",
    "Dockerd",
    "DockerdUnavailable",
    "EngineClient",
    "EngineError",
    "FsEntry",
    "ZSTD_BEHAVIOUR_20_10",
    "zstd_rejection_20_10",
    "busybox_rootfs_tar",
    "decode_buildkit_status",
    "hardlink_groups",
    "parse_engine_version",
    "shared_daemon",
    "stop_shared_daemon",
    "zstd_context_supported",
]

#: The busybox base image the harness imports.
BASE_IMAGE = "bb:latest"

#: Debian packages that provide what the harness needs.
APT_PACKAGES = ("docker.io", "busybox-static")

APT_TIMEOUT = 900.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 60.0
BUILD_TIMEOUT = 180.0

_BASE_PREFIX = "ctxd-"


def _base_parent() -> str:
    """Where the daemon's directory (data root, exec root, socket) goes:
    ``/tmp``, or ``CTXPACK_DOCKERD_DIR``.  The benchmarks put it on a tmpfs:
    this machine's root ext4 has no journal, and without one ext4 skips, on
    every inode it allocates, the inodes freed in the last 60-360 s
    (fs/ext4/ialloc.c ``recently_deleted``), so an engine that creates a
    context's files after earlier builds deleted theirs took one to three
    times as long, whichever client had sent them."""
    return os.environ.get("CTXPACK_DOCKERD_DIR") or "/tmp"
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: What Engine 20.10 (Debian's docker.io 20.10.24) does with a zstd body,
#: as recorded by tests/test_daemon.py (see :func:`zstd_rejection_20_10`):
#:
#: * ``version=1``: HTTP 500 before any build message, body
#:   ``{"message": "..."}``: pkg/archive does not know zstd, takes the body
#:   for a plain tar, and the tar reader fails on its first 512-byte block:
#:   ``unexpected EOF`` when the whole body is shorter than that, else
#:   ``archive/tar: invalid tar header``.  The daemon answers before reading
#:   the rest, so a large upload ends in EPIPE on the client's side.
#: * ``version=2``: HTTP 200; the stream's error message starts
#:   ``failed to solve with frontend dockerfile.v0: failed to create LLB
#:   definition: dockerfile parse error line 1: unknown instruction: ``
#:   followed by the zstd frame's bytes (``(\ufffd/\ufffd``, the magic
#:   28 B5 2F FD with invalid UTF-8 replaced): BuildKit's archive sniffing
#:   does not know zstd either, so the whole body is read and taken for a
#:   Dockerfile (40 MiB of it took 13 s to be rejected).
ZSTD_BEHAVIOUR_20_10 = {
    "1": (500, ("unexpected EOF", "archive/tar: invalid tar header")),
    "2": (200, ("failed to solve with frontend dockerfile.v0: failed to create LLB definition: "
                "dockerfile parse error line 1: unknown instruction: ",)),
}


def zstd_rejection_20_10(builder: str, body_size: int) -> tuple[int, str]:
    """(HTTP status, error message or its prefix) with which Engine 20.10
    rejects a zstd build context of ``body_size`` bytes."""
    status, messages = ZSTD_BEHAVIOUR_20_10[str(builder)]
    if str(builder) == "1":
        return status, messages[0] if body_size < 512 else messages[1]
    return status, messages[0]


BytesLike = Union[bytes, bytearray, memoryview]


class DockerdUnavailable(RuntimeError):
    """The engine cannot be started here; ``str()`` says why."""


class EngineError(RuntimeError):
    """An Engine API request failed (``status`` is the HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------
# Pure helpers: the package's own (ctxpack.engine), under the names tests use
# --------------------------------------------------------------------------

#: ``"20.10.24+dfsg1"`` → ``(20, 10, 24)`` (ctxpack.engine.client.version_tuple).
parse_engine_version = version_tuple
#: May a zstd context go to this engine? (ctxpack.engine.client.zstd_supported)
zstd_context_supported = zstd_supported


def decode_buildkit_status(aux: str | bytes) -> dict[str, list[dict[str, Any]]]:
    """A ``moby.buildkit.trace`` payload as plain dicts (``{"vertexes":
    [{"digest", "name", "cached", "error", "completed"}], "logs": [{"vertex",
    "stream", "msg"}]}``), decoded by :func:`ctxpack.engine.messages.decode_status`."""
    d = decode_status(aux)
    return {
        "vertexes": [
            {"digest": v.digest, "name": v.name, "cached": v.cached, "error": v.error, "completed": v.completed is not None}
            for v in d.vertexes
        ],
        "logs": [{"vertex": lg.vertex, "stream": lg.stream, "msg": lg.msg} for lg in d.logs],
    }


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass
class BuildResult:
    """What ``POST /build`` answered.

    ``status`` is the HTTP status; ``stream_messages`` the decoded JSON
    messages in order (for a non-2xx status: the error body, decoded if it
    was JSON); ``error`` the first error message (HTTP error body, or an
    ``error``/``errorDetail`` message), ``None`` if there was none;
    ``image_id`` the built image (``sha256:...``) or ``None``.
    """

    image_id: str | None
    stream_messages: list[dict[str, Any]]
    error: str | None
    status: int = 200
    elapsed: float = 0.0
    send_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image_id is not None

    @property
    def stream_text(self) -> str:
        """The classic builder's console output (``stream`` fields joined)."""
        return "".join(str(m["stream"]) for m in self.stream_messages if "stream" in m)

    @property
    def buildkit(self) -> dict[str, list[dict[str, Any]]]:
        """All ``moby.buildkit.trace`` messages decoded and merged."""
        merged: dict[str, list[dict[str, Any]]] = {"vertexes": [], "logs": []}
        for m in self.stream_messages:
            if m.get("id") == "moby.buildkit.trace" and isinstance(m.get("aux"), str):
                d = decode_buildkit_status(m["aux"])
                merged["vertexes"].extend(d["vertexes"])
                merged["logs"].extend(d["logs"])
        return merged

    def describe(self) -> str:
        """A human-readable summary for assertion messages."""
        lines = [f"HTTP {self.status}, image {self.image_id}, error {self.error!r}"]
        if self.send_error:
            lines.append(f"upload stopped: {self.send_error}")
        text = self.stream_text
        if text:
            lines.append(text[-3000:])
        bk = self.buildkit
        names: list[str] = []
        for v in bk["vertexes"]:
            tag = f"{v['name']}" + (f"  ERROR: {v['error']}" if v["error"] else "")
            if tag not in names:
                names.append(tag)
        lines.extend(names)
        logs = b"".join(lg["msg"] for lg in bk["logs"])
        if logs:
            lines.append(logs[-3000:].decode("utf-8", "replace"))
        return "\n".join(lines)


@dataclass(frozen=True)
class FsEntry:
    """One entry of an exported filesystem: ``type`` is ``file``, ``dir``,
    ``symlink``, ``hardlink``, ``char``, ``block`` or ``fifo``; ``mode`` the
    permission bits including setuid/setgid/sticky; ``data`` the content
    (files), the target (symlinks: as stored; hard links: the normalised path
    of the other name) or ``None``; ``uid``/``gid`` the owners (``COPY
    --chown``)."""

    type: str
    mode: int
    data: bytes | str | None
    uid: int = 0
    gid: int = 0

    # Behave like the (type, mode, content_or_linkname) tuple of the brief.
    def __iter__(self) -> Iterator[Any]:
        return iter((self.type, self.mode, self.data))

    def __getitem__(self, i: int) -> Any:
        return (self.type, self.mode, self.data)[i]


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def hardlink_groups(fs: Mapping[str, FsEntry]) -> tuple[dict[str, FsEntry], set[frozenset[str]]]:
    """Resolve hard links: every ``hardlink`` entry becomes a copy of its
    target's entry, and the names sharing an inode are returned as groups
    (sets of two or more paths), so that trees can be compared whichever name
    a tar happened to store first."""
    resolved = dict(fs)
    groups: dict[str, set[str]] = {}
    for path, e in fs.items():
        if e.type == "hardlink" and isinstance(e.data, str):
            target = e.data
            seen = {path}
            while target in fs and fs[target].type == "hardlink" and target not in seen:
                seen.add(target)
                target = str(fs[target].data)
            if target in fs:
                resolved[path] = fs[target]
            groups.setdefault(target, {target}).add(path)
    return resolved, {frozenset(g) for g in groups.values()}


# --------------------------------------------------------------------------
# The client: ctxpack.engine's, plus what only tests need (import, export)
# --------------------------------------------------------------------------


def _chunks(body: BytesLike | Iterable[bytes] | None, size: int = 1 << 20) -> Generator[bytes, None, None]:
    if body is None:
        return
    if isinstance(body, (bytes, bytearray, memoryview)):
        mv = memoryview(body)
        for i in range(0, len(mv), size):
            yield bytes(mv[i : i + size])
        return
    for chunk in body:
        if chunk:
            yield bytes(chunk)


def _writer(body: BytesLike | Iterable[bytes], deadline: float, what: str) -> Any:
    """A request body writer (ctxpack.engine.transport.BodyWriter) for bytes
    or an iterable of chunks, that gives up at ``deadline``."""

    def write(sink: Any) -> None:
        chunks = _chunks(body)
        try:
            for chunk in chunks:
                if time.monotonic() > deadline:
                    raise EngineError(f"{what}: upload still going at the deadline")
                sink.write(chunk)
        finally:
            chunks.close()
            if isinstance(body, types.GeneratorType):
                body.close()  # e.g. ctxpack's iter_tar: stops its producer

    return write


class EngineClient:
    """The test side of the engine: :class:`ctxpack.engine.client.Engine`
    over the unix socket (requests versioned as negotiated), with results
    shaped for assertions.  Transport failures raise :class:`EngineError`."""

    def __init__(self, socket_path: str, *, timeout: float = REQUEST_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout
        self.engine = Engine(UnixTransport(socket_path))

    def close(self) -> None:
        self.engine.close()

    def _json(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        try:
            if method == "GET":
                return self.engine.get_json(path, ok=ok)
            if method == "POST":
                return self.engine.post_json(path, body=body, ok=ok)
            with self.engine.request(method, path, timeout=self.timeout) as r:
                raw = r.read()
                if r.status not in ok:
                    raise EngineError(f"{method} {path}: HTTP {r.status}: {error_message(raw)}", r.status)
                return json.loads(raw) if raw.strip() else None
        except EngineAPIError as e:
            raise EngineError(str(e), e.status) from None
        except CtxpackError as e:
            raise EngineError(f"{method} {path}: {e}") from None

    # -- API ---------------------------------------------------------------

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            with UnixTransport(self.socket_path) as t:
                with t.handle_request(Request("GET", "/_ping", timeout=timeout)) as r:
                    return r.status == 200 and r.read().strip() == b"OK"
        except CtxpackError:
            return False

    def version(self) -> dict[str, Any]:
        """``GET /version``: ``Version``, ``ApiVersion``, ``Components``..."""
        return self._json("GET", "/version")

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return self._json("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")

    def remove_image(self, ref: str) -> None:
        self._json("DELETE", f"/images/{urllib.parse.quote(ref, safe='')}?force=1&noprune=0", ok=(200, 404, 409))

    def import_image(self, rootfs_tar: BytesLike | Iterable[bytes], repo: str, tag: str = "latest") -> str:
        """``POST /images/create?fromSrc=-``; returns the image id."""
        q = {"fromSrc": "-", "repo": repo, "tag": tag}
        try:
            with self.engine.request("POST", "/images/create", query=q,
                                     body=_writer(rootfs_tar, time.monotonic() + BUILD_TIMEOUT, "image import"),
                                     headers={"Content-Type": "application/x-tar"}, timeout=BUILD_TIMEOUT) as r:
                raw = r.read()
                status = r.status
        except CtxpackError as e:
            raise EngineError(f"image import: {e}") from None
        if status != 200:
            raise EngineError(f"image import: HTTP {status}: {error_message(raw)}", status)
        image_id = None
        for line in raw.splitlines():
            msg = parse_message(line)
            if msg is None:
                continue
            if message_error(msg) is not None:
                raise EngineError(f"image import: {message_error(msg)}")
            s = str(msg.get("status", ""))
            if s.startswith("sha256:"):
                image_id = s
        if image_id is None:
            raise EngineError(f"image import: no image id in {raw[:500]!r}")
        return image_id

    def build(
        self,
        context: BytesLike | Iterable[bytes],
        *,
        dockerfile: str = "Dockerfile",
        version: str = "1",
        target: str | None = None,
        buildargs: Mapping[str, str] | None = None,
        content_encoding: str | None = None,
        extra_query: Mapping[str, str] | None = None,
        timeout: float = BUILD_TIMEOUT,
    ) -> BuildResult:
        """``POST /build`` with ``context`` (tar bytes, plain or compressed, or
        an iterable of chunks such as :func:`ctxpack.tar.writer.iter_tar`) as a
        chunked body; the JSON message stream is parsed as it arrives.

        ``version="2"`` selects BuildKit; add ``extra_query={"networkmode":
        "none"}`` for ``RUN`` on a daemon without a bridge.  The build is
        given ``rm=1&forcerm=1`` so no intermediate containers are left.
        Never raises for build failures: see :attr:`BuildResult.error`.
        Raises :class:`EngineError` only if the daemon cannot be reached or
        the deadline passes.
        """
        query: dict[str, str] = {"dockerfile": dockerfile, "version": str(version), "rm": "1", "forcerm": "1"}
        if target is not None:
            query["target"] = target
        if buildargs:
            query["buildargs"] = json.dumps(dict(buildargs))
        query.update(extra_query or {})
        headers = {"Content-Type": "application/x-tar"}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        started = time.monotonic()
        deadline = started + timeout
        messages: list[dict[str, Any]] = []
        error: str | None = None
        image_id: str | None = None
        try:
            with self.engine.request("POST", "/build", query=query, body=_writer(context, deadline, "build"),
                                     headers=headers, timeout=min(self.timeout, timeout)) as resp:
                status = resp.status
                if status >= 300:
                    raw = resp.read()
                    try:
                        doc = json.loads(raw)
                        messages.append(doc if isinstance(doc, dict) else {"message": doc})
                    except ValueError:
                        messages.append({"message": raw.decode("utf-8", "replace")})
                    error = error_message(raw)
                else:
                    for line in resp.iter_lines():
                        if time.monotonic() > deadline:
                            raise EngineError(f"build: no end of the message stream after {timeout:.0f}s")
                        msg = parse_message(line)
                        if msg is None:
                            continue
                        messages.append(msg)
                        if error is None:
                            error = message_error(msg)
                        image_id = image_id_of(msg) or image_id
                send_error = resp.upload_error
        except CtxpackError as e:
            raise EngineError(f"build: {e}") from None
        if error is not None:
            image_id = None
        return BuildResult(
            image_id=image_id,
            stream_messages=messages,
            error=error,
            status=status,
            elapsed=time.monotonic() - started,
            send_error=send_error,
        )

    def export_fs(self, image_id: str, *, under: str | None = None) -> dict[str, FsEntry]:
        """The image's flattened filesystem as ``{path: FsEntry(type, mode,
        content_or_linkname)}``, paths relative to ``/`` without leading or
        trailing slash.  ``under`` keeps only that directory and what is
        below it.

        A container is created (never started) from the image and exported;
        the export includes the daemon's own init-layer entries (``.dockerenv``,
        ``etc/hosts``, ``etc/hostname``, ``etc/resolv.conf``, ``dev``,
        ``proc``, ``sys``...).
        """
        created = self._json(
            "POST",
            "/containers/create",
            {
                "Image": image_id,
                "Cmd": ["/ctxpack-never-started"],
                "NetworkDisabled": True,
                "HostConfig": {"NetworkMode": "none"},
            },
        )
        cid = created["Id"]
        prefix = _norm(under) if under else None
        result: dict[str, FsEntry] = {}
        try:
            try:
                with self.engine.request("GET", f"/containers/{cid}/export", timeout=self.timeout) as resp:
                    if resp.status != 200:
                        raise EngineError(f"export: HTTP {resp.status}: {error_message(resp.read())}", resp.status)
                    with tarfile.open(fileobj=_StreamFile(resp.iter_bytes()), mode="r|") as tf:
                        for ti in tf:
                            name = _norm(ti.name)
                            if not name:
                                continue
                            if prefix is not None and not (name == prefix or name.startswith(prefix + "/")):
                                continue
                            mode = ti.mode & 0o7777
                            if ti.isreg():
                                f = tf.extractfile(ti)
                                entry = FsEntry("file", mode, f.read() if f else b"")
                            elif ti.isdir():
                                entry = FsEntry("dir", mode, None)
                            elif ti.issym():
                                entry = FsEntry("symlink", mode, ti.linkname)
                            elif ti.islnk():
                                entry = FsEntry("hardlink", mode, _norm(ti.linkname))
                            elif ti.ischr():
                                entry = FsEntry("char", mode, f"{ti.devmajor},{ti.devminor}")
                            elif ti.isblk():
                                entry = FsEntry("block", mode, f"{ti.devmajor},{ti.devminor}")
                            elif ti.isfifo():
                                entry = FsEntry("fifo", mode, None)
                            else:
                                entry = FsEntry(f"type-{ti.type!r}", mode, None)
                            result[name] = dataclasses.replace(entry, uid=ti.uid, gid=ti.gid)
            except (CtxpackError, tarfile.TarError) as e:
                raise EngineError(f"export of {image_id}: {type(e).__name__}: {e}") from e
        finally:
            try:
                self._json("DELETE", f"/containers/{cid}?force=1&v=1", ok=(200, 204, 404))
            except EngineError:
                pass
        return result


class _StreamFile(io.RawIOBase):
    """A file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# --------------------------------------------------------------------------
# Base image
# --------------------------------------------------------------------------


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 52 or hdr[:4] != b"\x7fELF":
                return False
            is64 = hdr[4] == 2
            order: Literal["little", "big"] = "little" if hdr[5] == 1 else "big"
            if is64:
                phoff = int.from_bytes(hdr[32:40], order)
                phentsize = int.from_bytes(hdr[54:56], order)
                phnum = int.from_bytes(hdr[56:58], order)
            else:
                phoff = int.from_bytes(hdr[28:32], order)
                phentsize = int.from_bytes(hdr[42:44], order)
                phnum = int.from_bytes(hdr[44:46], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                if int.from_bytes(table[i * phentsize : i * phentsize + 4], order) == 3:  # PT_INTERP
                    return False
            return True
    except OSError:
        return False


def busybox_rootfs_tar(busybox: str = "/bin/busybox") -> bytes:
    """A minimal rootfs as a tar: ``bin/busybox`` and one absolute symlink
    ``/bin/busybox`` per applet where ``busybox --list-full`` puts it (what
    ``busybox --install -s`` does), plus ``tmp`` (1777), ``etc``, ``root``."""
    proc = subprocess.run([busybox, "--list-full"], capture_output=True, timeout=30, check=False)
    applets = [line.strip() for line in proc.stdout.decode().splitlines() if line.strip()]
    if proc.returncode != 0 or not applets:
        proc = subprocess.run([busybox, "--list"], capture_output=True, timeout=30, check=True)
        applets = ["bin/" + a.strip() for a in proc.stdout.decode().splitlines() if a.strip()]
    buf = io.BytesIO()
    now = int(time.time())

    def info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.mtime = now
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    dirs = {"bin", "etc", "root", "tmp", "sbin", "usr", "usr/bin", "usr/sbin"}
    for a in applets:
        parts = a.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for d in sorted(dirs):
            tf.addfile(info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755)))
        with open(busybox, "rb") as f:
            data = f.read()
        ti = info("bin/busybox", tarfile.REGTYPE, 0o755)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets)):
            if a == "bin/busybox" or not a or a.startswith("/") or ".." in a.split("/"):
                continue
            ti = info(a, tarfile.SYMTYPE, 0o777)
            ti.linkname = "/bin/busybox"
            tf.addfile(ti)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        ti = info("etc/passwd", tarfile.REGTYPE, 0o644)
        ti.size = len(passwd)
        tf.addfile(ti, io.BytesIO(passwd))
        group = b"root:x:0:\n"
        ti = info("etc/group", tarfile.REGTYPE, 0o644)
        ti.size = len(group)
        tf.addfile(ti, io.BytesIO(group))
    return buf.getvalue()


# --------------------------------------------------------------------------
# Installing and starting the daemon
# --------------------------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH + ":" + os.environ.get("PATH", ""))


def _missing() -> list[str]:
    missing = []
    for tool in ("dockerd", "containerd", "runc"):
        if _which(tool) is None:
            missing.append(tool)
    if not _is_static_elf("/bin/busybox"):
        missing.append("static /bin/busybox")
    return missing


def _dev_null_ok() -> bool:
    try:
        return st.S_ISCHR(os.stat("/dev/null").st_mode)
    except OSError:
        return False


def ensure_installed(timeout: float = APT_TIMEOUT) -> None:
    """Install docker.io and busybox-static with apt-get if anything is missing.

    Raises :class:`DockerdUnavailable` when something is missing and cannot be
    installed (not root, no apt-get, apt failure: its output's tail included).
    """
    missing = _missing()
    if not missing:
        return
    if os.geteuid() != 0:
        raise DockerdUnavailable(f"missing {', '.join(missing)} and not root (cannot apt-get install {' '.join(APT_PACKAGES)})")
    apt = shutil.which("apt-get")
    if apt is None:
        raise DockerdUnavailable(f"missing {', '.join(missing)} and no apt-get to install {' '.join(APT_PACKAGES)}")
    if not _dev_null_ok():
        raise DockerdUnavailable("/dev/null is not a character device (apt's signature checks would fail); recreate it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=_SBIN_PATH + ":" + os.environ.get("PATH", ""))
    deadline = time.monotonic() + timeout
    steps = [
        [apt, "-qq", "update"],
        [apt, "-qq", "-y", "--no-install-recommends",
         "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
         "install", *APT_PACKAGES],
    ]
    for cmd in steps:
        left = deadline - time.monotonic()
        try:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=max(left, 1), env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise DockerdUnavailable(f"{' '.join(cmd)} timed out after {timeout:.0f}s") from None
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip().splitlines()[-15:]
            raise DockerdUnavailable(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    still = _missing()
    if still:
        raise DockerdUnavailable(f"still missing after apt-get install: {', '.join(still)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounts_under(base: str) -> list[str]:
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4:
                    mp = parts[4].encode().decode("unicode_escape")
                    if mp == base or mp.startswith(base + "/"):
                        found.append(mp)
    except OSError:
        pass
    return found


def _umount_all(base: str) -> None:
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        libc = None
    for _ in range(5):
        mounts = _mounts_under(base)
        if not mounts:
            return
        for mp in sorted(mounts, key=len, reverse=True):
            if libc is not None:
                libc.umount2(mp.encode(), 2)  # MNT_DETACH
            else:  # pragma: no cover
                subprocess.run(["umount", "-l", mp], capture_output=True, timeout=10, check=False)


def _procs_naming(base: str) -> list[int]:
    """Pids whose command line mentions ``base`` (dockerd, its containerd,
    shims): all started by this harness, since ``base`` is our own dir."""
    me = os.getpid()
    pids = []
    needle = base.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if needle in f.read():
                    pids.append(int(d))
        except OSError:
            continue
    return pids


def _kill_and_remove(base: str) -> None:
    for pid in _procs_naming(base):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    end = time.monotonic() + 5
    while _procs_naming(base) and time.monotonic() < end:
        time.sleep(0.1)
    _umount_all(base)
    shutil.rmtree(base, ignore_errors=True)


def _clean_stale(tmp: str = "/tmp") -> None:
    """Remove directories of earlier sessions whose owner is gone."""
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for n in names:
        if not n.startswith(_BASE_PREFIX):
            continue
        base = os.path.join(tmp, n)
        try:
            with open(os.path.join(base, "owner.pid")) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            _kill_and_remove(base)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls_files(directory: str) -> str:
    """A CA, a server certificate for 127.0.0.1/localhost and a client
    certificate, made with openssl (EC P-256 keys: quick to make): ``ca.pem``,
    ``server-cert.pem``, ``server-key.pem``, ``cert.pem``, ``key.pem`` (the
    client's, as ``DOCKER_CERT_PATH`` wants them)."""
    os.makedirs(directory, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, capture_output=True, timeout=60, check=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ctxpack-test-ca")
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "ctxpack-client", "extendedKeyUsage=clientAuth\n"),
    ):
        with open(os.path.join(directory, f"{name}.ext"), "w") as f:
            f.write(ext)
        run("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{name}-cert.pem", "-days", "2", "-extfile", f"{name}.ext")
    os.replace(os.path.join(directory, "client-cert.pem"), os.path.join(directory, "cert.pem"))
    os.replace(os.path.join(directory, "client-key.pem"), os.path.join(directory, "key.pem"))
    return directory


class Dockerd:
    """A dockerd of our own; see the module docstring."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], log_file: Any):
        self.base = base
        self.socket = os.path.join(base, "d.sock")
        self.log_path = os.path.join(base, "dockerd.log")
        self.proc = proc
        self._log_file = log_file
        self.client = EngineClient(self.socket)
        self.base_image_id: str | None = None
        self.info: dict[str, Any] = {}
        #: ``tcp://127.0.0.1:PORT`` served with ``--tlsverify`` (``None`` if
        #: openssl was missing); the client's ``ca.pem``/``cert.pem``/``key.pem``
        #: are in :attr:`tls_dir` (``DOCKER_CERT_PATH``).
        self.tcp_url: str | None = None
        self.tls_dir: str | None = None
        self.timings: dict[str, float] = {}
        self._stopped = False

    # Convenience: the fixture hands out the Dockerd; tests call these.
    def version(self) -> dict[str, Any]:
        return self.client.version()

    def build(self, context: BytesLike | Iterable[bytes], **kw: Any) -> BuildResult:
        return self.client.build(context, **kw)

    def export_fs(self, image_id: str, *, under: str | None = None) -> dict[str, FsEntry]:
        return self.client.export_fs(image_id, under=under)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no dockerd log)"
        # grpc's connectivity chatter (module=grpc, level=info) drowns the
        # lines that matter.
        kept = [ln for ln in text.splitlines() if not ("module=grpc" in ln and "level=info" in ln)]
        return "\n".join(kept[-lines:])

    @classmethod
    def start(
        cls, *, install: bool = True, timeout: float = START_TIMEOUT, extra_args: Sequence[str] | None = None,
        tls: bool = True,
    ) -> Dockerd:
        """Install if needed, start dockerd, wait for it, import ``bb:latest``.

        ``tls`` adds a ``--tlsverify`` listener on 127.0.0.1 (a CA and
        server and client certificates made with openssl for this daemon).
        ``extra_args`` go to dockerd after the harness's own (later flags
        win); by default they come from ``CTXPACK_DOCKERD_ARGS`` (split like
        a shell would), e.g. ``--debug``.

        Raises :class:`DockerdUnavailable` (with the dockerd log's tail when
        the daemon was started) if anything fails.
        """
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise DockerdUnavailable("dockerd needs root (running as uid %d)" % os.geteuid())
        if install:
            ensure_installed()
        missing = _missing()
        if missing:
            raise DockerdUnavailable(f"missing {', '.join(missing)}")
        t_installed = time.monotonic()
        _clean_stale(_base_parent())
        base = tempfile.mkdtemp(prefix=_BASE_PREFIX, dir=_base_parent())
        with open(os.path.join(base, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        with open(os.path.join(base, "daemon.json"), "w") as f:
            f.write("{}\n")
        dockerd = _which("dockerd")
        assert dockerd is not None
        cmd = [
            dockerd,
            "--host", f"unix://{base}/d.sock",
            "--data-root", f"{base}/data",
            "--exec-root", f"{base}/x",
            "--pidfile", f"{base}/d.pid",
            "--config-file", f"{base}/daemon.json",
            "--storage-driver", "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--userland-proxy=false",
        ]
        tcp_url = tls_dir = None
        if tls:
            try:
                tls_dir = make_tls_files(os.path.join(base, "tls"))
            except (OSError, subprocess.SubprocessError):
                tls_dir = None  # no openssl: the TLS listener is left out (its tests skip/fail)
            if tls_dir is not None:
                port = _free_port()
                tcp_url = f"tcp://127.0.0.1:{port}"
                cmd += [
                    "--host", tcp_url, "--tlsverify",
                    "--tlscacert", f"{tls_dir}/ca.pem",
                    "--tlscert", f"{tls_dir}/server-cert.pem",
                    "--tlskey", f"{tls_dir}/server-key.pem",
                ]
        if extra_args is None:
            extra_args = shlex.split(os.environ.get("CTXPACK_DOCKERD_ARGS", ""))
        cmd.extend(extra_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = _SBIN_PATH + ":" + os.environ.get("PATH", "")
        log_file = open(os.path.join(base, "dockerd.log"), "wb")
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=base,
            )
        except OSError as e:
            log_file.close()
            _kill_and_remove(base)
            raise DockerdUnavailable(f"cannot run {dockerd}: {e}") from None
        d = cls(base, proc, log_file)
        d.tcp_url, d.tls_dir = tcp_url, tls_dir
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise DockerdUnavailable(f"dockerd exited with {proc.returncode} during start-up")
                if os.path.exists(d.socket) and d.client.ping():
                    break
                if time.monotonic() > deadline:
                    raise DockerdUnavailable(f"dockerd did not answer /_ping within {timeout:.0f}s")
                time.sleep(0.1)
            t_up = time.monotonic()
            d.info = d.client.version()
            d.base_image_id = d.client.import_image(busybox_rootfs_tar(), *BASE_IMAGE.split(":"))
            t_img = time.monotonic()
            d.timings = {"install": t_installed - t0, "start": t_up - t_installed, "import": t_img - t_up}
        except (DockerdUnavailable, EngineError, OSError, subprocess.SubprocessError) as e:
            tail = d.log_tail()
            d.stop()
            raise DockerdUnavailable(f"{e}\n--- dockerd log (tail) ---\n{tail}") from None
        return d

    def stop(self) -> None:
        """Stop dockerd and everything it started; remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    try:
                        self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            try:
                self._log_file.close()
            except OSError:
                pass
            _kill_and_remove(self.base)


# --------------------------------------------------------------------------
# One daemon per test session
# --------------------------------------------------------------------------

_lock = threading.Lock()
_shared: Dockerd | None = None
_failure: str | None = None


def shared_daemon() -> Dockerd:
    """The session's daemon, started on first use; raises
    :class:`DockerdUnavailable` (the same reason every time) if it cannot be."""
    global _shared, _failure
    with _lock:
        if _shared is not None:
            return _shared
        if _failure is not None:
            raise DockerdUnavailable(_failure)
        try:
            _shared = Dockerd.start()
        except DockerdUnavailable as e:
            _failure = str(e)
            raise
        atexit.register(stop_shared_daemon)
        return _shared


def stop_shared_daemon() -> None:
    global _shared
    with _lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


def _main() -> int:
    """``python tests/dockerd.py``: start a daemon like the tests do and keep
    it until Ctrl-C, for poking at it by hand (curl --unix-socket SOCK ...)."""
    try:
        d = Dockerd.start()
    except DockerdUnavailable as e:
        print(f"cannot start dockerd: {e}")
        return 1
    info = d.info
    print(f"Engine {info.get('Version')} (API {info.get('ApiVersion')}) up in {d.timings}")
    print(f"socket:  {d.socket}\nlog:     {d.log_path}\nimage:   {BASE_IMAGE} {d.base_image_id}")
    print(f"try:     curl -s --unix-socket {d.socket} http://x/version")
    print(f"or:      DOCKER_HOST=unix://{d.socket} docker images")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1) and d.proc.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
