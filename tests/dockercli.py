"""Capture the exact build-context tar that the ``docker`` CLI uploads.

This is a test helper (not a test module).  It gives differential tests a
reference implementation of ``.dockerignore`` handling: the real docker CLI
client computes the build context itself and we record what it sends.

How it works
------------
With ``DOCKER_BUILDKIT=0`` the CLI uses the legacy builder path: it walks the
context directory, applies ``.dockerignore``, tars the result and streams it
to the daemon in ``POST /v<api>/build``.  No daemon is needed: we point
``DOCKER_HOST`` at a unix socket served by :class:`CaptureServer`, a small
threaded HTTP/1.1 server that answers the ping, records the build request
(query parameters, headers, full body) and replies with a JSON message stream
that makes ``docker build`` exit 0.

Observed protocol (docker CLI 28.2.2):

* ``HEAD /_ping`` (falls back to ``GET /_ping``).  The CLI negotiates the API
  version from the ``API-Version`` response header and uses it as URL prefix.
* ``POST /v1.47/build?dockerfile=Dockerfile&version=1[&...]`` with headers
  ``Content-Type: application/x-tar``, ``Transfer-Encoding: chunked`` and
  ``X-Registry-Config: e30=`` (base64 of ``{}``).  Flags map to further query
  parameters (``t``, ``q``, ``buildargs``, ``labels``, ``target``, ...).
* Nothing else.  An invalid ``.dockerignore`` makes the CLI fail after the
  ping and before the build request ("error checking context: syntax error
  in pattern").

Quirks worth knowing when comparing against the captured tar:

* With ``-f -`` (Dockerfile on stdin) or ``-f`` pointing outside the context,
  the CLI appends a ``.dockerfile.<20 hex>`` member holding the Dockerfile,
  uses that name as the ``dockerfile`` query parameter, and appends
  ``"\\n.dockerfile.<hex>\\n"`` to ``.dockerignore`` (or, with no
  ``.dockerignore``, appends a new one containing
  ``".dockerignore\\n.dockerfile.<hex>\\n"``, mode 0600).  The relative order
  of those appended members comes from a Go map and is not stable.
* In that same case the uploaded tar is *truncated*: the last member's
  padding and the end-of-archive blocks are never sent (apparently moby's
  ``archive.ReplaceFileTarWrapper`` closes the pipe before the tar writer).
  :attr:`Capture.tar` keeps the bytes exactly as sent,
  :attr:`Capture.tar_complete` tells whether the end-of-archive marker was
  present, and :attr:`Capture.members` is parsed tolerantly.
* ``Dockerfile`` and ``.dockerignore`` are always sent, even when
  ``.dockerignore`` excludes them.
* Members come in depth-first walk order with each directory's entries
  sorted by byte value (``a``, ``a/c``, ``a-b``); uid/gid are forced to 0 and
  uname/gname are empty; long or non-ASCII names use PAX ``path`` records;
  hard links are sent as type ``1`` members.  The tar is byte-identical
  across runs for an unchanged tree.

Typical use::

    from dockercli import capture_context

    cap = capture_context(tmp_path)
    assert cap.returncode == 0, cap.stderr
    assert "Dockerfile" in cap.names

Only the standard library is used.
"""

from __future__ import annotations

import atexit
import gzip
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from ctxpack.engine.fake import API_VERSION, FakeDaemon, RequestRecord

__all__ = [
    "API_VERSION",
    "Capture",
    "CaptureServer",
    "DockerCLI",
    "DockerCLITimeout",
    "RequestRecord",
    "capture_context",
    "docker_cli_missing_reason",
    "docker_executable",
    "shared_server",
    "stop_shared_server",
]

StrPath = Union[str, "os.PathLike[str]"]

_TAR_BLOCK = 512


# --------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------


def docker_executable() -> str | None:
    """Return the path of the ``docker`` CLI found on ``PATH``, or None."""
    return shutil.which("docker")


