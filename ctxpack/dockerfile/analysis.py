"""What a build can read from its context, worked out from the Dockerfile.

The rules follow BuildKit's Dockerfile frontend (moby/buildkit
``frontend/dockerfile/dockerfile2llb``) and, under ``dialect="classic"``,
the classic builder:

* The stage graph.  ``FROM … AS name`` names a stage (case-insensitive); a
  stage's base is an earlier stage when its (ARG-expanded) base name is one;
  ``COPY --from=`` names a stage or gives its index (BuildKit: any stage in
  the file, the classic builder: one already built), else an image or a named
  build context (``--build-context``), neither of which is this context;
  ``RUN --mount=…,from=`` names a stage.  ``ONBUILD`` triggers of a stage run
  at the start of every stage that uses it as its base (their sources count
  there); triggers of external images are assumed absent (a note says so).
* Which stages run.  BuildKit builds the target (``--target``, else the last
  stage) and what it depends on, so a skipped stage's sources need nothing;
  the classic builder builds every stage up to the target in file order.
* The sources.  In the stages that run: ``COPY``/``ADD`` sources (not
  heredocs; for ``ADD`` not ``http(s)://`` URLs and, with BuildKit, not git
  repositories; a local archive is read), and ``RUN --mount=type=bind``
  without ``from=`` (``source`` defaults to the whole context).  ``COPY
  --from``, cache/tmpfs/secret/ssh mounts and heredocs read nothing here;
  ``--chown``/``--chmod``/``--link`` change nothing; ``--exclude`` is not
  applied (excluded paths are still counted).
* Variables.  Source paths (and mount options) are expanded with BuildKit's
  shell lexer: global ``ARG`` (before the first ``FROM``; BuildKit also
  defines the platform ARGs, ``TARGETARCH`` …, with the values of the
  platform being built: ``platform``, else the host's), per-stage ``ARG`` (a value from
  ``build_args``, else the default, else the global value), ``ENV`` (all
  pairs of one ``ENV`` see the values from before it), quotes and escapes.
  BuildKit keeps a base stage's ARG values in the stages built on it; the
  classic builder keeps only ENV.

Where the analysis cannot be sure — a variable whose value is unknown here
(an ARG without a value, a variable a base image may set), a
base stage named by such a variable that could be a stage with ONBUILD
triggers, a custom ``# syntax=`` frontend — it falls back to the whole
context and says why: never send too little.  An ``ADD`` source that is
a URL whatever its unknown variables hold (``https://…/tool-${V}.tgz``) is
fetched by the builder and is no reason to fall back.  A base named by an unknown
variable is taken to depend on every earlier stage its name could match.

Where Docker itself would refuse the Dockerfile (``--from`` with a variable,
a bad stage index, a bad substitution …) :func:`analyze` raises a
:class:`~ctxpack.dockerfile.parser.DockerfileSyntaxError` naming the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ctxpack.dockerfile.parser import PLACEHOLDER, Dockerfile, Getter, Instruction, Lexer, UnknownValue, is_heredoc, parse_dockerfile
from ctxpack.errors import BadPattern, DockerfileError, DockerfileSyntaxError, ShellLexError
from ctxpack._go.filepath import go_match
from ctxpack._go.strings import go_clean
from ctxpack.ignore.dialect import Dialect

__all__ = ["Analysis", "Selection", "Source", "analyze", "platform_args", "host_platform", "normalize_arch"]

PLATFORM_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT",
)
# platform.machine() names -> the OCI architecture (and variant) Docker uses.
_ARCHES = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


def normalize_arch(machine: str) -> str:
    """``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, ``armv7l`` → ``arm/v7``:
    a machine name (``uname -m``, the engine's ``Architecture``) as Docker
    names the architecture (and variant)."""
    arch, variant = _ARCHES.get(machine.lower(), (machine.lower() or "amd64", ""))
    return f"{arch}/{variant}" if variant else arch


def host_platform() -> str:
    """This machine's platform as Docker names it (``linux/amd64``,
    ``linux/arm/v7``): what a local daemon builds for by default (Docker
    Desktop on a Mac or Windows runs a Linux VM of the same architecture)."""
    import platform

    return "linux/" + normalize_arch(platform.machine())


def platform_args(target: str | None = None, build: str | None = None) -> dict[str, str]:
    """BuildKit's automatic platform ARGs for building ``target`` (default:
    :func:`host_platform`) on ``build`` (default: the host):
    ``TARGETPLATFORM=linux/arm/v7``, ``TARGETOS=linux``, ``TARGETARCH=arm``,
    ``TARGETVARIANT=v7``, ``TARGETOSVERSION=`` and the same for ``BUILD*``."""
    out: dict[str, str] = {}
    for prefix, value in (("TARGET", target), ("BUILD", build)):
        value = (value or host_platform()).strip().lower()
        parts = value.split("/")
        if "," in value or len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise DockerfileError(f"invalid platform {value!r}: use os/arch[/variant], e.g. linux/arm64")
        os_name, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if arch == "arm64" and variant == "v8":
            variant = ""  # containerd's normalisation: linux/arm64/v8 is linux/arm64
        out[prefix + "PLATFORM"] = "/".join(p for p in (os_name, arch, variant) if p)
        out[prefix + "OS"] = os_name
        out[prefix + "ARCH"] = arch
        out[prefix + "VARIANT"] = variant
        out[prefix + "OSVERSION"] = ""
    return out


_DOCKERFILE_FRONTENDS = ("docker/dockerfile", "docker/dockerfile-upstream")
_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")


@dataclass(frozen=True)
class Source:
    """A path (or glob) a build reads from the context, and who reads it."""

    pattern: str
    line: int
    instruction: str
    stage: str

    def __str__(self) -> str:
        return f"{self.pattern} ({self.instruction} at line {self.line}, stage {self.stage})"


@dataclass
class Analysis:
    """The result: the sources, or the whole context with the reasons."""

    dockerfile: str
    target: str | None
    stages: list[str]
    used_stages: list[str]
    sources: list[Source] = field(default_factory=list)
    whole_context: bool = False
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: External base images of the stages that run -> those stages (whose
    #: ONBUILD triggers only the engine knows: see ``analyze(onbuild=)``).
    base_images: dict[str, list[str]] = field(default_factory=dict)
    #: Every instruction that reads the context and what it reads, kept
    #: when the whole context is sent too (``.``: the whole context): which
    #: instructions a changed path affects (``watch --minimal``).
    readers: list[Source] = field(default_factory=list)

    @property
    def patterns(self) -> list[str]:
        return sorted({s.pattern for s in self.sources})

    def merge(self, other: Analysis) -> None:
        """Add what ``other`` (the same Dockerfile, built for another
        platform) reads: the context must serve both builds."""
        self.sources.extend(src for src in other.sources if src not in self.sources)
        self.readers.extend(src for src in other.readers if src not in self.readers)
        self.used_stages.extend(k for k in other.used_stages if k not in self.used_stages)
        for reason in other.reasons:
            self._whole(reason)
        for note in other.notes:
            self._note(note)
        for image, stages in other.base_images.items():
            mine = self.base_images.setdefault(image, [])
            mine.extend(k for k in stages if k not in mine)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _whole(self, reason: str) -> None:
        self.whole_context = True
        if reason not in self.reasons:
            self.reasons.append(reason)


@dataclass
class _Stage:
    index: int
    name: str | None
    from_inst: Instruction
    instructions: list[Instruction]
    base_raw: str = ""
    base: str | None = None  # the expanded base name, when known
    base_stage: int | None = None
    base_candidates: list[int] = field(default_factory=list)  # base name unknown: the stages it may name
    base_unknown: str | None = None  # why the base name is unknown

    @property
    def label(self) -> str:
        return self.name or str(self.index)

    @property
    def line(self) -> int:
        return self.from_inst.line


@dataclass
class _Step:
    """An instruction as it runs in a stage (its own, or an ONBUILD trigger)."""

    inst: Instruction
    escape: str
    line: int  # where to point at
    via: str = ""  # "ONBUILD " for triggers


@dataclass
class _Ref:
    kind: str  # "copy" or "mount"
    value: str
    dep: int | None
    line: int


class _Env:
    """The variables of a stage as it runs.

    ``state`` is BuildKit's (ENV and ARG, last write wins), ``image`` the
    ENV part (what an image carries to the stages built on it), ``args`` the
    ARG part (the classic builder looks at ENV first).  A name not found is
    unset, unless ``open_reason`` says something we cannot see (a base image)
    may set it, or ``poison`` says an ENV with an unknown name may have.
    """

    def __init__(self, dialect: Dialect, open_reason: str | None = None):
        self.dialect = dialect
        self.state: dict[str, str | UnknownValue] = {}
        self.image: dict[str, str | UnknownValue] = {}
        self.args: dict[str, str | UnknownValue] = {}
        self.open_reason = open_reason
        self.poison: str | None = None

    def child(self) -> _Env:
        e = _Env(self.dialect, self.open_reason)
        e.poison = self.poison
        e.image = dict(self.image)
        # BuildKit starts from the base stage's state (ARG values included) and
        # then applies the image's ENV on top; the classic builder keeps ENV only.
        e.state = {**self.state, **self.image} if self.dialect is Dialect.BUILDKIT else dict(self.image)
        return e

    def set_env(self, name: str, value: str | UnknownValue) -> None:
        self.state[name] = value
        self.image[name] = value

    def set_arg(self, name: str, value: str | UnknownValue) -> None:
        self.state[name] = value
        self.args[name] = value

    def get(self, name: str) -> str | UnknownValue | None:
        if self.poison:
            return UnknownValue(self.poison)
        if self.dialect is Dialect.BUILDKIT:
            if name in self.state:
                return self.state[name]
        else:
            if name in self.image:
                return self.image[name]
            if name in self.args:
                return self.args[name]
        if self.open_reason and _VAR_NAME.match(name):
            return UnknownValue(f"${name} is not set in the Dockerfile and {self.open_reason}")
        return None


_VAR_NAME = re.compile(r"[^\W\d]\w*\Z")


# --- helpers --------------------------------------------------------------------

def _clean_source(src: str) -> str:
    # Sources are relative to the context root; "/" and ".." cannot leave it.
    cleaned = go_clean("/" + src)
    return cleaned[1:] if cleaned != "/" else ""


_PROTO = re.compile(r"[a-zA-Z0-9]+://")
_SCP = re.compile(r"[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:")


def _is_git_ref(src: str) -> bool:
    """BuildKit's ``isGitSource`` (dfgitutil.ParseGitRef), without the query
    checks: ``git://``, ``ssh://``, ``http(s)://….git``, ``user@host:path``;
    not ``github.com/…`` (read as a local path)."""
    if src.startswith(("./", "../", "github.com/")):
        return False
    m = _PROTO.match(src)
    if m:
        proto = m.group(0)[:-3].lower()
        if proto in ("git", "ssh"):
            return True
        if proto in ("http", "https"):
            try:
                return urlsplit(src).path.endswith(".git")
            except ValueError:
                return False
        return False
    return bool(_SCP.match(src))


def _is_http(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def _csv_fields(s: str) -> list[str] | None:
    """One record of Go's ``encoding/csv`` (default options); None on error."""
    fields: list[str] = []
    i, n = 0, len(s)
    if n == 0:
        return []
    while True:
        if i < n and s[i] == '"':
            i += 1
            buf = []
            while True:
                j = s.find('"', i)
                if j < 0:
                    return None
                buf.append(s[i:j])
                i = j + 1
                if i < n and s[i] == '"':
                    buf.append('"')
                    i += 1
                    continue
                break
            fields.append("".join(buf))
            if i == n:
                return fields
            if s[i] != ",":
                return None
            i += 1
        else:
            j = s.find(",", i)
            f = s[i:] if j < 0 else s[i:j]
            if '"' in f:
                return None
            fields.append(f)
            if j < 0:
                return fields
            i = j + 1


