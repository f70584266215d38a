"""How a command reaches a running ``ctxpack watch``: where the watcher of a
context listens (in the cache directory, which is defined here), and the
fast path by which it answers the command line ``ctxpack diff`` or
``ctxpack fingerprint`` outright, with the exact text to print, before
click or any of ctxpack's library is imported (:func:`run`).

Why here, a top-level leaf: an answered command is mostly the
interpreter's start-up (issue 14), and each module it imports costs about
0.2 ms more; the installed script (``bin/ctxpack``) imports ``ctxpack``
and this, and nothing else of ctxpack, before it prints.  Only ``os`` and
``sys`` at import time, ``_socket`` and ``time`` when it asks: no
``json``, ``socket``, ``hashlib``, ``typing`` or ``re``, each of which
costs milliseconds.  :mod:`ctxpack.watch.client` re-exports what the
other clients share; :mod:`ctxpack.index.paths` re-exports
:func:`cache_dir`; :mod:`ctxpack.cli` runs :func:`run` first too.

The command line (:func:`read`): only arguments read here exactly as click
reads them are taken: one optional DIRECTORY, the context options,
``--json`` (and ``--exit-code`` for diff), each at most once, values
given as ``--opt VALUE`` or ``--opt=VALUE``.  Anything else (``--help``,
``--build-arg``, ``-fFILE``, ``--``, a value that starts with ``-``, a
path click would refuse), no watcher, a watcher that disagrees with the
disk or output that ``click.echo`` would print differently (escape
sequences, text the stream cannot encode): :func:`run` returns ``None``
and click runs the command as always (tests/test_watch_fast.py holds the
reader to click's own parser).

The fast exchange, on the watcher's socket (:mod:`ctxpack.watch.channel`):

* request: ``F<length>\\n`` then ``<length>`` bytes of fields (see
  :func:`pack_fields`): the marker ``ctxpack-fast``, the protocol, the
  command (``diff``/``fingerprint``), its output options, the client's
  working directory, then the context options (:func:`spec_fields`);
* answer: ``<length>\\n`` then fields: ``ok``, the protocol, the exit code;
  the directory-mtime checks (one field: ``rel NUL mtime NUL ...``, no name
  holds a NUL); the Dockerfile and ignore-file stat keys the watcher read
  the context with (one field: ``path NUL key NUL ...``, a key ``""`` for
  absent); then the output as (stream, text) field pairs, exactly what the
  command would print (rendered by :mod:`ctxpack.printing`, the CLI's own
  renderer).  ``no`` and a reason when the watcher cannot answer.

The client trusts an answer only after the same checks as any other client:
the protocol, every mtime it was sent, every input's stat key.  Any doubt:
``None``, and the command runs as if no watcher ran.
"""

# No `from __future__ import annotations`: this module is on the console script's fast path,
# where importing __future__ is a measurable share (annotations here evaluate on 3.10+).
import os
import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: typing is not imported here
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    #: A JSON-able description of a command's context options (see :func:`spec`).
    Spec = dict[str, object]


__all__ = ["PROTOCOL", "FAST", "cache_dir", "name_hash", "socket_path", "spec", "spec_fields", "spec_of_fields", "stat_key",
           "context_inputs", "pack_fields", "unpack_fields", "enabled", "timeout", "ask_fast",
           "silent", "timed_out", "peer_stopped", "DIALECTS", "read", "run"]

#: The version of what a watcher and its clients say to each other (both the
#: JSON requests of :mod:`ctxpack.watch.client` and the fast ones here).
PROTOCOL = 4

#: The first field of a fast request.
FAST = "ctxpack-fast"


def cache_dir() -> str:
    """Where the index lives and watchers listen (``CTXPACK_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/ctxpack``, else ``~/.cache/ctxpack``; created on
    demand by whoever writes there)."""
    explicit = os.environ.get("CTXPACK_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctxpack")


def name_hash(data: bytes) -> str:
    """24 hex digits naming ``data`` (FNV-1a, 128 bits): a file name, not a
    secret, so no hashlib (whose import costs more than this whole answer)."""
    h = 0x6C62272E07BB014262B821756295C58D
    for b in data:
        h = ((h ^ b) * 0x0000000001000000000000000000013B) & 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF
    return f"{h:032x}"[:24]


