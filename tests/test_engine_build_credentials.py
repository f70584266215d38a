"""``X-Registry-Config``: the docker config's credentials and credential
helpers, as the docker CLI 28 sends them with a build.

Fake ``docker-credential-*`` scripts on ``PATH``; the reference is the real
docker CLI's header, captured by a fake engine on a unix socket.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ctxpack.engine.credentials import registry_auths, registry_config
from ctxpack.engine.fake import FakeDaemon

FAKE = r"""#!/bin/sh
read -r server || true
echo "$1 $server" >> "$(dirname "$0")/calls.log"
case "$1" in
list) echo '{"https://index.docker.io/v1/":"bob","reg.example:5000":"<token>","gone.example":"x"}' ;;
get)
  case "$server" in
    https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"bob","Secret":"p<&>w"}' ;;
    reg.example:5000) echo '{"ServerURL":"reg.example:5000","Username":"<token>","Secret":"tok123"}' ;;
    *) echo "credentials not found in native keychain"; exit 1 ;;
  esac ;;
*) exit 2 ;;
esac
"""
OTHER = r"""#!/bin/sh
read -r server || true
[ "$1" = get ] && echo "{\"ServerURL\":\"$server\",\"Username\":\"alice\",\"Secret\":\"s3\"}"
"""
LEAKY = r"""#!/bin/sh
echo "error: TOPSECRET-42 rejected"
exit 3
"""


def setup(tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("fake", FAKE), ("other", OTHER), ("leaky", LEAKY)):
        p = bin_dir / f"docker-credential-{name}"
        p.write_text(text)
        p.chmod(0o755)
    cfg = tmp_path / "cfg"
    cfg.mkdir(exist_ok=True)
    (cfg / "config.json").write_text(json.dumps(config))
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", DOCKER_CONFIG=str(cfg))


def decoded(value: str) -> dict[str, dict[str, str]]:
    doc: dict[str, dict[str, str]] = json.loads(base64.urlsafe_b64decode(value))
    return doc


STORE_CONFIG = {
    "auths": {"https://index.docker.io/v1/": {"email": "b@x"}, "plain.example": {"auth": "dTpw"}},
    "credsStore": "fake",
    "credHelpers": {"gcr.example": "other", "missing.example": "nothere"},
}


def test_creds_store_list_then_get_and_per_registry_helpers(tmp_path: Path) -> None:
    env = setup(tmp_path, STORE_CONFIG)
    warnings: list[str] = []
    doc = decoded(registry_config(env, warn=warnings.append))
    assert doc == {
        # from the store: `list`, then `get` with the server on stdin; the email from config.json
        "https://index.docker.io/v1/": {"username": "bob", "password": "p<&>w", "email": "b@x",
                                        "serveraddress": "https://index.docker.io/v1/"},
        # user "<token>": the secret is an identity token
        "reg.example:5000": {"serveraddress": "reg.example:5000", "identitytoken": "tok123"},
        # listed but "credentials not found": an empty entry, as the CLI sends it (not even the address)
        "gone.example": {},
        # credHelpers: its own helper, overriding the store
        "gcr.example": {"username": "alice", "password": "s3", "serveraddress": "gcr.example"},
    }
    # with credsStore the file's auths are not sent (plain.example); a missing helper is said, not fatal
    assert warnings == ["registry credentials for missing.example were not sent: docker-credential-nothere is not on PATH"]
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert calls[0] == "list unused" and "get reg.example:5000" in calls


def test_file_auths_without_a_store(tmp_path: Path) -> None:
    env = setup(tmp_path, {"auths": {"https://index.docker.io/v1/": {}, "p.example": {"auth": "dTpw", "email": "e@x"},
                                     "t.example": {"identitytoken": "abc"}}})
    assert decoded(registry_config(env)) == {
        "https://index.docker.io/v1/": {"serveraddress": "https://index.docker.io/v1/"},
        "p.example": {"username": "u", "password": "p", "email": "e@x", "serveraddress": "p.example"},
        "t.example": {"serveraddress": "t.example", "identitytoken": "abc"},
    }
    assert registry_config(setup(tmp_path, {})) == "e30="


def test_a_failing_helper_never_leaks_what_it_printed(tmp_path: Path) -> None:
    env = setup(tmp_path, {"credsStore": "leaky", "credHelpers": {"x.example": "leaky"}})
    warnings: list[str] = []
    assert registry_auths(env, warn=warnings.append) == {}
    assert len(warnings) == 2 and all("exited with status 3" in w for w in warnings)
    assert not any("TOPSECRET" in w for w in warnings)


def _capture_cli_header(tmp_path: Path, env: dict[str, str]) -> str:
    """The X-Registry-Config the docker CLI 28 sends, from the fake engine."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    with FakeDaemon(tmp_path, api_version="1.41") as engine:
        subprocess.run(["docker", "-H", engine.docker_host, "build", str(ctx)], env=dict(env, DOCKER_BUILDKIT="0"),
                       capture_output=True, timeout=60)
        builds = [r for r in engine.take() if r.path == "/build"]
    assert builds, "the docker CLI sent no /build"
    return builds[0].header("X-Registry-Config") or ""


@pytest.mark.skipif(shutil.which("docker") is None and os.environ.get("CI") != "true", reason="no docker CLI on PATH")
def test_same_header_bytes_as_the_docker_cli(tmp_path: Path) -> None:
    env = setup(tmp_path, STORE_CONFIG)
    assert registry_config(env) == _capture_cli_header(tmp_path, env)
