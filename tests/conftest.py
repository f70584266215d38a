"""Shared pytest fixtures for the ctxpack test suite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

import dockercli


@pytest.fixture(scope="session")
def docker_cli() -> Iterator[dockercli.DockerCLI]:
    """The real docker CLI as a reference: ``docker_cli.capture(ctx_dir, ...)``
    returns the exact build-context tar it uploads (see tests/dockercli.py).

    Skips when the docker CLI is unusable, except on CI (``CI=true``), where
    that is a failure: CI must never silently skip the reference tests.
    """
    reason = dockercli.docker_cli_missing_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"docker CLI required on CI: {reason}", pytrace=False)
        pytest.skip(f"docker CLI unavailable: {reason}")
    yield dockercli.DockerCLI(dockercli.shared_server())
    dockercli.stop_shared_server()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[object]:
    """A real Docker engine of the session's own (tests/dockerd.py): a
    :class:`dockerd.Dockerd` with ``build``, ``export_fs``, ``version`` and
    ``client``, and ``bb:latest`` (busybox) imported.

    Skips when the engine cannot be started (not root, no apt-get, dockerd
    fails: the reason carries dockerd's log tail), except on CI
    (``CI=true``), where that is a failure.
    """
    import dockerd as dockerd_harness  # the fixture's name shadows the module

    try:
        daemon = dockerd_harness.shared_daemon()
    except dockerd_harness.DockerdUnavailable as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Docker engine required on CI: {e}", pytrace=False)
        pytest.skip(f"Docker engine unavailable: {e}")
    yield daemon
    dockerd_harness.stop_shared_daemon()


@pytest.fixture(scope="session")
def sshd(dockerd: object) -> Iterator[object]:
    """An sshd on 127.0.0.1 whose sessions reach the session's dockerd
    (tests/sshd.py): ``sshd.url`` (``ssh://ctxpack-test``) works with
    ``env=sshd.env()``, which puts an ``ssh`` wrapper with the test's ssh
    config first on PATH.  Skips when sshd cannot be had, except on CI."""
    import sshd as sshd_helper

    try:
        server = sshd_helper.start_sshd(dockerd.socket)  # type: ignore[attr-defined]
    except (sshd_helper.SshdUnavailable, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"sshd required on CI: {e}", pytrace=False)
        pytest.skip(f"sshd unavailable: {e}")
    yield server
    server.stop()
