"""An sshd on 127.0.0.1 whose sessions reach the test dockerd (a test helper).

:func:`start_sshd` (used by the ``sshd`` fixture in ``conftest.py``):

1. needs ``/usr/sbin/sshd``; when missing, installs Debian's
   ``openssh-server`` with apt-get (as root, quietly, with a time limit,
   and with a ``policy-rc.d`` that keeps the package from starting the
   system's own sshd on port 22);
2. makes a temporary directory with a host key, a client key pair (its
   public half in ``authorized_keys``), a second client key that is *not*
   authorized (for the bad-key test), an ``sshd_config`` listening on
   127.0.0.1 at a free port that sets ``DOCKER_HOST`` for every session
   (``SetEnv``) to the test dockerd's socket, so the remote
   ``docker system dial-stdio`` (the docker CLI on this machine) reaches it;
3. writes an ``ssh_config`` (host alias ``ctxpack-test``: 127.0.0.1, the
   port, root, the client key, no host key checks) and a ``bin/ssh``
   wrapper that runs ``/usr/bin/ssh -F ssh_config "$@"``: put ``bin`` first
   on ``PATH`` and ``ssh://ctxpack-test`` works for ctxpack and the docker
   CLI alike, exactly as a user's ``~/.ssh/config`` would make it work;
4. starts ``sshd -D -e`` and waits until the port accepts connections.

:meth:`Sshd.stop` ends that sshd (and its session children) and removes the
directory.  Only processes this helper started are touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

SSHD = "/usr/sbin/sshd"
APT_TIMEOUT = 600.0


class SshdUnavailable(RuntimeError):
    """sshd cannot be had here; ``str()`` says why."""


def ensure_sshd() -> None:
    if os.path.exists(SSHD) and shutil.which("ssh-keygen"):
        return
    if os.geteuid() != 0:
        raise SshdUnavailable("no /usr/sbin/sshd and not root (cannot apt-get install openssh-server)")
    apt = shutil.which("apt-get")
    if apt is None:
        raise SshdUnavailable("no /usr/sbin/sshd and no apt-get")
    policy = "/usr/sbin/policy-rc.d"
    had_policy = os.path.exists(policy)
    if not had_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")  # never start services while installing
        os.chmod(policy, 0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + APT_TIMEOUT
    try:
        for cmd in ([apt, "-qq", "update"],
                    [apt, "-qq", "-y", "--no-install-recommends", "install", "openssh-server"]):
            try:
                p = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, env=env,
                                   timeout=max(1.0, deadline - time.monotonic()), check=False)
            except subprocess.TimeoutExpired:
                raise SshdUnavailable(f"{' '.join(cmd)} timed out") from None
            if p.returncode != 0:
                tail = (p.stdout + p.stderr).decode("utf-8", "replace").strip().splitlines()[-10:]
                raise SshdUnavailable(f"{' '.join(cmd)} failed:\n" + "\n".join(tail))
    finally:
        if not had_policy:
            os.unlink(policy)
    if not os.path.exists(SSHD):
        raise SshdUnavailable("openssh-server installed but /usr/sbin/sshd is missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    bin_dir: str
    ssh_config: str
    bad_key: str
    alias: str = "ctxpack-test"

    @property
    def url(self) -> str:
        """``ssh://ctxpack-test`` (needs :attr:`bin_dir` first on PATH)."""
        return f"ssh://{self.alias}"

    @property
    def direct_url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose ``ssh`` is the wrapper."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = self.bin_dir + os.pathsep + env.get("PATH", "")
        return env

    def log(self) -> str:
        try:
            with open(os.path.join(self.base, "sshd.log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


def start_sshd(docker_socket: str, *, throttle: str | None = None) -> Sshd:
    """Start an sshd whose sessions get ``DOCKER_HOST=unix://docker_socket``.

    ``throttle`` (e.g. ``"20M"`` bytes/s) puts a rate-limiting relay between
    the ssh client and sshd (``ProxyCommand``), for benchmarks of slow links.
    """
    ensure_sshd()
    base = tempfile.mkdtemp(prefix="ctxssh-")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    keygen = shutil.which("ssh-keygen") or "ssh-keygen"
    for name in ("host_key", "id_client", "id_bad"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(base, name)],
                       check=True, capture_output=True, timeout=30)
    shutil.copy(os.path.join(base, "id_client.pub"), os.path.join(base, "authorized_keys"))
    port = _free_port()
    with open(os.path.join(base, "sshd_config"), "w") as f:
        f.write(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base}/host_key\nPidFile {base}/sshd.pid\n"
            f"AuthorizedKeysFile {base}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n"
            f"StrictModes no\nUsePAM no\nSetEnv DOCKER_HOST=unix://{docker_socket}\nLogLevel ERROR\n"
        )
    proxy = ""
    if throttle:
        relay = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "throttle.py")
        proxy = f"  ProxyCommand python3 {os.path.abspath(relay)} 127.0.0.1 {port} {throttle}\n"
    with open(os.path.join(base, "ssh_config"), "w") as f:
        f.write(
            f"Host ctxpack-test\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {base}/id_client\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n{proxy}"
            f"Host ctxpack-test-badkey\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {base}/id_bad\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
    bin_dir = os.path.join(base, "bin")
    os.makedirs(bin_dir)
    wrapper = os.path.join(bin_dir, "ssh")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec /usr/bin/ssh -F {base}/ssh_config "$@"\n')
    os.chmod(wrapper, 0o755)
    log = open(os.path.join(base, "sshd.log"), "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", os.path.join(base, "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    d = Sshd(base, port, proc, bin_dir, os.path.join(base, "ssh_config"), os.path.join(base, "id_bad"))
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            text = d.log()
            d.stop()
            raise SshdUnavailable(f"sshd exited with {proc.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                d.stop()
                raise SshdUnavailable("sshd did not listen within 20s") from None
            time.sleep(0.05)
    return d
