"""The BuildKit session without a daemon: the protobuf codec, the FileSync
sender's listing and protocol, the gRPC server over h2, secrets, ssh, auth.

The daemon's side is played by tests/session_client.py (an h2 gRPC client on
a socket pair).  The real engine is in tests/test_session_engine.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat as st
import threading
import time

import pytest

from ctxpack import open_context
from ctxpack.engine.session import wire
from ctxpack.engine.session.core import DIFF_COPY, GET_SECRET, HEALTH, Session
from ctxpack.engine.session.filesync import CHUNK_SIZE, IGNORE_COMMENT, context_listing, go_file_mode, select
from ctxpack.engine.session.grpcserver import Status
from ctxpack.engine.session.services import DockerAuth, SecretSpec, SessionConfigError, parse_secret, parse_ssh
from ctxpack.walker import list_entries
from session_client import H2Client



# --------------------------------------------------------------------------
# wire
# --------------------------------------------------------------------------


def test_stat_bytes_are_protobuf():
    # Worked by hand from stat.proto: path=1 (len), mode=2, size=5, modTime=6, linkname=7.
    s = wire.Stat("a", 0o644, size=3, mod_time=1, linkname="b")
    assert wire.encode_stat(s) == b"\x0a\x01a" + b"\x10\xa4\x03" + b"\x28\x03" + b"\x30\x01" + b"\x3a\x01b"
    assert wire.decode_stat(wire.encode_stat(s)) == s


def test_stat_round_trip_negative_times_xattrs_and_big_modes():
    s = wire.Stat("d/é", go_file_mode(st.S_IFDIR | 0o755), uid=1000, gid=7, size=0, mod_time=-1_500_000_000,
                  devmajor=8, devminor=1, xattrs={"user.b": b"\x00\x01", "user.a": b"x"})
    raw = wire.encode_stat(s)
    back = wire.decode_stat(raw)
    assert back == s
    assert back.mode == (1 << 31) | 0o755
    # int64 negatives are ten-byte varints, as Go writes them.
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"


def test_packet_round_trip_and_unknown_fields_skipped():
    p = wire.Packet(wire.PACKET_DATA, id=300, data=b"xyz")
    raw = wire.encode_packet(p)
    assert raw == wire.encode_data_packet(300, b"xyz")
    assert wire.decode_packet(raw + b"\x78\x05" + b"\x82\x01\x02hi") == p  # fields 15 and 16 ignored
    end = wire.encode_packet(wire.Packet(wire.PACKET_STAT))
    assert end == b"" and wire.decode_packet(end).stat is None
    assert wire.decode_packet(wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=0))).type == wire.PACKET_REQ
    with pytest.raises(wire.WireError):
        wire.decode_packet(b"\x22\x05ab")


def test_go_file_mode_bits():
    assert go_file_mode(st.S_IFREG | 0o4755) == (1 << 23) | 0o755
    assert go_file_mode(st.S_IFDIR | 0o1777) == (1 << 31) | (1 << 20) | 0o777
    assert go_file_mode(st.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(st.S_IFIFO | 0o600) == (1 << 25) | 0o600
    assert go_file_mode(st.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(st.S_IFBLK | 0o660) == (1 << 26) | 0o660
    assert go_file_mode(st.S_IFREG | 0o2644) == (1 << 22) | 0o644


# --------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------


def _tree(root, files, links=(), hard=()):
    for rel, data in files.items():
        p = os.path.join(root, rel)
        if rel.endswith("/"):
            os.makedirs(p, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
    for rel, target in links:
        os.symlink(target, os.path.join(root, rel))
    for rel, first in hard:
        os.link(os.path.join(root, first), os.path.join(root, rel))


def test_context_listing_is_ctxpack_buildkit_listing(tmp_path):
    _tree(tmp_path, {
        "Dockerfile": "FROM scratch\n", ".dockerignore": "*.log\nbuild/\n!build/keep\n",
        "a.log": "x", "b": "b", "B": "B", "build/keep": "k", "build/drop": "d", "z/y/x": "deep",
        "sp ace/\u00e9": "u", "empty/": None,
    }, links=[("ln", "b")], hard=[("hl", "b")])
    ctx = open_context(tmp_path, dialect="buildkit")
    listing = context_listing(ctx)
    assert [e.path for e in listing.entries] == [e.path for e in list_entries(ctx)]
    names = [e.path for e in listing.entries]
    assert names == sorted(names, key=lambda n: n.split("/")) or True  # walk order checked below
    assert "a.log" not in names and "build/drop" not in names and "build/keep" in names
    by = {e.path: e for e in listing.entries}
    assert by["ln"].stat.linkname == "b" and by["ln"].stat.mode & (1 << 27)
    assert by["hl"].stat.linkname == "b" and by["hl"].stat.size == 1  # fsutil keeps the size
    assert by["z"].stat.mode & (1 << 31) and by["z"].stat.size == 0
    assert all(e.stat.uid == 0 and e.stat.gid == 0 for e in listing.entries)
    # parents before children, bytewise order per directory (fsutil's validator rule)
    for prev, cur in zip(names, names[1:]):
        pa, ca = prev.split("/"), cur.split("/")
        common = 0
        while common < min(len(pa), len(ca)) and pa[common] == ca[common]:
            common += 1
        if common < len(pa) and common < len(ca):
            assert pa[common].encode() < ca[common].encode(), (prev, cur)


def test_select_followpaths_includes_and_relinked_hardlinks(tmp_path):
    _tree(tmp_path, {"Dockerfile": "FROM scratch\n", ".dockerignore": "", "a/b/c": "1", "a/x": "2", "d/e": "3",
                     "first": "same"}, links=[("lnk", "d/e")], hard=[("zz", "first")])
    ctx = open_context(tmp_path, dialect="buildkit")
    listing = context_listing(ctx)
    assert [e.path for e in select(listing, None, [".dockerignore"])] == [".dockerignore"]
    got = select(listing, ["a/b"], None)
    assert [e.path for e in got] == ["a", "a/b", "a/b/c"]
    # a followed symlink brings its target (and the target's parent)
    assert [e.path for e in select(listing, None, ["lnk"])] == ["d", "d/e", "lnk"]
    # "zz" is a hard link to "first": without "first" it must travel as a file
    only = select(listing, ["zz"], None)
    assert [e.path for e in only] == ["zz"] and only[0].stat.linkname == ""
    both = select(listing, ["first", "zz"], None)
    assert both[1].stat.linkname == "first"
    assert [e.path for e in select(listing, ["nothing"], None)] == []


# --------------------------------------------------------------------------
# the gRPC server with a fake daemon
# --------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A Session for a small tree, served on one end of a socket pair; the
    other end is an h2 client playing the daemon."""
    made = []

    def make(files=None, *, auto_window=True, initial_window=65535, secrets=()):
        _tree(tmp_path, files or {"Dockerfile": "FROM scratch\nCOPY . /\n", "a": "A" * 10, "big": b"\x01" * 100_000})
        ctx = open_context(tmp_path, dialect="buildkit")
        sess = Session(ctx, secrets=secrets, key="k")
        a, b = socket.socketpair()
        sess.attach(a)
        client = H2Client(b, auto_window=auto_window, initial_window=initial_window)
        made.append((sess, client))
        return sess, client

    yield make
    for sess, client in made:
        client.close()
        sess.close()


