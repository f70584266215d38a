#!/usr/bin/env python3
"""Benchmark ``ctxpack pack`` against GNU tar, docker-py and the docker CLI.

Usage::

    python bench/bench_pack.py --small        # quick: ~10k-file tree (development)
    python bench/bench_pack.py                # full: ~100k files, ~1.4 GB (the table)
    python bench/bench_pack.py --reps 7 --root /data/trees
    python bench/bench_pack.py --profile      # also: where ctxpack's time goes
    python bench/bench_pack.py --only full,typical --no-dockerpy
    python bench/bench_pack.py --only none --merge   # re-render pack.md from the JSON

A full run (default groups, ``--reps 5``) takes about 35-45 minutes on 2
cores, mostly docker-py (~60 s a run) and ``--compress gzip`` (~2 min a run);
``--profile`` adds ~5 minutes.  The published ``bench/results/pack.md`` came
from ``--root /tmp/ctxpack-bench-pack --profile``.

The tree is made by ``bench/gen_tree.py`` on first use (idempotent: an
existing tree with the same parameters is reused) under ``--root`` (default
``$CTXPACK_BENCH_ROOT`` or ``/tmp/ctxpack-bench``); its ``.dockerignore`` is
switched with ``bench/set_ignore.py`` and put back at the end.  Do not run
this and ``bench/bench_ls.py`` on the same root at the same time: both switch
the ``.dockerignore`` (this script checks it before and after every run and
stops if someone else changed it).

Every command writes its tar to a pipe whose reader throws it away
(``cat > /dev/null``), and is timed from spawn to the exit of both ends:

1. ``full`` -- full context, no ``.dockerignore``:

   * ``ctxpack pack --dialect classic DIR | cat > /dev/null``, as shipped (on
     two or more cores the walk runs in a forked process), and again with
     ``CTXPACK_PARALLEL=0`` (one process, what a one-core machine gets);
   * ``tar -cf - -C DIR . | cat > /dev/null`` (GNU tar)
   * docker-py: a fresh interpreter runs ``docker.utils.build.tar(DIR,
     exclude=[], dockerfile=process_dockerfile(None, DIR))`` -- what
     ``APIClient.build(path=DIR)`` does -- and reads the returned temporary
     file to the end into the pipe (creating it *and* reading it is what a
     docker-py user pays); interpreter start-up and ``import docker`` are
     included, as ctxpack's start-up is;
   * the docker CLI: ``DOCKER_BUILDKIT=0 docker build DIR`` with
     ``DOCKER_HOST`` on the fake daemon of ``bench/discard_server.py``, which
     reads the upload and discards it (validation walk + tar + upload; no
     build).  Here the reader is the server thread, not ``cat``.

2. ``typical`` -- the "typical" ``.dockerignore`` of ``bench/set_ignore.py``
   (``**/node_modules``, ``.git``, logs, build artefacts): ctxpack vs the
   docker CLI vs docker-py, docker-py given the exclude list exactly as
   ``APIClient.build`` reads ``.dockerignore`` (stripped lines, no blanks, no
   ``#`` comments).

3. ``compress`` -- ctxpack on the full context with ``--compress zstd`` and
   ``--compress gzip`` (default levels): wall time, throughput (MB of tar
   per second), compressed size.  Peak RSS comes from ``wait4`` on the
   ctxpack process itself (``ru_maxrss``) in every section.

Before the timed runs each command runs once as a warm-up that doubles as a
check: its output is read by a Python thread that hashes it (sha256) and
lists the tar's members, and the fake daemon hashes the docker CLI's upload
the same way.  ctxpack's classic tar must be byte-identical to the CLI's
upload (same sha256) for ``full`` and ``typical``; docker-py's and GNU
tar's member lists are compared with ctxpack's as name sets.  Then
``--reps`` timed runs (default 5), the tools interleaved (order reversed
every other round) so that the noise of this shared machine hits them
alike.  Warm page cache: nothing is dropped.  Cells are the median (min-max)
wall seconds; ratios are medians of the per-round ratios of the same run
(round i of tool A against round i of tool B).

``--profile`` adds a breakdown of ctxpack's time on the full context,
in-process (no interpreter start-up), each step a median of ``--reps`` runs:
the walk alone (the rows the walker process sends); the whole pack with the
walk in the same process; the whole pack with the forked walker (and that
walker's CPU); and a lower bound: a minimal Python loop reading the same
files.  It also records
``strace -c -f`` of one ``ctxpack pack`` run (syscall counts) and the
cProfile top functions.

Output: the markdown goes to stdout and to ``bench/results/pack.md``
(``pack-small.md`` with ``--small``), raw numbers to ``ROOT/pack-full.json``
(``pack-small.json``; ``--json`` to change).  ``--only none --merge``
re-renders the markdown from that JSON without measuring anything.
Anything below the line ``<!-- notes -->`` in an existing markdown file is
kept (hand-written analysis survives a re-run).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchutil import command_output, compile_ctxpack, cpu_model, ctxpack_exe, loadavg, log, summary  # noqa: E402

import discard_server
from ctxpack.engine.fake import discard
import gen_tree
from set_ignore import current_variant, set_ignore

DEFAULT_ROOT = os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench")
NOTES_MARK = "<!-- notes -->"
READ = 1 << 20


# --------------------------------------------------------------------------
# Consumers: hash + list a tar stream
# --------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    def __init__(self, raw):
        self.raw = raw
        self.h = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        if n:
            self.h.update(memoryview(b)[:n])
            self.n += n
        return n or 0


def consume(raw, parse: bool = True) -> dict:
    """Read ``raw`` (a RawIOBase) to the end: sha256, byte count, member names."""
    hr = _Hashing(raw)
    buf = io.BufferedReader(hr, READ)
    names: list[str] | None = None
    err = None
    if parse:
        names = []
        try:
            with tarfile.open(fileobj=buf, mode="r|") as tf:
                for m in tf:
                    n = m.name.removeprefix("./")
                    if n in (".", ""):
                        continue
                    names.append(n + "/" if m.isdir() else n)
        except tarfile.TarError as e:
            err = f"{type(e).__name__}: {e}"
    while buf.read(READ):
        pass
    return {"bytes": hr.n, "sha256": hr.h.hexdigest(), "names": names, "parse_error": err}


# --------------------------------------------------------------------------
# Running one command
# --------------------------------------------------------------------------

DOCKERPY_HELPER = r"""
import json, os, sys, time
t0 = time.perf_counter()
from docker.api.build import process_dockerfile
from docker.utils.build import tar
t1 = time.perf_counter()
path = sys.argv[1]
# .dockerignore exactly as docker.api.build.BuildApiMixin.build reads it
exclude = None
dockerignore = os.path.join(path, '.dockerignore')
if os.path.exists(dockerignore):
    with open(dockerignore) as f:
        exclude = list(filter(lambda x: x != '' and x[0] != '#',
                              [line.strip() for line in f.read().splitlines()]))
