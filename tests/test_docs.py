"""The documentation cannot rot silently:

* every Python block of docs/embedding.md is quoted verbatim from
  examples/own_transport/queue_round.py (which tests/test_embedding_example.py
  runs), and the guide shows the whole transport;
* the API reference (docs/api, Sphinx autodoc over the docstrings) builds with
  warnings as errors, and documents the drivers' public methods;
* in the user-facing documents (README, docs/embedding.md, protocols/README.md,
  protocols/THREAT_MODEL.md, CHANGELOG.md): every ``secagg ...`` command line
  parses with the real CLI, every ``make`` target exists, every file path is in
  the repository, every ``secagg.x.y`` name resolves, every ``secagg-*``
  setting is one the Flower adapter reads, every test cited as evidence exists
  (in the file the threat model's table names), and the README's library
  example runs and gives the weighted mean of the included clients.
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
    stated = re.search(r"threads, in (\d+)\s+lines", GUIDE.read_text())
    assert stated is not None and int(stated.group(1)) == len(transport.splitlines()), \
        "docs/embedding.md states another length for the transport"


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
                 "secagg.drivers.committee.CommitteeClientRole",
                 "secagg.drivers.store.StateStore", "secagg.drivers.observer.Observer",
                 "secagg.transports.inprocess.LocalRound", "secagg.errors.ProtocolAborted",
                 "secagg.encoding.wire.decode"):
        assert f'id="{name}"' in page, f"{name} is not in the API reference"
    for method in ("start", "receive", "gone", "left", "ready", "close_stage", "result"):
        assert f'id="secagg.drivers.server.ServerDriver.{method}"' in page, method


# --- claims the user-facing documents make about the code ------------------------------------------

#: The documents a user reads (README, the embedding guide, the protocols' README and threat model, the
#: changelog): their commands, paths, names, settings and cited tests are checked against the repository.
USER_DOCS = [ROOT / "README.md", ROOT / "docs" / "embedding.md", ROOT / "protocols" / "README.md",
             ROOT / "protocols" / "THREAT_MODEL.md", ROOT / "CHANGELOG.md"]


def _code_spans(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)  # fenced blocks are checked elsewhere
    return re.findall(r"`([^`\n]+)`", text)


def _shell_lines(text: str) -> list[str]:
    """The command lines of the ``sh`` blocks as words, comments removed."""
    import shlex

    lines = []
    for block in re.findall(r"^```(?:sh|bash|console)\n(.*?)^```$", text, re.M | re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


def _parse_secagg(args: list[str]) -> None:
    """Parse (and convert, and validate) ``secagg ARGS`` as click would, without running it."""
    import click

    from secagg.cli import main

    ctx = main.make_context("secagg", list(args))
    cmd: click.Command = main
    while isinstance(cmd, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        cmd = sub
        ctx = cmd.make_context(name, rest, parent=ctx)


def test_secagg_command_lines_in_the_docs_parse() -> None:
    """Every ``secagg ...`` line of a shell block names commands and options
    that exist, with values they accept."""
    import os

    import click

    checked = 0
    for doc in USER_DOCS + [ROOT / "docs" / "flower.md", ROOT / "benchmarks" / "README.md"]:
        for line in _shell_lines(doc.read_text()):
            words = [w for w in line if w != "..."]
            if not words or not words[0].endswith("secagg"):
                continue
            try:
                _parse_secagg(words[1:])
            except click.BadParameter as exc:
                # --workers is bounded by this machine's CPUs
                if exc.param is not None and exc.param.name == "workers" and (os.cpu_count() or 1) < 2:
                    continue
                raise AssertionError(f"{doc.relative_to(ROOT)}: {line!r}: {exc}") from None
            except click.UsageError as exc:
                raise AssertionError(f"{doc.relative_to(ROOT)}: {line!r}: {exc}") from None
            checked += 1
    assert checked >= 5


def test_make_targets_in_the_docs_exist() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for doc in USER_DOCS:
        text = doc.read_text()
        named = re.findall(r"`make ([\w-]+)`", text)
        named += [line[1] for line in _shell_lines(text) if line[0] == "make" and len(line) > 1]
        for target in named:
            assert target in targets, f"{doc.relative_to(ROOT)} names `make {target}`, which the Makefile lacks"


def _is_path(token: str) -> bool:
    if any(c in token for c in "<>*{}$ ") or "://" in token or token.startswith("/"):
        return False
    if not re.fullmatch(r"(\.\./)?[\w.-]+(/[\w.-]+)*/?", token):
        return False  # not a path, or math such as k/2
    return (re.search(r"\.(py|md|json|toml|ipynb|jsonl|txt|cfg)$", token) is not None or token.endswith("/")
            or (token.startswith("../") or token.split("/")[0] in TOP_DIRS) and "/" in token)


#: The repository's top directories (and the protocols' sub-folders, named relative to protocols/).
TOP_DIRS = ("secagg", "protocols", "docs", "examples", "benchmarks", "tests", "masking", "paillier", "notebooks")


def test_paths_named_in_the_docs_are_in_the_repository() -> None:
    """Every link and every file path in code spans points into this
    repository (relative to the document or to the root); a path into
    another project's sources is a failure too."""
    for doc in USER_DOCS:
        text = doc.read_text()
        targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t]
        targets += [t for t in _code_spans(text) if _is_path(t)]
        for target in targets:
            if target.endswith(".jsonl") or target.startswith(("runs/", "build/", "dist/", ".venv/")):
                continue  # what the commands write
            bare = target.split("::")[0]
            candidates = [doc.parent / bare, ROOT / bare]
            if "/" not in bare:  # a file name alone: somewhere in the repository's sources
                candidates += [p for top in ("secagg", "protocols", "docs", "examples", "benchmarks", "tests")
                               for p in (ROOT / top).rglob(bare)]
            assert any(p.exists() for p in candidates), f"{doc.relative_to(ROOT)} names {target!r}, not in the repository"


