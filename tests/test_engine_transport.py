"""ctxpack.engine.transport and .hosts: the seam, real sockets, endpoints.

The HTTP servers here are small test servers on unix sockets and 127.0.0.1
(Python's http.server); the endpoint cases were checked against the docker
CLI 28 (``docker -H X version`` / ``docker context show``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxpack.engine import hosts, transport
from ctxpack.engine.transport import Headers, MockResponse, MockTransport, Request, SshTransport, TcpTransport, UnixTransport
from ctxpack.errors import ConnectionDroppedError, EndpointError, EngineAPIError, EngineUnreachableError


# --------------------------------------------------------------------------
# a test server
# --------------------------------------------------------------------------


def read_chunked(rfile) -> bytes:  # the test server's side of chunked bodies
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def log_message(self, *a: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            return read_chunked(self.rfile)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers), b"", self.client_address))
        self.server.connections.add(id(self.connection))
        if self.path == "/_ping":
            self._answer(200, b"OK", "text/plain")
        elif self.path == "/lines":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a":1}\n{"b"', b':2}\n', b'{"c":3}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._answer(404, b'{"message":"page not found"}')

    def do_POST(self) -> None:
        self.server.connections.add(id(self.connection))
        if self.path.startswith("/drop"):
            # read a little of the body, then hang up without answering
            self.rfile.read(1000)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if self.path.startswith("/early"):
            # answer before reading the body, then close (as dockerd does
            # with a body it cannot read)
            self._answer(500, b'{"message":"archive/tar: invalid tar header"}')
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if self.path.startswith("/session"):
            self.server.seen.append((self.command, self.path, dict(self.headers), b"", None))
            # 101 and the first bytes of the new protocol in one write
            self.wfile.write(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPREFACE")
            self.wfile.flush()
            data = self.connection.recv(100)
            self.connection.sendall(b"echo:" + data)
            self.close_connection = True
            return
        body = self._body()
        self.server.seen.append((self.command, self.path, dict(self.headers), body, None))
        self._answer(200, json.dumps({"len": len(body), "sha": hashlib.sha256(body).hexdigest()}).encode())


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str):
        self.seen: list[tuple] = []
        self.connections: set[int] = set()
        super().__init__(path, Handler)

    def get_request(self):  # UnixStreamServer gives '' as the address; http.server wants a tuple
        sock, _ = super().get_request()
        return sock, ("unix", 0)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    path = str(tmp_path / "s.sock")
    srv = Server(path)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, path
    srv.shutdown()
    srv.server_close()


# --------------------------------------------------------------------------
# the seam
# --------------------------------------------------------------------------


def test_mock_transport_records_and_streams() -> None:
    def handler(req: Request) -> MockResponse:
        return MockResponse(200, [b'{"x":1}\n{"y"', b":2}\n"], {"Api-Version": "1.41"})

    t = MockTransport(handler)

    def writer(sink) -> None:
        sink.write(b"abc")
        sink.write(b"def")

    resp = t.handle_request(Request("POST", "/build?x=1", {"Content-Type": "application/x-tar"}, writer))
    assert resp.headers["api-version"] == "1.41"
    assert list(resp.iter_lines()) == [b'{"x":1}', b'{"y":2}']
    assert t.bodies == [b"abcdef"]
    assert t.requests[0].headers.get("content-type") == "application/x-tar"


def test_headers_case_insensitive() -> None:
    h = Headers([("Api-Version", "1.41"), ("OSType", "linux")])
    assert h["api-version"] == "1.41" and "ostype" in h and h.get("missing") is None


def test_mock_upgrade_pair() -> None:
    def serve(req: Request, sock: socket.socket) -> None:
        sock.sendall(b"hello")
        sock.sendall(sock.recv(10).upper())

    t = MockTransport(lambda r: MockResponse(404), serve)
    with t.upgrade(Request("POST", "/session", {"Upgrade": "h2c"})) as up:
        assert up.status == 101
        assert up.sock.recv(5) == b"hello"
        up.sock.sendall(b"abc")
        assert up.sock.recv(3) == b"ABC"


# --------------------------------------------------------------------------
# real sockets
# --------------------------------------------------------------------------


def test_unix_get_and_keepalive(server: tuple[Server, str]) -> None:
    srv, path = server
    t = UnixTransport(path)
    for _ in range(3):
        with t.handle_request(Request("GET", "/_ping")) as r:
            assert r.status == 200 and r.read() == b"OK"
    assert len(srv.connections) == 1, "one connection reused for all three requests"
    with t.handle_request(Request("GET", "/lines")) as r:
        assert list(r.iter_lines()) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    with t.handle_request(Request("GET", "/nope")) as r:
        assert r.status == 404 and b"page not found" in r.read()
    t.close()


def test_unix_chunked_upload_with_sendfile(server: tuple[Server, str], tmp_path: Path) -> None:
    srv, path = server
    big = tmp_path / "big"
    data = os.urandom(3 * 1024 * 1024 + 17)
    big.write_bytes(data)
    used: list[int | None] = []

    def writer(sink) -> None:
        sink.write(b"head")
        fd = os.open(big, os.O_RDONLY)
        try:
            used.append(sink.sendfile(fd, 0, len(data)))
        finally:
            os.close(fd)
        sink.write(b"tail")

    seen_progress: list[int] = []
    t = UnixTransport(path)
    req = Request("POST", "/build", {"Content-Type": "application/x-tar"}, writer, timeout=None)
    with t.handle_request(req, progress=seen_progress.append) as r:
        answer = json.loads(r.read())
    expect = b"head" + data + b"tail"
    assert used == [len(data)], "sendfile was used on the unix socket"
    assert answer == {"len": len(expect), "sha": hashlib.sha256(expect).hexdigest()}
    assert req.sent == len(expect) and seen_progress[-1] == len(expect)
    method, url, headers, _, _ = srv.seen[-1]
    assert headers["Transfer-Encoding"] == "chunked" and headers["Content-Type"] == "application/x-tar"


def test_unix_missing_socket_is_unreachable(tmp_path: Path) -> None:
    t = UnixTransport(str(tmp_path / "none.sock"))
    with pytest.raises(EngineUnreachableError, match=r"unix://.*none\.sock.*Is the docker daemon running"):
        t.handle_request(Request("GET", "/_ping"))


def test_tcp_refused_is_unreachable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(EngineUnreachableError, match=f"tcp://127.0.0.1:{port}.*refused"):
        TcpTransport("127.0.0.1", port).handle_request(Request("GET", "/_ping"))


def _endless(sink) -> None:
    block = b"\0" * 65536
    for _ in range(2000):  # 128 MiB at most; the server hangs up long before
        sink.write(block)


def test_dropped_mid_upload(server: tuple[Server, str]) -> None:
    _, path = server
    with pytest.raises(ConnectionDroppedError, match=r"closed the connection during the upload \(after [\d,]+ bytes\) without answering"):
        UnixTransport(path).handle_request(Request("POST", "/drop", {}, _endless, timeout=10))


def test_early_answer_during_upload_is_read(server: tuple[Server, str]) -> None:
    _, path = server
    r = UnixTransport(path).handle_request(Request("POST", "/early", {}, _endless, timeout=10))
    assert r.status == 500 and b"invalid tar header" in r.read()
    assert r.upload_error and "closed the connection during the upload" in r.upload_error


def test_upgrade_keeps_bytes_after_101(server: tuple[Server, str]) -> None:
    srv, path = server
    t = UnixTransport(path)
    req = Request("POST", "/session", {"Upgrade": "h2c", "X-Docker-Expose-Session-Uuid": "abc"})
    with t.upgrade(req) as up:
        assert up.status == 101 and up.headers["upgrade"] == "h2c"
        got = b""
        while len(got) < 7:
            got += up.sock.recv(7 - len(got))
        assert got == b"PREFACE", "the first bytes after the 101 head are left on the socket"
        up.sock.sendall(b"ping")
        assert up.sock.recv(100) == b"echo:ping"
    _, _, headers, _, _ = srv.seen[-1]
    assert headers["Connection"] == "Upgrade" and headers["X-Docker-Expose-Session-Uuid"] == "abc"


def test_upgrade_refused_is_api_error(server: tuple[Server, str]) -> None:
    _, path = server
    with pytest.raises(EngineAPIError) as e:
        UnixTransport(path).upgrade(Request("POST", "/nope-session", {"Upgrade": "h2c"}))
    assert e.value.status == 200  # the test server answers a plain POST with 200


# --------------------------------------------------------------------------
# ssh
# --------------------------------------------------------------------------


def test_ssh_argv_is_the_docker_clis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "cpu_has_aes", lambda: False)  # the cipher choice apart (tests below)
    t = SshTransport("host.example", user="me", port=2222)
    assert t.argv() == ["ssh", "-l", "me", "-p", "2222", "-o", "ConnectTimeout=30", "-o", "BatchMode=yes",
                        "-T", "--", "host.example", "docker", "system", "dial-stdio"]
    t = SshTransport("h", path="/run/user/1000/docker.sock")
    assert t.argv()[-4:] == ["docker", "--host=unix:///run/user/1000/docker.sock", "system", "dial-stdio"]
    assert t.url == "ssh://h/run/user/1000/docker.sock"


#: OpenSSH 9.2's built-in default (``ssh -G -F /dev/null h``).
DEFAULT_CIPHERS = ("chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
                   "aes128-gcm@openssh.com,aes256-gcm@openssh.com")


def fake_ssh_G(tmp_path: Path, configured: dict[str, str], default: str = DEFAULT_CIPHERS) -> tuple[Path, Path]:
    """A stand-in ``ssh`` for ``-G``: prints ``ciphers`` as OpenSSH resolves
    it: ``configured[host]`` when the user's config sets it for that host,
    else ``default``; with ``-F /dev/null`` always ``default``; an unknown
    host ``bad`` fails as ssh does (255).  Every call's arguments go to a
    log (one line each)."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "ssh"
    cases = "".join(f'  {host}) c="{c}" ;;\n' for host, c in configured.items())
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'for a; do h="$a"; done\n'
        '[ "$h" = bad ] && { echo "ssh: Could not resolve hostname bad" >&2; exit 255; }\n'
        f'c="{default}"\n'
        'case " $* " in *" -F /dev/null "*) ;; *)\n'
        f'case "$h" in\n{cases}esac ;;\nesac\n'
        'printf "user root\\nhostname %s\\nciphers %s\\ncompression no\\n" "$h" "$c"\n')
    fake.chmod(0o755)
    return fake, log


