"""Every tutorial notebook runs top to bottom, headless, as a reader would run it.

The notebooks use the shipped model in checkpoints/shakespeare; HT_CHECKPOINT (read by
each notebook) points them at another checkpoint folder.
"""
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_llama_model", "02_hidden_transfer", "03_trees", "04_lossless",
            "05_training_a_drafter", "06_benchmarks"]


def test_the_series_is_complete():
    # an empty parametrization below would pass silently: name the notebooks we ship
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs(name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    # cwd = notebooks/, as in Jupyter; any error in any cell raises CellExecutionError with its traceback
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
