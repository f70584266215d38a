"""Running a piece of a test as ``nobody``: root reads everything, so the
permission cases drop privileges in a forked child (test helper, not a test
module)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

NOBODY = 65534


def as_nobody(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with uid/gid nobody; return its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out: Any = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = ("error", f"{type(e).__name__}: {e}")
        with os.fdopen(w, "wb") as f:
            pickle.dump(out, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)
