"""Daemons and networks that misbehave give a clear error, a distinct exit
code and never a hang (issue 16): a TLS engine whose certificate the client's
CA did not sign, one whose certificate has expired, a daemon that accepts and
then says nothing (or stops in the middle of an answer), a connect that
hangs (``--timeout``, ``DOCKER_CLIENT_TIMEOUT``, ``timeout=``: exit 7), and an
ssh host whose key does not match known_hosts.

Every engine here is a local stand-in (127.0.0.1 or a unix socket); every
command runs under a timeout.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dockerd as harness
from ctxpack.engine.fake import FakeDaemon, Reply

ROOT = Path(__file__).resolve().parents[1]
ON_CI = os.environ.get("CI", "").lower() == "true"
UNREACHABLE = 5  # EngineUnreachableError's exit code (ctxpack.errors)


def _need(ok: bool, reason: str) -> None:
    if not ok:
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def build(ctx: Path, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    e = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "-q", str(ctx)], capture_output=True,
                          text=True, env=e, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "a.txt").write_text("a\n")
    return root


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, capture_output=True, timeout=60, check=True)


def _expired_server_cert(directory: Path) -> None:
    """Replace ``server-cert.pem`` with one of the same CA that expired in 2020."""
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "ca.cnf").write_text(
        "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n"
        "default_md = sha256\npolicy = p\n[ p ]\ncommonName = supplied\n")
    _openssl(directory, "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca-key.pem",
             "-in", "server.csr", "-out", "server-cert.pem", "-startdate", "20200101000000Z",
             "-enddate", "20200102000000Z", "-extfile", "server.ext")


class _TLSEngine:
    """A TLS listener on 127.0.0.1 that completes handshakes (or fails them)
    and answers nothing: the client's verification is what is tested."""

    def __init__(self, certs: Path):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs / "server-cert.pem"), str(certs / "server-key.pem"))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def tls_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    _need(shutil.which("openssl") is not None, "openssl is needed to make certificates")
    server = Path(harness.make_tls_files(str(tmp_path / "server-side")))
    other = Path(harness.make_tls_files(str(tmp_path / "other-ca")))
    yield server, other


def _tls_env(port: int, cert_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(cert_path),
               DOCKER_CONFIG=str(cert_path / "cfg"))
    return env


def _build_against_tls(context: Path, server_certs: Path, client_certs: Path) -> subprocess.CompletedProcess[str]:
    """``build`` against a :class:`_TLSEngine` with ``server_certs``, the
    client verifying with ``client_certs``' CA."""
    engine = _TLSEngine(server_certs)
    try:
        return build(context, _tls_env(engine.port, client_certs))
    finally:
        engine.close()


def test_tls_engine_signed_by_another_ca_is_refused(context: Path, tls_pair: tuple[Path, Path]) -> None:
    server, other = tls_pair
    p = _build_against_tls(context, server, other)
    assert p.returncode == UNREACHABLE, p.stderr
    assert "certificate" in p.stderr.lower() and "Traceback" not in p.stderr
    assert p.stderr.startswith("ctxpack: error:")


def test_tls_engine_with_an_expired_certificate_is_refused(context: Path, tls_pair: tuple[Path, Path]) -> None:
    server, _ = tls_pair
    _expired_server_cert(server)
    p = _build_against_tls(context, server, server)
    assert p.returncode == UNREACHABLE, p.stderr
    assert "expired" in p.stderr.lower() and "Traceback" not in p.stderr


MUTE_EXIT = 7  # EngineTimeoutError's exit code


def test_a_daemon_that_accepts_and_never_answers_times_out(context: Path, tmp_path: Path) -> None:
    import time

    with FakeDaemon(tmp_path, mute=True) as mute:
        path = mute.socket_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{path}", DOCKER_CONFIG=str(tmp_path / "cfg"))
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "-q", "--timeout", "0.5", str(context)],
                           capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=60,
                           stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        # The docker-py / Compose variable is honoured the same way.
        q = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "-q", str(context)], capture_output=True,
                           text=True, env={**env, "PYTHONPATH": str(ROOT), "DOCKER_CLIENT_TIMEOUT": "0.5"},
                           timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == MUTE_EXIT, p.stderr
    assert f"unix://{path}" in p.stderr and "GET /_ping within 0.5s" in p.stderr, p.stderr
    assert "--timeout" in p.stderr and "Traceback" not in p.stderr
    assert took < 20, took  # not the 30 s default
    assert q.returncode == MUTE_EXIT and "within 0.5s" in q.stderr, q.stderr


