"""Which of Docker's two context walkers (and ignore-file rules) to reproduce."""

from __future__ import annotations

import enum

__all__ = ["Dialect"]


class Dialect(str, enum.Enum):
    """Which of Docker's two context walkers to reproduce.

    ``BUILDKIT``: ``docker build`` since Engine 23 (fsutil's walker,
    per-Dockerfile ignore files); ``CLASSIC``: ``DOCKER_BUILDKIT=0`` and
    every Engine API client (go-archive's walker, the CLI's validation).
    """

    BUILDKIT = "buildkit"
    CLASSIC = "classic"
