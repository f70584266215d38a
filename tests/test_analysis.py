"""What a build reads from its context (ctxpack.dockerfile.analysis), by BuildKit's rules.

The expectations follow moby/buildkit ``frontend/dockerfile/dockerfile2llb``
(convert.go, convert_runmount.go), ``instructions`` (parse.go, commands.go,
commands_runmount.go) and ``shell/lex.go``; the classic builder's differences
(every stage up to the target, ARGs not inherited, ENV before ARG) are
checked under ``dialect="classic"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ctxpack
from ctxpack.dockerfile.analysis import Analysis, Source, analyze, host_platform, platform_args
from ctxpack.dockerfile.parser import parse_dockerfile
from ctxpack.errors import DockerfileSyntaxError
from ctxpack.errors import DockerfileError

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "dockerfiles"
CORPUS_FILES = sorted(CORPUS.glob("*")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is absent")


def an(text: str, **kw: Any) -> Analysis:
    return analyze(text, source="Dockerfile", **kw)


def pats(text: str, **kw: Any) -> list[str]:
    a = an(text, **kw)
    assert not a.whole_context, a.reasons
    return a.patterns


def whole(text: str, **kw: Any) -> list[str]:
    a = an(text, **kw)
    assert a.whole_context and a.sources == [] and a.reasons
    return a.reasons


def fails(text: str, **kw: Any) -> DockerfileSyntaxError:
    with pytest.raises(DockerfileSyntaxError) as ei:
        analyze(text, source="ctx/Dockerfile", **kw)
    return ei.value


# --- the corpus --------------------------------------------------------------------------

def _targets(path: Path) -> list[str | None]:
    df = parse_dockerfile(path.read_bytes(), path.name)
    return [None] + [i.args[2] for i in df.instructions if i.cmd == "FROM" and len(i.args) == 3]


@needs_corpus
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name[:60])
def test_every_corpus_dockerfile_analyses(path: Path) -> None:
    for dialect in ("buildkit", "classic"):
        for target in _targets(path):
            a = analyze(path.read_bytes(), target=target, dialect=dialect, source=path.name)
            assert a.used_stages and set(a.used_stages) <= set(a.stages)
            assert a.whole_context == bool(a.reasons)
            if a.whole_context:
                assert a.sources == []
            for s in a.sources:
                assert s.pattern and not s.pattern.startswith("/") and s.stage in a.used_stages


# Hand-checked expectations: (file, options, patterns or None for the whole
# context, a fragment of the first reason / of the notes, used stages or None).
CORPUS_CASES: list[tuple[str, dict[str, Any], list[str] | None, str, list[str] | None]] = [
    # multi-stage, trailing-slash directories, a stage built FROM another
    ("HORNET-Storage__hornet-storage__Dockerfile.Dockerfile", {},
     ["airlock", "airlock/config.example.yaml", "hornets-hyperswarm", "hornets-nostr-relay",
      "hornets-nostr-relay/config.example.yaml", "hornets-nostr-relay/release/bundle/docker/entrypoint.sh",
      "hornets-relay-panel", "nosis-cli"], "",
     ["sidecar-builder", "panel-builder", "go-builder", "compliance-builder", "4"]),
    ("HORNET-Storage__hornet-storage__Dockerfile.Dockerfile", {"target": "panel-builder"},
     ["hornets-relay-panel"], "", ["panel-builder"]),
    # stage chain builder -> server_dependencies -> server, multi-source COPY
    ("Significant-Gravitas__AutoGPT__autogpt_platform__backend__Dockerfile.Dockerfile", {},
     ["autogpt_platform/autogpt_libs", "autogpt_platform/autogpt_server",
      "autogpt_platform/autogpt_server/poetry.lock", "autogpt_platform/autogpt_server/pyproject.toml",
      "autogpt_platform/autogpt_server/schema.prisma"], "", ["builder", "server_dependencies", "server"]),
    ("Significant-Gravitas__AutoGPT__autogpt_platform__backend__Dockerfile.Dockerfile",
     {"target": "server_dependencies"},
     ["autogpt_platform/autogpt_libs", "autogpt_platform/autogpt_server/poetry.lock",
      "autogpt_platform/autogpt_server/pyproject.toml", "autogpt_platform/autogpt_server/schema.prisma"], "",
     ["builder", "server_dependencies"]),
    # leading-slash sources, a glob, a multi-source COPY into an ENV dest
    ("getsentry__sentry__self-hosted__Dockerfile.Dockerfile", {},
     ["dist/*.whl", "dist/requirements-frozen.txt", "self-hosted/config.yml", "self-hosted/docker-entrypoint.sh",
      "self-hosted/sentry.conf.py"], "", ["0"]),
    # unnamed stages referenced by index (COPY --from=0 / --from=1)
    ("grafana__grafana__Dockerfile.Dockerfile", {},
     ["Gruntfile.js", "build.go", "conf", "emails", "go.mod", "go.sum", "package.json", "packages",
      "packaging/docker/run.sh", "pkg", "public", "scripts", "tools/phantomjs/render.js", "tsconfig.json",
      "tslint.json", "vendor", "yarn.lock"], "", ["0", "1", "2"]),
    ("grafana__grafana__Dockerfile.Dockerfile", {"dialect": "classic"},
     ["Gruntfile.js", "build.go", "conf", "emails", "go.mod", "go.sum", "package.json", "packages",
      "packaging/docker/run.sh", "pkg", "public", "scripts", "tools/phantomjs/render.js", "tsconfig.json",
      "tslint.json", "vendor", "yarn.lock"], "", ["0", "1", "2"]),
    # cache mounts, COPY --link --from with ENV paths
    ("invoke-ai__InvokeAI__docker__Dockerfile.Dockerfile", {},
     ["docker/docker-entrypoint.sh", "invokeai", "invokeai/frontend/web", "pyproject.toml"], "",
     ["builder", "web-builder", "runtime"]),
    ("invoke-ai__InvokeAI__docker__Dockerfile.Dockerfile", {"target": "web-builder"},
     ["invokeai/frontend/web"], "", ["web-builder"]),
    # ARG in a --from source path (not this context); --chmod
    ("plausible__analytics__Dockerfile.Dockerfile", {},
     ["assets", "assets/package-lock.json", "assets/package.json", "config", "extra", "lib", "mix.exs", "mix.lock",
      "priv", "rel", "rel/docker-entrypoint.sh", "storybook", "tracker", "tracker/package-lock.json",
      "tracker/package.json"], "", ["buildcontainer", "1"]),
    # glob and 'dir/.'
    ("dotnet__dotnet-docker__samples__aspnetapp__Dockerfile.Dockerfile", {}, ["aspnetapp", "aspnetapp/*.csproj"],
     "", ["build", "1"]),
    # a platform ARG in a source path: the platform being built
    ("traefik__traefik__Dockerfile.Dockerfile", {"platform": "linux/amd64"}, ["dist/linux/amd64/traefik"], "", ["0"]),
    ("traefik__traefik__Dockerfile.Dockerfile", {"build_args": {"TARGETPLATFORM": "linux/arm64"}},
     ["dist/linux/arm64/traefik"], "", ["0"]),
    # FROM scratch minimal-context stage; per-platform stages; FROM runtime-$TARGETARCH
    ("ollama__ollama__Dockerfile.Dockerfile", {"target": "llm-code"}, [".git", ".gitmodules", "llm"], "",
     ["llm-code"]),
    ("ollama__ollama__Dockerfile.Dockerfile", {"target": "cpu-builder-amd64"},
     [".git", ".gitmodules", "llm", "scripts/rh_linux_deps.sh"], "", ["llm-code", "cpu-builder-amd64"]),
    ("ollama__ollama__Dockerfile.Dockerfile", {"target": "cpu-builder-amd64", "dialect": "classic"},
     [".git", ".gitmodules", "llm", "scripts/rh_linux_deps.sh"], "",
     ["llm-code", "cuda-build-amd64", "cuda-build-arm64", "rocm-build-amd64", "cpu-builder-amd64"]),
    ("ollama__ollama__Dockerfile.Dockerfile", {}, None, "COPY reads the whole context", None),
    # ARG-selected stages: FROM build-base-${BASE_VARIANT}
    ("docker__cli__Dockerfile.Dockerfile", {"target": "gotestsum"}, [], "", ["xx", "build-base-alpine", "gotestsum"]),
    ("docker__cli__Dockerfile.Dockerfile", {"target": "gotestsum", "build_args": {"BASE_VARIANT": "bullseye"}}, [],
     "", ["xx", "build-base-bullseye", "gotestsum"]),
    ("docker__cli__Dockerfile.Dockerfile", {}, None, "RUN --mount reads the whole context", None),  # --mount=ro
    # FROM binaries-$TARGETOS: the stage of the platform built; RUN --mount=target=.
    ("docker__buildx__Dockerfile.Dockerfile", {"platform": "linux/amd64"}, None, "RUN --mount reads the whole context",
     ["xx", "golatest", "gobase", "buildx-version", "buildx-build", "binaries-unix", "binaries-linux", "binaries", "17"]),
    ("docker__buildx__Dockerfile.Dockerfile", {"platform": "darwin/arm64"}, None, "RUN --mount reads the whole context",
     ["xx", "golatest", "gobase", "buildx-version", "buildx-build", "binaries-unix", "binaries-darwin", "binaries", "17"]),
    ("docker__buildx__Dockerfile.Dockerfile", {"target": "dockerd-release"}, [], "", ["dockerd-release"]),
    # RUN heredocs, bind mounts of the whole context, stage mounts
    ("navidrome__navidrome__Dockerfile.Dockerfile", {"target": "ui-bundle"},
     ["ui", "ui/bin", "ui/package-lock.json", "ui/package.json"], "", ["ui", "ui-bundle"]),
    ("navidrome__navidrome__Dockerfile.Dockerfile", {"target": "taglib-build"}, [], "", ["taglib-build"]),
    ("navidrome__navidrome__Dockerfile.Dockerfile", {}, None, "RUN --mount reads the whole context", None),
    # proxy ARGs re-declared per stage; COPY --from with a glob
    ("n8n-io__n8n__docker__images__n8n__Dockerfile.Dockerfile", {},
     ["compiled", "docker/images/n8n/docker-entrypoint.sh", "docker/images/n8n/n8n-task-runners.json"], "",
     ["system-deps", "app-artifact-processor", "launcher-downloader", "runtime"]),
    # COPY <<EOF: inline content, nothing from the context
    ("chrisguest75__docker_examples__60_heredocs__Dockerfile.Dockerfile", {}, [], "", ["0"]),
    # ONBUILD COPY: read only by a child build
    ("irvin-s__docker_repair__01_analyze_binacle_dataset__sources__482413426.Dockerfile", {}, [],
     "ONBUILD triggers of external base images are assumed absent", ["0"]),
    # RUN --mount=type=ssh only
    ("tsuboost__docker-experimental-ssh-circleci__Dockerfile.Dockerfile", {}, [], "", ["0"]),
    # ADD of a local tarball still reads it
    ("alpinelinux__docker-alpine__x86_64__Dockerfile.Dockerfile", {}, ["alpine-minirootfs-3.23.6-x86_64.tar.gz"], "",
     ["0"]),
    ("Matts966__docker-git__Dockerfile.Dockerfile", {}, [".ssh/id_rsa"], "", ["0"]),
    # '# escape=`'
    ("Raizo-TCS__archive_r__.github__docker__ci-windows-msvc.Dockerfile", {},
     ["install-deps-msvc-container.ps1", "install-deps-msvc.ps1"], "", ["0"]),
    ("prometheus__prometheus__Dockerfile.Dockerfile", {},
     ["console_libraries", "consoles", "documentation/examples/prometheus.yml", "prometheus", "promtool"], "", ["0"]),
    # COPY --exclude (labs syntax): still the whole context, and said so
    ("paradigmxyz__reth__Dockerfile.Dockerfile", {"target": "planner"}, None, "COPY reads the whole context",
     ["chef", "planner"]),
    ("paradigmxyz__reth__Dockerfile.Dockerfile", {"target": "chef"}, [".github/scripts/install_llvm_ubuntu.sh"], "",
     ["chef"]),
    # ADD with a local glob into an ARG dest; FROM ${BASE_IMAGE}
    ("mastodon__mastodon__Dockerfile.Dockerfile", {"target": "bundle-installer"}, ["Gemfile*"], "",
     ["base", "builder-base", "bundle-installer"]),
    ("mastodon__mastodon__Dockerfile.Dockerfile", {"target": "yarn-installer"}, ["package.json", "yarn.lock"], "",
     ["base", "builder-base", "yarn-installer"]),
    # FROM ${BUILD_FROM} without a default; COPY . homeassistant/
    ("home-assistant__core__Dockerfile.Dockerfile", {}, None, "COPY reads the whole context", ["0"]),
    # RUN --mount=type=bind,source=uv.lock and COPY . /app
    ("astral-sh__uv-docker-example__Dockerfile.Dockerfile", {}, None, "COPY reads the whole context", ["0"]),
]


@needs_corpus
@pytest.mark.parametrize("name,opts,expected,fragment,used", CORPUS_CASES,
                         ids=[f"{c[0][:40]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CORPUS_CASES])
def test_corpus_expectations(name: str, opts: dict[str, Any], expected: list[str] | None, fragment: str,
                             used: list[str] | None) -> None:
    a = analyze((CORPUS / name).read_bytes(), source=name, **opts)
    if expected is None:
        assert a.whole_context
        assert fragment in a.reasons[0]
    else:
        assert not a.whole_context, a.reasons
        assert a.patterns == expected
        if fragment:
            assert any(fragment in n for n in a.notes), a.notes
    if used is not None:
        assert a.used_stages == used


@needs_corpus
def test_corpus_onbuild_child_and_exclude_note() -> None:
    # The binacle file's ONBUILD triggers run when a later stage is built on it.
    text = (CORPUS / "irvin-s__docker_repair__01_analyze_binacle_dataset__sources__482413426.Dockerfile").read_text()
    text = text.replace("FROM zenika/alpine-node", "FROM zenika/alpine-node AS app") + "\nFROM app\n"
    a = an(text)
    assert a.whole_context and "ONBUILD COPY reads the whole context" in a.reasons[0]
    a = an(text.replace("ONBUILD COPY . /usr/src/app", "ONBUILD COPY src /usr/src/app"))
    assert a.patterns == ["package.json", "src"]
    assert {(s.instruction, s.line, s.stage) for s in a.sources} == {("ONBUILD COPY", 3, "1"), ("ONBUILD COPY", 5, "1")}
    reth = analyze((CORPUS / "paradigmxyz__reth__Dockerfile.Dockerfile").read_bytes(), target="planner")
    assert any("--exclude is not applied" in n for n in reth.notes)


# --- COPY / ADD sources ------------------------------------------------------------------------

def test_copy_sources_and_flags() -> None:
    assert pats("FROM a\nCOPY --chown=1:1 --chmod=644 --link a.txt dir/ src/*.py /dst/\n") == [
        "a.txt", "dir", "src/*.py"]
    assert pats("FROM a\nCOPY /abs ./rel ../up x/../y a/./b/. /d\n") == ["a/b", "abs", "rel", "up", "y"]
    assert pats('FROM a\nCOPY ["a b.txt", "c", "/d"]\n') == ["a b.txt", "c"]
    assert pats('FROM a\nCOPY "quoted.txt" \'single\' /d\n') == ["quoted.txt", "single"]
    # shell-form COPY splits on blanks before expansion: an escaped blank does not join words
    assert pats('FROM a\nCOPY esc\\ aped /d\n') == ["aped", "esc"]
    assert pats("FROM a\nCOPY [a]*.txt ?.md /d\n") == ["?.md", "[a]*.txt"]
    a = an("FROM a\nRUN x\nCOPY src /s\n")
    assert a.sources == [Source("src", 3, "COPY", "0")]
    assert str(a.sources[0]) == "src (COPY at line 3, stage 0)"


@pytest.mark.parametrize("src", [".", "./", "/", "..", "a/..", "./.", "${EMPTY}", "$EMPTY/"])
def test_copy_of_the_whole_context(src: str) -> None:
    (reason,) = whole(f"FROM scratch\nARG EMPTY=\nCOPY {src} /app\n")
    assert reason.startswith("Dockerfile:3: COPY reads the whole context")


def test_heredoc_sources_read_nothing() -> None:
    assert pats("FROM a\nCOPY <<EOF /x\nhello\nEOF\n") == []
    assert pats("FROM a\nCOPY <<EOF real.txt <<-'B' /x\none\nEOF\n\ttwo\n\tB\n") == ["real.txt"]
    assert pats('FROM a\nCOPY ["<<EOF", "/x"]\n') == []  # BuildKit treats the word as inline content
    assert pats("FROM a\nRUN <<EOF\ncat /etc/passwd\nEOF\n") == []


@pytest.mark.parametrize("src,buildkit,classic", [
    ("https://example.com/a.tar.gz", [], []),
    ("http://example.com/repo.git", [], []),
    ("git@github.com:moby/buildkit.git", [], ["git@github.com:moby/buildkit.git"]),
    ("ssh://git@example.com/x.git", [], ["ssh:/git@example.com/x.git"]),
    ("git://example.com/x", [], ["git:/example.com/x"]),
    ("local.tar.gz", ["local.tar.gz"], ["local.tar.gz"]),
    ("github.com/moby/buildkit", ["github.com/moby/buildkit"], ["github.com/moby/buildkit"]),
    ("git@nohost", ["git@nohost"], ["git@nohost"]),
    ("HTTP://example.com/x", ["HTTP:/example.com/x"], ["HTTP:/example.com/x"]),
])
def test_add_remote_sources(src: str, buildkit: list[str], classic: list[str]) -> None:
    text = f"FROM a\nADD --checksum=sha256:00 --keep-git-dir {src} /dst\n"
    assert pats(text) == buildkit
    assert pats(text, dialect="classic") == classic


def test_copy_of_a_url_fails() -> None:
    assert fails("FROM a\nCOPY https://example.com/x /x\n").reason.startswith("source can't be a URL for COPY")
    assert fails("FROM a\nCOPY git@github.com:a/b.git /x\n").reason.startswith("source can't be a git ref for COPY")


def test_copy_exclude_is_noted() -> None:
    a = an("FROM a\nCOPY --exclude=*.md --exclude=tmp docs /docs\n")
    assert a.patterns == ["docs"]
    assert any("Dockerfile:2: COPY --exclude is not applied" in n for n in a.notes)


# --- stages, --from and --target -------------------------------------------------------------------

def test_copy_from_stage_index_image_and_named_context() -> None:
    text = ("FROM a AS Build\nCOPY x /x\nFROM b\nCOPY --from=BUILD /x /y\nCOPY --from=0 /x /z\n"
            "COPY --from=nginx:latest /etc /etc\nCOPY --from=mycontext /m /m\n")
    a = an(text)
    assert a.patterns == ["x"] and a.used_stages == ["build", "1"] and a.stages == ["build", "1"]
    assert any("--from=mycontext is not a stage here" in n and "--build-context" in n for n in a.notes)
    # only via the index
    assert an("FROM a\nCOPY x /x\nFROM b\nCOPY --from=0 /x /y\n").used_stages == ["0", "1"]
    # COPY --from= (empty) reads the context like a plain COPY
    assert pats("FROM a\nCOPY --from= x /x\n") == ["x"]


def test_from_by_index_is_an_image() -> None:
    a = an("FROM a\nCOPY x /\nFROM 0\nCOPY y /\n")
    assert a.patterns == ["y"] and a.used_stages == ["1"]


def test_base_stage_names_are_case_insensitive() -> None:
    a = an("FROM a AS Base\nCOPY b /\nFROM BASE\nCOPY c /\n")
    assert a.patterns == ["b", "c"] and a.used_stages == ["base", "1"]


TARGETS = "FROM a AS one\nCOPY one.txt /\nFROM a AS two\nCOPY two.txt /\nFROM a AS three\nCOPY --from=one /x /\nCOPY three.txt /\n"


@pytest.mark.parametrize("target,buildkit,classic", [
    (None, ["one.txt", "three.txt"], ["one.txt", "three.txt", "two.txt"]),
    ("three", ["one.txt", "three.txt"], ["one.txt", "three.txt", "two.txt"]),
    ("TWO", ["two.txt"], ["one.txt", "two.txt"]),
    ("one", ["one.txt"], ["one.txt"]),
])
def test_target_buildkit_vs_classic(target: str | None, buildkit: list[str], classic: list[str]) -> None:
    assert pats(TARGETS, target=target) == buildkit
    assert pats(TARGETS, target=target, dialect="classic") == classic


def test_target_not_found() -> None:
    for t in ("four", "1"):  # stages are targeted by name only
        with pytest.raises(DockerfileError, match=rf"^sub/Dockerfile: target stage '{t}' could not be found"):
            analyze(TARGETS, target=t, source="sub/Dockerfile")


def test_duplicate_stage_names() -> None:
    text = "FROM a AS dup\nCOPY first /\nFROM a AS dup\nCOPY second /\nFROM b\nCOPY --from=dup /x /x\n"
    assert pats(text) == ["second"]  # BuildKit: the last stage of that name
    assert pats(text, target="dup") == ["second"]
    assert pats(text, target="dup", dialect="classic") == ["first"]


def test_stage_errors() -> None:
    e = fails("FROM a AS x\n\nCOPY --from=$S /a /b\n")
    assert (e.line, str(e)) == (3, ("ctx/Dockerfile:3: variable expansion is not supported for --from, define a "
                                   "new stage with FROM using ARG from global scope as a workaround"))
    assert fails("FROM a\nCOPY --from=5 /a /b\n").reason == "invalid stage index 5"
    e = fails("FROM a AS first\nCOPY --from=second /a /b\nFROM b AS second\n", target="first")
    assert e.line == 2 and "it needs to be defined before current stage 'first'" in e.reason
    assert pats("FROM a AS first\nCOPY --from=second /a /b\nFROM b AS second\nCOPY s /\n", target="second") == ["s"]
    assert "circular dependency" in fails("FROM a AS x\nCOPY --from=x /a /b\n").reason
    assert "circular dependency" in fails(
        "FROM a AS x\nCOPY --from=y /a /b\nFROM b AS y\nCOPY --from=x /a /b\n").reason
    assert fails("ARG B=\nFROM $B\n").reason == "base name ($B) should not be blank"
    assert str(fails("RUN x\nFROM a\n")) == "ctx/Dockerfile:1: RUN before the first FROM (no build stage in current context)"
    e = fails("ARG A=1\n")
    assert e.line == 1 and "no FROM instruction" in e.reason


def test_classic_from_resolution() -> None:
    # the classic builder resolves --from among the stages already built
    text = "FROM a AS first\nCOPY --from=second /a /b\nCOPY f /\nFROM b AS second\nCOPY s /\n"
    assert pats(text, target="first", dialect="classic") == ["f"]  # 'second' is an image there
    assert fails("FROM a\nCOPY --from=1 /a /b\nFROM b\n", dialect="classic").reason.endswith("invalid stage index 1")
    assert pats("FROM a\nCOPY x /\nFROM b\nCOPY --from=0 /x /y\n", target=None, dialect="classic") == ["x"]


def test_errors_only_where_the_stage_is_built() -> None:
    text = "FROM a AS x\nCOPY ${ /a\nFROM b\nCOPY ok /\n"
    assert pats(text) == ["ok"]  # BuildKit skips x
    e = fails(text, dialect="classic")
    assert e.line == 2 and "missing '}'" in e.reason


def test_unknown_base_may_be_any_matching_stage() -> None:
    text = ("ARG FLAVOR\nFROM scratch AS bin-linux\nCOPY linux.bin /\nFROM scratch AS bin-darwin\nCOPY darwin.bin /\n"
            "FROM scratch AS other\nCOPY other.txt /\nFROM bin-$FLAVOR\n")
    a = an(text)
    assert a.patterns == ["darwin.bin", "linux.bin"] and a.used_stages == ["bin-linux", "bin-darwin", "3"]
    assert any("may name (bin-linux, bin-darwin)" in n for n in a.notes)
    assert pats(text, build_args={"FLAVOR": "linux"}) == ["linux.bin"]
    # a platform ARG names the platform built's stage
    by_os = text.replace("$FLAVOR", "$TARGETOS")
    assert pats(by_os, platform="darwin/arm64") == ["darwin.bin"]
    assert pats(by_os, platform="linux/amd64") == ["linux.bin"]
    # FROM $IMAGE with no default: every earlier stage may be the base
    assert pats("ARG IMG\nFROM scratch AS s\nCOPY s.txt /\nFROM $IMG\nCOPY a /\n") == ["a", "s.txt"]
    # a base that may be a stage with ONBUILD triggers: the whole context
    (reason,) = whole("ARG IMG\nFROM scratch AS s\nONBUILD COPY o /\nFROM $IMG\nCOPY a /\n")
    assert "ONBUILD triggers" in reason
    # an unknown base image may set any variable
    assert "the base image '$IMG' may set it" in whole("ARG IMG\nFROM $IMG\nCOPY $X /\n")[0]


def test_global_arg_in_from_selects_a_stage() -> None:
    text = "ARG BASE=builder\nFROM alpine AS builder\nCOPY b.txt /\nFROM $BASE\nCOPY c.txt /\n"
    assert pats(text) == ["b.txt", "c.txt"]
    assert pats(text, build_args={"BASE": "alpine"}) == ["c.txt"]


# --- ARG and ENV ----------------------------------------------------------------------------------------

def test_global_args() -> None:
    # A global ARG is visible in a stage only when re-declared there.
    assert pats("ARG V=1\nFROM scratch\nCOPY app-$V /\n") == ["app-"]
    assert pats("ARG V=1\nFROM scratch\nARG V\nCOPY app-$V /\n") == ["app-1"]
    assert pats("ARG V=1\nFROM scratch\nARG V\nCOPY app-$V /\n", build_args={"V": "2"}) == ["app-2"]
    assert pats("ARG A=x\nARG B=${A}-y\nFROM scratch\nARG B\nCOPY $B /\n") == ["x-y"]
    (reason,) = whole("ARG V\nFROM scratch\nARG V\nCOPY $V /\n")
    assert "the global ARG V has no default" in reason
    # On an external base, an undeclared variable may come from the image.
    (reason,) = whole("ARG V=1\nFROM alpine\nCOPY app-$V /\n")
    assert reason == ("Dockerfile:3: COPY source 'app-$V': $V is not set in the Dockerfile and the base image "
                      "'alpine' may set it")


def test_stage_args() -> None:
    assert pats("FROM a\nARG V=3\nCOPY app-$V /\n") == ["app-3"]
    assert pats("FROM a\nARG V=3\nCOPY app-$V /\n", build_args={"V": "9"}) == ["app-9"]
    assert pats("FROM a\nARG A=1 B=$A C=${B}2\nCOPY $C /\n") == ["12"]
    # the classic builder expands a whole ARG instruction before setting any of it
    assert pats("FROM scratch\nARG A=1 B=x$A\nCOPY $B /\n", dialect="classic") == ["x"]
    assert pats("ARG A=1 B=x$A\nFROM scratch\nARG B\nCOPY $B /\n", dialect="classic") == ["x"]
    assert pats("ARG A=1 B=x$A\nFROM scratch\nARG B\nCOPY $B /\n") == ["x1"]
    assert pats("FROM a\nARG V=\"two words\"\nCOPY $V /\n") == ["two words"]
    (reason,) = whole("FROM a\nARG V\nCOPY app-$V /\n")
    assert reason == "Dockerfile:3: COPY source 'app-$V': ARG V has no default value (pass --build-arg V=...)"
    assert pats("FROM a\nARG V\nCOPY app-$V /\n", build_args={"V": "x"}) == ["app-x"]
    # undeclared build args are not seen
    assert pats("FROM scratch\nCOPY app-$V /\n", build_args={"V": "x"}) == ["app-"]


def test_platform_args() -> None:
    text = "FROM alpine\nARG TARGETARCH\nCOPY bin/$TARGETARCH/app /\n"
    # The platform being built: --platform, else this machine's (issue 10).
    assert pats(text, platform="linux/arm64") == ["bin/arm64/app"]
    host_arch = host_platform().split("/")[1]
    assert pats(text) == [f"bin/{host_arch}/app"]
    assert pats(text, build_args={"TARGETARCH": "arm64"}, platform="linux/amd64") == ["bin/arm64/app"]
    assert "ARG TARGETARCH has no default" in whole(text, dialect="classic")[0]
    # a default in the stage wins over the automatic value
    assert pats("FROM alpine\nARG TARGETARCH=amd64\nCOPY bin/$TARGETARCH/app /\n") == ["bin/amd64/app"]


def test_env_substitution() -> None:
    assert pats("FROM scratch\nENV D=/src\nCOPY $D/a ${D}/b /x\n") == ["src/a", "src/b"]
    assert pats("FROM scratch\nENV D some dir\nCOPY $D /\n") == ["some dir"]
    # all pairs of one ENV see the values from before it
    assert pats("FROM scratch\nENV A=1\nENV A=2 B=$A\nCOPY $B $A /\n") == ["1", "2"]
    assert pats("FROM scratch\nCOPY ${MISSING:-fallback} /\n") == ["fallback"]
    assert pats("FROM scratch\nARG V=1\nCOPY x${V:+-alt} /\n") == ["x-alt"]
    assert pats("FROM scratch\nARG V=\nCOPY x${V:+-alt} y${V+-set} z${V:-d} /\n") == ["x", "y-set", "zd"]
    assert pats("FROM scratch\nARG F=app.tar.gz\nCOPY ${F%%.*} ${F#*.} /\n") == ["app", "tar.gz"]
    assert pats("FROM scratch\nARG V=1\nCOPY '$V' \"$V\" \\$V /\n") == ["$V", "1"]
    # external base: the image may set it
    assert "may set it" in whole("FROM alpine\nCOPY ${MISSING:-fallback} /\n")[0]
    assert pats("FROM alpine\nENV M=set\nCOPY ${M:-fallback} /\n") == ["set"]
    # JSON form is expanded too
    assert pats('FROM scratch\nARG A=x\nCOPY ["$A/f", "/d"]\n') == ["x/f"]
    # the active escape character
    assert pats("# escape=`\nFROM scratch\nARG A=x\nCOPY `$A $A\\b /d\n") == ["$A", "x\\b"]


def test_env_and_arg_across_stages() -> None:
    assert pats("FROM scratch AS base\nENV D=dir\nFROM base\nCOPY $D /\n") == ["dir"]
    text = "FROM scratch AS base\nARG V=1\nFROM base\nCOPY f$V /\n"
    assert pats(text) == ["f1"]  # BuildKit keeps the base stage's ARG values
    assert pats(text, dialect="classic") == ["f"]  # the classic builder does not
    text = "FROM scratch\nENV V=env\nARG V=arg\nCOPY $V /\n"
    assert pats(text) == ["arg"]  # BuildKit: the last one set
    assert pats(text, dialect="classic") == ["env"]  # classic: ENV wins over ARG
    # a child stage: BuildKit applies the base image's ENV over the inherited state
    text = "FROM scratch AS base\nENV V=env\nARG V=arg\nFROM base\nCOPY $V /\n"
    assert pats(text) == ["env"]
    assert pats(text, dialect="classic") == ["env"]


def test_unknown_env_name_poisons_later_lookups() -> None:
    (reason,) = whole("FROM scratch\nARG K\nARG D=x\nENV $K=y\nCOPY $D /\n")
    assert "sets a variable whose name is not known" in reason


def test_bad_substitution_names_the_line() -> None:
    e = fails("FROM scratch\nCOPY ${A:#x} /\n")
    assert str(e).startswith("ctx/Dockerfile:2: failed to process \"${A:#x}\": unsupported modifier")
    assert fails("FROM scratch\nCOPY ${NOPE?must_be_set} /\n").reason.endswith("NOPE: must_be_set")


# --- ONBUILD ----------------------------------------------------------------------------------------------

ONB = "FROM alpine AS base\nONBUILD COPY onbuild.txt /\nCOPY base.txt /\nFROM base\nCOPY child.txt /\n"


def test_onbuild_triggers_run_in_child_stages() -> None:
    a = an(ONB)
    assert a.patterns == ["base.txt", "child.txt", "onbuild.txt"]
    assert Source("onbuild.txt", 2, "ONBUILD COPY", "1") in a.sources
    assert pats(ONB, target="base") == ["base.txt"]
    assert pats(ONB, dialect="classic") == ["base.txt", "child.txt", "onbuild.txt"]
    # triggers see the base stage's ENV, before the child's own instructions
    text = "FROM scratch AS base\nENV F=from-base\nONBUILD COPY $F /\nFROM base\nENV F=child\nCOPY $F /x\n"
    assert pats(text) == ["child", "from-base"]
    # only the direct base's triggers run
    text = "FROM scratch AS a\nONBUILD COPY from-a /\nFROM a AS b\nFROM b AS c\nCOPY c /\n"
    assert pats(text) == ["c", "from-a"]
    assert pats(text, target="a") == []


def test_onbuild_from_adds_a_dependency() -> None:
    text = "FROM scratch AS assets\nCOPY assets /a\nFROM alpine AS base\nONBUILD COPY --from=assets /a /a\nFROM base\n"
    a = an(text)
    assert a.patterns == ["assets"] and a.used_stages == ["assets", "base", "2"]
    assert pats(text, target="base") == []


def test_onbuild_heredoc_and_notes() -> None:
    assert pats("FROM scratch AS base\nONBUILD COPY <<EOF /x\nhi\nEOF\nFROM base\n") == []
    a = an("FROM node:20\nCOPY a /\n")
    assert a.notes == ["ONBUILD triggers of external base images are assumed absent: 'node:20' (stage 0)"]
    assert an("FROM scratch\nCOPY a /\n").notes == []


def test_onbuild_trigger_errors_name_the_onbuild_line() -> None:
    e = fails("FROM a AS base\nRUN x\nONBUILD COPY onlyone\nFROM base\n")
    assert e.line == 3 and "ONBUILD trigger: COPY requires at least two arguments" in e.reason


# --- RUN --mount -------------------------------------------------------------------------------------------

def test_run_mounts() -> None:
    assert pats("FROM a\nRUN --mount=type=bind,source=uv.lock,target=uv.lock --mount=type=cache,target=/c "
                "--mount=type=secret,id=x --mount=type=ssh --mount=type=tmpfs,target=/t true\n") == ["uv.lock"]
    assert pats("FROM a\nRUN --mount=type=bind,src=./a/../b,target=/b --mount=source=c,target=/c,ro x\n") == ["b", "c"]
    assert pats('FROM a\nRUN --mount="type=bind,source=a b,target=/x" x\n') == ["a b"]
    assert pats("FROM a\nARG SRC=conf\nRUN --mount=type=bind,source=$SRC,target=/s x\n") == ["conf"]
    assert pats("FROM a\nRUN --mount=TYPE=Cache,target=/x --mount=type=cache,source=s,target=/y x\n") == []
    # an unknown type may be bind
    assert pats("FROM a\nARG T\nRUN --mount=type=$T,source=x,target=/x y\n") == ["x"]


@pytest.mark.parametrize("mount", ["target=.", "type=bind,target=/src", "ro", "type=bind,source=.,target=/x",
                                   "type=bind,source=/,target=/x", "source=,target=/x"])
def test_bind_mount_of_the_whole_context(mount: str) -> None:
    (reason,) = whole(f"FROM a\nRUN --mount={mount} make\n")
    assert reason.startswith("Dockerfile:2: RUN --mount reads the whole context")


def test_mount_from_a_stage() -> None:
    text = ("FROM a AS builder\nCOPY b /\nFROM a AS cachestage\nCOPY c /\nFROM a AS unused\nCOPY u /\n"
            "FROM a\nRUN --mount=from=builder,target=/x --mount=type=cache,from=cachestage,target=/y "
            "--mount=from=alpine:3,target=/z true\n")
    a = an(text)
    assert a.patterns == ["b", "c"] and a.used_stages == ["builder", "cachestage", "3"]


def test_mount_errors() -> None:
    assert fails("FROM a\nRUN --mount=type=weird,target=/x y\n").reason == "unsupported mount type 'weird'"
    assert "doesn't support variable expansion" in fails("FROM a\nRUN --mount=from=$X,target=/x y\n").reason
    assert "must be a key=value pair" in fails("FROM a\nRUN --mount=type=bind,oops,target=/x y\n").reason


# --- frontends, dialects, -f - ------------------------------------------------------------------------------

@pytest.mark.parametrize("syntax,custom", [
    ("docker/dockerfile:1", False), ("docker/dockerfile:1.7-labs", False), ("docker.io/docker/dockerfile:1.4", False),
    ("docker/dockerfile-upstream:master", False), ("docker/dockerfile@sha256:ab", False),
    ("example.com/other/frontend:1", True), ("devthefuture/dockerfile-x", True),
])
def test_custom_frontends_fall_back(syntax: str, custom: bool) -> None:
    text = f"# syntax={syntax}\nFROM a\nCOPY x /\n"
    a = an(text)
    assert a.whole_context == custom
    if custom:
        assert "is not Docker's Dockerfile frontend" in a.reasons[0]
        assert pats(text, dialect="classic") == ["x"]  # the classic builder ignores '# syntax='
    assert an("FROM a\nCOPY x /\n", build_args={"BUILDKIT_SYNTAX": syntax}).whole_context == custom


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError):
        analyze("FROM a\n", dialect="kaniko")


def test_dockerfile_from_stdin(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a")
    (root / "other.txt").write_text("o")
    ctx = ctxpack.open_context(root, dockerfile="-", stdin_dockerfile=b"FROM scratch\nCOPY src /src\n", minimal=True)
    assert ctx.analysis is not None and ctx.analysis.patterns == ["src"]
    names = {e.path for e in ctxpack.list_entries(ctx)}
    assert "src/a.py" in names and "other.txt" not in names
    with pytest.raises(DockerfileSyntaxError, match=r"^-:2: unknown instruction: BOGUS"):
        ctxpack.open_context(root, dockerfile="-", stdin_dockerfile=b"FROM scratch\nBOGUS x\n", minimal=True)


# --- Selection: which context paths the sources select ---------------------------------------------------

def test_selection_literal_and_wildcard_sources(tmp_path: Path) -> None:
    from ctxpack.dockerfile.analysis import Selection

    # no wildcards: a literal path to both builders, backslashes included
    sel = Selection(["back\\slash.txt", "a\\*b", "dir"])
    assert sel.wants("back\\slash.txt") and not sel.wants("backslash.txt")
    assert sel.wants("a\\*b") and not sel.wants("axb") and not sel.wants("a*b")
    assert sel.wants("dir/x/y") and sel.may_contain("dir") and not sel.wants("dirx")
    # wildcards: filepath.Match per component (a literal component may also be equal)
    sel = Selection(["src/*.py", "d\\ir/?.txt", "[ab].md"])
    assert sel.wants("src/a.py") and sel.wants("src/pkg.py/inner") and not sel.wants("src/sub/a.py")
    assert sel.may_contain("src") and not sel.may_contain("lib")
    assert sel.wants("d\\ir/x.txt") and sel.wants("dir/x.txt") and not sel.wants("dir/xy.txt")
    assert sel.wants("a.md") and not sel.wants("c.md")
    # '**' spans directories (a superset of filepath.Match)
    sel = Selection(["src/**/*.go"])
    assert sel.wants("src/a/b/c.go") and sel.may_contain("src/a")
    # a literal source through a symlinked directory keeps the link and its target
    (tmp_path / "cfg").mkdir()
    (tmp_path / "link").symlink_to("cfg")
    sel = Selection(["link/c.yaml"], str(tmp_path))
    assert sel.wants("link") and sel.wants("cfg/c.yaml") and not sel.wants("cfg/d.yaml")


def test_platform_args_of_every_platform() -> None:
    args = platform_args("linux/arm/v7", "linux/amd64")
    assert args == {
        "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7",
        "TARGETOSVERSION": "", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64",
        "BUILDVARIANT": "", "BUILDOSVERSION": "",
    }
    assert platform_args("linux/arm64/v8")["TARGETPLATFORM"] == "linux/arm64"
    text = ("FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETOS TARGETARCH BUILDARCH\n"
            "COPY cmd/$TARGETOS-$TARGETARCH ./from-$BUILDARCH /src/\n")
    assert pats(text, platform="windows/amd64") == ["cmd/windows-amd64", f"from-{host_platform().split('/')[1]}"]
    with pytest.raises(DockerfileError, match="invalid platform 'arm64'"):
        analyze("FROM a\nCOPY x /\n", platform="arm64")


@pytest.mark.parametrize("src", [
    "https://github.com/org/tool/releases/download/v1/tool-${TARGETARCH}-${VERSION}.tar.gz",
    "http://example.com/$VERSION/x.tgz",
    '"https://example.com/${VERSION}"',
    "git://example.com/repo-$VERSION.git",
])
def test_add_url_with_an_unknown_arg_reads_nothing(src: str) -> None:
    # A URL source never reads the context: an ARG without a value in it is no reason to fall back.
    text = f"FROM alpine\nARG VERSION\nARG TARGETARCH\nADD {src} /opt/\nCOPY app /app\n"
    assert pats(text, platform="linux/amd64") == ["app"]


@pytest.mark.parametrize("src", ["${SCHEME}://example.com/x.tgz", "$BASE/x.tgz", "http${S}://x/y", "tool-$VERSION.tgz"])
def test_add_source_whose_start_is_unknown_still_falls_back(src: str) -> None:
    text = f"FROM alpine\nARG VERSION\nARG SCHEME\nARG BASE\nARG S\nADD {src} /opt/\n"
    assert whole(text)


def test_copy_of_a_url_with_an_arg_still_falls_back() -> None:
    # COPY refuses URLs once the value is known; with an unknown value nothing is decided here.
    assert whole("FROM alpine\nARG V\nCOPY https://example.com/$V /x\n")


def test_a_dockerfile_outside_the_current_directory_is_named_by_its_absolute_path(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial finding: ``-f /tmp/df`` from a deep directory was named
    ``../../../df:2`` in messages; inside the current directory it stays relative."""
    from ctxpack.explainer import source_warnings

    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "f").write_text("f")
    df = tmp_path / "df.miss"
    df.write_text("FROM scratch\nCOPY missing.txt /x\n")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    ctx = ctxpack.open_context(ctx_dir, dockerfile=str(df), minimal=True)
    assert ctx.dockerfile_shown() == str(df)
    assert any(w.startswith(f"{df}:2: COPY source 'missing.txt' does not exist") for w in source_warnings(ctx))
    monkeypatch.chdir(tmp_path)
    ctx = ctxpack.open_context(ctx_dir, dockerfile=str(df), minimal=True)
    assert ctx.dockerfile_shown() == "df.miss"
    assert any(w.startswith("df.miss:2:") for w in source_warnings(ctx))
