"""The lesson notebook runs top to bottom (on the tiny recipe), so it never rots."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, TINY_RECIPE, copy_tiny_data

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = ROOT / "notebooks" / "lesson.ipynb"


@pytest.mark.slow
def test_the_lesson_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_tiny_data(tmp_path)
    shutil.copy(FIXTURES / "tiny.yaml", tmp_path / "tiny.yaml")
    monkeypatch.setenv("GPTF_ROOT", str(tmp_path))
    monkeypatch.setenv("GPTF_LESSON_RECIPE", str(TINY_RECIPE))
    monkeypatch.setenv(
        "GPTF_LESSON_OVERRIDES", f"output_dir={tmp_path / 'run'} tokenizer.path={tmp_path / 'tokenizer.json'}"
    )
    monkeypatch.setenv("GPTF_LESSON_ABLATION_STEPS", "4")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "run folder:" in outputs
    assert "用户: 什么是注意力机制？" in outputs
    assert "final val loss" in outputs
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "ablations" / "lesson").is_dir()