def _frontend_ok(ref: str) -> bool:
    r = ref.strip().split("@", 1)[0]
    slash, colon = r.rfind("/"), r.rfind(":")
    if colon > slash:
        r = r[:colon]
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if r.startswith(prefix):
            r = r[len(prefix):]
            break
    return r in _DOCKERFILE_FRONTENDS


def _split(df: Dockerfile) -> tuple[list[Instruction], list[_Stage]]:
    meta: list[Instruction] = []
    stages: list[_Stage] = []
    for inst in df.instructions:
        if inst.cmd == "FROM":
            name = inst.args[2].lower() if len(inst.args) == 3 else None
            stages.append(_Stage(len(stages), name, inst, [], base_raw=inst.args[0]))
        elif not stages:
            if inst.cmd != "ARG":
                raise DockerfileSyntaxError(f"{inst.cmd} before the first FROM (no build stage in current context)",
                                            df.source, inst.line)
            meta.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise DockerfileSyntaxError("no FROM instruction: the Dockerfile contains no stages to build",
                                    df.source, df.instructions[-1].line if df.instructions else 1)
    return meta, stages


class _Analyzer:
    def __init__(self, df: Dockerfile, target: str | None, build_args: dict[str, str], dialect: Dialect,
                 onbuild: Mapping[str, Sequence[str]] | None = None, platform: str | None = None):
        self.df = df
        self.onbuild = dict(onbuild or {})
        self.platform = platform
        self.build_args = build_args
        self.dialect = dialect
        self.buildkit = dialect is Dialect.BUILDKIT
        self.meta, self.stages = _split(df)
        self.target = target
        self._triggers: dict[int, list[_Step]] = {}
        self._external: dict[str, list[str]] = {}  # external base image -> the stages built on it

    # errors and expansion
    def fail(self, message: str, line: int) -> DockerfileSyntaxError:
        return DockerfileSyntaxError(message, self.df.source, line)

    def expand(self, word: str, get: Getter, escape: str, line: int) -> str | UnknownValue:
        lex = Lexer(escape)
        try:
            out = lex.process_word(word, get)
        except ShellLexError as e:
            raise self.fail(str(e), line) from None
        if PLACEHOLDER in out:
            reasons = list(dict.fromkeys(lex.unknown_reasons)) or ["a value that is not known here"]
            return UnknownValue("; ".join(reasons))
        return out

    # global ARGs (buildMetaArgs)
    def global_env(self, target_name: str) -> dict[str, str | UnknownValue]:
        env: dict[str, str | UnknownValue] = {}
        if self.buildkit:
            env.update(platform_args(self.platform))  # the platform being built: --platform, else the host's
            # Recent BuildKit also defines TARGETSTAGE (the target's name); older ones do not.
            env["TARGETSTAGE"] = UnknownValue(f"TARGETSTAGE ({target_name!r} or unset) depends on the BuildKit version")
            for k in list(env):
                if k in self.build_args:
                    env[k] = self.build_args[k]
        for inst in self.meta:
            snapshot = dict(env)  # the classic builder expands a whole ARG instruction first
            for a in inst.args:
                name, eq, default = a.partition("=")
                if name in self.build_args:
                    env[name] = self.build_args[name]
                elif eq:
                    env[name] = self.expand(default, (env if self.buildkit else snapshot).get, self.df.escape,
                                            inst.line)
                elif name not in env:
                    env[name] = UnknownValue(f"the global ARG {name} has no default (pass --build-arg {name}=...)")
        return env

    def resolve_bases(self, genv: dict[str, str | UnknownValue]) -> None:
        for s in self.stages:
            lex = Lexer(self.df.escape)
            try:
                out = lex.process_word(s.base_raw, genv.get)
            except ShellLexError as e:
                raise self.fail(str(e), s.line) from None
            if PLACEHOLDER not in out:
                if out == "":
                    raise self.fail(f"base name ({s.base_raw}) should not be blank", s.line)
                s.base = out
                low = out.lower()
                s.base_stage = next((t.index for t in reversed(self.stages[: s.index]) if t.name == low), None)
                continue
            s.base_unknown = "; ".join(dict.fromkeys(lex.unknown_reasons)) or "unknown"
            rx = re.compile("".join(".*" if c == PLACEHOLDER else re.escape(c) for c in out), re.IGNORECASE | re.DOTALL)
            s.base_candidates = [t.index for t in self.stages[: s.index] if t.name and rx.fullmatch(t.name)]

    # stage references
    def from_ref(self, value: str, s: _Stage, escape: str, line: int) -> int | None:
        if self.buildkit:
            try:
                same = Lexer(escape).process_word(value, lambda n: None) == value
            except ShellLexError as e:
                raise self.fail(str(e), line) from None
            if not same:
                raise self.fail("variable expansion is not supported for --from, define a new stage with FROM "
                                "using ARG from global scope as a workaround", line)
            if re.fullmatch(r"[+-]?[0-9]+", value):
                idx = int(value)
                if idx < 0 or idx >= len(self.stages):
                    raise self.fail(f"invalid stage index {idx}", line)
                return idx
            low = value.lower()
            return next((t.index for t in reversed(self.stages) if t.name == low), None)
        low = value.lower()
        found = next((t.index for t in self.stages[: s.index] if t.name == low), None)
        if found is None and re.fullmatch(r"[+-]?[0-9]+", value):
            idx = int(value)
            if idx < 0 or idx >= s.index:
                raise self.fail(f"invalid from flag value {value}: invalid stage index {idx}", line)
            found = idx
        return found

    def mount_specs(self, inst: Instruction, line: int) -> list[dict[str, str] | None]:
        """The ``--mount`` options of a RUN (keys lower-cased, last wins), None
        for one that cannot be read."""
        out: list[dict[str, str] | None] = []
        for spec in inst.flag_values("mount"):
            fields = _csv_fields(spec)
            if fields is None:
                out.append(None)
                continue
            opts: dict[str, str] = {}
            for f in fields:
                key, eq, value = f.partition("=")
                key = key.lower()
                if not eq:
                    if key in ("readonly", "ro", "readwrite", "rw", "required"):
                        continue
                    opts.setdefault("\0bad", f)
                    continue
                if key == "src":
                    key = "source"
                opts[key] = value
            frm = opts.get("from", "")
            if self.buildkit and "$" in frm[:-1]:
                raise self.fail("'from' doesn't support variable expansion, define alias stage instead", line)
            out.append(opts)
        return out

    def refs(self, s: _Stage, steps: list[_Step]) -> list[_Ref]:
        out: list[_Ref] = []
        for st in steps:
            inst = st.inst
            if inst.cmd == "COPY":
                frm = inst.flag("from")
                if frm:
                    out.append(_Ref("copy", frm, self.from_ref(frm, s, st.escape, st.line), st.line))
            elif inst.cmd == "RUN":
                for opts in self.mount_specs(inst, st.line):
                    frm = (opts or {}).get("from", "")
                    if frm:
                        low = frm.lower()
                        dep = next((t.index for t in reversed(self.stages) if t.name == low), None) \
                            if self.buildkit else \
                            next((t.index for t in reversed(self.stages[: s.index]) if t.name == low), None)
                        out.append(_Ref("mount", frm, dep, st.line))
        return out

    def own_steps(self, s: _Stage) -> list[_Step]:
        return [_Step(i, self.df.escape, i.line) for i in s.instructions]

    def triggers(self, s: _Stage) -> list[_Step]:
        """The ONBUILD triggers of ``s``'s base stage, as they run in ``s``."""
        if s.index in self._triggers:
            return self._triggers[s.index]
        out: list[_Step] = []
        if s.base_stage is None and s.base is not None and s.base in self.onbuild:
            # An external image's triggers, as the engine reported them
            # (``Config.OnBuild``): they run first in the stage built on it.
            for text in self.onbuild[s.base]:
                try:
                    tdf = parse_dockerfile(text, f"{s.base} ONBUILD")
                except DockerfileSyntaxError as e:
                    raise self.fail(f"ONBUILD trigger of {s.base}: {e.reason}", s.line) from None
                if len(tdf.instructions) != 1:
                    raise self.fail(f"ONBUILD trigger of {s.base} should be a single expression", s.line)
                out.append(_Step(tdf.instructions[0], tdf.escape, s.line, "ONBUILD "))
        if s.base_stage is not None:
            for inst in self.stages[s.base_stage].instructions:
                if inst.cmd != "ONBUILD":
                    continue
                try:
                    tdf = parse_dockerfile(inst.trigger_text(), self.df.source)
                except DockerfileSyntaxError as e:
                    raise self.fail(f"ONBUILD trigger: {e.reason}", inst.line) from None
                if len(tdf.instructions) != 1:
                    raise self.fail("onbuild trigger should be a single expression", inst.line)
                out.append(_Step(tdf.instructions[0], tdf.escape, inst.line, "ONBUILD "))
        self._triggers[s.index] = out
        return out

    def base_deps(self, s: _Stage) -> list[int]:
        if s.base_stage is not None:
            return [s.base_stage]
        return list(s.base_candidates)

    # the walk
    def run(self) -> Analysis:
        df = self.df
        stages = self.stages
        names = [s.label for s in stages]
        if self.target is None:
            tgt = len(stages) - 1
        else:
            low = self.target.lower()
            matches = [s.index for s in stages if s.name == low]
            if not matches:
                known = ", ".join(s.name for s in stages if s.name) or "none"
                raise DockerfileError(f"{df.source}: target stage {self.target!r} could not be found "
                                      f"(named stages: {known})")
            tgt = matches[-1] if self.buildkit else matches[0]
        an = Analysis(df.source, self.target, names, [])

        if self.buildkit:
            syntax = self.build_args.get("BUILDKIT_SYNTAX") or df.directives.get("syntax")
            if syntax and not _frontend_ok(syntax.split(" ", 1)[0]):
                an.used_stages = list(names)
                an._whole(f"{df.source}: the frontend {syntax.split(' ', 1)[0]!r} (# syntax=) is not Docker's "
                          "Dockerfile frontend: what it reads cannot be known here")
                return an

        target_name = self.target if self.target is not None else (stages[-1].name or "")
        genv = self.global_env(target_name)
        self.resolve_bases(genv)

        own_refs: dict[int, list[_Ref]] = {}
        if self.buildkit:
            # BuildKit resolves every stage's --from (and fails on bad ones) before building.
            for s in stages:
                own_refs[s.index] = self.refs(s, self.own_steps(s))
            self._check_cycles(own_refs)
            seen: set[int] = set()
            todo = [tgt]
            while todo:
                k = todo.pop()
                if k in seen:
                    continue
                seen.add(k)
                s = stages[k]
                deps = self.base_deps(s) + [r.dep for r in own_refs[k] if r.dep is not None]
                deps += [r.dep for r in self.refs(s, self.triggers(s)) if r.dep is not None]
                todo.extend(d for d in deps if d not in seen)
            used = sorted(seen)
        else:
            used = list(range(tgt + 1))
            for k in used:
                own_refs[k] = self.refs(stages[k], self.own_steps(stages[k]))
        an.used_stages = [stages[k].label for k in used]

        envs: dict[int, _Env] = {}
        for k in used:
            s = stages[k]
            steps = self.triggers(s) + self.own_steps(s)
            for r in own_refs[k] + self.refs(s, self.triggers(s)):
                if r.dep is not None and r.dep >= k:
                    what = "copy" if r.kind == "copy" else "mount"
                    raise self.fail(f"cannot {what} from stage {r.value!r}, it needs to be defined before "
                                    f"current stage {s.label!r}", r.line)
                if r.dep is None and r.kind == "copy":
                    an._note(f"{df.source}:{r.line}: --from={r.value} is not a stage here: an image or a named "
                             "build context (--build-context), not this context")
            env = self.initial_env(s, envs, an)
            for st in steps:
                self.step(st, s, env, genv, an)
            envs[k] = env
        an.base_images = {image: list(labels) for image, labels in self._external.items()}
        unknown = {image: labels for image, labels in self._external.items() if image not in self.onbuild}
        if unknown:
            an._note("ONBUILD triggers of external base images are assumed absent: " + ", ".join(
                f"{image!r} (stage{'s' if len(labels) > 1 else ''} {', '.join(labels)})"
                for image, labels in unknown.items()))
        if an.whole_context:
            an.sources = []
        return an

    def _check_cycles(self, own_refs: dict[int, list[_Ref]]) -> None:
        graph = {k: {r.dep for r in refs if r.dep is not None} for k, refs in own_refs.items()}
        for s in self.stages:
            graph[s.index].update(self.base_deps(s))
        state: dict[int, int] = {}

        def visit(k: int) -> int | None:
            state[k] = 1
            for d in graph[k]:
                if state.get(d) == 1:
                    return k
                if d not in state:
                    bad = visit(d)
                    if bad is not None:
                        return bad
            state[k] = 2
            return None

        for s in self.stages:
            if s.index not in state:
                bad = visit(s.index)
                if bad is not None:
                    st = self.stages[bad]
                    line = next((r.line for r in own_refs[bad] if r.dep is not None), st.line)
                    raise self.fail(f"circular dependency detected on stage: {st.label}", line)

    def initial_env(self, s: _Stage, envs: dict[int, _Env], an: Analysis) -> _Env:
        df = self.df
        if s.base_stage is not None:
            return envs[s.base_stage].child()
        if s.base_unknown is not None and not s.base_candidates:
            an._note(f"stage {s.label}: the base {s.base_raw!r} is not known here ({s.base_unknown}); "
                     "it cannot name a stage")
            self._external.setdefault(s.base_raw, []).append(s.label)
            return _Env(self.dialect, f"the base image {s.base_raw!r} may set it")
        if s.base_unknown is not None:
            if any(i.cmd == "ONBUILD" for c in s.base_candidates for i in self.stages[c].instructions):
                an._whole(f"{df.source}:{s.line}: the base of stage {s.label} ({s.base_raw}) is not known here "
                          f"({s.base_unknown}) and a stage it may name has ONBUILD triggers")
            an._note(f"stage {s.label}: the base {s.base_raw!r} is not known here ({s.base_unknown}); "
                     "it is taken to depend on every earlier stage it may name "
                     f"({', '.join(self.stages[c].label for c in s.base_candidates)})")
            return _Env(self.dialect, f"the base of stage {s.label} ({s.base_raw}) is not known here")
        assert s.base is not None
        if s.base.lower() == "scratch":
            env = _Env(self.dialect)
            env.set_env("PATH", UnknownValue("PATH is set by the builder"))
            return env
        self._external.setdefault(s.base, []).append(s.label)
        return _Env(self.dialect, f"the base image {s.base!r} may set it")

    def step(self, st: _Step, s: _Stage, env: _Env, genv: dict[str, str | UnknownValue], an: Analysis) -> None:
        inst, line = st.inst, st.line
        df = self.df
        where = f"{df.source}:{line}"

        def expand(word: str) -> str | UnknownValue:
            return self.expand(word, env.get, st.escape, line)

        if inst.cmd == "ARG":
            # BuildKit sets the names one by one (a default sees the names before
            # it); the classic builder expands the whole instruction first.
            before = None if self.buildkit else {a.partition("=")[0]: expand(a.partition("=")[2])
                                                 for a in inst.args if "=" in a}
            for a in inst.args:
                name, eq, default = a.partition("=")
                value: str | UnknownValue
                if name in self.build_args:
                    value = self.build_args[name]
                elif eq:
                    value = expand(default) if before is None else before[name]
                elif name in genv:
                    value = genv[name]
                else:
                    value = UnknownValue(f"ARG {name} has no default value (pass --build-arg {name}=...)")
                env.set_arg(name, value)
        elif inst.cmd == "ENV":
            args = inst.args
            pairs = [(args[0], args[1])] if "=" not in args[0] else [tuple(a.split("=", 1)) for a in args]
            done = [(expand(k), expand(v)) for k, v in pairs]  # all against the values from before
            for k, v in done:
                if isinstance(k, UnknownValue):
                    env.poison = f"the ENV at line {line} sets a variable whose name is not known ({k.reason})"
                    continue
                env.set_env(k, v)
        elif inst.cmd in ("COPY", "ADD"):
            label = st.via + inst.cmd
            if inst.cmd == "COPY" and inst.flag("from"):
                return  # another stage, an image or a named context: not this context
            if inst.flag_values("exclude"):
                an._note(f"{where}: {inst.cmd} --exclude is not applied: the excluded paths are still counted")
            for src in inst.args[:-1]:
                if is_heredoc(src):
                    continue  # inline content
                value = expand(src)
                if isinstance(value, UnknownValue):
                    if inst.cmd == "ADD" and self._fetched_whatever(src, env, st.escape):
                        continue  # a URL (or git) whatever the variable holds: never the context
                    an._whole(f"{where}: {label} source {src!r}: {value.reason}")
                    continue
                if inst.cmd == "ADD":
                    if _is_http(value) or (self.buildkit and _is_git_ref(value)):
                        continue  # fetched by the builder
                else:
                    if _is_http(value):
                        raise self.fail(f"source can't be a URL for COPY ({value})", line)
                    if self.buildkit and _is_git_ref(value):
                        raise self.fail(f"source can't be a git ref for COPY ({value})", line)
                self.add(an, value, src, label, line, s)
        elif inst.cmd == "RUN":
            if not self.buildkit and inst.flag_values("mount"):
                an._note(f"{where}: RUN --mount needs BuildKit (the classic builder refuses it); "
                         "its sources are counted as BuildKit reads them")
            for opts in self.mount_specs(inst, line):
                label = st.via + "RUN --mount"
                if opts is None:
                    an._whole(f"{where}: RUN --mount value cannot be read (CSV)")
                    continue
                if "\0bad" in opts:
                    bad = opts["\0bad"]
                    raise self.fail(f"invalid field '{bad}' must be a key=value pair", line)
                typ: str | None = "bind"
                if "type" in opts:
                    t = expand(opts["type"])
                    if isinstance(t, UnknownValue):
                        typ = None  # may be a bind mount
                    else:
                        typ = t.lower()
                        if typ not in _MOUNT_TYPES:
                            raise self.fail(f"unsupported mount type {t!r}", line)
                if opts.get("from") or typ not in (None, "bind"):
                    continue  # a stage, an image, a cache, tmpfs, secret or ssh: not this context
                raw = opts.get("source", "")
                value = expand(raw) if raw else ""
                if isinstance(value, UnknownValue):
                    an._whole(f"{where}: {label} source {raw!r}: {value.reason}")
                    continue
                self.add(an, value, raw or ".", label, line, s)

    def _fetched_whatever(self, src: str, env: _Env, escape: str) -> bool:
        """Whether an ADD source with an unknown variable is fetched by the
        builder for any value of it: its literal start (before the first
        unknown part) already makes it a URL, or for BuildKit a git URL."""
        lex = Lexer(escape)
        try:
            prefix = lex.process_word(src, env.get).split(PLACEHOLDER, 1)[0]
        except ShellLexError:
            return False
        if _is_http(prefix):
            return True
        return self.buildkit and prefix.lower().startswith(("git://", "ssh://"))

    def add(self, an: Analysis, value: str, raw: str, label: str, line: int, s: _Stage) -> None:
        cleaned = _clean_source(value)
        reader = Source(cleaned or ".", line, label, s.label)
        if reader not in an.readers:
            an.readers.append(reader)
        if cleaned == "":
            an._whole(f"{self.df.source}:{line}: {label} reads the whole context ({raw!r})")
            return
        an.sources.append(Source(cleaned, line, label, s.label))


