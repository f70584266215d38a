"""How ``ctxpack build`` (``ctxpack.engine.builder.build``) uses the session.

BuildKit builds go through a session by default, where the engine supports
it (API ≥ 1.39 and ``POST /session`` answers ``101``); ``--no-session``
(``BuildOptions.session=False``) sends the tar body instead; ``--session``
(``True``) makes a refusal an error instead of a fall-back.  ``--secret`` and
``--ssh`` need the session.  Engine 29.2 (API 1.53) deprecates ``/session`` in
favour of gRPC on the API socket itself; ctxpack does not speak that yet and
keeps using ``/session`` while the engine answers it (a note says so), and
falls back to the tar body when it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import InputError, SessionError
from ..client import Engine, version_tuple
from .buildrun import SessionBuild
from .services import parse_secret, parse_ssh

__all__ = ["open_session_build", "check_session_options", "upload_figures"]

#: The API version whose engine deprecates ``/session`` (Engine 29.2).
DEPRECATED_API = (1, 53)


def check_session_options(builder: str, session: bool | None, secrets: Sequence[str], ssh: Sequence[str]) -> None:
    """Refuse session-only options where no session will run."""
    wanted = [name for name, v in (("--secret", secrets), ("--ssh", ssh)) if v]
    if builder != "buildkit" and (wanted or session):
        raise InputError(f"{', '.join(wanted) or '--session'} needs the BuildKit builder (a session); "
                         f"this build uses the {builder} builder")
    if session is False and wanted:
        raise InputError(f"{', '.join(wanted)} needs a BuildKit session: drop --no-session")


def open_session_build(engine: Engine, ctx: object, *, session: bool | None, secrets: Sequence[str],
                       ssh: Sequence[str], query: Sequence[tuple[str, str]], headers: Mapping[str, str],
                       note: Callable[[str], None]) -> SessionBuild | None:
    """The session build for a BuildKit build, or ``None`` for the tar body
    (``--no-session``, or the engine cannot do sessions and none was
    required: ``note`` says why).  Raises :class:`SessionError` when a
    required session cannot be had, :class:`~ctxpack.errors.SessionConfigError`
    for a bad ``--secret``/``--ssh``."""
    if session is False:
        return None
    secret_specs = [parse_secret(s) for s in secrets]
    ssh_specs = [parse_ssh(s) for s in ssh]
    api = version_tuple(engine.api_version())
    if api >= DEPRECATED_API:
        note(f"the engine (API {engine.api_version()}) deprecates /session in favour of gRPC on its API socket, "
             "which ctxpack does not speak yet; using /session while the engine still answers it")
    try:
        sb = SessionBuild(engine, ctx, query, headers=headers, secrets=secret_specs, ssh=ssh_specs, timeout=None)
    except SessionError as e:
        if session or secret_specs or ssh_specs:
            raise
        note(f"no BuildKit session ({e}); sending the context as a tar instead")
        return None
    note(f"BuildKit session {sb.session.id}: the engine pulls the context and asks only for changed files")
    return sb


def upload_figures(sb: SessionBuild) -> dict[str, Any]:
    """The session's figures for ``UploadStats`` (files and content bytes
    the daemon asked for, bytes on the session connection, upload seconds)
    and for ``BuildResult.session``."""
    st = sb.session.stats()
    return {"files": st.files_requested, "bytes": st.data_bytes, "wire_bytes": st.bytes_out,
            "seconds": st.upload_seconds, "entries": max((d.entries for d in st.dirs if d.dir_name == "context"),
                                                         default=0),
            "stats": st.as_dict()}
