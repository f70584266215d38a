"""The BuildKit session against the real engine (tests/dockerd.py's dockerd).

* The image from a ctxpack session build equals the image the docker CLI
  20.10 (``/usr/bin/docker``, Debian's docker.io, ``DOCKER_BUILDKIT=1``)
  builds through its own session, and the image from ctxpack's tar (files,
  modes, owners, contents, link targets, hard links), on odd trees and on
  cases of tests/proof_cases.py.
* ``RUN --mount=type=secret`` sees the secret, the image does not hold it;
  ``RUN --mount=type=ssh`` reaches a real ssh-agent (``ssh-add -l`` run in
  the build, from binaries bind-mounted out of the context).
* Incremental: after one file changes, the second build asks for that file
  only (REQ/DATA counted by the session).
* Failures end cleanly: a session the daemon drops, health checks delayed
  by a busy GIL, an unknown secret id, no ssh agent.

Every build has a deadline; the module skips without the engine, and fails
under ``CI=true``.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
from relays import Relay
from ctxpack import open_context
from ctxpack.engine.session import Session, SessionBuildResult, parse_secret, parse_ssh, session_build
from ctxpack.engine.session.core import DIFF_COPY
from ctxpack.engine.session.grpcserver import Method
from ctxpack.errors import SessionConfigError
from proof_cases import CASES
from test_minimal_proof import diff_trees, export_tree, pack_bytes, write_tree

CLI_2010 = "/usr/bin/docker"
BUILD_TIMEOUT = 120.0


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def engine(dockerd: harness.Dockerd) -> harness.Dockerd:
    return dockerd


@pytest.fixture(scope="module")
def cli2010(engine: harness.Dockerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ``/usr/bin/docker`` (20.10) against the suite's dockerd."""
    reason = None
    if not os.access(CLI_2010, os.X_OK):
        reason = f"{CLI_2010} (Debian's docker.io 20.10 CLI) is not installed"
    else:
        out = subprocess.run([CLI_2010, "--version"], capture_output=True, text=True, timeout=30)
        if "20.10" not in out.stdout:
            reason = f"{CLI_2010} is not the 20.10 CLI: {out.stdout.strip()}"
    if reason:
        if _ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    cfg = tmp_path_factory.mktemp("dockercfg")
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(cfg), "DOCKER_CONFIG": str(cfg),
            "DOCKER_BUILDKIT": "1", "DOCKER_HOST": f"unix://{engine.socket}"}


def ctxpack_session(engine: harness.Dockerd, root: Path, **kw: Any) -> SessionBuildResult:
    ctx = open_context(root, dialect="buildkit", dockerfile=kw.pop("dockerfile", None))
    kw.setdefault("network_mode", "none")
    kw.setdefault("timeout", BUILD_TIMEOUT)
    return session_build(ctx, engine.socket, **kw)


