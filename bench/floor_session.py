"""The floor for a session upload: a listing that costs nothing at the call.

    python bench/floor_session.py SOCKET CONTEXT DOCKERFILE

Builds CONTEXT (BuildKit dialect, ``--network none --no-cache``) through a
BuildKit session on the unix socket SOCKET, as ``ctxpack build`` does, but
with the context's whole listing made *before* the session opens: walked,
every STAT already framed as the gRPC message it is sent as, handed to the
session complete (no walk, no ``lstat`` proof, no encoding after the
daemon's call).  What is left of its upload (the daemon's DiffCopy calls for
the context, each to its FIN, as ctxpack counts its own) is the daemon's own intake of the listing and of the files it asks
for, plus the framing of the HTTP/2 DATA that carries it: no client that
has to say what is in the context can upload it faster than this to this
daemon.  ``bench/bench_session.py`` runs it after ctxpack's rebuild, with the
same docker config (so the same session shared key: the daemon diffs
against its copy of the previous upload), and reports its upload over
ctxpack's first upload: the lowest second/first ratio within reach.

Prints one JSON line: ``{"id": "floor", "aux": {"seconds": upload,
"listing_seconds": time to make the listing, "files_requested": n,
"entries": n, "image": id}}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ctxpack import open_context  # noqa: E402
from ctxpack.engine.session import Session, session_build  # noqa: E402
from ctxpack.engine.session.filesync import Listing, framed_stat, iter_context_listing  # noqa: E402


def main() -> int:
    sock, root, dockerfile = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.monotonic()
    ctx = open_context(root, dockerfile=dockerfile, dialect="buildkit")
    entries = list(iter_context_listing(ctx))
    for e in entries:
        e.framed = framed_stat(e)
    listing_seconds = time.monotonic() - t0
    # context_later: nothing is walked by the session; the complete listing
    # is given as the source (FileSyncService serves a Listing as it is).
    sess = Session(ctx, context_later=True, listing_cache=False)
    sess.filesync.provide("context", Listing("context", entries, ctx.root))
    res = session_build(ctx, sock, network_mode="none", no_cache=True, session=sess)
    if res.error is not None:
        print(json.dumps({"id": "floor", "error": res.error}))
        return 1
    main_calls = [d for d in res.stats.dirs if d.dir_name == "context" and d.entries > 1]
    # As ctxpack's own counter (SessionStats.upload_seconds): every context call.
    aux = {"seconds": round(res.stats.upload_seconds, 4),
           "listing_seconds": round(listing_seconds, 3), "files_requested": res.stats.files_requested,
           "entries": max((d.entries for d in main_calls), default=0), "image": res.image_id}
    print(json.dumps({"id": "floor", "aux": aux}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
