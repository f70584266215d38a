"""The one small tree of errors ctxpack raises, with the exit code of each.

Every error a user can cause (a bad pattern, an unreadable file, a daemon that
hangs up) is a :class:`CtxpackError`; the CLI maps ``exit_code`` to the
process's exit status in one place (``ctxpack.cli.app``)::

    CtxpackError                       2  (base; never raised itself)
    ├── InputError                     2  arguments, files or context unusable
    │   ├── IgnoreFileError            2  an ignore file (file, line)
    │   │   └── PatternError           2  a pattern Docker refuses (file, line)
    │   ├── PatternSyntaxError         2  a pattern text Docker refuses (no file yet)
    │   │   ├── BadPattern             2  Go filepath.ErrBadPattern
    │   │   ├── RE2SyntaxError         2  Go regexp.Compile fails
    │   │   ├── UnsupportedRegex       2  valid RE2 ctxpack cannot evaluate
    │   │   └── BrokenPattern          2  a broken pattern was evaluated
    │   ├── ContextError               2  the context or a path in it (path)
    │   ├── DockerfileError            2  the Dockerfile cannot be found or read
    │   │   ├── DockerfileSyntaxError  2  Docker would refuse it (file, line)
    │   │   └── ShellLexError          2  BuildKit's word lexer refuses a word
    │   ├── TarHeaderError             2  Go's tar writer would refuse a header
    │   ├── EndpointError              2  bad -H/DOCKER_HOST, unknown docker context
    │   └── SessionConfigError         2  a bad --secret or --ssh
    ├── ChangedDuringReadError         1  a file kept changing while read (path)
    ├── BuildFailedError               1  the engine ran the build and it failed
    ├── BuildCancelledError          130  Ctrl-C; the build was cancelled
    ├── OutputError                    3  writing the output failed
    │   └── ClosedPipeError            3  the reader went away (exit quietly)
    ├── TransportError                 5  talking to a Docker engine failed
    │   ├── EngineUnreachableError     5  no connection (socket, tcp, TLS, ssh)
    │   ├── EngineTimeoutError         7  no connection or no answer within the timeout
    │   ├── EngineVersionError         5  the engine's API version is refused
    │   ├── ConnectionDroppedError     5  closed before answering (mid-upload)
    │   ├── SessionError               5  the BuildKit session failed
    │   └── EngineAPIError             1  the engine answered an HTTP error
    ├── WatchError                     6  the watcher cannot watch the context
    │   ├── WatchLimitError            6  an inotify limit was hit (names the sysctl)
    │   └── ContextRemovedError        6  the watched context directory is gone (path)
    └── InternalError                  4  ctxpack itself failed
        └── WalkerDiedError            4  the forked walker process died

The Go-port errors carry ``ValueError`` too: the ports raise them the way
Go returns an ``error``, and their callers translate them (adding the file
and line) where they leave the ignore or Dockerfile readers.
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
    "ClosedPipeError",
    "PatternSyntaxError",
    "BadPattern",
    "RE2SyntaxError",
    "UnsupportedRegex",
    "BrokenPattern",
    "DockerfileSyntaxError",
    "ShellLexError",
    "TarHeaderError",
    "InternalError",
    "WalkerDiedError",
    "EndpointError",
    "EngineUnreachableError",
    "EngineTimeoutError",
    "EngineVersionError",
    "ConnectionDroppedError",
    "EngineAPIError",
    "BuildFailedError",
    "BuildCancelledError",
    "SessionError",
    "SessionConfigError",
    "WatchError",
    "WatchLimitError",
]


class CtxpackError(Exception):
    """Base class of every error ctxpack raises on purpose.

    ``hint`` (optional) says what the user may want to do instead; the CLI
    prints it on a line of its own after the error.
    """

    exit_code = 2
    hint: str | None = None

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


class PatternSyntaxError(InputError, ValueError):
    """Docker refuses the pattern text when the ignore file is loaded.

    Raised by the pattern compiler, which knows no file; the matcher turns
    it into a :class:`PatternError` naming the file and line."""


class BadPattern(PatternSyntaxError):
    """Go's ``filepath.ErrBadPattern``."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


class RE2SyntaxError(PatternSyntaxError):
    """The expression is not valid RE2 (Go's ``regexp.Compile`` fails)."""


class UnsupportedRegex(PatternSyntaxError):
    """Valid RE2 that ctxpack cannot evaluate faithfully (Unicode scripts)."""


class BrokenPattern(PatternSyntaxError):
    """A pattern Docker cannot compile was evaluated (Docker's lazy error)."""


class DockerfileError(InputError):
    """The Dockerfile cannot be found or read."""


