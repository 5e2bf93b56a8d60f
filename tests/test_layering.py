"""The package's layers, as tests (docs/architecture.md).

Lowest first: base (errors) -> primitives -> encoding -> protocols ->
drivers -> transports -> integration. The layer of every module is stated
once, in docs/gen_architecture.py (``LAYERS``); here every import of
``secagg/`` (absolute or relative, at top level or inside a function) is
checked against it, a fresh interpreter shows that importing a low layer
loads nothing above it, primitives raise only local errors, private names stay
in their package, and the diagram in docs/architecture.md matches the code.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import secagg
from secagg import errors

ROOT = Path(__file__).resolve().parent.parent


def _load_architecture():
    spec = importlib.util.spec_from_file_location("gen_architecture", ROOT / "docs" / "gen_architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


arch = _load_architecture()
MODULES = arch.modules()


def _upward(imports):
    out = []
    for imp in imports:
        low, high = arch.layer_of(imp.importer), arch.layer_of(imp.target)
        assert low is not None and high is not None, imp
        if arch.rank(high) > arch.rank(low):
            out.append(f"{imp.importer} (layer {low.name}) imports {imp.target} (layer {high.name}) "
                       f"at line {imp.line}")
    return out


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if arch.layer_of(m) is None]
    assert not unplaced, f"place these modules in LAYERS (docs/gen_architecture.py): {unplaced}"


def test_no_import_goes_to_a_higher_layer():
    violations = _upward(arch.imports(MODULES))
    assert not violations, "\n".join(violations)


def test_the_check_sees_relative_function_level_and_type_only_imports(tmp_path):
    """The scanner on a planted primitive that reaches up in every way an
    import can be written: each must be reported."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import secagg.flower.server\n"                      # absolute
        "from .. import drivers\n"                           # relative, a subpackage by name
        "if TYPE_CHECKING:\n"
        "    from ..transports.inprocess import LocalRound\n"  # type-only
        "def later():\n"
        "    from ..simulation import simulate\n"            # inside a function
        "    return simulate\n"
        "from . import kdf\n"                                # same layer: fine
        "from ..errors import ParameterError\n")             # lower layer: fine
    known = dict(MODULES)
    known["secagg.primitives.planted"] = planted
    found = [i for i in arch.imports(known) if i.importer == "secagg.primitives.planted"]
    targets = {i.target for i in found}
    assert {"secagg.flower.server", "secagg.drivers", "secagg.transports.inprocess", "secagg.simulation",
            "secagg.primitives.kdf", "secagg.errors"} <= targets
    reported = _upward(found)
    assert len(reported) == 4, reported
    assert all("secagg.primitives.planted (layer primitives)" in r for r in reported)


# ------------------------------------------------------------ fresh interpreter

_HEAVY = ("torch", "flwr")
_SAMPLES = ["secagg", "secagg.errors", "secagg.primitives.kdf", "secagg.primitives.paillier",
            "secagg.encoding.wire", "secagg.aggregation", "secagg.protocols.masking", "secagg.protocols.paillier",
            "secagg.drivers", "secagg.transports"]


@pytest.mark.parametrize("module", _SAMPLES)
def test_importing_a_layer_loads_nothing_above_it(module):
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code, module], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    loaded = json.loads(res.stdout)
    own = arch.layer_of(module)
    # the package itself is always loaded (it is every module's parent): it imports only the errors
    ceiling = arch.rank(own) if module != "secagg" else arch.rank(arch.layer_of("secagg.errors"))
    above = [m for m in loaded if m.startswith("secagg.") and arch.rank(arch.layer_of(m)) > ceiling]
    heavy = [m for m in loaded if m.split(".")[0] in _HEAVY]
    assert not above and not heavy, f"import {module} loaded {above + heavy}"