def _ciphers_option(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("Ciphers=")]


def test_ssh_puts_aes_gcm_first_when_the_cipher_is_its_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "cpu_has_aes", lambda: True)
    fake, log = fake_ssh_G(tmp_path, {"pinned": "aes256-ctr"})
    monkeypatch.setenv("CTXPACK_SSH", str(fake))  # the seam users have
    t = SshTransport("plain", user="me", port=2222)
    argv = t.argv()
    reordered = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                 "aes128-ctr,aes192-ctr,aes256-ctr")
    assert argv[:-6] == [str(fake), "-l", "me", "-p", "2222", "-o", "ConnectTimeout=30", "-o", "BatchMode=yes",
                         "-o", f"Ciphers={reordered}"]
    assert argv[-6:] == ["-T", "--", "plain", "docker", "system", "dial-stdio"]
    # ssh's own default, reordered: the same names, so a server without AES-GCM still agrees on one
    assert sorted(reordered.split(",")) == sorted(DEFAULT_CIPHERS.split(","))
    assert t.argv() == argv and t.ssh_config()["hostname"] == "plain"  # type: ignore[index]
    calls = sorted(log.read_text().splitlines())  # the two probes run at once: either order
    assert calls == ["-G -F /dev/null -l me -p 2222 -- plain", "-G -l me -p 2222 -- plain"], "probed once, cached"


