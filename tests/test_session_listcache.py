"""The session's kept listing (ctxpack/engine/session/listcache.py): a
rebuild serves the previous build's STATs when ``lstat`` proves that a walk
would list the same, and walks whenever it cannot prove it.

Every check compares with a fresh walk (``iter_context_listing``): the same
entries, in the same order, with byte-identical STAT packets.  The real
daemon's side (the image of a rebuild from the kept listing) is in
tests/test_session_engine.py::test_rebuild_after_one_change_requests_only_that_file.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from ctxpack import open_context
from ctxpack.engine.session import listcache, wire
from ctxpack.engine.session.core import DIFF_COPY, Session
from ctxpack.engine.session.filesync import framed_stat, iter_context_listing
from ctxpack.engine.session.listcache import ContextListing
from session_client import H2Client
from test_session_unit import _tree  # the same tree maker as the listing's unit tests

#: Longer than the racy window (50 ms): a directory this old is vouched for.
SETTLE = 0.08


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "ctx"
    files = {"Dockerfile": "FROM scratch\n", ".dockerignore": "*.log\nbuild/\n!build/keep\n", "a.log": "x",
             "b": "b", "B": "B", "build/keep": "k", "build/drop": "d", "sp ace/\u00e9": "u", "empty/": "",
             "first": "same", "x\udcff": "undecodable name"}
    files.update({f"src/m{i:03d}/f{j}.txt": f"{i} {j}" for i in range(12) for j in range(6)})
    _tree(root, files, links=[("ln", "b"), ("src/abs", "/etc/passwd")], hard=[("zz", "first")])
    os.mkfifo(root / "fifo")
    time.sleep(SETTLE)
    return root


def _ctx(root):
    return open_context(root, dialect="buildkit")


def _served(root, cache_dir):
    """One build's listing through the cache, kept afterwards: (entries, source)."""
    src = ContextListing(_ctx(root), str(cache_dir))
    entries = list(src())
    src.save(entries)
    return entries, src


def _assert_as_walked(root, entries):
    fresh = list(iter_context_listing(_ctx(root)))
    assert [e.path for e in entries] == [e.path for e in fresh]
    assert entries == fresh
    assert [e.framed or framed_stat(e) for e in entries] == [framed_stat(e) for e in fresh]


def test_unchanged_context_is_served_from_the_kept_listing(tree, tmp_path):
    first, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "miss: no listing kept" and src.origin == "walk"
    again, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "hit" and src.origin == "cache"
    assert all(e.framed is not None for e in again)
    _assert_as_walked(tree, again)
    # hard link and symlink as the walk makes them
    by = {e.path: e for e in again}
    assert by["zz"].stat.linkname == "first" and by["ln"].stat.linkname == "b"


def test_a_changed_file_is_made_again_and_the_rest_kept(tree, tmp_path):
    _served(tree, tmp_path / "cache")
    (tree / "src/m005/f3.txt").write_text("changed, and longer than before")
    os.chmod(tree / "b", 0o600)
    got, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "hit (2 changed)" and src.origin == "cache"
    _assert_as_walked(tree, got)
    again, src = _served(tree, tmp_path / "cache")  # the change was kept: nothing to make again
    assert src.outcome == "hit"
    _assert_as_walked(tree, again)


@pytest.mark.parametrize("change", ["new file", "removed file", "file to dir", "new hard link", "dir mtime",
                                    "root entry", "ignored file appears", "kept dir read for exceptions"])
def test_what_only_a_walk_can_decide_is_walked(tree, tmp_path, monkeypatch, change):
    monkeypatch.setattr(listcache, "CHUNK", 8)  # the change falls in a later chunk than the first
    _served(tree, tmp_path / "cache")
    if change == "new file":
        (tree / "src/m007/new.txt").write_text("new")
    elif change == "removed file":
        os.unlink(tree / "src/m007/f2.txt")
    elif change == "file to dir":
        os.unlink(tree / "src/m009/f1.txt")
        os.mkdir(tree / "src/m009/f1.txt")
    elif change == "new hard link":
        os.link(tree / "src/m003/f0.txt", tmp_path / "outside-link")  # nlink 2, ctime changed
    elif change == "dir mtime":
        os.utime(tree / "src/m010", (1, 1))
    elif change == "root entry":
        (tree / "c").write_text("new at the top")
    elif change == "ignored file appears":
        (tree / "b.log").write_text("ignored, but the root changed")
    elif change == "kept dir read for exceptions":
        (tree / "build/keep2").write_text("x")
    time.sleep(SETTLE)  # so that the walk's listing is kept
    got, src = _served(tree, tmp_path / "cache")
    assert src.outcome.startswith("miss"), src.outcome
    _assert_as_walked(tree, got)
    if change in ("new file", "removed file", "file to dir", "dir mtime"):
        assert src.origin == "cache, then walk"  # the entries before the change were served from it
    again, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "hit", src.outcome
    _assert_as_walked(tree, again)


def test_other_rules_use_another_kept_listing(tree, tmp_path):
    _served(tree, tmp_path / "cache")
    (tree / ".dockerignore").write_text("*.log\n")
    time.sleep(SETTLE)
    got, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "miss: no listing kept"
    _assert_as_walked(tree, got)
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_a_directory_changed_just_before_the_walk_is_not_vouched_for(tree, tmp_path, monkeypatch):
    # A window of a minute: the change below is inside it however slowly this runs.
    monkeypatch.setattr(listcache, "racy_window", lambda mtime, ctime: 60_000_000_000)
    (tree / "src/m001/late.txt").write_text("the directory's times are within the racy window")
    got, src = _served(tree, tmp_path / "cache")
    assert "not kept" in src.outcome and not (tmp_path / "cache").exists()
    _assert_as_walked(tree, got)


