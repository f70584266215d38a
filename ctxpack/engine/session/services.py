"""The small session services: health, secrets, ssh forwarding, registry auth.

* ``grpc.health.v1.Health/Check`` answers SERVING at once, on the reader
  thread (BuildKit 0.8 polls every second with a 10 s deadline and drops the
  session at the first miss).
* ``moby.buildkit.secrets.v1.Secrets/GetSecret``: ``--secret id=X,src=FILE``
  (read when asked, as the docker CLI does) or ``id=X,env=VAR``; an unknown
  id is NOT_FOUND.  Secret values are never logged, put in an error message
  or kept after the answer.
* ``moby.sshforward.v1.SSH/CheckAgent`` and ``ForwardAgent``: ``--ssh
  default`` (``$SSH_AUTH_SOCK``) or ``ID=SOCKET``; the agent id comes in
  metadata ``buildkit.ssh.id``; bytes are piped both ways to the socket.
* ``moby.filesync.v1.Auth/Credentials``: the docker config's ``auths`` (and
  ``credsStore``/``credHelpers`` through ``docker-credential-*``).  Only
  ``Credentials`` is advertised, so BuildKit does not call ``FetchToken`` and
  friends (they would be UNIMPLEMENTED).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...errors import SessionConfigError
from . import wire
from .grpcserver import Call, RpcError, Status

__all__ = [
    "SecretSpec", "SshSpec", "parse_secret", "parse_ssh", "SecretStore", "SshForwarder",
    "health_check", "DockerAuth", "MAX_SECRET_SIZE", "SessionConfigError",
]

#: BuildKit refuses larger secrets; refusing them here gives a clearer error.
MAX_SECRET_SIZE = 500 * 1024


@dataclass(frozen=True)
class SecretSpec:
    """One ``--secret``: ``id`` with ``src`` (a file) or ``env`` (a variable)."""

    id: str
    src: str | None = None
    env: str | None = None

    def __repr__(self) -> str:  # never the value, only where it comes from
        return f"SecretSpec(id={self.id!r}, src={self.src!r}, env={self.env!r})"


@dataclass(frozen=True)
class SshSpec:
    """One ``--ssh``: agent ``id`` forwarded to the agent socket ``path``."""

    id: str
    path: str


def parse_secret(text: str) -> SecretSpec:
    """``id=X,src=FILE`` / ``id=X,env=VAR`` (also ``source=``, ``type=file|env``).
    ``id=X`` alone reads the variable ``X`` if set, else the file ``X``, as buildx does."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise SessionConfigError(f"--secret {text!r}: expected key=value, got {part!r}")
        if key not in ("id", "src", "source", "env", "type"):
            raise SessionConfigError(f"--secret {text!r}: unexpected key {key!r}")
        fields["src" if key == "source" else key] = value
    ident = fields.get("id", "")
    if not ident:
        raise SessionConfigError(f"--secret {text!r}: id= is required")
    kind = fields.get("type")
    if kind not in (None, "file", "env"):
        raise SessionConfigError(f"--secret {text!r}: type must be file or env")
    src, env = fields.get("src"), fields.get("env")
    if kind == "env" and src and not env:
        src, env = None, src
    if src and env:
        raise SessionConfigError(f"--secret {text!r}: give src= or env=, not both")
    if not src and not env:
        if ident in os.environ:
            env = ident
        else:
            src = ident
    if src is not None:
        src = os.path.abspath(os.path.expanduser(src))
        if not os.path.isfile(src):
            raise SessionConfigError(f"--secret id={ident}: file not found: {src}")
    elif env is not None and env not in os.environ:
        raise SessionConfigError(f"--secret id={ident}: environment variable {env} is not set")
    return SecretSpec(ident, src, env)


def parse_ssh(text: str, environ: Mapping[str, str] | None = None) -> SshSpec:
    """``default`` (``$SSH_AUTH_SOCK``), ``ID`` (also ``$SSH_AUTH_SOCK``) or
    ``ID=SOCKET``.  Key files (which the docker CLI turns into an in-process
    agent) are refused with a clear message: ctxpack forwards agent sockets."""
    env = os.environ if environ is None else environ
    ident, sep, paths = text.partition("=")
    ident = ident.strip() or "default"
    if not sep:
        sock = env.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise SessionConfigError(
                f"--ssh {text}: SSH_AUTH_SOCK is not set: start an ssh-agent or give --ssh {ident}=SOCKET")
        path = sock
    else:
        parts = [p for p in paths.split(",") if p]
        if len(parts) != 1:
            raise SessionConfigError(f"--ssh {text}: give exactly one agent socket")
        path = os.path.abspath(os.path.expanduser(parts[0]))
    try:
        import stat as st

        if not st.S_ISSOCK(os.stat(path).st_mode):
            raise SessionConfigError(
                f"--ssh {ident}: {path} is not an ssh agent socket (key files are not supported; load them "
                "into an ssh-agent)")
    except OSError as e:
        raise SessionConfigError(f"--ssh {ident}: ssh agent socket {path}: {e.strerror}") from None
    return SshSpec(ident, path)


def health_check(call: Call) -> None:
    """``grpc.health.v1.Health/Check`` → SERVING (inline handler)."""
    srv = call._server
    call.send(wire.encode_health_response(wire.SERVING))
    now = time.monotonic()
    srv.health_checks += 1
    # BuildKit polls every second: a long gap between answers means checks
    # went unanswered (this process could not run) - used in error messages.
    srv.max_health_gap = max(srv.max_health_gap, now - (srv.last_health or srv.started))
    srv.last_health = now


