"""Credentials in context files, decided by content (values are never shown).

Which files are read: those whose name says they hold credentials
(``.env*``, keys and certificates, ``.npmrc``, ``.pypirc``, ``.netrc``,
``credentials``, docker's ``config.json``, service-account JSON,
``*.tfvars``/``*.tfstate``, ``secrets.*``) and small settings files by name
(``config.yaml``, ``settings.json``, ``appsettings.Production.json``,
``application-prod.properties``, ``docker-compose.yml``, any ``*.ini``,
``*.conf`` …) outside installed-package trees.  Other data files and source
code are not scanned (that is a job for a dedicated secret scanner): lint
must stay as cheap as listing the context.

What counts, most certain first:

* a private-key block (``-----BEGIN … PRIVATE KEY-----``);
* a token in a known format: AWS access key ids, GitHub, GitLab, Slack,
  Stripe live keys, Google API keys, npm and PyPI tokens, SendGrid,
  OpenAI/Anthropic keys, JWTs, Slack webhooks, credentials inside URLs;
* ``KEY=VALUE`` (or ``key: value``) where the key names a secret
  (``PASSWORD``, ``TOKEN``, ``SECRET``, ``API_KEY`` …) and the value is not
  a placeholder (``changeme``, ``${VAR}``, ``<your-token>``, empty …);
* a high-entropy value under any key (a warning: it may be an id).

Binary key stores (``.p12``, ``.jks`` …) cannot be read this way and are
reported by name.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ctxpack import fs
from ctxpack.linter.findings import ERROR, WARNING

__all__ = ["INSTALLED", "Hit", "candidate", "maybe", "entropy", "high_entropy", "public_value", "looks_like_example", "placeholder", "scan", "scan_bytes",
           "secret_key"]

# At most this much of a file is read; credentials files are small.
READ_LIMIT = 1 << 20
# Configuration files larger than this are not read (data, not settings).
CONFIG_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Hit:
    """One credential found: what it is, on which line, how sure."""

    what: str
    line: int | None
    severity: str


_NAMED = re.compile(
    r"^(\.env(\..*)?|.*\.env|\.envrc|id_(rsa|dsa|ecdsa|ed25519)|.*\.(pem|key|crt|cer|p8)|\.netrc|_netrc|"
    r"\.git-credentials|credentials(\.json|\.ya?ml|\.xml)?|\.htpasswd|\.npmrc|\.pypirc|\.pgpass|\.s3cfg|"
    r"config\.json|.*service[-_]?account.*\.json|.*secrets?(\..*)?|.*\.tfvars(\.json)?|.*\.tfstate(\.backup)?|"
    r"wp-config\.php|settings\.py|local_settings\.py)$",
    re.I,
)
_KEYSTORE = re.compile(r"\.(p12|pfx|jks|keystore|kdbx|ppk|gpg|asc)$", re.I)
# Settings files by name: config.yaml, settings.json, appsettings.Production.json,
# application-prod.properties, docker-compose.yml, values.yaml, secrets.toml ...
_CONFIG = re.compile(
    r"^(config|settings|secrets?|credentials?|application|appsettings|parameters|values|env|environment|"
    r"docker-compose|compose|local|production|prod|staging|development|dev|database|db|auth|deploy)"
    r"([._-][^/]*)?\.(ya?ml|json|toml|ini|cfg|conf|properties|env|xml|tfvars)$|\.(ini|cfg|conf|properties)$",
    re.I)
_CONFIG_DIR = re.compile(r"(^|/)(config|conf|settings|secrets|credentials|env|environments|deploy|k8s|helm)/"
                         r"[^/]*\.(ya?ml|json|toml|ini|cfg|conf|properties|env|xml|tfvars)$", re.I)
# Directories of installed packages, caches and VCS data: nothing in them is read.
INSTALLED = frozenset({"node_modules", ".venv", "venv", "site-packages", "dist-packages", "bower_components",
                       "jspm_packages", ".git", ".hg", ".svn", ".tox", ".nox", "__pycache__", ".yarn", ".pnpm-store",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".cache", "vendor"})
# Installed packages and caches: their configuration files are not the project's.
_VENDORED = re.compile(r"(^|/)(node_modules|\.venv|venv|site-packages|vendor|bower_components|\.git|\.tox|"
                       r"__pycache__|\.cache|\.yarn|\.pnpm-store|target|bin|obj)/")
_EXAMPLE = re.compile(r"(^|[./_-])(example|sample|template|dist|defaults?|tmpl|tpl)([./_-]|$)", re.I)


# A cheap first test on the name (most files are source code): an extension
# or a name that any of the patterns above could accept.
_EXTS = frozenset({"p12", "pfx", "jks", "keystore", "kdbx", "ppk", "gpg", "asc", "pem", "key", "crt", "cer", "p8",
                   "yaml", "yml", "json", "toml", "ini", "cfg", "conf", "properties", "env", "xml", "tfvars",
                   "tfstate", "backup"})
_NAMES = frozenset({".envrc", ".netrc", "_netrc", ".git-credentials", "credentials", ".htpasswd", ".npmrc",
                    ".pypirc", ".pgpass", ".s3cfg", "wp-config.php", "settings.py", "local_settings.py"})


_SUFFIXES = tuple("." + e for e in _EXTS) + tuple(n for n in _NAMES if n.startswith(".")) + (
    "credentials", "_netrc", "wp-config.php", "settings.py", ".env")


def maybe(path: str) -> bool:
    """A quick test (string methods only) that :func:`candidate` may accept
    ``path``: most files of a context are passed over by it."""
    return (path.endswith(_SUFFIXES) or "/.env" in path or path.startswith((".env", "id_")) or "/id_" in path
            or "ecret" in path or "ECRET" in path)


def candidate(path: str) -> str | None:
    """Why ``path`` is worth reading (``"named"``, ``"config"``,
    ``"keystore"``), or ``None``."""
    base = path.rpartition("/")[2]
    low = base.lower()
    if (low.rpartition(".")[2] not in _EXTS and low not in _NAMES and not low.startswith((".env", "id_"))
            and "secret" not in low):
        return None
    if _KEYSTORE.search(base):
        return None if _VENDORED.search(path) else "keystore"
    if _NAMED.match(base):
        if base == "config.json" and not path.endswith(".docker/config.json"):
            return None if _VENDORED.search(path) else "config"
        return "named"
    if (_CONFIG.search(base) or _CONFIG_DIR.search(path)) and not _VENDORED.search(path):
        return "config"
    return None


_PRIVATE_KEY = re.compile(rb"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP|SSH2 ENCRYPTED) )?PRIVATE KEY( BLOCK)?-----")
# Known token formats: (what, the token from its first byte).  A token counts
# where the byte before it is not a letter or digit.
_TOKENS: tuple[tuple[str, re.Pattern[bytes]], ...] = tuple((what, re.compile(rx)) for what, rx in (
    ("an AWS access key id", rb"(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ("a GitHub token", rb"(gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})"),
    ("a GitLab token", rb"glpat-[A-Za-z0-9_-]{20,}"),
    ("a Slack token", rb"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("a Slack webhook", rb"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}"),
    ("a Stripe live key", rb"[sr]k_live_[A-Za-z0-9]{16,}"),
    ("a Google API key", rb"AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"),
    ("an npm token", rb"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    ("a PyPI token", rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    ("a SendGrid key", rb"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    ("an OpenAI key", rb"sk-(proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"),
    ("an Anthropic key", rb"sk-ant-[A-Za-z0-9_-]{32,}"),
    ("a JSON web token", rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,}"),
))
# Where any of them may start: one fast pass over the file finds the candidates.
_TOKEN_START = re.compile(rb"A(KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA|Iza)|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|"
                          rb"hooks\.slack\.com|[sr]k_live_|npm_|pypi-|SG\.|sk-|eyJ")
_URL_CREDENTIALS = re.compile(rb"://[^\s:/@'\"]+:([^\s@/'\"]+)@[^\s/'\"]+")
_ASSIGNMENT = re.compile(
    rb"""^\s*(?:export\s+|set\s+)?["']?([A-Za-z_][A-Za-z0-9_.\-]*)["']?\s*(?:=|:(?!:))\s*(.*?)\s*,?\s*$""")
# Searched in the lowered text (a case-insensitive alternation is much slower).
_KEY_WORD = re.compile(rb"pass|secret|token|key|auth|credential|salt|dsn")
_NPMRC_AUTH = re.compile(rb"(^|:)_(auth|authToken|password)\s*=\s*(.+)$")
_DOCKER_AUTH = re.compile(rb'"auth"\s*:\s*"([A-Za-z0-9+/=]{8,})"')

# Words of a key that name a secret; "key" and "auth" only in compounds.
_SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "secrets", "token",
                           "apikey", "credential", "credentials", "salt", "dsn", "privatekey", "secretkey",
                           "accesskey", "clientsecret", "authtoken"})
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "signing", "encryption", "master", "license",
                             "app", "client", "service", "session", "jwt", "hmac", "crypt", "cipher", "auth",
                             "account", "storage", "subscription"})
