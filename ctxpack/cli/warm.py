"""What commands ask a running ``ctxpack watch`` (:mod:`ctxpack.watch.client`)
before walking.  Its own module, light, so that an answered command loads
neither the watch command's nor the walker's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctxpack.cli.common import parse_build_args, show_notes

if TYPE_CHECKING:
    from ctxpack.context import BuildContext


def warm(kind: str, ctx: "BuildContext", **kw: Any) -> Any:
    """Ask a running watcher of ``ctx`` (``kind``: fingerprint, diff, walk, entries);
    ``None`` when there is none that can be trusted."""
    from ctxpack.watch import client

    fns: dict[str, Any] = {"fingerprint": client.warm_fingerprint, "diff": client.warm_diff, "walk": client.warm_walk,
                           "entries": client.warm_entries}
    return fns[kind](ctx, **kw)


def quick(kind: str, directory: str, dockerfile: str | None, dialect: str, ignore_file: str | None,
          minimal: bool = False, target: str | None = None, build_args: tuple[str, ...] = (),
          platform: str | None = None) -> Any:
    """Ask a running watcher before opening the context (``kind``:
    fingerprint, diff): the answer, with the context's notes and warnings
    said as :func:`~ctxpack.cli.common.open_ctx` says them; ``None`` when
    no watcher can answer for these options (then open the context and
    go on as usual)."""
    from ctxpack.watch import client

    if (target or build_args or platform) and not minimal:
        return None  # open_ctx gives the usage error
    s = client.spec(directory, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, minimal=minimal,
                    target=target, build_args=parse_build_args(build_args), platform=platform)
    if s is None or not client.enabled():
        return None
    got = client.quick_fingerprint(s) if kind == "fingerprint" else client.quick_diff(s)
    if got is None:
        return None
    answer, notes, warnings = got
    show_notes(notes, warnings)
    return answer
