#!/usr/bin/env python3
"""Run ``ctxpack lint`` over every file of the shared corpus (``../shared/corpus``).

    python scripts/lint_corpus.py [--out /tmp/lint-corpus.json]

Each ignore file gets the scratch tree ``tests/corpus_trees.py`` generates for
it (paths that hit its patterns at depth 0, 1 and 2, dotfiles, what ``!``
rules re-include), with the corpus's Dockerfile of the same repository below
the ignore file's directory when there is one (placed at its repository
path and passed with ``-f``; a per-Dockerfile ignore file gets its own
Dockerfile), else ``FROM scratch / COPY . /ctx``.  Each Dockerfile no ignore
file pairs with gets a tree of its literal COPY/ADD sources.  Prints counts
by kind and severity; ``--out`` writes every finding (for judging by hand).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from corpus_trees import CORPUS_ROOT, DOCKERFILE_TEXT, corpus_files, plan_tree  # noqa: E402

from ctxpack.dockerfile.analysis import analyze  # noqa: E402
from ctxpack.errors import CtxpackError  # noqa: E402
from ctxpack.linter import lint  # noqa: E402


def dockerfiles() -> dict[str, list[tuple[str, bytes, str]]]:
    """repo -> [(path in the repo, content, corpus name)]."""
    out: dict[str, list[tuple[str, bytes, str]]] = collections.defaultdict(list)
    for line in (CORPUS_ROOT / "SOURCES.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 3 and cols[0].startswith("dockerfiles/"):
            out[cols[1]].append((cols[2], (CORPUS_ROOT / cols[0]).read_bytes(), cols[0]))
    return out


def repo_of(name: str) -> str:
    owner, repo = name.split("__")[:2]
    return f"{owner}/{repo}"


def run(root: Path, dockerfile: str | None, label: str, results: list[dict[str, object]]) -> None:
    try:
        report = lint(root, dockerfile=dockerfile)
    except CtxpackError as e:
        results.append({"case": label, "error": str(e), "findings": []})
        return
    results.append({"case": label, "findings": [f.to_json() for f in report.findings]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lint-corpus.json")
    args = ap.parse_args()
    dfs = dockerfiles()
    used: set[str] = set()
    results: list[dict[str, object]] = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ctxpack-lint-corpus-") as tmp:
        base = Path(tmp)
        for n, c in enumerate(corpus_files()):
            repo = repo_of(c.name)
            ctx_dir = c.repo_path.rpartition("/")[0]
            pairs: list[tuple[str, bytes]] = []
            if c.per_dockerfile:
                rel = c.dockerfile[len(ctx_dir) + 1:] if ctx_dir else c.dockerfile
                match = [(p, d, name) for p, d, name in dfs.get(repo, []) if p == c.dockerfile]
                pairs.append((rel, match[0][1] if match else DOCKERFILE_TEXT))
                used.update(name for _, _, name in match)
            else:
                for p, d, name in dfs.get(repo, []):
                    if not ctx_dir or p.startswith(ctx_dir + "/"):
                        pairs.append((p[len(ctx_dir) + 1:] if ctx_dir else p, d))
                        used.add(name)
            if not pairs:
                pairs.append(("Dockerfile", DOCKERFILE_TEXT))
            for k, (rel, text) in enumerate(pairs):
                ignore_name = (rel + ".dockerignore") if c.per_dockerfile else ".dockerignore"
                plan = plan_tree(c.data, reserved=(rel, ignore_name))
                root = plan.create(base / f"{n}-{k}", {rel: text, ignore_name: c.data})
                os.chdir(root)
                run(root, rel if rel != "Dockerfile" else None, f"{c.name} + {rel}", results)
                os.chdir(cwd)
        for repo, items in dfs.items():
            for p, text, name in items:
                if name in used:
                    continue
                root = base / ("df-" + name.replace("/", "_"))
                root.mkdir(parents=True)
                (root / "Dockerfile").write_bytes(text)
                try:
                    an = analyze(text, source=name)
                    for src in an.sources:
                        if not any(ch in src.pattern for ch in "*?[\\") and src.pattern not in (".", ""):
                            target = root / src.pattern
                            target.parent.mkdir(parents=True, exist_ok=True)
                            if not target.exists():
                                target.write_bytes(b"x\n")
                except CtxpackError:
                    pass
                (root / "README.md").write_bytes(b"readme\n")
                run(root, None, name, results)
    kinds: collections.Counter[tuple[str, str]] = collections.Counter()
    for r in results:
        for f in r["findings"]:  # type: ignore[union-attr]
            kinds[(f["kind"], f["severity"])] += 1  # type: ignore[index]
    print(f"{len(results)} lint runs, {sum(1 for r in results if 'error' in r)} refused as input errors")
    for (kind, sev), count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{count:6d}  {kind:22s} {sev}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
