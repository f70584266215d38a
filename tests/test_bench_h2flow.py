"""bench/h2flow.py: an upload's time split between the sender and the daemon
by HTTP/2 flow control (a diagnostic table in bench/results/session.md)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import h2flow  # noqa: E402

SID = 5


def test_windows_shut_put_the_wait_on_the_daemon() -> None:
    ev = [
        (0.0, "settings", 0, 100),
        (1.0, "open", SID, 0),
        (1.5, "data", SID, 60),     # sender took 0.5 s to start
        (2.0, "data", SID, 40),     # stream window 100 used up: the daemon's turn
        (5.0, "update", SID, 100),  # 3 s later the daemon takes it in
        (5.0, "update", 0, 100),
        (5.25, "data", SID, 10),
        (5.25, "listing-end", SID, 0),
        (6.0, "req", SID, 0),       # waiting for the daemon again
        (6.5, "data", SID, 20),
        (6.5, "file-end", SID, 0),
        (7.0, "fin", SID, 0),
    ]
    got = h2flow.split_upload(reversed(ev), SID, 1.0)  # any order: sorted by time
    assert got["seconds"] == 6.0
    assert got["sender_seconds"] == pytest.approx(0.5 + 0.5 + 0.25 + 0.5)
    assert got["daemon_seconds"] == pytest.approx(3.0 + 0.75 + 0.5)
    assert got["window_shut_spells"] == 1


@pytest.mark.parametrize("events, daemon, sender", [
    pytest.param([
        (0.0, "open", SID, 0),
        (0.0, "open", 7, 0),
        (0.1, "data", 7, h2flow.DEFAULT_WINDOW),  # another stream took the whole connection window
        (1.1, "update", 0, 1000),
        (1.2, "data", SID, 5),
        (1.2, "listing-end", SID, 0),
        (1.3, "fin", SID, 0),
    ], 1.0 + 0.1, 0.1 + 0.1, id="connection window shut by another stream"),
    pytest.param([
        (0.0, "open", SID, 0),
        (0.5, "settings", 0, 10),  # 65,535 -> 10: the stream's window drops by the difference
        (0.6, "data", SID, 10),
        (2.6, "settings", 0, 30),  # +20
        (2.7, "listing-end", SID, 0),
        (2.8, "fin", SID, 0),
    ], 2.0 + 0.1, 0.6 + 0.1, id="a settings change moves open streams' windows"),
])
def test_windows_other_than_the_stream_own(events, daemon, sender) -> None:
    got = h2flow.split_upload(events, SID, 0.0)
    assert got["daemon_seconds"] == pytest.approx(daemon)
    assert got["sender_seconds"] == pytest.approx(sender)


def test_no_fin_no_split() -> None:
    assert h2flow.split_upload([(0.0, "open", SID, 0), (1.0, "data", SID, 3)], SID, 0.0) == {}
