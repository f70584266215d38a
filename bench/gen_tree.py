#!/usr/bin/env python3
"""Generate a large, reproducible build-context tree for benchmarks.

    python bench/gen_tree.py DIR                  # ~100k files, ~1.4 GB
    python bench/gen_tree.py DIR --small          # ~10k files, ~0.1 GB (quick runs)
    python bench/gen_tree.py DIR --files 50000    # scale the file count
    python bench/gen_tree.py DIR --no-big         # without the two big binaries
    python bench/gen_tree.py DIR --nm-scale 10    # node_modules 10x bigger
    python bench/gen_tree.py DIR --ignore typical # also switch .dockerignore

What it makes (file shares of ``--files N``)::

    node_modules/                 ~50%  nested packages (lib/, dist/, types/,
                                        nested node_modules/ up to 4 deep),
                                        .bin/ symlinks, .package-lock.json
    packages/<ws>/node_modules/   ~13%  a monorepo's per-workspace node_modules
    packages/<ws>/src, src/, tests/, docs/
                                  ~16%  .py/.ts/.tsx/.go/.md, __pycache__/*.pyc
    .git/                          ~8%  HEAD, config, index, refs, hooks,
                                        objects/xx/<38 hex> loose objects,
                                        objects/pack/pack-<40 hex>.{pack,idx,rev}
    logs/, **/*.log                ~1%  at several depths, a few large ones
    dist/, build/, target/        ~11%  bundles + maps, .o files, rlibs, binaries
    assets/model-{a,b}.bin              2 x 256 MiB incompressible (seeded PRNG)
    Dockerfile                          FROM scratch / COPY . /app

Everything is derived from ``--seed`` (default 1) with :mod:`random`: the same
parameters give the same names, sizes and contents (modification times are
whatever the file system records).  Small files take slices of two pools (a
code-like text pool and a random-bytes pool); large files are streamed from
a PRNG seeded by their path, in 8 MiB blocks.

Idempotent: the tree root gets ``.bench-tree.json`` (parameters + stats); if
it exists with the same parameters nothing is written.  With different
parameters, or after an interrupted run (``.bench-tree.partial``), the
directory is wiped and regenerated.  A non-empty directory that was not made
by this script is refused unless ``--force``.

Ignore-file variants (see ``bench/set_ignore.py``): none is written by
default (the "full context" case); ``--ignore typical|node_modules|none``
switches ``DIR/.dockerignore``.  The variants are also written as
``DIR/.dockerignore.typical`` and ``DIR/.dockerignore.node_modules`` for use
with ``ctxpack ls --ignore-file``.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from set_ignore import VARIANTS, set_ignore  # noqa: E402

GEN_VERSION = 3
MARKER = ".bench-tree.json"
PARTIAL = ".bench-tree.partial"
MiB = 1 << 20
DEFAULT_FILES = 100_000
SMALL_FILES = 10_000
DEFAULT_BIG_MIB = 256
SMALL_BIG_MIB = 16
BLOCK = 8 * MiB

# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

_SYLL = (
    "ab ac ad al am an ar as at ba be bi bo bu ca ce ch ci co cu da de di do du "
    "el em en er es et ex fa fe fi fo fu ga ge gi go gu ha he hi ho hu id il im "
    "in io ir is it ja jo ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no "
    "nu ob ol om on or os pa pe pi po pu qu ra re ri ro ru sa se si so su ta te "
    "ti to tu ul um un ur us va ve vi vo xa xi ya yo za ze zi zo"
).split()
_WORDS = (
    "core util utils parse parser lodash react redux babel webpack loader plugin "
    "preset types eslint config string array object stream buffer path fs glob "
    "minimatch semver chalk debug ms event emitter http https url query json "
    "yaml xml html css style color ansi regex escape encode decode date time "
    "async promise queue cache store state hook router server client socket "
    "test jest mocha chai sinon assert mock spy lint format print pretty log "
    "logger level trace error fetch request response cookie session auth token "
    "crypto hash random uuid id map set list tree graph node walk visit ast "
    "compile runtime polyfill shim compat legacy browser env dotenv cli args "
    "yargs commander prompt spinner progress bar table text wrap strip trim pad"
).split()
_CODE_TOKENS = (
    "function const let var return if else for while switch case break continue "
    "import export from default class extends new this super async await yield "
    "try catch finally throw typeof instanceof null undefined true false def "
    "self None True False lambda pass raise with as elif package func struct "
    "interface type map chan go defer range err nil string int bool byte := = "
    "== === != !== && || ( ) { } [ ] ; , . => + - * / % < > <= >= ! ? : "
    "value options result data config args ctx req res callback handler index "
    "length push pop slice splice keys values entries assign prototype module "
    "exports require console.log JSON.stringify Object.keys Array.isArray "
).split()


def _name(rng: random.Random) -> str:
    """A package-like name: lodash-core, ab-parse, ..."""
    r = rng.random()
    if r < 0.55:
        return "-".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2)))
    if r < 0.85:
        return "".join(rng.choice(_SYLL) for _ in range(rng.randint(2, 4))) + (
            "-" + rng.choice(_WORDS) if rng.random() < 0.5 else "")
    return rng.choice(_WORDS) + "." + rng.choice(_WORDS)


def _ident(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_WORDS) + "_" + rng.choice(_WORDS)
    return "".join(rng.choice(_SYLL) for _ in range(rng.randint(2, 3)))


def _size(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(rng.lognormvariate(0.0, sigma) * median)))


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------


class Writer:
    """Writes files below ``root``; small contents are pool slices."""

    def __init__(self, root: str, seed: int):
        self.root = root
        self.seed = seed
        self._dirs: set[str] = {""}
        rng = random.Random(f"{seed}:pools")
        # ~4 MiB of code-like text: compressible, realistic enough.
        toks = rng.choices(_CODE_TOKENS, k=700_000)
        for i in range(0, len(toks), 12):
            toks[i] += "\n" if rng.random() < 0.7 else "\n    "
        self.text_pool = " ".join(toks).encode("ascii")
        self.bin_pool = rng.randbytes(16 * MiB)

    def _path(self, rel: str) -> str:
        parent = rel.rpartition("/")[0]
        if parent not in self._dirs:
            os.makedirs(os.path.join(self.root, parent), exist_ok=True)
            p = parent
            while p and p not in self._dirs:
                self._dirs.add(p)
                p = p.rpartition("/")[0]
        return os.path.join(self.root, rel)

    def mkdir(self, rel: str) -> None:
        self._path(rel + "/x")

    def bytes(self, rel: str, data: bytes) -> None:
        with open(self._path(rel), "wb", buffering=0) as fh:
            fh.write(data)

    def _slice(self, pool: bytes, rng: random.Random, size: int) -> bytes:
        n = len(pool)
        if size <= n:
            off = rng.randrange(n - size + 1)
            return pool[off:off + size]
        reps = -(-size // n)
        return (pool * reps)[:size]

    def text(self, rel: str, size: int, rng: random.Random, head: str = "") -> None:
        hb = head.encode()
        if size <= len(hb):
            self.bytes(rel, hb)
            return
        if size > 2 * len(self.text_pool):
            self.big_text(rel, size, rng, hb)
            return
        self.bytes(rel, hb + self._slice(self.text_pool, rng, size - len(hb)))

    def big_text(self, rel: str, size: int, rng: random.Random, head: bytes = b"") -> None:
        with open(self._path(rel), "wb") as fh:
            fh.write(head)
            left = size - len(head)
            while left > 0:
                n = min(left, 1 * MiB)
                fh.write(self._slice(self.text_pool, rng, n))
                left -= n

    def binary(self, rel: str, size: int, rng: random.Random) -> None:
        if size > len(self.bin_pool) // 2:
            self.random_stream(rel, size)
        else:
            self.bytes(rel, self._slice(self.bin_pool, rng, size))

    def random_stream(self, rel: str, size: int) -> None:
        """Incompressible bytes from a PRNG seeded by (seed, path), in blocks."""
        prng = random.Random(f"{self.seed}:stream:{rel}")
        with open(self._path(rel), "wb", buffering=0) as fh:
            left = size
            while left > 0:
                n = min(left, BLOCK)
                fh.write(prng.randbytes(n))
                left -= n

    def symlink(self, rel: str, target: str) -> None:
        os.symlink(target, self._path(rel))


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _random_dirs(rng: random.Random, base: str, n: int, maxdepth: int, names=None) -> list[str]:
    """``n`` directories forming a random tree below ``base``."""
    dirs = [base]
    depth = {base: 0}
    children: dict[str, set[str]] = {base: set()}
    while len(dirs) < n + 1:
        parent = rng.choice(dirs)
        if depth[parent] >= maxdepth:
            continue
        name = rng.choice(names) if names else _ident(rng)
        if name in children[parent]:
            continue
        children[parent].add(name)
        d = f"{parent}/{name}" if parent else name
        dirs.append(d)
        depth[d] = depth[parent] + 1
        children[d] = set()
    return dirs


_PKG_DIRS = ["", "", "", "lib", "lib", "lib", "dist", "dist", "src", "types", "esm",
             "lib/utils", "lib/internal", "dist/umd"]
_PKG_EXTS = [".js"] * 12 + [".d.ts"] * 3 + [".js.map"] * 2 + [".mjs", ".cjs", ".json", ".md", ".ts"]


def _package_json(name: str, rng: random.Random) -> str:
    deps = {_name(rng): f"^{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
            for _ in range(rng.randint(0, 6))}
    obj = {"name": name, "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}",
           "description": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))),
           "main": "lib/index.js", "license": rng.choice(["MIT", "ISC", "Apache-2.0", "BSD-3-Clause"]),
           "dependencies": deps}
    return json.dumps(obj, indent=2) + "\n"


class NodeModules:
    """Fills ``node_modules`` directories until a file budget is spent."""

    def __init__(self, w: Writer, rng: random.Random):
        self.w = w
        self.rng = rng
        self.bin_names: set[tuple[str, str]] = set()

    def fill(self, nm: str, budget: int, depth: int = 0, bins: bool = True) -> int:
        """Write packages into ``nm`` (a node_modules dir); return files written."""
        rng, w = self.rng, self.w
        used: set[str] = set()
        written = 0
        if depth == 0:
            w.text(f"{nm}/.package-lock.json", _size(rng, 40_000, 0.5, 2000, 400_000), rng,
                   '{\n  "lockfileVersion": 3,\n')
            written += 1
        while written < budget:
            name = _name(rng)
            if rng.random() < 0.12:
                name = "@" + rng.choice(_WORDS) + "/" + name
            if name in used:
                continue
            used.add(name)
            written += self.package(f"{nm}/{name}", name, budget - written, depth, bins)
        return written

    def package(self, pdir: str, name: str, budget: int, depth: int, bins: bool) -> int:
        rng, w = self.rng, self.w
        w.text(f"{pdir}/package.json", 0, rng, _package_json(name, rng))
        n = 1
        k = min(budget - n, max(1, int(rng.paretovariate(1.1) * 8)), 600)
        if rng.random() < 0.8 and n < budget:
            w.text(f"{pdir}/README.md", _size(rng, 3000, 1.0, 100, 80_000), rng, f"# {name}\n\n")
            n += 1
        if rng.random() < 0.7 and n < budget:
            w.text(f"{pdir}/LICENSE", 1070, rng, "MIT License\n\n")
            n += 1
        seen: set[str] = set()
        for _ in range(max(0, k - 2)):
            if n >= budget:
                break
            sub = rng.choice(_PKG_DIRS)
            ext = rng.choice(_PKG_EXTS)
            fname = ("index" if rng.random() < 0.1 else _ident(rng)) + ext
            rel = f"{pdir}/{sub}/{fname}" if sub else f"{pdir}/{fname}"
            if rel in seen:
                continue
            seen.add(rel)
            med = 4000 if ext == ".js.map" else 1400
            w.text(rel, _size(rng, med, 1.3, 0, 2 * MiB), rng, "'use strict';\n" if ext == ".js" else "")
            n += 1
        if bins and depth == 0 and rng.random() < 0.06 and n < budget:
            w.text(f"{pdir}/bin/cli.js", _size(rng, 2000, 0.8, 50, 50_000), rng, "#!/usr/bin/env node\n")
            n += 1
            nm = pdir[: -len(name) - 1]
            cmd = name.rpartition("/")[2]
            if (nm, cmd) not in self.bin_names:
                self.bin_names.add((nm, cmd))
                w.symlink(f"{nm}/.bin/{cmd}", f"../{name}/bin/cli.js")
                n += 1
        # Nested dependencies (version conflicts): deep, narrow trees.
        if depth < 4 and n < budget and rng.random() < 0.25 / (depth + 1):
            sub_budget = min(budget - n, rng.randint(3, 60))
            n += self.fill(f"{pdir}/node_modules", sub_budget, depth + 1, bins=False)
        return n


def gen_node_modules(w: Writer, seed: int, n_root: int, n_ws: int, workspaces: list[str]) -> None:
    nm = NodeModules(w, random.Random(f"{seed}:node_modules"))
    nm.fill("node_modules", n_root)
    per = max(1, n_ws // max(1, len(workspaces)))
    for ws in workspaces:
        nm.fill(f"packages/{ws}/node_modules", per)


def gen_git(w: Writer, seed: int, n: int, scale: float) -> None:
    rng = random.Random(f"{seed}:git")
    g = ".git"
    w.text(f"{g}/HEAD", 0, rng, "ref: refs/heads/main\n")
    w.text(f"{g}/config", 0, rng, "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
           "\tbare = false\n[remote \"origin\"]\n\turl = https://example.invalid/app.git\n"
           "\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n\tremote = origin\n")
    w.text(f"{g}/description", 0, rng, "Unnamed repository; edit this file 'description' to name the repository.\n")
    w.text(f"{g}/info/exclude", 0, rng, "# git ls-files --others --exclude-from=.git/info/exclude\n")
    w.binary(f"{g}/index", max(4096, int(n * 60)), rng)
    count = 5
    for hook in ("applypatch-msg", "commit-msg", "fsmonitor-watchman", "post-update", "pre-applypatch",
                 "pre-commit", "pre-merge-commit", "pre-push", "pre-rebase", "pre-receive",
                 "prepare-commit-msg", "push-to-checkout", "update"):
        w.text(f"{g}/hooks/{hook}.sample", _size(rng, 1500, 0.6, 200, 6000), rng, "#!/bin/sh\n")
        count += 1
    branches = ["main"] + [f"feature/{_ident(rng)}" for _ in range(max(2, n // 800))]
    refs = []
    for b in branches:
        sha = f"{rng.getrandbits(160):040x}"
        refs.append(f"{sha} refs/remotes/origin/{b}")
        w.text(f"{g}/refs/heads/{b}", 0, rng, sha + "\n")
        w.text(f"{g}/logs/refs/heads/{b}", _size(rng, 800, 1.0, 100, 50_000), rng)
        count += 2
    w.text(f"{g}/packed-refs", 0, rng, "# pack-refs with: peeled fully-peeled sorted\n" + "\n".join(refs) + "\n")
    w.text(f"{g}/logs/HEAD", _size(rng, 20_000, 0.5, 1000, 400_000), rng)
    w.text(f"{g}/ORIG_HEAD", 0, rng, f"{rng.getrandbits(160):040x}\n")
    w.text(f"{g}/FETCH_HEAD", 0, rng, f"{rng.getrandbits(160):040x}\t\tbranch 'main' of origin\n")
    count += 4
    for mib in (70, 20, 4):
        h = f"{rng.getrandbits(160):040x}"
        size = int(mib * MiB * scale)
        w.binary(f"{g}/objects/pack/pack-{h}.pack", size, rng)
        w.binary(f"{g}/objects/pack/pack-{h}.idx", max(1024, size // 40), rng)
        w.binary(f"{g}/objects/pack/pack-{h}.rev", max(64, size // 400), rng)
        count += 3
    w.mkdir(f"{g}/objects/info")
    w.text(f"{g}/objects/info/packs", 0, rng, "P pack.pack\n")
    count += 1
    seen = set()
    while count < n:
        h = f"{rng.getrandbits(160):040x}"
        if h in seen:
            continue
        seen.add(h)
        w.binary(f"{g}/objects/{h[:2]}/{h[2:]}", _size(rng, 600, 1.2, 30, 400_000), rng)
        count += 1


_SRC_EXTS = [".py"] * 4 + [".ts"] * 3 + [".tsx", ".go", ".go", ".js", ".json", ".yaml", ".sql", ".md"]


def gen_source(w: Writer, seed: int, n: int, workspaces: list[str]) -> None:
    rng = random.Random(f"{seed}:source")
    top = [
        "README.md", "package.json", "tsconfig.json", "pyproject.toml", "go.mod", "go.sum",
        "Makefile", ".editorconfig", ".gitignore", ".prettierrc", "LICENSE", "CHANGELOG.md",
    ]
    for f in top:
        w.text(f, _size(rng, 2500, 1.2, 40, 300_000), rng)
    count = len(top)
    areas = [  # (base, share of n, max depth, test style)
        ("src", 0.45, 5, False),
        ("tests", 0.18, 4, True),
        ("docs", 0.08, 3, False),
        ("scripts", 0.02, 1, False),
        ("assets/img", 0.02, 2, False),
    ]
    ws_share = 0.25
    for base, share, maxd, is_test in areas:
        target = int(n * share)
        dirs = _random_dirs(rng, base, max(1, target // 9), maxd)
        pyc_dirs: set[str] = set()
        made = 0
        while made < target:
            d = rng.choice(dirs)
            if base == "docs":
                ext = rng.choice([".md", ".md", ".md", ".rst", ".txt", ".svg"])
            elif base == "assets/img":
                ext = rng.choice([".png", ".jpg", ".svg", ".webp"])
            else:
                ext = rng.choice(_SRC_EXTS)
            stem = ("test_" if is_test and ext == ".py" else "") + _ident(rng)
            if is_test and ext in (".ts", ".tsx"):
                stem += ".test"
            rel = f"{d}/{stem}{ext}"
            if ext in (".png", ".jpg", ".webp"):
                w.binary(rel, _size(rng, 30_000, 1.2, 200, 3 * MiB), rng)
            else:
                w.text(rel, _size(rng, 3500, 1.1, 0, 1 * MiB), rng)
            made += 1
            if ext == ".py" and made < target:
                w.binary(f"{d}/__pycache__/{stem}.cpython-311.pyc", _size(rng, 3000, 1.0, 100, 500_000), rng)
                pyc_dirs.add(d)
                made += 1
        count += made
    # Monorepo workspaces: packages/<ws>/{package.json,src,test}.
    target = int(n * ws_share)
    per = max(2, target // max(1, len(workspaces)))
    for ws in workspaces:
        w.text(f"packages/{ws}/package.json", 0, rng, _package_json(f"@app/{ws}", rng))
        w.text(f"packages/{ws}/README.md", _size(rng, 2000, 1.0, 50, 40_000), rng, f"# {ws}\n")
        dirs = _random_dirs(rng, f"packages/{ws}/src", max(1, per // 8), 4)
        for _ in range(per - 2):
            ext = rng.choice([".ts", ".ts", ".tsx", ".js", ".json", ".css"])
            w.text(f"{rng.choice(dirs)}/{_ident(rng)}{ext}", _size(rng, 3000, 1.1, 0, 500_000), rng)
        count += per
    rest = n - count
    for _ in range(max(0, rest)):
        w.text(f"misc/{_ident(rng)}/{_ident(rng)}.txt", _size(rng, 1000, 1.0, 0, 100_000), rng)


def gen_logs(w: Writer, seed: int, n: int, scale: float) -> None:
    rng = random.Random(f"{seed}:logs")
    w.text("logs/keep/important.log", 4096, rng, "kept by an exception in the typical .dockerignore\n")
    w.big_text("logs/app.log", int(24 * MiB * scale), rng)
    for i in range(3):
        w.big_text(f"logs/archive/app-2024-0{i + 1}.log", int(10 * MiB * scale), rng)
    count = 5
    places = ["logs/{y}/{m:02d}/{d:02d}"] * 4 + ["logs/services/{s}", "tmp/test-output/{s}", "src/{s}",
              "packages/{s}", "tests/reports/{s}/{y}"] * 3 + ["."]
    while count < n:
        p = rng.choice(places).format(y=rng.choice([2023, 2024, 2025]), m=rng.randint(1, 12),
                                      d=rng.randint(1, 28), s=_ident(rng))
        name = rng.choice(["debug", "error", "npm-debug", "yarn-error", "access", "worker", _ident(rng)])
        rel = f"{name}-{rng.randint(0, 99999)}.log" if p == "." else f"{p}/{name}-{rng.randint(0, 999)}.log"
        w.text(rel, _size(rng, 20_000, 1.5, 0, 8 * MiB), rng, "2024-01-01T00:00:00Z INFO start\n")
        count += 1


def gen_artifacts(w: Writer, seed: int, n: int, scale: float) -> None:
    rng = random.Random(f"{seed}:artifacts")
    # dist/: bundles, source maps, css, html.
    nd = int(n * 0.2)
    w.text("dist/index.html", 3000, rng, "<!doctype html>\n")
    for i in range(3):
        w.text(f"dist/assets/vendor-{rng.getrandbits(32):08x}.js", int(6 * MiB * scale), rng)
        w.text(f"dist/assets/vendor-{rng.getrandbits(32):08x}.js.map", int(10 * MiB * scale), rng)
    made = 7
    dirs = _random_dirs(rng, "dist", max(1, nd // 20), 3)
    while made < nd:
        ext = rng.choice([".js", ".js", ".js.map", ".css", ".d.ts", ".woff2", ".svg"])
        rel = f"{rng.choice(dirs)}/{_ident(rng)}-{rng.getrandbits(32):08x}{ext}"
        if ext == ".woff2":
            w.binary(rel, _size(rng, 40_000, 0.6, 1000, 500_000), rng)
        else:
            w.text(rel, _size(rng, 15_000, 1.4, 100, 4 * MiB), rng)
        made += 1
    # build/: object files, reports, a VERSION file kept by an exception.
    nb = int(n * 0.3)
    w.text("build/VERSION", 0, rng, "1.4.2+bench\n")
    made = 1
    dirs = _random_dirs(rng, "build", max(1, nb // 15), 4, names=["obj", "lib", "gen", "reports", "cache",
                                                                    "x86_64", "release", "debug", "tmp", "out"])
    while made < nb:
        ext = rng.choice([".o", ".o", ".o", ".a", ".d", ".html", ".json", ".txt"])
        rel = f"{rng.choice(dirs)}/{_ident(rng)}{ext}"
        if ext in (".o", ".a"):
            w.binary(rel, _size(rng, 14_000, 1.2, 500, 6 * MiB), rng)
        else:
            w.text(rel, _size(rng, 3000, 1.0, 10, 300_000), rng)
        made += 1
    # target/: a Rust-like layout.
    nt = n - int(n * 0.2) - nb
    w.binary("target/release/app", int(20 * MiB * scale), rng)
    w.binary("target/debug/app", int(30 * MiB * scale), rng)
    w.text("target/.rustc_info.json", 1500, rng)
    w.text("target/CACHEDIR.TAG", 0, rng, "Signature: 8a477f597d28d172789f06886806bc55\n")
    made = 4
    crates = [f"{_name(rng).replace('-', '_').replace('.', '_')}-{rng.getrandbits(64):016x}"
              for _ in range(max(4, nt // 12))]
    while made < nt:
        c = rng.choice(crates)
        prof = rng.choice(["debug", "debug", "release"])
        kind = rng.random()
        if kind < 0.35:
            crate, h = c.rsplit("-", 1)
            ext = rng.choice([".rlib", ".rmeta", ".d"])
            rel = f"target/{prof}/deps/lib{crate}-{h}{ext}"
            if ext == ".d":
                w.text(rel, _size(rng, 800, 0.8, 50, 50_000), rng)
            else:
                w.binary(rel, _size(rng, 30_000, 1.3, 500, 8 * MiB), rng)
        elif kind < 0.7:
            sess = "s-" + c[-10:]
            rel = f"target/{prof}/incremental/{c}/{sess}/{rng.getrandbits(40):010x}.o"
            w.binary(rel, _size(rng, 9_000, 1.0, 200, 2 * MiB), rng)
        else:
            leaf = rng.choice(["output", "stderr", "root-output", "invoked.timestamp", "out/bindings.rs"])
            rel = f"target/{prof}/build/{c}/{leaf}"
            w.text(rel, _size(rng, 600, 1.2, 0, 200_000), rng)
        made += 1


def gen_big(w: Writer, big_mib: int) -> None:
    for name in ("assets/model-a.bin", "assets/model-b.bin"):
        w.random_stream(name, big_mib * MiB)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def params_for(files: int, big_mib: int, nm_scale: int, seed: int) -> dict:
    return {"gen_version": GEN_VERSION, "files": files, "big_mib": big_mib, "nm_scale": nm_scale, "seed": seed}


def tree_stats(root: str) -> dict:
    """Count what is on disk (regular files, dirs, symlinks, bytes)."""
    files = dirs = links = other = 0
    total = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_symlink():
                    links += 1
                elif e.is_dir():
                    dirs += 1
                    stack.append(e.path)
                elif e.is_file():
                    files += 1
                    total += e.stat().st_size
                else:
                    other += 1
    return {"files": files, "dirs": dirs, "symlinks": links, "other": other, "bytes": total}


def read_marker(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return None


def _wipe(root: str) -> None:
    for e in os.scandir(root):
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path)
        else:
            os.unlink(e.path)


def generate(root: str, *, files: int = DEFAULT_FILES, big_mib: int = DEFAULT_BIG_MIB, nm_scale: int = 1,
             seed: int = 1, force: bool = False, quiet: bool = False) -> dict:
    """Make the tree (idempotent); return the marker dict (params + stats)."""
    root = os.path.abspath(root)
    params = params_for(files, big_mib, nm_scale, seed)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    os.makedirs(root, exist_ok=True)
    marker = read_marker(root)
    if marker is not None and marker.get("params") == params and not os.path.exists(os.path.join(root, PARTIAL)):
        say(f"{root}: up to date ({MARKER} has the same parameters); nothing written")
        return marker
    if os.listdir(root):
        ours = marker is not None or os.path.exists(os.path.join(root, PARTIAL))
        if not ours and not force:
            raise SystemExit(f"{root} is not empty and was not made by gen_tree.py (use --force to wipe it)")
        say(f"{root}: wiping previous contents")
        _wipe(root)
    with open(os.path.join(root, PARTIAL), "w") as fh:
        json.dump(params, fh)
    t0 = time.perf_counter()
    w = Writer(root, seed)
    n = files
    scale = files / DEFAULT_FILES
    ws_rng = random.Random(f"{seed}:workspaces")
    workspaces = sorted({_ident(ws_rng).replace("_", "-") for _ in range(max(2, n // 10_000))})
    w.text("Dockerfile", 0, ws_rng, "FROM scratch\nCOPY . /app\n")
    for name in ("typical", "node_modules"):
        w.text(f".dockerignore.{name}", 0, ws_rng, VARIANTS[name] or "")
    gen_node_modules(w, seed, int(n * 0.50) * nm_scale, int(n * 0.13) * nm_scale, workspaces)
    say(f"  node_modules done ({time.perf_counter() - t0:.1f}s)")
    gen_git(w, seed, int(n * 0.08), scale)
    gen_source(w, seed, int(n * 0.16), workspaces)
    gen_logs(w, seed, max(8, int(n * 0.01)), scale)
    gen_artifacts(w, seed, int(n * 0.11), scale)
    say(f"  small files done ({time.perf_counter() - t0:.1f}s)")
    if big_mib > 0:
        gen_big(w, big_mib)
        say(f"  big binaries done ({time.perf_counter() - t0:.1f}s)")
    os.unlink(os.path.join(root, PARTIAL))
    stats = tree_stats(root)
    stats["gen_seconds"] = round(time.perf_counter() - t0, 1)
    marker = {"params": params, "stats": stats}
    with open(os.path.join(root, MARKER), "w", encoding="utf-8") as fh:
        json.dump(marker, fh, indent=2)
    return marker


def describe(marker: dict) -> str:
    s = marker["stats"]
    return (f"{s['files']} files, {s['symlinks']} symlinks, {s['dirs']} dirs, "
            f"{s['bytes']} bytes ({s['bytes'] / 1e9:.2f} GB, {s['bytes'] / MiB:.0f} MiB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", help="where to generate the tree (created if missing)")
    ap.add_argument("--files", type=int, default=None, help=f"approximate file count (default {DEFAULT_FILES})")
    ap.add_argument("--small", action="store_true",
                    help=f"quick variant: {SMALL_FILES} files and {SMALL_BIG_MIB} MiB binaries")
    ap.add_argument("--no-big", action="store_true", help="skip assets/model-{a,b}.bin")
    ap.add_argument("--big-mib", type=int, default=None,
                    help=f"size of each big binary in MiB (default {DEFAULT_BIG_MIB}, --small {SMALL_BIG_MIB})")
    ap.add_argument("--nm-scale", type=int, default=1, help="multiply the node_modules file counts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ignore", choices=sorted(VARIANTS), default=None,
                    help="switch DIR/.dockerignore to this variant afterwards (default: leave it)")
    ap.add_argument("--force", action="store_true", help="wipe a non-empty directory not made by this script")
    args = ap.parse_args(argv)
    files = args.files if args.files is not None else (SMALL_FILES if args.small else DEFAULT_FILES)
    big = args.big_mib if args.big_mib is not None else (SMALL_BIG_MIB if args.small else DEFAULT_BIG_MIB)
    if args.no_big:
        big = 0
    marker = generate(args.directory, files=files, big_mib=big, nm_scale=args.nm_scale, seed=args.seed,
                      force=args.force)
    if args.ignore is not None:
        set_ignore(args.directory, args.ignore)
    print(f"{os.path.abspath(args.directory)}: {describe(marker)}")
    print(f"file count: {marker['stats']['files'] + marker['stats']['symlinks']}  total bytes: {marker['stats']['bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
