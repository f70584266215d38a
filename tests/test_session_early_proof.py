"""A rebuild's kept listing proved before the daemon asks: the key probe
(ctxpack/engine/session/keyprobe.py), ``ContextListing.start_early`` and
``FileSyncService.provide_early``.

The listing served after an early proof must be the one a fresh walk makes
(entries and STAT packets), whatever changed in between, whether the probe
worked, failed or was late; an early proof of a context the analysis did
not keep is abandoned and nothing of it is served or kept.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from ctxpack.engine.session import keyprobe
from ctxpack.engine.session.core import Session
from ctxpack.engine.session.filesync import FileSyncService, Listing, framed_stat, iter_context_listing
from ctxpack.engine.session.keyprobe import KeyProbe
from ctxpack.engine.session.listcache import ContextListing
from ctxpack.index.state import current_keys
from test_session_listcache import SETTLE, _assert_as_walked, _ctx, _served, tree  # noqa: F401 - the fixture


def test_the_probe_takes_the_keys_current_keys_takes(tree):
    paths = ["", "b", "src/m003/f2.txt", "x\udcff", "sp ace/\u00e9", "ln", "fifo", "no/such/file"]
    probe = KeyProbe(str(tree), paths, chunk=3)
    try:
        got = probe.keys(0, len(paths))
        assert got is not None and probe.failed is None
        assert got == current_keys(str(tree), paths)
        assert probe.keys(3, 6) == current_keys(str(tree), paths[3:6])
        assert list(got[-5:]) == [-1] * 5  # the missing path: MISSING's key
    finally:
        probe.close()


def test_a_probe_that_cannot_start_or_dies_answers_none(tree, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tree / "no-such-python"))
    probe = KeyProbe(str(tree), ["b"])
    assert probe.keys(0, 1) is None and "cannot start" in (probe.failed or "")
    monkeypatch.undo()
    monkeypatch.setattr(keyprobe, "_CHILD", "import os; os._exit(3)")
    probe = KeyProbe(str(tree), ["b", "B"])
    assert probe.keys(0, 1) is None and "status 3" in (probe.failed or "")


def test_a_late_probe_answers_none_within_its_timeout(tree, monkeypatch):
    monkeypatch.setattr(keyprobe, "_CHILD", "import time; time.sleep(30)")
    probe = KeyProbe(str(tree), ["b"], timeout=0.2)
    t = time.monotonic()
    try:
        assert probe.keys(0, 1) is None
        assert time.monotonic() - t < 2
    finally:
        probe.close()
    assert probe._proc is not None and probe._proc.wait(5) != 0  # close() ended it


def _early(root, cache_dir):
    """A rebuild's listing read and probed early, then served and kept."""
    src = ContextListing(_ctx(root), str(cache_dir))
    assert src.kept()
    src.start_early()
    return src


@pytest.mark.parametrize("probe", ["works", "fails", "late"])
def test_an_early_proof_serves_what_a_walk_lists(tree, tmp_path, monkeypatch, probe):
    _served(tree, tmp_path / "cache")
    if probe == "fails":
        monkeypatch.setattr(keyprobe, "_CHILD", "import os; os._exit(1)")
    elif probe == "late":
        monkeypatch.setattr(keyprobe, "_CHILD", "import time; time.sleep(30)")
        monkeypatch.setattr(keyprobe, "TIMEOUT", 0.1)
    src = _early(tree, tmp_path / "cache")
    # changed after the listing was kept, before it is served
    (tree / "src/m005/f3.txt").write_text("changed, and longer than before")
    os.chmod(tree / "b", 0o600)
    time.sleep(0.2)  # the probe (when it works) has taken its keys by now
    got = list(src())
    src.stop_early()
    assert src.outcome == "hit (2 changed)" and src.origin == "cache"
    _assert_as_walked(tree, got)
    src.save(got)
    again, src2 = _served(tree, tmp_path / "cache")
    assert src2.outcome == "hit"
    _assert_as_walked(tree, again)


def test_an_early_proof_walks_from_a_changed_directory(tree, tmp_path):
    _served(tree, tmp_path / "cache")
    time.sleep(SETTLE)
    (tree / "src/m007/new.txt").write_text("new")
    src = _early(tree, tmp_path / "cache")
    got = list(src())
    assert src.origin == "cache, then walk"
    _assert_as_walked(tree, got)


