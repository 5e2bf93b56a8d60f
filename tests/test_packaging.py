"""The package installs: a wheel built from the repository (``python -m
build``: an sdist, and the wheel from it) goes into a fresh virtual environment
with its dependencies from the package registry (torch stays out: it is
optional), and the ``secagg`` command it installs runs a round. The wheel holds
the library and its ``py.typed`` marker, not the tests or the benchmarks; the
version comes from one place."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):  # nothing of this interpreter leaks in
        env.pop(var, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_version_is_written_once() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', text, re.M)
    assert not re.search(r"^version\s*=\s*\"", text, re.M), "the version belongs in secagg/__init__.py only"
    assert 'version = {attr = "secagg.__version__"}' in text
    import secagg

    assert re.fullmatch(r"\d+\.\d+\.\d+", secagg.__version__)
    assert f"## [{secagg.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import build"], capture_output=True).returncode != 0:
        pytest.skip("build is not installed (it comes with the 'test' extra)")
    dist = tmp_path / "dist"
    # the sdist, then the wheel from the unpacked sdist (so the sdist is complete, and no
    # stale build/ directory of the checkout can slip into the wheel)
    res = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    wheels = list(dist.glob("secagg-*.whl"))
    assert len(wheels) == 1 and len(list(dist.glob("secagg-*.tar.gz"))) == 1, list(dist.iterdir())

    import secagg

    wheel = wheels[0]
    assert wheel.name.startswith(f"secagg-{secagg.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "secagg/py.typed" in names
    assert "secagg/drivers/server.py" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "examples", "protocols")]

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True,
                         timeout=900, env=_env())
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    # torch is optional: the core install must not have pulled it in
    res = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                         capture_output=True, text=True, env=_env())
    assert res.stdout.strip() == "True"

    res = subprocess.run([str(bindir / "secagg"), "simulate", "--clients", "5", "--dim", "20", "--protocol",
                          "secagg"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"\d+/5 clients included", res.stdout), res.stdout
    err = re.search(r"max \|aggregate - plaintext\| = (\S+)", res.stdout)
    assert err is not None, res.stdout
    assert float(err.group(1)) < 1e-3
    # the installed copy ran, not the repository's
    res = subprocess.run([str(py), "-c", "import secagg; print(secagg.__file__, secagg.__version__)"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env())
    path, version = res.stdout.split()
    assert Path(path).is_relative_to(env_dir) and version == secagg.__version__
