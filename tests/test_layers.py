"""The layers in pyproject.toml ([tool.importlinter]) hold, and they would catch the
upward imports the tree once had (issue 22): each is put back into a copy of the package
and import-linter must refuse it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")

# (a module, an upward import it once made, the layers it crossed)
UPWARD = [
    ("dragoman/agent/process.py", "from dragoman.worker.agents import pool", "agent → worker"),
    (
        "dragoman/pipeline/page_messages.py",
        "from dragoman.agent import session",
        "pipeline → agent",
    ),
    ("dragoman/agent/session.py", "from dragoman.fleet import limits", "agent → fleet"),
    ("dragoman/worker/app.py", "from dragoman.api import calls", "worker → api"),
    ("dragoman/fleet/control_link.py", "from dragoman.agent import session", "fleet → agent"),
    ("dragoman/config.py", "from dragoman.media import ports", "config → media"),
    (
        "dragoman/contract/page.py",
        "from dragoman.languages import LanguagePair",
        "contract → languages",
    ),
    ("dragoman/worker/calls/node_calls.py", "import pipecat", "worker → Pipecat"),
]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_its_layers() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "line", "what"), UPWARD, ids=[u[2] for u in UPWARD])
def test_an_upward_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, what: str
) -> None:
    shutil.copytree(ROOT / "dragoman", tmp_path / "dragoman", ignore=shutil.ignore_patterns("web"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    # At the end of the module: after its own imports, so nothing else changes.
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode != 0, (what, out.stdout)
    importer = module.removesuffix(".py").replace("/", ".")
    assert importer in out.stdout and "BROKEN" in out.stdout, out.stdout
