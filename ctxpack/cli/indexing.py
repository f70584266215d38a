"""``fingerprint``, ``snapshot``, ``diff`` and ``cache``: the index of digests."""

from __future__ import annotations

import os
import shlex
import sys

import click

from ctxpack.errors import InputError
from ctxpack.cli.common import context_options, echo_chunks, handle_errors, minimal_options, open_ctx, say, to_json
from ctxpack.printing import diff_chunks, diff_exit_code, fingerprint_chunks
from ctxpack.cli.warm import quick, warm
from ctxpack.units import format_size


@click.command("fingerprint")
@click.argument("directory", default=".", type=click.Path())
@context_options
@minimal_options
@click.option("--json", "as_json", is_flag=True, help="Print {fingerprint, entries, files, bytes, hashed, hashed_bytes}.")
@handle_errors
def fingerprint_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
                        minimal: bool, target: str | None, platform: str | None, build_args: tuple[str, ...], as_json: bool) -> None:
    """Print one stable digest of exactly what the build context contains.

    Same content, same fingerprint (fresh clones included); mtimes and
    ownership do not count.  Recipe: docs/fingerprint.md.
    """
    # A running `ctxpack watch` answers at once, before the context is opened.
    fp = quick("fingerprint", directory, dockerfile, dialect, ignore_file, minimal, target, build_args, platform)
    if fp is None:
        from ctxpack.index.snapshots import fingerprint

        ctx = open_ctx(directory, dockerfile, dialect, ignore_file, minimal, target, build_args, platform=platform)
        fp = warm("fingerprint", ctx) or fingerprint(ctx)
    echo_chunks(fingerprint_chunks(fp, as_json))  # the renderer a watcher answering the fast path uses too


@click.command("snapshot")
@click.argument("directory", default=".", type=click.Path())
@context_options
@handle_errors
def snapshot_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None) -> None:
    """Record the context's entries and digests; `ctxpack diff` compares with it."""
    from ctxpack.index.snapshots import snapshot

    ctx = open_ctx(directory, dockerfile, dialect, ignore_file)
    fp = snapshot(ctx)
    echo_chunks(fingerprint_chunks(fp, False))


@click.command("diff")
@click.argument("directory", default=".", type=click.Path())
@context_options
@click.option("--json", "as_json", is_flag=True,
              help='Print {"since", "added", "removed", "modified"}, each a list of {"path", "kind", "bytes", '
                   '"change"}; "bytes" is the content size: 0 for directories, symlinks and devices.')
@click.option("--exit-code", is_flag=True, help="Exit 1 when there are changes (like git diff).")
@handle_errors
def diff_command(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None, as_json: bool, exit_code: bool) -> None:
    """List entries added, removed and modified since the last snapshot.

    Regular files are shown with their size; directories, symlinks and
    devices with none (they carry no content bytes).
    """
    from ctxpack.watch.client import NoSnapshot

    # A running `ctxpack watch` answers at once, before the context is opened.
    delta = quick("diff", directory, dockerfile, dialect, ignore_file)
    if delta is None:
        from ctxpack.index.snapshots import diff

        ctx = open_ctx(directory, dockerfile, dialect, ignore_file)
        delta = warm("diff", ctx) or diff(ctx)
    if delta is None or isinstance(delta, NoSnapshot):
        from ctxpack.index.store import lost_snapshot

        root = os.path.realpath(directory)
        lost = lost_snapshot(root)
        if lost is not None:
            err = InputError(f"no snapshot of {root} ({dialect}) in the index: {lost}")
            err.hint = "run 'ctxpack snapshot' or 'ctxpack pack --snapshot' to take a new one"
        else:
            err = InputError(f"no snapshot of {root} ({dialect}) yet: run 'ctxpack snapshot' or 'ctxpack pack --snapshot' first")
            err.hint = _other_snapshot(directory, dockerfile, dialect, ignore_file)
        raise err
    echo_chunks(diff_chunks(delta, as_json))  # the renderer a watcher answering the fast path uses too
    sys.exit(diff_exit_code(delta, exit_code))


@click.group("cache")
def cache_group() -> None:
    """Show or empty ctxpack's index of digests and snapshots."""


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def cache_info(as_json: bool) -> None:
    """Where the index is and what it holds (it is not created if absent),
    with the other ctxpack versions' indexes and the copies moved aside as
    unusable in the same directory."""
    from ctxpack.index.store import DB_NAME, CacheInfo, Index, cache_dir, cache_files

    path = os.path.join(cache_dir(), DB_NAME)
    exists = os.path.exists(path)
    if exists:
        with Index() as idx:
            info = idx.info()
    else:
        around = cache_files()
        info = CacheInfo(path, 0, 0, 0, 0, len(around.aside), sum(a[1] for a in around.aside), around.others)
    if as_json:
        d = {k: v for k, v in info.__dict__.items() if k != "others"}
        others = [{"path": o.path, "schema": o.schema, "bytes": o.bytes, "newer": o.newer} for o in info.others]
        click.echo(to_json(d | {"exists": exists, "other_versions": others}))
        return
    if not exists:
        click.echo(f"{path}: no index yet (fingerprint, snapshot, diff and pack --snapshot create it)")
    else:
        click.echo(f"{info.path}: {format_size(info.bytes)}, {info.contexts} contexts, {info.files:,} files, {info.snapshots} snapshots")
    for o in info.others:
        click.echo(f"other version: {o.describe()}: {format_size(o.bytes)} (kept for that version)")
    if info.aside:
        click.echo(f"moved aside as unusable: {_copies(info.aside)}, {format_size(info.aside_bytes)} "
                   "('ctxpack cache clear --all' removes them)")


