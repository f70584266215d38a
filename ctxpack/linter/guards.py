"""Names of local state: what a developer's machine has and a clean checkout
lacks (virtualenvs, installed packages, editor settings, caches, build
output, logs, local env files), and which of it is heavy.

A rule that guards local state is deliberate even when it matches nothing
in the tree being linted (a CI checkout has no ``.venv``): lint never calls
it obsolete and ``--fix`` never removes it.
"""

from __future__ import annotations

from ctxpack.errors import BrokenPattern, PatternSyntaxError
from ctxpack.ignore.pattern import compile_pattern

__all__ = ["DOTNET_PROJECTS", "HEAVY", "is_guard", "heavy_kind"]

# Sample names of local state.  A rule guards local state when its last
# component matches one of them (``*.py[cod]`` matches ``x.pyc``), or when a
# component of its literal part is one (``web/node_modules/.cache``).
_LOCAL_STATE = (
    # environments and installed packages
    ".venv", "venv", "env", ".env", ".env.local", ".env.production", ".env.development", ".env.test",
    "x.env", ".envrc", ".direnv", "virtualenv", ".virtualenv", ".python-version", ".conda",
    "node_modules", "bower_components", "jspm_packages", ".pnpm-store", ".yarn", ".npm", ".pnp.cjs",
    ".bundle", "vendor/bundle", ".gradle", ".m2", ".cargo", ".stack-work", "_build", "deps", ".dart_tool",
    ".pub-cache", "Pods", ".terraform", ".terragrunt-cache", ".serverless", ".vagrant", ".expo",
    # editors and OS files
    ".idea", ".vscode", ".vs", ".fleet", ".history", ".settings", ".project", ".classpath", "x.iml",
    ".DS_Store", "Thumbs.db", "desktop.ini", "x.swp", "x.swo", "x~", "#x#", ".netrwhist", "x.sublime-workspace",
    # caches
    "__pycache__", "x.pyc", "x.pyo", "x.pyd", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox",
    ".hypothesis", ".cache", ".parcel-cache", ".eslintcache", ".stylelintcache", ".sass-cache", ".next",
    ".nuxt", ".svelte-kit", ".angular", ".turbo", ".nx", ".docusaurus", ".webpack", ".jest", ".ipynb_checkpoints",
    ".coverage", "coverage", "htmlcov", ".nyc_output", "x.egg-info", ".eggs", "pip-wheel-metadata",
    # build output
    "dist", "build", "out", "target", "bin", "obj", "x.o", "x.so", "x.a", "x.dll", "x.exe", "x.class",
    "x.jar", "x.war", "x.whl", "release", "debug", "Debug", "Release", "DerivedData", "x.tsbuildinfo",
    # logs and scratch
    "x.log", "logs", "log", "npm-debug.log", "npm-debug.log.1", "yarn-error.log", "yarn-debug.log",
    "pnpm-debug.log", "lerna-debug.log", "tmp", "temp", ".tmp", "x.tmp", "x.bak", "x.orig",
    "docker-compose.override.yml", "compose.override.yaml", "x.local", "x.local.json",
    # a checkout's own history: absent from an export or a tarball
    ".git", ".hg", ".svn",
)
_LOCAL_DIR_NAMES = frozenset(n for n in _LOCAL_STATE if not n.startswith("x") and "/" not in n)


def is_guard(pattern_text: str) -> bool:
    """Whether the (cleaned) pattern ``pattern_text`` guards local state."""
    parts = [p for p in pattern_text.split("/") if p not in ("", "**", "*")]
    if not parts:
        return False
    if any(p in _LOCAL_DIR_NAMES for p in parts):
        return True
    try:
        last = compile_pattern(parts[-1])
    except PatternSyntaxError:
        return False
    try:
        return any(last.matches(name) for name in _LOCAL_STATE)
    except BrokenPattern:  # a pattern docker only refuses when it evaluates it
        return False


# Directories that are heavy and almost never meant for the image, with
# what they are.  ``bin``/``obj`` are heavy only next to a .NET project file.
HEAVY = {
    ".git": "version control history; it changes on every commit and busts the build cache",
    "node_modules": "installed npm packages",
    ".venv": "a Python virtualenv",
    "venv": "a Python virtualenv",
    "__pycache__": "Python bytecode",
    ".tox": "tox environments",
    ".mypy_cache": "mypy cache",
    ".pytest_cache": "pytest cache",
    ".ruff_cache": "ruff cache",
    "target": "build output (Rust/Maven)",
    "dist": "build output",
    "build": "build output",
    ".next": "Next.js build cache",
    ".angular": "Angular build cache",
    ".terraform": "Terraform providers",
    "coverage": "coverage reports",
    "bin": ".NET build output",
    "obj": ".NET build output",
}
DOTNET_PROJECTS = (".csproj", ".fsproj", ".vbproj", ".sln")


def heavy_kind(name: str, next_to_project: bool = False) -> str | None:
    """What the directory ``name`` is, if it is a heavy kind; ``bin`` and
    ``obj`` only when ``next_to_project`` (its parent holds a .NET project
    file: elsewhere ``bin/`` is often scripts)."""
    what = HEAVY.get(name)
    if what is None or (name in ("bin", "obj") and not next_to_project):
        return None
    return what
