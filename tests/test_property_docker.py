"""Property tests: generated trees and .dockerignore files, ctxpack's classic
listing against the docker CLI's real upload (names, order, entry types, link
targets), and the two evaluators against each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctxpack
from ctxpack import Dialect
from strategies import TAR_TYPES, built, dockerignores, trees
from trees import tar_names

EXAMPLES = int(os.environ.get("CTXPACK_HYPOTHESIS_EXAMPLES", "150"))


def _ours(root: Path, dialect: Dialect) -> list[tuple[str, str, str]] | str:
    try:
        ctx = ctxpack.open_context(root, dialect=dialect)
        return [
            (e.name, TAR_TYPES[e.kind], e.link if e.kind in ("symlink", "hardlink") else "")
            for e in ctxpack.list_entries(ctx)
        ]
    except ctxpack.CtxpackError as e:
        return f"error: {e}"


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Any], str]:
    nodes = draw(trees())
    return nodes, draw(dockerignores(nodes))


@pytest.mark.docker_cli
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_classic_listing_equals_docker_cli(case: tuple[list[Any], str], docker_cli: Any) -> None:
    nodes, ignore = case
    with built(nodes, ignore) as root:
        cap = docker_cli.capture(root)
        ours = _ours(root, Dialect.CLASSIC)
        if cap.refused:  # no upload, or one cut short at a pattern that broke (Capture.cut_short)
            assert isinstance(ours, str), f"docker failed ({cap.stderr.strip()!r}) but ctxpack listed {ours}"
            return
        assert not isinstance(ours, str), f"ctxpack failed ({ours}) but docker uploaded {cap.names}"
        theirs = [
            (n, m.type.decode(), m.linkname if m.type in (b"1", b"2") else "")
            for n, m in zip(tar_names(cap.members), cap.members)
        ]
        assert ours == theirs


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_dialects_agree_without_exceptions(case: tuple[list[Any], str]) -> None:
    """With no `!` rules the two walkers differ only in the forced Dockerfile
    and .dockerignore; and explain agrees with the listing for every path."""
    nodes, ignore = case
    with built(nodes, ignore) as root:
        lines = [ln.strip() for ln in ignore.splitlines()]
        has_exc = any(ln.startswith("!") for ln in lines)
        results = {}
        for d in Dialect:
            try:
                ctx = ctxpack.open_context(root, dialect=d)
                listed = [e.path for e in ctxpack.list_entries(ctx)]
            except ctxpack.PatternError:
                return
            results[d] = listed
            for n in nodes:
                assert ctxpack.explain_path(ctx, n.path).sent == (n.path in listed), (d, n.path)
        if not has_exc:
            forced = {"Dockerfile", ".dockerignore"}
            assert [p for p in results[Dialect.CLASSIC] if p not in forced] == [
                p for p in results[Dialect.BUILDKIT] if p not in forced
            ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(), dialect=st.sampled_from([Dialect.CLASSIC, Dialect.BUILDKIT]))
def test_walker_equals_naive_reference(case: tuple[list[Any], str], dialect: Dialect) -> None:
    """The optimised walker (rule liveness per directory, pruning of excluded
    directories no exception can reach) lists exactly what the naive model
    of Docker's walkers lists."""
    from reference_model import reference_listing

    nodes, ignore = case
    with built(nodes, ignore) as root:
        try:
            ctx = ctxpack.open_context(root, dialect=dialect)
            ours = [e.path for e in ctxpack.walk(ctx) if not e.forced]
        except ctxpack.PatternError:
            return
        try:
            ref = reference_listing(str(root), ignore.encode("utf-8", "surrogateescape"), dialect.value)
        except Exception:  # noqa: BLE001 - the model raises on broken patterns too
            return
        assert ours == ref


@pytest.mark.docker_cli
def test_a_pattern_that_breaks_in_the_upload_walk_is_refused(tmp_path: Path, docker_cli: Any) -> None:
    """Hypothesis found it: ``!\\é`` (an escaped non-ASCII letter) compiles
    to a regexp Go refuses, and the CLI only meets it in the upload's walk,
    where it logs ``Error matching x\\xff/0`` and sends the context cut short
    there, exit 0.  ctxpack refuses the rules, naming the line (docs/semantics.md)."""
    root = tmp_path / "ctx"
    (root / os.fsdecode(b"x\xff")).mkdir(parents=True)
    (root / os.fsdecode(b"x\xff/0")).write_text("a")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / ".dockerignore").write_bytes(b"x\xff/0\n!/*\n!\\\xc3\xa9\n")
    cap = docker_cli.capture(root)
    assert cap.returncode == 0 and cap.cut_short is not None and cap.refused
    assert "syntax error in pattern" in cap.cut_short
    ours = _ours(root, Dialect.CLASSIC)
    assert isinstance(ours, str) and ".dockerignore:3" in ours and "syntax error in pattern" in ours
