"""The BuildKit session: ctxpack serves the build context, secrets, ssh
agents and registry credentials to the daemon over gRPC (issue 13).

See docs/session.md.  Public names:

* :class:`Session` — the services for one build context;
* :func:`session_build` — ``POST /session`` + ``POST /build`` with it;
* :func:`parse_secret`, :func:`parse_ssh` — ``--secret`` / ``--ssh`` values.
"""

from .buildrun import SessionBuild, SessionBuildResult, session_build
from .core import Session, SessionStats
from .services import SecretSpec, SshSpec, parse_secret, parse_ssh

__all__ = [
    "Session", "SessionStats", "SessionBuild", "SessionBuildResult", "session_build",
    "SecretSpec", "SshSpec", "parse_secret", "parse_ssh",
]
