from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_atlas import atlas_data, write_atlas
from test_report import add_dynamics

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SECONDS_PER_NOTEBOOK = 60


def test_the_three_notebooks_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_query_atlas.ipynb",
        "02_persona_space.ipynb",
        "03_attractors.ipynb",
    ]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.cells[0].cell_type == "markdown", path.name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
        assert "SAE_ATLAS" in notebook.cells[1].source + notebook.cells[0].source


def run(path: Path) -> tuple[nbformat.NotebookNode, float]:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=SECONDS_PER_NOTEBOOK,
        startup_timeout=SECONDS_PER_NOTEBOOK,
        resources={"metadata": {"path": str(REPO)}},
    )
    started = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - started


def output_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("name", "dynamics"),
    [
        ("01_query_atlas", True),
        ("02_persona_space", True),
        ("03_attractors", True),
        ("03_attractors", False),
    ],
)
def test_notebook_runs_on_the_synthetic_atlas(name, dynamics, tmp_path, monkeypatch):
    """Executes a notebook in the `python3` kernel (jupyter_client starts the `python` of
    ipykernel's kernel spec as this interpreter, sys.executable)."""
    atlas = write_atlas(tmp_path / "atlas.h5", atlas_data())
    if dynamics:
        add_dynamics(atlas)
    monkeypatch.setenv("SAE_ATLAS", str(atlas))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook, seconds = run(REPO / "notebooks" / f"{name}.ipynb")
    assert seconds < SECONDS_PER_NOTEBOOK, f"{name} took {seconds:.0f} s"
    text = output_text(notebook)
    assert "Error" not in text, text[-2000:]
    if name == "01_query_atlas":
        assert "2 puppeteer features" in text and "pirate (fiction)" in text
        assert "search: 'tok1'" in text
    elif name == "02_persona_space":
        assert "default persona: assistant" in text
        images = sum(
            "image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", [])
        )
        assert images == 3
    elif dynamics:
        assert "dynamics entries: region_names, transition_matrix" in text
        assert "not computed" not in text
    else:
        assert "dynamics not computed" in text
