"""The floor for a classic ``POST /build``: a client that costs nothing.

    python bench/floor_client.py SOCKET REQUEST_TARGET TARFILE

Sends TARFILE (already written, e.g. by ``ctxpack pack -o``; in the page
cache) as the body of ``POST REQUEST_TARGET`` on the unix socket SOCKET with
``Content-Length`` and ``os.sendfile`` (no walk, no reads, no framing; the
4 MiB send buffer ctxpack's transport asks for), then
reads the engine's answer to its end.  No client can send the same context
faster, so its time to image says what the engine alone needs for this
context and Dockerfile: ``bench/bench_build.py``'s "floor" row.

Prints each engine message as one JSON line (``{"stream": "Step 1/2 : ..."}``,
as ``ctxpack build --progress json`` does, so the benchmark times the steps),
then ``{"id": "floor", "aux": {"elapsed": s, "upload": s, "bytes": n}}``
(``elapsed``: connect to the answer's last byte; ``upload``: connect to the
body's last byte), then the image ID alone.  Standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time


def main() -> int:
    path, target, tar = sys.argv[1], sys.argv[2], sys.argv[3]
    size = os.path.getsize(tar)
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The send buffer ctxpack asks for on a unix socket (its
    # transport.UNIX_SEND_BUFFER), so the floor has every advantage ctxpack has.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(path)
    head = (f"POST {target} HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: floor-client\r\n"
            f"Content-Type: application/x-tar\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
    s.sendall(head.encode())
    fd = os.open(tar, os.O_RDONLY)
    try:
        off = 0
        while off < size:
            n = os.sendfile(s.fileno(), fd, off, size - off)
            if n == 0:
                raise SystemExit(f"{tar} shrank while it was sent")
            off += n
    finally:
        os.close(fd)
    t1 = time.monotonic()
    resp = http.client.HTTPResponse(s)
    resp.begin()
    image = ""
    error = ""
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            print(json.dumps(msg), flush=True)
            aux = msg.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image = aux["ID"]
            if msg.get("error"):
                error = msg["error"]
    t2 = time.monotonic()
    s.close()
    if resp.status != 200 or error or not image:
        print(f"HTTP {resp.status}: {error or buf.decode('utf-8', 'replace')[-500:]}", file=sys.stderr)
        return 1
    print(json.dumps({"id": "floor", "aux": {"elapsed": t2 - t0, "upload": t1 - t0, "bytes": size}}))
    print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
