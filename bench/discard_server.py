"""The benchmarks' fake Docker daemon: ctxpack's own
:class:`ctxpack.engine.fake.FakeDaemon`, throwing build uploads away.

For timing the docker CLI's context step (``DOCKER_BUILDKIT=0 docker build
DIR``: walk + validate + tar + upload) the daemon answers the ping, reads the
chunked ``POST /build`` body in large reads and discards it, counting bytes
(the tests' capture server keeps every body in memory instead, which adds
seconds and GBs of RAM to a 1.4 GB upload).  With :meth:`set_verify` the body
is parsed as a tar stream (slower) and the member names are kept, so a run
can be checked against ``ctxpack ls``.
"""

from __future__ import annotations

from ctxpack.engine.fake import FakeDaemon, discard, tar_names


class DiscardServer(FakeDaemon):
    """A discarding fake daemon; ``docker_host`` for ``DOCKER_HOST``."""

    def __init__(self) -> None:
        super().__init__(consume=discard)

    def set_verify(self, on: bool) -> None:
        """Parse later uploads as tar and keep their member names."""
        self.set_consumer(tar_names if on else discard)

    def take_uploads(self) -> list[tuple[int, list[str] | None]]:
        """(bytes, member names or None) of each upload since the last call."""
        return [(r.body_size, r.result if isinstance(r.result, list) else None)
                for r in self.take() if r.path == "/build"]
