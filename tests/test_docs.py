"""The documentation's examples run: docs/api.md as doctests (outputs are
real), and the example program builds through docker-py."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("page", ["docs/api.md"])
def test_doc_examples_run(page: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    saved = os.environ.get("CTXPACK_CACHE_DIR")
    result = doctest.testfile(str(ROOT / page), module_relative=False, optionflags=doctest.ELLIPSIS,
                              verbose=False, report=True)
    os.environ["CTXPACK_CACHE_DIR"] = saved or ""
    assert result.attempted > 10, f"{page}: only {result.attempted} examples found"
    assert result.failed == 0, f"{page}: {result.failed} of {result.attempted} examples failed (see the output above)"