def analyze(
    dockerfile: Dockerfile | bytes | str,
    *,
    target: str | None = None,
    build_args: dict[str, str] | None = None,
    dialect: Dialect | str = Dialect.BUILDKIT,
    source: str = "Dockerfile",
    onbuild: Mapping[str, Sequence[str]] | None = None,
    platform: str | None = None,
) -> Analysis:
    """Work out the context sources of a build (see the module docstring).

    ``dialect`` (a :class:`~ctxpack.Dialect` or its value) picks the
    builder whose rules apply; an unknown name is a ``ValueError``.
    ``onbuild`` maps external base images (as :attr:`Analysis.base_images`
    names them) to their ONBUILD triggers (the engine's ``Config.OnBuild``);
    the images it names are no longer assumed to have none.
    ``platform`` (``os/arch[/variant]``, default: the host's) gives
    BuildKit's platform ARGs (``TARGETARCH`` …) their values; several,
    comma-separated (``linux/amd64,linux/arm64``), are one build each: the
    sources are those any of them reads.
    """
    df = dockerfile if isinstance(dockerfile, Dockerfile) else parse_dockerfile(dockerfile, source)
    platforms = [p.strip() for p in platform.split(",") if p.strip()] if platform else [None]
    an = _Analyzer(df, target, dict(build_args or {}), Dialect(dialect), onbuild, platforms[0]).run()
    for other in platforms[1:]:
        more = _Analyzer(df, target, dict(build_args or {}), Dialect(dialect), onbuild, other).run()
        an.merge(more)
    return an


