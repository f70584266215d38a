"""The Dockerfile reader (ctxpack.dockerfile.parser) against BuildKit's parser rules.

The expected values follow moby/buildkit ``frontend/dockerfile/parser``
(parser.go, directives.go, line_parsers.go, split_command.go), ``shell/lex.go``
and ``instructions/parse.go``; several cases are BuildKit's own test cases
(parser_heredoc_test.go).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxpack.dockerfile.parser import PLACEHOLDER, Instruction, Lexer, UnknownValue, parse_dockerfile, parse_heredoc
from ctxpack.errors import DockerfileSyntaxError, ShellLexError
from ctxpack.errors import DockerfileError

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "dockerfiles"
CORPUS_FILES = sorted(CORPUS.glob("*")) if CORPUS.is_dir() else []


def parse(text: str) -> list[Instruction]:
    return parse_dockerfile(text, "Dockerfile").instructions


def one(text: str, index: int = 1) -> Instruction:
    """The instruction at ``index`` of ``FROM a`` + text."""
    return parse("FROM a\n" + text)[index]


def error_of(text: str, source: str = "Dockerfile") -> DockerfileSyntaxError:
    with pytest.raises(DockerfileSyntaxError) as ei:
        parse_dockerfile(text, source)
    return ei.value


# --- the corpus -------------------------------------------------------------------------

@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name[:60])
def test_every_corpus_dockerfile_parses(path: Path) -> None:
    df = parse_dockerfile(path.read_bytes(), path.name)
    assert df.instructions
    assert any(i.cmd == "FROM" for i in df.instructions)
    lines = [i.line for i in df.instructions]
    assert lines == sorted(lines) and all(i.end_line >= i.line for i in df.instructions)


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus is absent")
def test_corpus_details() -> None:
    def load(name: str) -> list[Instruction]:
        return parse_dockerfile((CORPUS / name).read_bytes(), name).instructions

    # '# escape=`': backslashes in paths are literal, the escape is a backtick.
    df = parse_dockerfile((CORPUS / "Raizo-TCS__archive_r__.github__docker__ci-windows-msvc.Dockerfile").read_bytes())
    assert df.escape == "`" and df.directives == {"escape": "`"}
    copies = [i for i in df.instructions if i.cmd == "COPY"]
    assert copies[0].args == ["install-deps-msvc.ps1", "C:\\io\\install-deps-msvc.ps1"]
    # A space after the backslash still continues the line (FreshRSS).
    fresh = load("FreshRSS__FreshRSS__Docker__Dockerfile.Dockerfile")
    assert all(i.cmd in {"FROM", "ENV", "RUN", "COPY", "EXPOSE", "ENTRYPOINT", "CMD", "WORKDIR", "ARG", "LABEL",
                         "VOLUME", "SHELL", "HEALTHCHECK", "USER", "STOPSIGNAL"} for i in fresh)
    # COPY <<EOF with a body holding 'done' and a shebang.
    (heredoc_copy,) = [i for i in load("chrisguest75__docker_examples__60_heredocs__Dockerfile.Dockerfile")
                       if i.cmd == "COPY"]
    assert heredoc_copy.args == ["<<EOF", "/bin/ping.sh"]
    name, body = heredoc_copy.heredocs[0]
    assert name == "EOF" and body.startswith("#!/usr/bin/env bash\n") and "done\n" in body
    # '# syntax=' then '# check=' are both directives.
    vw = parse_dockerfile((CORPUS / "dani-garcia__vaultwarden__docker__Dockerfile.debian.Dockerfile").read_bytes())
    assert set(vw.directives) == {"syntax", "check"}
    # ONBUILD instructions keep their trigger.
    onb = [i for i in load("irvin-s__docker_repair__01_analyze_binacle_dataset__sources__482413426.Dockerfile")
           if i.cmd == "ONBUILD"]
    assert [i.args[0] for i in onb] == ["COPY", "RUN", "COPY"]
    assert onb[0].sub is not None and onb[0].sub.args == ["package.json", "/usr/src/app/"]
    assert onb[2].trigger_text() == "COPY . /usr/src/app"


# --- parser directives -------------------------------------------------------------

def test_escape_directive_backtick() -> None:
    df = parse_dockerfile("# escape=`\nFROM a\nRUN echo \\\nCOPY a `\n   b\n")
    assert df.escape == "`"
    assert [i.cmd for i in df.instructions] == ["FROM", "RUN", "COPY"]
    assert df.instructions[1].args == ["echo \\"]  # a backslash no longer continues the line
    assert df.instructions[2].args == ["a", "b"]
    assert (df.instructions[2].line, df.instructions[2].end_line) == (4, 5)


@pytest.mark.parametrize("line", ["# escape=`", "#escape=`", "# ESCAPE = `", "  #  Escape= `  ", "#\tescape\t=\t`"])
def test_directive_spelling(line: str) -> None:
    assert parse_dockerfile(line + "\nFROM a\n").escape == "`"


@pytest.mark.parametrize("text", [
    "\n# escape=`\nFROM a\n",             # after a blank line: a comment
    "# hello\n# escape=`\nFROM a\n",      # after a comment
    "FROM a\n# escape=`\n",               # after an instruction
    "# foo=bar\n# escape=`\nFROM a\n",    # after an unknown directive
    "#!/bin/sh\n# escape=`\nFROM a\n",    # after a shebang line
])
def test_directives_stop(text: str) -> None:
    assert parse_dockerfile(text).escape == "\\"


def test_directives_collected() -> None:
    df = parse_dockerfile("# syntax=docker/dockerfile:1.7-labs\n# check=skip=all\n# escape=\\\nFROM a\n")
    assert df.directives == {"syntax": "docker/dockerfile:1.7-labs", "check": "skip=all", "escape": "\\"}


def test_directive_errors_name_file_and_line() -> None:
    e = error_of("# syntax=a\n# SYNTAX=b\nFROM a\n", "df/Dockerfile.dev")
    assert str(e) == "df/Dockerfile.dev:2: only one syntax parser directive can be used"
    e = error_of("# escape=x\nFROM a\n")
    assert e.line == 1 and "invalid escape token 'x'" in str(e)
    assert isinstance(e, DockerfileError)


def test_bom_and_crlf() -> None:
    df = parse_dockerfile(b"\xef\xbb\xbf# escape=`\r\nFROM a\r\nCOPY x `\r\n  y z\r\n")
    assert df.escape == "`"
    assert df.instructions[1].args == ["x", "y", "z"]


# --- comments and continuations -------------------------------------------------------

def test_continuation_with_comments_and_empty_lines() -> None:
    ins = parse("FROM a\nRUN echo a \\\n# a comment\n    # an indented comment\n\n   \n  b\nCOPY x y\n")
    assert ins[1].args == ["echo a   b"]  # continuation lines keep their leading blanks
    assert (ins[1].line, ins[1].end_line) == (2, 7)
    assert (ins[2].line, ins[2].cmd) == (8, "COPY")


def test_continuation_rules() -> None:
    # trailing blanks after the escape still continue; an escaped escape does not
    assert parse("FROM a\nRUN a \\  \t\n b\n")[1].args == ["a  b"]
    ins = parse("FROM a\nRUN echo \\\\\nCOPY x y\n")
    assert ins[1].args == ["echo \\\\"] and ins[2].cmd == "COPY"
    # an escape alone on a line; the file ending inside a continuation
    assert parse("FROM a\nRUN a \\\n\\\n b\n")[1].args == ["a  b"]
    assert parse("FROM a\nRUN a \\")[1].args == ["a"]
    # a line that is only the escape starts an instruction on the next line
    assert parse("\\\nFROM a\n")[0].args == ["a"]


def test_comment_needs_hash_first() -> None:
    ins = parse("  # comment\nFROM a\nRUN echo a # not a comment\n")
    assert ins[1].args == ["echo a # not a comment"]
    assert error_of("FROM a # comment\n").reason == "FROM requires either one or three arguments"


# --- instructions and arguments ------------------------------------------------------------

def test_instruction_words_are_case_insensitive() -> None:
    ins = parse("from a as Builder\ncopy --FROM=x s d\n")
    assert [i.cmd for i in ins] == ["FROM", "COPY"]
    assert ins[0].args == ["a", "as", "Builder"] and ins[0].word == "from"
    assert ins[1].flags == [("FROM", "x")]  # flag names are not folded (BuildKit: unknown flag)


def test_flags() -> None:
    i = one('COPY --chown="a b" --from=x --link --chmod=0755 src dst')
    assert i.flags == [("chown", "a b"), ("from", "x"), ("link", None), ("chmod", "0755")]
    assert i.args == ["src", "dst"] and i.flag("link") == "" and i.flag("exclude") is None
    assert one("COPY --exclude=*.md --exclude='a b' . /x").flag_values("exclude") == ["*.md", "a b"]
    # '--' ends the flags; quoted '--x' is not a flag
    assert one("COPY -- --weird dst").args == ["--weird", "dst"]
    assert one('COPY "--x" dst').flags == []
    i = one("RUN --mount=type=bind,target=. \\\n --mount=type=cache,target=/c make")
    assert i.flag_values("mount") == ["type=bind,target=.", "type=cache,target=/c"]
    assert i.args == ["make"]


def test_copy_shell_form_splits_on_blanks_only() -> None:
    # BuildKit's parseStringsWhitespaceDelimited: quotes do not group
    assert one('COPY "a b" c').args == ['"a', 'b"', "c"]
    assert one("COPY a\tb   c").args == ["a", "b", "c"]


def test_json_form() -> None:
    i = one('COPY ["a b", "c d", "/dst"]')
    assert i.json_form and i.args == ["a b", "c d", "/dst"]
    assert one('RUN ["sh", "-c", "echo hi"]').args == ["sh", "-c", "echo hi"]
    assert one('CMD []').json_form and one('CMD []').args == []
    # not valid JSON: shell form
    i = one('COPY ["a", "b"')
    assert not i.json_form and i.args == ['["a",', '"b"']
    i = one("RUN [ -f x ] && echo y")
    assert not i.json_form and i.args == ["[ -f x ] && echo y"]
    assert not one("CMD ['single', 'quotes']").json_form
    assert not one("CMD [NaN]").json_form


def test_json_with_non_strings_is_an_error() -> None:
    e = error_of('FROM a\n\nRUN ["echo", 1]\n')
    assert e.line == 3 and "arrays must be comprised of strings only" in str(e)


def test_env_forms() -> None:
    assert one("ENV a=1 b=\"x y\" c\\ d=2").args == ["a=1", 'b="x y"', "c\\ d=2"]
    assert one("ENV key   some value  ").args == ["key", "some value"]
    assert one("ENV FC_LANG en-US LC_CTYPE en_US.UTF-8").args == ["FC_LANG", "en-US LC_CTYPE en_US.UTF-8"]
    assert error_of("FROM a\nENV a=1 b\n").reason.startswith("Syntax error - can't find = in \"b\"")
    assert error_of("FROM a\nENV onlykey\n").reason == "ENV must have two arguments"
    assert error_of("FROM a\nENV =x\n").reason == "ENV names can not be blank"


def test_arg_with_several_names() -> None:
    assert one('ARG A B=2 C="x y" D=').args == ["A", "B=2", 'C="x y"', "D="]
    assert error_of("FROM a\nARG =x\n").reason == "ARG names can not be blank"
    assert error_of("FROM a\nARG\n").reason == "ARG requires at least one argument"


def test_from_forms() -> None:
    assert parse("FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n")[0].args == ["golang:1.22", "AS", "build"]
    assert error_of("FROM a b\n").reason == "FROM requires either one or three arguments"
    assert error_of("FROM\n").reason == "FROM requires either one or three arguments"
    assert error_of("FROM a AS b c\n").reason == "FROM requires either one or three arguments"
    assert "invalid name for build stage" in error_of("FROM a AS 1st\n").reason
    assert "invalid name for build stage" in error_of("FROM a AS b/c\n").reason
    parse("FROM a AS Mixed.Case-name_1\n")  # names are lower-cased before the check


def test_onbuild() -> None:
    i = one("ONBUILD COPY --chown=1 . /app")
    assert i.cmd == "ONBUILD" and i.args == ["COPY", ".", "/app"] and i.flags == [("chown", "1")]
    assert i.sub is not None and i.sub.cmd == "COPY"
    assert i.trigger_text() == "COPY --chown=1 . /app"
    assert "Chaining ONBUILD" in error_of("FROM a\nONBUILD ONBUILD RUN x\n").reason
    assert error_of("FROM a\nONBUILD FROM x\n").reason == "FROM isn't allowed as an ONBUILD trigger"
    assert error_of("FROM a\nONBUILD MAINTAINER x\n").reason == "MAINTAINER isn't allowed as an ONBUILD trigger"
    assert error_of("FROM a\nONBUILD\n").reason == "ONBUILD requires at least one argument"


def test_instruction_errors_name_file_and_line() -> None:
    e = error_of("FROM a\n\nCOPYY a b\n", "sub/Dockerfile")
    assert str(e) == "sub/Dockerfile:3: unknown instruction: COPYY"
    e = error_of("FROM a\nRUN a \\\n b\nFOO bar\n")
    assert (e.line, e.reason) == (4, "unknown instruction: FOO")
    e = error_of("FROM a\nCOPY onlyone\n")
    assert e.line == 2 and e.reason.startswith("COPY requires at least two arguments")
    assert error_of("FROM a\nADD <<EOF <<EOF2\nx\nEOF\ny\nEOF2\n").reason == "ADD cannot accept a heredoc as a destination"
    assert error_of("").reason == "file with no instructions"
    assert error_of("# only a comment\n\n").reason == "file with no instructions"
    assert error_of("FROM a\nWORKDIR\n").reason == "WORKDIR requires exactly one argument"


# --- heredocs ------------------------------------------------------------------------------

HEREDOC_FILE = """FROM alpine:3.6
USER <<INVALID
RUN <<EMPTY
EMPTY
RUN 3<<EMPTY2
EMPTY2
RUN "<<NOHEREDOC"
RUN <<INDENT
\tfoo
INDENT
RUN <<-UNINDENT
\tbaz
\tUNINDENT
RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND
RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT
COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2
COPY <<X <<Y /dest
Y
X
X
Y
RUN <<COMPLEX python3
print('hello world')
COMPLEX
COPY <<file.txt /dest
hello world
file.txt
RUN <<eo'f'
echo foo
eof
RUN <<'one two'
echo bar
one two
RUN <<$EOF
$EOF
RUN <<  EOF
EOF
RUN ["<<EOF"]
RUN echo '<<EOF'
RUN cat<<EOF
"""


def test_heredocs_like_buildkit() -> None:
    ins = parse(HEREDOC_FILE)
    got = [(i.cmd, i.heredocs) for i in ins[1:]]
    assert got == [
        ("USER", []),
        ("RUN", [("EMPTY", "")]),
        ("RUN", [("EMPTY2", "")]),
        ("RUN", []),
        ("RUN", [("INDENT", "\tfoo\n")]),
        ("RUN", [("UNINDENT", "\tbaz\n")]),
        ("RUN", [("NOEXPAND", "\tdon't expand $NAME\n")]),
        ("RUN", [("MOUNT", "echo hello\n")]),
        ("COPY", [("FILE1", "content 1\n"), ("FILE2", "content 2\n")]),
        ("COPY", [("X", "Y\n"), ("Y", "X\n")]),
        ("RUN", [("COMPLEX", "print('hello world')\n")]),
        ("COPY", [("file.txt", "hello world\n")]),
        ("RUN", [("eof", "echo foo\n")]),
        ("RUN", [("one two", "echo bar\n")]),
        ("RUN", [("$EOF", "")]),
        ("RUN", [("EOF", "")]),
        ("RUN", []),  # JSON form: no heredocs
        ("RUN", []),  # quoted
        ("RUN", []),  # not a word of its own
    ]
    assert ins[2].line == 3 and ins[2].end_line == 4
    # INVALID after 'USER <<INVALID' is read as an instruction by BuildKit
    with pytest.raises(DockerfileSyntaxError, match="unknown instruction: INVALID"):
        parse("FROM a\nUSER <<INVALID\nINVALID\n")


@pytest.mark.parametrize("word,expected", [
    ("<<EOF", ("EOF", False, True)),
    ("<<'EOF'", ("EOF", False, False)),
    ('<<"EOF"', ("EOF", False, False)),
    ("<<-EOF", ("EOF", True, True)),
    ('<<-"EOF"', ("EOF", True, False)),
    ('<<EO"F"', ("EOF", False, False)),
    ("<< EOF", ("EOF", False, True)),
    ("2<<EOF", ("EOF", False, True)),
    ("<<eo\\'f", ("eo'f", False, True)),
    ("", None), ("EOF", None), ("<<", None), ("<<-", None), ("<EOF", None), ("<<<EOF", None), ("<<EOF sh", None),
])
def test_parse_heredoc_words(word: str, expected: tuple[str, bool, bool] | None) -> None:
    assert parse_heredoc(word) == expected


def test_heredoc_onbuild_and_errors() -> None:
    i = one("ONBUILD COPY <<EOF /x\nhello\nEOF\nRUN true\n")
    assert i.heredocs == [("EOF", "hello\n")]
    assert i.trigger_text() == "COPY <<EOF /x\nhello\nEOF"
    assert parse("FROM a\nONBUILD COPY <<EOF /x\nhello\nEOF\nRUN true\n")[2].cmd == "RUN"
    e = error_of("FROM a\nRUN ls\nCOPY <<EOF /x\nnever\nterminated\n", "ctx/Dockerfile")
    assert str(e) == "ctx/Dockerfile:3: unterminated heredoc <<EOF"
    # chomp: the terminator may be indented with tabs, not spaces
    e = error_of("FROM a\nRUN <<-EOF\n  EOF\n")
    assert e.reason == "unterminated heredoc <<EOF"
    assert one("RUN <<-EOF\n\t\tEOF\n").heredocs == [("EOF", "")]


def test_heredoc_bodies_are_not_instructions() -> None:
    ins = parse("FROM a\nRUN <<EOF\nFROM b\nNOT AN INSTRUCTION \\\nEOF\nCOPY x y\n")
    assert [i.cmd for i in ins] == ["FROM", "RUN", "COPY"]
    assert ins[1].heredocs == [("EOF", "FROM b\nNOT AN INSTRUCTION \\\n")]


# --- the shell lexer -------------------------------------------------------------------------

ENV: dict[str, str | UnknownValue] = {"A": "1", "E": "", "P": "a.b.c", "U": UnknownValue("u is unknown")}


@pytest.mark.parametrize("word,expected", [
    ("$A", "1"), ("${A}", "1"), ("x${A}y", "x1y"), ("$A$A", "11"),
    ("${A:-x}", "1"), ("${E:-x}", "x"), ("${E-x}", ""), ("${N-x}", "x"), ("${N:-x}", "x"),
    ("${A:+y}", "y"), ("${E:+y}", ""), ("${E+y}", "y"), ("${N+y}", ""),
    ("${N:-$A}", "1"), ("${N:-${E:-z}}", "z"), ("${A?}", "1"),
    ("$N", ""), ("${N}", ""), ("$1x", "x"), ("$", "$"), ("a$", "a$"), ("$/x", "$/x"), ("$-", ""),
    ("'$A'", "$A"), ('"$A"', "1"), ('"a b"', "a b"), ("a\\ b", "a b"), ("\\$A", "$A"), ('"\\$A"', "$A"),
    ('"a\\b"', "a\\b"), ("a\\b", "ab"), ("it'\"'s", 'it"s'), ('"it\'s"', "it's"), ("a\\", "a"),
    ("${P#*.}", "b.c"), ("${P##*.}", "c"), ("${P%.*}", "a.b"), ("${P%%.*}", "a"),
    ("${P/./-}", "a-b.c"), ("${P//./-}", "a-b-c"), ("${P/x/y}", "a.b.c"),
])
def test_lexer_expansion(word: str, expected: str) -> None:
    assert Lexer("\\").process_word(word, ENV.get) == expected


def test_lexer_escape_token() -> None:
    assert Lexer("`").process_word("C:\\io\\x`$A", ENV.get) == "C:\\io\\x$A"
    assert Lexer("`").process_word('"a`"b"', ENV.get) == 'a"b'


@pytest.mark.parametrize("word,message", [
    ("${", "missing '}'"), ("${}", "bad substitution"), ("${:x}", "bad substitution"),
    ("${A", "unsupported modifier"), ("${A:#x}", "unsupported modifier (:#)"), ("${A^}", "unsupported modifier"),
    ('"abc', "matching double-quote"), ("'x", "matching single-quote"),
    ("${N?oops}", "N: oops"), ("${N:?}", "N: is not allowed to be unset"), ("${E:?}", "E: is not allowed to be empty"),
    ("${A:-x", "missing '}'"),
])
def test_lexer_errors(word: str, message: str) -> None:
    with pytest.raises(ShellLexError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        Lexer("\\").process_word(word, ENV.get)


def test_lexer_unknown_values() -> None:
    lex = Lexer("\\")
    assert lex.process_word("$U/x", ENV.get) == PLACEHOLDER + "/x" and lex.unknown_reasons == ["u is unknown"]
    assert lex.process_word("${U:-x}", ENV.get) == PLACEHOLDER
    assert lex.process_word("${U:+x}", ENV.get) == PLACEHOLDER
    assert lex.process_word("${A:-$U}", ENV.get) == "1"  # the default is not needed
    assert lex.process_word("${N:-$U}", ENV.get) == PLACEHOLDER
    assert lex.process_word("${P#$U}", ENV.get) == PLACEHOLDER
    assert lex.process_word("'$U'", ENV.get) == "$U"


def test_lexer_words() -> None:
    lex = Lexer("\\")
    assert lex.process_words('a "b c" d\\ e $A', ENV.get) == ["a", "b c", "d e", "1"]
    raw = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
    assert raw.process_words("RUN 'a b' \"<<E\" <<  EOF $X ${Y:-z}", lambda n: None) == [
        "RUN", "'a b'", '"<<E"', "<<  EOF", "$X", "${Y:-z}"]