class DockerfileSyntaxError(DockerfileError):
    """The Dockerfile cannot be parsed (or Docker would refuse it); names the
    file and line."""

    def __init__(self, message: str, source: str, line: int):
        self.source = source
        self.line = line
        self.reason = message
        super().__init__(f"{source}:{line}: {message}")


class ShellLexError(DockerfileError, ValueError):
    """BuildKit's lexer refuses the word (bad substitution, open quote …)."""


class TarHeaderError(InputError, ValueError):
    """Go's Writer would refuse this header (``archive/tar: cannot encode header``).

    The docker CLI logs such an error and leaves the entry out of the tar
    (go-archive ``TarWithOptions`` only logs ``addTarFile`` failures).
    """


class OutputError(CtxpackError):
    """Writing the output failed (full disk, closed pipe, ...)."""

    exit_code = 3


class ClosedPipeError(OutputError):
    """The reader of our output went away (``ctxpack pack | head``): the CLI
    exits with 3, quietly."""


class ChangedDuringReadError(CtxpackError):
    """A file changed or vanished while it was being read, beyond retrying."""

    exit_code = 1

    def __init__(self, message: str, path: str):
        self.path = path
        super().__init__(message)


class TransportError(CtxpackError):
    """Talking to a Docker engine failed: it could not be reached, refused
    the API version, or dropped the connection (exit 5, distinct from a
    build that ran and failed, 1, and from an output error, 3)."""

    exit_code = 5


class WatchError(CtxpackError):
    """``ctxpack watch`` cannot watch the context (another watcher holds it,
    or the kernel refuses watches): exit 6."""

    exit_code = 6


class WatchLimitError(WatchError):
    """An inotify limit was hit; ``sysctl`` names the setting to raise
    (``fs.inotify.max_user_watches`` for ENOSPC, ``fs.inotify.max_user_instances``
    for EMFILE)."""

    def __init__(self, message: str, sysctl: str):
        self.sysctl = sysctl
        super().__init__(message)


class ContextRemovedError(WatchError):
    """The context directory a watcher watches was deleted or moved away
    (the message names it): the watcher stops."""


class InternalError(CtxpackError):
    """ctxpack itself failed: not the user's input, not the output."""

    exit_code = 4


class WalkerDiedError(InternalError):
    """The forked walker process ended without finishing its walk."""


class EndpointError(InputError):
    """The engine endpoint cannot be worked out: a bad ``-H``/``DOCKER_HOST``
    URL, an unknown docker context, unreadable TLS files."""


class EngineUnreachableError(TransportError):
    """No connection to the engine: refused, no such socket, TLS handshake,
    ssh failure (the message carries ssh's own); a timeout is
    :class:`EngineTimeoutError`."""


class EngineTimeoutError(TransportError):
    """The engine did not connect, or went silent while answering, for longer
    than the timeout (``--timeout``, ``DOCKER_CLIENT_TIMEOUT``, the library's
    ``timeout=``): exit 7, so a script can tell a stalled engine from an
    absent one (5).  ``endpoint`` is the engine's URL, ``timeout`` the
    seconds waited."""

    exit_code = 7

    def __init__(self, message: str, endpoint: str, timeout: float):
        self.endpoint = endpoint
        self.timeout = timeout
        super().__init__(message)


class EngineVersionError(TransportError):
    """The engine speaks an API version below what ctxpack needs, or refuses ours."""


class ConnectionDroppedError(TransportError):
    """The engine closed the connection before it answered (mid-upload)."""


class EngineAPIError(TransportError):
    """The engine answered with an HTTP error status: ``status`` and the
    engine's own ``engine_message``.  Exit 1: the engine was reached and said no."""

    exit_code = 1

    def __init__(self, message: str, status: int = 0, engine_message: str = ""):
        self.status = status
        self.engine_message = engine_message or message
        super().__init__(message)


class BuildFailedError(CtxpackError):
    """The engine ran the build and it failed (a failing RUN, a missing COPY
    source, a bad Dockerfile): the engine's message; ``code`` is the failing
    RUN's exit code when the message gives it."""

    exit_code = 1

    def __init__(self, message: str, code: int | None = None):
        self.code = code
        super().__init__(message)


class BuildCancelledError(CtxpackError):
    """The build was interrupted (Ctrl-C) and cancelled on the engine."""

    exit_code = 130


class SessionError(TransportError):
    """A BuildKit session failed: the daemon closed it, a health check or a
    file transfer broke, or the daemon does not support sessions."""


class SessionConfigError(InputError):
    """A ``--secret`` or ``--ssh`` value cannot be used (the message names it)."""