def _diff_copy(client, dir_name, extra=()):
    sid = client.open(DIFF_COPY, [("dir-name", dir_name), *extra])
    return sid


def _stats_until_end(client, sid, timeout=5.0):
    end = time.monotonic() + timeout
    n = 1
    while True:
        msgs = client.wait_messages(sid, n, timeout=max(0.1, end - time.monotonic()))
        packets = [wire.decode_packet(m) for m in msgs]
        for i, p in enumerate(packets):
            if p.type == wire.PACKET_STAT and p.stat is None:
                return packets[:i]
        n = len(msgs) + 1


def test_diff_copy_protocol_end_to_end(served):
    sess, client = served()
    sid = _diff_copy(client, "context")
    stats = _stats_until_end(client, sid)
    paths = [p.stat.path for p in stats]
    assert paths == [".", "Dockerfile", "a", "big"][1:] or paths == ["Dockerfile", "a", "big"]
    ids = {p.stat.path: i for i, p in enumerate(stats)}
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=ids["big"])))
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=ids["a"])))
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
    c = client.calls[sid]
    assert c.ended.wait(5)
    assert c.status == Status.OK
    packets = [wire.decode_packet(m) for m in c.messages][len(stats) + 1:]
    assert packets[-1].type == wire.PACKET_FIN
    data = {}
    for p in packets[:-1]:
        assert p.type == wire.PACKET_DATA and len(p.data) <= CHUNK_SIZE
        data.setdefault(p.id, []).append(p.data)
    assert b"".join(data[ids["big"]]) == b"\x01" * 100_000 and data[ids["big"]][-1] == b""
    assert b"".join(data[ids["a"]]) == b"A" * 10
    st_ = sess.stats()
    assert st_.files_requested == 2 and st_.data_bytes == 100_010
    assert st_.context_requests() == ["big", "a"]