def test_a_change_after_the_early_keys_is_seen_by_the_next_build(tree, tmp_path):
    """The listing is the context as it was when its keys were taken (as a
    walk's is as it was when the walk read each directory); what changed
    after that is not lost: the kept keys are the ones taken, so the next
    build sees the change."""
    _served(tree, tmp_path / "cache")
    src = _early(tree, tmp_path / "cache")
    src._early.join(10)
    probe = src._probe
    assert probe is not None and probe.keys(0, probe.n) is not None  # every key taken
    (tree / "src/m007/new.txt").write_text("new")
    (tree / "b").write_text("b, changed after the keys were taken")
    got = list(src())
    src.stop_early()
    assert src.outcome == "hit" and "src/m007/new.txt" not in [e.path for e in got]
    src.save(got)
    again, src2 = _served(tree, tmp_path / "cache")
    assert src2.origin == "cache, then walk"
    _assert_as_walked(tree, again)


class _Source:
    """A listing source that says how far it was read and whether it was closed."""

    def __init__(self, entries):
        self.entries = entries
        self.read = 0
        self.closed = False
        self.go = threading.Event()

    def __call__(self):
        try:
            for i, e in enumerate(self.entries):
                if i == 300:
                    self.go.wait(5)  # hold here until the test has decided
                self.read = i + 1
                yield e
        finally:
            self.closed = True


def test_provide_early_keeps_the_walk_for_the_same_source_only(tree):
    entries = list(iter_context_listing(_ctx(tree))) * 10  # > one batch
    fs = FileSyncService({})
    fs.defer("context")
    src = _Source(entries)
    fs.provide_early("context", src)
    deadline = time.monotonic() + 5
    while src.read < 300 and time.monotonic() < deadline:
        time.sleep(0.001)
    early = fs.made("context")
    assert early is not None and not early.complete and src.read == 300  # walked before it was decided
    fs.provide("context", src)
    src.go.set()
    assert fs.listing("context") is early
    assert early.wait_complete(5) == entries and not src.closed or src.read == len(entries)

    # another source: the early walk is abandoned, the new one served
    fs = FileSyncService({})
    fs.defer("context")
    src = _Source(entries)
    fs.provide_early("context", src)
    while src.read < 300 and time.monotonic() < deadline + 5:
        time.sleep(0.001)
    early = fs.made("context")
    other = entries[:7]
    fs.provide("context", Listing("context", other, str(tree)))
    src.go.set()
    assert fs.listing("context").wait_complete(5) == other
    deadline = time.monotonic() + 5
    while not src.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert early is not None and early.abandoned and src.closed and src.read < len(entries)


def test_refuse_abandons_an_early_walk(tree):
    fs = FileSyncService({})
    fs.defer("context")
    src = _Source(list(iter_context_listing(_ctx(tree))) * 10)
    fs.provide_early("context", src)
    fs.refuse("context", "no context")
    src.go.set()
    deadline = time.monotonic() + 5
    while not src.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert src.closed and fs.made("context") is None


def test_a_session_keeps_the_early_proof_only_for_the_context_it_serves(tree, tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    first = ContextListing(_ctx(tree))
    first.save(list(first()))
    time.sleep(SETTLE)

    ctx = _ctx(tree)
    sess = Session(ctx, key="k", context_later=True)
    early = sess.listing_cache
    assert early is not None and early._early is not None  # started before the context was decided
    sess.provide_context(ctx)
    assert sess.listing_cache is early
    got = sess.filesync.listing("context").wait_complete(10)
    assert early.outcome == "hit" and early.origin == "cache"
    _assert_as_walked(tree, got)
    sess.close()

    # the analysis chose another context: the early one is stopped, the other walked
    sess = Session(ctx, key="k", context_later=True)
    early = sess.listing_cache
    other = dataclasses.replace(ctx)  # another object: what a --minimal selection is
    sess.provide_context(other)
    assert sess.listing_cache is not early
    got = sess.filesync.listing("context").wait_complete(10)
    assert [framed_stat(e) for e in got] == [framed_stat(e) for e in iter_context_listing(ctx)]
    assert early is not None and (early._probe is None or early._probe._proc.wait(5) is not None)
    sess.close()
