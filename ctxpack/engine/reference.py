"""Image references checked the way the docker CLI checks ``-t`` (pure).

``docker build -t NAME`` runs distribution's ``ParseNormalizedNamed`` on
the name before it connects to anything; a bad name never reaches the
engine (which would refuse it only after the upload had started).  The
grammar and the messages are Docker's (``distribution/reference``):

* a 64-digit hexadecimal string is an image ID, not a name;
* the part before the first ``/`` is a registry when it has a ``.`` or a
  ``:`` or is ``localhost`` (or has upper case); else the name is on
  Docker Hub and a single component gets ``library/`` in front;
* the repository path must be lower case (the message shows it with
  ``library/``, as the CLI does), then the whole reference must match
  ``name[:tag][@digest]`` and the name be at most 255 characters.
"""

from __future__ import annotations

import re

__all__ = ["reference_error", "env_error"]

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::{_TAG})?(?:@({_DIGEST}))?", re.ASCII)
#: go-digest's registered algorithms and their hex lengths.
_DIGEST_SIZES = {"sha256": 64, "sha384": 96, "sha512": 128}
_IDENTIFIER = re.compile(r"[a-f0-9]{64}", re.ASCII)
NAME_TOTAL_LENGTH_MAX = 255


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i < 0 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = "docker.io", name
    else:
        domain, rest = first, name[i + 1:]
    if domain == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    return domain, rest


def reference_error(name: str) -> str | None:
    """Why the docker CLI refuses ``name`` as an image name (its words), or
    ``None`` when it is a valid ``[registry/]path[:tag][@digest]``."""
    if _IDENTIFIER.fullmatch(name):
        return f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
    domain, rest = _split_domain(name)
    repo = rest.split(":", 1)[0]
    if repo.lower() != repo:
        return f"invalid reference format: repository name ({repo}) must be lowercase"
    full = f"{domain}/{rest}"
    m = _REFERENCE.fullmatch(full)
    if m is None:
        return "invalid reference format"
    if len(m.group(1)) > NAME_TOTAL_LENGTH_MAX:
        return f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
    if m.group(2):
        algorithm, _, hexpart = m.group(2).partition(":")
        size = _DIGEST_SIZES.get(algorithm)
        if size is None:
            return "unsupported digest algorithm"
        if len(hexpart) != size:
            return "invalid checksum digest length"
    return None


def env_error(item: str) -> str | None:
    """Why the docker CLI refuses ``item`` as a ``--build-arg`` (``KEY=VALUE``
    or ``KEY``): an empty key (``=x``, ``""``) is not a variable."""
    if item.split("=", 1)[0] == "":
        return f"invalid environment variable: {item}"
    return None