def test_dockerfile_dir_serves_a_comment_only_ignore_file(served):
    sess, client = served()
    sid = _diff_copy(client, "dockerfile", [("followpaths", "Dockerfile"), ("followpaths", "Dockerfile.dockerignore")])
    stats = _stats_until_end(client, sid)
    assert [p.stat.path for p in stats] == ["Dockerfile", "Dockerfile.dockerignore"]
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=1)))
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
    c = client.calls[sid]
    assert c.ended.wait(5)
    body = b"".join(p.data for p in map(wire.decode_packet, c.messages) if p.type == wire.PACKET_DATA)
    assert body == IGNORE_COMMENT


def test_exclude_patterns_from_the_daemon_do_not_override_ctxpack(served):
    sess, client = served()
    sid = _diff_copy(client, "context", [("exclude-patterns", "a")])
    assert "a" in [p.stat.path for p in _stats_until_end(client, sid)]
    sid = _diff_copy(client, "context", [("exclude-patterns", "a"), ("override-excludes", "true")])
    assert "a" not in [p.stat.path for p in _stats_until_end(client, sid)]


def test_unknown_dir_and_unknown_method(served):
    sess, client = served()
    c = client.unary("/moby.filesync.v1.Auth/FetchToken", b"")
    assert c.status == Status.UNIMPLEMENTED
    sid = _diff_copy(client, "nope")
    c = client.calls[sid]
    assert c.ended.wait(5) and c.status == Status.NOT_FOUND and "nope" in c.message


def test_health_is_answered_while_a_transfer_is_stalled(served):
    # The client never opens its window: the big file's DATA blocks on flow
    # control; health checks must still be answered at once.
    sess, client = served(auto_window=False)
    sid = _diff_copy(client, "context")
    stats = _stats_until_end(client, sid)
    big = [i for i, p in enumerate(stats) if p.stat.path == "big"][0]
    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=big)))
    time.sleep(0.3)
    for _ in range(3):
        t0 = time.monotonic()
        c = client.unary(HEALTH, b"", timeout=2)
        assert c.status == Status.OK and wire.fields(c.messages[0]).__next__()[2] == wire.SERVING
        assert time.monotonic() - t0 < 3.0  # BuildKit allows 10 s
    client.release_window(sid)


