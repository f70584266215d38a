#!/usr/bin/env python3
"""Make docs/images/size-html.png: `ctxpack size --html` on a realistic tree.

    python scripts/readme_screenshot.py [--keep DIR]

The tree is a small Node web shop as people really send it: real npm
packages (copied from the machine's /usr/lib/node_modules/npm), sources,
a built bundle with its source map, images, a seed dump, a .git, a .env,
and a .dockerignore that only remembers the logs and coverage.  The page is
rendered in headless Chromium (tests/chromium.py) and saved as a PNG; the
README shows it.  Needs Debian's chromium and an npm install at
/usr/lib/node_modules/npm (Node.js's Debian package).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from chromium import Browser, find_chromium  # noqa: E402

NPM = "/usr/lib/node_modules/npm"


def blob(path: str, size: int, seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(rnd.randbytes(size))


def text(path: str, content: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)


def make_tree(d: str) -> None:
    if not os.path.isdir(NPM):
        sys.exit(f"needs {NPM} (Debian's nodejs/npm package)")
    shutil.copytree(os.path.join(NPM, "node_modules"), os.path.join(d, "node_modules"), symlinks=True)
    shutil.copytree(os.path.join(NPM, "lib"), os.path.join(d, "src", "server"), symlinks=True)
    shutil.copytree(os.path.join(NPM, "docs"), os.path.join(d, "docs"), symlinks=True, dirs_exist_ok=True)
    shutil.copy(os.path.join(NPM, "package.json"), os.path.join(d, "package.json"))
    shutil.copytree(os.path.join(ROOT, ".git") if os.path.isdir(os.path.join(ROOT, ".git")) else os.path.join(NPM, "lib"),
                    os.path.join(d, ".git"), symlinks=True)
    text(os.path.join(d, "Dockerfile"),
         "FROM node:20-slim\nWORKDIR /app\nCOPY package.json ./\nRUN npm install --omit=dev\nCOPY . .\nCMD [\"node\", \"src/server/cli.js\"]\n")
    text(os.path.join(d, ".dockerignore"), "*.log\nlogs\ncoverage\n")
    text(os.path.join(d, ".env"), "STRIPE_SECRET_KEY=sk_live_not_a_real_key\n")
    blob(os.path.join(d, "dist", "assets", "index-3f9a1c.js"), 2_900_000, 1)
    blob(os.path.join(d, "dist", "assets", "index-3f9a1c.js.map"), 9_400_000, 2)
    blob(os.path.join(d, "dist", "assets", "vendor-77be02.js"), 1_700_000, 3)
    for i, (name, size) in enumerate([("hero.jpg", 2_400_000), ("team.png", 1_300_000), ("banner.webp", 800_000),
                                      ("logo.svg", 24_000), ("favicon.ico", 15_000)]):
        blob(os.path.join(d, "public", "images", name), size, 10 + i)
    blob(os.path.join(d, "data", "seed.sql"), 6_200_000, 20)
    blob(os.path.join(d, "data", "products.csv"), 1_100_000, 21)
    blob(os.path.join(d, "logs", "app.log"), 4_000_000, 30)
    blob(os.path.join(d, "npm-debug.log"), 700_000, 31)
    blob(os.path.join(d, "coverage", "lcov.info"), 1_500_000, 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="build the tree here and keep it")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "size-html.png"))
    a = ap.parse_args()
    exe, why = find_chromium(install=False)
    if exe is None:
        sys.exit(why)
    work = tempfile.mkdtemp(prefix="ctxpack-shot-")
    tree = a.keep or os.path.join(work, "web-shop")
    try:
        if not os.path.exists(os.path.join(tree, "Dockerfile")):
            make_tree(tree)
        page = os.path.join(work, "report.html")
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-m", "ctxpack.cli", "size", tree, "--html", page], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with Browser(exe, width=1280, height=760) as b:
            b.navigate("file://" + page)
            # hover the heaviest directory so the picture shows a tooltip
            x, y = b.evaluate("(() => { const e = document.querySelector('#map .cell.dir'); const r = e.getBoundingClientRect();"
                              " return [r.x + r.width * 0.55, r.y + r.height * 0.45]; })()")
            b.hover(x, y)
            b.screenshot(a.out)
            errors = b.errors()
        if errors:
            sys.exit(f"console errors: {errors}")
        print(a.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
