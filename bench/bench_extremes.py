#!/usr/bin/env python3
"""Peak memory of every command on contexts at the size extremes (issue 16).

    python bench/bench_extremes.py                    # 1M entries, 10k deep, 8.5 GiB sparse
    python bench/bench_extremes.py --small            # 50k entries, 3k deep, 0.2 GiB (a quick check)
    python bench/bench_extremes.py --root /data/x     # where the trees live (made once, kept)

Four contexts, each with a ``Dockerfile``:

* ``tiny``: nothing else -- the baseline (the interpreter and ctxpack's modules);
* ``sparse``: one sparse file of ``--sparse-gib`` GiB (over 8 GiB: a PAX
  ``size`` record in the tar);
* ``wide``: one directory holding ``--entries`` empty files;
* ``deep``: a chain of ``--depth`` directories (``d/d/d/...``), far past
  ``PATH_MAX``: the docker CLI cannot send it, and neither does ctxpack; the
  point is the message and that nothing grows with the depth before it.

For each: ``ls``, ``size``, ``fingerprint`` (a fresh cache), ``lint``, ``pack``
(plain, gzip, zstd; the tar to /dev/null), and the docker CLI's context
upload (``DOCKER_BUILDKIT=0 docker build``, against ``bench/discard_server.py``,
which throws the body away).  Peak RSS is GNU time's ``%M`` (``wait4``'s
``ru_maxrss``) for the command's process, which includes every descendant
it reaped (ctxpack's forked walker): the largest resident set of any
process of the command.
Peak RSS does not depend on the machine's load; wall times (shown for
orientation) do.  For ``wide`` the table adds bytes per name above the
``tiny`` baseline: sorting a directory's names needs them all in memory at
once (the docker CLI's ``os.ReadDir`` sorts too), so that cost is inherent;
everything else must stay flat.

Results: ``bench/results/extremes.md`` (``extremes-small.md`` for
``--small``) and the matching ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from pathlib import Path  # noqa: E402

from benchutil import command_output, compile_ctxpack, cpu_model, ctxpack_exe, loadavg, log  # noqa: E402
from discard_server import DiscardServer  # noqa: E402
from trees import make_chain  # noqa: E402  (the suite's deep-chain maker)

DOCKERFILE = b"FROM scratch\nCOPY . /\n"


# --------------------------------------------------------------------------
# Trees (made once under --root; a marker file says a tree is complete)
# --------------------------------------------------------------------------


def _start(path: str) -> bool:
    """True when ``path`` must be (re)made; prepares an empty context."""
    if os.path.exists(os.path.join(path, ".complete")):
        return False
    if os.path.exists(path):
        _remove(path)
    os.makedirs(path)
    with open(os.path.join(path, "Dockerfile"), "wb") as f:
        f.write(DOCKERFILE)
    with open(os.path.join(path, ".dockerignore"), "wb") as f:
        f.write(b".complete\n")
    return True


def _done(path: str) -> None:
    open(os.path.join(path, ".complete"), "wb").close()


def _remove(top: str) -> None:
    """rm -rf for any depth (``shutil.rmtree`` recurses once per level)."""
    subprocess.run(["rm", "-rf", "--", top], check=True)


def make_tiny(root: str) -> str:
    path = os.path.join(root, "tiny")
    if _start(path):
        _done(path)
    return path


def make_sparse(root: str, gib: float) -> str:
    path = os.path.join(root, f"sparse-{gib:g}g")
    if _start(path):
        with open(os.path.join(path, "huge.bin"), "wb") as f:
            f.truncate(int(gib * (1 << 30)))
            f.seek(0)
            f.write(b"head")  # some real bytes at each end
            f.seek(int(gib * (1 << 30)) - 4)
            f.write(b"tail")
        _done(path)
    return path


def make_wide(root: str, entries: int) -> str:
    path = os.path.join(root, f"wide-{entries}")
    if _start(path):
        log(f"making {entries:,} files in one directory ...")
        d = os.path.join(path, "many")
        os.mkdir(d)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(entries):
                os.close(os.open(f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
        _done(path)
    return path


def make_deep(root: str, depth: int) -> str:
    path = os.path.join(root, f"deep-{depth}")
    if _start(path):
        log(f"making a chain of {depth:,} directories ...")
        make_chain(Path(path), depth)
        _done(path)
    return path


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


GNU_TIME = "/usr/bin/time"


def measure(argv: list[str], env: dict[str, str]) -> dict:
    """Run ``argv`` (stdout to /dev/null); peak RSS of it and its reaped descendants.

    Through GNU time (``%M``, from its ``wait4``): a child forked straight
    from this Python would carry this process's resident set into its
    ``ru_maxrss`` (the kernel keeps the pre-exec high-water mark), a floor
    of ~30 MiB; time's own is ~2 MiB.
    """
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", prefix="ctxpack-rss-") as rss:
        via_time = os.access(GNU_TIME, os.X_OK)
        full = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if via_time else argv
        proc = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL, stdout=null, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read(1 << 20).decode("utf-8", "replace")
        kib = usage.ru_maxrss
        if via_time:
            found = re.findall(r"^(\d+)\s*$", rss.read(), re.M)
            kib = int(found[-1]) if found else -1
    return {"rss_kib": kib, "wall": wall, "rc": rc, "stderr": _abbrev(stderr)}


def _abbrev(text: str) -> str:
    """Long d/d/d/... runs shown as d/…(N levels)…/d, the last line kept."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and "DEPRECATED" not in ln
             and "BuildKit is currently disabled" not in ln and "environment-variable" not in ln]
    last = lines[-1] if lines else ""
    return re.sub(r"(?:d/){8,}d?", lambda m: f"d/…({m.group().count('d')} levels)…/d", last)[:300]