def test_health_is_prompt_while_python_threads_keep_the_gil_busy(served):
    sess, client = served()
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(2)]
    for t in spinners:
        t.start()
    try:
        worst = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            assert client.unary(HEALTH, b"", timeout=5).status == Status.OK
            worst = max(worst, time.monotonic() - t0)
        # BuildKit allows 10 s; the margin is for a loaded machine (2 CPUs shared).
        assert worst < 3.0, f"health took {worst:.2f}s with the GIL contended"
    finally:
        stop.set()
        for t in spinners:
            t.join()


def test_secrets_known_unknown_and_never_in_errors(served, tmp_path):
    f = tmp_path / "tok.txt"
    f.write_bytes(b"s3cr3t-value")
    os.environ["CTXPACK_TEST_SECRET"] = "from-env"
    try:
        sess, client = served(secrets=[SecretSpec("tok", src=str(f)), SecretSpec("e", env="CTXPACK_TEST_SECRET")])
        c = client.unary(GET_SECRET, b"\x0a\x03tok")
        assert c.status == Status.OK and wire.decode_bytes_message(c.messages[0]) == b"s3cr3t-value"
        c = client.unary(GET_SECRET, b"\x0a\x01e")
        assert wire.decode_bytes_message(c.messages[0]) == b"from-env"
        c = client.unary(GET_SECRET, b"\x0a\x05other")
        assert c.status == Status.NOT_FOUND and "other" in c.message
        assert "s3cr3t" not in repr(sess.secret_store._specs) and sess.stats().secrets_asked == ["tok", "e", "other"]
    finally:
        del os.environ["CTXPACK_TEST_SECRET"]


def test_daemon_hanging_up_wakes_every_waiter(served):
    sess, client = served()
    sid = _diff_copy(client, "context")
    _stats_until_end(client, sid)
    client.close()  # the daemon goes away while the sender waits for REQs
    sess.server.join(5)
    assert sess.closed_reason and "closed" in sess.closed_reason
    for t in sess.server._threads:
        t.join(5)
        assert not t.is_alive()


# --------------------------------------------------------------------------
# --secret, --ssh, auth
# --------------------------------------------------------------------------


def test_parse_secret(tmp_path, monkeypatch):
    f = tmp_path / "s"
    f.write_text("x")
    assert parse_secret(f"id=a,src={f}") == SecretSpec("a", str(f), None)
    monkeypatch.setenv("MYTOK", "v")
    assert parse_secret("id=b,env=MYTOK") == SecretSpec("b", None, "MYTOK")
    assert parse_secret("id=MYTOK") == SecretSpec("MYTOK", None, "MYTOK")
    with pytest.raises(SessionConfigError, match="file not found"):
        parse_secret(f"id=a,src={tmp_path}/missing")
    with pytest.raises(SessionConfigError, match="NOPE_NOT_SET is not set"):
        parse_secret("id=a,env=NOPE_NOT_SET")
    with pytest.raises(SessionConfigError, match="id= is required"):
        parse_secret(f"src={f}")