def test_a_bad_timeout_is_a_usage_error(context: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(PYTHONPATH=str(ROOT), DOCKER_HOST="unix:///nonexistent.sock")
    p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "--timeout", "0", str(context)],
                       capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "--timeout" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", str(context)], capture_output=True, text=True,
                       env={**env, "DOCKER_CLIENT_TIMEOUT": "soon"}, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "DOCKER_CLIENT_TIMEOUT='soon'" in p.stderr, p.stderr


def test_library_timeout_covers_the_answer_and_silence_mid_answer(tmp_path: Path) -> None:
    import time

    from ctxpack.engine.client import Engine
    from ctxpack.errors import EngineTimeoutError

    with FakeDaemon(mute=True) as mute:
        path = mute.socket_path
        with Engine.connect(f"unix://{path}", env={}, timeout=0.3) as engine:
            t0 = time.monotonic()
            with pytest.raises(EngineTimeoutError) as e:
                engine.ping()
            assert time.monotonic() - t0 < 5
    assert e.value.endpoint == f"unix://{path}" and e.value.timeout == 0.3 and e.value.exit_code == MUTE_EXIT
    # A head, then nothing: the read-idle timeout ends the wait for the body.
    head = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 100\r\n\r\nOK"
    with FakeDaemon(replies={"/_ping": Reply(head, then="hold")}) as half:
        with Engine.connect(half.docker_host, env={}, timeout=0.3) as engine:
            with pytest.raises(EngineTimeoutError) as e2:
                engine.ping()
    assert "said nothing for 0.3s in the middle of its answer" in str(e2.value), e2.value


def test_connect_timeout_names_the_endpoint() -> None:
    from ctxpack.engine.client import Engine
    from ctxpack.errors import EngineTimeoutError

    # A listener with a full backlog: the kernel drops further SYNs, so the
    # next connect hangs as it would to a host that drops packets.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    filler = [socket.create_connection(("127.0.0.1", port), timeout=2)]
    for _ in range(3):
        s = socket.socket()
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            pass
        filler.append(s)
    try:
        with Engine.connect(f"tcp://127.0.0.1:{port}", env={}, timeout=0.4) as engine:
            with pytest.raises(EngineTimeoutError) as e:
                engine.ping()
    finally:
        srv.close()
        for s in filler:
            s.close()
    assert f"tcp://127.0.0.1:{port}" in str(e.value) and "no connection within 0.4s" in str(e.value), e.value


def test_ssh_connect_timeout_follows_the_timeout() -> None:
    from ctxpack.engine.hosts import open_transport
    from ctxpack.engine.transport import SshTransport

    t = open_transport("ssh://me@h", connect_timeout=2.5, read_timeout=2.5)
    assert isinstance(t, SshTransport) and "ConnectTimeout=3" in t.argv() and "BatchMode=yes" in t.argv()
    assert "ConnectTimeout=30" in SshTransport("h").argv()


