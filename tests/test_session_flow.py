"""How the session's FileSync sender paces what it sends (no daemon).

The daemon's fsutil receiver reads one stream in order and asks for a file
(REQ) when it reaches the file's STAT; so the sender keeps the listing close
to the receiver's latest REQ while REQs keep coming, and the DATA it asks for
is not queued behind the rest of the listing.  Also: a call's unsent bytes
(the server's outbox) keep their order whatever sizes go in and come out,
and the work that waits for the upload (the snapshot's fingerprint) starts
when the daemon has the whole context, not at its ignore-file probe.

The daemon's side is tests/session_client.py's h2 client on a socket pair.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

from ctxpack import open_context
from ctxpack.engine.session import filesync, wire
from ctxpack.engine.session.core import DIFF_COPY, Session
from ctxpack.engine.session.filesync import AHEAD, FileSyncService, iter_context_listing
from ctxpack.engine.session.grpcserver import GrpcServer, Method, Status, _Outbox
from session_client import H2Client


def _tree(root, n_files):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY . /\n")
    for i in range(n_files):
        with open(os.path.join(root, f"f{i:05d}"), "w") as f:
            f.write(f"file {i}\n")
    return open_context(str(root), dialect="buildkit")


def _session(root, n_files):
    sess = Session(_tree(root, n_files), key="k")
    a, b = socket.socketpair()
    sess.attach(a)
    return sess, H2Client(b)


def _paced(root, n_files):
    """A FileSync service whose walk yields about 8,000 entries a second
    (a receiver's first REQs come before the walk could run far ahead)."""
    ctx = _tree(root, n_files)

    def walk():
        for i, e in enumerate(iter_context_listing(ctx)):
            if i % 8 == 0:
                time.sleep(0.001)
            yield e

    service = FileSyncService({"context": walk})
    a, b = socket.socketpair()
    srv = GrpcServer(a, {DIFF_COPY: Method(service.diff_copy)})
    srv.start()
    return service, srv, H2Client(b)


def _packets(client, sid):
    return [wire.decode_packet(m) for m in list(client.calls[sid].messages)]


def test_outbox_keeps_the_byte_order_for_any_piece_sizes():
    rnd = random.Random(7)
    box = _Outbox()
    sent = bytearray()
    got = bytearray()
    for _ in range(3000):
        if rnd.random() < 0.55:
            piece = bytes(rnd.randrange(256) for _ in range(rnd.choice((0, 1, 5, 70, 300, 5000))))
            box.append(piece if rnd.random() < 0.5 else bytearray(piece))
            sent += piece
        elif box:
            n = rnd.choice((1, 7, 100, 16384, 70000))
            out = box.take(n)
            assert isinstance(out, bytes) and len(out) == min(n, len(sent) - len(got))
            got += out
        assert len(box) == len(sent) - len(got)
    while box:
        got += box.take(1000)
    assert bytes(got) == bytes(sent)


def test_listing_stays_near_the_receivers_requests_then_runs_free(tmp_path, monkeypatch):
    # A pause of 20 ms between two REQs ends the hold; on a loaded machine
    # this test's own receiver can pause that long, so here it takes 0.5 s.
    monkeypatch.setattr(filesync, "_QUIET", 0.5)
    n_files = AHEAD + 1500
    service, srv, client = _paced(tmp_path / "ctx", n_files)
    try:
        sid = client.open(DIFF_COPY, [("dir-name", "context")])
        # The receiver asks for one file every 3 ms, in listing order (ids
        # are STAT ordinals; "Dockerfile" is id 0, f00000 id 1, ...), as
        # soon as it has its STAT.
        worst = stats = seen = 0
        msgs = client.calls[sid].messages
        for i in range(1, 301):
            client.wait_messages(sid, i + 1, timeout=5)
            client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)))
            time.sleep(0.003)
            upto = len(msgs)  # the packets decoded once each: the pace stays steady
            stats += sum(1 for m in msgs[seen:upto] if wire.decode_packet(m).type == wire.PACKET_STAT)
            seen = upto
            # the listing never got more than AHEAD entries past the REQ just sent
            worst = max(worst, stats - (i + 1))
            assert stats <= i + 1 + AHEAD, (i, stats)
        assert worst >= AHEAD // 2, worst  # it did run ahead, up to about AHEAD
        # the DATA asked for came before the rest of the listing
        packets = _packets(client, sid)
        data_ids = {p.id for p in packets if p.type == wire.PACKET_DATA}
        assert set(range(1, 251)) <= data_ids
        assert sum(1 for p in packets if p.type == wire.PACKET_STAT) < n_files
        # REQs stop (nothing else to fetch, as in a rebuild): the rest of the listing goes out
        deadline = time.monotonic() + 10
        while True:
            packets = _packets(client, sid)
            if any(p.type == wire.PACKET_STAT and p.stat is None for p in packets):
                break
            assert time.monotonic() < deadline, "the listing did not end after the REQs stopped"
            time.sleep(0.02)
        assert sum(1 for p in packets if p.type == wire.PACKET_STAT and p.stat is not None) == n_files + 1
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(5) and client.calls[sid].status == Status.OK
        assert service.stats[-1].requests == 300
        content = sum(len(f"file {i}\n") for i in range(n_files)) + len("FROM scratch\nCOPY . /\n")
        assert service.totals("context") == (n_files + 1, content)
    finally:
        client.close()
        srv.close()