_missing_reason_lock = threading.Lock()
_missing_reason_cache: list[str | None] = []


def docker_cli_missing_reason() -> str | None:
    """Explain why the docker CLI cannot be used for captures, or return None.

    Checks that unix sockets are available, that ``docker`` is on ``PATH``
    and runs, and finally performs one real smoke capture of a tiny context
    (on a private, short-lived server) so that a CLI which no longer supports
    the legacy builder, or otherwise fails to upload, is reported here rather
    than as confusing test failures.  The result is cached for the process.
    """
    with _missing_reason_lock:
        if not _missing_reason_cache:
            _missing_reason_cache.append(_compute_missing_reason())
        return _missing_reason_cache[0]


def _compute_missing_reason() -> str | None:
    if not hasattr(socket, "AF_UNIX"):
        return "unix domain sockets are not available on this platform"
    exe = docker_executable()
    if exe is None:
        return "docker CLI not found on PATH"
    try:
        proc = subprocess.run(
            [exe, "--version"],
            env=_clean_environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {exe} --version: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        return f"{exe} --version exited with {proc.returncode}: {err}"
    version = proc.stdout.decode("utf-8", "replace").strip()
    try:
        with tempfile.TemporaryDirectory(prefix="ctxpack-smoke-") as tmp:
            ctx = os.path.join(tmp, "ctx")
            os.mkdir(ctx)
            with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
                fh.write("FROM scratch\n")
            with CaptureServer() as server:
                cap = capture_context(ctx, server=server, timeout=30)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable"
        return f"{version}: smoke capture failed: {exc!r}"
    if cap.returncode != 0 or cap.tar is None:
        detail = cap.stderr.strip().splitlines()[-1:] or ["no output"]
        return (
            f"{version}: smoke capture failed (exit {cap.returncode}, "
            f"{'no upload' if cap.tar is None else 'uploaded'}): {detail[0]}"
        )
    if "Dockerfile" not in cap.names:
        return f"{version}: smoke capture did not contain the Dockerfile"
    return None


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass
class Capture:
    """Result of one ``docker build`` run against a :class:`CaptureServer`."""

    #: The full command line that was run.
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    #: Query parameters of the build request ({} when nothing was uploaded).
    #: For repeated keys (e.g. several ``-t``) use :attr:`query_items`.
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    #: Headers of the build request ([] when nothing was uploaded).
    headers: list[tuple[str, str]]
    #: Build request body exactly as sent (gzip with ``--compress``), or None.
    body: bytes | None
    #: The tar stream (``body`` decompressed), exactly as produced, or None.
    tar: bytes | None
    #: Tar members in stream order (empty when nothing was uploaded).
    members: list[tarfile.TarInfo]
    #: Member names in stream order.
    names: list[str]
    #: Whether ``tar`` ends with a proper end-of-archive marker.  False for
    #: ``-f -`` / Dockerfile outside the context (CLI bug, see module doc).
    tar_complete: bool
    #: Every request the CLI made on the socket, in order.
    requests: list[RequestRecord] = field(default_factory=list)
    #: Wall-clock seconds the CLI ran.
    duration: float = 0.0

    @property
    def uploaded(self) -> bool:
        """Whether the CLI sent a build request."""
        return self.body is not None

    @property
    def cut_short(self) -> str | None:
        """The CLI's ``Error matching PATH: CAUSE`` when a pattern broke only
        in the upload's own walk (e.g. ``\\é``, an escaped non-ASCII
        letter, which Go's regexp refuses): the CLI logs it, stops the walk
        at PATH and uploads the context cut short there, exit 0.  ctxpack
        refuses such rules instead (a PatternError naming file and line;
        docs/semantics.md), so tests treat this as a refusal (:attr:`refused`)."""
        for line in self.stderr.splitlines():
            at = line.find('msg="Error matching ')
            if at >= 0:
                return line[at + 5:].rstrip().removesuffix('"')
        return None

    @property
    def refused(self) -> bool:
        """The CLI sent no context, or one cut short (:attr:`cut_short`)."""
        return self.tar is None or self.cut_short is not None

    @property
    def compressed(self) -> bool:
        """Whether the body was gzip-compressed (``--compress``)."""
        return self.body is not None and self.body[:2] == b"\x1f\x8b"

    def member(self, name: str) -> tarfile.TarInfo:
        """Return the (first) member called ``name``; KeyError if absent."""
        for info in self.members:
            if info.name == name:
                return info
        raise KeyError(name)

    def read(self, name: str) -> bytes:
        """Return the content of the regular-file member ``name``."""
        info = self.member(name)
        if self.tar is None or not info.isfile():
            raise KeyError(f"{name} is not a regular file in the capture")
        return self.tar[info.offset_data : info.offset_data + info.size]

    def check(self) -> Capture:
        """Raise AssertionError with the CLI output unless the build uploaded
        a context and exited 0; return self so calls can be chained."""
        if self.returncode != 0 or self.tar is None:
            raise AssertionError(
                f"docker build failed (exit {self.returncode}, "
                f"uploaded={self.uploaded}): {' '.join(self.args)}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
            )
        return self


class DockerCLITimeout(TimeoutError):
    """``docker build`` did not finish in time; the process was killed."""

    def __init__(self, args: Sequence[str], timeout: float, stdout: str, stderr: str):
        self.cmd = list(args)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"docker build timed out after {timeout}s and was killed: "
            f"{' '.join(self.cmd)}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


# --------------------------------------------------------------------------
# Server: the package's fake daemon, keeping every body
# --------------------------------------------------------------------------


class CaptureServer(FakeDaemon):
    """The fake daemon (:class:`ctxpack.engine.fake.FakeDaemon`) keeping
    every build body in memory: the docker CLI's exact upload."""


# --------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------


def _clean_environ() -> dict[str, str]:
    """os.environ without any DOCKER_* variable."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCKER_")}


def _parse_tar(data: bytes) -> tuple[list[tarfile.TarInfo], bool]:
    """Parse members of ``data`` in order, tolerating a missing tail.

    Returns the members and whether the archive had its end-of-archive
    marker right after the last member.
    """
    # Pad so a truncated last member / missing end blocks still parse;
    # extra zero blocks after a proper end-of-archive are ignored.
    if not any(data):  # no members at all: tarfile refuses to open it
        return [], len(data) >= 2 * _TAR_BLOCK
    padded = data + b"\0" * (-len(data) % _TAR_BLOCK) + b"\0" * (2 * _TAR_BLOCK)
    with tarfile.open(fileobj=io.BytesIO(padded), mode="r:") as tf:
        members = tf.getmembers()
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + (-(-last.size // _TAR_BLOCK) * _TAR_BLOCK if last.isfile() else 0)
    complete = len(data) >= end + 2 * _TAR_BLOCK and not any(data[end:end + 2 * _TAR_BLOCK])
    return members, complete


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


def capture_context(
    context_dir: StrPath,
    *,
    dockerfile: StrPath | None = None,
    stdin: bytes | None = None,
    extra_args: Sequence[str] = (),
    cwd: StrPath | None = None,
    server: CaptureServer | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> Capture:
    """Run ``docker build`` on ``context_dir`` and capture what it uploads.

    The command is ``docker build [-f DOCKERFILE] *EXTRA_ARGS CONTEXT_DIR``
    run in ``cwd`` with ``DOCKER_BUILDKIT=0``, ``DOCKER_HOST`` pointing at
    ``server`` (default: the shared server, see :func:`shared_server`),
    ``DOCKER_CONFIG`` set to a fresh empty directory and no other inherited
    ``DOCKER_*`` variables.  ``env`` adds/overrides variables on top of that.

    ``stdin`` is fed to the process (use with ``dockerfile="-"`` or a context
    of ``"-"``); otherwise stdin is /dev/null.

    A CLI failure (e.g. an invalid ``.dockerignore`` pattern) is *not* an
    exception: the returned :class:`Capture` has ``returncode != 0``, the
    message in ``stderr`` and ``tar is None`` if nothing was uploaded.  If
    the CLI does not finish within ``timeout`` seconds its process group is
    killed and :class:`DockerCLITimeout` is raised.
    """
    exe = docker_executable()
    if exe is None:
        raise FileNotFoundError("docker CLI not found on PATH")
    if server is None:
        server = shared_server()
    elif not server.running:
        server.start()

    args = [exe, "build"]
    if dockerfile is not None:
        args += ["-f", os.fspath(dockerfile)]
    args += list(extra_args)
    args.append(os.fspath(context_dir))

    deadline = time.monotonic() + timeout
    if not server.build_lock.acquire(timeout=timeout):
        raise DockerCLITimeout(args, timeout, "", "timed out waiting for the build lock")
    try:
        with tempfile.TemporaryDirectory(prefix="ctxpack-dockercfg-") as config_dir:
            run_env = _clean_environ()
            run_env.update(
                DOCKER_BUILDKIT="0",
                DOCKER_HOST=server.docker_host,
                DOCKER_CONFIG=config_dir,
            )
            if env:
                run_env.update(env)
            started = time.monotonic()
            proc = subprocess.Popen(
                args,
                cwd=os.fspath(cwd) if cwd is not None else None,
                env=run_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout kills the whole group
            )
            try:
                out, err = proc.communicate(stdin, timeout=max(0.0, deadline - started))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                try:
                    out, err = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    out, err = b"", b""
                raise DockerCLITimeout(
                    args, timeout,
                    out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                ) from None
            except BaseException:
                _kill_group(proc)
                proc.wait()
                raise
            duration = time.monotonic() - started
            requests = server.requests_since(started, proc.pid)
    finally:
        server.build_lock.release()

    build = next((r for r in requests if r.method == "POST" and r.path == "/build"), None)
    body = build.body if build is not None else None
    tar: bytes | None = None
    members: list[tarfile.TarInfo] = []
    complete = False
    if body is not None:
        tar = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        members, complete = _parse_tar(tar)
    return Capture(
        args=args,
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        query=build.query if build is not None else {},
        query_items=list(build.query_items) if build is not None else [],
        headers=list(build.headers) if build is not None else [],
        body=body,
        tar=tar,
        members=members,
        names=[m.name for m in members],
        tar_complete=complete,
        requests=requests,
        duration=duration,
    )


# --------------------------------------------------------------------------
# Shared server
# --------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: CaptureServer | None = None


def shared_server() -> CaptureServer:
    """Return the process-wide capture server, starting it on first use.

    Thread-safe.  Builds through it are serialized by
    :attr:`CaptureServer.build_lock`.  Stopped by :func:`stop_shared_server`
    (also registered with :mod:`atexit`).
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = CaptureServer().start()
        return _shared


def stop_shared_server() -> None:
    """Stop the shared server if it was started (idempotent)."""
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        server.stop()


atexit.register(stop_shared_server)


class DockerCLI:
    """Convenience wrapper binding :func:`capture_context` to one server.

    This is what the ``docker_cli`` pytest fixture returns.
    """

    def __init__(self, server: CaptureServer | None = None) -> None:
        self._server = server

    @property
    def server(self) -> CaptureServer:
        return self._server if self._server is not None else shared_server()

    def capture(
        self,
        context_dir: StrPath,
        *,
        dockerfile: StrPath | None = None,
        stdin: bytes | None = None,
        extra_args: Sequence[str] = (),
        cwd: StrPath | None = None,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
    ) -> Capture:
        """See :func:`capture_context`."""
        return capture_context(
            context_dir, dockerfile=dockerfile, stdin=stdin, extra_args=extra_args,
            cwd=cwd, server=self.server, timeout=timeout, env=env,
        )
