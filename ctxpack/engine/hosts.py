"""Which Docker engine to talk to, decided exactly as the docker CLI decides.

Order (docker/cli ``resolveContextName`` and the default context):

1. ``--context NAME`` (with ``--host`` too: an error, as the CLI says);
2. ``--host/-H URL``, else a non-empty ``DOCKER_HOST``: the *default*
   context with that host;
3. ``DOCKER_CONTEXT``;
4. ``currentContext`` in ``$DOCKER_CONFIG/config.json`` (default
   ``~/.docker``);
5. the default context: ``unix:///var/run/docker.sock``.

The default context takes TLS from ``DOCKER_TLS_VERIFY`` (verify; the CA
must exist) or ``DOCKER_TLS`` (encrypt, do not verify) with the files
``ca.pem``, ``cert.pem``, ``key.pem`` in ``DOCKER_CERT_PATH`` (default the
config directory).  A named context lives in the store:
``contexts/meta/<sha256(name)>/meta.json`` (``Endpoints.docker.Host`` and
``SkipTLSVerify``) and ``contexts/tls/<sha256(name)>/docker/*.pem``.

Host URLs are normalised as the CLI's ``ParseHost`` does: no scheme means
``tcp``; ``tcp://`` fills in ``localhost`` and port 2375 (2376 with TLS);
``unix://`` alone is the default socket; ``ssh://`` may carry a user, a port
and a socket path but no password, query or fragment.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import EndpointError
from .transport import SshTransport, TcpTransport, Transport, UnixTransport

__all__ = ["Endpoint", "TLSFiles", "resolve_endpoint", "parse_host", "open_transport", "config_dir", "DEFAULT_HOST"]

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_CONTEXT = "default"


@dataclass(frozen=True)
class TLSFiles:
    """TLS settings of an endpoint: files that exist (or ``None``) and
    whether the server's certificate is verified."""

    verify: bool
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self, hostname: str | None = None) -> ssl.SSLContext:
        """An :class:`ssl.SSLContext` for these settings."""
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca if self.verify else None)
            if not self.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert and self.key:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise EndpointError(f"cannot load the TLS files ({self.ca}, {self.cert}, {self.key}): {e}") from None
        return ctx

    def describe(self) -> str:
        files = ", ".join(f"{k} {v}" for k, v in (("ca", self.ca), ("cert", self.cert), ("key", self.key)) if v)
        return ("verify" if self.verify else "no verification") + (f"; {files}" if files else "")


@dataclass(frozen=True)
class Endpoint:
    """The chosen engine: ``host`` (normalised URL), the docker ``context``
    it came from, ``source`` (why: which flag, variable or file decided),
    and ``tls`` (``None``: plain)."""

    host: str
    context: str
    source: str
    tls: TLSFiles | None = None

    def describe(self) -> str:
        lines = [f"endpoint: {self.host}", f"context:  {self.context} ({self.source})"]
        if self.tls is not None:
            lines.append(f"tls:      {self.tls.describe()}")
        return "\n".join(lines)


def config_dir(env: Mapping[str, str] | None = None) -> str:
    """The docker CLI's configuration directory (``DOCKER_CONFIG`` or ``~/.docker``)."""
    env = os.environ if env is None else env
    d = env.get("DOCKER_CONFIG")
    return d if d else os.path.join(os.path.expanduser("~"), ".docker")


def _context_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def parse_host(value: str, *, tls: bool = False) -> str:
    """Normalise a ``-H``/``DOCKER_HOST`` value as the docker CLI does; raises
    :class:`~ctxpack.errors.EndpointError` for what it refuses."""
    addr = value.strip()
    if not addr:
        return DEFAULT_HOST
    proto, sep, rest = addr.partition("://")
    if not sep:
        proto, rest = "tcp", addr
    proto = proto.lower()
    if proto == "unix":
        return "unix://" + (rest or "/var/run/docker.sock")
    if proto == "tcp":
        return _parse_tcp(rest, 2376 if tls else 2375, value)
    if proto == "ssh":
        _parse_ssh("ssh://" + rest)  # validated now, kept as given
        return "ssh://" + rest
    if proto in ("fd", "npipe"):
        raise EndpointError(f"{proto}:// hosts are not supported by ctxpack: {value}")
    raise EndpointError(f"invalid bind address format: {value}")


def _parse_tcp(rest: str, default_port: int, original: str) -> str:
    u = urlsplit("tcp://" + rest)
    try:
        port = u.port
    except ValueError:
        raise EndpointError(f"invalid bind address format: {original}") from None
    host = u.hostname or "localhost"
    if port is None:
        port = default_port
    shown = f"[{host}]" if ":" in host else host
    return f"tcp://{shown}:{port}{u.path.rstrip('/')}"


def _parse_ssh(url: str) -> tuple[str | None, str, int | None, str | None]:
    """(user, host, port, socket path) of an ``ssh://`` URL (docker/cli
    ``connhelper/ssh.ParseURL`` rules)."""
    u = urlsplit(url)
    if u.password is not None:
        raise EndpointError(f"invalid SSH URL {url}: plain-text password is not supported")
    if u.query:
        raise EndpointError(f"invalid SSH URL {url}: extra query after the host is not supported: {u.query}")
    if u.fragment:
        raise EndpointError(f"invalid SSH URL {url}: extra fragment after the host is not supported: {u.fragment}")
    if not u.hostname:
        raise EndpointError(f"invalid SSH URL {url}: no host specified")
    try:
        port = u.port
    except ValueError:
        raise EndpointError(f"invalid SSH URL {url}: bad port") from None
    return (unquote(u.username) if u.username else None), u.hostname, port, (u.path or None)