def socket_path(root: str) -> str:
    """Where the watcher of ``root`` listens (the directory may not exist)."""
    name = name_hash(root.encode("utf-8", "surrogateescape")) + ".sock"
    base = os.path.join(cache_dir(), "watch")
    if len(os.path.join(base, name)) > 100:  # sun_path holds 108 bytes
        base = f"/tmp/ctxpack-sockets-{os.getuid()}"
    return os.path.join(base, name)


def spec(directory: str, *, dockerfile: str | None, dialect: str, ignore_file: str | None, minimal: bool,
         target: str | None, build_args: dict[str, str], platform: str | None) -> "Spec | None":
    """A command's context options, normalised as :func:`ctxpack.context.open_context`
    reads them (paths absolute, the root with symlinks resolved); ``None``
    when they cannot be compared without opening the context (the
    Dockerfile on stdin, a root that is not a directory)."""
    if dockerfile == "-":
        return None
    root = os.path.realpath(os.path.abspath(directory))
    if not os.path.isdir(root):
        return None
    df = os.path.abspath(dockerfile) if dockerfile is not None else None
    if (df is not None and os.path.basename(df) == "Dockerfile" and os.path.isfile(df)
            and os.path.realpath(os.path.dirname(df)) == root):
        # `-f Dockerfile` names the file the default finds first (the docker CLI's
        # DefaultDockerfileName): the same context, so the same watcher answers.
        df = None
    return {
        "root": root, "dockerfile": df,
        "dialect": dialect, "ignore_file": os.path.abspath(ignore_file) if ignore_file is not None else None,
        "minimal": bool(minimal), "target": target, "build_args": sorted([k, v] for k, v in build_args.items()),
        "platform": platform,
    }


def _opt(value: object) -> str:
    return "-" if value is None else "+" + str(value)


def _unopt(field: str) -> str | None:
    if field == "-":
        return None
    if not field.startswith("+"):
        raise ValueError(f"not an optional field: {field!r}")
    return field[1:]


def spec_fields(s: "Spec") -> list[str]:
    """``s`` as fields (:func:`spec_of_fields` reads them back equal)."""
    out = [str(s["root"]), _opt(s["dockerfile"]), str(s["dialect"]), _opt(s["ignore_file"]),
           "1" if s["minimal"] else "", _opt(s["target"]), _opt(s["platform"])]
    pairs = s["build_args"]
    assert isinstance(pairs, list)
    out.append(str(len(pairs)))
    for k, v in pairs:
        out.extend((k, v))
    return out


def spec_of_fields(fields: "Sequence[str]") -> "Spec":
    """The :func:`spec` that :func:`spec_fields` wrote (``ValueError``: not one)."""
    root, dockerfile, dialect, ignore_file, minimal, target, platform, n = fields[:8]
    rest = fields[8:]
    if len(rest) != 2 * int(n):
        raise ValueError("wrong number of build-arg fields")
    return {
        "root": root, "dockerfile": _unopt(dockerfile), "dialect": dialect, "ignore_file": _unopt(ignore_file),
        "minimal": minimal == "1", "target": _unopt(target),
        "build_args": [[rest[i], rest[i + 1]] for i in range(0, len(rest), 2)], "platform": _unopt(platform),
    }


def stat_key(path: str) -> list[int] | None:
    """What tells one version of a file from another: inode, mtime, ctime
    and size of the name and, for a symlink, of its target (``None``: absent)."""
    try:
        a = os.lstat(path)
        b = os.stat(path) if (a.st_mode & 0o170000) == 0o120000 else a  # a symlink: its target too
    except OSError:
        return None
    return [a.st_ino, a.st_mtime_ns, a.st_ctime_ns, a.st_size, b.st_ino, b.st_mtime_ns, b.st_ctime_ns, b.st_size]


