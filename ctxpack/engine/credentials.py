"""Registry credentials for a build, as the docker CLI collects them.

``docker build`` sends every credential it knows in ``X-Registry-Config``
(base64url of a JSON map registry → auth config), so that the engine can
pull private base images.  The CLI's rules (``ConfigFile.GetAllCredentials``):

* the default store: with ``credsStore`` in ``config.json``, the helper
  ``docker-credential-NAME``: ``list`` (a JSON map server → user), then
  ``get`` for each server (the server on stdin; "credentials not found"
  gives an empty entry ``{}``; the answer
  ``{"ServerURL", "Username", "Secret"}``, where the user ``<token>`` makes
  the secret an identity token); without ``credsStore``, the ``auths`` of
  ``config.json`` (``auth`` = base64 ``user:password``);
* then every registry in ``credHelpers`` asked of its own helper, which
  overrides the default store for that registry;
* a helper that fails makes the CLI send what it has without it (it
  ignores the error); ctxpack does the same but says so — never with what
  the helper printed, which may hold a secret.

The JSON is Go's: fields in ``AuthConfig``'s order, empty ones left out,
keys sorted, ``<``, ``>``, ``&`` escaped.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

from .hosts import config_dir

__all__ = ["registry_auths", "registry_config", "HELPER_TIMEOUT"]

#: Seconds a credential helper may take (a keychain prompt must not hang a build).
HELPER_TIMEOUT = 30.0
_FIELDS = ("username", "password", "auth", "email", "serveraddress", "identitytoken", "registrytoken")
_TOKEN_USER = "<token>"
_NOT_FOUND = "credentials not found in native keychain"

Auth = dict[str, str]


class _HelperError(Exception):
    """A helper failed; the message never holds what it printed."""


def _helper(name: str, action: str, stdin: str, env: Mapping[str, str]) -> str:
    exe = shutil.which(f"docker-credential-{name}", path=env.get("PATH", os.defpath))
    if exe is None:
        raise _HelperError(f"docker-credential-{name} is not on PATH")
    try:
        p = subprocess.run([exe, action], input=stdin.encode(), capture_output=True, timeout=HELPER_TIMEOUT,
                           env=dict(env), check=False)
    except subprocess.TimeoutExpired:
        raise _HelperError(f"docker-credential-{name} {action} did not answer within {HELPER_TIMEOUT:.0f}s") from None
    except OSError as e:
        raise _HelperError(f"docker-credential-{name} {action}: {e.strerror}") from None
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        if action == "get" and _NOT_FOUND in out:
            raise LookupError(stdin)
        raise _HelperError(f"docker-credential-{name} {action} exited with status {p.returncode}")
    return out


def _helper_get(name: str, server: str, env: Mapping[str, str]) -> Auth:
    try:
        out = _helper(name, "get", server, env)
    except LookupError:
        return {}  # "not found": the CLI sends an empty entry, without even the address
    try:
        doc = json.loads(out)
    except ValueError:
        raise _HelperError(f"docker-credential-{name} get: its answer is not JSON") from None
    if not isinstance(doc, dict):
        raise _HelperError(f"docker-credential-{name} get: its answer is not a JSON object")
    user, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    auth: Auth = {}
    if user == _TOKEN_USER:
        auth["identitytoken"] = secret
    else:
        auth.update(username=user, password=secret)
    auth["serveraddress"] = server
    return {k: v for k, v in auth.items() if v}


def _helper_list(name: str, env: Mapping[str, str]) -> list[str]:
    try:
        doc = json.loads(_helper(name, "list", "unused", env))
    except ValueError:
        raise _HelperError(f"docker-credential-{name} list: its answer is not JSON") from None
    if not isinstance(doc, dict):
        raise _HelperError(f"docker-credential-{name} list: its answer is not a JSON object")
    return [str(k) for k in doc]


def _file_auths(doc: dict[str, object]) -> dict[str, Auth]:
    out: dict[str, Auth] = {}
    auths = doc.get("auths")
    for server, entry in (auths.items() if isinstance(auths, dict) else ()):
        if not isinstance(entry, dict):
            continue
        item: Auth = {}
        raw = entry.get("auth")
        if isinstance(raw, str) and raw:
            try:
                user, sep, password = base64.b64decode(raw).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                continue  # the docker CLI refuses such a config; leave the entry out
            if not sep:
                continue
            item.update(username=user, password=password)
        for k in ("email", "identitytoken", "registrytoken"):
            if isinstance(entry.get(k), str) and entry[k]:
                item[k] = entry[k]
        item["serveraddress"] = str(server)
        out[str(server)] = item
    return out


def registry_auths(env: Mapping[str, str] | None = None, *,
                   warn: Callable[[str], None] | None = None) -> dict[str, Auth]:
    """Every registry credential the docker CLI would send with a build
    (see the module docstring); helper failures go to ``warn``, without
    anything the helper printed."""
    env = os.environ if env is None else env
    path = os.path.join(config_dir(env), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    tell = warn or (lambda m: None)
    store = doc.get("credsStore")
    auths: dict[str, Auth] = {}
    if isinstance(store, str) and store:
        emails = {k: v["email"] for k, v in _file_auths(doc).items() if "email" in v}
        try:
            found = {}
            for server in _helper_list(store, env):
                found[server] = _helper_get(store, server, env)
                if server in emails:
                    found[server]["email"] = emails[server]
            auths.update(found)
        except _HelperError as e:
            tell(f"registry credentials from the credsStore were not sent: {e}")
    else:
        auths.update(_file_auths(doc))
    helpers = doc.get("credHelpers")
    for server, name in (helpers.items() if isinstance(helpers, dict) else ()):
        if not isinstance(name, str) or not name:
            continue
        try:
            auths[str(server)] = _helper_get(name, str(server), env)
        except _HelperError as e:
            tell(f"registry credentials for {server} were not sent: {e}")
    return auths


def _go_json(obj: object) -> str:
    """``json.Marshal``'s bytes: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def registry_config(env: Mapping[str, str] | None = None, *, warn: Callable[[str], None] | None = None) -> str:
    """``X-Registry-Config`` as the docker CLI 28 sends it with a build
    (``e30=``, i.e. ``{}``, when there are no credentials)."""
    auths = registry_auths(env, warn=warn)
    ordered = {server: {k: a[k] for k in _FIELDS if a.get(k)} for server, a in auths.items()}
    # sort_keys would reorder the fields too: sort the servers here, keep the fields in Go's order.
    text = "{" + ",".join(f"{_go_json(s)}:{_go_json_fields(ordered[s])}" for s in sorted(ordered)) + "}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode()


def _go_json_fields(fields: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{_go_json(k)}:{_go_json(v)}" for k, v in fields.items()) + "}"
