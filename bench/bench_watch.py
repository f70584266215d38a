"""``ctxpack watch`` on a big tree: latency, warm answers, watches, RSS, idle CPU.

Usage (with the interpreter the console script belongs to, so that every
timed command is that script, never a pyenv shim)::

    python bench/gen_tree.py /tmp/ctxpack-bench/tree-full-nm10 --nm-scale 10 --ignore typical   # once
    /root/.pyenv/versions/3.11.7/bin/python3 bench/bench_watch.py /tmp/ctxpack-bench/tree-full-nm10 [--runs 15] [--soak 120]

Works on a copy-free tree: it writes and removes only ``src/.bench-watch-*``
files (under ``src/``, which the typical ignore file sends).  Every command is
a subprocess (interpreter start-up included), the index is a fresh temp
directory, the page cache is warm.  Measured:

* start-up: ``ctxpack watch`` until it is ready (first scan + fingerprint);
  the inotify watches it holds (``/proc/PID/fdinfo``) next to the tree's
  directories and those under ``node_modules``;
* write → visible to ``ctxpack diff``: the time from a file's write to a
  ``ctxpack diff`` that lists it returning (no sleep between: the client's
  barrier covers the quiet period), median over ``--runs``; the same for
  ``diff`` with ``CTXPACK_WATCH=0`` (a normal run) for the ratio;
* write → settled delta printed by the watcher (the quiet period's share;
  each timed write comes 0.4 s after the last one, so it is a lone save);
* ``diff`` and ``fingerprint`` with the watcher vs without, interleaved
  (with, without, without, with, ...), next to ``ctxpack --version`` (the
  console script's own start-up) and ``python -c pass``; twice: with the
  console script this interpreter has (here an editable install, whose
  import hook and this machine's other ``.pth`` hooks run at every start),
  and as a user's ``pip install ctxpack`` has it: a venv (``--without-pip``)
  with a wheel built from this tree installed into it (non-editable,
  byte-compiled by pip), the dependencies seen through a plain path line in
  a ``.pth`` (a path line runs none of the base's hook files);
* ``ls``, ``size --json`` and ``pack -o`` with vs without (fewer runs): the
  same output, and the time;
* the server's share of write → visible: an in-process ``quick_diff`` right
  after a write (barrier, settle, comparison; no interpreter start-up);
* the watcher's RSS (VmRSS / VmHWM) and CPU while idle (10 s), and over a
  soak of ``--soak`` seconds of edits (RSS growth, CPU per edit).

Writes bench/results/watch.md (and watch.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ctxpack.watch.source import watched_inodes  # noqa: E402

from benchutil import compile_ctxpack, cpu_model, ctxpack_exe, loadavg, log, summary  # noqa: E402


def proc_facts(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, VmRSS kB, VmHWM kB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


def tree_dirs(root: str) -> tuple[int, int]:
    total = nm = 0
    for dirpath, dirnames, _ in os.walk(root):
        total += 1
        if "node_modules" in dirpath.split(os.sep):
            nm += 1
    return total, nm


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="surrogateescape")
    if p.returncode not in (0, 1):
        raise SystemExit(f"{cmd}: exit {p.returncode}: {p.stderr}")
    return time.perf_counter() - t, p.stdout


def imports(cmd: list[str], env: dict[str, str], python: str = sys.executable) -> tuple[int, float, bool, bool]:
    """(modules imported, their import time in ms by -X importtime, whether
    any of the walker / matcher / index was among them, whether click was)
    for one run (``site`` and what it runs included)."""
    p = subprocess.run([python, "-X", "importtime", *cmd], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    names, total = [], 0
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            _, self_us, _, name = (x.strip() for x in line.replace("import time:", "|", 1).split("|"))
            names.append(name)
            total += int(self_us)
    heavy = any(n in ("ctxpack.walker", "ctxpack.ignore.matcher", "ctxpack.index.store") for n in names)
    return len(names), total / 1000, heavy, "click" in names


def interleaved(a: list[str], b: list[str], env_a: dict[str, str], env_b: dict[str, str], n: int,
                read: "Callable[[str], str] | None" = None) -> tuple[list[float], list[float], bool]:
    """``a`` and ``b`` timed in ABBA order (drift in the machine's load hits
    both alike); whether every pair gave the same output."""
    ta: list[float] = []
    tb: list[float] = []
    same = True
    for i in range(n):
        order = ((a, env_a, ta), (b, env_b, tb)) if i % 2 == 0 else ((b, env_b, tb), (a, env_a, ta))
        outs = {}
        for cmd, env, into in order:
            t, out = timed(cmd, env)
            into.append(t)
            outs[id(into)] = read(out) if read is not None else out
        same = same and outs[id(ta)] == outs[id(tb)]
    return ta, tb, same


def user_install(work: str) -> tuple[list[str], str, str]:
    """A user's install of this tree: (its console script, its python,
    how it was made).  A venv without pip; a wheel built from the checkout
    (``pip wheel --no-deps``), installed into the venv by this interpreter's
    pip (``--python``: pip byte-compiles it, as for any user); the
    dependencies through a path line in a ``.pth`` naming this interpreter's
    site-packages (path lines add a directory; only a site directory's own
    ``.pth`` files run their ``import`` lines)."""
    import site

    venv, wheels = os.path.join(work, "venv"), os.path.join(work, "wheels")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    built = None
    for extra in ([], ["--no-build-isolation"]):  # isolation fetches setuptools from the index; else this one's
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *extra, "-w", wheels, str(HERE.parent)],
                           capture_output=True, text=True)
        if p.returncode == 0:
            built = extra
            break
    if built is None:
        raise RuntimeError(f"pip wheel failed: {p.stderr[-2000:]}")
    wheel = next(Path(wheels).glob("ctxpack-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", str(wheel)], check=True)
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    base = site.getsitepackages()[0]
    with open(os.path.join(purelib, "base-deps.pth"), "w") as fh:
        fh.write(base + "\n")
    exe = os.path.join(venv, "bin", "ctxpack")
    check = subprocess.run([py, "-I", "-c", "import ctxpack, click; print(ctxpack.__file__)"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, check=True).stdout.strip()
    if not check.startswith(venv):
        raise RuntimeError(f"the venv imports ctxpack from {check}, not its own install")
    how = (f"venv --without-pip; `pip wheel --no-deps{' ' + ' '.join(built) if built else ''}` of this tree → "
           f"`pip --python VENV install --no-deps {wheel.name}`; dependencies via a path line to {base}")
    return [exe], py, how


def startups(cmds: dict[str, list[str]], env: dict[str, str], n: int) -> dict[str, dict]:
    """Each command's time, interleaved (round robin), ``n`` times."""
    got: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(n):
        for k, cmd in cmds.items():
            got[k].append(timed(cmd, env)[0])
    return {k: summary(v) for k, v in got.items()}


