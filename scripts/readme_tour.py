#!/usr/bin/env python3
"""Regenerate the README's 30-second tour: real commands on a small web app.

The tour tree is made in a temporary directory (same names and sizes every
time), each command runs as a user would type it (``python -m ctxpack``, in
the directory above the app), and its output and exit code are pasted into
README.md between the ``<!-- tour -->`` markers.  ``tests/test_readme.py``
re-runs the offline commands and fails when README.md shows something else.

    python scripts/readme_tour.py                      # size, explain, lint, pack
    python scripts/readme_tour.py --build unix:///…    # also build (and watch) against that engine

``--build`` needs an engine with ``busybox`` (the test harness's ``bb`` works:
the script tags it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

DOCKERFILE = """\
FROM busybox AS build
COPY package.json /app/
COPY src/ /app/src/

FROM busybox
COPY --from=build /app /srv/app
"""

# path -> size in bytes (content: a fixed pseudo-random pattern) or text.
TREE: dict[str, int | str] = {
    "Dockerfile": DOCKERFILE,
    ".dockerignore": "node_modules\n*.log\n.git\n",
    "package.json": '{"name": "web", "version": "1.0.0"}\n',
    "src/index.js": "console.log('hello')\n",
    "src/components/node_modules/lodash/index.js": 400_000,
    "node_modules/react/index.js": 3_000_000,
    "node_modules/.cache/babel.json": 800_000,
    "dist/bundle.js": 5_000_000,
    "debug.log": "GET / 200\n",
    ".env": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12\n",
}

OFFLINE = [
    "ctxpack size web",
    "ctxpack explain -C web src/components/node_modules/lodash/index.js node_modules/react/index.js",
    "ctxpack lint web",
    "ctxpack pack web | tar -t | head -5",
    "ctxpack pack --minimal web | tar -t",
]
ONLINE = [
    "ctxpack build -t web:dev web",
]

START, END = "<!-- tour:start (scripts/readme_tour.py) -->", "<!-- tour:end -->"


def _bytes(n: int, seed: int) -> bytes:
    block = bytes((i * 131 + seed * 7) % 251 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@contextlib.contextmanager
def tour_tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ctxpack-tour-") as tmp:
        base = Path(tmp)
        for i, (rel, spec) in enumerate(TREE.items()):
            p = base / "web" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(spec, int):
                p.write_bytes(_bytes(spec, i))
            else:
                p.write_text(spec)
        yield base


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[str, int]:
    """``command`` through the shell, ``ctxpack`` being this checkout's."""
    shim = cwd / ".bin"
    shim.mkdir(exist_ok=True)
    exe = shim / "ctxpack"
    exe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ctxpack \"$@\"\n")
    exe.chmod(0o755)
    full = {**env, "PATH": f"{shim}:{env.get('PATH', '')}", "PYTHONPATH": str(ROOT), "COLUMNS": "100",
            "CTXPACK_CACHE_DIR": str(cwd / ".cache"), "NO_COLOR": "1"}
    # One stream, as a terminal shows it (stderr interleaved with stdout).
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    # The tree lives in a fresh temporary directory: show it as ~/src.
    out = proc.stdout.rstrip("\n").replace(str(cwd), "~/src")
    return out, proc.returncode


def block(command: str, output: str, code: int) -> str:
    tail = f"\n(exit {code})" if code else ""
    return f"```console\n$ {command}\n{output}{tail}\n```\n"


def render(commands: list[str], env: dict[str, str]) -> list[tuple[str, str, int]]:
    with tour_tree() as base:
        return [(c, *run(c, base, env)) for c in commands]


def section(results: list[tuple[str, str, int]]) -> str:
    intro = {
        "ctxpack size web": "What the upload carries, and what each rule keeps out:",
        "ctxpack explain": "Why a path is in or out (`node_modules` is rooted: a `.gitignore` habit):",
        "ctxpack lint web": "Mistakes, secrets (never printed) and heavy directories, with the fix:",
        "ctxpack pack web": "The exact tar the docker CLI would upload, in its order (`| docker build -` works):",
        "ctxpack pack --minimal": "Only what the Dockerfile reads:",
        "ctxpack build": "Build on the engine the docker CLI would use, sending exactly that context:",
    }
    parts = [START, ""]
    for command, output, code in results:
        key = next((k for k in intro if command.startswith(k)), None)
        if key:
            parts.append(intro[key])
            parts.append("")
        parts.append(block(command, output, code))
    parts.append(END)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", metavar="DOCKER_HOST", help="also run the build commands against this engine")
    a = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    results = render(OFFLINE, env)
    text = README.read_text()
    if a.build:
        env["DOCKER_HOST"] = a.build
        results += render(ONLINE, env)
    elif START in text:
        # Keep the build part from the last --build run.
        old = text[text.index(START):text.index(END)]
        for command in ONLINE:
            m = re.search(r"```console\n\$ " + re.escape(command) + r"\n.*?```\n", old, re.S)
            if m:
                results.append((command, m.group(0), -1))
    body = section([(c, o, k) for c, o, k in results if k != -1])
    for c, raw, k in results:
        if k == -1:
            body = body.replace(END, raw + "\n" + END)
    if START in text:
        text = text[:text.index(START)] + body + text[text.index(END) + len(END):]
    else:
        anchor = "\n## Commands\n"
        text = text.replace(anchor, "\n## 30-second tour\n\n" + body + "\n" + anchor, 1)
    README.write_text(text)
    print("README.md: tour updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