def test_a_damaged_or_foreign_file_is_a_miss(tree, tmp_path):
    _, src = _served(tree, tmp_path / "cache")
    assert src.path is not None
    raw = open(src.path, "rb").read()
    for bad in (raw[:-10], raw[:40] + bytes([raw[40] ^ 1]) + raw[41:], b"something else"):
        with open(src.path, "wb") as f:
            f.write(bad)
        got, src = _served(tree, tmp_path / "cache")
        assert src.outcome.startswith("miss: the kept listing is damaged"), src.outcome
        _assert_as_walked(tree, got)


def test_off_when_asked_or_when_no_finite_list_of_directories(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXPACK_SESSION_CACHE", "0")
    src = ContextListing(_ctx(tree), str(tmp_path / "cache"))
    assert src.path is None and src.outcome.startswith("off")
    assert list(src()) == list(iter_context_listing(_ctx(tree)))
    monkeypatch.delenv("CTXPACK_SESSION_CACHE")
    (tree / ".dockerignore").write_text("build/\n!build/*ep\n")  # a wildcard exception: fsutil reads every excluded dir
    src = ContextListing(_ctx(tree), str(tmp_path / "cache"))
    assert src.path is None and "finite" in src.outcome


def test_the_session_serves_the_kept_listing_on_the_wire(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))

    def listing_on_the_wire():
        sess = Session(_ctx(tree), key="k")
        a, b = socket.socketpair()
        sess.attach(a)
        client = H2Client(b)
        try:
            sid = client.open(DIFF_COPY, [("dir-name", "context")])
            deadline = time.monotonic() + 10
            while True:
                packets = [wire.decode_packet(m) for m in list(client.calls[sid].messages)]
                if any(p.type == wire.PACKET_STAT and p.stat is None for p in packets):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.005)
            client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
            assert client.calls[sid].ended.wait(5)
            raw = list(client.calls[sid].messages)
            stats = sess.filesync.stats[-1]
        finally:
            client.close()
            sess.close()  # waits for the listing being kept
        return raw, stats, sess.listing_cache

    first, stats1, kept1 = listing_on_the_wire()
    assert stats1.listing_from == "walk" and kept1 is not None and kept1.outcome == "miss: no listing kept"
    second, stats2, kept2 = listing_on_the_wire()
    assert stats2.listing_from == "cache" and kept2 is not None and kept2.outcome == "hit"
    assert second == first  # the same STAT packets, in the same order
    assert stats2.stat_bytes == stats1.stat_bytes and stats2.entries == stats1.entries


def test_narrowed_calls_select_the_same_from_a_kept_listing(tree, tmp_path):
    from ctxpack.engine.session.filesync import Listing, select

    _served(tree, tmp_path / "cache")
    kept, src = _served(tree, tmp_path / "cache")
    assert src.outcome == "hit"
    walked = list(iter_context_listing(_ctx(tree)))
    for includes, follow in ((None, [".dockerignore"]), (["src/m00*"], None), (None, ["ln", "zz"]), (["b", "sp ace"], None)):
        a = select(Listing("context", kept), includes, follow)
        b = select(Listing("context", walked), includes, follow)
        assert a == b and a
        # the kept frames are the packets of what is selected (a relinked hard link is framed anew)
        assert [e.framed or framed_stat(e) for e in a] == [framed_stat(e) for e in b]


def test_a_listing_too_big_to_keep_is_walked_each_time(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(listcache, "MAX_KEPT", 50)
    got, src = _served(tree, tmp_path / "cache")
    assert "not kept: more than 50 entries" in src.outcome and len(got) > 50
    got, src = _served(tree, tmp_path / "cache")
    assert src.outcome.startswith("miss: no listing kept")
    _assert_as_walked(tree, got)


def test_cache_clear_removes_the_kept_listings(tree, tmp_path, monkeypatch):
    """`ctxpack cache clear DIR` forgets DIR's kept listing (the next build
    walks), not another context's; `cache clear --all` removes them all."""
    from click.testing import CliRunner

    from ctxpack.cli import main

    cache = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(cache))
    other = tmp_path / "other"
    _tree(other, {"Dockerfile": "FROM scratch\n", "f": "f"})
    time.sleep(SETTLE)
    for root in (tree, other):
        src = ContextListing(_ctx(root))
        src.save(list(src()))
    kept = cache / "session-listings"
    assert len(list(kept.iterdir())) == 2
    assert _hit(tree) and _hit(other)

    res = CliRunner().invoke(main, ["cache", "clear", str(tree)])
    assert res.exit_code == 0, res.output
    assert "removed 1 kept session listing" in res.output
    assert not _hit(tree) and _hit(other)

    res = CliRunner().invoke(main, ["cache", "clear", "--all"])
    assert res.exit_code == 0, res.output
    assert "removed 1 kept session listing" in res.output
    assert not _hit(other) and list(kept.iterdir()) == []
    res = CliRunner().invoke(main, ["cache", "clear", str(tree)])
    assert res.exit_code == 0 and "kept session listing" not in res.output


def _hit(root):
    src = ContextListing(_ctx(root))
    list(src())
    return src.origin == "cache"
