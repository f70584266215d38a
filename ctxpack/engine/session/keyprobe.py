"""The ``lstat`` keys of a kept listing's entries, taken by a helper process
before the daemon asks for the context.

Proving a kept listing current (:mod:`.listcache`) is one ``lstat`` per
entry: 16,812 for the benchmark's tree, ~50 ms on their own.  In this
process they run beside the session's threads and the Dockerfile analysis,
and each ``lstat`` gives up the GIL and must wait to get it back, up to the
interpreter's 5 ms switch interval while another thread computes.  Measured
on the benchmark's rebuilds, the proof then ended 0.08-0.14 s after the
daemon's call, and the daemon, whose own intake of the listing takes
~0.17 s, waited for it.  A child interpreter that has nothing else to do
takes the same ``lstat`` calls on the other core from the moment the
session starts (~10 ms to start it, ~60 ms for the calls), so the keys are
there when the proof needs them.

It is an optimisation only: :meth:`KeyProbe.keys` answers ``None`` when the
child could not start, died, sent something short or is late, and the
caller takes the keys itself (:func:`ctxpack.index.state.current_keys`).
The keys are the same five numbers ``current_keys`` takes, from the same
``lstat`` of the same paths under the same credentials; a key taken earlier
proves no less, as each entry is checked before it is served either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from array import array

from ...index.state import KEY

__all__ = ["KeyProbe"]

# The child: root, NUL, the paths (NUL-separated) on stdin; for each path,
# five int64 in native order on stdout (MISSING's -1s when lstat fails),
# written every ``chunk`` paths so that the parent can start on the first.
_CHILD = r"""
import os, sys
from array import array
chunk = int(sys.argv[1])
data = sys.stdin.buffer.read()
root, _, rest = data.partition(b"\0")
paths = rest.split(b"\0") if rest else []
prefix = root.rstrip(b"/") + b"/"
lstat = os.lstat
out = array("q")
for i, p in enumerate(paths, 1):
    try:
        s = lstat(prefix + p if p else root)
    except OSError:
        out.extend((-1, -1, -1, -1, -1))
    else:
        out.extend((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode))
    if i % chunk == 0 or i == len(paths):
        b = memoryview(out.tobytes())
        while b:
            b = b[os.write(1, b):]
        del out[:]
"""

_ITEM = KEY * array("q").itemsize
#: Seconds :meth:`KeyProbe.keys` waits for a range (the child takes ~0.1 s
#: for 17k paths): past that the caller's own ``lstat`` is the faster way.
TIMEOUT = 2.0


class KeyProbe:
    """Start the child for ``paths`` (relative to ``root``; ``""`` is the
    root) now; :meth:`keys` hands out its keys for a range of them.
    ``timeout``: how long :meth:`keys` waits for a range before the caller
    takes the keys itself (default :data:`TIMEOUT`)."""

    def __init__(self, root: str, paths: list[str], *, chunk: int = 256, timeout: float | None = None):
        self.n = len(paths)
        self.timeout = TIMEOUT if timeout is None else timeout
        self.failed: str | None = None
        self._buf = bytearray()
        self._done = False
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        payload = b"\0".join([root.encode("utf-8", "surrogateescape")]
                             + [p.encode("utf-8", "surrogateescape") for p in paths])
        try:
            # -I: no environment, no user site; -S: no site (start-up ~10 ms)
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD, str(chunk)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as e:
            self._finish(f"cannot start the key probe: {e.strerror}")
            return
        threading.Thread(target=self._pump, args=(self._proc, payload), name="ctxpack-session-key-probe",
                         daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes], payload: bytes) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        why = None
        try:
            # The child reads all of its input before it writes: no deadlock.
            proc.stdin.write(payload)
            proc.stdin.close()
            fd = proc.stdout.fileno()
            while True:
                b = os.read(fd, 1 << 16)
                if not b:
                    break
                with self._cond:
                    self._buf += b
                    self._cond.notify_all()
        except OSError as e:
            why = f"the key probe failed: {e.strerror}"
        finally:
            rc = proc.wait()
            if why is None and (rc != 0 or len(self._buf) != self.n * _ITEM):
                why = f"the key probe ended with status {rc} after {len(self._buf) // _ITEM} of {self.n} keys"
            self._finish(why)

    def _finish(self, why: str | None) -> None:
        with self._cond:
            self.failed = self.failed or why
            self._done = True
            self._cond.notify_all()

    def keys(self, start: int, end: int) -> array[int] | None:
        """The keys of paths ``start`` to ``end`` (waiting for the child at
        most :attr:`timeout` seconds), or ``None``: take them yourself."""
        want = end * _ITEM
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while len(self._buf) < want and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if len(self._buf) < want or (self._done and self.failed is not None):
                return None
            out = array("q")
            out.frombytes(bytes(self._buf[start * _ITEM:want]))
            return out

    def close(self) -> None:
        """Stop the child if it still runs (its keys are not needed)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
