"""Whole-context listings (fixtures/listings.json, semantics note §10.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ctxpack
from trees import load_fixture, make_tree, tar_names

FIX = load_fixture("listings.json")


def _tree(root: Path, row: dict[str, Any]) -> Path:
    files = [p for p in FIX["tree"] if p != ".dockerignore"]
    return make_tree(root, files, dockerignore=row["dockerignore"])


@pytest.mark.parametrize("row", FIX["rows"], ids=lambda r: r["id"])
def test_classic_listing(tmp_path: Path, row: dict[str, Any]) -> None:
    ctx = ctxpack.open_context(_tree(tmp_path, row), dialect="classic")
    assert [e.name for e in ctxpack.list_entries(ctx)] == row["classic"]


@pytest.mark.parametrize("row", FIX["rows"], ids=lambda r: r["id"])
def test_buildkit_listing(tmp_path: Path, row: dict[str, Any]) -> None:
    ctx = ctxpack.open_context(_tree(tmp_path, row), dialect="buildkit")
    assert [e.path for e in ctxpack.list_entries(ctx)] == row["buildkit"]


@pytest.mark.docker_cli
@pytest.mark.parametrize("row", FIX["rows"], ids=lambda r: r["id"])
def test_classic_listing_is_docker_cli(tmp_path: Path, row: dict[str, Any], docker_cli: Any) -> None:
    root = _tree(tmp_path, row)
    cap = docker_cli.capture(root)
    assert tar_names(cap.members) == row["classic"]