def context_inputs(s: "Spec") -> list[list[object]]:
    """Every file whose presence or content decides the context of ``s``
    besides the tree's paths: the Dockerfile (or the default names) and the
    ignore files that could apply, each with its stat key (``None``:
    absent).  Taken before a context is opened, so that any change after
    shows as a different key."""
    root = str(s["root"])
    df = s["dockerfile"]
    paths = [str(df)] if df is not None else [os.path.join(root, "Dockerfile"), os.path.join(root, "dockerfile")]
    if s["ignore_file"] is not None:
        paths.append(str(s["ignore_file"]))
    else:
        paths.append(os.path.join(root, ".dockerignore"))
        if s["dialect"] == "buildkit":
            paths.append((str(df) if df is not None else os.path.join(root, "Dockerfile")) + ".dockerignore")
    return [[p, stat_key(p)] for p in paths]


def enabled() -> bool:
    """Whether clients ask a watcher at all (``CTXPACK_WATCH=0``: never)."""
    return os.environ.get("CTXPACK_WATCH", "1") not in ("0", "no", "false")


def timeout() -> float:
    """How long a client waits for a watcher's answer (``CTXPACK_WATCH_TIMEOUT``, seconds)."""
    try:
        return float(os.environ.get("CTXPACK_WATCH_TIMEOUT", "5"))
    except ValueError:
        return 5.0


#: True in a process that runs one command (the console script: set by its fast path): there a
#: watcher that let a request time out is not asked again, so a stopped (Ctrl-Z) or stuck watcher
#: costs `ctxpack diff` one wait instead of one per layer that asks (the fast path, then the
#: command's quick and warm asks: 3 x 5 s).  A long-lived process (library use) asks every time.
one_command = False
_SILENT: set[str] = set()  # sockets whose watcher timed out on this one-command process


def silent(path: str) -> bool:
    """Whether the watcher at socket ``path`` timed out on this process (then do not ask)."""
    return path in _SILENT


def timed_out(path: str, root: str, stopped: bool) -> None:
    """Note that the watcher at socket ``path`` (of the context ``root``) did
    not answer in :func:`timeout` seconds, or is ``stopped`` (Ctrl-Z).  In a
    one-command process this is said once on stderr: the command goes on
    without the watcher and gives the same answer, but the user should know
    why it was slow, and which process to look at."""
    if not one_command or path in _SILENT:
        return
    _SILENT.add(path)
    why = "is stopped (Ctrl-Z or SIGSTOP)" if stopped else f"did not answer in {timeout():g} s"
    try:
        sys.stderr.write(f"ctxpack: note: the `ctxpack watch` of {root} {why}; going on without it "
                         "(CTXPACK_WATCH=0: never ask a watcher)\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # no stderr to say it on: the command's own output matters more


# -- fields: <decimal length>:<bytes>, one after the other (names keep their undecodable bytes) --
def pack_fields(fields: "Sequence[str]") -> bytes:
    """``fields`` as one byte string (:func:`unpack_fields` reads it)."""
    out = []
    for f in fields:
        b = f.encode("utf-8", "surrogateescape")
        out.append(b"%d:" % len(b))
        out.append(b)
    return b"".join(out)


def unpack_fields(data: bytes) -> list[str]:
    """The fields :func:`pack_fields` wrote (``ValueError``: not such bytes)."""
    out = []
    i, n = 0, len(data)
    while i < n:
        j = data.index(b":", i)
        size = int(data[i:j])
        end = j + 1 + size
        if size < 0 or end > n:
            raise ValueError("truncated field")
        out.append(data[j + 1:end].decode("utf-8", "surrogateescape"))
        i = end
    return out


def peer_stopped(sock: "Any") -> bool:
    """Whether the process serving the connected unix socket ``sock`` is
    stopped (``T``: Ctrl-Z in its terminal, SIGSTOP): it cannot answer until
    continued, so waiting the whole timeout for it is no use.  ``False``
    where that cannot be told (no ``SO_PEERCRED``, no ``/proc``)."""
    import _socket

    opt = getattr(_socket, "SO_PEERCRED", None)
    if opt is None:
        return False
    try:
        cred = sock.getsockopt(_socket.SOL_SOCKET, opt, 12)  # struct ucred: pid, uid, gid
        pid = int.from_bytes(cred[:4], sys.byteorder)
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError, ValueError):
        return False
    return state in (b"T", b"t")


#: How long a client waits for an answer before it looks whether the watcher is stopped.
_GLANCE = 0.1


class _Stopped(TimeoutError):
    """The watcher is stopped: it cannot answer in time (a timeout, said apart)."""


