#!/usr/bin/env python3
"""Benchmark ``ctxpack lint`` and ``ctxpack size`` against ``ctxpack ls --excluded`` on the same tree.

    python bench/bench_lint.py                 # the ~100k-file tree, 5 runs each
    python bench/bench_lint.py --reps 9 --root /data/trees
    python bench/bench_lint.py --small --reps 1   # a quick trial on the ~10k-file tree

Target (issues 10/11, 17): lint and size each cost at most 1.2x ``ls
--excluded``, which walks the same context once and prints every entry it
leaves out with its deciding rule.  lint walks it once too
(linter/view.py) and runs its checks over that walk; size walks it once
(audit.measure_context: in a forked walker process where it can, summed up
in the parent meanwhile) and, for each directory the rules prune, also sizes what is
below it (``ls --excluded`` prints a pruned directory as one line without
reading it; size must count the files and bytes it keeps out).

How they are made cheap: lint's walk runs in a forked process (the view's
columns come in chunks; the census, the Dockerfile analysis, the secret
scan and the heavy directories' sums are done here meanwhile); size's walk
too, and once its walk is done the walker takes part of the sizing of the
pruned directories (audit._Share).  What the pruned directories hold is
read in full by size, and by nothing else here: the ``du`` column times
``du -s -b -l`` of exactly those directories (GNU du, C: the kernel's part
of that reading), a floor for size's extra work that no Python can go
under; with pruning rules size cannot cost less than about
``(ls + du) / 2`` on two cores even if every bit of it overlapped.  The
``floor`` columns make that exact: ``start-up`` is ``ls --excluded`` of an
empty context (Python start-up and imports: run before the fork, so on one
core), ``regular_usage`` times ctxpack.fs.regular_usage (size's own loop)
over the pruned directories in one process (its CPU less that of a
process that only imports ctxpack.fs is what size's sizing costs), and the floor is
``start-up + (ls CPU - start-up CPU + du CPU) / 2``: the wall time of a
size that walked exactly as ``ls`` does, sized as cheaply as GNU du and
kept both cores busy from the fork to the end; "floor ratio" is that over
``ls --excluded``'s wall time.  A floor ratio above 1.2 means the target
cannot be met on this machine by any split of the work.

On the tree of ``bench/gen_tree.py`` (generated on first use) with the
ignore-file variants of ``bench/set_ignore.py`` (passed as ``--ignore-file``,
so the tree itself is not touched): ``none`` (full context: all three walk
exactly the same entries), ``typical``, ``node_modules``.  All commands run
as ``python -m ctxpack.cli`` with this checkout on ``PYTHONPATH`` (Python
start-up included), output to /dev/null; one warm-up each, then ``--reps``
rounds, each running the three commands once in an order rotated from round
to round, so that machine noise hits all alike.  Wall time and CPU time
(user + system, from the children's rusage) are both recorded; a ratio is
the median over rounds of (command / ``ls --excluded`` in the same round).
Results go to stdout and ``bench/results/lint.md`` (``lint-small.md`` with
``--small``), raw numbers to the ``.json`` next to it; the table says for
each ratio whether the 1.2x target is met.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)  # compile_ctxpack byte-compiles this checkout, the one measured

from benchutil import compile_ctxpack, cpu_model, loadavg, log, summary  # noqa: E402

import gen_tree  # noqa: E402
from set_ignore import VARIANTS  # noqa: E402

DEFAULT_ROOT = os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench")
TARGET = 1.2
COMMANDS = ("ls", "lint", "size")
# size's own sizing loop over the pruned directories (argv), in one process.
USAGE = "import sys\nfrom ctxpack.fs import regular_usage\nfor top in sys.argv[1:]:\n    regular_usage(top)\n"


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1):  # lint exits 1 on error-level findings
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def pruned_dirs(tree: str, ignore_file: str) -> list[str]:
    """The directories the rules prune (what size reads and ls does not), absolute."""
    from ctxpack.context import open_context
    from ctxpack.walker import EntryKind, list_entries

    ctx = open_context(tree, ignore_file=ignore_file)
    return [os.path.join(ctx.root, e.path) for e in list_entries(ctx, excluded=True)
            if not e.included and e.kind == EntryKind.DIR]


def verdict(ratio: float) -> str:
    return "met" if ratio <= TARGET else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="the ~10k-file tree")
    args = ap.parse_args()
    tree = os.path.join(args.root, "tree-small" if args.small else "tree-full")
    gen_tree.main([tree] + (["--small"] if args.small else []))
    compile_ctxpack()
    env = dict(os.environ, PYTHONPATH=REPO)
    cli = [sys.executable, "-m", "ctxpack.cli"]
    load_before = loadavg()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="ctxpack-bench-lint-") as tmp:
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        for variant, text in VARIANTS.items():
            extra: list[str] = []
            if text is not None:
                path = os.path.join(tmp, f"dockerignore.{variant}")
                with open(path, "w") as f:
                    f.write(text)
                extra = ["--ignore-file", path]
            else:
                extra = ["--ignore-file", os.devnull]  # the full context, whatever .dockerignore the tree has
            argvs = {"ls": cli + ["ls", "--excluded", *extra, tree], "lint": cli + ["lint", *extra, tree],
                     "size": cli + ["size", "--json", *extra, tree]}
            pruned = pruned_dirs(tree, extra[1])
            commands: tuple[str, ...] = COMMANDS
            if pruned:
                argvs["du"] = ["du", "-s", "-b", "-l", "-c", *pruned]
                argvs["start"] = cli + ["ls", "--excluded", empty]
                argvs["pyusage"] = [sys.executable, "-c", USAGE, *pruned]
                argvs["pyimport"] = [sys.executable, "-c", "import ctxpack.fs"]  # pyusage's start-up
                commands += ("du", "start", "pyusage", "pyimport")
            for name in commands:
                run(argvs[name], env)  # warm-up
            times: dict[str, list[float]] = {f"{c}{k}": [] for c in commands for k in ("", "_cpu")}
            for r in range(args.reps):
                order = commands[r % len(commands):] + commands[:r % len(commands)]
                for name in order:
                    wall, cpu = run(argvs[name], env)
                    times[name].append(wall)
                    times[name + "_cpu"].append(cpu)
            res: dict[str, object] = {k: summary(v) for k, v in times.items()}
            for name in ("lint", "size"):
                for k in ("", "_cpu"):
                    per_round = [a / b for a, b in zip(times[name + k], times["ls" + k])]
                    res[f"{name}{k}_ratio"] = statistics.median(per_round)
            results[variant] = res
            res["pruned_dirs"] = len(pruned)
            if pruned:
                start, start_cpu = res["start"]["median"], res["start_cpu"]["median"]  # type: ignore[index]
                ls_cpu, du_cpu = res["ls_cpu"]["median"], res["du_cpu"]["median"]  # type: ignore[index]
                res["floor"] = start + (ls_cpu - start_cpu + du_cpu) / 2
                res["floor_ratio"] = res["floor"] / res["ls"]["median"]  # type: ignore[index, operator]
            log(f"{variant}: " + ", ".join(
                f"{n} {res[n]['median']:.2f}s ({res[n + '_cpu']['median']:.2f}s CPU)"  # type: ignore[index]
                for n in commands))
    load_after = loadavg()

    def cell(x: object) -> str:
        return f"{x['median']:.2f} s ({x['min']:.2f}–{x['max']:.2f})"  # type: ignore[index]

    lines = [
        "# `ctxpack lint` and `ctxpack size` vs `ctxpack ls --excluded`",
        "",
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} cores; "
        f"load average {' '.join(load_before)} at the start, {' '.join(load_after)} at the end; tree {tree}; "
        f"{args.reps} round{'s' if args.reps != 1 else ''}, each command once per round in a rotated order, Python start-up included; "
        "times: medians (min–max); ratio: median over rounds of (command / `ls --excluded` in the same round); "
        "CPU = user + system time of the process.",
        f"Target (issue 17): lint and size each at most {TARGET}× `ls --excluded`.",
        "",
        "| ignore file | `ls --excluded` | `lint` | lint ratio | `size --json` | size ratio | "
        "CPU: `ls --excluded` | `lint` | `size` | lint ratio | size ratio | `du` of the pruned dirs (wall; CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors = [
        "",
        "The floor for `size` with pruning rules (see bench/bench_lint.py's docstring): CPU medians.",
        "",
        "| ignore file | start-up (wall; CPU) | `regular_usage` of the pruned dirs (CPU; less its start-up) | "
        "`du` CPU | floor (wall) | floor ratio |",
        "|---|---|---|---|---|---|",
    ]
    for variant, r in results.items():
        cells = [cell(r["ls"]), cell(r["lint"]), f"{r['lint_ratio']:.2f}× ({verdict(r['lint_ratio'])})",  # type: ignore[arg-type]
                 cell(r["size"]), f"{r['size_ratio']:.2f}× ({verdict(r['size_ratio'])})",  # type: ignore[arg-type]
                 cell(r["ls_cpu"]), cell(r["lint_cpu"]), cell(r["size_cpu"]),
                 f"{r['lint_cpu_ratio']:.2f}×", f"{r['size_cpu_ratio']:.2f}×",
                 f"{r['pruned_dirs']} dirs: {cell(r['du'])}; {cell(r['du_cpu'])}" if "du" in r else "(none pruned)"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        if "floor" in r:
            floors.append(f"| {variant} | {cell(r['start'])}; {cell(r['start_cpu'])} | {cell(r['pyusage_cpu'])}; "
                          f"{r['pyusage_cpu']['median'] - r['pyimport_cpu']['median']:.2f} s | "  # type: ignore[index]
                          f"{cell(r['du_cpu'])} | {r['floor']:.2f} s | {r['floor_ratio']:.2f}× |")
    lines += floors
    lines += [
        "",
        "With `none` the three commands walk exactly the same entries.  With `typical` and `node_modules` the",
        "rules prune directories: `ls --excluded` prints each as one line without reading it, while `size`",
        "also counts the files and bytes below it (what the rules keep out), so it reads more of the tree:",
        "the `du` column is the kernel's part of that reading alone (GNU du over exactly those directories).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    suffix = "-small" if args.small else ""
    with open(os.path.join(HERE, "results", f"lint{suffix}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(HERE, "results", f"lint{suffix}.json"), "w") as f:
        json.dump({"tree": tree, "reps": args.reps, "load_before": load_before, "load_after": load_after,
                   "target": TARGET, "variants": results}, f, indent=2)


if __name__ == "__main__":
    main()