def test_ssh_keeps_the_users_ciphers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any Ciphers line in the user's (or the system's) config for that
    # host: ssh -G differs from its built-in default, and ctxpack adds
    # nothing (its -o would beat the file).
    monkeypatch.setattr(transport, "cpu_has_aes", lambda: True)
    fake, _ = fake_ssh_G(tmp_path, {"pinned": "aes256-ctr", "same-set": DEFAULT_CIPHERS.replace("chacha", "x")})
    assert _ciphers_option(SshTransport("pinned", ssh_command=[str(fake)]).argv()) == []
    assert _ciphers_option(SshTransport("same-set", ssh_command=[str(fake)]).argv()) == []
    assert _ciphers_option(SshTransport("other", ssh_command=[str(fake)]).argv()) != []  # same fake, unpinned host


def test_ssh_cipher_unchanged_without_aes_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "cpu_has_aes", lambda: False)
    fake, log = fake_ssh_G(tmp_path, {})
    t = SshTransport("plain", ssh_command=[str(fake)])
    assert _ciphers_option(t.argv()) == []
    assert not log.exists(), "no probe: nothing to decide"
    assert t.ssh_config() is not None  # the loopback check's probe still works
    assert log.read_text().splitlines() == ["-G -- plain"]  # and needs no default probe


