"""`ctxpack pack`: byte-identical to the docker CLI's upload, streaming,
compressed, reproducible, and never a corrupt or half-written archive."""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctxpack
from ctxpack.tar import writer as packer
from ctxpack.cli import main
from ctxpack.errors import ChangedDuringReadError
from ctxpack.fs import SMALL_FILE
from ctxpack.tar.writer import PackOptions, iter_tar, pack
from ctxpack.tar.sinks import CallbackSink, FdSink
from ctxpack.tar.rows import entry_row
from strategies import built, dockerignores, trees
from trees import load_fixture, make_tree, vector_tree

EXAMPLES = int(os.environ.get("CTXPACK_HYPOTHESIS_EXAMPLES", "150"))
ON_CI = os.environ.get("CI", "").lower() == "true"


def tar_bytes(root: Path, dialect: str = "classic", opts: PackOptions = PackOptions(), **kw: Any) -> bytes:
    chunks: list[bytes] = []
    pack(ctxpack.open_context(root, dialect=dialect, **kw), CallbackSink(chunks.append), opts)
    return b"".join(chunks)


def _blocks_diff(a: bytes, b: bytes) -> str:
    for i in range(0, max(len(a), len(b)), 512):
        if a[i : i + 512] != b[i : i + 512]:
            return f"first difference in block {i // 512}: ours {a[i:i+100]!r} docker {b[i:i+100]!r}"
    return "equal"


@pytest.mark.docker_cli
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_classic_tar_is_byte_identical_to_docker_cli(data: st.DataObject, docker_cli: Any) -> None:
    nodes = data.draw(trees())
    ignore = data.draw(dockerignores(nodes))
    with built(nodes, ignore) as root:
        cap = docker_cli.capture(root)
        if cap.refused:  # compared in test_property_docker: ctxpack refuses these rules
            return
        for parallel in (False, True):  # walked in this process, and by a forked walker
            ours = tar_bytes(root, opts=PackOptions(parallel=parallel))
            assert ours == cap.tar, (parallel, _blocks_diff(ours, cap.tar))


@pytest.mark.docker_cli
@pytest.mark.parametrize("v", [v for v in load_fixture("vectors.json")["vectors"] if not v["dockerfile"]],
                         ids=lambda v: f"row{v['id']}")  # the -f rows are compared in test_cli
def test_vectors_tar_identical(tmp_path: Path, v: dict[str, Any], docker_cli: Any) -> None:
    root = vector_tree(tmp_path / "ctx", v)
    cap = docker_cli.capture(root)
    if cap.tar is None:
        messages = set()
        for parallel in (False, True):
            with pytest.raises(ctxpack.CtxpackError) as err:
                tar_bytes(root, opts=PackOptions(parallel=parallel))
            messages.add((type(err.value), str(err.value)))
        assert len(messages) == 1  # the forked walker's error arrives unchanged
        return
    for parallel in (False, True):
        assert tar_bytes(root, opts=PackOptions(parallel=parallel)) == cap.tar


