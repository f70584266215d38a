"""End to end: contexts packed by ctxpack, built by a real Docker engine.

The ``dockerd`` fixture (tests/dockerd.py, conftest.py) runs a private
dockerd with a busybox base image ``bb``.  Each test packs a context with
ctxpack, POSTs it to ``/build`` with the legacy builder (``version=1``) and
with BuildKit (``version=2``, ``networkmode=none``: the daemon has no
bridge), exports the built image's filesystem and compares what ``COPY .
/ctx`` put there with the entries ctxpack listed.

Engine facts these tests pin down (Debian's docker.io 20.10.24, API 1.41);
see tests/dockerd.py for the wire details:

* the legacy builder removes ``Dockerfile`` and ``.dockerignore`` from the
  context, each one when ``.dockerignore`` excludes it; BuildKit, given a
  tar, applies no ignore rules at all, so both stay visible to ``COPY .``;
* an entry under an excluded directory comes back with that directory
  implied (mode 0755) in both builders; symlinks (dangling too), hard links,
  empty directories and 0600/0700 modes are kept by both;
* the legacy builder's ``COPY`` clears setuid/setgid bits (lchown after the
  copy; moby/moby#36239, open); BuildKit keeps them;
* a zstd body is rejected by both builders (differently), see
  ``dockerd.ZSTD_BEHAVIOUR_20_10`` and ``dockerd.zstd_context_supported``.
"""

from __future__ import annotations

import io
import os
import stat as st
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
from ctxpack import list_entries, open_context
from ctxpack.tar.writer import PackOptions, iter_tar, pack
from ctxpack.tar.sinks import CallbackSink

BUILDERS: dict[str, dict[str, Any]] = {
    "classic": {"version": "1"},
    "buildkit": {"version": "2", "extra_query": {"networkmode": "none"}},
}

SETID = st.S_ISUID | st.S_ISGID


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, bytes | str], modes: dict[str, int] | None = None) -> Path:
    """Files (``name/`` for an empty directory), then explicit modes (so the
    umask does not matter)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    for rel, mode in (modes or {}).items():
        os.chmod(root / rel, mode)
    return root


class Packed:
    """A context packed by ctxpack, with what ctxpack listed."""

    def __init__(self, root: Path, *, compress: str = "none", dialect: str = "classic"):
        self.root = root
        self.ctx = open_context(root, dialect=dialect)
        self.entries = list(list_entries(self.ctx))
        self.compress = compress
        buf = bytearray()
        pack(self.ctx, CallbackSink(buf.extend), PackOptions(compress=compress))
        self.body = bytes(buf)

    def stream(self) -> Iterable[bytes]:
        """The same body, streamed chunk by chunk from ctxpack's producer."""
        return iter_tar(self.ctx, PackOptions(compress=self.compress))

    def tar_members(self) -> list[tarfile.TarInfo]:
        assert self.compress in ("none", "gzip")
        with tarfile.open(fileobj=io.BytesIO(self.body), mode="r:*") as tf:
            return tf.getmembers()

    def expected_fs(self, prefix: str = "ctx", *, without: Iterable[str] = ()) -> dict[str, harness.FsEntry]:
        """What ``COPY . /<prefix>`` should produce: every listed entry (modes
        and contents from disk), plus the parent directories a tar implies
        (mode 0755) for entries whose directory was excluded."""
        skip = set(without)
        fs: dict[str, harness.FsEntry] = {}
        for e in self.entries:
            if e.path in skip:
                continue
            assert e.stat is not None, e.path
            mode = st.S_IMODE(e.stat.st_mode)
            name = f"{prefix}/{e.path}"
            if e.kind == "file":
                fs[name] = harness.FsEntry("file", mode, (self.root / e.path).read_bytes())
            elif e.kind == "dir":
                fs[name] = harness.FsEntry("dir", mode, None)
            elif e.kind == "symlink":
                fs[name] = harness.FsEntry("symlink", mode, e.link)
            elif e.kind == "hardlink":
                fs[name] = harness.FsEntry("hardlink", mode, f"{prefix}/{e.link}")
            else:  # pragma: no cover - not used by these trees
                raise AssertionError(f"unexpected entry kind {e.kind} for {e.path}")
        for name in list(fs):
            parent = name.rsplit("/", 1)[0]
            while parent != prefix and parent not in fs:
                fs[parent] = harness.FsEntry("dir", 0o755, None)
                parent = parent.rsplit("/", 1)[0]
        return fs


