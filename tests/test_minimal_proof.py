"""Proof by a real engine: a ``--minimal`` context builds the same image.

For every case of tests/proof_cases.py and each of its builders, the
context is packed twice by ctxpack, in full and ``minimal=True`` (dialect
``classic`` for the classic builder, ``version=1``; ``buildkit`` for
BuildKit, ``version=2``), both tars are built by the session's dockerd
(tests/dockerd.py, base image ``bb``) without the build cache, and the two
images are compared: the flattened filesystems (paths, types, modes,
owners, contents, link targets; not mtimes) and the image configs (ENV,
CMD, WORKDIR, USER, ONBUILD ...).  A case whose builds must fail must fail
the same way with both tars.

So that a minimal context equal to the full one cannot pass by accident,
the test also checks the tars: the minimal one holds a subset of the full
one's names, the paths the case says are read, none of the unused ones
(``node_modules/``, ``docs/`` ...), and is smaller; or, for a case that
reads everything (``COPY . .``, an ARG without a value), equals the full
one byte for byte, with ``ctx.selection`` ``None`` and a note saying why
(then one build stands for both: the same bytes, the same parameters).

Engine facts the cases rely on (Engine 20.10.24, its vendored BuildKit):
the classic builder's wildcard walk does not follow a symlinked directory
(``COPY cfglink/*.json`` fails from the full context too), so that case is
BuildKit's only; ``RUN --mount`` is BuildKit's only; BuildKit carries a base
stage's ARG values into the stages built on it, the classic builder does not;
with the same name as ENV and ARG the classic builder reads the ENV, BuildKit
the last one set.  A build takes 0.3–2 s (classic ~0.5 s a step); the
module runs in about two minutes.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
from ctxpack import open_context
from ctxpack.explainer import source_warnings
from ctxpack.context import BuildContext
from ctxpack.tar.writer import PackOptions, pack
from ctxpack.walker import dockerfile_name_in_tar
from ctxpack.tar.sinks import CallbackSink
from proof_cases import CASES, UNUSED, UNUSED_PATHS, Case

#: Engine API build options per builder; no cache, so that each image is
#: made from its own tar.  BuildKit's RUN needs networkmode=none on a daemon
#: without a bridge (tests/dockerd.py).
BUILD_OPTS: dict[str, dict[str, Any]] = {
    "classic": {"version": "1", "extra_query": {"nocache": "1"}},
    "buildkit": {"version": "2", "extra_query": {"nocache": "1", "networkmode": "none"}},
}

#: The image config fields a Dockerfile can set.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "OnBuild", "Volumes",
                 "ExposedPorts", "StopSignal", "Shell")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def write_tree(root: Path, case: Case) -> Path:
    """The case's tree plus :data:`UNUSED` and the Dockerfile, with explicit
    modes (the umask does not matter)."""
    root.mkdir(parents=True)
    files: dict[str, Any] = {**UNUSED, **case.files, case.dockerfile_path: case.dockerfile}
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    for rel, target in case.symlinks.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    for rel, existing in case.hardlinks.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(root / existing, root / rel)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    for rel, mode in case.modes.items():
        os.chmod(root / rel, mode)
    return root


def pack_bytes(ctx: BuildContext) -> bytes:
    buf = bytearray()
    pack(ctx, CallbackSink(buf.extend), PackOptions())
    return bytes(buf)


def tar_names(body: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tf:
        return {m.name.rstrip("/") for m in tf.getmembers()}


def export_tree(d: harness.Dockerd, image_id: str) -> dict[str, tuple[Any, ...]]:
    """The image's flattened filesystem: ``{path: (type, mode, uid, gid,
    content | link target | None)}`` (``Dockerd.export_fs`` as tuples, so
    that owners from ``COPY --chown`` are compared too)."""
    return {k: (e.type, e.mode, e.uid, e.gid, e.data) for k, e in d.export_fs(image_id).items()}


def diff_trees(full: dict[str, tuple[Any, ...]], mini: dict[str, tuple[Any, ...]]) -> list[str]:
    diffs = []
    for k in sorted(set(full) | set(mini)):
        if k not in mini:
            diffs.append(f"only in the image from the full context: {k} {full[k][:4]}")
        elif k not in full:
            diffs.append(f"only in the image from the minimal context: {k} {mini[k][:4]}")
        elif full[k] != mini[k]:
            a, b = full[k], mini[k]
            diffs.append(f"differs: {k}: full {a[0]} {oct(a[1])} {a[2]}:{a[3]} {a[4]!r:.80}"
                         f" != minimal {b[0]} {oct(b[1])} {b[2]}:{b[3]} {b[4]!r:.80}")
    return diffs


def image_config(d: harness.Dockerd, image_id: str) -> dict[str, Any]:
    cfg = d.client.inspect_image(image_id).get("Config") or {}
    return {k: cfg.get(k) for k in CONFIG_FIELDS}


_IDS = re.compile(r"\b[0-9a-z]{20,}\b")


def normalised_error(message: str | None) -> str:
    """An error without the ids that change from build to build."""
    return _IDS.sub("<id>", message or "")


def build(d: harness.Dockerd, body: bytes, builder: str, case: Case, dockerfile: str) -> harness.BuildResult:
    return d.build(body, dockerfile=dockerfile, target=case.target, buildargs=case.build_args, **BUILD_OPTS[builder])


def open_pair(root: Path, case: Case, builder: str) -> tuple[BuildContext, BuildContext]:
    df = str(root / case.dockerfile_path)
    full = open_context(root, dockerfile=df, dialect=builder)
    mini = open_context(root, dockerfile=df, dialect=builder, minimal=True, target=case.target,
                        build_args=case.build_args)
    return full, mini


def _params() -> list[Any]:
    out = []
    for case in CASES:
        for builder in case.builders:
            marks = []
            if builder in case.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail[builder]))
            out.append(pytest.param(case, builder, id=f"{case.id}-{builder}", marks=marks))
    return out


# --------------------------------------------------------------------------
# the proof
# --------------------------------------------------------------------------


def test_cases_are_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for c in CASES:
        assert set(c.builders) <= set(BUILD_OPTS), c.id
        for table in (c.present, c.absent, c.whole, c.xfail):
            assert set(table) <= {"*", *BUILD_OPTS}, c.id
        assert not (set(c.files) & set(UNUSED)), f"{c.id}: the unused files must stay unused"


@pytest.mark.parametrize(("case", "builder"), _params())
def test_minimal_context_builds_the_same_image(dockerd: harness.Dockerd, tmp_path: Path, case: Case, builder: str) -> None:
    root = write_tree(tmp_path / "ctx", case)
    full, mini = open_pair(root, case, builder)

    # What the analysis decided.
    why = case.whole_note(builder)
    if why is not None:
        assert mini.selection is None, f"expected the whole context ({why}); patterns {mini.selection.patterns}"
        assert any(why in n for n in mini.notes), f"no note mentions {why!r}: {mini.notes}"
    else:
        assert mini.selection is not None, f"unexpected fall-back to the whole context: {mini.notes}"

    # What the tars hold: the minimal one must not pass trivially.
    full_tar, mini_tar = pack_bytes(full), pack_bytes(mini)
    full_names, mini_names = tar_names(full_tar), tar_names(mini_tar)
    assert mini_names <= full_names, f"minimal tar has names the full one lacks: {sorted(mini_names - full_names)}"
    missing = [p for p in case.for_dialect(case.present, builder) if p not in mini_names]
    assert not missing, f"read by the build but not in the minimal tar: {missing}"
    for p in case.for_dialect(case.absent, builder):
        assert os.path.lexists(root / p), f"case {case.id}: {p} is not even in the tree"
        assert p not in mini_names, f"{p} is read by no instruction but is in the minimal tar"
    if case.same or why is not None:
        assert mini_tar == full_tar, "the minimal tar should be the full one"
    else:
        assert len(mini_tar) < len(full_tar)
        leaked = [p for p in UNUSED_PATHS if p in mini_names]
        assert not leaked, f"unused files in the minimal tar: {leaked}"

    # What the engine builds from each.
    dockerfile = dockerfile_name_in_tar(full)
    assert dockerfile == dockerfile_name_in_tar(mini)
    if mini_tar == full_tar:
        # The same bytes with the same parameters: one build stands for both.
        rf = rm = build(dockerd, full_tar, builder, case, dockerfile)
    else:
        with ThreadPoolExecutor(2) as pool:  # the daemon builds both at once
            f_full = pool.submit(build, dockerd, full_tar, builder, case, dockerfile)
            f_mini = pool.submit(build, dockerd, mini_tar, builder, case, dockerfile)
            rf, rm = f_full.result(), f_mini.result()
    images = {r.image_id for r in (rf, rm) if r.image_id}
    try:
        if case.fails:
            assert source_warnings(mini), "ctxpack should have warned that the build will fail"
            assert not rf.ok, f"the full context should fail to build:\n{rf.describe()}"
            assert not rm.ok, f"the minimal context should fail to build:\n{rm.describe()}"
            assert normalised_error(rm.error) == normalised_error(rf.error)
            return
        assert rf.ok, f"full context:\n{rf.describe()}"
        assert rm.ok, f"minimal context (patterns {mini.selection.patterns if mini.selection else None}):\n{rm.describe()}"
        assert rf.image_id and rm.image_id
        diffs = diff_trees(export_tree(dockerd, rf.image_id), export_tree(dockerd, rm.image_id))
        assert not diffs, "the images differ:\n" + "\n".join(diffs[:40])
        assert image_config(dockerd, rm.image_id) == image_config(dockerd, rf.image_id)
    finally:
        for image_id in images:
            dockerd.client.remove_image(image_id)


def test_classic_needs_the_stages_before_the_target(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    """The difference between the dialects is real: the classic builder
    builds every stage before the target, so the BuildKit-minimal tar (no
    ``skipped-src/``) fails with it, and the classic-minimal tar keeps it."""
    case = next(c for c in CASES if c.id == "multistage-target")
    root = write_tree(tmp_path / "ctx", case)
    _, bk_mini = open_pair(root, case, "buildkit")
    _, classic_mini = open_pair(root, case, "classic")
    bk_tar = pack_bytes(bk_mini)
    assert "skipped-src/s.txt" not in tar_names(bk_tar)
    assert "skipped-src/s.txt" in tar_names(pack_bytes(classic_mini))
    r = build(dockerd, bk_tar, "classic", case, dockerfile_name_in_tar(bk_mini))
    if r.image_id:
        dockerd.client.remove_image(r.image_id)
    assert not r.ok, f"the classic builder should need skipped-src/:\n{r.describe()}"
    assert "skipped-src" in (r.error or ""), r.describe()