# --- selecting context paths by sources ----------------------------------------------

class Selection:
    """The include rules of a minimal context.

    ``wants(path)``: the build reads it (a source matches it or an
    ancestor).  ``may_contain(dir)``: something below could be wanted, so the
    directory must be read.  A source without wildcards (``*``, ``?``, ``[``
    not escaped by ``\\``) is a literal path to both builders, backslashes
    included; one with wildcards is matched per path component with Go's
    ``filepath.Match`` (BuildKit takes the components before the first
    wildcard one literally: a component matches if it is equal or matches);
    a ``**`` component is treated as any number of directories (a superset).
    Symlinks along literal sources are followed inside the context, and both
    the link and its target are kept, as BuildKit's FollowPaths does.
    """

    def __init__(self, patterns: list[str], root: str | None = None):
        self.patterns: list[str] = []
        for p in patterns:
            self._add(p)
        if root is not None:
            for p in list(self.patterns):
                for extra in _through_symlinks(root, p):
                    self._add(extra)
        self._split = [p.split("/") for p in self.patterns]
        self._literal = [not _has_wildcards(p) for p in self.patterns]

    def _add(self, p: str) -> None:
        if p not in self.patterns:
            self.patterns.append(p)

    @staticmethod
    def _match(pat: str, name: str) -> bool:
        if pat == name:
            return True
        try:
            return go_match(pat.encode("utf-8", "surrogateescape"), name.encode("utf-8", "surrogateescape"))
        except BadPattern:
            return False

    def wants(self, path: str) -> bool:
        parts = path.split("/")
        for comps, literal in zip(self._split, self._literal):
            if literal:
                if len(comps) <= len(parts) and comps == parts[: len(comps)]:
                    return True
                continue
            if "**" in "".join(comps):
                if self._glob_deep(comps, parts, prefix_ok=True):
                    return True
                continue
            if len(comps) <= len(parts) and all(self._match(c, x) for c, x in zip(comps, parts)):
                return True
        return False

    def may_contain(self, directory: str) -> bool:
        parts = directory.split("/")
        for comps, literal in zip(self._split, self._literal):
            k = min(len(comps), len(parts))
            if literal:
                if comps[:k] == parts[:k]:
                    return True
                continue
            if "**" in "".join(comps):
                if self._glob_deep(comps, parts, prefix_ok=True, partial=True):
                    return True
                continue
            if all(self._match(c, x) for c, x in zip(comps[:k], parts[:k])):
                return True
        return False

    def _glob_deep(self, comps: list[str], parts: list[str], *, prefix_ok: bool, partial: bool = False) -> bool:
        """Component matching where a component containing ``**`` spans any depth."""
        def rec(i: int, j: int) -> bool:
            if i == len(comps):
                return prefix_ok or j == len(parts)
            if j == len(parts):
                return partial
            if "**" in comps[i]:
                return any(rec(i + 1, jj) for jj in range(j, len(parts) + 1)) or partial
            return self._match(comps[i], parts[j]) and rec(i + 1, j + 1)
        return rec(0, 0)


def _has_wildcards(pattern: str) -> bool:
    """BuildKit's and the classic builder's ``containsWildcards`` (not on
    Windows): ``*``, ``?`` or ``[`` not escaped by a backslash."""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _through_symlinks(root: str, pattern: str) -> list[str]:
    """Extra patterns for a literal source that passes through symlinks."""
    out: list[str] = []
    comps = pattern.split("/")
    cur = ""
    for n, c in enumerate(comps):
        if _has_wildcards(c):
            break
        cur = f"{cur}/{c}" if cur else c
        full = os.path.join(root, cur)
        if os.path.islink(full):
            out.append(cur)  # the link itself
            target = os.readlink(full)
            base = "/" if target.startswith("/") else "/" + os.path.dirname(cur)
            resolved = go_clean(os.path.join(base, target))[1:]
            rest = "/".join(comps[n + 1 :])
            new = f"{resolved}/{rest}" if rest and resolved else (resolved or rest)
            if new and new != pattern and len(out) < 40:
                out.append(new)
                out.extend(p for p in _through_symlinks(root, new) if p not in out)
            break
    return out