@pytest.mark.docker_cli
def test_big_and_special_files_identical(tmp_path: Path, docker_cli: Any) -> None:
    root = make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\n", "big.bin": os.urandom(3 * 1024 * 1024 + 7),
                                         "small": b"s" * 511, "setuid": b"x", "deep/" + "n" * 120 + "/f": b"long"})
    os.chmod(root / "setuid", 0o4755)
    os.link(root / "small", root / "small-link")
    os.mkfifo(root / "fifo")
    os.symlink("../outside/" + "t" * 150, root / "longlink")
    # A hard-linked symlink: go-archive's SeenFiles makes its later name a
    # link to the first, as for any non-directory.
    os.symlink("small", root / "sl")
    os.link(root / "sl", root / "sl-hard", follow_symlinks=False)
    os.utime(root / "small", (0, -86400 * 400))  # before 1970: PAX mtime
    (root / "capped").write_bytes(b"#!/bin/true\n")
    # cap_net_raw+ep as a revision-2 security.capability blob: a PAX xattr record
    os.setxattr(root / "capped", "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    cap = docker_cli.capture(root)
    assert any("SCHILY.xattr.security.capability" in m.pax_headers for m in cap.members)
    assert [(m.type, m.linkname) for m in cap.members if m.name == "sl-hard"] == [(tarfile.LNKTYPE, "sl")]
    for parallel in (False, True):
        assert tar_bytes(root, opts=PackOptions(parallel=parallel)) == cap.tar


@pytest.mark.docker_cli
def test_gzip_output_is_what_docker_compress_unpacks_to(tmp_path: Path, docker_cli: Any) -> None:
    root = make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\n", "a.txt": b"hello" * 1000})
    cap = docker_cli.capture(root, extra_args=["--compress"])
    gz = tar_bytes(root, opts=PackOptions(compress="gzip"))
    assert gz[:3] == b"\x1f\x8b\x08"
    assert zlib.decompress(gz, 31) == cap.tar


def test_zstd_round_trip(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\n", "a.bin": os.urandom(2_000_000)})
    plain = tar_bytes(root)
    z = tar_bytes(root, opts=PackOptions(compress="zstd", level=5))
    assert z[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(z) == plain


def test_iter_tar_equals_pack(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\n", "big": os.urandom(5 * 1024 * 1024), "s": b"x"})
    ctx = ctxpack.open_context(root)
    chunks = list(iter_tar(ctx))
    assert max(len(c) for c in chunks) <= 2 * 1024 * 1024
    assert b"".join(chunks) == tar_bytes(root, dialect="buildkit")
    # A consumer that stops early stops the producer.
    gen = iter_tar(ctx)
    next(gen)
    gen.close()


def test_reproducible(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", {"Dockerfile": b"FROM scratch\n", "x/y": b"1", "z": b"2"})
    b = make_tree(tmp_path / "b", {"Dockerfile": b"FROM scratch\n", "x/y": b"1", "z": b"2"})
    os.utime(b / "z", (10**9, 10**9))
    os.link(a / "z", a / "z2")
    (b / "z2").write_bytes(b"2")
    opts = PackOptions(reproducible=True)
    assert tar_bytes(a, opts=opts) == tar_bytes(b, opts=opts)
    assert tar_bytes(a) != tar_bytes(b)
    members = tarfile.open(fileobj=io.BytesIO(tar_bytes(a, opts=PackOptions(reproducible=True, source_date_epoch=5)))).getmembers()
    assert {m.mtime for m in members} == {5} and all(m.type != tarfile.LNKTYPE for m in members)


def test_buildkit_tar_carries_excluded_dockerfile(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", ["Dockerfile", "a"], dockerignore="Dockerfile\n.dockerignore\n")
    res = CliRunner().invoke(main, ["pack", "-o", str(tmp_path / "out.tar"), str(root)])
    assert res.exit_code == 0
    names = tarfile.open(tmp_path / "out.tar").getnames()
    assert names == ["a", "Dockerfile"]
    assert "Dockerfile is excluded by the ignore rules but travels in the tar" in res.stderr


def test_outside_dockerfile_is_injected(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", ["a"])
    (tmp_path / "Other.Dockerfile").write_text("FROM scratch\n")
    for dialect in ("classic", "buildkit"):
        data = tar_bytes(root, dialect=dialect, dockerfile=str(tmp_path / "Other.Dockerfile"))
        tf = tarfile.open(fileobj=io.BytesIO(data))
        (df,) = [m for m in tf.getmembers() if m.name.startswith(".dockerfile.")]
        assert tf.extractfile(df).read() == b"FROM scratch\n"  # type: ignore[union-attr]
        assert df.mode == 0o600


def test_refuses_terminal_and_bad_level(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", ["Dockerfile"])
    assert CliRunner().invoke(main, ["pack", "--compress", "gzip", "--level", "30", "-o", str(tmp_path / "t"), str(root)]).exit_code == 2
    script = "import sys; sys.stdout.isatty = lambda: True; from ctxpack.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", script, "pack", str(root)], capture_output=True, text=True)
    assert proc.returncode == 2 and "refusing to write a tar to a terminal" in proc.stderr


def _stderr_through_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, got
    return got.decode(errors="replace")


def test_progress_line_only_on_a_terminal(tmp_path: Path) -> None:
    files = {f"src/f{i}": b"x" * 100 for i in range(3000)}
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **files})
    with open(root / "big.bin", "wb") as f:
        f.truncate(3 * packer.STREAM_PIECE)  # sparse: progress must move inside a large file too
    argv = [sys.executable, "-m", "ctxpack.cli", "pack", "-o", str(tmp_path / "out.tar"), str(root)]
    env = dict(os.environ, CTXPACK_PROGRESS_AFTER="0")
    text = _stderr_through_a_terminal(argv, env)
    lines = [seg for seg in text.split("\r") if " files, " in seg and "/s)" in seg]
    assert any(seg.startswith("\033[K1 files, ") for seg in lines), text  # during big.bin, piece by piece
    assert any("2,047 files" in seg for seg in lines), text  # every 1024 entries
    assert "\033[Kctxpack: 3,003 entries, 201.6 MB in " in text  # the line cleared, then the summary
    quiet = subprocess.run(argv, capture_output=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == b""  # not a terminal: nothing


def test_full_disk_on_stdout_exits_3(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "big": b"x" * 200_000})
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "ctxpack.cli", "pack", str(root)], stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 3
    assert "no space left on device" in proc.stderr


def test_closed_pipe_exits_3_quietly(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "big": os.urandom(4_000_000)})
    proc = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "pack", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(1000)
    proc.stdout.close()
    assert proc.wait(timeout=30) == 3
    assert proc.stderr is not None and proc.stderr.read() == b""


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Any:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        if ON_CI:
            pytest.fail("cannot mount a small tmpfs to test a full disk")
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_leaves_nothing_behind(tmp_path: Path, tiny_fs: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "big": os.urandom(1_000_000)})
    res = CliRunner().invoke(main, ["pack", "-o", str(tiny_fs / "ctx.tar"), str(root)])
    assert res.exit_code == 3
    assert "no space left on device" in res.output
    assert os.listdir(tiny_fs) == []


def test_file_growing_while_packed_fails_and_leaves_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n"})
    big = root / "growing.log"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    stop = threading.Event()

    def grow() -> None:
        with open(big, "ab") as f:
            while not stop.is_set():
                f.write(b"more\n")
                f.flush()

    t = threading.Thread(target=grow)
    t.start()
    try:
        res = CliRunner().invoke(main, ["pack", "-o", str(tmp_path / "out.tar"), str(root)])
    finally:
        stop.set()
        t.join()
    assert res.exit_code == 1
    assert "growing.log: changed while being packed" in res.output
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_shrinking_file_stops_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "shrinks": os.urandom(2 * SMALL_FILE)})
    real = FdSink.sendfile

    def truncating(self: FdSink, fd: int, offset: int, count: int) -> int | None:
        os.truncate(root / "shrinks", 1000)
        return real(self, fd, offset, count)

    monkeypatch.setattr(FdSink, "sendfile", truncating)
    r, w = os.pipe()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(os.fdopen(r, "rb").read()))
    reader.start()
    with pytest.raises(ChangedDuringReadError, match="shrinks: shrank from"):
        pack(ctxpack.open_context(root), FdSink(w))
    os.close(w)
    reader.join()
    with pytest.raises(tarfile.ReadError):
        tarfile.open(fileobj=io.BytesIO(out[0])).getmembers()  # truncated, never silently wrong