def cli_session(env: dict[str, str], root: Path, *args: str) -> str:
    iid = root.parent / f"{root.name}.iid"
    proc = subprocess.run([CLI_2010, "build", "--network", "none", "--no-cache", "--iidfile", str(iid), *args, str(root)],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
    assert proc.returncode == 0, f"docker 20.10 build failed:\n{proc.stderr[-3000:]}"
    return iid.read_text().strip()


def tar_build(engine: harness.Dockerd, root: Path) -> str:
    ctx = open_context(root, dialect="buildkit")
    r = engine.build(pack_bytes(ctx), version="2", extra_query={"networkmode": "none", "nocache": "1"},
                     timeout=BUILD_TIMEOUT)
    assert r.ok, r.describe()
    assert r.image_id
    return r.image_id


def ctx_tree(engine: harness.Dockerd, image: str) -> dict[str, tuple[Any, ...]]:
    return {k: v for k, v in export_tree(engine, image).items() if k == "ctx" or k.startswith("ctx/")}


# --------------------------------------------------------------------------
# trees
# --------------------------------------------------------------------------

COPY_ALL = "FROM bb:latest\nCOPY . /ctx/\n"


def odd_tree(root: Path) -> Path:
    """Odd names, every entry type a context can hold, modes, an ignore file
    with exceptions under an excluded directory."""
    files = {
        "Dockerfile": COPY_ALL,
        ".dockerignore": "*.tmp\nbuild/\n!build/keep/**\nsecret*\n",
        "plain.txt": "plain\n",
        "sp ace and\ttab": "ws\n",
        "-leading-dash": "dash\n",
        "ünï/cødé.txt": "unicode\n",
        "back\\slash": "bs\n",
        "quote\"s'": "q\n",
        "a.tmp": "ignored\n",
        "secret.key": "ignored\n",
        "build/out.o": "ignored\n",
        "build/keep/me.txt": "kept\n",
        "deep/" + "/".join(f"d{i}" for i in range(12)) + "/leaf": "deep\n",
        "big.bin": os.urandom(200_000),
        "empty-file": "",
    }
    root.mkdir(parents=True)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "empty-dir").mkdir()
    os.symlink("plain.txt", root / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("deep", root / "dir-link")
    os.link(root / "plain.txt", root / "hard-1")
    os.link(root / "plain.txt", root / "ünï/hard-2")
    os.link(root / "big.bin", root / "zz-big-again")
    os.chmod(root / "plain.txt", 0o600)
    os.chmod(root / "-leading-dash", 0o4755)
    os.chmod(root / "empty-dir", 0o1777)
    os.chmod(root / "ünï", 0o700)
    return root


def proof_case_tree(root: Path, case_id: str) -> Path:
    case = next(c for c in CASES if c.id == case_id)
    return write_tree(root, case)


#: A few proof cases that copy from the context without failing.
PROOF_CASES = [c.id for c in CASES if not c.fails and "buildkit" in c.builders and not c.target
               and c.dockerfile_path == "Dockerfile" and not c.build_args][:3]


# --------------------------------------------------------------------------
# images agree
# --------------------------------------------------------------------------


def test_odd_tree_session_equals_cli_session_and_tar(engine, cli2010, tmp_path):
    root = odd_tree(tmp_path / "odd")
    r = ctxpack_session(engine, root, no_cache=True)
    assert r.ok, f"{r.error}\n{r.messages[-5:]}"
    mine = ctx_tree(engine, r.image_id)
    theirs = ctx_tree(engine, cli_session(cli2010, root))
    tar = ctx_tree(engine, tar_build(engine, root))
    assert "ctx/build/keep/me.txt" in mine and "ctx/build/out.o" not in mine and "ctx/a.tmp" not in mine
    links = {k for k, v in mine.items() if v[0] == "hardlink"}
    assert len(links) == 3, links  # hard-1 and ünï/hard-2 share plain.txt, zz-big-again big.bin
    assert mine["ctx/rel-link"][0] == "symlink" and mine["ctx/abs-link"][4] == "/etc/passwd"
    d1 = diff_trees(theirs, mine)
    assert not d1, "ctxpack session vs docker 20.10 session:\n" + "\n".join(d1[:30])
    d2 = diff_trees(tar, mine)
    assert not d2, "ctxpack session vs ctxpack tar:\n" + "\n".join(d2[:30])
    # the session served what `ctxpack ls --dialect buildkit` lists
    ctx = open_context(root, dialect="buildkit")
    from ctxpack.walker import list_entries

    listed = [e.path for e in list_entries(ctx)]
    full = [d for d in r.stats.dirs if d.dir_name == "context" and d.entries > 1]
    assert full and full[-1].entries == len(listed)


def test_socket_and_fifo_served_as_the_cli_session_serves_them(engine, cli2010, tmp_path):
    """Trial finding 24: a unix socket in the context (a dev server's) is in
    the 20.10 CLI's session image as an empty regular file with the
    socket's permission bits (fsutil lists it so), a FIFO is in neither
    image; ctxpack's session gives the same image, and `ls --dialect
    buildkit` lists what the session serves (socket and FIFO)."""
    from ctxpack.engine.session.filesync import context_listing

    root = tmp_path / "sockctx"
    (root / "tmp").mkdir(parents=True)
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / "tmp" / "plain").write_text("p\n")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(root / "tmp" / "puma.sock"))
        os.chmod(root / "tmp" / "puma.sock", 0o751)
        os.mkfifo(root / "tmp" / "fifo", 0o600)
        theirs = ctx_tree(engine, cli_session(cli2010, root))
        r = ctxpack_session(engine, root, no_cache=True)
        assert r.ok, r.error
        ours = ctx_tree(engine, r.image_id)
        listed = subprocess.run([sys.executable, "-m", "ctxpack.cli", "ls", "--dialect", "buildkit", str(root)],
                                capture_output=True, text=True, timeout=60)
        served = [e.path for e in context_listing(open_context(root, dialect="buildkit")).entries]
    finally:
        s.close()
    assert theirs["ctx/tmp/puma.sock"][:2] == ("file", 0o751) and theirs["ctx/tmp/puma.sock"][4] == b""
    assert "ctx/tmp/fifo" not in theirs
    assert diff_trees(theirs, ours) == []
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [p + "/" if p == "tmp" else p for p in served]
    assert "tmp/puma.sock" in served and "tmp/fifo" in served