def compare(actual: dict[str, harness.FsEntry], expected: dict[str, harness.FsEntry], prefix: str = "ctx") -> list[str]:
    """Differences between two trees below ``prefix`` (the prefix directory
    itself is the COPY destination, not part of the context), hard links
    compared as groups of names whichever name the tar stored first."""
    a = {k: v for k, v in actual.items() if k.startswith(prefix + "/")}
    e = {k: v for k, v in expected.items() if k.startswith(prefix + "/")}
    a_res, a_groups = harness.hardlink_groups(a)
    e_res, e_groups = harness.hardlink_groups(e)
    diffs = []
    for k in sorted(set(a_res) | set(e_res)):
        if k not in a_res:
            diffs.append(f"missing in image: {k} {e_res[k].type} {oct(e_res[k].mode)}")
        elif k not in e_res:
            diffs.append(f"unexpected in image: {k} {a_res[k].type} {oct(a_res[k].mode)}")
        elif a_res[k] != e_res[k]:
            x, y = a_res[k], e_res[k]
            diffs.append(
                f"differs: {k}: image {x.type} {oct(x.mode)} {x.data!r:.60}"
                f" != context {y.type} {oct(y.mode)} {y.data!r:.60}"
            )
    if a_groups != e_groups:
        diffs.append(f"hard-link groups differ: image {sorted(map(sorted, a_groups))} != context {sorted(map(sorted, e_groups))}")
    return diffs


def build_ok(daemon: harness.Dockerd, body: Any, builder: str, **kw: Any) -> str:
    return build_result(daemon, body, builder, **kw).image_id  # type: ignore[return-value]


def build_result(daemon: harness.Dockerd, body: Any, builder: str, **kw: Any) -> harness.BuildResult:
    result = daemon.build(body, **BUILDERS[builder], **kw)
    assert result.ok, result.describe()
    assert result.image_id is not None and result.image_id.startswith("sha256:")
    return result


# --------------------------------------------------------------------------
# (a) a plain and a gzip context build on both builders
# --------------------------------------------------------------------------

SIMPLE_TREE: dict[str, bytes | str] = {
    "Dockerfile": "FROM bb\nCOPY . /ctx\nRUN ls -la /ctx > /listing\n",
    ".dockerignore": "*.log\nbuild/\n**/__pycache__\n",
    "a.txt": "a\n",
    "debug.log": "excluded\n",
    "build/out.bin": "excluded\n",
    "src/main.py": "print('hi')\n",
    "src/__pycache__/main.cpython-311.pyc": "excluded\n",
    "src/nested/keep.log": "kept: *.log only matches at the root\n",
    "bin.dat": bytes(range(256)) * 64,
}


@pytest.mark.parametrize("compress", ["none", "gzip"])
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_classic_context_builds(dockerd: harness.Dockerd, tmp_path: Path, builder: str, compress: str) -> None:
    root = write_tree(tmp_path / "ctx", SIMPLE_TREE)
    p = Packed(root, compress=compress)
    listed = [e.path for e in p.entries]
    assert "debug.log" not in listed and "build" not in listed
    assert "src/__pycache__" not in listed and "src/nested/keep.log" in listed
    # The tar holds exactly what ctxpack listed, in that order.
    assert [m.name for m in p.tar_members()] == listed

    # Plain: the bytes; gzip: streamed straight from ctxpack's producer.
    body = p.body if compress == "none" else p.stream()
    result = build_result(dockerd, body, builder, content_encoding="gzip" if compress == "gzip" else None)
    if builder == "classic":
        assert "Step 2/3 : COPY . /ctx" in result.stream_text
    else:
        # The uploaded tar reaches BuildKit as a remote context.
        names = [v["name"] for v in result.buildkit["vertexes"]]
        assert "[internal] load remote build context" in names
        assert "[2/3] COPY . /ctx" in names
    fs = dockerd.export_fs(result.image_id)  # type: ignore[arg-type]
    assert compare(fs, p.expected_fs()) == []
    # RUN ran in the busybox base and saw the context.
    listing = fs["listing"]
    assert listing.type == "file" and isinstance(listing.data, bytes)
    assert b" a.txt\n" in listing.data and b" src\n" in listing.data and b"debug.log" not in listing.data


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_build_failure_reported(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    root = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM bb\nCOPY . /ctx\nRUN echo out-of-run; ls /ctx; false\n",
        "a.txt": "a\n",
    })
    result = dockerd.build(Packed(root).body, **BUILDERS[builder])
    assert not result.ok and result.image_id is None
    if builder == "classic":
        assert result.error == "The command '/bin/sh -c echo out-of-run; ls /ctx; false' returned a non-zero code: 1"
        assert "out-of-run\nDockerfile\na.txt\n" in result.stream_text
    else:
        assert result.error == "executor failed running [/bin/sh -c echo out-of-run; ls /ctx; false]: exit code: 1"
        logs = b"".join(lg["msg"] for lg in result.buildkit["logs"])
        assert b"out-of-run\nDockerfile\na.txt\n" in logs
        assert any(v["error"] for v in result.buildkit["vertexes"])
    assert result.status == 200


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_from_scratch_copy(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    root = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
        "x/y/z.txt": "z\n",
        ".dockerignore": "x/y\n!x/y/z.txt\n",
        "x/y/other.txt": "excluded\n",
    })
    p = Packed(root)
    image = build_ok(dockerd, p.body, builder)
    fs = dockerd.export_fs(image)
    assert compare(fs, p.expected_fs()) == []
    # Nothing but /ctx came from the build (the rest is the daemon's init layer).
    assert not any(k.startswith("bin/") for k in fs)


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_excluded_dockerfile_and_dockerignore(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    """The classic CLI (and ctxpack's classic dialect) always sends Dockerfile
    and .dockerignore; the legacy builder then removes both from the context
    when .dockerignore excludes the Dockerfile.  BuildKit, handed a tar,
    applies no ignore rules: both stay visible to COPY."""
    root = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
        ".dockerignore": "Dockerfile\n.dockerignore\n*.tmp\n",
        "a.txt": "a\n",
        "junk.tmp": "excluded\n",
    })
    p = Packed(root)
    forced = {e.path for e in p.entries if e.forced}
    assert forced == {"Dockerfile", ".dockerignore"}
    assert {m.name for m in p.tar_members()} == {"Dockerfile", ".dockerignore", "a.txt"}

    image = build_ok(dockerd, p.body, builder)
    fs = dockerd.export_fs(image, under="ctx")
    if builder == "classic":
        expected = p.expected_fs(without=forced)
        assert "ctx/Dockerfile" not in fs and "ctx/.dockerignore" not in fs
    else:
        expected = p.expected_fs()
        assert fs["ctx/Dockerfile"].data == b"FROM scratch\nCOPY . /ctx/\n"
    assert compare(fs, expected) == []