read = list(exclude) if exclude is not None else None  # tar() appends "!Dockerfile" to the list it gets
dockerfile = process_dockerfile(None, path)
f = tar(path, exclude=exclude or [], dockerfile=dockerfile, gzip=False)
t2 = time.perf_counter()
n = 0
while True:
    chunk = f.read(1 << 20)
    if not chunk:
        break
    view = memoryview(chunk)
    while view:
        w = os.write(1, view)
        view = view[w:]
    n += len(chunk)
f.close()
t3 = time.perf_counter()
sys.stderr.write("\nDOCKERPY " + json.dumps({"import": t1 - t0, "tar": t2 - t1, "read": t3 - t2,
                                             "bytes": n, "exclude": read}) + "\n")
"""


def _wait(pid: int) -> tuple[int, object]:
    while True:
        try:
            _, status, ru = os.wait4(pid, 0)
            return os.waitstatus_to_exitcode(status), ru
        except InterruptedError:
            continue


GNU_TIME = "/usr/bin/time"


class _Usage:
    """Resource usage of the measured process itself.

    ``ru_maxrss`` survives ``exec``: a child forked (or vforked) from this
    benchmark process starts with *our* high-water mark (~50 MiB), which
    would hide anything smaller.  So the command runs under GNU time (a small
    C program whose own child starts from a ~2 MiB image) and its ``%M``,
    ``%U`` and ``%S`` are used.  Without GNU time, ``wait4``'s numbers are
    kept and RSS is only an upper bound.
    """

    def __init__(self, argv: list[str]):
        self.file = None
        if os.access(GNU_TIME, os.X_OK):
            fd, self.file = tempfile.mkstemp(prefix="ctxpack-bench-time-")
            os.close(fd)
            self.argv = [GNU_TIME, "-f", "%M %U %S", "-o", self.file] + argv
        else:
            self.argv = argv

    def result(self, ru) -> dict:
        out = {"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kb": ru.ru_maxrss, "rss_exact": False}
        if self.file:
            with open(self.file) as fh:
                last = fh.read().strip().splitlines()[-1:]
            os.unlink(self.file)
            if last:
                kb, u, s = last[0].split()
                out.update(utime=float(u), stime=float(s), maxrss_kb=int(kb), rss_exact=True)
        out["cpu"] = out["utime"] + out["stime"]
        return out


class Runner:
    def __init__(self, server: discard_server.DiscardServer | None):
        self.server = server
        self.ctxpack = ctxpack_exe()
        self.docker = shutil.which("docker")
        self._cfg = tempfile.mkdtemp(prefix="ctxpack-bench-dockercfg-")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCKER_")}
        self.plain_env = dict(env)
        if server is not None:
            env.update(DOCKER_BUILDKIT="0", DOCKER_HOST=server.docker_host, DOCKER_CONFIG=self._cfg)
        self.docker_env = env
        self.expect_variant: dict[str, str] = {}

    def close(self) -> None:
        shutil.rmtree(self._cfg, ignore_errors=True)

    def argv(self, tool: str, tree: str) -> list[str]:
        if tool in ("ctxpack", "ctxpack-serial"):  # serial: CTXPACK_PARALLEL=0 (see env)
            return self.ctxpack + ["pack", "--dialect", "classic", tree]
        if tool.startswith("ctxpack-"):
            return self.ctxpack + ["pack", "--dialect", "classic", "--compress", tool.split("-", 1)[1], tree]
        if tool == "gnutar":
            return ["tar", "-cf", "-", "-C", tree, "."]
        if tool == "dockerpy":
            return [sys.executable, "-c", DOCKERPY_HELPER, tree]
        if tool == "docker":
            assert self.docker
            return [self.docker, "build", tree]
        raise ValueError(tool)

    def _check_variant(self, tree: str) -> None:
        want = self.expect_variant.get(tree)
        if want is not None and current_variant(tree) != want:
            raise RuntimeError(f"{tree}/.dockerignore changed under the benchmark (expected variant {want!r}, "
                               f"found {current_variant(tree)!r}): is another benchmark using this root?")

    def run(self, tool: str, tree: str, verify: bool = False) -> dict:
        """One run; ``verify``: hash and list the output instead of discarding it."""
        self._check_variant(tree)
        argv = self.argv(tool, tree)
        if tool == "docker":
            r = self._run_docker(argv, verify)
        else:
            env = dict(self.plain_env, CTXPACK_PARALLEL="0") if tool == "ctxpack-serial" else self.plain_env
            r = self._run_pipe(argv, verify, parse=tool in ("ctxpack", "ctxpack-serial", "gnutar", "dockerpy"), env=env)
        self._check_variant(tree)
        if tool == "dockerpy":
            for line in r.pop("stderr").splitlines():
                if line.startswith("DOCKERPY "):
                    r["dockerpy"] = json.loads(line[len("DOCKERPY "):])
        else:
            r.pop("stderr", None)
        return r

    def _run_pipe(self, argv: list[str], verify: bool, parse: bool, env: dict[str, str]) -> dict:
        errf = tempfile.TemporaryFile()
        usage = _Usage(argv)
        rfd, wfd = os.pipe()
        t0 = time.perf_counter()
        p = subprocess.Popen(usage.argv, stdin=subprocess.DEVNULL, stdout=wfd, stderr=errf, env=env)
        os.close(wfd)
        result: dict = {}
        if verify:
            reader = open(rfd, "rb", buffering=0)
            th = threading.Thread(target=lambda: result.update(consume(reader, parse=parse)))
            th.start()
            code, ru = _wait(p.pid)
            th.join()
            reader.close()
            wall = time.perf_counter() - t0
            sink_ru = None
        else:
            c = subprocess.Popen(["cat"], stdin=rfd, stdout=subprocess.DEVNULL)
            os.close(rfd)
            code, ru = _wait(p.pid)
            ccode, sink_ru = _wait(c.pid)
            c.returncode = ccode
            wall = time.perf_counter() - t0
        p.returncode = code
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        errf.close()
        if code != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} ... exited {code}:\n{err[-3000:]}")
        result.update(wall=wall, stderr=err, **usage.result(ru))
        if sink_ru is not None:
            result["sink_cpu"] = sink_ru.ru_utime + sink_ru.ru_stime
        return result

    def _run_docker(self, argv: list[str], verify: bool) -> dict:
        assert self.server is not None
        self.server.take()
        self.server.set_consumer(consume if verify else discard)
        errf = tempfile.TemporaryFile()
        usage = _Usage(argv)
        s0 = time.process_time()
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(usage.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                                 env=self.docker_env)
            code, ru = _wait(p.pid)
            p.returncode = code
            wall = time.perf_counter() - t0
        finally:
            self.server.set_consumer(discard)
        server_cpu = time.process_time() - s0
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        errf.close()
        if code != 0:
            raise RuntimeError(f"docker build exited {code}:\n{err[-3000:]}")
        ups = [r for r in self.server.take() if r.path == "/build"]
        if len(ups) != 1:
            raise RuntimeError(f"expected one upload, got {len(ups)}")
        result: dict = {"wall": wall, "server_cpu": server_cpu, "bytes": ups[0].body_size, **usage.result(ru)}
        if verify:
            result.update(ups[0].result)
        return result


# --------------------------------------------------------------------------
# Measuring a group of tools
# --------------------------------------------------------------------------


def measure(runner: Runner, tree: str, tools: list[str], reps: int, reference: str | None) -> dict:
    """Warm-up/verify run per tool, then ``reps`` interleaved timed rounds."""
    out: dict = {"tools": {}, "checks": {}}
    verified: dict[str, dict] = {}
    for tool in tools:
        log(f"    warm-up + check: {tool}")
        r = runner.run(tool, tree, verify=True)
        verified[tool] = r
    ref = verified.get(reference) if reference else None
    for tool, r in verified.items():
        chk = {"bytes": r.get("bytes"), "sha256": r.get("sha256"),
               "entries": len(r["names"]) if r.get("names") is not None else None,
               "parse_error": r.get("parse_error")}
        if "dockerpy" in r:
            chk["dockerpy"] = r["dockerpy"]
        if ref is not None and tool != reference and r.get("names") is not None and ref.get("names") is not None:
            a, b = set(ref["names"]), set(r["names"])
            chk["same_sha256_as_ref"] = r.get("sha256") == ref.get("sha256")
            chk["same_names_as_ref"] = a == b
            chk["same_order_as_ref"] = ref["names"] == r["names"]
            chk["only_ref"] = sorted(a - b)[:10]
            chk["only_this"] = sorted(b - a)[:10]
            chk["n_only_ref"] = len(a - b)
            chk["n_only_this"] = len(b - a)
        out["checks"][tool] = chk
    out["reference"] = reference
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for i in range(reps):
        order = tools if i % 2 == 0 else tools[::-1]
        log(f"    round {i + 1}/{reps}: " + ", ".join(order))
        for tool in order:
            runs[tool].append(runner.run(tool, tree))
    for tool in tools:
        rs = runs[tool]
        t = {"wall": summary([r["wall"] for r in rs]), "cpu": summary([r["cpu"] for r in rs]),
             "utime": summary([r["utime"] for r in rs]), "stime": summary([r["stime"] for r in rs]),
             "maxrss_kb": summary([r["maxrss_kb"] for r in rs])}
        if rs and "server_cpu" in rs[0]:
            t["server_cpu"] = summary([r["server_cpu"] for r in rs])
        if rs and "sink_cpu" in rs[0]:
            t["sink_cpu"] = summary([r["sink_cpu"] for r in rs])
        if rs and "dockerpy" in rs[0]:
            for k in ("import", "tar", "read"):
                t[f"dockerpy_{k}"] = summary([r["dockerpy"][k] for r in rs])
        out["tools"][tool] = t
    out["walls"] = {t: [r["wall"] for r in runs[t]] for t in tools}
    return out


def paired_ratio(res: dict, a: str, b: str) -> dict | None:
    """Median (min-max) of wall(a)/wall(b) over the rounds of one run."""
    w = res.get("walls", {})
    if a not in w or b not in w:
        return None
    return summary([x / y for x, y in zip(w[a], w[b])])


# --------------------------------------------------------------------------
# Profile: where ctxpack's time goes (in-process)
# --------------------------------------------------------------------------


def _pipe_to_cat() -> tuple[int, subprocess.Popen]:
    rfd, wfd = os.pipe()
    c = subprocess.Popen(["cat"], stdin=rfd, stdout=subprocess.DEVNULL)
    os.close(rfd)
    return wfd, c


def _phase_runs(tree: str, reps: int) -> dict:
    """Each phase in-process on the full tree, ``reps`` times, interleaved.

    CPU is this process's; for the forked walker the walker's CPU (from the
    children's rusage, less ``cat``'s) is recorded separately.
    """
    import resource

    from ctxpack.context import open_context
    from ctxpack.tar.writer import PackOptions, pack
    from ctxpack.tar.sinks import FdSink
    from ctxpack.tar.rows import builder_rows
    from ctxpack.walker import EntryKind, list_entries

    walker_cpu: list[float] = []

    def walk_only():
        ctx = open_context(tree, dialect="classic")
        return sum(1 for _ in builder_rows(ctx, headers=True))

    def full_pack(parallel: bool):
        ctx = open_context(tree, dialect="classic")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wfd, c = _pipe_to_cat()
        pack(ctx, FdSink(wfd), PackOptions(parallel=parallel))
        os.close(wfd)
        _, _, cat_ru = os.wait4(c.pid, 0)
        c.returncode = 0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if parallel:
            walker_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                              - cat_ru.ru_utime - cat_ru.ru_stime)

    def syscall_floor():
        """The files of the listing, read with the fewest syscalls Python allows."""
        ctx = open_context(tree, dialect="classic")
        files = [(os.path.join(ctx.root, e.path), e.stat.st_size) for e in list_entries(ctx)
                 if e.kind == EntryKind.FILE]
        wfd, c = _pipe_to_cat()
        t0 = time.perf_counter()
        buf, size = [], 0
        for p, sz in files:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            if sz <= 256 * 1024:
                d = os.pread(fd, sz + 1, 0)
                buf.append(d)
                size += len(d)
                if size >= READ:
                    os.write(wfd, b"".join(buf))
                    buf, size = [], 0
            else:
                off = 0
                while off < sz:
                    n = os.sendfile(wfd, fd, off, sz - off)
                    if not n:
                        break
                    off += n
            os.close(fd)
        os.write(wfd, b"".join(buf))
        os.close(wfd)
        c.wait()
        return time.perf_counter() - t0  # the read/write part only (listing excluded)

    phases = {
        "walk only: the walker's rows, headers encoded (rows.builder_rows)": walk_only,
        "pack, walk in the same process (PackOptions(parallel=False))": lambda: full_pack(False),
        "pack, forked walker (parallel=True; CPU of the packing process)": lambda: full_pack(True),
    }
    walls: dict[str, list[float]] = {k: [] for k in phases}
    cpus: dict[str, list[float]] = {k: [] for k in phases}
    floor: list[float] = []
    for name, fn in phases.items():  # warm-up
        fn()
    for i in range(reps):
        log(f"    profile round {i + 1}/{reps}")
        for name, fn in phases.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
        floor.append(syscall_floor())
    return {"phases": {k: {"wall": summary(walls[k]), "cpu": summary(cpus[k])} for k in phases},
            "syscall_floor_read_part": summary(floor), "walker_cpu": summary(walker_cpu[1:] or walker_cpu)}


def _cprofile(tree: str) -> str:
    import cProfile
    import pstats

    from ctxpack.context import open_context
    from ctxpack.tar.writer import PackOptions, pack
    from ctxpack.tar.sinks import FdSink

    wfd, c = _pipe_to_cat()
    pr = cProfile.Profile()
    ctx = open_context(tree, dialect="classic")
    pr.enable()
    pack(ctx, FdSink(wfd), PackOptions(parallel=True))
    pr.disable()
    os.close(wfd)
    c.wait()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    head = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return "\n".join([head] + [ln.replace(REPO + "/", "") for ln in lines[start:]])


def _strace(runner: Runner, tree: str) -> str | None:
    if not shutil.which("strace"):
        return None
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False)
    out.close()
    wfd, c = _pipe_to_cat()
    p = subprocess.run(["strace", "-c", "-f", "-o", out.name] + runner.argv("ctxpack", tree),
                       stdout=wfd, stderr=subprocess.DEVNULL)
    os.close(wfd)
    c.wait()
    with open(out.name) as fh:
        text = fh.read()
    os.unlink(out.name)
    if p.returncode != 0:
        return None
    keep = []
    for ln in text.splitlines():
        parts = ln.split()
        if ln.startswith(("% time", "------")) or "total" in parts:
            keep.append(ln)
        elif len(parts) >= 5 and parts[-1].isidentifier():
            try:
                if int(parts[3]) >= 1000:
                    keep.append(ln)
            except ValueError:
                pass
    return "\n".join(keep)


def _startup(runner: Runner, reps: int) -> dict:
    """Fixed costs: bare interpreter, importing the CLI, packing a one-file context."""
    tiny = tempfile.mkdtemp(prefix="ctxpack-bench-tiny-")
    with open(os.path.join(tiny, "Dockerfile"), "w") as fh:
        fh.write("FROM scratch\n")
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import ctxpack.cli'": [sys.executable, "-c", "import ctxpack.cli"],
        "ctxpack pack (a Dockerfile only)": runner.argv("ctxpack", tiny),
        "tar -cf - (a Dockerfile only)": runner.argv("gnutar", tiny),
    }
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    try:
        for i in range(reps + 1):
            for k, argv in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                if i:
                    walls[k].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tiny, ignore_errors=True)
    return {k: summary(v) for k, v in walls.items()}


def profile(runner: Runner, tree: str, reps: int) -> dict:
    log("  profile: start-up")
    startup = _startup(runner, reps)
    log("  profile: phases")
    res = _phase_runs(tree, reps)
    res["startup"] = startup
    log("  profile: cProfile")
    res["cprofile"] = _cprofile(tree)
    log("  profile: strace -c")
    res["strace"] = _strace(runner, tree)
    return res



def machine_info(tree: str) -> dict:
    cpu = cpu_model()
    head = command_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--", "ctxpack"])
    try:
        import docker as _docker

        dockerpy = _docker.__version__
    except Exception:  # noqa: BLE001
        dockerpy = "not installed"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": command_output(["docker", "--version"]),
        "dockerpy": dockerpy,
        "gnutar": command_output(["tar", "--version"]).splitlines()[0] if shutil.which("tar") else "?",
        "fs": (command_output(["df", "--output=fstype", tree]).splitlines()[-1:] or ["?"])[0],
        "ctxpack_commit": head + (" + uncommitted changes in ctxpack/" if dirty else ""),
        "loadavg_start": loadavg(),
    }


def fmt_s(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f})"


def fmt_ratio(s: dict | None) -> str:
    if not s:
        return "–"
    return f"**{s['median']:.2f}×** ({s['min']:.2f}–{s['max']:.2f})"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:.3f} GB"


def fmt_mb(kb: float) -> str:
    return f"{kb / 1024:.0f} MiB"


LABELS = {
    "ctxpack": "ctxpack pack --dialect classic",
    "ctxpack-serial": "ctxpack pack --dialect classic, CTXPACK_PARALLEL=0 (one process)",
    "gnutar": "GNU tar -cf - -C DIR .",
    "dockerpy": "docker-py utils.build.tar + read",
    "docker": "docker CLI upload (DOCKER_BUILDKIT=0)",
    "ctxpack-zstd": "ctxpack pack --compress zstd",
    "ctxpack-gzip": "ctxpack pack --compress gzip",
}


def _check_cell(chk: dict, ref: str | None) -> str:
    if "same_sha256_as_ref" not in chk:
        return "(reference)" if chk.get("sha256") else "–"
    if chk["same_sha256_as_ref"]:
        return "identical bytes (sha256)"
    if chk["same_names_as_ref"]:
        return "same entries" + ("" if chk["same_order_as_ref"] else ", other order") + ", other bytes"
    return f"**entries differ**: {chk['n_only_ref']} only in {ref}, {chk['n_only_this']} only here"


def group_table(res: dict, tools: list[str], base: str, base_label: str) -> list[str]:
    L = [f"| tool | wall, median (min–max) | ÷ {base_label} (per round) | CPU user+sys | peak RSS | "
         "bytes out | entries | vs ctxpack |",
         "|---|---:|---:|---:|---:|---:|---:|---|"]
    for tool in tools:
        t = res["tools"].get(tool)
        if t is None:
            continue
        chk = res["checks"].get(tool, {})
        ratio = "1" if tool == base else fmt_ratio(paired_ratio(res, tool, base))
        cpu = f"{t['cpu']['median']:.2f} s"
        if "server_cpu" in t:
            cpu += f" (+{t['server_cpu']['median']:.2f} s server)"
        ent = chk.get("entries")
        L.append(f"| {LABELS.get(tool, tool)} | {fmt_s(t['wall'])} | {ratio} | {cpu} | "
                 f"{fmt_mb(t['maxrss_kb']['median'])} | {fmt_bytes(chk.get('bytes'))} | "
                 f"{ent:,} | {_check_cell(chk, res.get('reference'))} |" if ent is not None else
                 f"| {LABELS.get(tool, tool)} | {fmt_s(t['wall'])} | {ratio} | {cpu} | "
                 f"{fmt_mb(t['maxrss_kb']['median'])} | {fmt_bytes(chk.get('bytes'))} | – | "
                 f"{_check_cell(chk, res.get('reference'))} |")
    return L


def render(res: dict) -> str:
    m = res["machine"]
    L: list[str] = []
    add = L.append
    add(f"# `ctxpack pack` vs GNU tar, docker-py and the docker CLI ({res['variant']} tree)")
    add("")
    add(f"- date: {m['date']}; ctxpack commit {m['ctxpack_commit']}")
    add(f"- machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB RAM, Linux {m['kernel']}, tree on "
        f"{m['fs']}; load average {' '.join(m['loadavg_start'])} at start, "
        f"{' '.join(res.get('loadavg_end', ['?']))} at end (shared, noisy machine)")
    add(f"- Python {m['python']}; {m['docker']}; docker-py {m['dockerpy']}; {m['gnutar']}")
    t = res["tree"]
    add(f"- tree `{t['path']}` (bench/gen_tree.py): {gen_tree.describe(t['marker'])}")
    add(f"- {res['reps']} timed rounds after 1 warm-up/check run per command, tools interleaved (order "
        "reversed every other round); **warm page cache**; wall = spawn to exit of the writer and of the "
        "pipe's reader (`cat > /dev/null`; for the docker CLI the reader is the fake daemon's thread in the "
        "benchmark process, whose CPU is shown as '+ server'); ratios are the median (min–max) of the "
        "per-round ratios; peak RSS = `ru_maxrss` of the writer process (`wait4`), median")
    add("- ctxpack and docker-py times include interpreter start-up and imports (docker-py's "
        "`import docker` + `tar()` + reading the temp file are broken down below); ctxpack's modules "
        "byte-compiled beforehand, as `pip install .` leaves them")
    add("")
    targets: list[tuple[str, str, str]] = []
    if "full" in res["groups"]:
        g = res["groups"]["full"]
        add("## 1. Full context (no .dockerignore)")
        add("")
        L.extend(group_table(g, ["ctxpack", "ctxpack-serial", "gnutar", "dockerpy", "docker"], "gnutar", "GNU tar"))
        add("")
        r = paired_ratio(g, "ctxpack", "gnutar")
        if r:
            cr = g["tools"]["ctxpack"]["cpu"]["median"] / g["tools"]["gnutar"]["cpu"]["median"]
            targets.append(("full context: ctxpack ≤ 1.5× GNU tar wall",
                            f"{r['median']:.2f}× wall ({r['min']:.2f}–{r['max']:.2f}); CPU {cr:.2f}×",
                            "yes" if r["median"] <= 1.5 else "**no**"))
        r2 = paired_ratio(g, "ctxpack", "docker")
        if r2:
            add(f"ctxpack ÷ docker CLI on the full context: {fmt_ratio(r2)}; "
                f"ctxpack ÷ docker-py: {fmt_ratio(paired_ratio(g, 'ctxpack', 'dockerpy'))}.")
            add("")
        _dockerpy_note(g, add)
    if "typical" in res["groups"]:
        g = res["groups"]["typical"]
        add("## 2. Typical .dockerignore (`**/node_modules`, `.git`, `**/*.log`, `dist`, `build`, `target`, "
            "`**/__pycache__`, two `!` exceptions)")
        add("")
        L.extend(group_table(g, ["ctxpack", "docker", "dockerpy"], "docker", "docker CLI"))
        add("")
        r = paired_ratio(g, "ctxpack", "docker")
        if r:
            cr = g["tools"]["ctxpack"]["cpu"]["median"] / g["tools"]["docker"]["cpu"]["median"]
            targets.append(("typical .dockerignore: ctxpack ≤ 0.6× docker CLI wall",
                            f"{r['median']:.2f}× wall ({r['min']:.2f}–{r['max']:.2f}); CPU {cr:.2f}× "
                            "(docker's without the server)",
                            "yes" if r["median"] <= 0.6 else "**no**"))
        chk = g["checks"].get("docker", {})
        c0 = g["checks"].get("ctxpack", {})
        if chk.get("sha256"):
            add(f"Byte check: ctxpack sha256 `{c0.get('sha256')}` ({c0.get('bytes'):,} bytes); docker CLI "
                f"upload sha256 `{chk.get('sha256')}` ({chk.get('bytes'):,} bytes): "
                + ("**identical**." if chk.get("same_sha256_as_ref") else "**DIFFERENT**."))
            add("")
        _dockerpy_note(g, add)
    rss_rows = []
    if "full" in res["groups"] and "ctxpack" in res["groups"]["full"]["tools"]:
        rss_rows.append(("none", res["groups"]["full"], "ctxpack"))
    if "compress" in res["groups"]:
        g = res["groups"]["compress"]
        for tool in ("ctxpack-zstd", "ctxpack-gzip"):
            if tool in g["tools"]:
                rss_rows.append((tool.split("-")[1], g, tool))
    if rss_rows:
        add("## 3. ctxpack on the full context: peak RSS, compression")
        add("")
        tar_bytes = res["groups"].get("full", {}).get("checks", {}).get("ctxpack", {}).get("bytes")
        add("| --compress | wall, median (min–max) | throughput (tar MB/s) | CPU user+sys | peak RSS median (max) "
            "| output | output ÷ tar |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        worst = 0.0
        per: list[str] = []
        for name, g, tool in rss_rows:
            t = g["tools"][tool]
            out_b = g["checks"].get(tool, {}).get("bytes")
            thr = f"{tar_bytes / 1e6 / t['wall']['median']:.0f}" if tar_bytes else "–"
            frac = f"{out_b / tar_bytes:.3f}" if out_b and tar_bytes else "–"
            worst = max(worst, t["maxrss_kb"]["max"])
            per.append(f"{name} {t['maxrss_kb']['max'] * 1024 / 1e6:.0f} MB")
            add(f"| {name} | {fmt_s(t['wall'])} | {thr} | {t['cpu']['median']:.2f} s | "
                f"{fmt_mb(t['maxrss_kb']['median'])} ({fmt_mb(t['maxrss_kb']['max'])}) | {fmt_bytes(out_b)} | {frac} |")
        add("")
        targets.append(("peak RSS < 100 MB (worst run per --compress)", ", ".join(per),
                        "yes" if worst * 1024 < 100e6 else "**no**" + (" (plain: yes)" if rss_rows and
                        rss_rows[0][1]["tools"][rss_rows[0][2]]["maxrss_kb"]["max"] * 1024 < 100e6 else "")))
    if targets:
        add("## Targets")
        add("")
        add("| target | measured (median of per-round ratios; CPU = ratio of median user+sys) | met |")
        add("|---|---:|:---:|")
        for a, b, c in targets:
            add(f"| {a} | {b} | {c} |")
        add("")
    if res.get("profile"):
        p = res["profile"]
        add("## Profile: ctxpack on the full context, in-process (no start-up)")
        add("")
        add("| phase | wall, median (min–max) | CPU (this process) |")
        add("|---|---:|---:|")
        for k, v in p["phases"].items():
            add(f"| {k} | {fmt_s(v['wall'])} | {v['cpu']['median']:.2f} s |")
        add(f"| floor: the same files read by a bare Python loop (open, pread/sendfile, close; listing "
            f"excluded) | {fmt_s(p['syscall_floor_read_part'])} | – |")
        if p.get("walker_cpu"):
            add("")
            add(f"CPU of the forked walker process (children's rusage less `cat`'s), median: "
                f"{p['walker_cpu']['median']:.2f} s.")
        add("")
        if p.get("startup"):
            add("Fixed costs (wall, median (min–max)): " + "; ".join(
                f"{k} {fmt_s(v)}" for k, v in p["startup"].items()) + ".")
            add("")
        if p.get("strace"):
            add("`strace -c -f ctxpack pack --dialect classic DIR` (syscalls with ≥ 1000 calls; strace "
                "slows everything, the counts are what matter):")
            add("")
            add("```")
            add(p["strace"])
            add("```")
            add("")
        add("cProfile of the packing process of `packer.pack` with the forked walker (deterministic "
            "profiling inflates per-call overhead ~2×):")
        add("")
        add("```")
        add(p["cprofile"])
        add("```")
        add("")
    return "\n".join(L)


def _dockerpy_note(g: dict, add) -> None:
    t = g["tools"].get("dockerpy")
    if not t or "dockerpy_tar" not in t:
        return
    chk = g["checks"].get("dockerpy", {})
    excl = chk.get("dockerpy", {}).get("exclude")
    add(f"docker-py breakdown (medians): `import docker` {t['dockerpy_import']['median']:.2f} s, "
        f"`tar()` writing the temp file {t['dockerpy_tar']['median']:.2f} s, reading it into the pipe "
        f"{t['dockerpy_read']['median']:.2f} s; exclude list given: `{excl}`.")
    add("")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="use the ~10k-file tree (quick)")
    ap.add_argument("--root", default=DEFAULT_ROOT, help=f"where trees live (default {DEFAULT_ROOT}, "
                    "or $CTXPACK_BENCH_ROOT); never inside the repository")
    ap.add_argument("--reps", type=int, default=5, help="timed rounds per group (default 5)")
    ap.add_argument("--only", default="full,typical,compress",
                    help="comma-separated groups: full, typical, compress (default all)")
    ap.add_argument("--no-docker", action="store_true", help="skip the docker CLI")
    ap.add_argument("--no-dockerpy", action="store_true", help="skip docker-py")
    ap.add_argument("--profile", action="store_true", help="add the in-process profile of ctxpack")
    ap.add_argument("--merge", action="store_true",
                    help="keep the groups/profile of the existing JSON that this run does not redo")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results/pack[-small].md)")
    ap.add_argument("--json", default=None, help="raw numbers (default ROOT/pack-{full,small}.json, outside the repo)")
    args = ap.parse_args(argv)

    variant = "small" if args.small else "full"
    files = gen_tree.SMALL_FILES if args.small else gen_tree.DEFAULT_FILES
    big = gen_tree.SMALL_BIG_MIB if args.small else gen_tree.DEFAULT_BIG_MIB
    tree = os.path.join(args.root, f"tree-{variant}")
    out_md = args.out or os.path.join(HERE, "results", "pack-small.md" if args.small else "pack.md")
    if os.path.abspath(args.root).startswith(REPO + os.sep):
        ap.error("--root must not be inside the repository")
    groups = [g.strip() for g in args.only.split(",") if g.strip() and g.strip() != "none"]
    for g in groups:
        if g not in ("full", "typical", "compress"):
            ap.error(f"unknown group {g!r}")

    compile_ctxpack()
    log(f"generating/checking {tree}")
    marker = gen_tree.generate(tree, files=files, big_mib=big)
    saved = current_variant(tree)
    use_docker = not args.no_docker and shutil.which("docker") is not None
    use_dockerpy = not args.no_dockerpy
    if use_dockerpy:
        try:
            import docker  # noqa: F401
        except ImportError:
            log("docker-py not installed: skipping it")
            use_dockerpy = False
    server = None
    if use_docker:
        server = discard_server.DiscardServer().start()
    runner = Runner(server)
    res: dict = {"variant": variant, "reps": args.reps, "ctxpack_cmd": runner.ctxpack,
                 "machine": machine_info(tree), "tree": {"path": tree, "marker": marker}, "groups": {}}
    try:
        if "full" in groups or "compress" in groups or args.profile:
            set_ignore(tree, "none")
            runner.expect_variant[tree] = "none"
        if "full" in groups:
            log("group full: no .dockerignore")
            tools = (["ctxpack", "ctxpack-serial", "gnutar"] + (["dockerpy"] if use_dockerpy else [])
                     + (["docker"] if use_docker else []))
            res["groups"]["full"] = measure(runner, tree, tools, args.reps, reference="ctxpack")
        if "compress" in groups:
            log("group compress: ctxpack --compress zstd / gzip")
            res["groups"]["compress"] = measure(runner, tree, ["ctxpack-zstd", "ctxpack-gzip"], args.reps,
                                                reference=None)
        if args.profile:
            log("profile")
            res["profile"] = profile(runner, tree, args.reps)
        if "typical" in groups:
            log("group typical: typical .dockerignore")
            set_ignore(tree, "typical")
            runner.expect_variant[tree] = "typical"
            tools = ["ctxpack"] + (["docker"] if use_docker else []) + (["dockerpy"] if use_dockerpy else [])
            res["groups"]["typical"] = measure(runner, tree, tools, args.reps, reference="ctxpack")
    finally:
        runner.expect_variant.clear()
        if saved != "custom":
            set_ignore(tree, saved)
        runner.close()
        if server is not None:
            server.stop()
    res["loadavg_end"] = loadavg()
    out_json = args.json or os.path.join(args.root, f"pack-{variant}.json")
    if args.merge and os.path.exists(out_json):
        with open(out_json, encoding="utf-8") as fh:
            old = json.load(fh)
        for k, v in res["groups"].items():
            old["groups"][k] = v
        for k in ("profile",):
            if k in res:
                old[k] = res[k]
        res = old

    md = render(res)
    print(md)
    notes = ""
    if os.path.exists(out_md):
        with open(out_md, encoding="utf-8") as fh:
            old = fh.read()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK):]
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    with open(out_md, "w", encoding="utf-8") as fh:
        fh.write(md + "\n" + (("\n" + notes) if notes else ""))
    for g in res["groups"].values():  # names are long; keep the JSON small
        g.pop("names", None)
    with open(out_json, "w", encoding="utf-8") as fh:
        json.dump(res, fh, indent=1, default=str)
    log(f"wrote {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
