"""Static checks: ruff's pyflakes rules (F: undefined names, unused imports
and variables, redefinitions) over the library, the benchmarks and the tests,
and mypy over the library (which ships ``py.typed``: its annotations are part
of what embedders rely on; configuration in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str] | None:
    exe = Path(sys.executable).parent / "ruff"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_pyflakes_rules_pass() -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the 'test' extra)")
    res = subprocess.run([*ruff, "check", "--select", "F", "--no-cache", "--output-format", "concise",
                          "secagg", "benchmarks", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_library_type_checks() -> None:
    if subprocess.run([sys.executable, "-c", "import mypy"], capture_output=True).returncode != 0:
        pytest.skip("mypy is not installed (it comes with the 'test' extra)")
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
