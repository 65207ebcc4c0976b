"""The house's floors (.importlinter, docs/architecture-floors.md), checked with import-linter.

Imports run downward only: cli > pipelines, api, benchmarks > transforms, runners > ml, kafka_client, store >
schemas, config; and no two modules import each other in a circle.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from config.settings import REPO_ROOT

CONFIG = REPO_ROOT / ".importlinter"
PACKAGES = ("cli", "pipelines", "api", "benchmarks", "transforms", "runners", "ml", "kafka_client", "store", "schemas",
            "config")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports (its Python API) over the packages under ``root``, in a fresh interpreter, without a cache."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(CONFIG)!r}, no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-P", "-c", code], cwd=root, env={"PYTHONPATH": str(root),
                          "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)


def test_the_repository_keeps_every_contract() -> None:
    result = _lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


def test_an_upward_import_and_a_cycle_break_the_contracts(tmp_path: Path) -> None:
    """The contracts themselves can fail: a planted tree with one upward import and one module cycle."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "config" / "settings.py").write_text("import cli\n")  # the ground floor reaching the top
    (tmp_path / "ml" / "evaluate.py").write_text("from ml import report\n")
    (tmp_path / "ml" / "report.py").write_text(textwrap.dedent("""\
        def write() -> None:
            from ml import evaluate  # a circle, even if imported late
        """))
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 2 broken" in result.stdout
    assert "config.settings -> cli" in result.stdout
    assert "cycles are allowed in ml" in result.stdout and ".report -> .evaluate" in result.stdout