def _default_tls(env: Mapping[str, str], cfg: str) -> TLSFiles | None:
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    if not (verify or env.get("DOCKER_TLS")):
        return None
    cert_path = env.get("DOCKER_CERT_PATH") or cfg
    ca, cert, key = (os.path.join(cert_path, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    if verify and not os.path.exists(ca):
        raise EndpointError(f"DOCKER_TLS_VERIFY is set but the CA file is missing: open {ca}: no such file or directory")
    return TLSFiles(
        verify=verify,
        ca=ca if verify else None,
        cert=cert if os.path.exists(cert) else None,
        key=key if os.path.exists(key) else None,
    )


def _stored_context(name: str, cfg: str, source: str) -> Endpoint:
    h = _context_hash(name)
    meta_path = os.path.join(cfg, "contexts", "meta", h, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise EndpointError(f'context "{name}" ({source}): context not found: {meta_path} does not exist') from None
    except (OSError, ValueError) as e:
        raise EndpointError(f'context "{name}": cannot read {meta_path}: {e}') from None
    docker = ((meta.get("Endpoints") or {}).get("docker") or {}) if isinstance(meta, dict) else {}
    host = docker.get("Host")
    if not isinstance(host, str) or not host:
        raise EndpointError(f'context "{name}": no docker endpoint in {meta_path}')
    skip = bool(docker.get("SkipTLSVerify"))
    tls_dir = os.path.join(cfg, "contexts", "tls", h, "docker")
    files = {n: os.path.join(tls_dir, f"{n}.pem") for n in ("ca", "cert", "key")}
    present = {n: p for n, p in files.items() if os.path.exists(p)}
    tls: TLSFiles | None = None
    if host.startswith("tcp://") and (present or skip):
        tls = TLSFiles(verify=not skip, ca=present.get("ca"), cert=present.get("cert"), key=present.get("key"))
    if host.startswith("ssh://"):
        _parse_ssh(host)
    return Endpoint(host=host, context=name, source=source, tls=tls)


def resolve_endpoint(host: str | None = None, context: str | None = None, *, env: Mapping[str, str] | None = None) -> Endpoint:
    """The engine the docker CLI would use with these ``--host`` and
    ``--context`` values in this environment (see the module docstring)."""
    env = os.environ if env is None else env
    cfg = config_dir(env)
    if context and host:
        raise EndpointError("conflicting options: cannot specify both --host and --context")
    name, source = None, ""
    if context:
        name, source = context, "--context"
    elif host:
        name, source = DEFAULT_CONTEXT, "--host"
    elif env.get("DOCKER_HOST"):
        name, source = DEFAULT_CONTEXT, "DOCKER_HOST"
    elif env.get("DOCKER_CONTEXT"):
        name, source = env["DOCKER_CONTEXT"], "DOCKER_CONTEXT"
    else:
        config_file = os.path.join(cfg, "config.json")
        current = None
        try:
            with open(config_file, encoding="utf-8") as f:
                doc = json.load(f)
            current = doc.get("currentContext") if isinstance(doc, dict) else None
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            raise EndpointError(f"cannot read {config_file}: {e}") from None
        if current:
            name, source = str(current), f"currentContext in {config_file}"
        else:
            name, source = DEFAULT_CONTEXT, "no DOCKER_HOST, DOCKER_CONTEXT or current context"
    if name != DEFAULT_CONTEXT:
        return _stored_context(name, cfg, source)
    tls = _default_tls(env, cfg)
    raw = host if host else env.get("DOCKER_HOST", "")
    url = parse_host(raw, tls=tls is not None)
    if source.startswith("no "):
        source = "default: " + source
    return Endpoint(host=url, context=DEFAULT_CONTEXT, source=source, tls=tls if url.startswith("tcp://") else None)


def open_transport(endpoint: Endpoint | str, *, connect_timeout: float | None = None,
                   read_timeout: float | None = None) -> Transport:
    """A transport for an endpoint (or a host URL); the timeouts are the
    transport's (see :mod:`ctxpack.engine.transport`)."""
    if isinstance(endpoint, str):
        endpoint = Endpoint(host=parse_host(endpoint), context=DEFAULT_CONTEXT, source="given")
    url = endpoint.host
    if url.startswith("unix://"):
        return UnixTransport(url[len("unix://"):] or "/var/run/docker.sock", connect_timeout=connect_timeout,
                             read_timeout=read_timeout)
    if url.startswith("tcp://"):
        u = urlsplit(url)
        if not u.hostname:
            raise EndpointError(f"no host in {url}")
        tls = endpoint.tls.context() if endpoint.tls is not None else None
        t = TcpTransport(u.hostname, u.port or (2376 if tls else 2375), tls=tls, connect_timeout=connect_timeout,
                         read_timeout=read_timeout)
        t.base_path = u.path.rstrip("/")
        return t
    if url.startswith("ssh://"):
        user, hostname, port, path = _parse_ssh(url)
        return SshTransport(hostname, user=user, port=port, path=path, connect_timeout=connect_timeout,
                            read_timeout=read_timeout)
    raise EndpointError(f"unsupported engine URL {url}")