def commands(exe: list[str], ctx: str, cache: str) -> list[tuple[str, list[str]]]:
    return [
        ("ls", [*exe, "ls", ctx]),
        ("size", [*exe, "size", ctx]),
        ("fingerprint", [*exe, "fingerprint", ctx]),
        ("lint", [*exe, "lint", ctx]),
        ("pack", [*exe, "pack", ctx]),
        ("pack gzip", [*exe, "pack", "--compress", "gzip", ctx]),
        ("pack zstd", [*exe, "pack", "--compress", "zstd", ctx]),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small trees: a quick check of the script")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "ctxpack-extremes"))
    ap.add_argument("--entries", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--sparse-gib", type=float)
    ap.add_argument("--no-docker", action="store_true", help="skip the docker CLI rows")
    ap.add_argument("--out", help="results file stem (default bench/results/extremes[-small])")
    a = ap.parse_args()
    entries = a.entries or (50_000 if a.small else 1_000_000)
    depth = a.depth or (3_000 if a.small else 10_000)
    gib = a.sparse_gib or (0.2 if a.small else 8.5)
    stem = a.out or os.path.join(HERE, "results", "extremes-small" if a.small else "extremes")

    compile_ctxpack()
    os.makedirs(a.root, exist_ok=True)
    trees = {
        "tiny": make_tiny(a.root),
        "sparse": make_sparse(a.root, gib),
        "wide": make_wide(a.root, entries),
        "deep": make_deep(a.root, depth),
    }
    exe = ctxpack_exe()
    docker = None if a.no_docker else shutil.which("docker")
    server = DiscardServer().start() if docker else None
    cfg = tempfile.mkdtemp(prefix="ctxpack-extremes-cfg-")
    base_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCKER_")}
    results: dict[str, dict[str, dict]] = {}
    load_before = loadavg()
    try:
        for case, ctx in trees.items():
            results[case] = {}
            for name, argv in commands(exe, ctx, cfg):
                cache = tempfile.mkdtemp(prefix="ctxpack-extremes-cache-")
                try:
                    r = measure(argv, {**base_env, "CTXPACK_CACHE_DIR": cache})
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
                results[case][name] = r
                log(f"{case:7} {name:12} {r['rss_kib'] / 1024:8.1f} MiB  {r['wall']:7.2f} s  rc={r['rc']}  {r['stderr'][:100]}")
            if server is not None and docker is not None:
                env = {**base_env, "DOCKER_BUILDKIT": "0", "DOCKER_HOST": server.docker_host, "DOCKER_CONFIG": cfg}
                r = measure([docker, "build", "-q", ctx], env)
                results[case]["docker CLI upload"] = r
                log(f"{case:7} {'docker CLI':12} {r['rss_kib'] / 1024:8.1f} MiB  {r['wall']:7.2f} s  rc={r['rc']}  {r['stderr'][:100]}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(cfg, ignore_errors=True)
    load_after = loadavg()

    names = [n for n, _ in commands(exe, "", "")] + (["docker CLI upload"] if docker else [])
    lines = [
        f"# Peak RSS at the size extremes ({'small' if a.small else 'full'} run)",
        "",
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; {command_output(['docker', '--version']) if docker else 'no docker CLI'}; "
        f"load average {' '.join(load_before)} before, {' '.join(load_after)} after.",
        "",
        f"Contexts: tiny (a Dockerfile), sparse (one {gib:g} GiB sparse file), wide ({entries:,} empty files in one "
        f"directory), deep (a chain of {depth:,} directories). Command: `python bench/bench_extremes.py"
        f"{' --small' if a.small else ''}`. Peak RSS is GNU time's `%M` (`wait4`'s `ru_maxrss`: the largest "
        "resident set of the command or any process it reaped). Wall times depend on the load; RSS does not.",
        "",
        "| command | " + " | ".join(f"{c} MiB" for c in trees) + " | wide: bytes/name over tiny |",
        "|---|" + "---:|" * (len(trees) + 1),
    ]
    for n in names:
        cells = []
        for c in trees:
            r = results[c].get(n)
            cells.append("—" if r is None else f"{r['rss_kib'] / 1024:.1f}" + ("" if r["rc"] == 0 else f" (exit {r['rc']})"))
        w, t = results["wide"].get(n), results["tiny"].get(n)
        per = "—" if not (w and t) else f"{(w['rss_kib'] - t['rss_kib']) * 1024 / entries:.0f}"
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {per} |")
    lines += ["", "Wall seconds (load-dependent, for orientation):", "",
              "| command | " + " | ".join(trees) + " |", "|---|" + "---:|" * len(trees)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            "—" if results[c].get(n) is None else f"{results[c][n]['wall']:.2f}" for c in trees) + " |")
    lines += ["", "Messages of the commands that failed (as Docker fails past `PATH_MAX`):", ""]
    for c in trees:
        for n in names:
            r = results[c].get(n)
            if r is not None and r["rc"] != 0:
                said = f"`{r['stderr']}`" if r["stderr"] else "(a finding on stdout, not kept here)"
                lines.append(f"- {c}, {n} (exit {r['rc']}): {said}")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump({"entries": entries, "depth": depth, "sparse_gib": gib, "load": [load_before, load_after],
                   "results": results}, f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