def test_small_file_changing_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "f": b"old"})
    real_pread = os.pread
    calls = {"n": 0}

    def racing_pread(fd: int, n: int, off: int) -> bytes:
        calls["n"] += 1
        data = real_pread(fd, n, off)
        if calls["n"] == 2:  # the Dockerfile was first; now rewrite "f" under us once
            (root / "f").write_bytes(b"new!")
        return data

    monkeypatch.setattr(packer.os, "pread", racing_pread)
    tf = tarfile.open(fileobj=io.BytesIO(tar_bytes(root)))
    assert tf.extractfile("f").read() == b"new!"  # type: ignore[union-attr]


def test_vanished_file_is_left_out_with_warning(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "a": b"1", "b": b"2"})
    ctx = ctxpack.open_context(root)
    warnings: list[str] = []
    entries = list(ctxpack.list_entries(ctx))
    (root / "a").unlink()
    w = packer._Writer(ctx.root, CallbackSink(lambda b: None), PackOptions(), warnings.append, None)
    for e in entries:
        w.row(entry_row(e))
    assert warnings == ["a: vanished while packing; left out (as docker does)"]


def _pack_rows_after(root: Path, change: Any, opts: PackOptions = PackOptions()) -> tuple[bytes, list[str]]:
    """Walk, then ``change()`` the tree, then pack what the walk listed."""
    ctx = ctxpack.open_context(root)
    rows = [entry_row(e, header=True) for e in ctxpack.list_entries(ctx)]
    change()
    out: list[bytes] = []
    warnings: list[str] = []
    w = packer._Writer(ctx.root, CallbackSink(out.append), opts, warnings.append, None)
    w.rows(rows)
    w.close_dir()
    w.flush()
    return b"".join(out), warnings


