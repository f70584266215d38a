#!/usr/bin/env python3
"""Benchmark ``ctxpack lint`` against ``ctxpack ls --excluded`` on the same tree.

    python bench/bench_lint.py                 # the ~100k-file tree, 5 runs each
    python bench/bench_lint.py --reps 9 --root /data/trees

Target (issue 10/11): lint costs at most 1.2x ``ls --excluded``, which walks
the same context once and prints every entry with its deciding rule.  lint
walks it once too (linter/view.py) and runs its checks over that walk.

On the tree of ``bench/gen_tree.py`` (generated on first use) with the
ignore-file variants of ``bench/set_ignore.py`` (passed as ``--ignore-file``,
so the tree itself is not touched): ``none`` (full context), ``typical``,
``node_modules``.  Both commands run as ``python -m ctxpack.cli`` with this
checkout on ``PYTHONPATH`` (Python start-up included in both), output to
/dev/null; one warm-up each, then ``--reps`` runs interleaved so that machine
noise hits both alike.  Wall time and CPU time (user + system, from the
children's rusage) are both recorded: on a shared machine the CPU time is the
steadier measure of what each command costs.  Medians go to stdout and
``bench/results/lint.md``, raw numbers to ``bench/results/lint.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchutil import compile_ctxpack, cpu_model, loadavg, log, summary  # noqa: E402

import gen_tree  # noqa: E402
from set_ignore import VARIANTS  # noqa: E402

DEFAULT_ROOT = os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench")


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
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="ctxpack-bench-lint-") as tmp:
        for variant, text in VARIANTS.items():
            extra: list[str] = []
            if text is not None:
                path = os.path.join(tmp, f"dockerignore.{variant}")
                with open(path, "w") as f:
                    f.write(text)
                extra = ["--ignore-file", path]
            elif os.path.exists(os.path.join(tree, ".dockerignore")):
                extra = ["--ignore-file", os.devnull]
            ls = cli + ["ls", "--excluded", *extra, tree]
            lint = cli + ["lint", *extra, tree]
            run(ls, env), run(lint, env)  # warm-up
            times: dict[str, list[float]] = {"ls": [], "lint": [], "ls_cpu": [], "lint_cpu": []}
            for _ in range(args.reps):
                for name, argv in (("ls", ls), ("lint", lint)):
                    wall, cpu = run(argv, env)
                    times[name].append(wall)
                    times[name + "_cpu"].append(cpu)
            s = {k: summary(v) for k, v in times.items()}
            results[variant] = {**s, "ratio": s["lint"]["median"] / s["ls"]["median"],
                                "cpu_ratio": s["lint_cpu"]["median"] / s["ls_cpu"]["median"]}
            log(f"{variant}: ls --excluded {s['ls']['median']:.2f}s ({s['ls_cpu']['median']:.2f}s CPU), "
                f"lint {s['lint']['median']:.2f}s ({s['lint_cpu']['median']:.2f}s CPU)")
    lines = [
        "# `ctxpack lint` vs `ctxpack ls --excluded`",
        "",
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} cores; "
        f"load average {' '.join(loadavg())} at the end; tree {tree}; {args.reps} runs each, interleaved, "
        "Python start-up included; medians (min–max); CPU = user + system time of the process.",
        "",
        "| ignore file | `ls --excluded` wall | `lint` wall | ratio | `ls --excluded` CPU | `lint` CPU | ratio (target ≤ 1.2×) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, r in results.items():
        cells = []
        for key in ("ls", "lint"):
            x = r[key]
            cells.append(f"{x['median']:.2f} s ({x['min']:.2f}–{x['max']:.2f})")  # type: ignore[index]
        cells.append(f"{r['ratio']:.2f}×")
        for key in ("ls_cpu", "lint_cpu"):
            x = r[key]
            cells.append(f"{x['median']:.2f} s ({x['min']:.2f}–{x['max']:.2f})")  # type: ignore[index]
        cells.append(f"{r['cpu_ratio']:.2f}×")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    suffix = "-small" if args.small else ""
    with open(os.path.join(HERE, "results", f"lint{suffix}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(HERE, "results", f"lint{suffix}.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
