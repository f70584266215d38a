"""The one small tree of errors ctxpack raises.

Every error a user can cause (a bad pattern, an unreadable file, a daemon that
hangs up) is a :class:`CtxpackError`; the CLI maps the branches to exit codes.
"""

from __future__ import annotations

__all__ = [
    "CtxpackError",
    "InputError",
    "IgnoreFileError",
    "PatternError",
    "ContextError",
    "DockerfileError",
    "OutputError",
    "ChangedDuringReadError",
    "TransportError",
]


class CtxpackError(Exception):
    """Base class of every error ctxpack raises on purpose."""

    exit_code = 2

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from args and attributes, not by calling __init__ again:
        # subclasses take other arguments, and a forked walker sends its
        # errors to the packer by pickle (ctxpack.tar.rows).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[CtxpackError], args: tuple[object, ...], state: dict[str, object]) -> CtxpackError:
    e = cls.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class InputError(CtxpackError):
    """The user's input (arguments, files, context) cannot be used."""


class IgnoreFileError(InputError):
    """An ignore file cannot be read or parsed.

    ``source`` names the file and ``line`` the 1-based line (``None`` when the
    error concerns the whole file).
    """

    def __init__(self, message: str, source: str, line: int | None = None, text: str | None = None):
        self.source = source
        self.line = line
        self.text = text
        where = source if line is None else f"{source}:{line}"
        detail = f"{where}: {message}"
        if text is not None:
            detail += f": {text!r}"
        super().__init__(detail)
        self.reason = message


class PatternError(IgnoreFileError):
    """A pattern Docker refuses: at load time, or when Docker first evaluates it."""


class ContextError(InputError):
    """The context directory or a path in it cannot be read."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)


class DockerfileError(InputError):
    """The Dockerfile cannot be found or read."""


class OutputError(CtxpackError):
    """Writing the output failed (full disk, closed pipe, ...)."""

    exit_code = 3


class ChangedDuringReadError(CtxpackError):
    """A file changed or vanished while it was being read, beyond retrying."""

    exit_code = 1

    def __init__(self, message: str, path: str):
        self.path = path
        super().__init__(message)


class TransportError(CtxpackError):
    """Talking to a Docker daemon failed (connection, protocol or HTTP error)."""

    exit_code = 3