def test_ssh_cipher_unchanged_when_ssh_cannot_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "cpu_has_aes", lambda: True)
    fake, _ = fake_ssh_G(tmp_path, {})
    assert _ciphers_option(SshTransport("bad", ssh_command=[str(fake)]).argv()) == []  # -G fails
    assert SshTransport("bad", ssh_command=[str(fake)]).ssh_config() is None
    # an ssh without AES-GCM, or one that prefers it already: nothing to add
    for default in ("chacha20-poly1305@openssh.com,aes128-ctr", "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr"):
        d = tmp_path / str(len(default))
        d.mkdir()
        other, _ = fake_ssh_G(d, {}, default=default)
        assert _ciphers_option(SshTransport("plain", ssh_command=[str(other)]).argv()) == []


@pytest.mark.parametrize("text, has", [
    ("processor\t: 0\nflags\t\t: fpu vme sse2 pclmulqdq aes avx2 vaes\n", True),  # x86 (this machine's kind)
    ("processor\t: 0\nflags\t\t: fpu vme sse2 avx2\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n", True),  # arm64
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", False),
    ("model name\t: Some aes CPU\n", False),  # the word elsewhere is not the flag
])
def test_cpuinfo_aes_flag(text: str, has: bool) -> None:
    assert transport.cpuinfo_has_aes(text) is has


def test_ssh_failure_carries_sshs_message(tmp_path: Path) -> None:
    fake = tmp_path / "fake-ssh"
    fake.write_text("#!/bin/sh\necho 'me@h: Permission denied (publickey).' >&2\nexit 255\n")
    fake.chmod(0o755)
    t = SshTransport("h", user="me", ssh_command=[str(fake)])
    with pytest.raises(EngineUnreachableError, match=r"exited with status 255: me@h: Permission denied \(publickey\)"):
        t.handle_request(Request("GET", "/_ping"))


def test_ssh_through_a_stand_in_helper(server: tuple[Server, str], tmp_path: Path) -> None:
    # A stand-in for `ssh ... docker system dial-stdio`: pipes stdio to the
    # test server's socket, as dial-stdio does with the engine's.
    srv, path = server
    fake = tmp_path / "fake-ssh"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import os, socket, sys, threading\n"
        "if '-G' in sys.argv: sys.exit(255)  # the configuration probe: this stand-in cannot say\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({path!r})\n"
        "def up():\n"
        "    while True:\n"
        "        d = os.read(0, 65536)\n"
        "        if not d:\n"
        "            s.shutdown(socket.SHUT_WR); return\n"
        "        s.sendall(d)\n"
        "threading.Thread(target=up, daemon=True).start()\n"
        "while True:\n"
        "    d = s.recv(65536)\n"
        "    if not d:\n"
        "        break\n"
        "    os.write(1, d)\n"
    )
    fake.chmod(0o755)
    t = SshTransport("h", ssh_command=[str(fake)])
    with t.handle_request(Request("GET", "/_ping")) as r:
        assert r.read() == b"OK"
    payload = os.urandom(200_000)
    with t.handle_request(Request("POST", "/build", {}, lambda sink: sink.write(payload), timeout=None)) as r:
        assert json.loads(r.read())["sha"] == hashlib.sha256(payload).hexdigest()
    assert len(srv.connections) == 1, "one helper process served both requests"
    t.close()


def _wanted_send_buffer() -> int:
    """What the kernel grants for UNIX_SEND_BUFFER (capped at wmem_max, then doubled)."""
    with open("/proc/sys/net/core/wmem_max") as f:
        cap = int(f.read())
    return 2 * min(transport.UNIX_SEND_BUFFER, cap)


