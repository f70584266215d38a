"""Small helpers the benchmark scripts share: medians, machine facts."""

from __future__ import annotations

import statistics
import subprocess


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
    import os

    import ctxpack

    compileall.compile_dir(os.path.dirname(ctxpack.__file__), quiet=1)
