"""``ctxpack build`` and ``ctxpack.build()`` against real engines.

The session's dockerd (tests/dockerd.py: Debian's 20.10, vfs, busybox as
``bb:latest``) is reached over its unix socket, over ``tcp://127.0.0.1``
with ``--tlsverify`` (a CA and certificates the harness makes with openssl)
and over ``ssh://`` (tests/sshd.py: an sshd on 127.0.0.1 whose sessions run
the docker CLI's ``dial-stdio`` against that dockerd).  Failure cases use
small fake engines on unix sockets where the real one cannot misbehave on
demand (a connection dropped mid-upload, a Ctrl-C during a slow upload).
BuildKit builds get ``--network none``: the daemon runs without a bridge.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
import ctxpack
from ctxpack.engine.builder import BuildOptions, build, build_query
from ctxpack.engine.client import Engine
from ctxpack.engine.fake import FakeDaemon, discard
from ctxpack.engine.progress import PlainTrace
from ctxpack.engine.messages import StatusResponse, Vertex, VertexLog
from ctxpack.engine.transport import UnixTransport
from ctxpack.errors import BuildFailedError
from ctxpack.walker import EntryKind, entries_for_builder

ROOT = Path(__file__).resolve().parent.parent
BK = {"builder": "buildkit", "network": "none"}
CLASSIC = {"builder": "classic"}


def cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, input=None if stdin is None else stdin.decode(), cwd=cwd)


def make_tree(root: Path, dockerfile: str, files: dict[str, str] | None = None, ignore: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def engine_for(d: harness.Dockerd) -> Engine:
    return Engine(UnixTransport(d.socket))


TREE = {
    "app/main.py": "print('hi')\n",
    "app/data/x.txt": "x\n",
    "docs/readme.md": "docs\n",
    "node_modules/big.js": "junk\n",
    "secret.env": "TOKEN=1\n",
}
IGNORE = "node_modules\n*.env\ndocs\n"


# --------------------------------------------------------------------------
# the unix socket, both builders
# --------------------------------------------------------------------------


@pytest.mark.parametrize("builder, session", [("classic", False), ("buildkit", False), ("buildkit", None)],
                         ids=["classic", "buildkit-tar", "buildkit-session"])
def test_whole_context_equals_ls(dockerd: harness.Dockerd, tmp_path: Path, builder: str, session: bool | None) -> None:
    """COPY . : the image holds exactly what `ctxpack ls` lists for that builder
    (tar body, or the BuildKit session serving the same listing)."""
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY . /ctx/\n", TREE, IGNORE)
    opts = BuildOptions(**(BK if builder == "buildkit" else CLASSIC), tags=(f"ctxpack-test-{builder}:1",),
                        session=session)
    with engine_for(dockerd) as e:
        r = build(str(root), e, opts)
    assert r.builder == builder and r.image_id.startswith("sha256:") and not r.minimal
    assert r.upload.compression == ("session" if session is None else "none") and r.upload.wire_bytes > 0
    fs = dockerd.export_fs(r.image_id, under="ctx")
    got = {p[len("ctx/"):] for p, ent in fs.items() if p != "ctx" and ent.type == "file"}
    ctx = ctxpack.open_context(str(root), dialect=builder)
    want = {en.path for en in entries_for_builder(ctx) if en.kind == EntryKind.FILE}
    assert got == want and {"Dockerfile", ".dockerignore", "app/main.py", "app/data/x.txt"} == want
    assert "node_modules/big.js" not in got and "secret.env" not in got and "app/main.py" in got
    assert fs["ctx/app/main.py"].data == b"print('hi')\n"
    tagged = dockerd.client.inspect_image(f"ctxpack-test-{builder}:1")
    assert tagged["Id"] == r.image_id


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_minimal_context_sends_only_what_is_read(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY app/main.py /main.py\n", TREE, IGNORE)
    with engine_for(dockerd) as e:
        r = build(str(root), e, BuildOptions(**(BK if builder == "buildkit" else CLASSIC), session=False))
    assert r.minimal
    # main.py and the Dockerfile (plus .dockerignore for classic)
    assert r.upload.files == (3 if builder == "classic" else 2), r.upload
    fs = dockerd.export_fs(r.image_id)
    assert fs["main.py"].data == b"print('hi')\n"


def test_cli_output_forms(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY a.txt /a.txt\nRUN cat /a.txt\n", {"a.txt": "from-a\n"})
    host = f"unix://{dockerd.socket}"
    # classic, plain: the engine's stream on stderr, the ID alone on stdout; --iidfile
    iid = tmp_path / "iid"
    p = cli(str(root), "-H", host, "--builder", "classic", "--progress", "plain", "--iidfile", str(iid), "-t", "cx:1")
    assert p.returncode == 0, p.stderr
    image = p.stdout.strip()
    assert image.startswith("sha256:") and iid.read_text() == image
    assert "Step 1/3 : FROM bb:latest" in p.stderr and "from-a" in p.stderr, p.stderr
    assert "ctxpack: sent 2 files" in p.stderr, p.stderr  # a.txt and the Dockerfile
    # BuildKit with a tar body, plain: the trace decoded like --progress=plain
    p = cli(str(root), "-H", host, "--builder", "buildkit", "--network", "none", "--progress", "plain", "--no-session")
    assert p.returncode == 0, p.stderr
    assert "[internal] load remote build context" in p.stderr
    assert "[3/3] RUN cat /a.txt" in p.stderr and "from-a" in p.stderr and " DONE " in p.stderr
    # -q: the ID only
    p = cli(str(root), "-H", host, "--builder", "classic", "-q")
    assert p.returncode == 0 and p.stderr == "" and p.stdout.strip().startswith("sha256:")
    # tty: the live view (what auto shows on a terminal), ending in the finished step list
    p = cli(str(root), "-H", host, "--builder", "buildkit", "--network", "none", "--progress", "tty")
    assert p.returncode == 0, p.stderr
    assert "[+] Building" in p.stderr and "FINISHED" in p.stderr and " => [3/3] RUN cat /a.txt" in p.stderr
    # json: the engine's messages passed through, plus ctxpack's upload record
    p = cli(str(root), "-H", host, "--builder", "buildkit", "--network", "none", "--progress", "json")
    assert p.returncode == 0, p.stderr
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    ids = {d.get("id") for d in docs}
    assert {"ctxpack.upload", "moby.buildkit.trace", "moby.image.id"} <= ids
    # the snapshot for `ctxpack diff` was recorded by the builds
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    d = subprocess.run([sys.executable, "-m", "ctxpack.cli", "diff", str(root), "--dialect", "buildkit", "--exit-code"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert d.returncode == 0, d.stdout + d.stderr
    (root / "a.txt").write_text("changed\n")
    d = subprocess.run([sys.executable, "-m", "ctxpack.cli", "diff", str(root), "--dialect", "buildkit"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "M a.txt" in d.stdout


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_failing_run(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nRUN echo about-to-fail && exit 3\n")
    extra = ["--network", "none"] if builder == "buildkit" else []
    p = cli(str(root), "-H", f"unix://{dockerd.socket}", "--builder", builder, "--progress", "plain", *extra)
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ctxpack: error: ")
    assert ("returned a non-zero code: 3" if builder == "classic" else "exit code: 3") in last
    assert "about-to-fail" in p.stderr and "Traceback" not in p.stderr
    if builder == "classic":  # the library says the same (once is enough: it is the same code)
        with engine_for(dockerd) as e, pytest.raises(BuildFailedError) as info:
            build(str(root), e, BuildOptions(**CLASSIC))
        assert info.value.code == 3


def test_build_args_from_environment(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nARG FOO\nARG UNSET_ONE=dflt\nRUN echo \"$FOO/$UNSET_ONE\" > /out\n")
    env = dict(os.environ, FOO="from-env")
    env.pop("UNSET_ONE", None)
    p = cli(str(root), "-H", f"unix://{dockerd.socket}", "--builder", "classic", "-q",
            "--build-arg", "FOO", "--build-arg", "UNSET_ONE", env=env)
    assert p.returncode == 0, p.stderr
    fs = dockerd.export_fs(p.stdout.strip())
    # FOO from the environment; UNSET_ONE declared but unset (null): its default stays
    assert fs["out"].data == b"from-env/dflt\n"


def test_query_like_the_docker_cli() -> None:
    """The query the docker CLI 28 sent for the same flags (captured with
    tests/dockercli.py: `docker build -t a:1 -t b --build-arg A=1
    --build-arg FOO --build-arg UNSET_X --label k=v --target t --no-cache
    --pull --platform linux/AMD64 --network none`, FOO=fromenv)."""
    opts = BuildOptions(tags=("a:1", "b"), build_args={"A": "1", "FOO": "fromenv", "UNSET_X": None},
                        labels={"k": "v"}, target="t", no_cache=True, pull=True, platform="linux/AMD64",
                        network="none")
    assert build_query(opts, builder="classic", dockerfile="Dockerfile", api_version="1.41") == [
        ("buildargs", '{"A":"1","FOO":"fromenv","UNSET_X":null}'), ("dockerfile", "Dockerfile"),
        ("labels", '{"k":"v"}'), ("networkmode", "none"), ("nocache", "1"), ("platform", "linux/amd64"),
        ("pull", "1"), ("t", "a:1"), ("t", "b"), ("target", "t"), ("version", "1")]
    assert build_query(BuildOptions(), builder="classic", dockerfile="Dockerfile", api_version="1.41") == [
        ("dockerfile", "Dockerfile"), ("version", "1")]
    q = dict(build_query(BuildOptions(network="default"), builder="buildkit", dockerfile="D", api_version="1.41",
                         build_id="abc"))
    assert q == {"dockerfile": "D", "buildid": "abc", "version": "2"}


def test_onbuild_of_a_base_image(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    """A base image built here has ONBUILD COPY onb.txt: the child's minimal
    context must carry onb.txt although the child's Dockerfile never names it."""
    base = make_tree(tmp_path / "base", "FROM bb:latest\nONBUILD COPY onb.txt /onb.txt\n")
    with engine_for(dockerd) as e:
        build(str(base), e, BuildOptions(**CLASSIC, tags=("ctxpack-onbuild-base:1",), record_snapshot=False))
        child = make_tree(tmp_path / "child", "FROM ctxpack-onbuild-base:1\nCOPY a.txt /a.txt\n",
                          {"a.txt": "a\n", "onb.txt": "triggered\n", "other.bin": "x" * 1000})
        notes: list[str] = []
        r = build(str(child), e, BuildOptions(**CLASSIC), on_note=notes.append)
    assert r.minimal
    assert any("ONBUILD triggers of ctxpack-onbuild-base:1" in n for n in notes), notes
    fs = dockerd.export_fs(r.image_id)
    assert fs["onb.txt"].data == b"triggered\n" and fs["a.txt"].data == b"a\n"
    assert r.upload.files == 3  # the Dockerfile, a.txt, onb.txt (not other.bin)


