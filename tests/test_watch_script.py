"""The installed ``ctxpack`` command (``bin/ctxpack``, the wheel's script;
issue 14): what ``pip install .`` and ``pip install -e .`` put on PATH.

Built and installed for real: a wheel of this checkout (``pip wheel``)
into a venv, and an editable install into another; pip writes each venv's
interpreter over the script's ``#!python``.  The dependencies come from
this interpreter's site-packages through a path line (as bench/bench_watch.py
does), ``PYTHONPATH`` is dropped, and the test checks that the venv imports
its own ctxpack.  With a watcher running, the script answers ``diff`` and
``fingerprint`` without click (``-X importtime`` lists what it imported)
and prints byte for byte what the command prints without a watcher, exit
status included; without one, or for any other command, it is click's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="inotify tests need Linux")


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CTXPACK_")}
    return env | {"CTXPACK_CACHE_DIR": str(cache)} | extra


def _venv(where: Path) -> Path:
    """A venv without pip whose path line reaches this interpreter's dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    py = where / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, "base-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # where pip put click & co.
    return py


def _pip(command: str, *args: str, python: str | None = None) -> None:
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
    target = ["--python", python] if python else []
    p = subprocess.run([sys.executable, "-m", "pip", *target, command, "-q", "--no-deps", *isolation, *args],
                       capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"wheel": venv/bin/ctxpack, "editable": venv/bin/ctxpack}."""
    base = tmp_path_factory.mktemp("installs")
    src = base / "checkout"  # a copy: an editable install of the checkout itself would shadow the suite's
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "_backend", "ctxpack", "bin"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    _pip("wheel", "-w", str(base / "wheels"), str(src))
    (wheel,) = (base / "wheels").glob("ctxpack-*.whl")
    out = {}
    for kind, what in (("wheel", [str(wheel)]), ("editable", ["-e", str(src)])):
        py = _venv(base / kind)
        _pip("install", *what, python=str(py))
        out[kind] = base / kind / "bin" / "ctxpack"
        where = subprocess.run([str(py), "-c", "import ctxpack; print(ctxpack.__file__)"], capture_output=True, text=True,
                               env=_env(base), cwd=base, check=True, timeout=60).stdout.strip()
        assert where.startswith(str(base / (kind if kind == "wheel" else "checkout"))), (kind, where)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for d in ("src/app", "node_modules/a", "docs"):
        (root / d).mkdir(parents=True)
    (root / ".dockerignore").write_text("**/node_modules\ndocs\n")
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (root / "src/app/main.py").write_text("print('hi')\n")
    return root


def _run(exe: Path, args: list[str], cache: Path, cwd: Path, **extra: str) -> tuple[str, str, int]:
    r = subprocess.run([str(exe), *args], cwd=cwd, env=_env(cache, **extra), capture_output=True, text=True, timeout=120)
    return r.stdout, r.stderr, r.returncode


def _imported(exe: Path, args: list[str], cache: Path, cwd: Path) -> set[str]:
    """The modules the installed script imports for ``args`` (``-X importtime``)."""
    py = exe.parent / "python"
    r = subprocess.run([str(py), "-X", "importtime", str(exe), *args], cwd=cwd, env=_env(cache), capture_output=True,
                       text=True, timeout=120)
    return {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
            and "self [us]" not in line}


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_the_installed_script_answers_from_the_watcher_as_click_would(kind: str, installs: dict[str, Path], tree: Path,
                                                                     tmp_path: Path) -> None:
    exe = installs[kind]
    assert exe.read_text().splitlines()[0] == f"#!{exe.parent / 'python'}"  # pip rewrote #!python
    cache = tmp_path / "cache"
    assert _run(exe, ["--version"], cache, tree)[0].startswith("ctxpack, version ")
    assert _run(exe, ["snapshot"], cache, tree)[2] == 0
    (tree / "src/app/new.py").write_text("new\n")
    proc = subprocess.Popen([str(exe), "watch", "."], cwd=tree, env=_env(cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(e.startswith("ctxpack: watching ") for e in err):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.05)
        for args in (["diff"], ["diff", "--exit-code"], ["diff", "--json", "."], ["fingerprint"], ["fingerprint", "--json"]):
            mods = _imported(exe, args, cache, tree)
            assert "ctxpack.watchlink" in mods and "click" not in mods, (args, sorted(mods))  # the watcher answered
            got = _run(exe, args, cache, tree)
            assert got == _run(exe, args, cache, tree, CTXPACK_WATCH="0"), args
            if args[0] == "diff":
                assert "+ src/app/new.py" in got[0] or '"src/app/new.py"' in got[0], got
                assert got[2] == (1 if "--exit-code" in args else 0)
        # Not answered (an option the fast path leaves to click): click's command, same output.
        assert "click" in _imported(exe, ["diff", "--dialect", "classic"], cache, tree)
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(5)
    # No watcher: the same command, by click.
    assert "click" in _imported(exe, ["diff"], cache, tree)
    assert _run(exe, ["diff", "--exit-code"], cache, tree)[2] == 1