@pytest.mark.parametrize("case_id", PROOF_CASES)
def test_proof_case_session_equals_cli_session_and_tar(engine, cli2010, tmp_path, case_id):
    root = proof_case_tree(tmp_path / "ctx", case_id)
    r = ctxpack_session(engine, root, no_cache=True)
    assert r.ok, r.error
    mine = export_tree(engine, r.image_id)
    d = diff_trees(export_tree(engine, cli_session(cli2010, root)), mine)
    assert not d, "ctxpack session vs docker 20.10 session:\n" + "\n".join(d[:30])
    d = diff_trees(export_tree(engine, tar_build(engine, root)), mine)
    assert not d, "ctxpack session vs ctxpack tar:\n" + "\n".join(d[:30])


# --------------------------------------------------------------------------
# secrets and ssh
# --------------------------------------------------------------------------


def test_secret_mount_seen_in_run_and_absent_from_image(engine, tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    value = "tok-" + os.urandom(8).hex()
    (tmp_path / "tok.txt").write_text(value)
    (root / "Dockerfile").write_text(
        "FROM bb:latest\n"
        "RUN --mount=type=secret,id=tok,required "
        f"test \"$(cat /run/secrets/tok)\" = \"{value}\" && echo seen > /seen && ls -a /run/secrets > /listing\n")
    r = ctxpack_session(engine, root, secrets=[parse_secret(f"id=tok,src={tmp_path / 'tok.txt'}")], no_cache=True)
    assert r.ok, r.error
    fs = export_tree(engine, r.image_id)
    assert fs["seen"][4] == b"seen\n"
    assert "run/secrets/tok" not in fs
    assert not any(isinstance(v[4], bytes) and value.encode() in v[4] for v in fs.values())
    assert r.stats.secrets_asked == ["tok"]
    assert not any(value in str(m) for m in r.messages)


def test_unknown_secret_id_is_a_clear_build_error(engine, tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nRUN --mount=type=secret,id=nope,required cat /run/secrets/nope\n")
    r = ctxpack_session(engine, root, no_cache=True)
    assert not r.ok and r.error
    assert "nope" in r.error and "not found" in r.error, r.error
    assert r.stats.secrets_asked == ["nope"]


@pytest.fixture
def ssh_agent(tmp_path):
    tools = [shutil.which(t) for t in ("ssh-agent", "ssh-add", "ssh-keygen")]
    if not all(tools):
        if _ci():
            pytest.fail("ssh-agent/ssh-add/ssh-keygen required on CI (openssh-client)", pytrace=False)
        pytest.skip("openssh-client not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ctxpack-test-key", "-f", str(key)],
                       check=True, timeout=30, capture_output=True)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", str(key)], check=True, timeout=30, env=env, capture_output=True)
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait(10)


def _ssh_add_bundle(root: Path) -> None:
    """``ssh-add``, its libraries and the dynamic loader, for a bind mount
    into a busybox build (no ssh in the base image)."""
    b = root / "sshbin"
    b.mkdir()
    ssh_add = shutil.which("ssh-add")
    assert ssh_add
    shutil.copy(ssh_add, b / "ssh-add")
    out = subprocess.run(["ldd", ssh_add], capture_output=True, text=True, timeout=30, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/") and os.path.exists(path):
            shutil.copy(path, b / os.path.basename(path))


def test_ssh_mount_reaches_a_working_agent(engine, tmp_path, ssh_agent):
    root = tmp_path / "ssh"
    root.mkdir()
    _ssh_add_bundle(root)
    (root / "Dockerfile").write_text(
        "FROM bb:latest\n"
        "RUN --mount=type=bind,source=sshbin,target=/x --mount=type=ssh "
        "/x/ld-linux-x86-64.so.2 --library-path /x /x/ssh-add -l > /keys.txt 2>&1\n")
    r = ctxpack_session(engine, root, ssh=[parse_ssh(f"default={ssh_agent}")], no_cache=True)
    assert r.ok, r.error
    keys = export_tree(engine, r.image_id)["keys.txt"][4]
    assert b"ctxpack-test-key" in keys and b"ED25519" in keys, keys
    assert r.stats.ssh_connections >= 1


def test_ssh_mount_without_agent_is_a_clear_error(engine, tmp_path):
    with pytest.raises(SessionConfigError, match="SSH_AUTH_SOCK is not set"):
        parse_ssh("default", environ={})
    root = tmp_path / "ssh"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nRUN --mount=type=ssh,required true\n")
    r = ctxpack_session(engine, root, no_cache=True)  # no --ssh given
    assert not r.ok and r.error and "ssh" in r.error.lower() and "default" in r.error, r.error


# --------------------------------------------------------------------------
# incremental
# --------------------------------------------------------------------------


def _whole_context(r: SessionBuildResult) -> Any:
    return [d for d in r.stats.dirs if d.dir_name == "context" and d.entries > 1][-1]


def test_rebuild_after_one_change_requests_only_that_file(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))  # the kept listings (listcache)
    root = tmp_path / "inc"
    for i in range(40):
        d = root / f"pkg{i:02d}"
        d.mkdir(parents=True)
        for j in range(50):
            (d / f"f{j:02d}.txt").write_text(f"{i} {j}\n" * 20)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx/\n")
    time.sleep(0.08)  # the directories are older than the racy window: their listing is kept
    first = ctxpack_session(engine, root)
    assert first.ok, first.error
    assert _whole_context(first).requests >= 2000 and _whole_context(first).listing_from == "walk"
    time.sleep(0.01)
    (root / "pkg07" / "f13.txt").write_text("changed\n")
    second = ctxpack_session(engine, root)
    assert second.ok, second.error
    # served from the first build's listing, the changed file's STAT made again
    assert _whole_context(second).listing_from == "cache"
    assert second.stats.context_requests() == ["pkg07/f13.txt"]
    assert second.stats.files_requested == 1
    assert second.stats.data_bytes == len("changed\n")
    # The listing (one STAT per entry) travels again; file data only for the change.
    # (plus gRPC's 5-byte prefix per message and HTTP/2 frame headers)
    listing = sum(d.stat_bytes + 5 * (d.entries + 1) for d in second.stats.dirs)
    assert second.stats.bytes_out - listing < 2000, second.stats.as_dict()
    assert second.stats.bytes_out < first.stats.bytes_out / 3
    fs = export_tree(engine, second.image_id)
    assert fs["ctx/pkg07/f13.txt"][4] == b"changed\n"
    # A new file: its directory changed, so the listing is walked from there on.
    (root / "pkg20" / "new.txt").write_text("new\n")
    os.unlink(root / "pkg31" / "f02.txt")
    third = ctxpack_session(engine, root)
    assert third.ok, third.error
    assert _whole_context(third).listing_from == "cache, then walk"
    assert third.stats.context_requests() == ["pkg20/new.txt"]
    fs = export_tree(engine, third.image_id)
    assert fs["ctx/pkg20/new.txt"][4] == b"new\n" and "ctx/pkg31/f02.txt" not in fs
    assert fs["ctx/pkg07/f13.txt"][4] == b"changed\n" and "ctx/pkg31/f03.txt" in fs


# --------------------------------------------------------------------------
# failures end cleanly
# --------------------------------------------------------------------------


def _gil_held_while_files_stream(engine, tmp_path, hold: float) -> tuple[SessionBuildResult, float]:
    """A build during which, as the context starts streaming, C code holds
    the GIL for ``hold`` seconds (libc ``sleep`` through ``ctypes.PyDLL``,
    which does not release it: like an extension busy with a large file)."""
    root = tmp_path / "gil"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx/\n")
    (root / "big").write_bytes(os.urandom(4 << 20))
    sess = Session(open_context(root, dialect="buildkit"))
    served_copy = sess.methods[DIFF_COPY].handler
    libc = ctypes.PyDLL(None)

    def busy_copy(call):
        if call.first("dir-name") == "context" and not call.metadata.get("followpaths"):
            libc.sleep(int(hold))
        served_copy(call)

    sess.methods[DIFF_COPY] = Method(busy_copy)
    t0 = time.monotonic()
    r = session_build(sess.ctx, engine.socket, session=sess, network_mode="none", no_cache=True, timeout=60)
    return r, time.monotonic() - t0


def test_health_late_but_inside_the_deadline_still_builds(engine, tmp_path):
    r, took = _gil_held_while_files_stream(engine, tmp_path, 3)
    assert r.ok, r.error
    assert took >= 3


def test_health_starved_past_the_deadline_the_daemon_drops_the_session(engine, tmp_path):
    """12 s without an answer: the daemon drops the session while the
    context streams; the build fails with an error that says why, and
    nothing hangs."""
    r, took = _gil_held_while_files_stream(engine, tmp_path, 12)
    assert not r.ok and r.error
    assert r.session_closed, "ctxpack should have seen the daemon drop the connection"
    assert "the session ended" in r.error
    assert "health check" in r.error and "10s" in r.error, r.error
    assert took < 40


# --------------------------------------------------------------------------
# other endpoints: tcp and tcp+TLS (a forwarder in front of the unix socket)
# --------------------------------------------------------------------------


class _Forwarder:
    """127.0.0.1:PORT (plain or TLS) → the daemon's unix socket; one select
    loop per connection (an SSL socket is never used by two threads)."""

    def __init__(self, target: str, tls: "ssl.SSLContext | None"):
        self.target, self.tls = target, tls
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            if self.tls is not None:
                c = self.tls.wrap_socket(c, server_side=True)
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
        except (OSError, ssl.SSLError):
            c.close()
            return
        c.setblocking(False)
        u.setblocking(False)
        bufs = {c: b"", u: b""}  # bytes waiting to be written to the key
        peer = {c: u, u: c}
        try:
            while True:
                want_w = [s for s in (c, u) if bufs[s]]
                r, w, _ = select.select([c, u], want_w, [], 30)
                if not r and not w:
                    return
                for s in w:
                    try:
                        n = s.send(bufs[s])
                        bufs[s] = bufs[s][n:]
                    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        pass
                for s in r:
                    while True:
                        try:
                            data = s.recv(1 << 16)
                        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                            break
                        if not data:
                            return
                        bufs[peer[s]] += data
                        if not (isinstance(s, ssl.SSLSocket) and s.pending()):
                            break
        except OSError:
            return
        finally:
            c.close()
            u.close()

    def close(self) -> None:
        self.srv.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        if _ci():
            pytest.fail("openssl (to make a test certificate) required on CI", pytrace=False)
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("mode", ["tcp", "tls"])
def test_session_over_tcp_and_tls(engine, tmp_path, tls_files, mode):
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import TcpTransport

    server_ctx = client_ctx = None
    if mode == "tls":
        cert, key = tls_files
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
    fwd = _Forwarder(engine.socket, server_ctx)
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / "big").write_bytes(os.urandom(3 << 20))
    (root / "small").write_text("s\n")
    eng = Engine(TcpTransport("127.0.0.1", fwd.port, tls=client_ctx))
    try:
        r = session_build(open_context(root, dialect="buildkit"), eng, network_mode="none", no_cache=True,
                          timeout=BUILD_TIMEOUT)
    finally:
        eng.close()
        fwd.close()
    assert r.ok, r.error
    assert fwd.conns >= 2  # the session's connection and the build's
    fs = export_tree(engine, r.image_id)
    assert fs["ctx/big"][4] == (root / "big").read_bytes()
    assert r.stats.data_bytes >= 3 << 20