def test_file_replaced_by_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "f": b"data"})

    def to_fifo() -> None:
        (root / "f").unlink()
        os.mkfifo(root / "f")

    with pytest.raises(ChangedDuringReadError, match="f: no longer a regular file"):
        _pack_rows_after(root, to_fifo)


def test_small_file_that_became_large_is_streamed_whole(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "grows": b"tiny"})
    big = os.urandom(3 * SMALL_FILE + 5)
    data, _ = _pack_rows_after(root, lambda: (root / "grows").write_bytes(big))
    assert tarfile.open(fileobj=io.BytesIO(data + b"\0" * 1024)).extractfile("grows").read() == big  # type: ignore[union-attr]


def test_hard_linked_fifo(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n"})
    os.mkfifo(root / "a")
    os.link(root / "a", root / "b")
    plain = tarfile.open(fileobj=io.BytesIO(tar_bytes(root))).getmembers()
    assert [(m.name, m.type) for m in plain if m.name in "ab"] == [("a", tarfile.FIFOTYPE), ("b", tarfile.LNKTYPE)]
    repro = tarfile.open(fileobj=io.BytesIO(tar_bytes(root, opts=PackOptions(reproducible=True)))).getmembers()
    assert [(m.name, m.type) for m in repro if m.name in "ab"] == [("a", tarfile.FIFOTYPE), ("b", tarfile.FIFOTYPE)]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc to read the peak RSS")
def test_peak_memory_is_flat(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n"})
    with open(root / "huge.bin", "wb") as f:
        f.truncate(600 * 1024 * 1024)  # sparse: cheap to create, 600 MiB to pack
    # VmHWM is this process's own peak RSS; ru_maxrss would also count the
    # parent's pages (it survives fork+exec, and pytest's RSS is large).
    code = (
        "import resource, sys; from ctxpack.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
    )
    for compress in ("none", "gzip", "zstd"):
        proc = subprocess.run([sys.executable, "-c", code, "pack", "--compress", compress, "-o", str(tmp_path / "out.tar"), str(root)],
                              capture_output=True, text=True, timeout=300)
        # The packing process, plus the forked walker's own peak (its only
        # child): counted apart, their shared pages count twice.
        peak_kib, walker_kib = map(int, proc.stderr.strip().splitlines()[-1].split())
        assert peak_kib + walker_kib < 100 * 1024, (compress, peak_kib, walker_kib)


def test_output_to_a_device_is_written_not_replaced(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "a": b"x" * 1000})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    res = CliRunner().invoke(main, ["pack", "-o", str(fifo), str(root)])
    reader.join(timeout=30)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)          # still a FIFO, not a renamed file
    assert tarfile.open(fileobj=io.BytesIO(got[0])).getnames() == ["Dockerfile", "a"]
    assert sorted(os.listdir(tmp_path)) == ["c", "fifo"]
