"""Cases for tests/test_minimal_proof.py: Dockerfiles and context trees.

Every case is built from the full context and from the ``--minimal`` one,
with each of its builders; the images must be the same.  Each tree also
holds files no instruction reads (:data:`UNUSED`, plus whatever a case adds)
so that a minimal context equal to the full one cannot pass unnoticed.

This is a test helper (not a test module).  Only the standard library.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field

Content = str | bytes

BUILDERS = ("classic", "buildkit")

#: Files no instruction of any case reads (unless the case copies everything).
UNUSED: dict[str, Content] = {
    "node_modules/left-pad/index.js": "module.exports = function leftPad(s, n) { return s; };\n" * 150,
    "node_modules/left-pad/package.json": '{"name": "left-pad", "version": "1.3.0"}\n',
    "docs/guide.md": "# Guide\n\nNothing the build reads.\n" * 40,
    "docs/img/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
}
UNUSED_PATHS = tuple(UNUSED)


@dataclass(frozen=True)
class Case:
    """One Dockerfile and its context.

    ``files``: path -> content (``name/`` for an empty directory);
    ``symlinks``: path -> link target; ``hardlinks``: new name -> existing
    file; ``modes``: explicit modes (default 0644 files, 0755 directories).
    ``dockerfile_path`` is where the Dockerfile lies in the tree.  ``present``/``absent``: paths that must /
    must not be in the minimal tar, per dialect (key ``"*"``: both).
    ``whole``: per dialect (``"*"``: both), a text the notes must contain
    when the minimal context must fall back to the whole one.  ``same``:
    the minimal tar must equal the full tar (everything is read).
    ``fails``: both builds must fail, the same way (and ctxpack must warn
    before the upload, ``api.source_warnings``).  ``xfail``: builder ->
    reason (a known ctxpack bug: the test is expected to fail).
    """

    id: str
    dockerfile: str
    files: dict[str, Content]
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    dockerfile_path: str = "Dockerfile"
    target: str | None = None
    build_args: dict[str, str] | None = None
    builders: tuple[str, ...] = BUILDERS
    present: dict[str, tuple[str, ...]] = field(default_factory=dict)
    absent: dict[str, tuple[str, ...]] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    same: bool = False
    fails: bool = False
    xfail: dict[str, str] = field(default_factory=dict)

    def for_dialect(self, table: dict[str, tuple[str, ...]], dialect: str) -> tuple[str, ...]:
        return tuple(table.get("*", ())) + tuple(table.get(dialect, ()))

    def whole_note(self, dialect: str) -> str | None:
        return self.whole.get(dialect, self.whole.get("*"))


# --------------------------------------------------------------------------
# archives for ADD
# --------------------------------------------------------------------------


def _tar(members: list[tuple[str, str, int, Content]], *, gz: bool = False) -> bytes:
    """A deterministic tar: (name, kind "file"|"dir"|"symlink", mode, content or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, mode, content in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.mtime = 1_600_000_000
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = str(content)
                tf.addfile(ti)
            else:
                data = content.encode() if isinstance(content, str) else content
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if gz:
        return gzip.compress(raw, mtime=0)
    return raw


VENDOR_TAR = _tar([
    ("lib", "dir", 0o755, ""),
    ("lib/v.txt", "file", 0o644, "vendored\n"),
    ("lib/link", "symlink", 0o777, "v.txt"),
    ("bin", "dir", 0o750, ""),
    ("bin/tool", "file", 0o755, "#!/bin/sh\necho tool\n"),
])
ASSETS_TGZ = _tar([("style.css", "file", 0o644, "body { margin: 0 }\n"), ("img/", "dir", 0o755, "")], gz=True)
UNUSED_TAR = _tar([("big.bin", "file", 0o644, b"\0" * 20000)])


# --------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        id="multistage-target",
        dockerfile="""\
FROM scratch AS deps
COPY deps/lock.txt /deps/
FROM bb AS Builder
COPY --from=DEPS /deps/lock.txt /b/lock.txt
COPY builder-src/ /b/src/
RUN cat /b/src/main.c /b/lock.txt > /b/out
FROM scratch AS skipped
COPY skipped-src/ /s/
FROM scratch AS final
COPY --from=builder /b/out /out
COPY app.txt /app.txt
FROM scratch AS after
COPY after.txt /
""",
        files={
            "deps/lock.txt": "lock\n",
            "builder-src/main.c": "int main(void) { return 0; }\n",
            "skipped-src/s.txt": "only the classic builder builds this stage\n",
            "app.txt": "app\n",
            "after.txt": "after the target: never built\n",
        },
        target="final",
        present={"*": ("deps/lock.txt", "builder-src/main.c", "app.txt"), "classic": ("skipped-src/s.txt",)},
        absent={"*": ("after.txt",), "buildkit": ("skipped-src/s.txt",)},
    ),
    Case(
        id="arg-env",
        # --build-arg overrides the global DIR (declared again in the stage)
        # and the stage's FLAVOR; VARIANT keeps its default; CONF and OTHER
        # come from ENV (all pairs of one ENV see the values from before it).
        dockerfile="""\
ARG DIR=srcA
FROM bb
ARG DIR VARIANT=default FLAVOR=plain
ENV CONF=conf
COPY ${DIR}/x.txt $CONF/${VARIANT}.cfg ${FLAVOR}.txt /x/
ENV CONF=conf2 OTHER=$CONF
COPY ${OTHER}/only.txt /o/
""",
        files={
            "srcA/x.txt": "A\n", "srcB/x.txt": "B\n",
            "conf/default.cfg": "default\n", "conf/prod.cfg": "prod\n",
            "plain.txt": "plain\n", "extra.txt": "extra\n",
            "conf/only.txt": "conf\n", "conf2/only.txt": "conf2\n",
        },
        build_args={"DIR": "srcB", "FLAVOR": "extra"},
        present={"*": ("srcB/x.txt", "conf/default.cfg", "extra.txt", "conf/only.txt")},
        absent={"*": ("srcA/x.txt", "conf/prod.cfg", "plain.txt", "conf2/only.txt")},
    ),
    Case(
        id="env-vs-arg",
        # Same name as ENV and ARG: the classic builder looks at ENV first,
        # BuildKit takes the last write (the ARG, with its --build-arg value).
        dockerfile="""\
FROM scratch
ENV X=env
ARG X=arg
COPY ${X}.txt /
""",
        files={"env.txt": "env\n", "arg.txt": "arg\n", "cli.txt": "cli\n"},
        build_args={"X": "cli"},
        present={"classic": ("env.txt",), "buildkit": ("cli.txt",)},
        absent={"*": ("arg.txt",), "classic": ("cli.txt",), "buildkit": ("env.txt",)},
    ),
    Case(
        id="global-arg-not-declared-in-stage",
        # A global ARG is seen by FROM only: in the stage ${D} is empty, the
        # --build-arg notwithstanding, and the source is x.txt.
        dockerfile="""\
ARG D=srcA
FROM scratch
COPY ${D}/x.txt /
""",
        files={"srcA/x.txt": "A\n", "srcB/x.txt": "B\n", "x.txt": "top\n"},
        build_args={"D": "srcB"},
        present={"*": ("x.txt",)},
        absent={"*": ("srcA/x.txt", "srcB/x.txt")},
    ),
    Case(
        id="arg-modifiers-scratch",
        dockerfile="""\
FROM scratch
ARG A=one
COPY ${A:+set}-${NOPE:-dflt}.txt /
""",
        files={"set-dflt.txt": "modifiers\n", "one-dflt.txt": "no\n", "-dflt.txt": "no\n"},
        present={"*": ("set-dflt.txt",)},
        absent={"*": ("one-dflt.txt", "-dflt.txt")},
    ),
    Case(
        id="globs-classes",
        dockerfile="""\
FROM scratch
COPY src/*.py /app/
COPY file[0-9].txt /f/
COPY data[^0-9].csv /d/
COPY ./conf?.ini \\
     /conf/
COPY ./lib/../plain.txt /
""",
        files={
            "src/a.py": "a\n", "src/b.py": "b\n", "src/readme.md": "no\n",
            "src/pkg.py/inner.txt": "a directory matching the glob is copied whole\n",
            "src/sub/c.py": "not matched by src/*.py\n",
            "file1.txt": "1\n", "file2.txt": "2\n", "file22.txt": "no\n", "fileX.txt": "no\n",
            "dataA.csv": "A\n", "data1.csv": "no\n",
            "conf1.ini": "1\n", "confAB.ini": "no\n", "lib/x": "no\n", "plain.txt": "plain\n",
        },
        present={"*": ("src/a.py", "src/b.py", "src/pkg.py/inner.txt", "file1.txt", "file2.txt", "dataA.csv", "conf1.ini", "plain.txt")},
        absent={"*": ("src/readme.md", "src/sub/c.py", "file22.txt", "fileX.txt", "data1.csv", "confAB.ini", "lib/x")},
    ),
    Case(
        id="add-local-tar",
        dockerfile="""\
FROM scratch
ADD vendor.tar /vendor/
ADD assets.tar.gz /assets/
ADD plain.txt /plain/
""",
        files={"vendor.tar": VENDOR_TAR, "assets.tar.gz": ASSETS_TGZ, "unused.tar": UNUSED_TAR, "plain.txt": "plain\n"},
        present={"*": ("vendor.tar", "assets.tar.gz", "plain.txt")},
        absent={"*": ("unused.tar",)},
    ),
    Case(
        id="chown",
        dockerfile="""\
FROM scratch
COPY --chown=1000:1000 app/ /app/
ADD --chown=123:456 data.txt /data/
COPY --chown=0:7 tool.sh /usr/local/bin/
""",
        files={"app/main.txt": "main\n", "app/secret.txt": "secret\n", "data.txt": "data\n", "tool.sh": "#!/bin/sh\n"},
        modes={"app/secret.txt": 0o600, "tool.sh": 0o755},
        present={"*": ("app/main.txt", "app/secret.txt", "data.txt", "tool.sh")},
    ),
    Case(
        id="copy-everything",
        dockerfile="""\
FROM scratch
WORKDIR /app
COPY . .
""",
        files={".dockerignore": "docs\n", "main.txt": "main\n", "sub/x.txt": "x\n"},
        whole={"*": "reads the whole context"},
        same=True,
    ),
    Case(
        id="dockerignore-exceptions",
        dockerfile="""\
FROM scratch
COPY *.log /logs/
COPY node_modules/needed /nm/
COPY pkg /pkg/
""",
        files={
            ".dockerignore": "Dockerfile\n.dockerignore\n*.log\n!keep.log\nnode_modules\n!node_modules/needed\n"
                             "pkg/**/*.tmp\n!pkg/keep.tmp\n",
            "keep.log": "kept\n", "debug.log": "ignored\n",
            "node_modules/needed/n.js": "needed\n",
            "pkg/a.txt": "a\n", "pkg/x.tmp": "no\n", "pkg/sub/y.tmp": "no\n", "pkg/keep.tmp": "kept\n",
        },
        present={"*": ("keep.log", "node_modules/needed/n.js", "pkg/a.txt", "pkg/keep.tmp"), "classic": (".dockerignore",)},
        absent={"*": ("debug.log", "pkg/x.tmp", "pkg/sub/y.tmp")},
    ),
    Case(
        id="escape-directive",
        dockerfile="""\
# escape=`
FROM scratch
COPY one.txt `
     two.txt `
  `
     /dst/
COPY `$literal.txt `
# a comment inside the continuation
     fo`ur.txt /dst/
""",
        dockerfile_path="docker/app.Dockerfile",
        files={"one.txt": "1\n", "two.txt": "2\n", "$literal.txt": "a dollar in the name\n", "three.txt": "no\n",
               "four.txt": "4\n", "fo`ur.txt": "no\n"},
        present={"*": ("one.txt", "two.txt", "$literal.txt", "four.txt", "docker/app.Dockerfile")},
        absent={"*": ("three.txt", "fo`ur.txt")},
    ),
    Case(
        id="escape-backslash-literal",
        # With escape=` a backslash reaches the builders: a source without
        # wildcards (* ? [ not escaped by a backslash) is a literal path,
        # backslashes included; with wildcards, a backslash escapes the next
        # character (filepath.Match).  Decoys: the names the other reading
        # would give.  (The minimal context once sent backslash.txt instead
        # of back\slash.txt, so that the minimal build failed: not found.)
        dockerfile="""\
# escape=`
FROM scratch
COPY back\\slash.txt g\\[2\\].txt /lit/
COPY f\\[1\\]*.txt /wild/
""",
        files={"back\\slash.txt": "a backslash in the name\n", "backslash.txt": "no\n",
               "g\\[2\\].txt": "literal\n", "g[2].txt": "no\n", "g2.txt": "no\n",
               "f[1]x.txt": "fx\n", "f[1].txt": "f\n", "f1x.txt": "no\n"},
        present={"*": ("back\\slash.txt", "g\\[2\\].txt", "f[1]x.txt", "f[1].txt")},
        absent={"*": ("backslash.txt", "g[2].txt", "g2.txt", "f1x.txt")},
    ),
    Case(
        id="json-spaces",
        dockerfile="""\
FROM scratch
COPY ["my file.txt", "dir with space/", "/dst/"]
COPY ["sp ace/*.md", "/md/"]
ADD ["na\u00efve \u00e9t\u00e9.txt", "/u/"]
""",
        files={
            "my file.txt": "spaces\n", "my other file.txt": "no\n",
            "dir with space/in.txt": "in\n",
            "sp ace/x.md": "md\n", "sp ace/y.txt": "no\n",
            "na\u00efve \u00e9t\u00e9.txt": "unicode\n",
        },
        present={"*": ("my file.txt", "dir with space/in.txt", "sp ace/x.md", "na\u00efve \u00e9t\u00e9.txt")},
        absent={"*": ("my other file.txt", "sp ace/y.txt")},
    ),
    Case(
        id="bind-mount",
        dockerfile="""\
FROM bb
RUN --mount=type=bind,source=scripts,target=/s sh /s/build.sh > /out.txt
RUN --mount=type=bind,source=data/input.txt,target=/in.txt cat /in.txt > /in-copy.txt
RUN --mount=type=cache,target=/cache --mount=type=tmpfs,target=/t echo cached > /cache.txt
""",
        files={
            "scripts/build.sh": "echo built\n. /s/lib.sh\n", "scripts/lib.sh": "echo lib\n",
            "data/input.txt": "input\n", "data/other.txt": "no\n",
        },
        builders=("buildkit",),
        present={"*": ("scripts/build.sh", "scripts/lib.sh", "data/input.txt")},
        absent={"*": ("data/other.txt",)},
    ),
    Case(
        id="bind-mount-whole-context",
        dockerfile="""\
FROM bb
RUN --mount=type=bind,target=/ctx ls -R /ctx > /ls.txt && cat /ctx/a.txt > /a.txt
""",
        files={"a.txt": "a\n"},
        builders=("buildkit",),
        whole={"*": "reads the whole context"},
        same=True,
    ),
    Case(
        id="symlinked-dir",
        # cfglink -> cfg (relative), abscfg -> /cfg (absolute: resolved inside
        # the context), chain -> cfglink -> cfg, a symlinked file, and a
        # symlinked directory as the source itself (its target is copied).
        dockerfile="""\
FROM scratch
COPY cfglink/c.yaml /etc/app/
COPY abscfg/c.yaml /abs/
COPY chain/e.yaml linkfile.txt /more/
COPY conflink /conf/
""",
        files={"cfg/c.yaml": "c: 1\n", "cfg/d.yaml": "no\n", "cfg/e.yaml": "e: 1\n", "cfg/x.json": "{}\n",
               "real.txt": "real\n", "conf.d/a.conf": "a\n", "conf.d/sub/b.conf": "b\n"},
        symlinks={"cfglink": "cfg", "abscfg": "/cfg", "chain": "cfglink", "linkfile.txt": "real.txt",
                  "conflink": "conf.d", "doclink": "docs"},
        present={"*": ("cfglink", "cfg/c.yaml", "cfg/e.yaml", "abscfg", "chain", "linkfile.txt", "real.txt",
                       "conflink", "conf.d/a.conf", "conf.d/sub/b.conf")},
        absent={"*": ("cfg/d.yaml", "cfg/x.json", "doclink")},
    ),
    Case(
        id="glob-through-symlinked-dir",
        # BuildKit only: the classic builder's wildcard walk does not follow
        # the link ("no source files were specified", from the full context too).
        dockerfile="""\
FROM scratch
COPY cfglink/*.json /etc/json/
""",
        files={"cfg/x.json": "{}\n", "cfg/y.json": "[]\n", "cfg/d.yaml": "no\n"},
        symlinks={"cfglink": "cfg"},
        builders=("buildkit",),
        present={"*": ("cfglink", "cfg/x.json", "cfg/y.json")},
        absent={"*": ("cfg/d.yaml",)},
    ),
    Case(
        id="hardlink-to-unread-file",
        # b/link.txt is a hard link to a/orig.txt, which no instruction reads:
        # the minimal tar must carry the content under b/link.txt, not a link
        # to a name it leaves out.
        dockerfile="""\
FROM scratch
COPY b/ /b/
""",
        files={"a/orig.txt": "shared inode\n", "b/keep.txt": "keep\n"},
        hardlinks={"b/link.txt": "a/orig.txt"},
        present={"*": ("b/keep.txt", "b/link.txt")},
        absent={"*": ("a/orig.txt",)},
    ),
    Case(
        id="stage-index",
        dockerfile="""\
FROM scratch
COPY zero.txt /zero.txt
FROM scratch AS one
COPY --from=0 /zero.txt /z
COPY one.txt /
FROM scratch
COPY --from=1 /one.txt /final-one.txt
COPY --from=one /z /final-z
COPY last.txt /
""",
        files={"zero.txt": "0\n", "one.txt": "1\n", "last.txt": "last\n"},
        present={"*": ("zero.txt", "one.txt", "last.txt")},
    ),
    Case(
        id="onbuild",
        dockerfile="""\
FROM scratch AS base
ONBUILD COPY onb /onb
FROM base AS app
COPY app.txt /
""",
        files={"onb/a.txt": "a\n", "onb/b/c.txt": "c\n", "app.txt": "app\n"},
        present={"*": ("onb/a.txt", "onb/b/c.txt", "app.txt")},
    ),
    Case(
        id="stage-base-inherits-env-and-arg",
        dockerfile="""\
FROM bb AS base
ENV EDIR=envdir
ARG ADIR=argdir
FROM base
COPY ${EDIR}/e.txt /e/
COPY ${ADIR}y.txt /a/
""",
        files={"envdir/e.txt": "e\n", "argdiry.txt": "arg inherited\n", "y.txt": "arg not inherited\n"},
        # The classic builder does not carry ARG values into a stage built on
        # another, and ctxpack cannot know what the image bb may set: it falls
        # back to the whole context.
        whole={"classic": "ADIR"},
        builders=("classic",),  # BuildKit: the same as on scratch (next case)
    ),
    Case(
        id="stage-base-inherits-env-and-arg-scratch",
        # The same on scratch, where nothing else can set a variable: the
        # classic builder reads y.txt (ADIR is empty), BuildKit argdiry.txt.
        dockerfile="""\
FROM scratch AS base
ENV EDIR=envdir
ARG ADIR=argdir
FROM base
COPY ${EDIR}/e.txt /e/
COPY ${ADIR}y.txt /a/
""",
        files={"envdir/e.txt": "e\n", "argdiry.txt": "arg inherited\n", "y.txt": "arg not inherited\n"},
        present={"*": ("envdir/e.txt",), "classic": ("y.txt",), "buildkit": ("argdiry.txt",)},
        absent={"classic": ("argdiry.txt",), "buildkit": ("y.txt",)},
    ),
    Case(
        id="arg-without-value",
        dockerfile="""\
FROM scratch
ARG WHERE
COPY ${WHERE}x.txt /
""",
        files={"x.txt": "x\n", "sub/x.txt": "sub\n"},
        whole={"*": "ARG WHERE has no default value"},
        same=True,
    ),
    Case(
        id="arg-without-value-given",
        dockerfile="""\
FROM scratch
ARG WHERE
COPY ${WHERE}x.txt /
""",
        files={"x.txt": "x\n", "sub/x.txt": "sub\n"},
        build_args={"WHERE": "sub/"},
        present={"*": ("sub/x.txt",)},
        absent={"*": ("x.txt",)},
    ),
    Case(
        id="missing-source",
        dockerfile="""\
FROM bb
COPY present.txt /
COPY missing.txt /
""",
        files={"present.txt": "here\n"},
        present={"*": ("present.txt",)},
        fails=True,
    ),
]