# --------------------------------------------------------------------------
# ctxpack build: the session by default, --no-session, --secret, json figures
# --------------------------------------------------------------------------


def _cli(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_build_uses_the_session_and_reports_it(engine, tmp_path):
    """``ctxpack build`` (ctxpack.engine.builder) runs BuildKit builds through
    the session: --secret reaches RUN, the json upload record carries the
    session's figures, a one-file rebuild asks for one context file;
    --no-session sends the tar ("load remote build context")."""
    root = tmp_path / "cli"
    root.mkdir()
    (tmp_path / "tok").write_text("cli-secret")
    (root / "Dockerfile").write_text(
        "FROM bb:latest\nCOPY . /ctx/\n"
        "RUN --mount=type=secret,id=tok,required test \"$(cat /run/secrets/tok)\" = cli-secret\n")
    for i in range(20):
        (root / f"f{i}").write_text(f"{i}\n")
    host = f"unix://{engine.socket}"
    common = ["-H", host, "--builder", "buildkit", "--network", "none", "--progress", "json",
              "--secret", f"id=tok,src={tmp_path / 'tok'}"]

    def session_record(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        assert p.returncode == 0, p.stderr
        docs = [json.loads(line) for line in p.stdout.splitlines()]
        ups = [d["aux"] for d in docs if d.get("id") == "ctxpack.upload"]
        assert ups and ups[-1]["compression"] == "session", ups
        return ups[-1]["session"]

    first = session_record(_cli(str(root), *common))
    assert first["files_requested"] >= 21, first  # 20 files, the Dockerfile (and the dockerfile directory's)
    (root / "f7").write_text("changed\n")
    second = session_record(_cli(str(root), *common))
    assert second["data_bytes"] == len("changed\n"), second
    assert second["files_requested"] == 1, second
    p = _cli(str(root), "-H", host, "--builder", "buildkit", "--no-session", "--secret", f"id=tok,src={tmp_path / 'tok'}")
    assert p.returncode == 2 and "need a BuildKit build with a session" in p.stderr, p.stderr
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx/\n")
    p = _cli(str(root), "-H", host, "--builder", "buildkit", "--network", "none", "--progress", "plain", "--no-session")
    assert p.returncode == 0, p.stderr
    assert "load remote build context" in p.stderr
    p = _cli(str(root), "-H", host, "--builder", "buildkit", "--secret", f"id=x,src={tmp_path / 'missing'}")
    assert p.returncode == 2 and "--secret id=x: file not found" in p.stderr, p.stderr


def test_cli_analysis_error_after_the_session_started_is_the_same_error(engine, tmp_path):
    """The session and POST /build go before the Dockerfile analysis
    (ctxpack.engine.builder.build): when the analysis then refuses the
    Dockerfile, `ctxpack build` still says what the analysis says, with its
    exit code, as --no-session does (which analyses before sending), and
    the daemon's build is cancelled, not waited for."""
    root = tmp_path / "noFrom"
    root.mkdir()
    (root / "Dockerfile").write_text("COPY . /ctx/\n")
    (root / "f").write_text("f\n")
    host = f"unix://{engine.socket}"
    common = ["-H", host, "--builder", "buildkit", "--network", "none", str(root)]
    t = time.monotonic()
    session = _cli(*common, timeout=60)
    took = time.monotonic() - t
    tar = _cli("--no-session", *common, timeout=60)
    assert session.returncode == tar.returncode == 2, (session.stderr, tar.stderr)
    assert "COPY before the first FROM" in session.stderr
    assert session.stderr.splitlines()[-1] == tar.stderr.splitlines()[-1]
    assert took < 20, took


def test_cli_dockerfile_that_is_a_directory_fails_as_the_tar_build_fails(engine, tmp_path):
    """``-f DIR``: the daemon's own "is a directory", through the session as
    with --no-session and the docker CLI (found in a trial: the session served
    the directory as a file and then blamed a change during the upload,
    "build again")."""
    root = tmp_path / "dfdir"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print()\n")
    host = f"unix://{engine.socket}"
    common = ["-H", host, "--builder", "buildkit", "--network", "none", "-f", str(root / "app"), str(root)]
    session = _cli(*common, timeout=60)
    tar = _cli("--no-session", *common, timeout=60)
    assert session.returncode == tar.returncode == 1, (session.stderr, tar.stderr)
    for p in (session, tar):
        last = p.stderr.splitlines()[-1]
        assert "failed to read dockerfile: read " in last and last.endswith("/app: is a directory"), p.stderr
    assert "changed during" not in session.stderr


# --------------------------------------------------------------------------
# remote endpoints: the daemon's own tcp+TLS listener, and ssh (dial-stdio)
# --------------------------------------------------------------------------


def _remote_tree(root: Path) -> Path:
    root.mkdir()
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / ".dockerignore").write_text("skip.me\n")
    (root / "skip.me").write_text("never sent\n")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))  # more than any flow-control window
    (root / "sub").mkdir()
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    os.symlink("run.sh", root / "sub" / "link")
    return root


