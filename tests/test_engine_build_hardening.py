"""``build`` against the real dockerd when the context changes under it,
and the work ctxpack does beside the engine (snapshot, upload total).

* Files growing, shrinking, vanishing or replaced by a directory, a symlink
  or a FIFO while the upload runs: the upload is aborted (the connection
  closed without HTTP's terminating chunk), no image is built, and the
  error names the path.
* What the daemon does with such bodies (the reason for the abort): a tar
  cut at an entry boundary but properly terminated is *built from* (a
  silently short image); the same bytes without the terminating chunk
  fail the build.
* The ``ctxpack diff`` snapshot: fingerprinted beside the build, recorded
  only for a successful build and only when nothing changed since the
  upload started.
* The upload progress line: bytes sent of the total, and the rate.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
from ctxpack.context import open_context
from ctxpack.engine.builder import BuildOptions, UploadStats, build
from ctxpack.engine.client import Engine
from ctxpack.engine.progress import upload_progress
from ctxpack.engine.transport import UnixTransport
from ctxpack.errors import BuildFailedError, ChangedDuringReadError
from ctxpack.index.snapshots import diff

ROOT = Path(__file__).resolve().parent.parent
BIG = 4 << 20  # streamed with sendfile (beyond SMALL_FILE), so the upload is under way while it goes


@pytest.fixture(autouse=True)
def private_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))


def engine_for(d: harness.Dockerd) -> Engine:
    return Engine(UnixTransport(d.socket))


def tree(root: Path, dockerfile: str = "FROM scratch\nCOPY . /c/\n") -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "a.big").write_bytes(os.urandom(BIG))
    (root / "b").mkdir()
    (root / "b" / "target.txt").write_text("target\n")
    (root / "c.txt").write_text("c\n")
    return root


def tag_exists(d: harness.Dockerd, tag: str) -> bool:
    try:
        d.client.inspect_image(tag)
        return True
    except harness.EngineError:
        return False


# --------------------------------------------------------------------------
# the context changes during the upload
# --------------------------------------------------------------------------


def _grow(root: Path) -> None:
    with open(root / "a.big", "ab") as f:
        f.write(b"more")


def _shrink(root: Path) -> None:
    os.truncate(root / "a.big", 1000)


def _vanish(root: Path) -> None:
    (root / "b" / "target.txt").unlink()


def _dir(root: Path) -> None:
    (root / "b" / "target.txt").unlink()
    (root / "b" / "target.txt").mkdir()


def _link(root: Path) -> None:
    (root / "b" / "target.txt").unlink()
    (root / "b" / "target.txt").symlink_to("/etc/passwd")


def _fifo(root: Path) -> None:
    (root / "b" / "target.txt").unlink()
    os.mkfifo(root / "b" / "target.txt")


CHANGES = {
    "grows": (_grow, "a.big", "changed while being packed"),
    "shrinks": (_shrink, "a.big", "shrank from"),
    "vanishes": (_vanish, "b/target.txt", "vanished while being sent"),
    "becomes a directory": (_dir, "b/target.txt", "no longer a regular file"),
    "becomes a symlink": (_link, "b/target.txt", "replaced by a symlink"),
    "becomes a FIFO": (_fifo, "b/target.txt", "no longer a regular file"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_change_during_upload_aborts_and_names_the_path(dockerd: harness.Dockerd, tmp_path: Path, change: str) -> None:
    mutate, path, why = CHANGES[change]
    root = tree(tmp_path / "ctx")
    tag = f"ctxpack-changed:{abs(hash(change)) % 10**8}"
    done: list[bool] = []

    def on_upload(stats: UploadStats) -> None:
        # The first progress call comes once a.big's header is on the wire:
        # everything is listed by then, nothing after a.big read yet.
        if not done:
            done.append(True)
            mutate(root)

    e = engine_for(dockerd)
    try:
        with pytest.raises(ChangedDuringReadError) as info:
            build(str(root), e, BuildOptions(builder="classic", tags=(tag,)), on_upload=on_upload)
    finally:
        e.close()
    assert path in str(info.value) and why in str(info.value), str(info.value)
    assert info.value.path == str(root / path) and info.value.exit_code != 0
    assert not tag_exists(dockerd, tag), "the engine built an image from the broken upload"
    assert diff(open_context(str(root), dialect="classic")) is None  # no snapshot for a failed build


def test_a_fifo_listed_as_a_fifo_never_blocks_the_build(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    # A FIFO in the context from the start is sent as a FIFO (as docker does), never opened.
    root = tree(tmp_path / "ctx")
    os.mkfifo(root / "fifo")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", str(root), "-H", f"unix://{dockerd.socket}",
                        "--builder", "classic", "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr  # never blocks on the FIFO
    files = dockerd.export_fs(p.stdout.strip(), under="c")
    assert files["c/fifo"].type == "fifo" and files["c/a.big"].type == "file"


# --------------------------------------------------------------------------
# what the daemon does with short bodies
# --------------------------------------------------------------------------


def _tar(names: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in names.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _raw_build(sock_path: str, body: bytes, *, terminate: bool, tag: str) -> tuple[int, str]:
    """POST /build with ``body`` as one chunk, with or without the
    terminating chunk (without: the write side is shut, as an aborted
    upload's connection is closed)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(sock_path)
    head = (f"POST /v1.41/build?dockerfile=Dockerfile&t={tag}&version=1 HTTP/1.1\r\nHost: docker\r\n"
            "Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    s.sendall(head + b"%x\r\n" % len(body) + body + b"\r\n" + (b"0\r\n\r\n" if terminate else b""))
    if not terminate:
        s.shutdown(socket.SHUT_WR)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if terminate and b"\r\n0\r\n\r\n" in data:
                break
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    text = data.decode("utf-8", "replace")
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/") else 0
    return status, text


def test_daemon_builds_from_a_short_tar_unless_the_body_is_broken(dockerd: harness.Dockerd) -> None:
    files = {"Dockerfile": b"FROM scratch\nCOPY . /c/\n", "a.txt": b"a\n", "b.txt": b"b\n"}
    whole = _tar(files)
    # cut after a.txt, at an entry boundary: no b.txt, no end-of-archive blocks
    cut = whole[:whole.index(b"b.txt") - 0]
    cut = cut[:len(cut) - (len(cut) % 512)]
    short = tarfile.open(fileobj=io.BytesIO(cut + bytes(1024)))
    assert short.getnames() == ["Dockerfile", "a.txt"]
    # properly terminated: the daemon builds a silently short image
    status, text = _raw_build(dockerd.socket, cut, terminate=True, tag="ctxpack-short:terminated")
    assert status == 200 and "Successfully built" in text, text[-500:]
    img = dockerd.client.inspect_image("ctxpack-short:terminated")["Id"]
    got = dockerd.export_fs(img, under="c")
    assert "c/a.txt" in got and "c/b.txt" not in got
    # the same bytes without the terminating chunk: no image
    _raw_build(dockerd.socket, cut, terminate=False, tag="ctxpack-short:broken")
    assert not tag_exists(dockerd, "ctxpack-short:broken")


# --------------------------------------------------------------------------
# the snapshot beside the build
# --------------------------------------------------------------------------


def test_snapshot_is_taken_beside_the_build_and_recorded_on_success(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx")
    # A change within the file clock's tick (10 ms) before the upload cannot
    # be told from one during it (then nothing is recorded): let it pass.
    time.sleep(0.05)
    e = engine_for(dockerd)
    try:
        r = build(str(root), e, BuildOptions(builder="classic"))
    finally:
        e.close()
    assert r.snapshot_recorded, r.notes
    ctx = open_context(str(root), dialect="classic")
    d = diff(ctx)
    assert d is not None and not d.changed
    (root / "c.txt").write_text("changed\n")
    d = diff(ctx)
    assert d is not None and [c.path for c in d.modified] == ["c.txt"] and not d.added and not d.removed


def test_snapshot_not_recorded_when_the_context_changes_during_the_build(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx")
    (root / "late.txt").write_text("v1\n")
    # Creating late.txt stamped the context directory's mtime and ctime: a
    # build started within the file clock's tick (10 ms) could not tell that
    # from a change during the upload, and the note would name "." (checked
    # first) instead of late.txt -- as it did on an idle CI machine.
    time.sleep(0.05)
    e = engine_for(dockerd)
    changed: list[bool] = []

    def on_upload(stats: UploadStats) -> None:
        if not changed:  # before the packer reads late.txt: a consistent upload of v2, then a racy snapshot
            changed.append(True)
            (root / "late.txt").write_text("v2\n")

    try:
        r = build(str(root), e, BuildOptions(builder="classic"), on_upload=on_upload)
    finally:
        e.close()
    assert not r.snapshot_recorded
    assert any("late.txt changed after the upload started" in n for n in r.notes), r.notes
    assert diff(open_context(str(root), dialect="classic")) is None


def test_no_snapshot_for_a_failed_build(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx", "FROM bb:latest\nCOPY c.txt /\nRUN exit 3\n")
    e = engine_for(dockerd)
    try:
        with pytest.raises(BuildFailedError):
            build(str(root), e, BuildOptions(builder="classic"))
    finally:
        e.close()
    assert diff(open_context(str(root), dialect="classic")) is None


# --------------------------------------------------------------------------
# the upload progress line
# --------------------------------------------------------------------------


def test_progress_line_says_sent_of_total_and_rate() -> None:
    s = UploadStats(bytes=3_000_000, wire_bytes=1_100_000, seconds=2.0, total_files=4, total_bytes=12_000_000,
                    compression="gzip")  # compressed: the content's counter (uncompressed: the wire's)
    line = upload_progress(s)
    assert line.startswith("3.0 MB of 12.0 MB (25%), ") and line.endswith("/s"), line
    s.bytes, s.done = 12_000_000, True
    assert "(100%)" in upload_progress(s)
    assert upload_progress(UploadStats(bytes=5, wire_bytes=5, seconds=1.0)).startswith("5 B, ")


def test_upload_records_the_total(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = tree(tmp_path / "ctx")
    seen: list[tuple[int, int | None]] = []
    e = engine_for(dockerd)
    try:
        r = build(str(root), e, BuildOptions(builder="classic", record_snapshot=False),
                  on_upload=lambda s: seen.append((s.bytes, s.total_bytes)))
    finally:
        e.close()
    content = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert r.upload.total_bytes == content and r.upload.total_files == 4
    assert r.upload.bytes == content
    assert seen[-1] == (content, content)
    # the tty line, live: "Sending build context: X of Y (N%), R/s"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", str(root), "-H", f"unix://{dockerd.socket}",
                        "--builder", "classic", "--progress", "tty", "--no-snapshot"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stderr.replace("\r", "\n").splitlines() if "Sending build context:" in x]
    # a rate once something is counted (none beside "0 B"), from the same counter as the amount
    assert lines and all(x.endswith("/s") or x.endswith(": 0 B") or " 0 B of " in x for x in lines), p.stderr
    # json: the upload record carries the total
    p = subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", str(root), "-H", f"unix://{dockerd.socket}",
                        "--builder", "classic", "--progress", "json", "--no-snapshot"], capture_output=True, text=True,
                       env=env, timeout=120)
    aux: dict[str, Any] = next(json.loads(x)["aux"] for x in p.stdout.splitlines() if "ctxpack.upload" in x)
    assert aux["total_bytes"] == content and aux["total_files"] == 4