def test_upload_sockets_get_the_wide_send_buffer(server: tuple[Server, str], tmp_path: Path) -> None:
    # The unix socket to the engine and ctxpack's end of the ssh helper's
    # socket pair: the packer may run UNIX_SEND_BUFFER ahead of its reader.
    if not os.path.exists("/proc/sys/net/core/wmem_max"):
        pytest.skip("no /proc/sys/net/core/wmem_max (not Linux)")
    want = _wanted_send_buffer()
    with socket.socket(socket.AF_UNIX) as plain:
        default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    _, path = server
    s, _ = UnixTransport(path)._open_socket()
    with s:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == want
    fake = tmp_path / "fake-ssh"
    fake.write_text("#!/bin/sh\nexec cat >/dev/null\n")
    fake.chmod(0o755)
    ours, cleanup = SshTransport("h", ssh_command=[str(fake)])._open_socket()
    try:
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == want
    finally:
        ours.close()
        cleanup()
    assert want >= default


class _CountingSocket(socket.socket):
    """A socket recording every send/sendmsg it is asked for (one per system call)."""

    calls: list[bytes]

    def send(self, data, *a):  # type: ignore[override]
        n = super().send(data, *a)
        self.calls.append(bytes(memoryview(data)[:n]))
        return n

    def sendmsg(self, buffers, *a):  # type: ignore[override]
        n = super().sendmsg(buffers, *a)
        self.calls.append(b"".join(bytes(b) for b in buffers)[:n])
        return n


def test_chunk_framing_goes_out_with_the_data(tmp_path: Path) -> None:
    # A chunk's header, data and CRLF in one gathered write; the CRLF after a
    # sendfile chunk with the next header: the reader (ssh, the engine) is
    # never woken for a few framing bytes alone.  The bytes are the same.
    a, b = socket.socketpair()
    ours = _CountingSocket(fileno=a.detach())
    ours.calls = []
    ours.settimeout(10)
    big = tmp_path / "big"
    data = os.urandom(300_000)
    big.write_bytes(data)
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(iter_recv(b)), daemon=True)
    reader.start()
    sink = transport.ChunkedSink(ours, timeout=10)
    sink.write(b"head")
    fd = os.open(big, os.O_RDONLY)
    try:
        assert sink.sendfile(fd, 0, len(data)) == len(data)
    finally:
        os.close(fd)
    sink.write(b"tail")
    sink.finish()
    ours.close()
    reader.join(10)
    expect = b"4\r\nhead\r\n" + b"%x\r\n" % len(data) + data + b"\r\n4\r\ntail\r\n0\r\n\r\n"
    assert bytes(got) == expect
    assert sink.written == 8 + len(data)
    assert ours.calls == [b"4\r\nhead\r\n", b"%x\r\n" % len(data), b"\r\n4\r\ntail\r\n", b"0\r\n\r\n"]
    b.close()


def iter_recv(s: socket.socket) -> Iterator[int]:
    while True:
        d = s.recv(65536)
        if not d:
            return
        yield from d


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expect",
    [
        ("", "unix:///var/run/docker.sock"),
        ("unix://", "unix:///var/run/docker.sock"),
        ("unix:///tmp/d.sock", "unix:///tmp/d.sock"),
        (":2376", "tcp://localhost:2376"),
        ("tcp://", "tcp://localhost:2375"),
        ("tcp://h1", "tcp://h1:2375"),
        ("h2", "tcp://h2:2375"),
        ("host:123", "tcp://host:123"),
        ("tcp://h5:0", "tcp://h5:0"),
        ("tcp://[::1]:99", "tcp://[::1]:99"),
        ("tcp://h6/path", "tcp://h6:2375/path"),
        ("ssh://h4", "ssh://h4"),
        ("ssh://me@h4:2222/var/run/d.sock", "ssh://me@h4:2222/var/run/d.sock"),
    ],
)
def test_parse_host_like_the_cli(value: str, expect: str) -> None:
    assert hosts.parse_host(value) == expect


def test_parse_host_tls_port() -> None:
    assert hosts.parse_host("tcp://h7", tls=True) == "tcp://h7:2376"