def test_missing_base_image_sends_whole_context(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", "FROM ctxpack-not-here:1\nCOPY a.txt /a.txt\n", {"a.txt": "a\n", "b.txt": "b\n"})
    with engine_for(dockerd) as e:
        notes: list[str] = []
        with pytest.raises(BuildFailedError):
            build(str(root), e, BuildOptions(**CLASSIC), on_note=notes.append)
    assert any("does not have the base image ctxpack-not-here:1" in n for n in notes), notes


# --------------------------------------------------------------------------
# endpoints: docker context, tcp + TLS, ssh
# --------------------------------------------------------------------------


def test_docker_context_in_temporary_config(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    cfg = tmp_path / "dockercfg"
    env = dict(os.environ, DOCKER_CONFIG=str(cfg))
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    made = subprocess.run(["docker", "context", "create", "ctxtest", "--docker", f"host=unix://{dockerd.socket}"],
                          capture_output=True, text=True, env=env, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"docker context create failed: {made.stderr}")
    subprocess.run(["docker", "context", "use", "ctxtest"], capture_output=True, env=env, timeout=60, check=True)
    p = cli("--print-endpoint", env=env)
    assert p.returncode == 0
    assert f"endpoint: unix://{dockerd.socket}" in p.stdout and "ctxtest (currentContext in" in p.stdout
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    p = cli(str(root), "--builder", "classic", "-q", env=env)
    assert p.returncode == 0, p.stderr
    p = cli(str(root), "--builder", "classic", "-q", env=dict(env, DOCKER_CONTEXT="nope"))
    assert p.returncode == 2 and 'context "nope"' in p.stderr


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_tcp_tls(dockerd: harness.Dockerd, tmp_path: Path, builder: str) -> None:
    if dockerd.tcp_url is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the TLS listener is required on CI (openssl missing?)")
        pytest.skip("the harness could not make TLS certificates (openssl missing)")
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY . /ctx/\n", {"a.txt": "tls\n"})
    env = dict(os.environ, DOCKER_HOST=dockerd.tcp_url, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(dockerd.tls_dir))
    extra = ["--network", "none"] if builder == "buildkit" else []
    p = cli(str(root), "--builder", builder, "--progress", "plain", *extra, env=env)
    assert p.returncode == 0, p.stderr
    assert f"engine {dockerd.tcp_url}" in p.stderr
    assert dockerd.export_fs(p.stdout.strip())["ctx/a.txt"].data == b"tls\n"
    # without the client certificate the engine refuses the handshake
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "ca.pem").write_bytes(Path(dockerd.tls_dir, "ca.pem").read_bytes())  # type: ignore[arg-type]
    p = cli(str(root), "-q", env=dict(env, DOCKER_CERT_PATH=str(bare)))
    assert p.returncode == 5, p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_ssh(dockerd: harness.Dockerd, sshd, tmp_path: Path, builder: str) -> None:  # type: ignore[no-untyped-def]
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\nCOPY . /ctx/\n", {"a.txt": "over ssh\n", "big.bin": "z" * 300_000})
    extra = ["--network", "none"] if builder == "buildkit" else []
    # classic: gzip asked for, as on a remote link to a 20.10 engine (never zstd); the test's sshd is
    # this machine, where the automatic choice is none (tests/test_engine_builder_unit.py)
    gz = ["--compress", "gzip"] if builder == "classic" else []
    p = cli(str(root), "-H", sshd.url, "--builder", builder, "--progress", "plain", *extra, *gz, env=sshd.env())
    assert p.returncode == 0, p.stderr + sshd.log()
    if builder == "classic":
        assert "compression gzip" in p.stderr and "on the wire (gzip)" in p.stderr, p.stderr
        q = cli(str(root), "-H", sshd.url, "--builder", builder, "--progress", "plain", env=sshd.env())
        assert q.returncode == 0 and "is this machine (ssh to a loopback address): no compression" in q.stderr, q.stderr
    else:
        assert "BuildKit session" in p.stderr and "the engine requested" in p.stderr
    fs = dockerd.export_fs(p.stdout.strip(), under="ctx")
    assert fs["ctx/a.txt"].data == b"over ssh\n" and len(fs["ctx/big.bin"].data) == 300_000  # type: ignore[arg-type]


def _negotiated_cipher(ssh_command: list[str]) -> tuple[str, list[str]]:
    """Ping the engine through ssh://ctxpack-test with ``ssh -v``; the
    cipher ssh's debug log says it agreed on, and the helper's argv."""
    import re

    from ctxpack.engine.transport import Request, SshTransport

    t = SshTransport("ctxpack-test", ssh_command=[*ssh_command, "-v"])
    with t.handle_request(Request("GET", "/_ping")) as r:
        assert r.ok and r.read() == b"OK"
    argv = t.argv()
    t.close()  # ends the helper: its stderr (the -v log) is kept
    m = re.search(r"kex: client->server cipher: (\S+)", t._last_exit[1])
    assert m, t._last_exit
    return m.group(1), argv


def test_ssh_cipher_is_aes_gcm_unless_the_user_chose(sshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Through the real sshd: both ends use what ctxpack's argv asked for
    # (OpenSSH's default chacha20-poly1305 on a CPU without AES instructions).
    from ctxpack.engine import transport

    wrapper = os.path.join(sshd.bin_dir, "ssh")  # ssh -F <the test's config>, as a user's ~/.ssh/config
    cipher, argv = _negotiated_cipher([wrapper])
    if transport.cpu_has_aes():
        assert cipher == "aes128-gcm@openssh.com" and any(a.startswith("Ciphers=aes128-gcm") for a in argv), argv
    else:
        assert cipher == "chacha20-poly1305@openssh.com" and not any(a.startswith("Ciphers=") for a in argv), argv
    # A Ciphers line in the user's config: ctxpack adds nothing, ssh uses the user's.
    own = tmp_path / "ssh_config"
    own.write_text("Ciphers aes256-ctr\n" + Path(sshd.ssh_config).read_text())
    cipher, argv = _negotiated_cipher(["/usr/bin/ssh", "-F", str(own)])
    assert cipher == "aes256-ctr" and not any(a.startswith("Ciphers=") for a in argv), argv


def test_ssh_bad_key(sshd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\n")
    p = cli(str(root), "-H", "ssh://ctxpack-test-badkey", "-q", env=sshd.env())
    assert p.returncode == 5
    assert "Permission denied (publickey)" in p.stderr and "Traceback" not in p.stderr


def test_unreachable(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\n")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = cli(str(root), "-H", f"tcp://127.0.0.1:{port}", "-q")
    assert p.returncode == 5 and "cannot connect to the Docker engine" in p.stderr and "refused" in p.stderr
    p = cli(str(root), "-H", f"unix://{tmp_path}/none.sock", "-q")
    assert p.returncode == 5 and "Is the docker daemon running?" in p.stderr
    p = cli(str(root), "-H", "http://x:1", "-q")
    assert p.returncode == 2 and "invalid bind address format" in p.stderr


# --------------------------------------------------------------------------
# fake engines: dropped connections, Ctrl-C, old versions
# --------------------------------------------------------------------------


# A slow engine reads 256 KiB per 50 ms whatever the chunk framing (one
# chunk may carry a whole file: sendfile); a dropping one hangs up after
# 200 kB of the upload.  Both: API 1.41, BuildKit by default, no sessions.
_MODES: dict[str, dict[str, Any]] = {"ok": {}, "drop": {"cut_after": 200_000}, "slow": {"read_pause": 0.05}}


@pytest.fixture()
def fake_engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeDaemon]:
    mode = _MODES[getattr(request, "param", "ok")]
    with FakeDaemon(tmp_path, consume=discard, api_version="1.41", builder_version="2", **mode) as d:
        yield d


def _big_tree(root: Path, mb: int) -> Path:
    make_tree(root, "FROM bb:latest\nCOPY . /\n")
    (root / "big.bin").write_bytes(os.urandom(mb << 20))
    return root


@pytest.mark.parametrize("fake_engine", ["drop"], indirect=True)
def test_engine_drops_connection_mid_upload(fake_engine: FakeDaemon, tmp_path: Path) -> None:
    root = _big_tree(tmp_path / "ctx", 8)
    p = cli(str(root), "-H", fake_engine.docker_host, "--builder", "classic", "--full")
    assert p.returncode == 5, p.stderr
    assert "closed the connection during the upload" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("fake_engine", ["slow"], indirect=True)
def test_ctrl_c_during_upload_cancels(fake_engine: FakeDaemon, tmp_path: Path) -> None:
    srv = fake_engine
    root = _big_tree(tmp_path / "ctx", 64)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "build", str(root), "-H", srv.docker_host,
                             "--builder", "buildkit", "--full"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env,
                            # A suite started in the background (`cmd &` in a script) inherits SIGINT ignored,
                            # and so would ctxpack (Python keeps an inherited SIG_IGN, as it should): reset it.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while srv.received < (1 << 20) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert srv.received >= (1 << 20), "the upload did not start"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cancelled" in err
    cancel = srv.wait_for("/build/cancel", 5)
    assert cancel is not None and cancel.method == "POST", srv.take()
    assert "no BuildKit session" in err and "sending the context as a tar" in err
    upload = srv.wait_for("/build", 10)  # cut by the Ctrl-C: recorded once the daemon has read what came
    assert upload is not None and upload.error is not None and upload.query["buildid"]
    assert cancel.query_items == (("id", upload.query["buildid"]),)


def test_old_engine_refused(tmp_path: Path) -> None:
    with FakeDaemon(tmp_path, api_version="1.30", builder_version="2") as old:
        root = make_tree(tmp_path / "ctx", "FROM bb:latest\n")
        p = cli(str(root), "-H", old.docker_host, "-q")
    assert p.returncode == 5 and "speaks API 1.30; ctxpack needs at least 1.32" in p.stderr


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------


def test_plain_trace_rendering() -> None:
    out: list[str] = []
    tr = PlainTrace(out.append)
    tr.feed(StatusResponse(vertexes=[Vertex(digest="d1", name="[1/2] FROM bb", started=10.0)]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="d1", name="[1/2] FROM bb", started=10.0, completed=10.25)],
                           logs=[]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="d2", name="[2/2] RUN x", started=11.0)],
                           logs=[VertexLog(vertex="d2", timestamp=11.5, stream=1, msg=b"hello\npart")]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="d2", name="[2/2] RUN x", started=11.0, completed=12.0,
                                            error="exit code: 3")]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="d3", name="cached step", cached=True)]))
    assert "".join(out) == (
        "#1 [1/2] FROM bb\n#1 DONE 0.2s\n\n#2 [2/2] RUN x\n#2 0.500 hello\n#2 0.000 part\n#2 ERROR: exit code: 3\n"
        "\n#3 cached step\n#3 CACHED\n"
    )


def test_library_entry_point_is_public() -> None:
    assert ctxpack.build is build and ctxpack.BuildOptions is BuildOptions


def test_cli_secret_through_the_session(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ctx", "FROM bb:latest\n"
                     "RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok | tr a-z A-Z)\" = S3CRET && echo secret-ok\n")
    secret = tmp_path / "tok.txt"
    secret.write_text("s3cret")
    host = f"unix://{dockerd.socket}"
    p = cli(str(root), "-H", host, "--builder", "buildkit", "--network", "none", "--progress", "plain",
            "--no-cache", "--secret", f"id=tok,src={secret}")
    assert p.returncode == 0, p.stderr
    assert "secret-ok" in p.stderr and "s3cret" not in p.stderr
    p = cli(str(root), "-H", host, "--builder", "buildkit", "--no-session", "--secret", f"id=tok,src={secret}")
    assert p.returncode == 2 and "need a BuildKit build with a session" in p.stderr
