"""Docker's own test vectors (fixtures/vectors.json, semantics note §10)
through every entry point: the walker listing, explain, and the docker CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ctxpack
from ctxpack import Dialect
from trees import load_fixture, tar_names, vector_tree

VECTORS = load_fixture("vectors.json")["vectors"]
IDS = [f"row{v['id']}" for v in VECTORS]


def _ctx(root: Path, v: dict[str, Any], dialect: Dialect) -> ctxpack.BuildContext:
    df = str(root / v["dockerfile"]) if v["dockerfile"] else None
    return ctxpack.open_context(root, dockerfile=df, dialect=dialect)


def _listed(ctx: ctxpack.BuildContext) -> set[str]:
    return {e.path for e in ctxpack.list_entries(ctx)}


@pytest.mark.parametrize("dialect", [Dialect.CLASSIC, Dialect.BUILDKIT])
@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_walker(tmp_path: Path, v: dict[str, Any], dialect: Dialect) -> None:
    root = vector_tree(tmp_path / "ctx", v)
    expected = v[dialect.value]
    if "error" in expected:
        core = expected["error"].split(": ")[-1]
        with pytest.raises(ctxpack.PatternError) as info:
            _listed(_ctx(root, v, dialect))
        assert core in str(info.value)
        assert ".dockerignore:1" in str(info.value)
        return
    assert (v["path"] in _listed(_ctx(root, v, dialect))) == expected["sent"]


@pytest.mark.parametrize("dialect", [Dialect.CLASSIC, Dialect.BUILDKIT])
@pytest.mark.parametrize("v", [v for v in VECTORS if "error" not in v["classic"]], ids=lambda v: f"row{v['id']}")
def test_vector_explain(tmp_path: Path, v: dict[str, Any], dialect: Dialect) -> None:
    root = vector_tree(tmp_path / "ctx", v)
    ctx = _ctx(root, v, dialect)
    assert ctxpack.explain_path(ctx, v["path"]).sent == v[dialect.value]["sent"]


@pytest.mark.docker_cli
@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_against_docker_cli(tmp_path: Path, v: dict[str, Any], docker_cli: Any) -> None:
    """The classic column is what the docker CLI on this machine uploads."""
    root = vector_tree(tmp_path / "ctx", v)
    df = str(root / v["dockerfile"]) if v["dockerfile"] else None
    cap = docker_cli.capture(root, dockerfile=df)
    expected = v["classic"]
    if "error" in expected:
        assert cap.tar is None
        assert expected["error"].split(": ")[-1] in cap.stderr
        return
    assert cap.tar is not None, cap.stderr
    names = {n.rstrip("/") for n in cap.names}
    assert (v["path"] in names) == expected["sent"]
    ours = [e.name for e in ctxpack.list_entries(_ctx(root, v, Dialect.CLASSIC))]
    assert ours == tar_names(cap.members)