def test_dockerignore_excluded_alone(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    """The legacy builder judges .dockerignore and the Dockerfile one by one
    against the rules: excluding only .dockerignore removes only it."""
    root = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
        ".dockerignore": ".dockerignore\n",
        "a.txt": "a\n",
    })
    p = Packed(root)
    assert {e.path for e in p.entries if e.forced} == {".dockerignore"}
    image = build_ok(dockerd, p.body, "classic")
    fs = dockerd.export_fs(image, under="ctx")
    assert compare(fs, p.expected_fs(without={".dockerignore"})) == []
    assert "ctx/Dockerfile" in fs


# --------------------------------------------------------------------------
# (b) zstd
# --------------------------------------------------------------------------


def _version(engine: str, api: str, *components: str) -> dict[str, Any]:
    return {
        "Version": engine,
        "ApiVersion": api,
        "Components": [{"Name": c, "Version": engine} for c in (components or ("Engine",))],
    }


@pytest.mark.parametrize(
    ("info", "builder", "expected"),
    [
        (_version("20.10.24+dfsg1", "1.41"), "1", False),
        (_version("20.10.24+dfsg1", "1.41"), "2", False),
        (_version("23.0.0", "1.42"), "1", True),
        (_version("23.0.0", "1.42"), "2", False),
        (_version("24.0.7", "1.43"), "1", True),
        (_version("29.7.2", "1.52"), "1", True),
        (_version("29.7.2", "1.52"), "2", False),
        (_version("22.06.0-beta.0", "1.42"), "1", False),
        (_version("23.0.0", "1.41"), "1", False),
        (_version("4.9.3", "1.41", "Podman Engine"), "1", False),
        (_version("5.0.0", "1.44", "Podman Engine"), "1", False),
        ({"Version": "", "ApiVersion": "1.43"}, "1", False),
        ({}, "1", False),
        ({"Version": "dev", "ApiVersion": "1.45"}, "1", False),
    ],
)
def test_zstd_negotiation(info: dict[str, Any], builder: str, expected: bool) -> None:
    assert harness.zstd_context_supported(info, builder=builder) is expected


def test_parse_engine_version() -> None:
    assert harness.parse_engine_version("20.10.24+dfsg1") == (20, 10, 24)
    assert harness.parse_engine_version("v1.41") == (1, 41)
    assert harness.parse_engine_version("23.0.0-rc.1") == (23, 0, 0)
    assert harness.parse_engine_version("dev") == ()


