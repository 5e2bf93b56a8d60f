"""The documentation cannot rot silently:

* every Python block of docs/embedding.md is quoted verbatim from
  examples/own_transport/queue_round.py (which tests/test_embedding_example.py
  runs), and the guide shows the whole transport;
* the API reference (docs/api, Sphinx autodoc over the docstrings) builds with
  warnings as errors, and documents the drivers' public methods.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "embedding.md"
EXAMPLE = ROOT / "examples" / "own_transport" / "queue_round.py"


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, re.M | re.S)


def _region(source: str, name: str) -> str:
    m = re.search(rf"^[ \t]*# --8<-- \[start:{name}\]\n(.*?)^[ \t]*# --8<-- \[end:{name}\]\n", source, re.M | re.S)
    assert m is not None, f"region {name!r} is missing from {EXAMPLE.name}"
    return textwrap.dedent(m.group(1))


def _quoted(block: str, source_lines: list[str]) -> bool:
    """``block`` is a run of consecutive source lines, up to a common indent."""
    lines = block.splitlines()
    for start in range(len(source_lines) - len(lines) + 1):
        window = source_lines[start:start + len(lines)]
        if textwrap.dedent("\n".join(window)) == "\n".join(lines):
            return True
    return False


def test_guide_code_is_the_example() -> None:
    source = EXAMPLE.read_text()
    blocks = _python_blocks(GUIDE.read_text())
    assert len(blocks) >= 3
    lines = source.splitlines()
    for block in blocks:
        assert _quoted(block, lines), f"docs/embedding.md quotes code that is not in {EXAMPLE.name}:\n{block}"


def test_guide_shows_the_whole_transport_and_it_is_short() -> None:
    transport = _region(EXAMPLE.read_text(), "transport")
    shown = "\n".join(_python_blocks(GUIDE.read_text())).splitlines()
    missing = [line for line in transport.splitlines() if line.strip() and line not in shown]
    assert not missing, f"transport lines missing from docs/embedding.md: {missing}"
    assert len(transport.splitlines()) <= 50


def test_guide_links_exist() -> None:
    text = GUIDE.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (GUIDE.parent / target).exists(), f"docs/embedding.md links to a missing {target}"


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import sphinx"], capture_output=True).returncode != 0:
        pytest.skip("sphinx is not installed (it comes with the 'test' extra)")
    out = tmp_path / "html"
    res = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          str(ROOT / "docs" / "api"), str(out), "-d", str(tmp_path / "doctrees")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    page = (out / "index.html").read_text()
    for name in ("secagg.drivers.server.ServerDriver", "secagg.drivers.client.ClientDriver",
                 "secagg.drivers.store.StateStore", "secagg.drivers.observer.Observer",
                 "secagg.transports.inprocess.LocalRound", "secagg.errors.ProtocolAborted",
                 "secagg.encoding.wire.decode"):
        assert f'id="{name}"' in page, f"{name} is not in the API reference"
    for method in ("start", "receive", "gone", "left", "ready", "close_stage", "result"):
        assert f'id="secagg.drivers.server.ServerDriver.{method}"' in page, method
