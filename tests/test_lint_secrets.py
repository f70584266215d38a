"""Secrets by content: what is found, what is not, the allow list, merged
findings, values never printed; and unreadable files as error findings."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxpack.cli import main
from ctxpack.linter import lint
from ctxpack.linter.secrets import candidate, scan_bytes, secret_key
from privileges import as_nobody
from trees import make_tree

DF = b"FROM scratch\n"
# Token-shaped test values, built in pieces so that no scanner mistakes this file for a leak.
AWS = "AKIA" + "Q7XK2M4PLZ8RWN3V"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0" + "x" * 20 + "_" + "Yz9" * 20
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"


@pytest.mark.parametrize("text,what", [
    (PEM, "a private key"),
    ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMII\\n"}', "a private key"),
    (f"aws_access_key_id = {AWS}\n", "an AWS access key id"),
    (f"GITHUB_TOKEN_VALUE_X={GITHUB}\n", "a GitHub token"),
    (f"token: {GITHUB_PAT}\n", "a GitHub token"),
    (f"SLACK_BOT={SLACK}\n", "a Slack token"),
    (f"STRIPE={STRIPE}\n", "a Stripe live key"),
    (f"maps_key: {GOOGLE}\n", "a Google API key"),
    (f"session={JWT}\n", "a JSON web token"),
    ("DATABASE_URL=postgres://app:Zq8vK2mPw9xL@db:5432/app\n", "a password inside a URL"),
    ("DB_PASSWORD=Zq8vK2mPw9xL\n", "a value for DB_PASSWORD"),
    ("export API_KEY='3f9a7c1e5b2d'\n", "a value for API_KEY"),
    ("  clientSecret: \"kT9#mP2$vX7q\"\n", "a value for clientSecret"),
    ("//registry.npmjs.org/:_authToken=npmabc123secretvalue\n", "a registry authToken value"),
    ('{"auths": {"ghcr.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}}', "registry credentials"),
])
def test_found_by_content(text: str, what: str) -> None:
    hits = scan_bytes(text.encode(), "named")
    assert any(h.what.startswith(what) for h in hits), hits
    assert all(h.line == 1 for h in hits if h.what.startswith(what))


@pytest.mark.parametrize("text", [
    "COMPOSE_PROJECT_NAME=paperless\nPORT=8000\n",
    "VITE_API_URL=https://api.example.com\nPUBLIC_URL=/\n",
    "DB_PASSWORD=\nAPI_KEY=changeme\nSECRET_KEY=${SECRET_KEY}\nTOKEN=<your-token>\nPASSWORD=xxx\n",
    "PASSWORD_FILE=/run/secrets/db\nTOKEN_EXPIRY=3600\nAUTHOR=jane\nSECRET_KEY_PATH=/etc/key\n",
    "password: {{ vault_password }}\napi_key: %(API_KEY)s\nsecret: your-secret-here\n",
    "DATABASE_URL=postgres://user:${DB_PASS}@db/app\n",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "# DB_PASSWORD=Zq8vK2mPw9xL (commented out)\n",
    # Published by design (excalidraw's .env.development holds the first):
    # an RSA public key, Next/Vite public variables, an OpenSSH public key.
    "VITE_APP_PLUS_EXPORT_PUBLIC_KEY='MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAm2g5T+Rub6Kbf1Mf57t0'\n",
    "NEXT_PUBLIC_SENTRY_DSN_ID=9f3Kq7Zt2Lm8Xw4Pb6Rc1Vy5\nSTRIPE_PUBLISHABLE_KEY=Zq8vK2mPw9xLa7Bc3Dd5Ee\n",
    "DEPLOY_KEY_LINE=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7h5k2Qz9xP4r8Lm3Vb6Nc1Ty0Ws5Ae\n",
])
def test_not_found(text: str) -> None:
    assert scan_bytes(text.encode(), "named") == []


def test_public_names_do_not_hide_real_secrets() -> None:
    """Only the entropy guess yields to a public-looking value: a known
    token format or a secret-naming key is still found."""
    hits = scan_bytes(f"PUBLIC_UPLOAD_TOKEN={GITHUB}\nAPP_KEY_ID=9f3Kq7Zt2Lm8Xw4Pb6Rc1Vy5\n".encode(), "named")
    assert [h.what for h in hits] == ["a GitHub token", "a value for PUBLIC_UPLOAD_TOKEN",
                                      "a high-entropy value for APP_KEY_ID"], hits


def test_key_names() -> None:
    assert secret_key("DB_PASSWORD") and secret_key("apiKey") and secret_key("STRIPE_SECRET") and secret_key("APP_KEY")
    assert not secret_key("PASSWORD_FILE") and not secret_key("AUTHOR") and not secret_key("KEYBOARD")
    assert not secret_key("PRIMARY_KEY_NAME") and not secret_key("TOKEN_URL")


def test_which_files_are_read() -> None:
    assert candidate(".env") == candidate("svc/.env.production") == candidate("deploy/id_rsa") == "named"
    assert candidate("config/app.yaml") == "config" and candidate("web/config.json") == "config"
    assert candidate("node_modules/x/config.json") is None and candidate("src/main.py") is None
    assert candidate("certs/store.p12") == "keystore"


def test_env_without_secrets_is_info(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, ".env": b"COMPOSE_PROJECT_NAME=paperless\n"})
    (f,) = [f for f in lint(root).findings if f.kind == "secret"]
    assert f.severity == "info" and "no credential found" in f.message
    assert CliRunner().invoke(main, ["lint", str(root)]).exit_code == 0


def test_example_files_hold_placeholders(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, ".env.example": b"DB_PASSWORD=postgres123\n",
                                      "config.sample.yml": f"aws: {AWS}\n".encode()})
    found = {f.path: f for f in lint(root).findings if f.kind == "secret"}
    assert found[".env.example"].severity == "info"             # a default value in an example
    assert found["config.sample.yml"].severity == "error"       # a real key format is a key anywhere


def test_allow_list_flag_and_comment(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {
        "Dockerfile": DF, "tests/fixtures/test.pem": PEM.encode(), "deploy/prod.pem": PEM.encode(),
        "ci/.env": f"GITHUB={GITHUB}\n".encode(),
    }, dockerignore="# test keys, generated for the test suite\n# ctxpack: allow-secret tests/fixtures\n")
    sev = {f.path: f for f in lint(root).findings if f.kind == "secret"}
    assert sev["tests/fixtures/test.pem"].severity == "info" and "allowed by .dockerignore:2" in sev["tests/fixtures/test.pem"].message
    assert sev["deploy/prod.pem"].severity == "error" and sev["ci/.env"].severity == "error"
    res = CliRunner().invoke(main, ["lint", "--allow-secret", "ci/.env", str(root)])
    assert res.exit_code == 1 and "allowed by --allow-secret ci/.env" in res.output
    res = CliRunner().invoke(main, ["lint", "--allow-secret", "ci/.env", "--allow-secret", "deploy/prod.pem", str(root)])
    assert res.exit_code == 0
    for out in (res.output, CliRunner().invoke(main, ["lint", "--json", str(root)]).output):
        assert GITHUB not in out and "MIIEow" not in out


def test_one_finding_per_path(tmp_path: Path) -> None:
    """A secret that is also heavy and unused by the build: one finding."""
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY app /app\n", "app/x": b"x",
                                      "dist/.env": f"TOKEN={GITHUB}\n".encode(), "dist/big.js": b"x" * 2_000_000,
                                      "node_modules/pkg/test/key.pem": PEM.encode()})
    report = lint(root)
    about = [f for f in report.findings if f.path in ("dist", "dist/.env")]
    by_path = {f.path: f for f in about}
    assert len(about) == 2                                        # the directory, and the file inside it
    assert set(by_path["dist"].also) == {"unused-by-build"} and by_path["dist"].kind == "heavy-directory"
    assert by_path["dist/.env"].kind == "secret" and by_path["dist/.env"].severity == "error"
    # Installed packages are not the project's credentials (a package's test key).
    assert not [f for f in report.findings if f.kind == "secret" and f.path.startswith("node_modules/")]
    doc = json.loads(CliRunner().invoke(main, ["lint", "--json", str(root)]).stdout)
    assert sum(1 for f in doc["findings"] if f["path"] == "dist") == 1


# --- unreadable files --------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["classic", "buildkit"])
def test_unreadable_file_is_an_error_finding(dialect: str) -> None:
    if not (hasattr(os, "fork") and os.geteuid() == 0):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("needs root to drop privileges to nobody")
        pytest.skip("needs root to drop privileges to nobody")
    base = Path(tempfile.mkdtemp(prefix="ctxpack-lint-perm-"))
    try:
        os.chmod(base, 0o755)
        root = make_tree(base / "c", {"Dockerfile": DF, "ok.txt": b"fine", "conf/secret.key": b"x", "z/other": b"y"})
        for d in (root, root / "conf", root / "z"):
            os.chmod(d, 0o755)
        for f in ("Dockerfile", "ok.txt"):
            os.chmod(root / f, 0o644)
        os.chmod(root / "conf/secret.key", 0)
        os.chmod(root / "z/other", 0)

        def run() -> list[tuple[str, str, str | None]]:
            return [(f.kind, f.severity, f.path) for f in lint(root, dialect=dialect).findings]

        status, value = as_nobody(run)
        assert status == "ok", value
        assert ("unreadable", "error", "conf/secret.key") in value
        assert ("unreadable", "error", "z/other") in value          # every one, not only the first
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_quick_name_test_never_hides_a_candidate() -> None:
    from ctxpack.linter.secrets import maybe

    names = [".env", "a/.env.local", "x.env", ".envrc", "deploy/id_rsa", "id_ed25519", "k/server.pem", "tls.key",
             "c/cert.crt", ".npmrc", "a/.pypirc", ".netrc", "_netrc", ".git-credentials", "home/.aws/credentials",
             "credentials.json", ".docker/config.json", "gcp-service-account.json", "secrets.toml", "app/Secret.txt",
             "prod.tfvars", "terraform.tfstate", "terraform.tfstate.backup", "wp-config.php", "proj/settings.py",
             "config/app.yaml", "settings.json", "appsettings.Production.json", "docker-compose.yml", "db.ini",
             "store.p12", "a/b.jks", ".htpasswd", ".pgpass", ".s3cfg", "x.kdbx"]
    for n in names:
        assert candidate(n) is not None, n
        assert maybe(n), n
    for n in ["src/main.py", "README.md", "node_modules/x/index.js", "lib/a.go"]:
        assert not maybe(n) and candidate(n) is None
