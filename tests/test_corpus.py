"""Real-world ignore files (the shared corpus) against the docker CLI.

For each of the corpus's ignore files (``<repo>/../shared/corpus/dockerignore``,
see its README) a scratch context is generated whose paths hit the file's
patterns (tests/corpus_trees.py): literal names, wildcards filled in, every
pattern at depth 0, 1 and 2, dotfiles, files that ``!`` rules re-include and
their siblings that they do not, names with a literal ``*``, ``[`` or ``\\``.
ctxpack's classic listing (names and order) must equal what the docker CLI
uploads for that tree.

Per-Dockerfile ignore files (``NAME.Dockerfile.dockerignore``) are ignored by
the classic builder, so the docker comparison uses their content as
``.dockerignore``; separate tests check that BuildKit's dialect picks the
per-Dockerfile file beside ``-f NAME.Dockerfile`` and that the classic
dialect (and the docker CLI) keep using ``<context>/.dockerignore``.

The module skips when the corpus is absent (a clone without ``../shared``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import ctxpack
from ctxpack import Dialect
from corpus_trees import DOCKERFILE_TEXT, IGNORE_DIR, CorpusFile, TreePlan, corpus_files, plan_tree
from trees import tar_names

if not IGNORE_DIR.is_dir():
    pytest.skip(f"corpus not found: {IGNORE_DIR} (it lives in ../shared next to the repository)", allow_module_level=True)

CORPUS = corpus_files()
PER_DOCKERFILE = [c for c in CORPUS if c.per_dockerfile]

#: A file only the root .dockerignore excludes, in the per-Dockerfile trees.
ROOT_MARKER = "root-ignore-marker.txt"


@pytest.fixture(scope="module")
def corpus_tree(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``corpus_tree(c)``: (plan, root) of the classic tree for ``c``, built
    once per module and shared by the tests that only read it."""
    built: dict[str, tuple[TreePlan, Path]] = {}
    base = tmp_path_factory.mktemp("corpus")

    def get(c: CorpusFile) -> tuple[TreePlan, Path]:
        if c.name not in built:
            plan = plan_tree(c.data)
            root = plan.create(base / c.name / "ctx", {"Dockerfile": DOCKERFILE_TEXT, ".dockerignore": c.data})
            built[c.name] = (plan, root)
        return built[c.name]

    return get


def _ids(c: CorpusFile) -> str:
    return c.name.removesuffix(".dockerignore").rstrip("_.") or c.name


def _listing(ctx: ctxpack.BuildContext) -> list[str]:
    return [e.name for e in ctxpack.list_entries(ctx)]


def _diff(ours: list[str], theirs: list[str]) -> str:
    a, b = set(ours), set(theirs)
    lines = []
    for name in sorted(b - a):
        lines.append(f"  docker sent, ctxpack did not list: {name!r}")
    for name in sorted(a - b):
        lines.append(f"  ctxpack listed, docker did not send: {name!r}")
    if not lines:
        first = next(i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y)
        lines.append(f"  same names, order differs at #{first}: ctxpack {ours[first]!r}, docker {theirs[first]!r}")
    return "\n".join(lines)


