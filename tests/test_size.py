"""`ctxpack size`: totals equal the docker CLI's upload; budgets; size parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxpack.audit import parse_size
from ctxpack.cli import main
from ctxpack.errors import InputError
from strategies import built, dockerignores, trees
from test_permissions import world_tmp  # noqa: F401  (a fixture: a directory nobody can read)
from trees import make_tree

EXAMPLES = int(os.environ.get("CTXPACK_HYPOTHESIS_EXAMPLES", "150")) // 3


def size_json(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(main, ["size", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.docker_cli
@settings(max_examples=max(EXAMPLES, 20), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_totals_equal_docker_cli_upload(data: st.DataObject, docker_cli: Any) -> None:
    nodes = data.draw(trees())
    ignore = data.draw(dockerignores(nodes))
    with built(nodes, ignore) as root:
        cap = docker_cli.capture(root)
        if cap.refused:
            # No upload, or one cut short at a pattern that broke: ctxpack refuses the rules.
            res = CliRunner().invoke(main, ["size", "--json", "--dialect", "classic", str(root)])
            assert res.exit_code == 2 and "error" in res.stderr, (cap.stderr, res.output)
            return
        regular = [m for m in cap.members if m.isreg()]
        rep = size_json("--dialect", "classic", str(root))
        assert rep["files"] == len(regular)
        assert rep["bytes"] == sum(m.size for m in regular)
        assert rep["entries"] == len(cap.members)


def test_savings_per_rule(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "c",
        {"Dockerfile": b"FROM scratch\n", "node_modules/a/x.js": b"x" * 100, "node_modules/b.js": b"y" * 50,
         "app.log": b"z" * 7, "src/main.py": b"print()\n", "src/big.bin": b"\0" * 4000},
        dockerignore="node_modules\n*.log\n",
    )
    rep = size_json(str(root))
    assert rep["files"] == 4 and rep["bytes"] == 13 + 8 + 4000 + 19  # Dockerfile, main.py, big.bin, .dockerignore
    assert rep["excluded"] == {"files": 3, "bytes": 157}
    rules = {r["text"]: (r["files"], r["bytes"], r["line"]) for r in rep["rules"]}
    assert rules == {"node_modules": (2, 150, 1), "*.log": (1, 7, 2)}
    assert rep["largest"][0] == {"path": "src/big.bin", "bytes": 4000}
    assert rep["directories"][0]["path"] == "src" and rep["directories"][0]["bytes"] == 4008
    assert {"extension": ".bin", "bytes": 4000, "files": 1} in rep["extensions"]


def test_hard_links_count_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "a": b"x" * 10})
    os.link(root / "a", root / "b")
    rep = size_json("--dialect", "classic", str(root))
    assert rep["files"] == 2 and rep["bytes"] == 23 and rep["entries"] == 3


def test_budget_exit_codes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "blob": b"x" * 2000})
    runner = CliRunner()
    ok = runner.invoke(main, ["size", "--max-size", "1MB", "--max-files", "5", str(root)])
    assert ok.exit_code == 0
    over = runner.invoke(main, ["size", "--max-size", "2kB", str(root)])
    assert over.exit_code == 1
    assert "over --max-size 2kB (2,000 bytes)" in over.stderr
    assert runner.invoke(main, ["size", "--max-files", "1", str(root)]).exit_code == 1
    assert runner.invoke(main, ["size", "--max-size", "2 furlongs", str(root)]).exit_code == 2


def test_budget_exit_code_survives_a_closed_pipe(tmp_path: Path) -> None:
    """`ctxpack size --max-size 2kB . | head` in CI (pipefail): the reader
    going away must not turn over budget into exit 0 (found in a trial,
    where it did so whenever head closed before the report's last line)."""
    import subprocess
    import sys

    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "blob": b"x" * 2000})
    r, w = os.pipe()
    os.close(r)  # every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "ctxpack.cli", "size", "--max-size", "2kB", str(root)],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 1, proc.stderr
    assert "over --max-size 2kB (2,000 bytes)" in proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@pytest.mark.parametrize(
    "text,value",
    [("200MB", 200_000_000), ("1kB", 1000), ("1KiB", 1024), ("1.5GiB", 1610612736), ("3 MiB", 3 << 20),
     ("42", 42), ("10b", 10), ("2gb", 2 * 10**9), ("1TiB", 1 << 40)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "1M", "1k", "-1MB", "1.2.3MB", "ten"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(InputError):
        parse_size(text)


def test_text_report_and_no_color(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "src/a.py": b"x" * 3000}, dockerignore="*.log\n")
    res = CliRunner().invoke(main, ["size", str(root)], env={"NO_COLOR": "1"})
    assert res.exit_code == 0
    assert "\x1b[" not in res.output
    assert "Sends 4 entries: 3 files, 3.0 kB" in res.output
    assert "Largest files" in res.output



def test_largest_files_held_in_batches_match_a_full_sort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """size keeps only a batch of candidates for its largest files (not
    every sent path): cut back to ``top`` every few files, the list is what
    sorting all of them gives, ties by path included."""
    import ctxpack
    from ctxpack import audit

    sizes = {f"d{i % 7}/f{i:03d}.bin": b"x" * ((i * 37) % 23) for i in range(300)}
    root = make_tree(tmp_path / "t", sizes | {"Dockerfile": b"FROM scratch\n"})
    want = sorted(((-len(b), p) for p, b in sizes.items()), key=lambda t: t)[:5]
    monkeypatch.setattr(audit, "LARGEST_BATCH", 3)  # cut after every few files
    rep = ctxpack.size(ctxpack.open_context(root), top=5)
    assert [(f.path, f.bytes) for f in rep.largest] == [(p, -b) for b, p in want]


@pytest.mark.parametrize("batch", [1, 2, 4096])
def test_directories_and_extensions_match_a_plain_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """The sums are made a batch of files at a time, a directory's files in
    runs (interrupted by its sub-directories' subtrees, cut by batch ends):
    whatever the batch, every directory row and extension row is what a
    plain count over the files gives (extension: from the name's last dot,
    unless that dot starts the name; lower-cased)."""
    import ctxpack
    from ctxpack import audit

    files = {
        "README": 5, "a.TXT": 7, ".env": 3,
        "src/a.py": 11, "src/b.PY": 13, "src/sub/c.py": 17, "src/sub/deep/d.bin": 19,
        "src/y.tar.gz": 23, "src/.hidden": 29, "src/noext": 31, "src/trail.": 37, "src/..x": 41,
        "src/zz/e.py": 43, "src/zzz.py": 47, "docs/x.md": 53, "docs/sub/y.md": 59,
    } | {f"big/f{i:02d}.{'bin' if i % 3 else 'Bin'}": 100 + i for i in range(12)}
    root = make_tree(tmp_path / "t", {p: b"x" * n for p, n in files.items()})
    monkeypatch.setattr(audit, "LARGEST_BATCH", batch)
    rep = ctxpack.size(ctxpack.open_context(root), top=1000)

    def ext(path: str) -> str:
        name = path.rsplit("/", 1)[-1]
        dot = name.rfind(".")
        return name[dot:].lower() if dot > 0 else "(none)"

    want_ext: dict[str, list[int]] = {}
    for p, n in files.items():
        row = want_ext.setdefault(ext(p), [0, 0])
        row[0] += n
        row[1] += 1
    assert {x.extension: [x.bytes, x.files] for x in rep.extensions} == want_ext
    assert [x.extension for x in rep.extensions] == sorted(want_ext, key=lambda k: (-want_ext[k][0], k))
    assert rep.directories, "top-level directories always have a row"
    for d in rep.directories:
        below = [n for p, n in files.items() if p.startswith(d.path + "/")]
        assert (d.bytes, d.files) == (sum(below), len(below)), d.path
    assert {"src", "docs", "big"} <= {d.path for d in rep.directories}
    assert (rep.files, rep.bytes) == (len(files), sum(files.values()))
    assert [(f.path, f.bytes) for f in rep.largest] == sorted(files.items(), key=lambda kv: (-kv[1], kv[0]))


def test_pruned_directories_are_sized_as_a_full_listing_sizes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the rules keep out is summed without sorting or statting
    directories (fs.regular_usage): the same files and bytes as the lstat of
    every entry (fs.iter_tree) gives -- symlinks, FIFOs and empty
    directories count nothing, a file of two names (a hard link) is on disk
    once and counts once -- and a file
    that vanishes between the listing and its stat is passed over, as the
    builders pass over what they cannot read."""
    import ctxpack
    from ctxpack import fs

    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "keep.txt": b"k",
                                      "out/a.bin": b"x" * 1000, "out/sub/b.bin": b"y" * 300,
                                      "out/sub/deeper/c": b"z" * 7, "out/gone.bin": b"g" * 50},
                     dockerignore="out\n")
    (root / "out" / "empty").mkdir()
    os.symlink("a.bin", root / "out" / "link")
    os.symlink("/etc/passwd", root / "out" / "sub" / "abs-link")
    os.mkfifo(root / "out" / "fifo")
    os.link(root / "out" / "a.bin", root / "out" / "sub" / "hard.bin")

    def listed(top: Path) -> tuple[int, int]:
        regular = {(s.st_dev, s.st_ino): s.st_size for _, s in fs.iter_tree(str(top))
                   if s.st_mode & 0o170000 == 0o100000}
        return len(regular), sum(regular.values())

    assert fs.regular_usage(str(root / "out")) == listed(root / "out") == (4, 1000 + 300 + 7 + 50)
    links: list[tuple[int, int, int]] = []
    assert fs.regular_usage(str(root / "out"), links) == (3, 357)  # the linked names left to the caller
    a = os.stat(root / "out" / "a.bin")
    assert links == [(a.st_dev, a.st_ino, 1000)] * 2
    rep = ctxpack.size(ctxpack.open_context(root))
    assert (rep.excluded_files, rep.excluded_bytes) == (4, 1357)
    assert [(r.text, r.files, r.bytes) for r in rep.rules] == [("out", 4, 1357)]

    real = os.scandir

    def vanishing(path: Any) -> Any:  # gone.bin is removed after the listing, before its stat
        entries = list(real(path))
        if any(e.name == "gone.bin" for e in entries):
            os.unlink(root / "out" / "gone.bin")

        class Listing:
            def __iter__(self) -> Any:
                return iter(entries)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

        return Listing()

    monkeypatch.setattr(fs.os, "scandir", vanishing)
    assert fs.regular_usage(str(root / "out")) == (3, 1307)


def _three_reports(ctx: Any, *, on_error: bool) -> list[Any]:
    """The size report of ``ctx`` measured in process (audit.measure over
    list_entries), by a forked walker, and by the fork's chunked rows
    walked in this process: each as (JSON, the errors handed to on_error)
    or, where the walk raised, (the error's type, message, path)."""
    from ctxpack import audit
    from ctxpack.errors import ContextError
    from ctxpack.walker import list_entries

    out: list[Any] = []
    for how in ("measure", "fork", "rows"):
        errors: list[ContextError] = []
        report = errors.append if on_error else None
        try:
            if how == "measure":
                rep = audit.measure(ctx, lambda: list_entries(ctx, excluded=True, on_error=report), top=1000)
            else:
                rep = audit.measure_context(ctx, top=1000, on_error=report, fork=how == "fork")
        except ContextError as e:
            out.append((type(e).__name__, str(e), e.path))
            continue
        out.append((rep.to_json(), [(type(e).__name__, str(e), e.path) for e in errors]))
    return out


@pytest.mark.parametrize("dialect", ["classic", "buildkit"])
@pytest.mark.parametrize("chunk", [3, 1024])
def test_forked_measure_gives_the_in_process_report(world_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                    dialect: str, chunk: int) -> None:
    """size walks in a forked process where it can (audit.measure_context):
    the report is the in-process one to the byte -- sent files, directories,
    extensions, largest, every rule's savings, hard links, an injected
    Dockerfile and rewritten .dockerignore (classic, Dockerfile outside the
    context) -- also when a file vanishes between its directory's listing
    and its stat (sent or excluded: passed over alike), and, run as nobody,
    for an unreadable directory and file: the same errors naming the same
    paths, in the same order, or with no on_error the same error raised."""
    from ctxpack import audit, fs
    from privileges import as_nobody

    files = {f"src/m{i:02d}/f{j}.{'py' if j % 2 else 'TXT'}": b"x" * (i * 7 + j) for i in range(12) for j in range(4)}
    files |= {"a.log": b"l" * 30, "src/keep.log": b"k" * 5, "out/a.bin": b"o" * 500, "out/sub/b.bin": b"p" * 70,
              "src/gone.txt": b"g" * 9, "src/gone.log": b"h" * 11, "priv/secret": b"s" * 3, "zz-opaque": b"q" * 4,
              ".dockerignore": b"**/*.log\n!src/keep.log\nout\nsrc/m03\n"}
    root = make_tree(world_tmp / "ctx", files)
    os.link(root / "src/m01/f1.py", root / "src/m02/hard.py")
    os.symlink("m01", root / "src" / "link")
    os.mkfifo(root / "src" / "fifo")
    os.chmod(root / "src", 0o777)  # nobody removes src/gone.*
    os.chmod(root / "priv", 0)
    os.chmod(root / "zz-opaque", 0)
    outside = world_tmp / "Dockerfile.outside"
    outside.write_text("FROM scratch\nCOPY . /\n")
    monkeypatch.setattr(audit, "CHUNK", chunk)
    monkeypatch.setattr(audit, "LARGEST_BATCH", max(2, chunk // 2))
    real = fs.scandir_fd

    def vanishing(path: str) -> Any:  # src/gone.* go after src is listed, before their stat
        listed = real(path)
        if path.endswith("/src"):
            for name in ("gone.txt", "gone.log"):
                with __import__("contextlib").suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
        return listed

    monkeypatch.setattr(fs, "scandir_fd", vanishing)

    def measured(on_error: bool) -> list[Any]:
        results = []
        for dockerfile in (None, str(outside)):
            ctx = ctxpack.open_context(root, dialect=dialect, dockerfile=dockerfile)
            for how in _three_reports(ctx, on_error=on_error):
                for name, data in (("gone.txt", b"g" * 9), ("gone.log", b"h" * 11)):
                    (root / "src" / name).write_bytes(data)  # back for the next run
                results.append(how)
        return results

    import ctxpack

    status, runs = as_nobody(lambda: measured(True) + measured(False))
    assert status == "ok", runs
    for i in range(0, len(runs), 3):
        assert runs[i] == runs[i + 1] == runs[i + 2], i
    rep, errors = runs[0]
    assert {e[2] for e in errors} == {f"{root}/priv", f"{root}/zz-opaque"}, errors
    assert all(e[2] in e[1] for e in errors)  # each message names its path
    for raised in runs[6:]:  # no on_error: the first unreadable path raises, the directory
        assert raised[0] == "ContextError" and raised[2] == f"{root}/priv", raised
    paths = {f["path"] for f in rep["largest"]}
    assert "src/gone.txt" not in paths and "src/m01/f1.py" in paths
    assert {r["text"]: (r["files"], r["bytes"]) for r in rep["rules"]}["**/*.log"] == (1, 30)  # gone.log passed over
    # src/m*/ but m03 (44: src/m02/hard.py is a link to src/m01/f1.py), src/keep.log, .dockerignore, zz-opaque
    assert rep["files"] == 44 + 3


def test_forked_walker_helps_size_the_pruned_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its walk is done, the forked walker sizes part of what is below
    the pruned directories (audit._Share: it asks, this process hands it
    every second directory left): the report is still the in-process one to
    the byte, every rule's savings included -- a file of two names once, no
    symlink, FIFO or empty directory counted -- whoever counted what.  This
    process is slowed down here (each directory listing sleeps) so that the
    walker surely asks while there is work left."""
    import time

    import ctxpack
    from ctxpack import audit
    from ctxpack.walker import list_entries

    files = {"Dockerfile": b"FROM scratch\n", "keep/a.txt": b"a" * 3}
    for top in ("node_modules", "pkg/node_modules", "out", "cache"):
        for i in range(6):
            for j in range(3):
                files[f"{top}/d{i}/s{j}/f.bin"] = b"x" * (len(top) + i * 10 + j)
            files[f"{top}/d{i}/top.txt"] = b"t" * i
    root = make_tree(tmp_path / "c", files, dockerignore="**/node_modules\nout\ncache/d*\n")
    os.link(root / "out" / "d1" / "top.txt", root / "cache" / "d2" / "hard.txt")
    os.symlink("../d1", root / "out" / "d0" / "link")
    os.mkfifo(root / "cache" / "d3" / "fifo")
    (root / "out" / "d5" / "empty").mkdir()
    ctx = ctxpack.open_context(root)
    expected = audit.measure(ctx, lambda: list_entries(ctx, excluded=True), top=1000).to_json()

    parent = os.getpid()
    real = audit.regular_in
    helped: list[int] = []
    real_helped = audit._Pruned.add_helped

    def slow_here(directory: str, push: Any, links: Any) -> tuple[int, int]:
        if os.getpid() == parent:
            time.sleep(0.01)
        return real(directory, push, links)

    def add_helped(self: Any, sums: dict[int, list[int]], links: Any) -> None:
        helped.append(sum(n for n, _ in sums.values()))
        real_helped(self, sums, links)

    monkeypatch.setattr(audit, "regular_in", slow_here)
    monkeypatch.setattr(audit._Pruned, "add_helped", add_helped)
    monkeypatch.setattr(audit, "CHUNK", 2)
    rep = audit.measure_context(ctx, top=1000, fork=True)
    assert rep.to_json() | {"elapsed": 0} == expected | {"elapsed": 0}
    assert expected["excluded"] == {"files": 4 * 6 * 4, "bytes": rep.excluded_bytes}
    assert len(helped) == 1 and 0 < helped[0] < rep.excluded_files, helped  # both counted a part
    in_process = audit.measure_context(ctx, top=1000, fork=False)
    assert in_process.to_json() == rep.to_json() and helped == [helped[0]]  # no one to help: all counted here


@pytest.mark.parametrize("where", ["regular_usage", "_read_exactly"])
def test_a_walker_dying_while_it_helps_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              where: str) -> None:
    """If the forked walker dies while it helps (in the first directory it
    was handed, or once it has asked for work, before reading it), size
    says so (WalkerDiedError, exit code 4 in the CLI), whether this process
    is sending it work or waiting for its sums then: no hang, no
    broken-pipe error."""
    import time

    import ctxpack
    from ctxpack import audit
    from ctxpack.errors import WalkerDiedError

    files = {"Dockerfile": b"FROM scratch\n"}
    files |= {f"out/d{i}/s{j}/f": b"x" for i in range(8) for j in range(4)}
    root = make_tree(tmp_path / "c", files, dockerignore="out\n")
    parent = os.getpid()
    real = audit.regular_in

    def slow_here(directory: str, push: Any, links: Any) -> tuple[int, int]:
        if os.getpid() == parent:
            time.sleep(0.01)
        return real(directory, push, links)

    def die(*args: Any) -> Any:
        os._exit(3)

    monkeypatch.setattr(audit, "regular_in", slow_here)
    monkeypatch.setattr(audit, where, die)  # only the walker's help calls either in measure_context
    started = time.monotonic()
    with pytest.raises(WalkerDiedError, match="exit status 3"):
        audit.measure_context(ctxpack.open_context(root), fork=True)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("how", ["measure", "fork", "in-process"])
def test_a_kept_out_file_of_several_names_counts_once(tmp_path: Path, how: str) -> None:
    """A file with several names below the pruned directories is on disk
    once, so it is kept out once (as lint and the tar count it): for the
    first excluded entry in walk order holding one of its names, and that
    entry's rule -- also when the names are in different pruned
    directories, or one is an excluded file, and whichever process sized
    which part of them."""
    from ctxpack import audit
    from ctxpack.walker import list_entries

    import ctxpack

    files = {"Dockerfile": b"FROM scratch\n", "a/node_modules/x/big.bin": b"b" * 1000,
             "a/node_modules/x/small": b"s" * 3, "b/cache/c.bin": b"c" * 20}
    files |= {f"b/cache/d{i}/f": b"f" * i for i in range(1, 6)}
    root = make_tree(tmp_path / "c", files, dockerignore="**/node_modules\nb/cache\n**/*.log\n")
    os.link(root / "a/node_modules/x/big.bin", root / "a/node_modules/again.bin")  # same directory's subtree
    os.link(root / "a/node_modules/x/big.bin", root / "b/cache/d3/third.bin")  # a later pruned dir, other rule
    os.link(root / "b/cache/c.bin", root / "b/cache/d5/c2.bin")
    os.link(root / "b/cache/c.bin", root / "a/c.log")  # an excluded file, first in walk order
    ctx = ctxpack.open_context(root)
    if how == "measure":
        rep = audit.measure(ctx, lambda: list_entries(ctx, excluded=True), top=100)
    else:
        rep = audit.measure_context(ctx, top=100, fork=how == "fork")
    assert (rep.excluded_files, rep.excluded_bytes) == (1 + 1 + 1 + 5, 1000 + 3 + 20 + 15)
    assert {r.text: (r.files, r.bytes) for r in rep.rules} == {
        "**/node_modules": (2, 1003), "**/*.log": (1, 20), "b/cache": (5, 15)}


def _pruned_by_walk(ctx: Any) -> list[str]:
    from ctxpack.walker import EntryKind, list_entries

    return [e.path for e in list_entries(ctx, excluded=True) if not e.included and e.kind == EntryKind.DIR]


@settings(max_examples=max(EXAMPLES, 20), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_pruned_ahead_finds_what_the_walk_prunes(data: st.DataObject) -> None:
    """walker.pruned_ahead (directories only, no stat) names exactly the
    directories the walk reports as pruned, each once, for generated
    trees and ignore files (exceptions, wildcards, both dialects)."""
    import ctxpack
    from ctxpack.walker import pruned_ahead

    nodes = data.draw(trees())
    ignore = data.draw(dockerignores(nodes))
    with built(nodes, ignore) as root:
        for dialect in ("classic", "buildkit"):
            try:
                ctx = ctxpack.open_context(root, dialect=dialect)
                walked = _pruned_by_walk(ctx)
            except ctxpack.CtxpackError:
                continue  # a broken pattern: the walk says so, the guess just ends
            ahead = [p for p in pruned_ahead(ctx) if p is not None]
            assert sorted(ahead) == sorted(walked) and len(set(ahead)) == len(ahead), (dialect, ignore)


@pytest.mark.parametrize("guess", ["right", "wrong", "late"])
def test_sizing_ahead_of_the_walker_counts_only_what_it_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                guess: str) -> None:
    """This process sizes the directories the walker will prune before it
    gets there (audit._Pruned._size_ahead), and a sum counts only for a
    directory the walker then reports, once: the report is the in-process
    one to the byte whether the guesses are right, wrong (directories the
    walk sends, a directory that does not exist, the context's root), or
    reported by the walker while being sized (the walker is slowed here, so
    some guesses are done before it reports them)."""
    import time

    from ctxpack import audit, walker

    import ctxpack

    files = {"Dockerfile": b"FROM scratch\n", "a/keep.txt": b"k" * 3}
    for top in ("a/node_modules", "b/node_modules", "c/out", "node_modules"):
        for i in range(5):
            for j in range(3):
                files[f"{top}/d{i}/s{j}/f.bin"] = b"x" * (len(top) + i * 10 + j)
    root = make_tree(tmp_path / "c", files, dockerignore="**/node_modules\nc/out\n")
    os.link(root / "a/node_modules/d1/s1/f.bin", root / "c/out/d2/hard.bin")
    ctx = ctxpack.open_context(root)
    expected = audit.measure(ctx, lambda: walker.list_entries(ctx, excluded=True), top=1000).to_json()
    real_ahead = walker.pruned_ahead(ctx)
    right = [p for p in real_ahead if p is not None]
    assert right == ["node_modules", "a/node_modules", "b/node_modules", "c/out"]  # breadth first
    guesses = {"right": right, "wrong": ["a", "c", "nowhere", "", "a/keep.txt"] + right[:1],
               "late": right[::-1]}[guess]
    sized_ahead: list[str] = []
    real_size_ahead = audit._Pruned._size_ahead

    def spy(self: Any, chunks: Any, received: int) -> None:
        real_size_ahead(self, chunks, received)
        sized_ahead.extend(p for p in self.guessed if p not in sized_ahead)

    parent = os.getpid()
    real_rows = audit._size_rows

    def slow_rows(*args: Any, **kw: Any) -> Any:
        rows = real_rows(*args, **kw)
        while True:
            if os.getpid() != parent:
                time.sleep(0.02)  # the walker, before it makes a chunk: slow, so that this process gets ahead
            try:
                item = next(rows)
            except StopIteration:
                return
            yield item

    monkeypatch.setattr(audit, "pruned_ahead", lambda ctx: iter([None, *guesses]))
    monkeypatch.setattr(audit._Pruned, "_size_ahead", spy)
    monkeypatch.setattr(audit, "_size_rows", slow_rows)
    monkeypatch.setattr(audit, "CHUNK", 2)
    rep = audit.measure_context(ctx, top=1000, fork=True)
    assert rep.to_json() | {"elapsed": 0} == expected | {"elapsed": 0}
    assert sized_ahead, "nothing was sized ahead of the walker"
