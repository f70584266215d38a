#!/usr/bin/env python3
"""Generate docs/cli.md, the command-line reference, from the click definitions.

Every command and option comes from ``ctxpack.cli.app.main`` itself (names,
types, defaults, help); exit codes from each command's "Exit codes:" sentence
and from the error tree (``ctxpack.errors``); the JSON of every ``--json``
option from running the command on a small sample context and describing the
shape of what it printed.  So the page cannot drift: ``tests/test_cli_docs.py``
fails when docs/cli.md differs from this script's output.

    python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import ctxpack.errors as errors  # noqa: E402
from ctxpack.cli.app import main  # noqa: E402

OUT = ROOT / "docs" / "cli.md"

# The sample context the --json examples run on (paths relative to it).
SAMPLE = {
    "Dockerfile": "FROM busybox AS build\nCOPY src/ /src/\nFROM busybox\nCOPY --from=build /src /app\n",
    ".dockerignore": "node_modules\n*.log\n!keep.log\n.env\n",
    "src/app.py": "print('app')\n",
    "src/util.py": "x = 1\n",
    "node_modules/pkg/index.js": "module.exports = 1\n" * 50,
    "app.log": "log\n" * 100,
    "keep.log": "kept\n",
    ".env": "AWS_SECRET_ACCESS_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCD\n",
    "docs/guide.md": "# guide\n",
}

# argv (after `ctxpack`) for each command path whose --json output is shown;
# "{ctx}" is the sample context.  A command with a --json flag and no entry
# here makes the generator fail: add it.
JSON_RUNS: dict[str, list[list[str]]] = {
    "size": [["size", "--json", "{ctx}"]],
    "lint": [["lint", "--json", "{ctx}"]],
    "fingerprint": [["fingerprint", "--json", "{ctx}"]],
    "diff": [["snapshot", "{ctx}"], ["diff", "--json", "{ctx}"]],
    "cache info": [["cache", "info", "--json"]],
}


# -- the shape of a JSON value -------------------------------------------------


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _merge(shapes: list[Any]) -> Any:
    """One shape for several values: objects merge key by key."""
    objs = [s for s in shapes if isinstance(s, dict)]
    if objs and len(objs) == len(shapes):
        keys: list[str] = []
        for o in objs:
            keys += [k for k in o if k not in keys]
        return {k: _merge([o[k] for o in objs if k in o]) for k in keys}
    types = sorted({s if isinstance(s, str) else "object" for s in shapes})
    return " | ".join(types)


def shape(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_merge([shape(x) for x in v])] if v else []
    return _type(v)


def render_shape(s: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(s, dict):
        for k, v in s.items():
            if isinstance(v, dict):
                out.append(f"{pad}{k}: object")
                out += render_shape(v, indent + 1)
            elif isinstance(v, list):
                item = v[0] if v else "(no items in the sample)"
                if isinstance(item, dict):
                    out.append(f"{pad}{k}: array of objects")
                    out += render_shape(item, indent + 1)
                else:
                    out.append(f"{pad}{k}: array of {item}")
            else:
                out.append(f"{pad}{k}: {v}")
    elif isinstance(s, list):
        out.append(f"{pad}array of objects" if s and isinstance(s[0], dict) else f"{pad}array")
        if s and isinstance(s[0], dict):
            out += render_shape(s[0], indent + 1)
    else:
        out.append(f"{pad}{s}")
    return out


@contextlib.contextmanager
def sample_context() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ctxpack-docs-") as tmp:
        ctx = Path(tmp) / "ctx"
        for rel, text in SAMPLE.items():
            p = ctx / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        cache = Path(tmp) / "cache"
        saved = {k: os.environ.get(k) for k in ("CTXPACK_CACHE_DIR", "XDG_CACHE_HOME")}
        os.environ["CTXPACK_CACHE_DIR"] = str(cache)
        os.environ["XDG_CACHE_HOME"] = str(cache)
        try:
            yield ctx
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def json_shapes() -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    runner = CliRunner()
    with sample_context() as ctx:
        for path, runs in JSON_RUNS.items():
            result = None
            for argv in runs:
                result = runner.invoke(main, [a.replace("{ctx}", str(ctx)) for a in argv], catch_exceptions=False)
            assert result is not None
            try:
                shapes[path] = shape(json.loads(result.stdout))
            except ValueError:
                raise SystemExit(f"`ctxpack {path} --json` printed no JSON (exit {result.exit_code}): {result.output}")
    return shapes


# -- commands and options ---------------------------------------------------------


def commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        path = f"{prefix}{name}"
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path + " ")


def _type_name(p: click.Parameter) -> str:
    t = p.type
    if isinstance(p, click.Option) and p.is_flag and not p.secondary_opts:
        return "flag"
    if isinstance(t, click.Choice):
        return " \\| ".join(f"`{c}`" for c in t.choices)
    if isinstance(t, click.Path):
        return "path"
    if isinstance(t, click.File):
        return "file"
    if isinstance(t, click.IntRange):
        if t.min is not None and t.max is not None:
            return f"integer {t.min}..{t.max}"
        if t.min is not None:
            return f"integer >= {t.min}"
        return f"integer <= {t.max}" if t.max is not None else "integer"
    return {"text": "text", "integer": "integer", "float": "number", "boolean": "boolean"}.get(t.name, t.name)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(p: click.Option) -> str:
    if p.is_flag and not p.secondary_opts:
        return ""
    d = p.default
    if d is None or d == () or d == [] or "UNSET" in repr(d):  # click 8.3+: no default is a sentinel
        return ""
    if callable(d):
        return "(computed)"
    return f"`{d}`"


def _exit_codes(cmd: click.Command) -> str | None:
    text = " ".join(inspect.cleandoc(cmd.help or "").split())
    m = re.search(r"Exit codes?: (.*?\.)(?:\s|$)", text)
    return m.group(1) if m else None


def _default_codes(cmd: click.Command) -> str:
    # No "Exit codes:" sentence: success, what an option says makes it exit 1
    # ("Exit 1 when ..."), and the errors every command can raise.
    ones = []
    for p in cmd.params:
        m = re.match(r"Exit 1 (.*?)\.?$", " ".join((getattr(p, "help", None) or "").split()))
        if m and isinstance(p, click.Option):
            ones.append(f"{m.group(1)} (`{p.opts[-1]}`)")
    one = f", 1 {'; '.join(ones)}" if ones else ""
    return f"0 success{one}, 2 usage or input error, 3 output error."


def error_tree() -> list[tuple[str, int, str]]:
    rows = []
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.CtxpackError):
            doc = (inspect.getdoc(cls) or "").split("\n\n")[0]  # the first paragraph
            rows.append((name, cls.exit_code, doc))
    return rows


def render() -> str:
    shapes = json_shapes()
    lines = [
        "# ctxpack command-line reference",
        "",
        "Generated by `scripts/gen_cli_docs.py` from the click definitions; do not edit by hand "
        "(`tests/test_cli_docs.py` fails when this page is stale).",
        "",
        "Every command takes `-h`/`--help`; `ctxpack --version` prints the version.",
        "",
        "## Exit codes",
        "",
        "`0` success. `1` as the command says below (over budget, findings, changes, a failed build, a file that "
        "changed while read). The other codes come from the error that stopped the command:",
        "",
        "| error (`ctxpack.errors`) | exit code | meaning |",
        "|---|---|---|",
    ]
    for name, code, doc in error_tree():
        lines.append(f"| `{name}` | {code} | {_cell(doc)} |")
    lines += ["", "## Commands", ""]
    cmds = list(commands(main))
    for path, cmd in cmds:
        lines.append(f"- [`ctxpack {path}`](#ctxpack-{path.replace(' ', '-')}) — {_cell(cmd.get_short_help_str(200))}")
    flagged = [path for path, cmd in cmds if any(getattr(p, "name", "") == "as_json" for p in cmd.params)]
    missing = [p for p in flagged if p not in JSON_RUNS]
    if missing:
        raise SystemExit(f"scripts/gen_cli_docs.py: add a JSON_RUNS entry for: {', '.join(missing)}")
    for path, cmd in cmds:
        ctx = click.Context(cmd, info_name=f"ctxpack {path}")
        lines += ["", f"## ctxpack {path}", "", "```", " ".join(cmd.collect_usage_pieces(ctx)).join(
            [f"ctxpack {path} ", ""]), "```", ""]
        lines.append(inspect.cleandoc(cmd.help or "").replace("\b\n", ""))
        if isinstance(cmd, click.Group):
            sub = click.Context(cmd)
            lines += ["", "Subcommands: " + ", ".join(f"`{n}`" for n in cmd.list_commands(sub)) + "."]
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        opts = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
        if args:
            lines += ["", "| argument | kind | |", "|---|---|---|"]
            for a in args:
                many = " (one or more)" if a.nargs == -1 else ""
                lines.append(f"| `{a.human_readable_name}` | {_type_name(a)}{many} | {'required' if a.required else 'optional'} |")
        if opts:
            lines += ["", "| option | type | default | |", "|---|---|---|---|"]
            for o in opts:
                names = ", ".join(f"`{n}`" for n in o.opts + o.secondary_opts)
                many = " (repeatable)" if o.multiple else ""
                lines.append(f"| {names} | {_type_name(o)}{many} | {_default(o)} | {_cell(o.help or '')} |")
        lines += ["", f"Exit codes: {_exit_codes(cmd) or _default_codes(cmd)}"]
        if path in shapes:
            lines += ["", "`--json` prints (shape of the output on a sample context; keys are only ever added):",
                      "", "```", *render_shape(shapes[path]), "```"]
    return "\n".join(lines) + "\n"


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is not up to date")
    a = ap.parse_args(argv)
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/cli.md is stale: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