def _exchange(path: str, request: bytes, wait: float) -> bytes:
    """Send ``request``; the answer, read up to the length its first line
    gives (not to the watcher's close: that is one thread switch later).
    Every ``_GLANCE`` seconds without an answer the watcher's state is
    looked at: a stopped one (Ctrl-Z) cannot answer until continued, so
    that is a timeout at once (:func:`peer_stopped`); else it has ``wait``
    seconds in all."""
    import _socket
    import time

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(min(wait, _GLANCE))
        s.connect(path)
        s.sendall(request)
        deadline = time.monotonic() + wait
        parts: list[bytes] = []
        have, need = 0, -1
        while need < 0 or have < need:
            try:
                b = s.recv(65536)
            except TimeoutError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from the watcher serving {path}") from None
                if peer_stopped(s):
                    raise _Stopped(f"the watcher serving {path} is stopped") from None
                s.settimeout(min(left, _GLANCE))
                continue
            if not b:
                break  # closed early: a short answer, which the caller refuses
            parts.append(b)
            have += len(b)
            if need < 0:
                head = parts[0] if len(parts) == 1 else b"".join(parts)
                nl = head.find(b"\n")
                if nl >= 0:
                    need = nl + 1 + int(head[:nl])
                elif have > 32:
                    raise ValueError("not an answer")
    finally:
        s.close()
    return b"".join(parts)


def ask_fast(command: str, options: "Sequence[str]", s: "Spec") -> tuple[int, list[tuple[int, str]]] | None:
    """Have the watcher of ``s["root"]`` say what ``ctxpack COMMAND`` with
    the output ``options`` prints: (exit code, [(1 or 2, text), ...] in
    the order printed); ``None`` when no watcher answers, or when anything
    in its answer disagrees with the disk (then run the command)."""
    if not enabled():
        return None
    root = str(s["root"])
    path = socket_path(root)
    if not os.path.exists(path) or silent(path):
        return None
    body = pack_fields([FAST, str(PROTOCOL), command, str(len(options)), *options, os.getcwd(), *spec_fields(s)])
    try:
        try:
            data = _exchange(path, b"F%d\n" % len(body) + body, timeout())
        except TimeoutError as e:
            timed_out(path, root, isinstance(e, _Stopped))
            raise
        head, _, rest = data.partition(b"\n")
        if int(head) != len(rest):
            return None
        f = unpack_fields(rest)
        if len(f) < 5 or f[0] != "ok" or f[1] != str(PROTOCOL) or len(f) % 2 == 0:
            return None
        code = int(f[2])
        checks = f[3].split("\0") if f[3] else []
        inputs = f[4].split("\0") if f[4] else []
        if len(checks) % 2 or not inputs or len(inputs) % 2:
            return None
        lstat = os.lstat
        for i in range(0, len(checks), 2):  # directory mtimes the watcher believes in
            rel = checks[i]
            if lstat(root + "/" + rel if rel else root).st_mtime_ns != int(checks[i + 1]):
                return None
        for i in range(0, len(inputs), 2):  # the Dockerfile and ignore files as the watcher read them
            key = stat_key(inputs[i])
            if inputs[i + 1] != ("" if key is None else ",".join([str(k) for k in key])):
                return None
        chunks = [(int(f[i]), f[i + 1]) for i in range(5, len(f), 2)]
        if any(stream not in (1, 2) for stream, _ in chunks):
            return None
    except (OSError, ValueError, IndexError):
        return None  # dead (refused), lagging (timeout), a path gone, or confused: run the command
    return code, chunks


# -- the command line the console script hands over ---------------------------------------
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


def run(argv: list[str], this_only: bool = False) -> int | None:
    """``ctxpack ARGV`` answered by a running watcher: the output printed,
    the exit status returned; ``None`` (nothing printed) when click must
    run the command.  ``this_only``: this process runs only this command
    (the console script), so a watcher that times out is not asked again
    by the command's own layers (:data:`one_command`)."""
    if not argv or argv[0] not in _COMMANDS:
        return None
    parsed = read(argv[0], argv[1:])
    if parsed is None:
        return None
    directory, opts, flags = parsed
    minimal = "--minimal" in flags
    global one_command
    one_command = one_command or this_only

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
