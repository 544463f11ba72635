"""The executed notebooks in lessons/notebooks/ are the lessons as they are: the same cells as the
.py sources, every code cell run in order with no error, each section's output under its own cell,
figures as images. Rebuild with `python lessons/make.py notebooks` after changing a lesson."""
from __future__ import annotations

import json
import sys

import pytest

from trace_helpers import LESSONS

sys.path.insert(0, str(LESSONS))
import percent  # noqa: E402  (the lessons' cell format)

ALL = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = LESSONS / "notebooks"


def _notebook(path):
    nb_path = NOTEBOOKS / (path.stem + ".ipynb")
    assert nb_path.exists(), f"no {nb_path.relative_to(LESSONS.parent)}: run `python lessons/make.py notebooks`"
    return json.loads(nb_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_has_the_cells_of_its_source(path):
    nb = _notebook(path)
    assert percent.sources(nb) == percent.cells(path), (
        f"{path.name} changed since its notebook was built: run `python lessons/make.py notebooks {path.name[:2]}`")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_was_run_in_order_with_outputs_under_the_sections(path):
    nb = _notebook(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "not run top to bottom once"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], "a cell raised"
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings or errors on stderr"
    with_output = sum(bool(c["outputs"]) for c in code)
    assert with_output >= max(3, (len(code) - 1) // 2), (
        f"only {with_output} of {len(code)} code cells show output: sections must run in their own cells")
    source = path.read_text()
    if "save_figure(" in source:
        assert any("image/png" in o.get("data", {}) for o in outputs), "the lesson's figures do not show inline"
    assert nb["metadata"]["minigpt_ptv2"]["source"] == path.name
    # the lesson ran in full mode, as learners are told to run it, within a minute (on 2 cores)
    assert nb["metadata"]["minigpt_ptv2"]["seconds"] <= 60


def test_percent_cells_read_markdown_and_code():
    from pathlib import Path
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "x.py"
        f.write_text("# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nimport os\n\n\nx = 1\n\n# %% [markdown]\n# end\n")
        assert percent.cells(f) == [("markdown", "# Title\n\ntext"), ("code", "import os\n\n\nx = 1"),
                                    ("markdown", "end")]
        f.write_text("# %% [markdown]\nnot a comment\n")
        with pytest.raises(ValueError, match="x.py:2: a markdown cell's lines start with '# '"):
            percent.cells(f)