def test_parse_ssh(tmp_path):
    with pytest.raises(SessionConfigError, match="SSH_AUTH_SOCK is not set"):
        parse_ssh("default", environ={})
    path = str(tmp_path / "agent.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    try:
        assert parse_ssh("default", environ={"SSH_AUTH_SOCK": path}).path == path
        assert parse_ssh(f"git={path}", environ={}).id == "git"
        (tmp_path / "key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        with pytest.raises(SessionConfigError, match="not an ssh agent socket"):
            parse_ssh(f"k={tmp_path / 'key'}", environ={})
        with pytest.raises(SessionConfigError, match="No such file"):
            parse_ssh(f"k={tmp_path / 'gone'}", environ={})
    finally:
        s.close()


def test_docker_auth_lookup(tmp_path):
    cfg = {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"me:pw").decode()},
                     "reg.example:5000": {"identitytoken": "tok"}},
           "credHelpers": {"helped.example": "ctxpacktest"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    helper = tmp_path / "bin" / "docker-credential-ctxpacktest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\necho "{\\"Username\\":\\"u-$host\\",\\"Secret\\":\\"s\\"}"\n')
    helper.chmod(0o755)
    env = dict(os.environ, PATH=f"{helper.parent}:{os.environ['PATH']}")
    auth = DockerAuth(str(tmp_path), environ=env)
    assert auth.lookup("registry-1.docker.io") == ("me", "pw")
    assert auth.lookup("reg.example:5000") == ("", "tok")
    assert auth.lookup("helped.example") == ("u-helped.example", "s")
    assert auth.lookup("unknown.example") == ("", "")


# --------------------------------------------------------------------------
# the whole flow on the engine transport's mock (the daemon played in a thread)
# --------------------------------------------------------------------------


def _mock_engine(tmp_path, *, serve_upgrade=True, api="1.41"):
    from ctxpack.engine.client import Engine
    from ctxpack.engine.transport import MockResponse, MockTransport

    got: dict[str, object] = {"files": {}}
    done = threading.Event()

    def daemon(request, sock):
        got["upgrade_headers"] = request.headers.items()
        got["upgrade_url"] = request.url
        client = H2Client(sock)
        assert client.unary(HEALTH, b"").status == Status.OK
        for dir_name, follow in (("dockerfile", [("followpaths", "Dockerfile")]), ("context", [])):
            sid = client.open(DIFF_COPY, [("dir-name", dir_name), *follow])
            stats = _stats_until_end(client, sid)
            for i, p in enumerate(stats):
                if not p.stat.mode & (0xFFFFFFFF ^ 0o7777):
                    client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)))
            client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
            c = client.calls[sid]
            assert c.ended.wait(5)
            packets = [wire.decode_packet(m) for m in c.messages]
            for i, p in enumerate(stats):
                body = b"".join(q.data for q in packets if q.type == wire.PACKET_DATA and q.id == i)
                got["files"][f"{dir_name}:{p.stat.path}"] = body  # type: ignore[index]
        done.set()

    def handler(request):
        if request.url.endswith("/_ping"):
            return MockResponse(200, b"OK", {"Api-Version": api})
        if "/build?" in request.url:
            got["build_url"] = request.url
            got["build_body"] = request.content
            assert done.wait(10), "the fake daemon did not finish"
            lines = [{"stream": "Step 1/1\n"}, {"id": "moby.image.id", "aux": {"ID": "sha256:" + "ab" * 32}}]
            return MockResponse(200, b"".join(json.dumps(m).encode() + b"\n" for m in lines))
        return MockResponse(404, b'{"message": "no"}')

    return Engine(MockTransport(handler, daemon if serve_upgrade else None)), got


def test_session_build_flow_on_the_mock_transport(tmp_path):
    from urllib.parse import parse_qs, urlsplit

    from ctxpack.engine.session import session_build

    root = tmp_path / "ctx"
    _tree(root, {"Dockerfile": "FROM scratch\nCOPY . /\n", "a": "A", "d/b": "B" * 40000})
    engine, got = _mock_engine(tmp_path)
    r = session_build(open_context(root, dialect="buildkit"), engine, tags=["x:1"], timeout=30)
    assert r.ok, r.error
    assert r.image_id == "sha256:" + "ab" * 32
    methods = [v for k, v in got["upgrade_headers"] if k == "X-Docker-Expose-Session-Grpc-Method"]
    assert HEALTH in methods and DIFF_COPY in methods and len(methods) == len(set(methods)) >= 5
    assert got["upgrade_url"].endswith("/session")
    q = parse_qs(urlsplit(got["build_url"]).query)
    sid = dict(got["upgrade_headers"])["X-Docker-Expose-Session-Uuid"]
    assert q["session"] == [sid] and q["remote"] == ["client-session"] and q["version"] == ["2"]
    assert q["dockerfile"] == ["Dockerfile"] and q["t"] == ["x:1"] and got["build_body"] == b""
    assert got["files"]["context:d/b"] == b"B" * 40000 and got["files"]["context:a"] == b"A"
    assert got["files"]["dockerfile:Dockerfile"] == b"FROM scratch\nCOPY . /\n"
    assert r.stats.health_checks == 1 and r.stats.data_bytes >= 40001


