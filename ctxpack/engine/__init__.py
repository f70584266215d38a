"""Talking to Docker engines: transports, endpoints, the Engine API client,
progress rendering and ``build()``.

Layers, each importing only those before it: :mod:`.transport` (requests,
responses, upgrades over unix/tcp/TLS/ssh), :mod:`.hosts` (which endpoint,
as the docker CLI decides), :mod:`.messages` (decoding the build stream),
:mod:`.client` (versions, ``/_ping``, JSON calls, the ``/build`` request),
:mod:`.progress` (rendering), :mod:`.builder` (``build()``).  The BuildKit
session lives in :mod:`.session` on top of :meth:`Transport.upgrade`.
"""

from __future__ import annotations

from .hosts import Endpoint, TLSFiles, open_transport, parse_host, resolve_endpoint
from .transport import Headers, MockResponse, MockTransport, Request, Response, Transport, Upgraded

__all__ = [
    "Endpoint",
    "Headers",
    "MockResponse",
    "MockTransport",
    "Request",
    "Response",
    "TLSFiles",
    "Transport",
    "Upgraded",
    "open_transport",
    "parse_host",
    "resolve_endpoint",
]
