"""A deliberately naive model of Docker's walkers, for property tests.

No optimisations: every rule evaluated at every path (per the semantics
note §4.3 pseudo-code), BuildKit descending into *every* excluded directory
when an exception has a wildcard (§4.5), directories emitted per §4.6.  The
real walker (DirPlan liveness, smarter pruning) must give the same result.
"""

from __future__ import annotations

import os

from ctxpack.ignore.reader import parse_ignore
from ctxpack.ignore.pattern import compile_pattern


def reference_listing(root: str, ignore: bytes, dialect: str) -> list[str]:
    pats = [compile_pattern(r.pattern) for r in parse_ignore(ignore)]
    if dialect == "classic":
        # the CLI re-adds Dockerfile / .dockerignore: ignore that here (tests
        # compare without them)
        pass
    exc_texts = [p.text for p in pats if p.exception]
    if dialect == "classic":
        prefixes = [t + "/" for t in exc_texts]
        all_dirs = False
    else:
        stripped = []
        only = True
        for t in exc_texts:
            s = t[:-3] if t.endswith("/**") else t
            s = s[:-2] if s.endswith("/*") else s
            only = only and not any(c in s for c in "*?[]^\\")
            stripped.append(s + "/")
        prefixes, all_dirs = stripped, bool(exc_texts) and not only

    def decide(path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        excluded = False
        rec = []
        for i, p in enumerate(pats):
            hit = parent[i] if parent is not None else False
            if not hit:
                if p.exception != excluded:
                    rec.append(False)
                    continue
                hit = p.matches(path)
            rec.append(hit)
            if hit:
                excluded = not p.exception
        return excluded, rec

    out: list[str] = []

    def walk(abs_dir: str, rel_dir: str, parent: list[bool] | None, held: list[str]) -> None:
        names = sorted(os.listdir(abs_dir), key=lambda n: n.encode("utf-8", "surrogateescape"))
        for n in names:
            rel = f"{rel_dir}/{n}" if rel_dir else n
            absp = os.path.join(abs_dir, n)
            is_dir = os.path.isdir(absp) and not os.path.islink(absp)
            excluded, rec = decide(rel, parent)
            if excluded:
                if is_dir and exc_texts and (all_dirs or any(p.startswith(rel + "/") for p in prefixes)):
                    walk(absp, rel, rec, held + [rel])
                continue
            if dialect == "buildkit":
                for h in held:
                    if h not in out:
                        out.append(h)
            held = []
            out.append(rel)
            if is_dir:
                walk(absp, rel, rec, [])

    walk(root, "", None, [])
    return out
