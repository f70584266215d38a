"""What a build can read from its context, worked out from the Dockerfile.

The stage graph (``FROM … AS``, stages by name or index, ``COPY --from``,
``RUN --mount=from=``, ONBUILD triggers of stages used as bases) decides which
stages run: BuildKit builds the target and what it depends on; the classic
builder builds every stage up to the target in file order.  In those stages
the context sources are: ``COPY``/``ADD`` sources without ``--from`` (not
heredocs, not URLs or git repositories), and ``RUN --mount=type=bind``
without ``from=`` (source defaults to ``.``).  ARG and ENV are expanded in
source paths the way BuildKit's shell lexer does.

Where the analysis cannot be sure — a variable whose value is unknown here
(an ARG without a value, a platform ARG, an ENV from an external image), a
substitution form it does not model, a stage it cannot resolve — it falls
back to the whole context and says why: never send too little.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .dockerfile import Dockerfile, Instruction, parse_dockerfile, parse_instruction
from .errors import DockerfileError
from .gomatch import BadPattern, go_match
from .ignorefile import go_clean

__all__ = ["Source", "Analysis", "analyze", "Selection"]

PLATFORM_ARGS = {
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
}


class _Unknown(Exception):
    """A value the analysis cannot know; carries the reason."""


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

    @property
    def patterns(self) -> list[str]:
        return sorted({s.pattern for s in self.sources})


@dataclass
class _Stage:
    index: int
    name: str | None
    base: str
    base_stage: int | None
    line: int
    instructions: list[Instruction]

    @property
    def label(self) -> str:
        return self.name or str(self.index)


# --- variable expansion (BuildKit shell lexer, ProcessWord) -------------------

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand(word: str, env: dict[str, str | None], escape: str = "\\") -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-x}``, ``${VAR:+x}`` (and the
    forms without ``:``), remove quotes and escapes.

    ``env`` maps names to values; ``None`` means declared without a known
    value.  Raises :class:`_Unknown` when the result depends on something
    this analysis cannot know.
    """
    out: list[str] = []
    i = 0
    n = len(word)
    quote: str | None = None
    while i < n:
        c = word[i]
        if c == escape and quote != "'" and i + 1 < n:
            out.append(word[i + 1])
            i += 2
            continue
        if c in "'\"":
            if quote is None:
                quote = c
                i += 1
                continue
            if quote == c:
                quote = None
                i += 1
                continue
        if c == "$" and quote != "'" and i + 1 < n:
            if word[i + 1] == "{":
                end = _matching_brace(word, i + 2)
                if end < 0:
                    raise _Unknown(f"unterminated variable in {word!r}")
                out.append(_expand_braced(word[i + 2 : end], env, escape))
                i = end + 1
                continue
            m = _VAR_NAME.match(word, i + 1)
            if m:
                out.append(_lookup(m.group(0), env))
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _matching_brace(s: str, start: int) -> int:
    depth = 1
    for j in range(start, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _lookup(name: str, env: dict[str, str | None]) -> str:
    if name not in env:
        raise _Unknown(f"${name} is not defined in the Dockerfile (it may come from a base image or the build)")
    value = env[name]
    if value is None:
        raise _Unknown(f"${name} has no value here (an ARG without default, or set only at build time)")
    return value


def _expand_braced(inner: str, env: dict[str, str | None], escape: str) -> str:
    m = _VAR_NAME.match(inner)
    if not m:
        raise _Unknown(f"unsupported substitution ${{{inner}}}")
    name, rest = m.group(0), inner[m.end() :]
    if rest == "":
        return _lookup(name, env)
    for op in (":-", ":+", ":?", "-", "+", "?"):
        if rest.startswith(op):
            word = rest[len(op) :]
            defined = name in env
            value = env.get(name)
            if defined and value is None:
                raise _Unknown(f"${name} has no value here (an ARG without default, or set only at build time)")
            if not defined and name not in env:
                # Undefined in the Dockerfile: a base image might set it.
                raise _Unknown(f"${name} is not defined in the Dockerfile (it may come from a base image or the build)")
            empty_counts = op.startswith(":")
            is_set = value is not None and (value != "" or not empty_counts)
            if op.endswith("-"):
                return value if is_set else expand(word, env, escape)  # type: ignore[return-value]
            if op.endswith("+"):
                return expand(word, env, escape) if is_set else ""
            if not is_set:
                raise _Unknown(f"${{{inner}}} fails when {name} is unset")
            return value  # type: ignore[return-value]
    raise _Unknown(f"unsupported substitution ${{{inner}}}")


# --- the analysis ---------------------------------------------------------------

def _stages(df: Dockerfile, global_env: dict[str, str | None]) -> tuple[list[_Stage], list[Instruction]]:
    stages: list[_Stage] = []
    globals_: list[Instruction] = []
    for inst in df.instructions:
        if inst.cmd == "FROM":
            if not inst.args:
                raise DockerfileError(f"{df.source}:{inst.line}: FROM requires an image")
            name = None
            if len(inst.args) >= 3 and inst.args[1].lower() == "as":
                name = inst.args[2].lower()
            try:
                base = expand(inst.args[0], global_env, df.escape)
            except _Unknown:
                base = inst.args[0]
            base_l = base.lower()
            base_stage = next((s.index for s in stages if s.name == base_l), None)
            stages.append(_Stage(len(stages), name, base, base_stage, inst.line, []))
        elif not stages:
            if inst.cmd != "ARG":
                raise DockerfileError(f"{df.source}:{inst.line}: {inst.cmd} before the first FROM")
            globals_.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise DockerfileError(f"{df.source}: no FROM instruction")
    return stages, globals_


def _arg_pairs(inst: Instruction) -> list[tuple[str, str | None]]:
    out = []
    for a in inst.args:
        if "=" in a:
            k, v = a.split("=", 1)
            out.append((k, v))
        else:
            out.append((a, None))
    return out


def _env_pairs(inst: Instruction) -> list[tuple[str, str]]:
    args = inst.args
    if len(args) >= 2 and "=" not in args[0]:
        return [(args[0], " ".join(args[1:]))]  # ENV key value
    return [tuple(a.split("=", 1)) for a in args if "=" in a]  # type: ignore[misc]


def _resolve_stage(ref: str, stages: list[_Stage], before: int) -> int | None:
    ref_l = ref.lower()
    for s in stages[:before]:
        if s.name == ref_l:
            return s.index
    if ref.isdigit() and int(ref) < before:
        return int(ref)
    return None


def _parse_mount(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in spec.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip().lower()] = v.strip()
        elif part.strip():
            out[part.strip().lower()] = "true"
    return out


_URL = re.compile(r"^(https?://|git@|git://|ssh://)", re.I)


def _clean_source(src: str) -> str:
    # Sources are relative to the context root; "/" and ".." cannot leave it.
    cleaned = go_clean("/" + src)
    return cleaned[1:] if cleaned != "/" else ""


def analyze(
    dockerfile: Dockerfile | bytes | str,
    *,
    target: str | None = None,
    build_args: dict[str, str] | None = None,
    dialect: str = "buildkit",
    source: str = "Dockerfile",
) -> Analysis:
    """Work out the context sources of a build (see the module docstring)."""
    df = dockerfile if isinstance(dockerfile, Dockerfile) else parse_dockerfile(dockerfile, source)
    build_args = dict(build_args or {})
    # Global ARGs (before the first FROM) are visible to FROM lines, and to
    # stages that re-declare them.
    global_env: dict[str, str | None] = {}
    for inst in df.instructions:
        if inst.cmd == "FROM":
            break
        for k, v in _arg_pairs(inst):
            if k in build_args:
                global_env[k] = build_args[k]
            elif v is not None:
                try:
                    global_env[k] = expand(v, global_env, df.escape)
                except _Unknown:
                    global_env[k] = None
            else:
                global_env[k] = None
    stages, _ = _stages(df, global_env)
    names = [s.label for s in stages]
    if target is None:
        tgt = len(stages) - 1
    else:
        found = _resolve_stage(target, stages, len(stages))
        if found is None:
            raise DockerfileError(f"{df.source}: target stage {target!r} could not be found")
        tgt = found
    an = Analysis(df.source, target, names, [])

    # Dependencies of each stage (base, --from, mount from), ONBUILD included.
    def deps(s: _Stage) -> set[int]:
        out: set[int] = set()
        if s.base_stage is not None:
            out.add(s.base_stage)
        insts = list(s.instructions) + _triggers(s)
        for inst in insts:
            refs = []
            if inst.cmd in ("COPY", "ADD") and inst.flag("from") is not None:
                refs.append(inst.flag("from") or "")
            if inst.cmd == "RUN":
                for m in inst.flag_values("mount"):
                    f = _parse_mount(m).get("from")
                    if f:
                        refs.append(f)
            for ref in refs:
                try:
                    ref = expand(ref, global_env, df.escape)
                except _Unknown:
                    pass
                r = _resolve_stage(ref, stages, s.index)
                if r is not None:
                    out.add(r)
        return out

    def _triggers(s: _Stage) -> list[Instruction]:
        """ONBUILD instructions of the base stage run at the start of ``s``."""
        if s.base_stage is None:
            return []
        base = stages[s.base_stage]
        out = []
        for inst in base.instructions:
            if inst.cmd == "ONBUILD" and inst.args:
                out.append(parse_instruction(inst.text.split(None, 1)[1], inst.line, df.source, df.escape))
        return out

    if dialect == "classic":
        used = list(range(tgt + 1))
    else:
        seen: set[int] = set()
        todo = [tgt]
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            todo.extend(deps(stages[k]))
        used = sorted(seen)
    an.used_stages = [stages[k].label for k in used]
    for k in used:
        s = stages[k]
        if s.base_stage is None and s.base.lower() != "scratch":
            an.notes.append(f"stage {s.label}: ONBUILD triggers of the external image {s.base!r} are assumed absent")
    # Walk the used stages, tracking ARG/ENV, collecting sources.
    stage_env: dict[int, dict[str, str | None]] = {}
    for k in range(len(stages)):
        s = stages[k]
        # ENV is inherited from a base stage; ARG values are not.
        env: dict[str, str | None] = dict(stage_env.get(s.base_stage, {})) if s.base_stage is not None else {}
        insts = _triggers(s) + list(s.instructions)
        for inst in insts:
            if inst.cmd == "ARG":
                for name, v in _arg_pairs(inst):
                    if name in build_args:
                        env[name] = build_args[name]
                    elif v is not None:
                        try:
                            env[name] = expand(v, env, df.escape)
                        except _Unknown:
                            env[name] = None
                    elif name in global_env:
                        env[name] = global_env[name]
                    else:
                        env[name] = None
            elif inst.cmd == "ENV":
                for name, v in _env_pairs(inst):
                    try:
                        env[name] = expand(v, env, df.escape)
                    except _Unknown:
                        env[name] = None
            elif k in used and inst.cmd in ("COPY", "ADD"):
                _sources_of(inst, s, env, an, df)
            elif k in used and inst.cmd == "RUN":
                for m in inst.flag_values("mount"):
                    opts = _parse_mount(m)
                    if opts.get("type", "bind") != "bind" or opts.get("from"):
                        continue
                    src = opts.get("source", opts.get("src", "."))
                    _add(an, src, inst, s, env, df)
        stage_env[k] = env
    if an.whole_context:
        an.sources = []
    return an


def _sources_of(inst: Instruction, s: _Stage, env: dict[str, str | None], an: Analysis, df: Dockerfile) -> None:
    if inst.flag("from") is not None:
        return  # another stage, an image or a named context: not this context
    args = inst.args
    if len(args) < 2:
        raise DockerfileError(f"{df.source}:{inst.line}: {inst.cmd} requires at least two arguments")
    heredoc_names = {h[0] for h in inst.heredocs}
    for src in args[:-1]:
        if src.startswith("<<") and src.lstrip("<-").strip("'\"") in heredoc_names:
            continue  # inline content
        if inst.cmd == "ADD" and _URL.match(src):
            continue
        _add(an, src, inst, s, env, df)


def _add(an: Analysis, raw: str, inst: Instruction, s: _Stage, env: dict[str, str | None], df: Dockerfile) -> None:
    where = f"{df.source}:{inst.line}"
    try:
        value = raw if inst.json_form and "$" not in raw else expand(raw, env, df.escape)
    except _Unknown as e:
        an.whole_context = True
        an.reasons.append(f"{where}: {inst.cmd} source {raw!r}: {e}")
        return
    if inst.cmd == "ADD" and _URL.match(value):
        return
    cleaned = _clean_source(value)
    if cleaned in ("", "."):
        an.whole_context = True
        an.reasons.append(f"{where}: {inst.cmd} reads the whole context ({raw!r})")
        return
    an.sources.append(Source(cleaned, inst.line, inst.cmd, s.label))


# --- selecting context paths by sources ----------------------------------------------

class Selection:
    """The include rules of a minimal context.

    ``wants(path)``: the build reads it (a source matches it or an
    ancestor).  ``may_contain(dir)``: something below could be wanted, so the
    directory must be read.  Matching is Go ``filepath.Match`` per path, as
    the classic builder and BuildKit match COPY wildcards; a ``**``
    component is treated as any number of directories (a superset).
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

    def _add(self, p: str) -> None:
        if p not in self.patterns:
            self.patterns.append(p)

    @staticmethod
    def _match(pat: str, name: str) -> bool:
        try:
            return go_match(pat.encode("utf-8", "surrogateescape"), name.encode("utf-8", "surrogateescape"))
        except BadPattern:
            return pat == name

    def wants(self, path: str) -> bool:
        parts = path.split("/")
        for comps in self._split:
            if "**" in "".join(comps):
                if self._glob_deep(comps, parts, prefix_ok=True):
                    return True
                continue
            if len(comps) <= len(parts) and all(self._match(c, x) for c, x in zip(comps, parts)):
                return True
        return False

    def may_contain(self, directory: str) -> bool:
        parts = directory.split("/")
        for comps in self._split:
            if "**" in "".join(comps):
                if self._glob_deep(comps, parts, prefix_ok=True, partial=True):
                    return True
                continue
            k = min(len(comps), len(parts))
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


def _through_symlinks(root: str, pattern: str) -> list[str]:
    """Extra patterns for a literal source that passes through symlinks."""
    out: list[str] = []
    comps = pattern.split("/")
    cur = ""
    for n, c in enumerate(comps):
        if any(ch in c for ch in "*?[\\"):
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
