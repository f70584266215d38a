"""A unix-socket relay in front of an engine, for tests of what ctxpack does
when the connection misbehaves (freezes, is cut, or the engine comes late)."""

from __future__ import annotations

import socket
import threading


class Relay:
    """Connections to the unix socket ``path`` are relayed to the unix
    socket ``target``, one thread each way.  Subclasses change a direction:
    :meth:`_up` pumps ctxpack's bytes to the target, :meth:`_pump` (also
    used for the way back) any direction."""

    def __init__(self, path: str, target: str):
        self.path, self.target = path, target
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX)
            try:
                u.connect(self.target)
            except OSError:
                c.close()
                u.close()
                continue
            self.socks += [c, u]
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _up(self, c: socket.socket, u: socket.socket) -> None:
        self._pump(c, u)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """``a``'s bytes to ``b`` until ``a`` ends; then both are shut down,
        so the other direction ends too (a closed connection, relayed)."""
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.srv.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