class Watch:
    def __init__(self, exe: list[str], tree: str, env: dict[str, str]):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*exe, "watch", "--json", tree], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, dict]] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._errs, daemon=True).start()
        if not self.ready.wait(600):
            raise SystemExit("watch did not start: " + "".join(self.err))
        self.startup = time.perf_counter() - self.started

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), json.loads(line)))

    def _errs(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            if line.startswith("ctxpack: watching "):
                self.ready.set()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--soak", type=float, default=120.0, help="seconds of edits in the soak")
    ap.add_argument("--out", default=str(HERE / "results" / "watch.md"))
    ap.add_argument("--no-user-install", action="store_true", help="skip the venv + wheel (user install) timings")
    args = ap.parse_args()
    tree = os.path.realpath(args.tree)
    src = os.path.join(tree, "src")
    if os.path.exists(os.path.join(tree, ".bench-tree.partial")) or not os.path.isdir(src):
        raise SystemExit(f"{tree}: not a complete bench/gen_tree.py tree (.bench-tree.partial, or no src/): "
                         f"python bench/gen_tree.py {tree} --nm-scale 10 --ignore typical")
    compile_ctxpack()
    exe = ctxpack_exe()
    if "/shims/" in exe[0] or not os.path.samefile(os.path.dirname(exe[0]), os.path.dirname(sys.executable)):
        raise SystemExit(f"{exe[0]} is not the console script next to {sys.executable}: run this with the "
                         "interpreter ctxpack is installed in (a pyenv shim adds ~100 ms to every command)")
    cache = tempfile.mkdtemp(prefix="ctxpack-watchbench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXPACK_")}
    env["CTXPACK_CACHE_DIR"] = cache
    cold_env = dict(env, CTXPACK_WATCH="0")
    res: dict[str, object] = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                                          "load_before": loadavg()}, "exe": exe[0]}
    work = tempfile.mkdtemp(prefix="ctxpack-watchbench-user-")
    installs: list[tuple[str, list[str], str, dict[str, str]]] = [("editable", exe, sys.executable, env)]
    if not args.no_user_install:
        try:
            u_exe, u_py, how = user_install(work)
            u_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            installs.append(("user", u_exe, u_py, u_env))
            res["user_install"] = how
            log(f"user install: {how}")
        except (RuntimeError, subprocess.CalledProcessError, StopIteration) as e:
            res["user_install_error"] = str(e)
            log(f"no user install: {e}")
    for kind, x, py, e in installs:
        st = startups({"python": [py, "-c", "pass"], "version": [*x, "--version"]}, e, 9)
        key = "" if kind == "editable" else "user_"
        res[f"{key}python_startup_s"], res[f"{key}version_startup_s"] = st["python"], st["version"]
        log(f"{kind}: python -c pass {st['python']['median'] * 1000:.1f} ms, ctxpack --version "
            f"{st['version']['median'] * 1000:.1f} ms")
    try:
        with open(os.path.join(tree, ".bench-tree.json")) as fh:
            params = json.load(fh)["params"]
        res["tree_params"] = "bench/gen_tree.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in params.items() if k in ("files", "nm_scale", "big_mib", "seed"))
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    dirs, nm_dirs = tree_dirs(tree)
    log(f"tree: {dirs:,} directories, {nm_dirs:,} under node_modules")
    subprocess.run([*exe, "ls", tree], stdout=subprocess.DEVNULL, env=cold_env, check=True)  # page cache
    subprocess.run([*exe, "snapshot", tree], stdout=subprocess.DEVNULL, env=cold_env, check=True)  # index warm too
    for f in Path(src).glob(".bench-watch-*"):
        f.unlink()

    w = Watch(exe, tree, env)
    try:
        inodes = watched_inodes(w.proc.pid)
        cpu0, rss0, hwm0 = proc_facts(w.proc.pid)
        res["startup_s"] = w.startup
        res["watches"] = len(inodes)
        res["dirs"] = dirs
        res["node_modules_dirs"] = nm_dirs
        res["rss_start_kb"], res["hwm_start_kb"] = rss0, hwm0
        log(f"watch ready in {w.startup:.2f} s, {len(inodes):,} watches, RSS {rss0 / 1024:.0f} MB")

        # write -> visible to `ctxpack diff`
        lat, lat_cold, settle = [], [], []
        for i in range(args.runs):
            name = f".bench-watch-{i}.txt"
            time.sleep(0.4)  # more than BURST_GAP after the last write: a lone save, as in an edit loop
            n_lines = len(w.lines)
            t0 = time.perf_counter()
            with open(os.path.join(src, name), "w") as fh:
                fh.write(f"run {i}\n")
            _, out = timed([*exe, "diff", tree], env)
            t1 = time.perf_counter()
            assert f"src/{name}" in out, out
            lat.append(t1 - t0)
            deadline = time.time() + 10
            while time.time() < deadline:
                done = [t for t, d in w.lines[n_lines:] if any(a["path"] == f"src/{name}" for a in d["added"])]
                if done:
                    settle.append(done[0] - t0)
                    break
                time.sleep(0.005)
            name2 = f".bench-watch-cold-{i}.txt"
            t0 = time.perf_counter()
            with open(os.path.join(src, name2), "w") as fh:
                fh.write(f"run {i}\n")
            _, out = timed([*exe, "diff", tree], cold_env)
            lat_cold.append(time.perf_counter() - t0)
            assert f"src/{name2}" in out
        res["write_to_diff_s"] = summary(lat)
        res["write_to_diff_without_watch_s"] = summary(lat_cold)
        res["write_to_settled_delta_s"] = summary(settle)
        log(f"write -> diff: {statistics.median(lat):.3f} s with watch, {statistics.median(lat_cold):.3f} s without; "
            f"settled delta {statistics.median(settle):.3f} s")

        # The channel alone, in this process (no interpreter start-up): a
        # socket round trip with its barrier, next to reading the same answer
        # from a state file (the alternative: cheap, but it cannot know about
        # a change the watcher has not applied yet).
        os.environ["CTXPACK_CACHE_DIR"] = cache
        from ctxpack.context import open_context
        from ctxpack.watch import channel

        ctx = open_context(tree)
        sock_fp, sock_diff, file_read = [], [], []
        state_file = os.path.join(cache, "state.json")
        for _ in range(20):
            t = time.perf_counter()
            fp = channel.warm_fingerprint(ctx)
            sock_fp.append(time.perf_counter() - t)
            assert fp is not None
            t = time.perf_counter()
            channel.warm_diff(ctx)
            sock_diff.append(time.perf_counter() - t)
            with open(state_file, "w") as fh:
                json.dump(fp.to_json(), fh)
            t = time.perf_counter()
            with open(state_file) as fh:
                json.load(fh)
            os.stat(tree)
            file_read.append(time.perf_counter() - t)
        # The library without the watcher, in this process too (warm index).
        from ctxpack.index.snapshots import diff as lib_diff, fingerprint as lib_fingerprint

        lib_fp, lib_df = [], []
        for _ in range(5):
            t = time.perf_counter()
            lib_fingerprint(ctx)
            lib_fp.append(time.perf_counter() - t)
            t = time.perf_counter()
            lib_diff(ctx)
            lib_df.append(time.perf_counter() - t)
        res["library_fingerprint_s"] = summary(lib_fp)
        res["library_diff_s"] = summary(lib_df)
        log(f"library without watcher: fingerprint {1000 * statistics.median(lib_fp):.0f} ms, diff {1000 * statistics.median(lib_df):.0f} ms")
        # The server's share of write -> visible: the barrier, the settle and
        # the comparison, for a client that has not opened the context.
        from ctxpack.watch import client

        spec = client.spec(tree, dockerfile=None, dialect="buildkit", ignore_file=None, minimal=False, target=None,
                           build_args={}, platform=None)
        assert spec is not None
        quick = []
        for i in range(args.runs):
            with open(os.path.join(src, f".bench-watch-quick-{i}.txt"), "w") as fh:
                fh.write(str(i))
            t = time.perf_counter()
            got = client.quick_diff(spec)
            quick.append(time.perf_counter() - t)
            assert got is not None and any(c.path == f"src/.bench-watch-quick-{i}.txt"
                                           for c in got[0].added), "the watcher did not answer"  # type: ignore[union-attr]
        res["write_to_quick_diff_in_process_s"] = summary(quick)
        log(f"write -> in-process quick_diff: {1000 * statistics.median(quick):.1f} ms")
        res["channel_fingerprint_s"] = summary(sock_fp)
        res["channel_diff_s"] = summary(sock_diff)
        res["state_file_read_s"] = summary(file_read)
        log(f"channel: fingerprint {1000 * statistics.median(sock_fp):.1f} ms, diff {1000 * statistics.median(sock_diff):.1f} ms; "
            f"state file read {1000 * statistics.median(file_read):.2f} ms")

        # diff / fingerprint with vs without (nothing changing), interleaved
        time.sleep(1.0)
        for kind, x, py, e in installs:
            key = "" if kind == "editable" else "user_"
            e_cold = dict(e, CTXPACK_WATCH="0")
            for cmd in ("diff", "fingerprint"):
                warm, cold, same = interleaved([*x, cmd, tree], [*x, cmd, tree], e, e_cold, max(6, args.runs))
                res[f"{key}{cmd}_with_watch_s"] = summary(warm)
                res[f"{key}{cmd}_without_watch_s"] = summary(cold)
                res[f"{key}{cmd}_same_output"] = same
                log(f"{kind} {cmd}: {statistics.median(warm):.4f} s with watch, {statistics.median(cold):.3f} s without "
                    f"({statistics.median(warm) / statistics.median(cold):.3f}x), same output: {same}")
            for cmd in ("diff", "fingerprint"):  # what each loads
                got = {k: [imports([*x, cmd, tree], ee, py) for _ in range(3)] for k, ee in (("with", e), ("without", e_cold))}
                res[f"{key}{cmd}_imports"] = {k: (v[0][0], min(y[1] for y in v), v[0][2], v[0][3]) for k, v in got.items()}
        # ls, size, pack: the same answers with the watcher's entries (fewer runs: pack reads the tree)
        tar = os.path.join(cache, "ctx.tar")
        for name, cmd, read in (
            ("ls", [*exe, "ls", tree], None),
            ("size", [*exe, "size", "--json", tree], lambda out: json.dumps({k: v for k, v in json.loads(out).items()
                                                                              if k != "elapsed"}, sort_keys=True)),
            ("pack", [*exe, "pack", "-o", tar, tree], lambda out: _digest(tar)),
        ):
            warm, cold, same = interleaved(cmd, cmd, env, cold_env, max(2, args.runs // 5), read)
            res[f"{name}_with_watch_s"] = summary(warm)
            res[f"{name}_without_watch_s"] = summary(cold)
            res[f"{name}_same_output"] = same
            log(f"{name}: {statistics.median(warm):.3f} s with watch, {statistics.median(cold):.3f} s without, same output: {same}")
        os.unlink(tar)

        # idle CPU
        time.sleep(2)
        c1, r1, _ = proc_facts(w.proc.pid)
        time.sleep(10)
        c2, r2, h2 = proc_facts(w.proc.pid)
        res["idle_cpu_share"] = (c2 - c1) / 10
        res["rss_idle_kb"], res["hwm_idle_kb"] = r2, h2
        log(f"idle CPU {100 * (c2 - c1) / 10:.2f}% of a core, RSS {r2 / 1024:.0f} MB (peak {h2 / 1024:.0f} MB)")

        # soak: edits for --soak seconds
        t_end = time.monotonic() + args.soak
        k = 0
        c_s, r_s, _ = proc_facts(w.proc.pid)
        samples = []
        while time.monotonic() < t_end:
            p = os.path.join(src, f".bench-watch-soak-{k % 50}.txt")
            with open(p, "w") as fh:
                fh.write(str(k))
            if k % 3 == 0:
                os.unlink(p)
            k += 1
            time.sleep(0.02)
            if k % 500 == 0:
                samples.append(proc_facts(w.proc.pid)[1])
        time.sleep(2)
        c_e, r_e, h_e = proc_facts(w.proc.pid)
        res["soak"] = {"seconds": args.soak, "edits": k, "rss_start_kb": r_s, "rss_end_kb": r_e, "hwm_kb": h_e,
                       "rss_samples_kb": samples, "cpu_s": c_e - c_s, "deltas": len(w.lines)}
        log(f"soak: {k} edits in {args.soak:.0f} s, RSS {r_s / 1024:.0f} -> {r_e / 1024:.0f} MB, CPU {c_e - c_s:.1f} s")
    finally:
        rc = w.stop()
        for f in Path(src).glob(".bench-watch-*"):
            f.unlink()
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    res["exit"] = rc
    res["machine"]["load_after"] = loadavg()  # type: ignore[index]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.write_text(render(res, tree))
    log(f"wrote {out}")
    return 0


def _digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render(r: dict, tree: str) -> str:
    def med(key: str) -> float:
        return r[key]["median"]  # type: ignore[no-any-return]

    def rng(key: str) -> str:
        return f"{r[key]['min']:.3f}–{r[key]['max']:.3f}"

    m = r["machine"]
    soak = r["soak"]
    installs = [("", "editable install (this machine's interpreter)")]
    if "user_diff_with_watch_s" in r:
        installs.append(("user_", "user install (venv + wheel)"))
    lines = [
        "# `ctxpack watch` (bench/bench_watch.py)", "",
        f"Tree: `{tree}` ({r.get('tree_params', 'bench/gen_tree.py')}, its .dockerignore): {r['dirs']:,} directories, "
        f"{r['node_modules_dirs']:,} of them under node_modules.  Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        f"load {' '.join(m['load_before'])} before, {' '.join(m['load_after'])} after (shared machine).  "
        f"Commands: `{r['exe']}` (the console script), subprocesses, interpreter start-up included; medians (min–max).", "",
        "| what | result |", "|---|---|",
        f"| start-up (first scan + fingerprint) | {r['startup_s']:.2f} s |",
        f"| inotify watches (/proc/PID/fdinfo) | {r['watches']:,} (the context's readable directories + 1 private); "
        f"none of the {r['node_modules_dirs']:,} under node_modules |",
        f"| write → visible to `ctxpack diff` | {med('write_to_diff_s'):.3f} s ({rng('write_to_diff_s')}); "
        f"without the watcher {med('write_to_diff_without_watch_s'):.3f} s |",
        f"| write → settled delta printed (a lone save; the client's barrier may settle it first) | {med('write_to_settled_delta_s'):.3f} s ({rng('write_to_settled_delta_s')}) |",
        f"| write → visible, the server's share (in-process `quick_diff` right after the write) | "
        f"{1000 * med('write_to_quick_diff_in_process_s'):.1f} ms ({rng('write_to_quick_diff_in_process_s')} s) |",
        *[row for key, label in installs for row in (
            *[f"| {label}: `{c}` with / without watcher | {1000 * med(key + c + '_with_watch_s'):.1f} ms / "
              f"{1000 * med(key + c + '_without_watch_s'):.1f} ms = "
              f"**{med(key + c + '_with_watch_s') / med(key + c + '_without_watch_s'):.3f}×** (target ≤ 0.10×: "
              f"{'met' if med(key + c + '_with_watch_s') / med(key + c + '_without_watch_s') <= 0.10 else 'MISSED'}; "
              f"same output: {r[key + c + '_same_output']}); `python -c pass` alone is "
              f"{med(key + 'python_startup_s') / med(key + c + '_without_watch_s'):.3f}× of without, "
              f"`ctxpack --version` {med(key + 'version_startup_s') / med(key + c + '_without_watch_s'):.3f}× |"
              for c in ("diff", "fingerprint")],
            *[f"| {label}: `{c}` imports with / without watcher (`-X importtime`, least of 3 runs, `site` included) | "
              f"{r[key + c + '_imports']['with'][0]} modules, {r[key + c + '_imports']['with'][1]:.1f} ms (click loaded: "
              f"{r[key + c + '_imports']['with'][3]}; walker/matcher/index: {r[key + c + '_imports']['with'][2]}) / "
              f"{r[key + c + '_imports']['without'][0]} modules, {r[key + c + '_imports']['without'][1]:.0f} ms |"
              for c in ("diff", "fingerprint")],
            f"| {label}: `python -c pass` / `ctxpack --version` | {1000 * med(key + 'python_startup_s'):.1f} ms / "
            f"{1000 * med(key + 'version_startup_s'):.1f} ms |",
        )],
        *[f"| `{c}` with / without watcher | {med(c + '_with_watch_s'):.3f} s / {med(c + '_without_watch_s'):.3f} s "
          f"(same output: {r[c + '_same_output']}) |" for c, _ in (("ls", 0), ("size", 0), ("pack", 0))],
        f"| in-process client call (socket + barrier), no interpreter start-up | fingerprint "
        f"{1000 * med('channel_fingerprint_s'):.1f} ms, diff {1000 * med('channel_diff_s'):.1f} ms; reading the same "
        f"answer from a state file {1000 * med('state_file_read_s'):.2f} ms (but a file cannot hold a change the "
        "watcher has not applied yet) |",
        f"| the same in-process without the watcher (library, warm index) | fingerprint "
        f"{1000 * med('library_fingerprint_s'):.0f} ms, diff {1000 * med('library_diff_s'):.0f} ms → with the watcher "
        f"{med('channel_fingerprint_s') / med('library_fingerprint_s'):.3f}× / {med('channel_diff_s') / med('library_diff_s'):.3f}× |",
        f"| watcher RSS after start / idle (peak) | {r['rss_start_kb'] / 1024:.0f} MB / {r['rss_idle_kb'] / 1024:.0f} MB "
        f"({r['hwm_idle_kb'] / 1024:.0f} MB) |",
        f"| watcher CPU idle (10 s) | {100 * r['idle_cpu_share']:.2f}% of a core |",
        f"| soak: {soak['edits']:,} edits in {soak['seconds']:.0f} s | RSS {soak['rss_start_kb'] / 1024:.0f} → "
        f"{soak['rss_end_kb'] / 1024:.0f} MB, {soak['cpu_s']:.1f} s CPU, {soak['deltas']} deltas |",
        "",
        "The two installs.  *Editable*: `" + r["exe"] + "`, this machine's interpreter with the editable install's "
        "import hook and the sandbox's own `.pth` hooks (certifi for the egress CA), which run at every start-up: "
        "`python -c pass` above is mostly them, and no user has them.  *User*: "
        + (r.get("user_install") or f"not measured ({r.get('user_install_error', '--no-user-install')})") + ".  "
        "An answered `diff`/`fingerprint` is the console script's fast path (`ctxpack.watchlink.run`): the "
        "interpreter, the installed script (`bin/ctxpack`: it imports `ctxpack/__init__` and `ctxpack.watchlink` only, "
        "and ends with `os._exit` once the answer is written), the socket exchange with the watcher's barrier and the "
        "directory-mtime checks; click is not imported.  Without the watcher: click, the "
        "CLI, the context, the walk of the tree and the index.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
