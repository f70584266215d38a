"""Who one DiffCopy upload waited on: the sender or the daemon.

The session's files flow from the client (the HTTP/2 *server*: ctxpack or
the docker CLI) to the daemon (the HTTP/2 client, BuildKit's fsutil
receiver), under HTTP/2 flow control (RFC 9113 §5.2): the client may send
DATA only while both the connection's window and the stream's window,
both granted by the daemon (its SETTINGS_INITIAL_WINDOW_SIZE, then
WINDOW_UPDATE frames), are above zero.  From the frames a relay saw, each
instant of the upload (the daemon's DiffCopy call to its FIN) is put on one
side:

* **the sender's**: it has something to send (the listing is not ended yet,
  or a file the daemon requested is not fully sent) and both windows are
  open: only the sender can move;
* **the daemon's**: both windows shut (the daemon has not yet taken in what
  it was sent), or everything asked for is sent and the daemon has not
  requested more or said FIN.

A sender that cost nothing would remove at most its own side: the daemon's
side is a lower bound on the upload for *any* client sending this listing
to this daemon, as long as the daemon was not short of CPU while waited on
(bench_session.py reports the CPU each used in the same window).

Events are ``(t, kind, sid, value)`` tuples, in any order (two relay threads
append them; they are sorted by time here):

``("settings", 0, init)``   the daemon's SETTINGS_INITIAL_WINDOW_SIZE
``("open", sid, 0)``        the daemon's HEADERS opening stream ``sid``
``("update", sid, n)``      the daemon's WINDOW_UPDATE (sid 0: the connection)
``("data", sid, n)``        a DATA frame from the sender, ``n`` flow-controlled bytes
``("listing-end", sid, 0)`` the empty STAT that ends the listing
``("req", sid, 0)``         the daemon's REQ for a file
``("file-end", sid, 0)``    the sender's empty DATA packet that ends a file
``("fin", sid, 0)``         the daemon's FIN
"""

from __future__ import annotations

from typing import Any, Iterable

#: RFC 9113 §6.9.2: both windows start at 65,535 bytes.
DEFAULT_WINDOW = 65535


def split_upload(events: Iterable[tuple[float, str, int, int]], sid: int, t_call: float) -> dict[str, Any]:
    """The upload of stream ``sid`` (called at ``t_call``) split into the
    sender's and the daemon's seconds, up to the daemon's FIN on it."""
    conn_w = DEFAULT_WINDOW
    init = DEFAULT_WINDOW
    streams: dict[int, int] = {}
    listing_ended = False
    outstanding = 0
    sender = daemon = 0.0
    shut_spells = 0
    t_prev: float | None = None
    owner_prev = ""
    fin_at: float | None = None
    for t, kind, s, v in sorted(events, key=lambda e: e[0]):
        if t_prev is not None:
            if owner_prev == "sender":
                sender += t - t_prev
            else:
                daemon += t - t_prev
        if kind == "settings":
            for k in streams:
                streams[k] += v - init
            init = v
        elif kind == "open":
            streams[s] = init
        elif kind == "update":
            if s == 0:
                conn_w += v
            elif s in streams:
                streams[s] += v
        elif kind == "data":
            conn_w -= v
            if s in streams:
                streams[s] -= v
        elif s == sid:
            if kind == "listing-end":
                listing_ended = True
            elif kind == "req":
                outstanding += 1
            elif kind == "file-end":
                outstanding = max(0, outstanding - 1)
            elif kind == "fin":
                fin_at = t
                break
        if t < t_call or sid not in streams:
            t_prev = None
            continue
        has_work = not listing_ended or outstanding > 0
        open_ = conn_w > 0 and streams[sid] > 0
        owner = "sender" if has_work and open_ else "daemon"
        if owner == "daemon" and has_work and owner_prev != "daemon":
            shut_spells += 1
        t_prev, owner_prev = t, owner
    if fin_at is None:
        return {}
    return {"sender_seconds": round(sender, 4), "daemon_seconds": round(daemon, 4),
            "window_shut_spells": shut_spells, "seconds": round(fin_at - t_call, 4)}