def _session_builds_over(engine: harness.Dockerd, tmp_path: Path, env: dict[str, str], host: str, *,
                         rebuild: bool = True) -> None:
    """``ctxpack build`` at ``host`` ships the tree through the session
    (files, modes and links checked in the image); with ``rebuild``, a
    second run after one change asks for that file alone (the shared key
    holds over this transport too)."""
    root = _remote_tree(tmp_path / "ctx")
    env = dict(env, PYTHONPATH=str(Path(__file__).resolve().parent.parent), DOCKER_CONFIG=str(tmp_path / "cfg"))
    args = [sys.executable, "-m", "ctxpack.cli", "build", "-H", host, "--builder", "buildkit", "--network", "none",
            "--progress", "json", "--no-snapshot", str(root)]

    def run() -> tuple[str, dict[str, Any]]:
        p = subprocess.run(args, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
        assert p.returncode == 0, p.stderr
        docs = [json.loads(line) for line in p.stdout.splitlines()]
        ups = [d["aux"] for d in docs if d.get("id") == "ctxpack.upload"]
        assert ups and ups[-1]["compression"] == "session", (ups, p.stderr)
        ids = [d["aux"]["ID"] for d in docs if d.get("id") == "moby.image.id"]
        assert ids, docs[-3:]
        return ids[-1], ups[-1]["session"]

    image, first = run()
    assert first["data_bytes"] >= 3 << 20, first
    fs = export_tree(engine, image)
    assert fs["ctx/big.bin"][4] == (root / "big.bin").read_bytes()
    assert fs["ctx/sub/run.sh"][1] & 0o777 == 0o755 and fs["ctx/sub/run.sh"][4] == b"#!/bin/sh\necho hi\n"
    assert fs["ctx/sub/link"][0] == "symlink" and fs["ctx/sub/link"][4] == "run.sh", fs["ctx/sub/link"]
    assert "ctx/skip.me" not in fs
    if not rebuild:
        return
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho changed\n")
    image2, second = run()
    assert second["files_requested"] == 1 and second["data_bytes"] == len("#!/bin/sh\necho changed\n"), second
    assert export_tree(engine, image2)["ctx/sub/run.sh"][4] == b"#!/bin/sh\necho changed\n"


def test_session_through_dockerd_tlsverify(engine, tmp_path):
    if engine.tcp_url is None:
        if _ci():
            pytest.fail("the dockerd harness's --tlsverify listener is required on CI (openssl missing?)", pytrace=False)
        pytest.skip("the dockerd harness has no --tlsverify listener (openssl missing)")
    env = dict(os.environ, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(engine.tls_dir))
    _session_builds_over(engine, tmp_path, env, engine.tcp_url)


def test_session_through_ssh_dial_stdio(engine, sshd, tmp_path):
    # one build: each ssh connection costs a handshake, and the rebuild's
    # logic is the transport-independent one the TLS test covers
    _session_builds_over(engine, tmp_path, sshd.env(), sshd.url, rebuild=False)


# --------------------------------------------------------------------------
# files that change under the transfer; a daemon that falls silent
# --------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["grow", "vanish", "fifo"])
def test_file_changed_during_the_transfer_fails_the_build_naming_it(engine, tmp_path, change):
    """The listing is made, then the file changes before the daemon asks for
    it.  Gone, or not a file any more: never an image with content the
    context does not have (fsutil would send a vanished file empty): the
    build fails naming the path.  Still a file (trial finding 28's
    decision): sent as it is now, the image has those bytes (dockerd takes
    the DATA whatever size the STAT said), and a warning names it."""
    root = tmp_path / "chg"
    (root / "d").mkdir(parents=True)
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / "d" / "moving.txt").write_text("before\n")
    (root / "other").write_text("o\n")
    sess = Session(open_context(root, dialect="buildkit"), config_dir=str(tmp_path / "cfg"))
    sess.prepare()
    sess.filesync.listing("context").wait_complete(30)
    target = root / "d" / "moving.txt"
    if change == "grow":
        target.write_text("before, and then much more\n")
    else:
        target.unlink()
        if change == "fifo":
            os.mkfifo(target)
    t0 = time.monotonic()
    r = session_build(sess.ctx, engine.socket, session=sess, network_mode="none", no_cache=True, timeout=60)
    assert time.monotonic() - t0 < 30
    if change == "grow":
        assert r.ok, r.error
        assert ctx_tree(engine, r.image_id)["ctx/d/moving.txt"][4] == b"before, and then much more\n"
        assert len(r.warnings) == 1 and r.warnings[0].startswith("d/moving.txt: changed after it was listed"), r.warnings
        return
    assert not r.ok
    assert "d/moving.txt: changed during the build's upload" in (r.error or ""), r.error


