#!/usr/bin/env python3
"""Build with docker-py, sending ctxpack's exact context as a stream.

docker-py's own ``build(path=...)`` computes the context with its own rules
(which differ from Docker's) and writes the whole archive to a temporary file
first.  Here ctxpack packs the context exactly as the docker CLI would and
docker-py sends it as it is produced (``fileobj=`` an iterator of chunks plus
``custom_context=True``: requests then uses chunked transfer encoding)::

    python examples/dockerpy_build.py DIR [-t TAG] [-f DOCKERFILE] [--gzip]

The engine is docker-py's ``docker.from_env()`` (``DOCKER_HOST`` etc.).
(For unmodified programs, ``ctxpack.compat.dockerpy.install()`` does the same
inside ``build(path=...)``.)
"""

from __future__ import annotations

import argparse
import sys

import contextlib
import os

import docker

from ctxpack.compat.dockerpy import context_stream


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("context")
    ap.add_argument("-t", "--tag")
    ap.add_argument("-f", "--file", help="Dockerfile (relative to the current directory, as with docker build)")
    ap.add_argument("--gzip", action="store_true", help="send the context gzip-compressed")
    a = ap.parse_args(argv)

    # The docker CLI's classic upload (what the Engine API's /build reads),
    # packed while it is sent.  A bad .dockerignore fails here, before the request.
    dockerfile = os.path.abspath(a.file) if a.file else None
    body = context_stream(a.context, dockerfile, gzip=a.gzip)

    client = docker.from_env()
    with contextlib.closing(body), contextlib.closing(client):
        for line in client.api.build(
            fileobj=body,               # an iterator of tar chunks: chunked transfer, no temporary file
            custom_context=True,        # the body is the whole context, as is
            encoding=body.encoding,     # "gzip" with --gzip
            dockerfile=body.dockerfile, # its name inside the tar
            tag=a.tag,
            rm=True,
            decode=True,
        ):
            if "stream" in line:
                sys.stdout.write(line["stream"])
            elif "error" in line:
                print(line["error"], file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