def test_a_rebuild_listing_is_never_held(tmp_path):
    # A few REQs (fewer than the sender needs to call the receiver steady):
    # the listing goes out at once, however far ahead of them.
    sess, client = _session(tmp_path / "ctx", AHEAD * 3)
    try:
        sid = client.open(DIFF_COPY, [("dir-name", "context")])
        for i in (1, 2, 3):
            client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)))
        t = time.monotonic()
        deadline = t + 10
        while not any(p.type == wire.PACKET_STAT and p.stat is None for p in _packets(client, sid)):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(5) and client.calls[sid].status == Status.OK
        assert sess.filesync.stats[-1].entries == AHEAD * 3 + 1
    finally:
        client.close()
        sess.close()


def test_work_after_the_upload_starts_at_the_whole_contexts_fin_not_the_ignore_probe(tmp_path):
    sess, client = _session(tmp_path / "ctx", 3)
    fired = threading.Event()
    sess.filesync.when_uploaded(fired.set)
    try:
        sid = client.open(DIFF_COPY, [("dir-name", "context"), ("followpaths", ".dockerignore")])
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(5)
        assert not fired.wait(0.2)
        sid = client.open(DIFF_COPY, [("dir-name", "context")])
        client.wait_messages(sid, 5)
        assert not fired.is_set()
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(5)
        assert fired.wait(5)
        late = threading.Event()
        sess.filesync.when_uploaded(late.set)  # after the fact: at once
        assert late.is_set()
    finally:
        client.close()
        sess.close()


def _dribbling(server_sock, seed=3):
    """A client socket whose bytes reach ``server_sock`` in pieces of 1-40
    bytes (frames cut anywhere, several in one read); the server's bytes come
    back whole."""
    rnd = random.Random(seed)
    client_end, relay_end = socket.socketpair()
    stop = threading.Event()

    def up():
        while not stop.is_set():
            try:
                data = relay_end.recv(65536)
            except OSError:
                return
            if not data:
                return
            i = 0
            while i < len(data):
                k = rnd.randint(1, 40)
                try:
                    server_sock.sendall(data[i:i + k])
                except OSError:
                    return  # the server side closed
                i += k
                if rnd.random() < 0.05:
                    time.sleep(0.001)

    def down():
        while not stop.is_set():
            try:
                data = server_sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                relay_end.sendall(data)
            except OSError:
                return

    for fn in (up, down):
        threading.Thread(target=fn, daemon=True).start()
    return client_end, stop


def test_requests_cut_anywhere_across_reads_are_read_past_h2_in_order(tmp_path):
    from ctxpack.engine.session.core import HEALTH

    sess = Session(_tree(tmp_path / "ctx", 40), key="k")
    a, b = socket.socketpair()
    client_sock, stop = _dribbling(b)
    sess.attach(a)
    client = H2Client(client_sock)
    try:
        sid = client.open(DIFF_COPY, [("dir-name", "context")])
        stats = [wire.decode_packet(m) for m in client.wait_messages(sid, 42, timeout=10)]
        assert stats[-1].type == wire.PACKET_STAT and stats[-1].stat is None
        for i in range(1, 41):  # one DATA frame per REQ, as the daemon sends them
            client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)))
        # a health check as grpc-go sends it: the message, then END_STREAM apart
        hid = client.open(HEALTH)
        client.send(hid, b"")
        client.end(hid)
        assert client.calls[hid].ended.wait(10) and client.calls[hid].status == Status.OK
        client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert client.calls[sid].ended.wait(10) and client.calls[sid].status == Status.OK
        got: dict[int, bytes] = {}
        for p in (wire.decode_packet(m) for m in client.calls[sid].messages[42:]):
            if p.type == wire.PACKET_DATA:
                got[p.id] = got.get(p.id, b"") + p.data
        assert got == {i: f"file {i - 1}\n".encode() for i in range(1, 41)}
        assert sess.server is not None and sess.server._bypassed > 0  # read past h2
        assert sess.stats().files_requested == 40
    finally:
        stop.set()
        client.close()
        sess.close()