@cache_group.command("clear")
@click.argument("directory", default=".", type=click.Path())
@click.option("--all", "everything", is_flag=True,
              help="Empty the whole index (every context's digests and snapshots), remove every kept session listing "
                   "and delete the copies moved aside as unusable; other ctxpack versions' indexes are kept.")
@handle_errors
def cache_clear(directory: str, everything: bool) -> None:
    """Forget what the index holds for the context DIRECTORY (default: the
    current directory): its file digests, so that the next fingerprint or
    diff reads every file again, and its snapshot, so that `ctxpack diff`
    needs a new `ctxpack snapshot` first; and the listing a BuildKit session
    build kept of it, so that the next `ctxpack build` walks the context.
    Other contexts are kept unless --all is given.
    """
    from ctxpack.engine.session.listcache import forget as forget_listings
    from ctxpack.index.store import DB_NAME, Index, cache_dir, cache_files, remove_aside

    path = os.path.join(cache_dir(), DB_NAME)
    root = os.path.realpath(directory)
    # The kept session listings (ctxpack/engine/session/listcache.py) live
    # beside the index: clearing the cache clears them too, index or not.
    n = forget_listings(None if everything else root)
    listings = f"; removed {n} kept session listing{'' if n == 1 else 's'}" if n else ""
    if everything:
        gone, freed = remove_aside()
        aside = f"; removed {_copies(gone)} moved aside ({format_size(freed)})" if gone else ""
        kept = "".join(f"; kept {o.describe()}" for o in cache_files().others)
        if not os.path.exists(path):
            click.echo(f"{'cleared' if n else 'nothing to clear'}: no index at {path}{listings}{aside}{kept}")
            return
        with Index() as idx:
            info = idx.info()
            idx.clear()
            click.echo(f"cleared {idx.path}: {info.contexts} contexts, {info.snapshots} snapshots{listings}{aside}{kept}")
            if idx.warning:
                raise InputError(idx.warning)
        return
    if not os.path.exists(path):
        click.echo(f"{'cleared' if n else 'nothing to clear'}: no index at {path}{listings}")
        return
    with Index() as idx:
        if idx.forget(root):
            click.echo(f"cleared the digests and snapshot of {root} from {idx.path}{listings}")
        elif n:
            click.echo(f"cleared {root}: the index at {idx.path} held nothing for it{listings}")
        else:
            click.echo(f"nothing to clear: the index at {idx.path} holds nothing for {root}")
        if idx.warning:
            raise InputError(idx.warning)


def _copies(n: int) -> str:
    return f"{n} {'copy' if n == 1 else 'copies'}"


def _other_snapshot(directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None) -> str | None:
    """A hint naming the other dialect's snapshot of the context, if there is one."""
    from ctxpack.context import open_context
    from ctxpack.errors import CtxpackError
    from ctxpack.index.snapshots import snapshot_time

    if dockerfile == "-":
        return None
    other = "classic" if dialect == "buildkit" else "buildkit"
    try:
        when = snapshot_time(open_context(directory, dockerfile=dockerfile, dialect=other, ignore_file=ignore_file))
    except (CtxpackError, OSError):
        return None
    if when is None:
        return _other_dockerfile_snapshot(directory, dockerfile, dialect, ignore_file)
    return f"there is a snapshot with the {other} rules (taken {_taken(when)}): ctxpack diff --dialect {other}"


def _taken(when: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _other_dockerfile_snapshot(directory: str, dockerfile: str | None, dialect: str,
                               ignore_file: str | None) -> str | None:
    """A hint naming a snapshot of the context taken with another Dockerfile
    (``ctxpack build -f Dockerfile.dev`` records that Dockerfile's), if any."""
    from ctxpack.context import open_context
    from ctxpack.errors import CtxpackError
    from ctxpack.index.snapshots import snapshot_dockerfiles

    try:
        found = snapshot_dockerfiles(open_context(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file))
    except (CtxpackError, OSError):
        return None
    if not found:
        return None
    path, when = found[0]
    rel = os.path.relpath(path)
    command = "ctxpack diff" + ("" if dialect == "buildkit" else f" --dialect {dialect}") + f" -f {shlex.quote(rel)}"
    if os.path.realpath(directory) != os.path.realpath("."):
        command += f" {shlex.quote(directory)}"
    return f"there is a snapshot with -f {rel} (taken {_taken(when)}; a snapshot is per Dockerfile): {command}"
