"""Building scratch context trees for tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load_fixture(name: str) -> Any:
    with open(FIXTURES / name, encoding="utf-8") as f:
        return json.load(f)


def fs(path: str) -> bytes:
    """A test path as file-system bytes (surrogate escapes become raw bytes)."""
    return path.encode("utf-8", "surrogateescape")


def make_tree(
    root: str | os.PathLike[str],
    files: dict[str, bytes] | list[str] = (),  # type: ignore[assignment]
    dirs: list[str] = (),  # type: ignore[assignment]
    symlinks: dict[str, str] | None = None,
    dockerignore: str | bytes | None = None,
) -> Path:
    """Create files (with parents), empty directories, symlinks and .dockerignore."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(files, list):
        files = {p: b"x" for p in files}
    for rel, data in files.items():
        p = os.path.join(fs(str(root)), fs(rel))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    for rel in dirs:
        os.makedirs(os.path.join(fs(str(root)), fs(rel)), exist_ok=True)
    for rel, target in (symlinks or {}).items():
        p = os.path.join(fs(str(root)), fs(rel))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(fs(target), p)
    if dockerignore is not None:
        data = dockerignore.encode("utf-8", "surrogateescape") if isinstance(dockerignore, str) else dockerignore
        (root / ".dockerignore").write_bytes(data)
    return root


def vector_tree(root: Path, v: dict[str, Any]) -> Path:
    """The tree of one row of fixtures/vectors.json."""
    files = {v["dockerfile"] or "Dockerfile": b"FROM scratch\n"}
    dirs = []
    if v["kind"] == "dir":
        dirs.append(v["path"])
    elif v["path"] not in (".dockerignore",):
        files.setdefault(v["path"], b"x")
    for extra in v["extra_paths"]:
        files.setdefault(extra, b"x")
    return make_tree(root, files, dirs, dockerignore=v["dockerignore"])


def tar_names(members: list[Any]) -> list[str]:
    """Entry names of captured tar members, directories with a trailing ``/``
    (``tarfile`` strips it), undecodable bytes as surrogate escapes."""
    return [m.name + "/" if m.isdir() else m.name for m in members]


def make_chain(root: Path, depth: int, name: str = "d") -> None:
    """``root/d/d/.../d/leaf.txt``, ``depth`` directories, made through
    directory fds (the path is too long for the kernel to resolve)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"leaf\n")
        os.close(leaf)
    finally:
        os.close(fd)


def remove_chain(top: Path) -> None:
    """Remove a tree of any depth without recursion (``shutil.rmtree``
    recurses once per level and fails past Python's recursion limit)."""
    if not top.exists():
        return
    stack = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        fd = stack[-1]
        sub = None
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                sub = entry.name
                break
            os.unlink(entry.name, dir_fd=fd)
        if sub is not None:
            stack.append(os.open(sub, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
            continue
        os.close(stack.pop())
        if stack:
            # Its only remaining entry is the emptied directory: find and remove it.
            for entry in os.scandir(stack[-1]):
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.name, dir_fd=stack[-1])
                    break
    os.rmdir(top)