def _defined_tests() -> dict[str, set[str]]:
    """tests/<file> -> the test functions and classes it defines (or assigns)."""
    out = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        src = path.read_text()
        out[path.name] = set(re.findall(r"^(?:def|class) (\w+)", src, re.M)) | set(
            re.findall(r"^(Test\w+) = ", src, re.M))
    return out


def test_tests_cited_as_evidence_exist() -> None:
    """A test the docs cite exists; in the threat model's table of invariants
    (§8), in the file the row names for it (A, P, S, V or a file name)."""
    defined = _defined_tests()
    anywhere = set().union(*defined.values())
    for doc in USER_DOCS:
        for name in set(re.findall(r"`(test_\w+|Test\w+)`", doc.read_text())):
            assert name in anywhere or (ROOT / "tests" / f"{name}.py").exists(), \
                f"{doc.relative_to(ROOT)} cites {name}, which no file in tests/ defines"
    section = (ROOT / "protocols" / "THREAT_MODEL.md").read_text().split("\n## 8.", 1)[1]
    files = {letter: name for name, letter in re.findall(r"`(test_\w+\.py)`\s*=\s*\*\*([A-Z])\*\*", section)}
    assert set(files) == {"A", "P", "S", "V"}
    token = re.compile(r"\*\*([A-Z])\*\*[:,]|`(test_\w+\.py)::(\w+)`|`(test_\w+\.py)`|`((?:Test|test_)\w+)`")
    checked = 0
    for cell in section.split("|"):
        current = None  # the file the cell's last marker names
        for marker, qualified_file, qualified_name, fname, name in token.findall(cell):
            if marker:
                current = files[marker]
            elif qualified_file:
                current = qualified_file
                assert qualified_name in defined[qualified_file], \
                    f"THREAT_MODEL §8 cites {qualified_file}::{qualified_name}, which that file does not define"
                checked += 1
            elif fname:
                current = fname
            elif current is not None:
                assert name in defined[current], f"THREAT_MODEL §8 cites {name} in {current}, which does not define it"
                checked += 1
    assert checked >= 50


