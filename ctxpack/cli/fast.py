"""The console script's fast path: ``ctxpack diff`` and ``ctxpack
fingerprint`` answered by a running ``ctxpack watch`` before click or any
of ctxpack's library is imported.

An answered command is mostly the interpreter's start-up (issue 14): click
and the CLI's modules alone take longer than the watcher's answer.  So the
entry point (:data:`ctxpack.cli.main`) first reads the arguments here, with
``os`` and ``sys`` only, and asks the watcher (:func:`ctxpack.watchlink.ask_fast`)
for the exact text the command prints, which the watcher renders with the
CLI's own renderer (:mod:`ctxpack.printing`).  Only arguments read here
exactly as click reads them are taken: one optional DIRECTORY, the context
options, ``--json`` (and ``--exit-code`` for diff), each at most once, values
given as ``--opt VALUE`` or ``--opt=VALUE``.  Anything else (``--help``,
``--build-arg``, ``-fFILE``, ``--``, a value that starts with ``-``, a path
click would refuse), no watcher, a watcher that disagrees with the disk or
output that ``click.echo`` would print differently (escape sequences, text
the stream cannot encode): :func:`run` returns ``None`` and click runs the
command as always.
"""

# No `from __future__ import annotations`: this module is on the console script's fast path,
# where importing __future__ is a measurable share (annotations here evaluate on 3.10+).
import os
import sys

__all__ = ["run", "read"]

# command -> (options taking a value, flags); a value option's names map to its key.
_VALUES = {"-f": "dockerfile", "--file": "dockerfile", "--dialect": "dialect", "--ignore-file": "ignore_file"}
_MINIMAL_VALUES = {"--target": "target", "--platform": "platform"}
#: ``--dialect``'s choices (ctxpack.ignore.dialect.Dialect's values; a test keeps them equal).
DIALECTS = ("buildkit", "classic")
_COMMANDS = {
    "diff": (_VALUES, {"--json", "--exit-code"}),
    "fingerprint": (_VALUES | _MINIMAL_VALUES, {"--json", "--minimal"}),
}


def _parse(command: str, args: list[str]) -> tuple[str, dict[str, str], set[str]] | None:
    """(DIRECTORY, {option key: value}, {flags}), or ``None`` when click
    should read these arguments."""
    values, known_flags = _COMMANDS[command]
    directory: str | None = None
    opts: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("-"):
            if directory is not None or not a:
                return None  # a second argument (click's usage error), or an empty one
            directory = a
            continue
        name, eq, value = a.partition("=")
        if name in known_flags and not eq:
            if a in flags:
                return None
            flags.add(a)
            continue
        key = values.get(name)
        if key is None or key in opts or (name == "-f" and eq):
            return None  # --help, --build-arg, -fFILE, --, abbreviations, repeats: click's
        if not eq:
            if i >= len(args):
                return None  # "requires an argument": click says it
            value = args[i]
            i += 1
        if not value or value.startswith("-"):
            return None  # click's reading of "-f -" (stdin) or "--dialect --json" is click's
        if key == "dialect" and value not in DIALECTS:
            return None  # click's "invalid choice"
        opts[key] = value
    return (directory if directory is not None else "."), opts, flags


def read(command: str, args: list[str]) -> tuple[str, dict[str, str], set[str]] | None:
    """``ctxpack COMMAND ARGS`` as click reads it, when it reads it without
    complaint: (DIRECTORY, {option key: value}, {flags}); ``None`` when
    click should read these arguments."""
    parsed = _parse(command, args)
    if parsed is None:
        return None
    directory, opts, flags = parsed
    if not _path_ok(directory, True) or ("ignore_file" in opts and not _path_ok(opts["ignore_file"], False)):
        return None  # click's "is a directory", "is not readable"
    if ("target" in opts or "platform" in opts) and "--minimal" not in flags:
        return None  # the command's usage error
    return parsed


def _path_ok(path: str, dir_okay: bool) -> bool:
    """Whether ``click.Path(dir_okay=dir_okay)`` takes ``path`` (it refuses
    an unreadable path, and a directory when ``dir_okay`` is false)."""
    try:
        st = os.stat(path)
    except OSError:
        return True  # absent: click takes it (exists=False); the command says what is wrong
    if not dir_okay and (st.st_mode & 0o170000) == 0o040000:
        return False
    return os.access(path, os.R_OK)


def _printable_as_click_would(chunks: list[tuple[int, str]]) -> bool:
    """Whether writing each chunk to its stream gives the bytes ``click.echo``
    writes: click writes to the stream itself unless its encoding is ASCII
    (then it re-wraps it), and strips escape sequences when it is not a
    terminal; and the text must encode (else click's path decides)."""
    import codecs

    for stream, text in chunks:
        f = sys.stdout if stream == 1 else sys.stderr
        encoding = getattr(f, "encoding", None)
        if f is None or not encoding or "\x1b" in text:
            return False
        try:
            if codecs.lookup(encoding).name == "ascii":
                return False
            text.encode(encoding, getattr(f, "errors", None) or "strict")
        except (LookupError, UnicodeError):
            return False
    return True


def run(argv: list[str], one_command: bool = False) -> int | None:
    """``ctxpack ARGV`` answered by a running watcher: the output printed,
    the exit status returned; ``None`` (nothing printed) when click must
    run the command.  ``one_command``: this process runs only this command
    (the console script), so a watcher that times out is not asked again
    by the command's own layers (:data:`ctxpack.watchlink.one_command`)."""
    if not argv or argv[0] not in _COMMANDS:
        return None
    parsed = read(argv[0], argv[1:])
    if parsed is None:
        return None
    directory, opts, flags = parsed
    minimal = "--minimal" in flags
    from ctxpack import watchlink
    from ctxpack.watchlink import ask_fast, spec

    watchlink.one_command = one_command

    s = spec(directory, dockerfile=opts.get("dockerfile"), dialect=opts.get("dialect", "buildkit"),
             ignore_file=opts.get("ignore_file"), minimal=minimal, target=opts.get("target"), build_args={},
             platform=opts.get("platform"))
    if s is None:
        return None
    got = ask_fast(argv[0], sorted(flags - {"--minimal"}), s)
    if got is None or not _printable_as_click_would(got[1]):
        return None
    code, chunks = got
    try:
        for stream, text in chunks:  # one write and flush per chunk, as click.echo: 2>&1 interleaves the same
            f = sys.stdout if stream == 1 else sys.stderr
            f.write(text)
            f.flush()
    except BrokenPipeError:
        # The reader went away (`ctxpack diff | head`): as the CLI's handle_errors says it.
        sys.stderr.close()
        return 0
    return code
