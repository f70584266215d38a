"""``ctxpack build`` run as the command line ends its process without the
interpreter's orderly shutdown once its output is flushed
(:func:`ctxpack.cli.quick_exit`, ``ctxpack.cli.common.exit_now``): after a
session build the shutdown collected ~34k objects left in reference cycles
and tore every module down, 0.04-0.09 s of the build's wall time on the
bench tree.  Other commands, and callers of the click group, keep it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trees import make_tree

REPO = Path(__file__).resolve().parent.parent

# As `python -m ctxpack.cli` runs it, with an atexit handler that says
# whether the orderly shutdown ran.
SCRIPT = """
import atexit, sys
atexit.register(lambda: print("orderly-shutdown", file=sys.stderr))
sys.argv = ["ctxpack", *sys.argv[1:]]
from ctxpack.cli import main
main()
"""


def _run(*args: str, code: str = SCRIPT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), DOCKER_HOST="unix:///nonexistent/ctxpack-test.sock")
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env)


def _ctx(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\nCOPY . /\n", "f": b"f\n"})


def test_build_ends_without_the_orderly_shutdown_its_error_said(tmp_path):
    p = _run("build", str(_ctx(tmp_path)))
    assert p.returncode == 5, p.stderr
    assert "cannot connect to the Docker engine at unix:///nonexistent/ctxpack-test.sock" in p.stderr
    assert "orderly-shutdown" not in p.stderr


def test_other_commands_and_callers_keep_the_orderly_shutdown(tmp_path):
    root = _ctx(tmp_path)
    p = _run("ls", str(root))
    assert p.returncode == 0 and "Dockerfile" in p.stdout and "orderly-shutdown" in p.stderr, p.stderr
    # a caller that invokes the group with its own arguments (as CliRunner does)
    code = SCRIPT.replace("main()", "main(['build', sys.argv[1]])")
    p = _run(str(root), code=code)
    assert p.returncode == 5 and "orderly-shutdown" in p.stderr, p.stderr


def test_the_installed_script_ends_a_build_the_same_way(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), DOCKER_HOST="unix:///nonexistent/ctxpack-test.sock")
    p = subprocess.run([sys.executable, str(REPO / "bin" / "ctxpack"), "build", str(_ctx(tmp_path))],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 5 and "cannot connect to the Docker engine" in p.stderr, p.stderr


def test_exit_now_flushes_everything_written_and_keeps_the_code():
    code = "import sys; from ctxpack.cli import common; sys.stdout.write('x' * 300000); " \
           "print('said', file=sys.stderr); common.QUICK_EXIT = True; common.exit_now({})"
    p = _run(code=code.format(3))
    assert p.returncode == 3 and len(p.stdout) == 300000 and p.stderr == "said\n"
    p = _run(code=code.format("'a message'"))
    assert p.returncode == 1 and p.stderr == "said\na message\n"
    p = _run(code=code.format("None"))
    assert p.returncode == 0