# A key ending like this holds a reference, a setting or a name, not the secret.
_NOT_VALUE = frozenset({"file", "path", "dir", "url", "uri", "endpoint", "host", "port", "name", "user",
                        "username", "id", "length", "len", "expiry", "expires", "expiration", "ttl", "timeout",
                        "lifetime", "header", "type", "enabled", "enable", "required", "min", "max", "policy",
                        "prompt", "field", "param", "mode", "algorithm", "algo", "env", "var", "source", "location",
                        "method", "scheme", "format", "version", "count", "size", "rotation", "reset", "hint"})
_PLACEHOLDER = re.compile(
    r"^(|changeme|change[-_. ]?me.*|change[-_. ]?this.*|replace[-_. ]?me.*|replace[-_. ]?with.*|todo|tbd|fixme|"
    r"x+|\*+|\.{2,}|-+|_+|<[^>]*>|\[[^\]]*\]|\(.*\)|\$\{[^}]*\}.*|\$\([^)]*\).*|\$[A-Za-z_][A-Za-z0-9_]*|"
    r"\{\{.*\}\}|%\([^)]*\)s|%[A-Z_]+%|#\{[^}]*\}|@[A-Za-z_]+@|your[-_ ].*|my[-_ ]?(password|secret|token|key).*|"
    r"(example|sample|dummy|fake|test|testing|placeholder|default|demo|insecure|none|null|nil|undefined|"
    r"secret|password|passwd|token|key|apikey|api_key|true|false|yes|no|on|off|empty|redacted|hidden)"
    r"([-_. ]?here)?|!vault.*|\|.*|>.*|\[\]|\{\})$",
    re.I,
)


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[_.\-]+", spaced.lower()) if w]


