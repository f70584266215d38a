"""Reading a Dockerfile the way Docker's parser does (moby/buildkit
``frontend/dockerfile/parser``), far enough to know what a build can read.

Covered: parser directives (``# escape=``, ``# syntax=``, ``# check=``) at the
top only; comments; line continuations with the active escape character
(comment lines inside a continuation are dropped); heredocs (``<<EOF``,
``<<-EOF``, quoted delimiters) whose bodies are skipped; JSON and shell forms;
instruction flags (``--from=``, ``--mount=``, ``--exclude=`` …).  Errors name
the Dockerfile and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import DockerfileError

__all__ = ["Instruction", "Dockerfile", "parse_dockerfile", "parse_instruction", "split_flags", "DockerfileSyntaxError"]


class DockerfileSyntaxError(DockerfileError):
    """The Dockerfile cannot be parsed; names the file and line."""

    def __init__(self, message: str, source: str, line: int):
        self.source = source
        self.line = line
        super().__init__(f"{source}:{line}: {message}")


@dataclass
class Instruction:
    """One instruction: ``cmd`` upper-cased, ``flags`` (``--x=y`` in order),
    ``args`` (shell-form words or JSON array items), the original text, the
    line it starts on, whether it was JSON form, and heredoc bodies."""

    cmd: str
    args: list[str]
    flags: list[tuple[str, str | None]]
    line: int
    text: str
    json_form: bool = False
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (name, body)

    def flag(self, name: str) -> str | None:
        """The last value of ``--name`` (``""`` for a bare flag), or None."""
        val = None
        for k, v in self.flags:
            if k == name:
                val = v if v is not None else ""
        return val

    def flag_values(self, name: str) -> list[str]:
        return [v or "" for k, v in self.flags if k == name]


@dataclass
class Dockerfile:
    source: str
    escape: str
    directives: dict[str, str]
    instructions: list[Instruction]


_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_HEREDOC_CMDS = {"RUN", "COPY", "ADD"}


def split_flags(words: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Leading ``--name[=value]`` words, then the rest (BuildKit's flag parser)."""
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words) and words[i].startswith("--"):
        w = words[i][2:]
        if w == "":
            i += 1
            break  # "--" ends the flags
        if "=" in w:
            k, v = w.split("=", 1)
            flags.append((k.lower(), v))
        else:
            flags.append((w.lower(), None))
        i += 1
    return flags, words[i:]


def _shell_words(s: str, escape: str) -> list[str]:
    """Split on white space, honouring quotes and the escape character.

    Quotes and escapes are kept (variable expansion, done later, removes
    them the way BuildKit's shell lexer does).
    """
    words: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    i = 0
    have = False
    while i < len(s):
        c = s[i]
        if quote:
            cur.append(c)
            if c == escape and quote == '"' and i + 1 < len(s):
                cur.append(s[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c == escape and i + 1 < len(s):
            cur.append(c)
            cur.append(s[i + 1])
            have = True
            i += 2
            continue
        if c in "'\"":
            quote = c
            cur.append(c)
            have = True
        elif c.isspace():
            if have:
                words.append("".join(cur))
                cur = []
                have = False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        words.append("".join(cur))
    return words


def parse_dockerfile(data: bytes | str, source: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile into instructions (see the module docstring)."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    escape = "\\"
    directives: dict[str, str] = {}
    i = 0
    # Parser directives: only at the very top, before any blank line,
    # comment that is not a directive, or instruction.
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i].strip())
        if not m:
            break
        key = m.group(1).lower()
        if key in directives:
            break  # a repeated directive is treated as a comment
        directives[key] = m.group(2)
        if key == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileSyntaxError(f"invalid escape token {m.group(2)!r} does not match ` or \\", source, i + 1)
            escape = m.group(2)
        i += 1

    instructions: list[Instruction] = []
    n = len(lines)
    while i < n:
        raw = lines[i]
        stripped = raw.strip()
        start = i + 1
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        # Gather continuation lines.
        parts = []
        cur = raw
        while True:
            body = cur.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                # Skip comment and empty lines inside the continuation.
                while i < n and (lines[i].strip().startswith("#") or not lines[i].strip()):
                    i += 1
                if i >= n:
                    break
                cur = lines[i]
                i += 1
                continue
            parts.append(cur)
            break
        logical = "".join(parts).strip()
        inst = parse_instruction(logical, start, source, escape)
        # Heredoc bodies follow the instruction line.
        if inst.cmd in _HEREDOC_CMDS or (inst.cmd == "ONBUILD" and inst.args and inst.args[0].upper() in _HEREDOC_CMDS):
            for m in _HEREDOC.finditer(logical):
                strip_tabs, name = m.group(1) == "-", m.group(3)
                body_lines = []
                while i < n:
                    ln = lines[i]
                    i += 1
                    check = ln.lstrip("\t") if strip_tabs else ln
                    if check == name:
                        break
                    body_lines.append(check)
                else:
                    raise DockerfileSyntaxError(f"unterminated heredoc <<{name}", source, start)
                inst.heredocs.append((name, "\n".join(body_lines) + "\n"))
        instructions.append(inst)
    return Dockerfile(source, escape, directives, instructions)


def parse_instruction(logical: str, line: int, source: str, escape: str) -> Instruction:
    m = re.match(r"^(\S+)\s*(.*)$", logical, re.S)
    assert m
    cmd, rest = m.group(1).upper(), m.group(2)
    if not re.fullmatch(r"[A-Z]+", cmd):
        raise DockerfileSyntaxError(f"unknown instruction: {m.group(1)}", source, line)
    if cmd == "ONBUILD":
        inner = parse_instruction(rest, line, source, escape)
        return Instruction("ONBUILD", [inner.cmd, *inner.args], inner.flags, line, logical, inner.json_form)
    words = _shell_words(rest, escape)
    flags, args = split_flags(words) if cmd in ("FROM", "COPY", "ADD", "RUN") else ([], words)
    json_form = False
    if cmd in ("COPY", "ADD", "RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME"):
        tail = rest
        # Strip the flags' text to look for a JSON array.
        for _ in flags:
            tail = re.sub(r"^\s*--\S+", "", tail, count=1)
        tail = tail.strip()
        if tail.startswith("["):
            try:
                parsed = json.loads(tail)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                args, json_form = parsed, True
    return Instruction(cmd, args, flags, line, logical, json_form)