def test_kdf_does_not_load_the_simulator():
    """The case of the issue, spelled out."""
    code = ("import sys, secagg.primitives.kdf; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(("
            "'secagg.simulation', 'secagg.drivers', 'secagg.transports', 'secagg.flower'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_lazy_package_keeps_its_public_names():
    assert secagg.__version__
    assert set(secagg.__all__) <= set(dir(secagg))
    for name in secagg.__all__:
        assert getattr(secagg, name) is not None
    from secagg import FixedPoint, simulate
    from secagg.encoding.fixed_point import FixedPoint as Defined
    from secagg.simulation import simulate as simulate_defined

    assert simulate is simulate_defined and FixedPoint is Defined
    with pytest.raises(AttributeError):
        getattr(secagg, "no_such_name")


# ------------------------------------------------------------ errors and privacy

_REMOTE_ERRORS = {name for name in errors.__all__
                  if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name),
                                                                            errors.RemoteProtocolError)}


def test_primitives_raise_only_local_errors():
    """A primitive does not know whose bytes it was given: it raises a
    PrimitiveError, and the protocol code that handed it a peer's bytes makes
    that a RemoteProtocolError (errors.from_peer)."""
    found = []
    for name, path in MODULES.items():
        if arch.layer_of(name).name != "primitives":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id in _REMOTE_ERRORS:
                found.append(f"{name}:{node.lineno}: {node.id}")
            if isinstance(node, ast.ImportFrom) and _resolve(name, node) == "secagg.errors":
                found += [f"{name}:{node.lineno}: imports {a.name}" for a in node.names if a.name in _REMOTE_ERRORS]
    assert not found, found
    for cls in (errors.BadCiphertext, errors.BadSignature, errors.BadPublicKey, errors.BadEncoding,
                errors.ReconstructionError):
        assert issubclass(cls, errors.PrimitiveError) and not issubclass(cls, errors.RemoteProtocolError)


@pytest.mark.parametrize("local, remote, reason", [
    (errors.BadCiphertext(), errors.InvalidCiphertext, errors.AbortReason.INVALID_CIPHERTEXT),
    (errors.BadSignature(), errors.InvalidSignature, errors.AbortReason.INVALID_SIGNATURE),
    (errors.BadPublicKey("low order"), errors.RemoteProtocolError, errors.AbortReason.MALFORMED_MESSAGE),
    (errors.BadEncoding("short"), errors.WireFormatError, errors.AbortReason.MALFORMED_MESSAGE),
    (errors.ReconstructionError("bad"), errors.RemoteProtocolError, errors.AbortReason.RECONSTRUCTION_FAILED),
])
def test_from_peer_turns_a_local_error_into_the_remote_one(local, remote, reason):
    with pytest.raises(remote) as info:
        with errors.from_peer():
            raise local
    assert info.value.reason is reason and str(info.value) == str(local)
    assert info.value.__cause__ is local

    @errors.from_peer()
    def handler():
        raise local

    with pytest.raises(remote):
        handler()
    with pytest.raises(errors.ParameterError):  # anything else passes unchanged
        with errors.from_peer():
            raise errors.ParameterError("mine")


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_private_names_stay_in_their_package():
    """A leading underscore means "this package only": no module reads
    another package's private module, function or attribute."""
    found = []
    by_importer: dict[str, list] = {}
    for imp in arch.imports(MODULES):
        by_importer.setdefault(imp.importer, []).append(imp)
    for name, path in MODULES.items():
        home = _package(name)
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}  # local name -> secagg module it refers to
        for imp in by_importer.get(name, []):
            owner = _package(imp.target)
            mine = home == owner or home.startswith(owner + ".")
            if not mine and (any(_is_private(part) for part in imp.target.split("."))
                             or any(_is_private(n) for n in imp.names)):
                found.append(f"{name}:{imp.line}: imports private {imp.target} {imp.names or ''}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    source = _resolve(name, node)
                    if f"{source}.{alias.name}" in MODULES:
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("secagg.") and alias.asname:
                        bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and bound[node.value.id] != name):
                target = bound[node.value.id]
                owner = _package(target)
                if not (home == owner or home.startswith(owner + ".")):
                    found.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr} (private to {owner})")
    assert not found, "\n".join(found)


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(importer).split(".")
    if node.level > 1:
        base = base[:-(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


# ------------------------------------------------------------ the document

def test_architecture_doc_diagram_is_up_to_date():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert arch.current(doc) == arch.render(), (
        "docs/architecture.md is out of date with the code's imports: run python docs/gen_architecture.py")