@pytest.mark.parametrize("value, message", [
    ("http://h3:1", "invalid bind address format"),
    ("ssh://u:p@h", "plain-text password is not supported"),
    ("ssh://h?x=1", "extra query"),
    ("fd://", "not supported"),
])
def test_parse_host_refused(value: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        hosts.parse_host(value)


def _make_context(cfg: Path, name: str, host: str, skip: bool = False, tls: dict[str, bytes] | None = None) -> None:
    h = hashlib.sha256(name.encode()).hexdigest()
    meta = cfg / "contexts" / "meta" / h
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip}}}))
    if tls:
        d = cfg / "contexts" / "tls" / h / "docker"
        d.mkdir(parents=True)
        for n, data in tls.items():
            (d / n).write_bytes(data)


def test_resolution_order(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    _make_context(cfg, "myctx", "ssh://me@example:2222")
    _make_context(cfg, "tlsctx", "tcp://1.2.3.4:2376", skip=True)
    _make_context(cfg, "verified", "tcp://5.6.7.8:2376", tls={"ca.pem": b"x", "cert.pem": b"y", "key.pem": b"z"})
    base = {"DOCKER_CONFIG": str(cfg)}
    r = hosts.resolve_endpoint
    # the same answers as `docker context show` gave for these settings
    assert r(env=base).host == "unix:///var/run/docker.sock"
    assert r(env=base).context == "default"
    assert r(context="myctx", env={**base, "DOCKER_HOST": "tcp://h"}).host == "ssh://me@example:2222"
    assert r(env={**base, "DOCKER_CONTEXT": "tlsctx"}).context == "tlsctx"
    assert r(host="tcp://x", env={**base, "DOCKER_CONTEXT": "myctx"}).context == "default"
    e = r(env={**base, "DOCKER_HOST": "tcp://x", "DOCKER_CONTEXT": "myctx"})
    assert (e.context, e.host, e.source) == ("default", "tcp://x:2375", "DOCKER_HOST")
    (cfg / "config.json").write_text(json.dumps({"currentContext": "myctx"}))
    e = r(env=base)
    assert e.context == "myctx" and "currentContext" in e.source and e.host == "ssh://me@example:2222"
    assert r(env={**base, "DOCKER_CONTEXT": "default"}).host == "unix:///var/run/docker.sock"
    # TLS from the store
    t = r(context="tlsctx", env=base).tls
    assert t is not None and not t.verify
    v = r(context="verified", env=base).tls
    assert v is not None and v.verify and v.ca and v.ca.endswith("/docker/ca.pem") and v.cert and v.key
    assert "verify" in r(context="verified", env=base).describe()


def test_resolution_errors(tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)}
    with pytest.raises(EndpointError, match="conflicting options: cannot specify both --host and --context"):
        hosts.resolve_endpoint(host="unix:///x", context="foo", env=env)
    with pytest.raises(EndpointError, match='context "nope".*context not found'):
        hosts.resolve_endpoint(context="nope", env=env)
    with pytest.raises(EndpointError, match="ca.pem"):
        hosts.resolve_endpoint(host="tcp://h7", env={**env, "DOCKER_TLS_VERIFY": "1"})


def test_default_tls_from_environment(tmp_path: Path) -> None:
    for n in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / n).write_text("x")
    e = hosts.resolve_endpoint(env={"DOCKER_HOST": "tcp://h7", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert e.host == "tcp://h7:2376" and e.tls is not None and e.tls.verify and e.tls.ca == str(tmp_path / "ca.pem")
    e = hosts.resolve_endpoint(env={"DOCKER_HOST": "tcp://h7", "DOCKER_TLS": "1", "DOCKER_CONFIG": str(tmp_path)})
    assert e.tls is not None and not e.tls.verify and e.tls.cert == str(tmp_path / "cert.pem")


def test_open_transport_kinds() -> None:
    assert isinstance(hosts.open_transport("unix:///tmp/x.sock"), UnixTransport)
    t = hosts.open_transport("tcp://127.0.0.1:2375/prefix")
    assert isinstance(t, TcpTransport) and t.base_path == "/prefix" and t.local
    s = hosts.open_transport("ssh://me@h:22/run/d.sock")
    assert isinstance(s, SshTransport) and (s.user, s.hostname, s.port, s.path) == ("me", "h", 22, "/run/d.sock")
    assert transport.CONNECT_TIMEOUT == 30.0