def test_a_log_written_during_the_build_builds_and_warns(engine, tmp_path):
    """Trial finding 28: a file rewritten continuously through a real session
    build (a dev server's log: 200 kB appended every 10 ms, truncated every
    20 writes) builds, the image has a consistent copy of it (whole writes
    only), and the warning names it."""
    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import UnixTransport

    root = tmp_path / "hot"
    root.mkdir()
    (root / "Dockerfile").write_text(COPY_ALL)
    log = root / "hot.log"
    block = b"".join(b"%06d" % i + b"." * 994 for i in range(200))  # 200 kB, one writer's write
    log.write_bytes(block * 3)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            with open(log, "ab" if n % 20 else "wb") as f:
                f.write(block)
            n += 1
            time.sleep(0.01)

    warnings: list[str] = []
    eng = Engine(UnixTransport(engine.socket))
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        time.sleep(0.1)
        r = build(open_context(root, dialect="buildkit"), eng,
                  BuildOptions(builder="buildkit", session=True, network="none", no_cache=True,
                               record_snapshot=False), warn=warnings.append)
    finally:
        stop.set()
        t.join(5)
        eng.close()
    got = ctx_tree(engine, r.image_id)["ctx/hot.log"][4]
    # whole writes only; none at all is a consistent copy too (read between
    # the writer's truncate and its next write)
    assert len(got) % len(block) == 0 and got == block * (len(got) // len(block)), len(got)
    assert any(w.startswith("hot.log: changed after it was listed") for w in warnings), warnings


class _Freezer(Relay):
    """A relay that can freeze: from :meth:`freeze` on it forwards nothing
    either way (a stalled daemon, or a link that went dead without closing)."""

    def __init__(self, path: str, target: str):
        self.frozen = threading.Event()
        super().__init__(path, target)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if self.frozen.is_set():
                    return  # dropped, and nothing more is read or sent
                b.sendall(data)
        except OSError:
            return


def test_daemon_falling_silent_mid_build_is_a_clear_error_not_a_hang(engine, tmp_path):
    from ctxpack.engine.session import SessionBuild
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import UnixTransport
    from ctxpack.errors import EngineTimeoutError

    root = tmp_path / "mute"
    root.mkdir()
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / "f").write_text("f\n")
    relay = _Freezer(str(tmp_path / "r.sock"), engine.socket)
    sess = Session(open_context(root, dialect="buildkit"), config_dir=str(tmp_path / "cfg"))
    served = sess.methods[DIFF_COPY].handler

    def freeze_then_copy(call):  # the daemon goes quiet as the context is asked for
        relay.frozen.set()
        served(call)

    sess.methods[DIFF_COPY] = Method(freeze_then_copy)
    eng = Engine(UnixTransport(relay.path))
    t0 = time.monotonic()
    try:
        # The daemon answers /build once it has read the Dockerfile through
        # the session, and the first DiffCopy may be the Dockerfile's: the
        # silence can fall before that answer (in SessionBuild) or after it
        # (reading the progress); either way the same clear error.
        with pytest.raises(EngineTimeoutError) as err:
            sb = SessionBuild(eng, sess.ctx, [("networkmode", "none"), ("nocache", "1")], session=sess, silence=3.0)
            try:
                for _ in sb.response.iter_lines():
                    pass
            finally:
                sb.close()
    finally:
        eng.close()
        relay.close()
    assert "stopped talking to the BuildKit session: nothing for 3s" in str(err.value) and relay.path in str(err.value)
    assert err.value.exit_code == 7
    assert time.monotonic() - t0 < 20