def _docker_cause(stderr: str) -> str:
    """The innermost cause of a docker CLI failure (``a: b: cause``)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last.removeprefix("ERROR: ").split(": ")[-1]


def _compare_with_docker(docker_cli: Any, root: Path, dockerfile: str | None = None) -> int:
    """Assert ctxpack's classic listing equals the CLI's upload; return its size."""
    cap = docker_cli.capture(root, dockerfile=dockerfile)
    try:
        ctx = ctxpack.open_context(root, dockerfile=dockerfile, dialect=Dialect.CLASSIC)
        ours: list[str] | ctxpack.CtxpackError = _listing(ctx)
    except ctxpack.CtxpackError as e:
        ours = e
    if cap.refused:
        cause = _docker_cause(cap.cut_short or cap.stderr)
        assert isinstance(ours, ctxpack.CtxpackError), f"docker failed ({cap.stderr.strip()!r}) but ctxpack listed {ours}"
        assert cause in str(ours), f"docker failed with {cause!r}, ctxpack with {ours}"
        return 0
    assert not isinstance(ours, ctxpack.CtxpackError), f"ctxpack failed ({ours}) but docker sent {tar_names(cap.members)}"
    theirs = tar_names(cap.members)
    assert ours == theirs, "classic listing differs from the docker CLI's upload:\n" + _diff(ours, theirs)
    return len(theirs)


# --------------------------------------------------------------------------
# The generated trees themselves
# --------------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    """All 95 files are there and the per-Dockerfile ones are recognised."""
    assert len(CORPUS) == 95
    assert len(PER_DOCKERFILE) == 7
    for c in PER_DOCKERFILE:
        assert c.dockerfile.rsplit("/", 1)[-1].endswith("Dockerfile")


@pytest.mark.parametrize("c", CORPUS, ids=_ids)
def test_tree_is_deterministic_and_hits_patterns(c: CorpusFile, corpus_tree: Any) -> None:
    plan, root = corpus_tree(c)
    assert plan.paths() == plan_tree(c.data).paths()
    assert len(plan.paths()) <= plan.cap + 10
    rules = ctxpack.parse_ignore(c.data)
    if not rules:
        return  # e.g. an all-comment file
    try:
        ctx = ctxpack.open_context(root, dialect=Dialect.CLASSIC)
        listed = {e.path for e in ctxpack.list_entries(ctx)}
    except ctxpack.PatternError:
        return  # the docker comparison checks the error
    generated = plan.paths()
    assert set(generated) - listed, "the tree hits none of the file's patterns"
    if any(r.pattern.startswith("!") for r in rules):
        # Some path is sent because a `!` rule re-includes it.
        assert any(
            (x := ctxpack.explain_path(ctx, p)).sent and x.rule is not None and x.rule.exception for p in generated
        ), "no generated path is re-included by an exception"


# --------------------------------------------------------------------------
# Against the docker CLI
# --------------------------------------------------------------------------


@pytest.mark.docker_cli
@pytest.mark.parametrize("c", CORPUS, ids=_ids)
def test_corpus_classic_equals_docker_cli(
    c: CorpusFile, corpus_tree: Any, docker_cli: Any, request: pytest.FixtureRequest
) -> None:
    """The classic listing of the generated tree, name for name and in
    order, is what the docker CLI uploads (a per-Dockerfile file's content
    serves as ``.dockerignore``: the classic builder ignores the file)."""
    plan, root = corpus_tree(c)
    # Sizes for reports (pytest --junitxml, or a plugin reading user_properties).
    request.node.user_properties.append(("generated_paths", len(plan.paths())))
    request.node.user_properties.append(("compared_entries", _compare_with_docker(docker_cli, root)))


# --------------------------------------------------------------------------
# Per-Dockerfile ignore files
# --------------------------------------------------------------------------


def _per_dockerfile_tree(tmp_path: Path, c: CorpusFile) -> tuple[Path, Path, Path]:
    """The generated tree plus the Dockerfile at its repository path, its
    per-Dockerfile ignore file beside it, and a root ``.dockerignore`` that
    excludes only :data:`ROOT_MARKER`.  Returns (root, dockerfile, per-df file)."""
    per_df = c.repo_path
    plan = plan_tree(c.data, reserved=(c.dockerfile, per_df, ROOT_MARKER))
    root = plan.create(
        tmp_path / "ctx",
        {
            c.dockerfile: DOCKERFILE_TEXT,
            per_df: c.data,
            ".dockerignore": (ROOT_MARKER + "\n").encode(),
            ROOT_MARKER: b"x",
        },
    )
    return root, root / c.dockerfile, root / per_df


@pytest.mark.parametrize("c", PER_DOCKERFILE, ids=_ids)
def test_per_dockerfile_ignore_buildkit(tmp_path: Path, c: CorpusFile) -> None:
    """With ``-f DIR/NAME.Dockerfile`` BuildKit's dialect uses
    ``DIR/NAME.Dockerfile.dockerignore``, not ``<context>/.dockerignore``."""
    root, dockerfile, per_df = _per_dockerfile_tree(tmp_path, c)
    variants = [str(dockerfile)]
    if dockerfile.parent == root and dockerfile.name == "Dockerfile":
        variants.append(None)  # the default Dockerfile finds Dockerfile.dockerignore too
    for df in variants:
        ctx = ctxpack.open_context(root, dockerfile=df, dialect=Dialect.BUILDKIT)
        assert ctx.ignore_source is not None
        assert os.path.realpath(ctx.ignore_source) == os.path.realpath(per_df), (df, ctx.ignore_source)
        assert [r.pattern for r in ctx.rules] == [r.pattern for r in ctxpack.parse_ignore(c.data)]
        listing = _listing(ctx)

        explicit = ctxpack.open_context(root, dockerfile=df, dialect=Dialect.BUILDKIT, ignore_file=str(per_df))
        assert listing == _listing(explicit)
        with_root_file = ctxpack.open_context(
            root, dockerfile=df, dialect=Dialect.BUILDKIT, ignore_file=str(root / ".dockerignore")
        )
        root_listing = _listing(with_root_file)
        assert ROOT_MARKER not in root_listing
        assert listing != root_listing

    # The classic dialect on the same tree keeps reading <context>/.dockerignore.
    classic = ctxpack.open_context(root, dockerfile=str(dockerfile), dialect=Dialect.CLASSIC)
    assert classic.ignore_source == ".dockerignore"
    assert [r.pattern for r in classic.rules] == [ROOT_MARKER]
    assert ROOT_MARKER not in [e.path for e in ctxpack.list_entries(classic)]


@pytest.mark.docker_cli
@pytest.mark.parametrize("c", PER_DOCKERFILE, ids=_ids)
def test_per_dockerfile_ignore_classic_equals_docker_cli(tmp_path: Path, c: CorpusFile, docker_cli: Any) -> None:
    """The docker CLI's classic upload with ``-f DIR/NAME.Dockerfile`` ignores
    the per-Dockerfile file (it is sent like any other file), as ctxpack does."""
    root, dockerfile, per_df = _per_dockerfile_tree(tmp_path, c)
    assert _compare_with_docker(docker_cli, root, str(dockerfile)) > 0
    sent = [e.path for e in ctxpack.list_entries(ctxpack.open_context(root, dockerfile=str(dockerfile), dialect=Dialect.CLASSIC))]
    assert str(per_df.relative_to(root)) in sent
    assert ROOT_MARKER not in sent