# --------------------------------------------------------------------------
# the listing streams while the walk runs; files that change are refused
# --------------------------------------------------------------------------


def _blocked_service(tmp_path, release):
    """A FileSyncService whose ``context`` walk yields the real entries up to
    ``z/`` and then waits for ``release`` (a walk still running)."""
    from ctxpack.engine.session.filesync import FileSyncService, dockerfile_listing, iter_context_listing

    _tree(tmp_path, {"Dockerfile": "FROM scratch\n", ".dockerignore": "x\n", "a": "A", "z/late": "L"})
    ctx = open_context(tmp_path, dialect="buildkit")

    def walk():
        for e in iter_context_listing(ctx):
            if e.path == "z":
                assert release.wait(10), "the test never released the walk"
            yield e

    df = dockerfile_listing(str(tmp_path / "Dockerfile"), None, "Dockerfile")
    return FileSyncService({"dockerfile": df, "context": walk})


def _serve(service):
    from ctxpack.engine.session.grpcserver import GrpcServer, Method

    a, b = socket.socketpair()
    srv = GrpcServer(a, {DIFF_COPY: Method(service.diff_copy)})
    srv.start()
    return srv, H2Client(b)


def test_stats_stream_before_the_walk_ends(tmp_path):
    release = threading.Event()
    service = _blocked_service(tmp_path, release)
    service.prepare("context")
    srv, client = _serve(service)
    try:
        sid = _diff_copy(client, "context")
        # the entries walked so far arrive while the walk is still blocked
        msgs = client.wait_messages(sid, 3, timeout=5)
        assert [wire.decode_packet(m).stat.path for m in msgs[:3]] == [".dockerignore", "Dockerfile", "a"]
        assert not service.listing("context").complete
        # a REQ for one of them is answered while the walk still runs
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=2)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = [wire.decode_packet(m) for m in client.calls[sid].messages]
            if any(p.type == wire.PACKET_DATA and p.id == 2 and p.data == b"A" for p in got):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the REQ was not answered while the walk ran")
        release.set()
        stats = [p for p in _stats_until_end(client, sid) if p.type == wire.PACKET_STAT]
        assert [p.stat.path for p in stats] == [".dockerignore", "Dockerfile", "a", "z", "z/late"]
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(5) and client.calls[sid].status == Status.OK
    finally:
        release.set()
        client.close()
        srv.close()


def test_followpaths_answered_without_waiting_for_the_walk(tmp_path):
    release = threading.Event()
    service = _blocked_service(tmp_path, release)
    srv, client = _serve(service)
    try:
        t0 = time.monotonic()
        sid = _diff_copy(client, "context", [("followpaths", ".dockerignore")])
        assert [p.stat.path for p in _stats_until_end(client, sid, timeout=5)] == [".dockerignore"]
        assert time.monotonic() - t0 < 4 and not release.is_set()
        # a followed path at the end of the walk order waits for the walk to pass it
        sid = _diff_copy(client, "context", [("followpaths", "z/late")])
        time.sleep(0.3)
        assert not [m for m in client.calls[sid].messages if wire.decode_packet(m).stat is None]
        release.set()
        assert [p.stat.path for p in _stats_until_end(client, sid)] == ["z", "z/late"]
    finally:
        release.set()
        client.close()
        srv.close()


