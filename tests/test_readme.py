"""The README's 30-second tour shows real output: the offline commands are
re-run on the tour's tree (scripts/readme_tour.py) and must print exactly what
README.md shows.  After a change to a command's output, run
``python scripts/readme_tour.py`` and commit README.md."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tour_is_real_output() -> None:
    spec = importlib.util.spec_from_file_location("readme_tour", ROOT / "scripts" / "readme_tour.py")
    assert spec is not None and spec.loader is not None
    tour = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tour)
    readme = (ROOT / "README.md").read_text()
    assert tour.START in readme and tour.END in readme
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    stale = [command for command, output, code in tour.render(tour.OFFLINE, env)
             if tour.block(command, output, code) not in readme]
    assert not stale, f"README.md's tour is stale for {stale}: run python scripts/readme_tour.py"


def test_setup_commands_stay() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):readme.index("## 30-second tour")]
    assert "pip install ." in setup and "ctxpack size ." in setup
    assert "bash scripts/test.sh" in setup
