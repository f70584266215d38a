"""Small helpers the benchmark scripts share: medians, machine facts."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys


def summary(xs: list[float]) -> dict:
    """Median, min, max and the runs themselves."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def command_output(argv: list[str]) -> str:
    """A command's trimmed standard output, or "?" when it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "?"."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def compile_ctxpack() -> None:
    """Byte-compile ctxpack's modules, as ``pip install .`` leaves them.

    This machine sets PYTHONDONTWRITEBYTECODE, so an editable install would
    otherwise recompile every module in every timed run (~0.1 s each).
    """
    import compileall

    import ctxpack

    compileall.compile_dir(os.path.dirname(ctxpack.__file__), quiet=1)


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def loadavg() -> list[str]:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[:3]


def ctxpack_exe() -> list[str]:
    """The ``ctxpack`` console script next to this interpreter (not a pyenv shim)."""
    cand = os.path.join(os.path.dirname(sys.executable), "ctxpack")
    if os.access(cand, os.X_OK):
        return [cand]
    found = shutil.which("ctxpack")
    if found:
        return [found]
    return [sys.executable, "-m", "ctxpack.cli"]


def daemon_storage() -> str:
    """Where tests/dockerd.py puts the benchmark daemon's data root and on
    which file system (CTXPACK_DOCKERD_DIR, default /tmp), for the results'
    text: the engine's file creation depends on it (see tests/dockerd.py
    ``_base_parent``)."""
    parent = os.environ.get("CTXPACK_DOCKERD_DIR") or "/tmp"
    real = os.path.realpath(parent)
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mnt = fields[1]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, fields[2]
    except OSError:
        pass
    return f"data root under {parent} ({fstype})"


def tmpfs_daemon() -> None:
    """Benchmarks run their daemon on /dev/shm when it is a tmpfs (unless
    CTXPACK_DOCKERD_DIR says otherwise): the same engine for every client,
    without ext4's no-journal inode scan making the engine's intake depend on
    what the previous builds deleted (tests/dockerd.py ``_base_parent``)."""
    if os.environ.get("CTXPACK_DOCKERD_DIR"):
        return
    os.environ["CTXPACK_DOCKERD_DIR"] = "/dev/shm"
    if "(tmpfs)" not in daemon_storage():
        del os.environ["CTXPACK_DOCKERD_DIR"]