def _request_after_change(tmp_path, change):
    """List ``d/f.txt`` (5 bytes), change it, ask for it: the packets the
    call sent, its end status and message, and the service."""
    from ctxpack.engine.session.filesync import FileSyncService, context_listing

    _tree(tmp_path, {"Dockerfile": "FROM scratch\n", "d/f.txt": "12345"})
    listing = context_listing(open_context(tmp_path, dialect="buildkit"))
    f = tmp_path / "d" / "f.txt"
    if change == "grow":
        f.write_text("123456")
    elif change == "shrink":
        f.write_text("1234")
    elif change == "big":
        f.write_bytes(b"x" * (1 << 20))  # past SMALL_FILE: sent from a consistent private copy
    elif change == "touch":
        os.utime(f, ns=(1, 1))  # same size, other content is possible: the mtime says so
    else:
        f.unlink()
        if change == "directory":
            f.mkdir()
        elif change == "symlink":
            f.symlink_to("/etc/passwd")
        elif change == "fifo":
            os.mkfifo(f)
    service = FileSyncService({"context": listing})
    srv, client = _serve(service)
    try:
        sid = _diff_copy(client, "context")
        stats = _stats_until_end(client, sid)
        i = [p.stat.path for p in stats].index("d/f.txt")
        t0 = time.monotonic()
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)))
        c = client.calls[sid]
        if change in ("vanish", "directory", "symlink", "fifo"):
            assert c.ended.wait(5), "the call did not end"
        else:
            deadline = time.monotonic() + 5
            while not any(wire.decode_packet(m).type == wire.PACKET_DATA and not wire.decode_packet(m).data
                          for m in c.messages) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert time.monotonic() - t0 < 5  # a FIFO in the file's place never blocks
        return [wire.decode_packet(m) for m in c.messages], c, i, service, f
    finally:
        client.close()
        srv.close()


@pytest.mark.parametrize("change", ["vanish", "directory", "symlink", "fifo"])
def test_a_file_gone_or_not_a_file_after_the_listing_is_refused_naming_it(tmp_path, change):
    """Trial finding 28's decision: what cannot be sent as the file the
    listing names (fsutil would send a vanished file empty, a wrong image)
    fails the build naming the path; no DATA for it."""
    packets, c, i, service, _ = _request_after_change(tmp_path, change)
    err = [p for p in packets if p.type == wire.PACKET_ERR]
    assert err and b"d/f.txt: changed during the build's upload" in err[0].data, packets[-3:]
    assert c.status != Status.OK and "d/f.txt" in c.message
    assert not any(p.type == wire.PACKET_DATA and p.id == i and p.data for p in packets)
    assert service.errors and "d/f.txt" in service.errors[0]


@pytest.mark.parametrize("change", ["grow", "shrink", "touch", "big"])
def test_a_file_rewritten_after_the_listing_is_sent_as_it_is_now_with_a_warning(tmp_path, change):
    """Trial finding 28's decision: still a regular file: sent as read now
    (consistently), as dockerd's receiver takes the bytes sent whatever the
    STAT said and the docker CLI's sender sends what the file holds; a
    warning names the path, and nothing is refused."""
    packets, c, i, service, f = _request_after_change(tmp_path, change)
    assert not [p for p in packets if p.type == wire.PACKET_ERR], packets[-3:]
    data = b"".join(p.data for p in packets if p.type == wire.PACKET_DATA and p.id == i)
    assert data == f.read_bytes()
    assert not service.errors
    assert len(service.warnings) == 1 and service.warnings[0].startswith("d/f.txt: changed after it was listed")
    assert f"sent {len(data)} " in service.warnings[0]


def test_a_file_kept_changing_while_read_is_refused_naming_it(tmp_path, monkeypatch):
    """A copy that never holds still (fstat differs after every one of the
    tries) is refused naming the path, not sent torn."""
    from ctxpack.engine.session import filesync

    _tree(tmp_path, {"Dockerfile": "FROM scratch\n", "d/f.txt": "12345"})
    listing = filesync.context_listing(open_context(tmp_path, dialect="buildkit"))
    f = tmp_path / "d" / "f.txt"
    f.write_bytes(b"y" * (1 << 20))
    real = filesync._copy_range

    def copy_then_write(src, dst, size):  # the writer gets in during every copy
        n = real(src, dst, size)
        with open(f, "ab") as w:
            w.write(b"z")
        return n

    monkeypatch.setattr(filesync, "_copy_range", copy_then_write)
    e = next(x for x in listing.entries if x.path == "d/f.txt")
    with pytest.raises(filesync._ChangedFile, match=r"d/f.txt: changed during the build's upload \(it kept changing"):
        list(filesync._chunks(e, lambda m: None))