@pytest.mark.parametrize("size", ["short", "long"])
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_zstd_body(dockerd: harness.Dockerd, tmp_path: Path, builder: str, size: str) -> None:
    files: dict[str, bytes | str] = {"Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "a.txt": "a\n"}
    if size == "long":
        files["random.bin"] = os.urandom(64 * 1024)  # incompressible: body > 512 bytes
    root = write_tree(tmp_path / "ctx", files)
    p = Packed(root, compress="zstd")
    assert p.body[:4] == b"\x28\xb5\x2f\xfd"
    assert (len(p.body) < 512) is (size == "short")
    info = dockerd.version()
    version = BUILDERS[builder]["version"]
    result = dockerd.build(p.body, **BUILDERS[builder], content_encoding="zstd")
    if harness.zstd_context_supported(info, builder=version):
        assert result.ok and result.image_id, result.describe()
        assert compare(dockerd.export_fs(result.image_id), p.expected_fs()) == []
        return
    assert not result.ok, f"engine {info.get('Version')} built a zstd context it should not know"
    if harness.parse_engine_version(info.get("Version", ""))[:2] == (20, 10):
        status, message = harness.zstd_rejection_20_10(version, len(p.body))
        assert result.status == status, result.describe()
        assert result.error is not None
        if version == "1":
            # Not decompressed: read as a plain tar, whose first block is
            # short ("unexpected EOF") or garbage ("invalid tar header").
            assert result.error == message
            assert result.stream_messages == [{"message": message}]
        else:
            # The remote-context sniffing does not know zstd: the body is taken
            # for the Dockerfile, whose first "instruction" is the zstd magic.
            assert result.error.startswith(message), result.error[:300]
            # The engine's message as sent (ctxpack.engine.messages keeps it;
            # build() makes it printable: test_build_trial.py::
            # test_engine_errors_never_print_binary).
            assert result.error[len(message):].startswith("(\ufffd/\ufffd")  # 28 B5 2F FD


def test_live_engine_negotiation(dockerd: harness.Dockerd) -> None:
    info = dockerd.version()
    assert info["ApiVersion"] and info["Version"]
    engine = harness.parse_engine_version(info["Version"])
    assert harness.zstd_context_supported(info, builder="1") is (engine[:2] >= (23, 0))
    assert harness.zstd_context_supported(info, builder="2") is False


# --------------------------------------------------------------------------
# (c) exceptions, links, empty dirs, modes
# --------------------------------------------------------------------------

TRICKY_TREE: dict[str, bytes | str] = {
    "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
    ".dockerignore": "secret\n!secret/keep.txt\nnode_modules\n",
    "a.txt": "hello\n",
    "secret/keep.txt": "re-included\n",
    "secret/drop.txt": "excluded\n",
    "secret/deeper/drop.txt": "excluded\n",
    "node_modules/x/index.js": "excluded\n",
    "private.txt": "0600\n",
    "suid": "#!/bin/sh\necho setuid\n",
    "sgid": "#!/bin/sh\necho setgid\n",
    "hl1": "hard link\n",
    "empty/": "",
    "locked/inner.txt": "in a 0700 dir\n",
    "sub/deep/f": "0640\n",
}

TRICKY_MODES = {
    "private.txt": 0o600,
    "suid": 0o4755,
    "sgid": 0o2755,
    "locked": 0o700,
    "sub/deep/f": 0o640,
    "empty": 0o750,
}


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_tricky_context(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    root = write_tree(tmp_path / "ctx", TRICKY_TREE, TRICKY_MODES)
    os.link(root / "hl1", root / "hl2")
    os.symlink("a.txt", root / "link")
    os.symlink("../nowhere", root / "dangling")
    os.symlink("secret", root / "dirlink")

    p = Packed(root)
    kinds = {e.path: e.kind for e in p.entries}
    assert kinds["secret/keep.txt"] == "file"
    assert "secret" not in kinds and "secret/drop.txt" not in kinds and "node_modules" not in kinds
    assert kinds["link"] == kinds["dangling"] == kinds["dirlink"] == "symlink"
    assert kinds["empty"] == "dir" and kinds["hl2"] == "hardlink"
    members = {m.name: m for m in p.tar_members()}
    assert set(members) == set(kinds)
    assert members["hl2"].islnk() and members["hl2"].linkname == "hl1"
    assert members["suid"].mode == 0o4755 and members["sgid"].mode == 0o2755
    assert members["private.txt"].mode == 0o600

    image = build_ok(dockerd, p.body, builder)
    fs = dockerd.export_fs(image, under="ctx")
    expected = p.expected_fs()
    # The excluded directory comes back only as the implied parent of the
    # re-included file, with the default directory mode.
    assert expected["ctx/secret"] == harness.FsEntry("dir", 0o755, None)
    assert set(k for k in fs if k.startswith("ctx/secret")) == {"ctx/secret", "ctx/secret/keep.txt"}

    if builder == "classic":
        # moby/moby#36239: the legacy builder's COPY chowns after copying,
        # and chown clears setuid/setgid; everything else is preserved.
        for name in ("ctx/suid", "ctx/sgid"):
            assert fs[name].mode == expected[name].mode & ~SETID, fs[name]
            expected[name] = harness.FsEntry("file", expected[name].mode & ~SETID, expected[name].data)
    assert compare(fs, expected) == []