class SecretStore:
    """Serves ``GetSecret`` from ``specs``; ``asked`` records the ids asked
    for (never the values)."""

    def __init__(self, specs: Sequence[SecretSpec]):
        self._specs = {s.id: s for s in specs}
        self.asked: list[str] = []

    def get_secret(self, call: Call) -> None:
        req = call.recv(30)
        if req is None:
            raise RpcError(Status.INVALID_ARGUMENT, "no request")
        ident, _ = wire.decode_secret_request(req)
        self.asked.append(ident)
        spec = self._specs.get(ident)
        if spec is None:
            raise RpcError(Status.NOT_FOUND, f"secret {ident} not found")
        if spec.env is not None:
            value = os.environ.get(spec.env)
            if value is None:
                raise RpcError(Status.NOT_FOUND, f"secret {ident}: environment variable {spec.env} is not set")
            data = value.encode("utf-8", "surrogateescape")
        else:
            assert spec.src is not None
            try:
                with open(spec.src, "rb") as f:
                    data = f.read(MAX_SECRET_SIZE + 1)
            except OSError as e:
                raise RpcError(Status.NOT_FOUND, f"secret {ident}: cannot read {spec.src}: {e.strerror}") from None
        if len(data) > MAX_SECRET_SIZE:
            raise RpcError(Status.INVALID_ARGUMENT, f"secret {ident} is larger than {MAX_SECRET_SIZE // 1024} KiB")
        call.send(wire.encode_secret_response(data))


class SshForwarder:
    """Serves ``CheckAgent`` and ``ForwardAgent`` for ``specs``."""

    def __init__(self, specs: Sequence[SshSpec]):
        self._specs = {s.id: s for s in specs}
        self.connections = 0

    def _spec(self, ident: str) -> SshSpec:
        spec = self._specs.get(ident or "default")
        if spec is None:
            raise RpcError(Status.NOT_FOUND, f"unset ssh forward key {ident or 'default'}")
        return spec

    def check_agent(self, call: Call) -> None:
        req = call.recv(30)
        self._spec(wire.decode_check_agent_request(req or b""))
        call.send(b"")

    def forward_agent(self, call: Call) -> None:
        spec = self._spec(call.first("buildkit.ssh.id", "default"))
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        agent.settimeout(30)
        try:
            agent.connect(spec.path)
        except OSError as e:
            agent.close()
            raise RpcError(Status.UNAVAILABLE, f"ssh agent {spec.id} at {spec.path}: {e.strerror}") from None
        agent.settimeout(None)
        self.connections += 1
        failure: list[BaseException] = []

        def agent_to_daemon() -> None:
            try:
                while True:
                    data = agent.recv(1 << 16)
                    if not data:
                        return
                    call.send(wire.encode_bytes_message(data))
            except (OSError, RpcError) as e:
                failure.append(e)

        pump = threading.Thread(target=agent_to_daemon, name="ctxpack-ssh-agent", daemon=True)
        pump.start()
        try:
            while True:
                msg = call.recv()
                if msg is None:
                    break
                agent.sendall(wire.decode_bytes_message(msg))
            try:
                agent.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            pump.join(30)
        finally:
            agent.close()
            pump.join(2)


def _docker_config_dir(environ: Mapping[str, str]) -> str:
    return environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


class DockerAuth:
    """``Auth/Credentials`` from ``config.json`` in ``config_dir`` (default
    ``$DOCKER_CONFIG`` or ``~/.docker``), read when asked."""

    #: Docker Hub's registry host and the key the CLI stores its login under.
    HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")
    HUB_KEY = "https://index.docker.io/v1/"

    def __init__(self, config_dir: str | None = None, environ: Mapping[str, str] | None = None):
        self._env = dict(os.environ if environ is None else environ)
        self.config_dir = config_dir or _docker_config_dir(self._env)
        self.asked: list[str] = []

    def _config(self) -> dict[str, object]:
        try:
            with open(os.path.join(self.config_dir, "config.json"), "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def lookup(self, host: str) -> tuple[str, str]:
        """(username, secret) for ``host``; ("", "") when none is configured."""
        cfg = self._config()
        key = self.HUB_KEY if host in self.HUB_HOSTS else host
        found = cfg.get("credHelpers")
        helpers: dict[str, object] = found if isinstance(found, dict) else {}
        helper = helpers.get(key) or helpers.get(host) or cfg.get("credsStore")
        if isinstance(helper, str) and helper:
            got = self._from_helper(helper, key)
            if got != ("", ""):
                return got
        found = cfg.get("auths")
        auths: dict[str, object] = found if isinstance(found, dict) else {}
        entry = None
        for k, v in auths.items():
            if _registry_host(k) == _registry_host(key):
                entry = v
                break
        if not isinstance(entry, dict):
            return "", ""
        if entry.get("identitytoken"):
            return "", str(entry["identitytoken"])
        user, secret = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth") and not (user and secret):
            try:
                user, _, secret = base64.b64decode(str(entry["auth"])).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return "", ""
        return user, secret

    def _from_helper(self, helper: str, server: str) -> tuple[str, str]:
        try:
            proc = subprocess.run([f"docker-credential-{helper}", "get"], input=server.encode(),
                                  capture_output=True, timeout=30, check=False, env=self._env)
        except (OSError, subprocess.SubprocessError):
            return "", ""
        if proc.returncode != 0:
            return "", ""
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            return "", ""
        user, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
        if user == "<token>":
            return "", secret
        return user, secret

    def credentials(self, call: Call) -> None:
        req = call.recv(30)
        host = wire.decode_credentials_request(req or b"")
        self.asked.append(host)
        user, secret = self.lookup(host)
        call.send(wire.encode_credentials_response(user, secret))


def _registry_host(key: str) -> str:
    k = key
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix):]
    k = k.split("/", 1)[0]
    return "index.docker.io" if k in DockerAuth.HUB_HOSTS else k
