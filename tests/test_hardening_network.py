"""Daemons and networks that misbehave give a clear error, a distinct exit
code and never a hang (issue 16): a TLS engine whose certificate the client's
CA did not sign, one whose certificate has expired, a daemon that accepts and
then says nothing, and an ssh host whose key does not match known_hosts.

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


def test_tls_engine_signed_by_another_ca_is_refused(context: Path, tls_pair: tuple[Path, Path]) -> None:
    server, other = tls_pair
    engine = _TLSEngine(server)
    try:
        p = build(context, _tls_env(engine.port, other))
    finally:
        engine.close()
    assert p.returncode == UNREACHABLE, p.stderr
    assert "certificate" in p.stderr.lower() and "Traceback" not in p.stderr
    assert p.stderr.startswith("ctxpack: error:")


def test_tls_engine_with_an_expired_certificate_is_refused(context: Path, tls_pair: tuple[Path, Path]) -> None:
    server, _ = tls_pair
    _expired_server_cert(server)
    engine = _TLSEngine(server)
    try:
        p = build(context, _tls_env(engine.port, server))
    finally:
        engine.close()
    assert p.returncode == UNREACHABLE, p.stderr
    assert "expired" in p.stderr.lower() and "Traceback" not in p.stderr


def test_a_daemon_that_accepts_and_never_answers_times_out(context: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])  # keep it open, say nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"unix://{path}", DOCKER_CONFIG=str(tmp_path / "cfg"))
    try:
        p = build(context, env, timeout=120)
    finally:
        srv.close()
        for c in held:
            c.close()
    assert p.returncode != 0 and p.returncode in (3, 5), p.stderr
    assert "Traceback" not in p.stderr and ("did not answer" in p.stderr or "timed out" in p.stderr
                                            or "within" in p.stderr), p.stderr


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
