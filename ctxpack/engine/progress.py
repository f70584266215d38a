"""Rendering a build as it happens: upload progress and the engine's messages.

Four renderers behind one interface (``note``, ``upload``, ``message``,
``finish``):

* ``plain`` — a progress line every few seconds of a long upload (sent
  of total, rate); classic ``stream`` text as the engine sends it; BuildKit's
  trace decoded like ``docker build --progress=plain`` (``#3 [2/3] RUN
  make``, ``#3 0.412 log line``, ``#3 DONE 1.2s``, ``#3 CACHED``, ``#3
  ERROR: ...``); one upload summary line;
* ``tty`` — what ``--progress=auto`` shows on a terminal: a live upload
  line (bytes sent of the total, rate), and for BuildKit a redrawn step list with elapsed times and the
  last log lines of running steps;
* ``json`` — every engine message passed through as one JSON line on
  stdout, plus ctxpack's own ``{"id": "ctxpack.upload", "aux": {...}}``;
* ``quiet`` — nothing.

No threads: everything is drawn from the callbacks (a thread would keep the
packer from forking its walker).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import IO, Any

from .messages import StatusResponse, decode_status

__all__ = ["Renderer", "make_renderer", "PlainTrace", "MODES", "upload_progress", "upload_summary", "go_units_bytes"]

MODES = ("auto", "plain", "tty", "json", "quiet")


def format_size(n: int) -> str:
    """``ctxpack.audit.format_size``, imported on first use: ``build -q``
    never draws, and the audit module is a fifth of the start-up."""
    from ..audit import format_size as fmt

    return fmt(n)


def _rate(nbytes: int, seconds: float) -> str:
    return f"{format_size(int(nbytes / seconds))}/s" if seconds > 0 else "-"


def _counter(stats: Any) -> tuple[int, int | None]:
    """(sent, total) from one counter: an uncompressed body's bytes on the
    wire against the tar's size (they move together, chunk by chunk); a
    compressed one's content bytes against the content's total (the wire
    carries fewer, and the packer reports content about every MiB)."""
    if stats.compression == "none":
        return stats.wire_bytes, getattr(stats, "total_wire", None)
    return stats.bytes, getattr(stats, "total_bytes", None)


def _of(sent: int, total: int | None, done: bool) -> str:
    if total is None:
        return format_size(sent)
    if total == 0:
        return f"{format_size(sent)} of {format_size(0)}"
    pct = 100 if done and sent >= total else min(99, int(sent * 100 / total))
    return f"{format_size(sent)} of {format_size(total)} ({pct}%)"


def upload_summary(stats: Any) -> str | None:
    """``sent 1,234 files (56.7 MB) in 1.2s, 12.3 MB on the wire (gzip), 10.2 MB/s``
    once the upload is done; for an upload that stopped (Ctrl-C, the engine
    refusing the build mid-upload) what was sent by then, ``upload stopped
    after 201.3 MB of 419.4 MB (47%)``, or ``None`` when nothing was."""
    if stats.compression == "session":
        return (f"BuildKit session: the engine requested {stats.files:,} file{'' if stats.files == 1 else 's'} "
                f"({format_size(stats.bytes)}), {format_size(stats.wire_bytes)} sent in all")
    if not getattr(stats, "done", True):
        sent, total = _counter(stats)
        return f"upload stopped after {_of(sent, total, False)}" if sent else None
    wire = "" if stats.compression == "none" else f", {format_size(stats.wire_bytes)} on the wire ({stats.compression})"
    return (f"sent {stats.files:,} file{'' if stats.files == 1 else 's'} ({format_size(stats.bytes)}) "
            f"in {stats.seconds:.1f}s{wire}, {_rate(stats.wire_bytes, stats.seconds)}")


def upload_progress(stats: Any) -> str:
    """The live upload line: ``312.4 MB of 640.1 MB (48%), 30.1 MB/s`` —
    sent of the total (known once the listing beside the packer is done:
    until then only what was sent) and the rate, all from one counter
    (:func:`_counter`); no rate while nothing is counted yet."""
    sent, total = _counter(stats)
    text = _of(sent, total, getattr(stats, "done", False))
    return f"{text}, {_rate(sent, stats.seconds)}" if sent else text


class Renderer:
    """The interface; this base renders nothing (``quiet``)."""

    def note(self, text: str) -> None:
        pass

    def upload(self, stats: Any) -> None:
        pass

    def message(self, msg: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


def go_units_bytes(n: int) -> str:
    """A byte count as BuildKit's plain progress prints it (``%.2f`` of
    decimal units: ``194B``, ``3.00MB``, ``6.05MB``)."""
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for suffix in ("kB", "MB", "GB", "TB", "PB", "EB"):
        value /= 1000
        if value < 1000:
            break
    return f"{value:.2f}{suffix}"


class PlainTrace:
    """BuildKit trace → ``--progress=plain`` lines, as docker 20.10 prints
    them: a vertex's ``DONE``/``ERROR``/``CACHED`` each time it completes
    (a vertex can run again: the metadata of a base image is loaded twice,
    the build context is transferred after an early completion), a
    status when it appears and when it is done, with its amount
    (``current``, ``/ total`` when known) and its time
    (``#6 transferring context: 6.05MB 0.2s done``)."""

    #: Seconds a status must have been in progress before it is said.
    SLOW = 0.1

    def __init__(self, write: Any):
        self.write = write
        self.v: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.last: str | None = None
        self.partial: dict[str, bytes] = {}
        self.told: dict[tuple[str, str], bool] = {}  # status (vertex, id) -> its "done" was printed

    def _state(self, digest: str) -> dict[str, Any]:
        s = self.v.get(digest)
        if s is None:
            s = {"num": len(self.order) + 1, "name": "", "started": None, "completed": None, "cached": False,
                 "error": "", "announced": False, "done": False, "seen": time.monotonic(), "logs": [],
                 "printed": None}
            self.v[digest] = s
            self.order.append(digest)
        return s

    def _head(self, s: dict[str, Any], digest: str) -> None:
        if self.last != digest:
            if self.last is not None:
                self.write("\n")
            self.write(f"#{s['num']} {s['name']}\n")
            self.last = digest
        s["announced"] = True

    def feed(self, st: StatusResponse) -> None:
        for vx in st.vertexes:
            s = self._state(vx.digest)
            s["name"] = vx.name or s["name"]
            s["cached"] = s["cached"] or vx.cached
            if vx.started is not None and vx.started != s["started"]:
                s["started"], s["seen"] = vx.started, time.monotonic()  # a (new) run of the vertex
                s["printed"] = None
            # Each update carries the vertex's whole state: a vertex that
            # runs again arrives with no completion until it completes again
            # (a completion only re-stamped is not a new one).
            s["completed"] = vx.completed
            if vx.completed is None and not vx.cached:
                s["printed"] = None
            s["error"] = vx.error or s["error"]
            if not s["announced"] and (s["started"] is not None or s["cached"]):
                self._head(s, vx.digest)
            if s["cached"]:
                if s["printed"] != "cached":
                    self._head(s, vx.digest)
                    self.write(f"#{s['num']} CACHED\n")
                    s["printed"] = "cached"
                s["done"] = True
            elif s["completed"] is not None:
                if s["printed"] is None:
                    self._flush_partial(vx.digest)
                    self._head(s, vx.digest)
                    if s["error"]:
                        self.write(f"#{s['num']} ERROR: {s['error']}\n")
                    else:
                        took = s["completed"] - (s["started"] or s["completed"])
                        self.write(f"#{s['num']} DONE {took:.1f}s\n")
                    s["printed"] = "done"
                s["done"] = True
            else:
                s["done"] = False
        for stt in st.statuses:
            if stt.vertex not in self.v:
                continue
            key = (stt.vertex, stt.id or stt.name)
            told = self.told.get(key)
            if stt.completed is None:
                # In progress: said once, and only once it has run a while
                # (docker's printer ticks; a quick transfer shows only its end).
                ran = (stt.timestamp - stt.started) if stt.timestamp is not None and stt.started is not None else 0.0
                if told is not None or ran < self.SLOW:
                    continue
            elif told:
                continue
            self.told[key] = stt.completed is not None
            s = self.v[stt.vertex]
            self._head(s, stt.vertex)
            amount = ""
            if stt.current:
                amount = f" {go_units_bytes(stt.current)}" + (f" / {go_units_bytes(stt.total)}" if stt.total else "")
            if stt.completed is None:
                self.write(f"#{s['num']} {stt.id or stt.name}{amount}\n")
                continue
            timer = f" {stt.completed - stt.started:.1f}s" if stt.started is not None else ""
            self.write(f"#{s['num']} {stt.id or stt.name}{amount}{timer} done\n")
        for lg in st.logs:
            s = self._state(lg.vertex)
            data = self.partial.pop(lg.vertex, b"") + lg.msg
            lines = data.split(b"\n")
            if lines[-1]:
                self.partial[lg.vertex] = lines[-1]
            for line in lines[:-1]:
                self._log(s, lg.vertex, line, lg.timestamp)
        for w in st.warnings:
            self.write(f"WARNING: {w.short.decode('utf-8', 'replace')}\n")

    def _log(self, s: dict[str, Any], digest: str, line: bytes, ts: float | None) -> None:
        self._head(s, digest)
        at = (ts - s["started"]) if ts is not None and s["started"] is not None else 0.0
        text = line.decode("utf-8", "replace").rstrip("\r")
        s["logs"].append(text)
        self.write(f"#{s['num']} {at:.3f} {text}\n")

    def _flush_partial(self, digest: str) -> None:
        rest = self.partial.pop(digest, b"")
        if rest:
            self._log(self.v[digest], digest, rest, None)


class _Plain(Renderer):
    def __init__(self, err: IO[str]):
        self.err = err
        self.trace = PlainTrace(self._write)
        self.upload_stats: Any = None
        self.upload_told = False
        self.next_line: float | None = None

    def _write(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    def note(self, text: str) -> None:
        self._write(f"ctxpack: {text}\n")

    #: Seconds between two progress lines of a long upload (plain output
    #: is a log: a line now and then, not a redrawn one).
    EVERY = 5.0

    def upload(self, stats: Any) -> None:
        self.upload_stats = stats
        if stats.compression == "session" or getattr(stats, "done", False):
            return
        now = time.monotonic()
        if self.next_line is None:
            self.next_line = now + self.EVERY
        elif now >= self.next_line:
            self.next_line = now + self.EVERY
            self._write(f"ctxpack: sending the context: {upload_progress(stats)}\n")

    def _tell_upload(self, final: bool = False) -> None:
        st = self.upload_stats
        if st is not None and not self.upload_told and (final or st.compression != "session"):
            self.upload_told = True
            line = upload_summary(st)
            if line is not None:
                self._write(f"ctxpack: {line}\n")

    def message(self, msg: dict[str, Any]) -> None:
        self._tell_upload()
        if "stream" in msg:
            self._write(str(msg["stream"]))
        elif msg.get("id") == "moby.buildkit.trace" and isinstance(msg.get("aux"), str):
            self.trace.feed(decode_status(msg["aux"]))
        elif "status" in msg:
            detail = msg.get("progressDetail") or {}
            amount = f" {format_size(detail['current'])}/{format_size(detail['total'])}" if detail.get("total") else ""
            ident = f"{msg['id']}: " if msg.get("id") else ""
            self._write(f"{ident}{msg['status']}{amount}\n")

    def finish(self) -> None:
        self._tell_upload(final=True)


class _Tty(_Plain):
    """Live view on a terminal (``--progress=auto``)."""

    def __init__(self, err: IO[str]):
        super().__init__(err)
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.drawn = 0
        self.bk: PlainTrace | None = None
        self.upload_line_shown = False
        self.later: list[str] = []

    def upload(self, stats: Any) -> None:
        self.upload_stats = stats
        now = time.monotonic()
        if now - self.last_draw < 0.1 or stats.compression == "session":
            return
        self.last_draw = now
        self.upload_line_shown = True
        self._write(f"\r\033[K[+] Sending build context: {upload_progress(stats)}")

    def _tell_upload(self, final: bool = False) -> None:
        st = self.upload_stats
        if st is not None and not self.upload_told and (final or st.compression != "session"):
            self.upload_told = True
            prefix = "\r\033[K" if self.upload_line_shown else ""
            line = upload_summary(st)
            if line is None:
                if prefix:
                    self._write("\n")  # nothing was sent: the live line (0 B) stays, ended
                return
            context = "" if st.compression == "session" else "Context "
            self._write(f"{prefix}[+] {context}{line}\n")

    def message(self, msg: dict[str, Any]) -> None:
        if msg.get("id") == "moby.buildkit.trace" and isinstance(msg.get("aux"), str):
            self._tell_upload()
            if self.bk is None:
                self.bk = PlainTrace(lambda text: None)  # state only; drawn below
            self.bk.feed(decode_status(msg["aux"]))
            self._draw()
            return
        if self.bk is not None and "stream" in msg:
            self.later.append(str(msg["stream"]))  # printed under the final view, not into it
            return
        super().message(msg)

    def _draw(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        assert self.bk is not None
        cols, rows = shutil.get_terminal_size((100, 30))
        states = [self.bk.v[d] for d in self.bk.order if self.bk.v[d]["name"]]
        done = sum(1 for s in states if s["done"])
        lines = [f"[+] Building {now - self.started:.1f}s ({done}/{len(states)})" + (" FINISHED" if final else "")]
        for s in states:
            if s["cached"]:
                tail = "CACHED"
            elif s["error"]:
                tail = "ERROR"
            elif s["completed"] is not None:
                tail = f"{s['completed'] - (s['started'] or s['completed']):.1f}s"
            elif s["started"] is not None:
                tail = f"{now - s['seen']:.1f}s"
            else:
                tail = ""
            name = s["name"]
            width = max(10, cols - len(tail) - 6)
            if len(name) > width:
                name = name[: width - 1] + "…"
            lines.append(f" => {name:<{width}} {tail}".rstrip())
            if s["started"] is not None and s["completed"] is None or s["error"]:
                for log in s["logs"][-6:]:
                    lines.append(f" => => # {log}"[:cols - 1])
        lines = lines[: max(3, rows - 2)] if not final else lines
        out = ""
        if self.drawn:
            out += f"\033[{self.drawn}F\033[J"
        out += "\n".join(lines) + "\n"
        self._write(out)
        self.drawn = len(lines)

    def finish(self) -> None:
        if self.bk is not None:
            self._draw(final=True)
            failed = [s for s in self.bk.v.values() if s["error"]]
            for s in failed:  # the failing step's output in full, as the docker CLI shows it
                self._write(f"------\n > {s['name']}:\n" + "".join(f"{log}\n" for log in s["logs"][-20:]) + "------\n")
        self._write("".join(self.later))
        self.later.clear()
        self._tell_upload(final=True)


class _Json(Renderer):
    def __init__(self, out: IO[str], err: IO[str]):
        self.out = out
        self.err = err
        self.stats: Any = None

    def note(self, text: str) -> None:
        self.err.write(f"ctxpack: {text}\n")
        self.err.flush()

    def upload(self, stats: Any) -> None:
        self.stats = stats

    def _emit_upload(self, final: bool = False) -> None:
        s = self.stats
        if s is None or (s.compression == "session" and not final):
            return
        self.stats = None
        aux = {"entries": s.entries, "files": s.files, "bytes": s.bytes, "wire_bytes": s.wire_bytes,
               "seconds": round(s.seconds, 3), "compression": s.compression,
               "total_files": getattr(s, "total_files", None), "total_bytes": getattr(s, "total_bytes", None)}
        if s.session is not None:  # what the engine asked the session for (REQ packets, DATA bytes)
            # and, per DiffCopy call, when its listing was ready and sent and the first REQ came
            aux["session"] = s.session.as_dict()
        self.out.write(json.dumps({"id": "ctxpack.upload", "aux": aux}) + "\n")

    def message(self, msg: dict[str, Any]) -> None:
        self._emit_upload()
        self.out.write(json.dumps(msg, ensure_ascii=False) + "\n")
        self.out.flush()

    def finish(self) -> None:
        self._emit_upload(final=True)
        self.out.flush()


def make_renderer(mode: str, *, quiet: bool = False, out: IO[str] | None = None, err: IO[str] | None = None) -> Renderer:
    """A renderer for ``--progress MODE`` (``auto``: ``tty`` on a terminal,
    else ``plain``); ``quiet`` renders nothing."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if quiet or mode == "quiet":
        return Renderer()
    if mode == "json":
        return _Json(out, err)
    if mode == "tty" or (mode == "auto" and err.isatty()):
        return _Tty(err)
    return _Plain(err)