# --------------------------------------------------------------------------
# connections that go away: exit 5 (the dropped-connection class), as for a tar upload
# --------------------------------------------------------------------------


class _Cutter(Relay):
    """A relay that closes the session connection (``POST .../session``)
    once ``limit`` bytes went from ctxpack to the daemon on it (trial
    finding 25's cutproxy)."""

    def __init__(self, path: str, target: str, limit: int):
        self.limit = limit
        self.cut = threading.Event()
        super().__init__(path, target)

    def _up(self, c: socket.socket, u: socket.socket) -> None:
        sent, session = 0, None
        try:
            while data := c.recv(65536):
                if session is None:
                    session = b"/session" in data.split(b"\r\n", 1)[0]
                u.sendall(data)
                sent += len(data)
                if session and sent > self.limit:
                    self.cut.set()
                    for s in (c, u):
                        s.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            return


def test_session_connection_cut_mid_upload_is_a_dropped_connection_exit_5(engine, tmp_path):
    """Trial finding 25: the session connection cut while files stream: the
    build fails with ctxpack's sentence first (the endpoint named), the
    daemon's gRPC echo after it, as ConnectionDroppedError (exit 5), as a
    cut tar upload does."""
    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import UnixTransport
    from ctxpack.errors import ConnectionDroppedError

    root = tmp_path / "cut"
    root.mkdir()
    (root / "Dockerfile").write_text(COPY_ALL)
    (root / "big.bin").write_bytes(os.urandom(4 << 20))
    relay = _Cutter(str(tmp_path / "c.sock"), engine.socket, 256 << 10)
    eng = Engine(UnixTransport(relay.path))
    t0 = time.monotonic()
    try:
        with pytest.raises(ConnectionDroppedError) as err:
            build(open_context(root, dialect="buildkit"), eng,
                  BuildOptions(builder="buildkit", session=True, network="none", no_cache=True,
                               record_snapshot=False))
    finally:
        eng.close()
        relay.close()
    assert relay.cut.is_set()
    text = str(err.value)
    assert err.value.exit_code == 5
    assert text.startswith(f"the Docker engine at unix://{relay.path} lost the BuildKit session connection"), text
    assert "the engine reported: " in text and text.index("lost the BuildKit") < text.index("rpc error")
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("path", ["session", "tar"])
def test_engine_stopping_mid_build_is_a_dropped_connection_exit_5(tmp_path, path):
    """Trial finding 29: the engine shuts down (SIGTERM) while a RUN runs; its
    /build stream ends without its final message: exit 5 naming the
    endpoint, on both paths.  A daemon of this test's own (the suite's one
    stays up)."""
    import signal

    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import UnixTransport
    from ctxpack.errors import ConnectionDroppedError

    try:
        own = harness.Dockerd.start(tls=False)
    except harness.DockerdUnavailable as e:
        if _ci():
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    root = tmp_path / "slow"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY f /f\nRUN echo started && sleep 60\n")
    (root / "f").write_text("f\n")
    eng = Engine(UnixTransport(own.socket))
    started = threading.Event()

    def on_message(m: dict) -> None:  # the RUN's own output: it runs
        from ctxpack.engine.messages import decode_status

        if m.get("id") == "moby.buildkit.trace" and isinstance(m.get("aux"), str):
            if any(b"started" in log.msg for log in decode_status(m["aux"]).logs):
                started.set()

    def stop_when_running() -> None:
        if started.wait(60):
            time.sleep(1.0)
            own.proc.send_signal(signal.SIGTERM)

    threading.Thread(target=stop_when_running, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ConnectionDroppedError) as err:
            build(open_context(root, dialect="buildkit"), eng,
                  BuildOptions(builder="buildkit", session=path == "session", network="none", no_cache=True,
                               record_snapshot=False), on_message=on_message)
    finally:
        eng.close()
        own.stop()
    assert started.is_set()
    assert err.value.exit_code == 5
    assert str(err.value).startswith(f"the Docker engine at unix://{own.socket} closed the connection during the build"), \
        err.value
    assert time.monotonic() - t0 < 60
