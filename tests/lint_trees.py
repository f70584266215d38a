"""Realistic project trees for the lint tests (a test helper, not a test
module): what developers' checkouts hold besides the sources (installed
packages, virtualenvs, caches, build output, .env files, a .git)."""

from __future__ import annotations

from pathlib import Path

from trees import make_tree

MB = 1_000_000


def blob(n: int) -> bytes:
    """``n`` bytes that do not look like text or a secret."""
    return bytes(range(256)) * (n // 256) + bytes(n % 256)


def git_dir(prefix: str = ".git") -> dict[str, bytes]:
    return {f"{prefix}/HEAD": b"ref: refs/heads/main\n", f"{prefix}/config": b"[core]\n\tbare = false\n",
            f"{prefix}/objects/pack/pack-1.pack": blob(300_000), f"{prefix}/refs/heads/main": b"0" * 40 + b"\n"}


def monorepo(root: Path, dockerignore: str = "node_modules\n.env\n") -> Path:
    """A yarn workspace: root and per-package node_modules, .env files."""
    files = {
        "Dockerfile": b"FROM node:20\nWORKDIR /app\nCOPY package.json yarn.lock ./\nCOPY packages/api ./packages/api\n"
                      b"RUN yarn install --frozen-lockfile\nCMD [\"node\", \"packages/api/index.js\"]\n",
        "package.json": b'{"private": true, "workspaces": ["packages/*"]}\n', "yarn.lock": b"# yarn lockfile v1\n",
        ".env": b"COMPOSE_PROJECT_NAME=paperless\nPORT=8000\n",
        "node_modules/left-pad/index.js": blob(2 * MB), "node_modules/left-pad/package.json": b'{"name": "left-pad"}\n',
        "packages/api/index.js": b"require('./db')\n", "packages/api/db.js": b"module.exports = {}\n",
        "packages/api/.env": b"DATABASE_URL=postgres://api:Zq8vK2mPw9xL@db:5432/api\nDB_PASSWORD=Zq8vK2mPw9xL\n",
        "packages/api/node_modules/pg/index.js": blob(MB),
        "packages/web/src/main.ts": b"console.log(1)\n", "packages/web/.env.production": b"VITE_API_URL=https://api.example.com\n",
        "packages/web/node_modules/vite/index.js": blob(3 * MB),
        "docs/README.md": b"# docs\n",
        **git_dir(),
    }
    return make_tree(root, files, dockerignore=dockerignore)


def python_app(root: Path, dockerignore: str = ".venv\n__pycache__\n*.pyc\n.pytest_cache\n.idea/\n") -> Path:
    """A Python service with a virtualenv and caches."""
    files = {
        "Dockerfile": b"FROM python:3.12-slim\nWORKDIR /srv\nCOPY pyproject.toml ./\nCOPY app ./app\n"
                      b"RUN pip install .\nCMD [\"python\", \"-m\", \"app\"]\n",
        "pyproject.toml": b"[project]\nname = \"app\"\n", "app/__init__.py": b"", "app/main.py": b"print(1)\n",
        "app/__pycache__/main.cpython-312.pyc": blob(20_000), "app/settings.yaml": b"debug: false\nlog_level: info\n",
        ".venv/lib/python3.12/site-packages/requests/__init__.py": blob(2 * MB), ".venv/pyvenv.cfg": b"home = /usr\n",
        ".pytest_cache/v/cache/nodeids": b"[]\n", ".mypy_cache/3.12/app.data.json": blob(500_000),
        "tests/test_main.py": b"def test(): pass\n", "tests/__pycache__/test_main.cpython-312.pyc": blob(5_000),
    }
    return make_tree(root, files, dockerignore=dockerignore)


def dotnet(root: Path, dockerignore: str = "*/bin\n*/obj\n.vs\n") -> Path:
    """A .NET solution with two-level bin/obj (src/Web/bin, src/Lib/obj)."""
    files = {
        "Shop.sln": b"Microsoft Visual Studio Solution File\n",
        "src/Web/Dockerfile": b"FROM mcr.microsoft.com/dotnet/sdk:8.0 AS build\nWORKDIR /s\n"
                              b"COPY src/Web/Web.csproj src/Web/\nCOPY src/Lib/Lib.csproj src/Lib/\n"
                              b"RUN dotnet restore src/Web/Web.csproj\nCOPY src/Web/Program.cs src/Web/\n"
                              b"COPY src/Lib/Lib.cs src/Lib/\nRUN dotnet publish src/Web -o /out\n",
        "src/Web/Web.csproj": b"<Project Sdk=\"Microsoft.NET.Sdk.Web\"/>\n", "src/Web/Program.cs": b"// web\n",
        "src/Web/bin/Debug/net8.0/Web.dll": blob(3 * MB), "src/Web/obj/project.assets.json": blob(800_000),
        "src/Lib/Lib.csproj": b"<Project Sdk=\"Microsoft.NET.Sdk\"/>\n", "src/Lib/Lib.cs": b"// lib\n",
        "src/Lib/bin/Debug/net8.0/Lib.dll": blob(1_500_000), "src/Lib/obj/project.assets.json": blob(400_000),
        "tools/bin/release.sh": b"#!/bin/sh\n",
    }
    return make_tree(root, files, dockerignore=dockerignore)


def rust(root: Path, dockerignore: str = "target\n.*\n!.git\n") -> Path:
    """A Rust service whose build.rs runs `git describe`: `!.git` on purpose."""
    files = {
        "Dockerfile": b"FROM rust:1.80 AS build\nWORKDIR /src\nCOPY . .\nRUN cargo build --release\n",
        "Cargo.toml": b"[package]\nname = \"svc\"\n", "Cargo.lock": b"# lock\n", "build.rs": b"fn main() {}\n",
        "src/main.rs": b"fn main() {}\n", "target/release/svc": blob(4 * MB), ".github/workflows/ci.yml": b"on: push\n",
        **git_dir(),
    }
    files[".git/objects/pack/pack-1.pack"] = blob(2 * MB)
    return make_tree(root, files, dockerignore=dockerignore)