def secret_key(key: str) -> bool:
    """Whether the name ``key`` says its value is a secret (``DB_PASSWORD``,
    ``apiKey``, ``STRIPE_SECRET``; not ``PASSWORD_FILE`` or ``AUTHOR``)."""
    words = _words(key)
    if not words or words[-1] in _NOT_VALUE:
        return False
    for i, w in enumerate(words):
        if w in _SECRET_WORDS:
            return True
        if w in ("key", "auth") and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return True
    return False


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'`":
        return v[1:-1]
    if v[:1] in "\"'":
        return v[1:]
    return re.split(r"\s+#", v, maxsplit=1)[0].strip()  # an unquoted value ends at " #"


def placeholder(value: str) -> bool:
    """A value that stands for a secret instead of being one."""
    v = value.strip()
    if _PLACEHOLDER.match(v):
        return True
    if re.fullmatch(r"[0-9]+([.:][0-9]+)*[a-z]{0,2}", v, re.I):  # numbers, durations, versions
        return True
    return len(v) < 4


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts: dict[str, int] = {}
    for c in value:
        counts[c] = counts.get(c, 0) + 1
    n = len(value)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_\-.~]{20,}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def high_entropy(value: str) -> bool:
    """A long random-looking value (base64, hex, URL-safe alphabet)."""
    if not _TOKENISH.match(value) or _UUID.match(value) or "://" in value:
        return False
    if re.search(r"[a-z]{5,}", value) and not re.search(r"[0-9]", value):
        return False  # words, not noise
    classes = sum(bool(re.search(rx, value)) for rx in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and entropy(value) >= (3.5 if len(value) < 32 else 4.0)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def scan_bytes(data: bytes, reason: str) -> list[Hit]:
    """The credentials in ``data`` (a file read because of ``reason``)."""
    hits: list[Hit] = []
    m = _PRIVATE_KEY.search(data)
    if m:
        hits.append(Hit("a private key", _line_of(data, m.start()), ERROR))
    found: set[str] = set()
    for start in _TOKEN_START.finditer(data):
        i = start.start()
        if i and data[i - 1:i].isalnum() and not start.group().startswith(b"hooks"):
            continue
        for what, rx in _TOKENS:
            if what not in found and rx.match(data, i):
                found.add(what)
                hits.append(Hit(what, _line_of(data, i), ERROR))
    for m in _URL_CREDENTIALS.finditer(data):
        if not placeholder(m.group(1).decode("utf-8", "replace")):
            hits.append(Hit("a password inside a URL", _line_of(data, m.start()), ERROR))
            break
    m = _DOCKER_AUTH.search(data)
    if m:
        hits.append(Hit("registry credentials (docker config \"auth\")", _line_of(data, m.start()), ERROR))
    if b"\0" in data[:8192]:
        return hits  # binary: no KEY=VALUE lines
    if reason == "config":
        # Settings files can be long: only lines whose key names a secret,
        # found in one pass of the regex engine.
        done = -1
        for k in _KEY_WORD.finditer(data.lower()):
            if k.start() < done:
                continue  # same line
            begin = data.rfind(b"\n", 0, k.start()) + 1
            done = data.find(b"\n", k.start())
            done = len(data) if done < 0 else done
            a = _ASSIGNMENT.match(data[begin:done].rstrip(b"\r"))
            if not a:
                continue
            key = a.group(1).decode("utf-8", "replace")
            value = _unquote(a.group(2).decode("utf-8", "replace"))
            if secret_key(key) and not placeholder(value):
                sev = ERROR if len(value) >= 8 or high_entropy(value) else WARNING
                hits.append(Hit(f"a value for {key}", _line_of(data, begin), sev))
        return hits
    for number, raw in enumerate(data.splitlines(), start=1):
        if len(raw) > 4096 or raw.lstrip()[:1] in (b"#", b";"):
            continue
        npm = _NPMRC_AUTH.search(raw)
        if npm:
            if not placeholder(_unquote(npm.group(3).decode("utf-8", "replace"))):
                hits.append(Hit(f"a registry {npm.group(2).decode()} value", number, ERROR))
            continue
        a = _ASSIGNMENT.match(raw)
        if not a:
            continue
        key = a.group(1).decode("utf-8", "replace")
        value = _unquote(a.group(2).decode("utf-8", "replace"))
        if placeholder(value):
            continue
        if secret_key(key):
            sev = ERROR if len(value) >= 8 or high_entropy(value) else WARNING
            hits.append(Hit(f"a value for {key}", number, sev))
        elif high_entropy(value) and not public_value(key, value):
            hits.append(Hit(f"a high-entropy value for {key}", number, WARNING))
    return hits


# The base64 openings of DER public keys (SubjectPublicKeyInfo: RSA, EC
# P-256/P-384, Ed25519) and OpenSSH public key lines: random-looking, but
# meant to be published.
_PUBLIC_KEY_VALUE = re.compile(
    r"^(MII[BCEJ][A-Za-z0-9+/]{1,2}ANBgkqhkiG9w0BAQEFAAO|MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE|"
    r"MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE|MCowBQYDK2VwAyEA|(ssh|ecdsa)-[a-z0-9-]+ AAAA)"
)


def public_value(key: str, value: str) -> bool:
    """A value published by design: its name says so (``*_PUBLIC_KEY``,
    ``NEXT_PUBLIC_*``, ``*_PUBKEY``, Stripe's ``PUBLISHABLE_KEY``) or it is a
    public key's encoding.  Its entropy proves nothing then (a real project's
    ``.env`` with an RSA public key was reported as a secret)."""
    if any(w in ("public", "pub", "pubkey", "publishable") for w in _words(key)):
        return True
    return bool(_PUBLIC_KEY_VALUE.match(value))


def scan(abspath: str, rel: str, size: int, reason: str) -> list[Hit]:
    """The credentials in the context file ``rel`` (read at most
    :data:`READ_LIMIT` bytes, without following a symlink)."""
    if reason == "keystore":
        return [Hit("a binary key store (content not checked)", None, WARNING)]
    if reason == "config" and size > CONFIG_LIMIT:
        return []
    fd = fs.open_regular(abspath, rel)
    if fd is None:
        return []
    try:
        data = os.pread(fd, min(size, READ_LIMIT), 0)
    finally:
        os.close(fd)
    return scan_bytes(data, reason)


def looks_like_example(path: str) -> bool:
    """``.env.example``, ``config.sample.yml``: meant to be shared."""
    return bool(_EXAMPLE.search(path.rsplit("/", 1)[-1]))