def test_a_walk_error_reaches_the_daemon_as_an_err_packet(tmp_path):
    from ctxpack.engine.session.filesync import FileSyncService
    from ctxpack.errors import ContextError

    def walk():
        raise ContextError("error checking context: can't stat '/ctx/secret'")
        yield  # pragma: no cover

    service = FileSyncService({"context": walk})
    srv, client = _serve(service)
    try:
        sid = _diff_copy(client, "context")
        c = client.calls[sid]
        assert c.ended.wait(5)
        packets = [wire.decode_packet(m) for m in c.messages]
        assert packets[-1].type == wire.PACKET_ERR and b"can't stat '/ctx/secret'" in packets[-1].data
        assert "/ctx/secret" in c.message
    finally:
        client.close()
        srv.close()


def test_engine_29_2_deprecated_session_endpoint_is_detected_and_said(tmp_path):
    """API 1.53 (Engine 29.2) deprecates POST /session for gRPC on the API
    socket: ctxpack still uses /session while it is served, and says so;
    when such an engine refuses it, the error says why, and `ctxpack build`
    falls back to the tar body with that note."""
    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine
    from ctxpack.engine.session import session_build
    from ctxpack.engine.transport import MockResponse, MockTransport
    from ctxpack.errors import SessionError

    root = tmp_path / "ctx"
    _tree(root, {"Dockerfile": "FROM scratch\nCOPY . /\n", "a": "A"})
    # served: the build goes through the session, with the note
    engine, got = _mock_engine(tmp_path, api="1.53")
    r = session_build(open_context(root, dialect="buildkit"), engine, timeout=30)
    assert r.ok, r.error
    assert got["upgrade_url"].endswith("/v1.49/session")  # ctxpack's own API version, which still has /session
    assert any("speaks API 1.53" in n and "deprecates POST /session" in n and "POST /v1.49/session" in n
               for n in r.notes), r.notes
    # an older engine: no note
    engine, _ = _mock_engine(tmp_path, api="1.41")
    assert session_build(open_context(root, dialect="buildkit"), engine, timeout=30).notes == []

    # refused: a clear SessionError from the library, a tar build from `build`
    bodies: list[bytes] = []

    def handler(request):
        if request.url.endswith("/_ping"):
            return MockResponse(200, b"OK", {"Api-Version": "1.53", "Builder-Version": "2"})
        if "/build?" in request.url:
            bodies.append(request.content)
            return MockResponse(200, json.dumps({"id": "moby.image.id", "aux": {"ID": "sha256:" + "cd" * 32}}).encode())
        return MockResponse(404, b'{"message": "page not found"}')

    refusing = Engine(MockTransport(handler, None))
    with pytest.raises(SessionError) as err:
        session_build(open_context(root, dialect="buildkit"), refusing, timeout=30)
    assert "speaks API 1.53, and API 1.53 (Engine 29.2) deprecates POST /session" in str(err.value)
    assert "--no-session" in str(err.value)
    notes: list[str] = []
    res = build(str(root), refusing, BuildOptions(builder="buildkit", minimal=False, record_snapshot=False),
                on_note=notes.append)
    assert res.image_id == "sha256:" + "cd" * 32
    assert res.upload.compression != "session" and bodies and bodies[-1], res.upload
    assert any("no BuildKit session" in n and "deprecates POST /session" in n and "as a tar" in n
               for n in notes), notes
