"""docs/notebooks/masking_round.ipynb runs from top to bottom in a fresh
kernel on this interpreter (the venv's), and what it prints holds: the round
completes without the client that vanished after ShareKeys, the secure
aggregate equals the plaintext mean of the included clients within the
fixed-point bound, removing the dropped client's pairwise masks changes the
sum, and the step-by-step round is byte for byte the one ``secagg.simulate``
runs. The notebook is committed without outputs (checked here too).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the 'test' extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient comes with the 'test' extra")
kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="ipykernel comes with the 'test' extra")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebooks" / "masking_round.ipynb"


def _stdout(cell: dict) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", ())
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_the_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, "clear the notebook's outputs before committing"


@pytest.mark.slow
def test_the_notebook_runs_and_its_round_is_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel "python3" is this interpreter: a kernel spec written for
    # sys.executable, found first on JUPYTER_PATH (whatever kernels the machine has).
    kernelspec.write_kernel_spec(tmp_path / "kernels" / "python3",
                                 extra_arguments=["--HistoryManager.enabled=False"])
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that fails
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"the notebook took {elapsed:.1f} s"

    summary_cells = [c for c in nb.cells if "summary" in c.metadata.get("tags", ())]
    assert len(summary_cells) == 1
    summary = json.loads(_stdout(summary_cells[0]))
    assert summary["python"] == sys.executable  # the venv's interpreter ran it
    assert summary["included"] == [1, 2, 3, 4]
    assert summary["dropped"] == {"5": "masked_input"}
    assert summary["max_abs_error"] <= summary["bound"] <= 2.0 ** -16
    assert summary["same_as_simulate"] is True
    assert summary["removal_changed_sum"] is True

    printed = "\n".join(_stdout(c) for c in nb.cells if c.cell_type == "code")
    for stage in ("'advertise_keys'", "'share_keys'", "'masked_input'", "'unmasking'"):
        assert f"stage {stage}" in printed
    assert "4 encrypted shares e_{1,v} of 108 bytes" in printed
    assert "MaskedInput from [1, 2, 3, 4]" in printed
    assert "X25519(s_5^SK) == s_5^PK: True" in printed
    assert "matches its commitment: False" not in printed
    assert "the same as the server's sums: True" in printed
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 1, "the notebook draws one figure"