def test_ssh_host_key_mismatch_fails_with_sshs_message(context: Path, tmp_path: Path) -> None:
    import sshd as sshd_harness

    try:
        sshd_harness.ensure_sshd()  # installs openssh-server where it is missing and we may
    except sshd_harness.SshdUnavailable as e:
        _need(False, f"needs openssh-server: {e}")
    _need(shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None, "needs the ssh client")
    sshd_bin = "/usr/sbin/sshd"
    d = tmp_path / "ssh"
    d.mkdir()
    os.chmod(d, 0o700)
    for name in ("host", "wrong", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    port = _free_port()
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
                   f"PidFile {d / 'pid'}\nStrictModes no\nPasswordAuthentication no\nUsePAM no\n")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(cfg)], stderr=subprocess.PIPE)
    try:
        # known_hosts names another key for the host: ssh must refuse, not ask.
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} " + (d / "wrong.pub").read_text().split(" ", 2)[0] + " "
                                       + (d / "wrong.pub").read_text().split(" ", 2)[1] + "\n")
        (d / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {d / 'user'}\n  UserKnownHostsFile {d / 'known_hosts'}\n"
                                  "  StrictHostKeyChecking yes\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"ssh://root@127.0.0.1:{port}", DOCKER_CONFIG=str(d / "cfg"),
                   CTXPACK_SSH=f"ssh -F {d / 'config'}")
        p = build(context, env, timeout=90)
    finally:
        proc.terminate()
        proc.wait(10)
    assert p.returncode == UNREACHABLE, p.stderr
    assert "host key" in p.stderr.lower() and "Traceback" not in p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_on_a_terminal(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its controlling terminal (the
    case where an ssh prompt could wait for a human); its output and status."""
    import fcntl
    import pty
    import select
    import termios
    import time

    master, slave = pty.openpty()

    def take_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=take_tty, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal has gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            proc.wait()
            raise AssertionError(f"still running after {timeout}s (waiting for a prompt?): {out.decode(errors='replace')}")
        return proc.wait(10), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ssh_that_asks_for_a_password_fails_at_once(context: Path, tmp_path: Path) -> None:
    """An sshd that only takes passwords, the host key trusted, ctxpack on a
    terminal and an askpass program at hand: ssh must ask neither
    (BatchMode=yes); ctxpack exits 5 with ssh's own message, in seconds."""
    import time

    import sshd as sshd_harness

    try:
        sshd_harness.ensure_sshd()
    except sshd_harness.SshdUnavailable as e:
        _need(False, f"needs openssh-server: {e}")
    _need(shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None, "needs the ssh client")
    d = tmp_path / "ssh"
    d.mkdir()
    os.chmod(d, 0o700)
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\nStrictModes no\n"
                   "PubkeyAuthentication no\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n"
                   "UsePAM no\nAuthenticationMethods password\n")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        host_pub = (d / "host.pub").read_text().split(" ", 2)
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        (d / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {d / 'user'}\n  UserKnownHostsFile {d / 'known_hosts'}\n"
                                  "  StrictHostKeyChecking yes\n")
        for _ in range(50):  # sshd listening?
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        # A desktop's askpass program that waits for a human: what ssh runs
        # to ask for a password when it has no terminal (ctxpack's helper has
        # none: its own session).  BatchMode=yes must keep ssh from it.
        askpass = d / "askpass"
        askpass.write_text(f"#!/bin/sh\ntouch {d / 'asked'}\nsleep 120\necho wrong\n")
        os.chmod(askpass, 0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"ssh://root@127.0.0.1:{port}", DOCKER_CONFIG=str(d / "cfg"),
                   CTXPACK_SSH=f"ssh -F {d / 'config'}", PYTHONPATH=str(ROOT), SSH_ASKPASS=str(askpass),
                   SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        t0 = time.monotonic()
        rc, out = _run_on_a_terminal([sys.executable, "-m", "ctxpack.cli", "build", "-q", str(context)], env, 60)
        took = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    assert rc == UNREACHABLE, out
    assert "Permission denied" in out and "password" in out and "Traceback" not in out, out
    assert "assword:" not in out.replace("Permission denied (password)", ""), out  # no prompt was shown
    assert took < 30, took
    assert not (d / "asked").exists()  # the askpass program never ran


# A BuildKit engine that takes the session upgrade and the ``/build``
# request, then never calls the session (no HTTP/2 preface) and never says
# another byte: the daemon that stops calling.
_SESSION_THEN_SILENCE = {
    "/session": Reply(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", then="hold"),
    "/build": Reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    then="hold"),
}


def test_a_session_whose_daemon_stops_calling_times_out(context: Path, tmp_path: Path) -> None:
    import time

    with FakeDaemon(tmp_path, api_version="1.41", builder_version="2", replies=_SESSION_THEN_SILENCE) as engine:
        path = engine.socket_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{path}", DOCKER_CONFIG=str(tmp_path / "cfg"), PYTHONPATH=str(ROOT))
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "--timeout", "1", str(context)],
                           capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        seen = [f"{r.method} {r.target.split('?')[0]}" for r in engine.take()]
    assert "POST /v1.41/session" in seen and "POST /v1.41/build" in seen, seen
    assert p.returncode == MUTE_EXIT, p.stderr
    assert f"unix://{path}" in p.stderr and "said nothing for 1s" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert took < 30, took


def test_watch_build_takes_the_timeout(context: Path, tmp_path: Path) -> None:
    """``watch --build --timeout``: a stalled engine fails that build (exit 7
    in the JSON line, the endpoint named) and the watcher goes on."""
    import json
    import select
    import time

    with FakeDaemon(tmp_path, mute=True) as mute:
        path = mute.socket_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{path}", DOCKER_CONFIG=str(tmp_path / "cfg"), PYTHONPATH=str(ROOT),
                   CTXPACK_CACHE_DIR=str(tmp_path / "cache"))
        proc = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "watch", "--build", "--json", "--timeout", "0.5",
                                 str(context)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        failed = None
        try:
            deadline = time.monotonic() + 60
            buf = b""
            while failed is None and time.monotonic() < deadline and proc.poll() is None:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    buf += os.read(proc.stdout.fileno(), 65536)
                    for line in buf.split(b"\n"):
                        if line.startswith(b"{") and line.endswith(b"}"):
                            doc = json.loads(line).get("build", {})
                            if "error" in doc:
                                failed = doc
            still_running = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(20)
    assert failed is not None, buf.decode(errors="replace")
    assert failed["exit_code"] == MUTE_EXIT and f"unix://{path}" in failed["error"] and "0.5s" in failed["error"], failed
    assert still_running
