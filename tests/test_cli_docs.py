"""docs/cli.md is generated from the click definitions (scripts/gen_cli_docs.py)
and must be up to date: a new command or option without regenerated docs fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    gen = _generator()
    expected = gen.render()
    actual = (ROOT / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py` and commit it"


def test_every_command_and_option_is_documented() -> None:
    gen = _generator()
    text = (ROOT / "docs" / "cli.md").read_text()
    for path, cmd in gen.commands(gen.main):
        assert f"## ctxpack {path}\n" in text, path
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            for opt in getattr(p, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}`" in text, f"ctxpack {path} {opt}"