def test_flower_settings_named_in_the_docs_exist() -> None:
    """A ``secagg-*`` key the docs name is a run-config setting
    (``SecAggSettings``) or a node-config key the client mod reads."""
    from dataclasses import fields

    from secagg.flower.settings import RUN_CONFIG_PREFIX, SecAggSettings

    run_config = {RUN_CONFIG_PREFIX + f.name.replace("_", "-") for f in fields(SecAggSettings)}
    source = "\n".join(p.read_text() for p in (ROOT / "secagg" / "flower").glob("*.py"))
    node_config = set(re.findall(r'"(secagg-[a-z-]+)"', source)) - run_config
    assert "secagg-ledger-dir" in node_config
    named = 0
    for doc in USER_DOCS:
        for key in re.findall(r"`(secagg-[a-z]+(?:-[a-z]+)*)(?: = [^`]*)?`", doc.read_text()):
            assert key in run_config | node_config, f"{doc.relative_to(ROOT)} names the setting {key}, which the adapter lacks"
            named += 1
    assert named >= 10


def _resolves(dotted: str) -> bool | None:
    """Whether ``secagg.a.b.c`` is a module or an attribute of one (None: it
    needs an optional dependency that is not installed)."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not exc.name.startswith("secagg"):
                return None
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_dotted_names_in_the_docs_exist() -> None:
    """``secagg.x.y`` in a code span is a module, class, function or
    attribute of the library, or a logger the library writes to."""
    source = "\n".join(p.read_text() for p in (ROOT / "secagg").rglob("*.py"))
    loggers = set(re.findall(r'getLogger\("([\w.]+)"\)', source))
    checked = 0
    for doc in USER_DOCS:
        for span in _code_spans(doc.read_text()):
            for dotted in re.findall(r"^(secagg(?:\.\w+)+)", span):
                if dotted in loggers:
                    continue
                found = _resolves(dotted)
                assert found is not False, f"{doc.relative_to(ROOT)} names {dotted}, which the library lacks"
                checked += found is True
    assert checked >= 10


@pytest.mark.slow
def test_readme_library_example_runs() -> None:
    """The README's library example runs as written, and its result has the
    attributes the README names, with the meaning it gives them."""
    import numpy as np

    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no Python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    result, updates, weights = namespace["result"], namespace["updates"], namespace["examples"]
    included = list(result.included)  # type: ignore[attr-defined]
    assert set(included) | set(result.dropped) == set(range(1, len(updates) + 1))  # type: ignore[attr-defined, arg-type]
    expected = sum(updates[i - 1] * weights[i - 1] for i in included) / sum(weights[i - 1] for i in included)  # type: ignore[index]
    assert np.max(np.abs(result.aggregate - expected)) < 1e-6  # type: ignore[attr-defined]
    assert set(result.bytes_sent) >= set(included) and result.timings  # type: ignore[attr-defined]


def test_readme_install_lines_name_what_pyproject_declares() -> None:
    """The README's ``pip install`` lines list the packages each one brings
    (the dependencies, or an extra's): exactly what pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}  # type: ignore[union-attr]

    declared = {".": names(project["dependencies"])}
    declared.update({f".[{extra}]": names(reqs) for extra, reqs in project["optional-dependencies"].items()})
    text = (ROOT / "README.md").read_text()
    entries: list[list[str]] = []  # [spec, comment]
    for block in re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S):
        for line in block.splitlines():
            m = re.match(r"pip install (?:-e )?'?(\.(?:\[\w+\])?)'?\s+#(.*)", line)
            if m:
                entries.append([m.group(1), m.group(2)])
            elif line.strip().startswith("#") and entries:
                entries[-1][1] += " " + line.strip().lstrip("#")
            elif line.strip():
                entries.append(["", ""])  # another command ends the comment
    checked = 0
    for spec, comment in entries:
        listed = re.search(r"\(([^()]*)\)", comment)
        if spec not in declared or listed is None:
            continue
        named = {item.strip().split()[0].lower() for item in listed.group(1).split(",") if item.strip()}
        assert named == declared[spec], f"README: pip install {spec} lists {sorted(named)}; pyproject.toml: {sorted(declared[spec])}"
        checked += 1
    assert checked >= 3
