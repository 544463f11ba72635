"""The executed notebooks in lessons/notebooks/ are the lessons as they are: the same cells as the
.py sources, every code cell run in order with no error, each section's output under its own cell,
figures as images, and run on what a learner has (the SST-2 sample and the MiniLM shipped with
the package, no data folder). Rebuild with `python lessons/make.py notebooks` after changing a
lesson."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from trace_helpers import LESSONS

sys.path.insert(0, str(LESSONS))
import make  # noqa: E402  (what a learner's run is)
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
    # the lesson can run in full within a minute on 2 cores: its kernel asked for at most the 120 s
    # of CPU two cores give in a minute (CPU time, since wall time on a shared machine also measures
    # the others' work; `make.py times` measures the wall time itself, on a quiet machine)
    meta = nb["metadata"]["minigpt_ptv2"]
    used = meta["cpu_seconds"] if meta.get("cpu_seconds") is not None else meta["seconds"]
    assert used <= 2 * 60, f"{path.name} took {used} s of CPU (wall {meta['seconds']} s): more than 2 cores give in a minute"


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


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_ran_on_what_a_learner_has(path):
    """A learner's first run has no data folder: a committed notebook that used one shows numbers
    the learner will not see. Both what make.py recorded and what the lesson printed must say so."""
    from minigpt_ptv2.data.sample import FROM_DATA_FOLDER
    nb = _notebook(path)
    used = nb["metadata"]["minigpt_ptv2"].get("data")
    assert used == make.SHIPPED, (f"{path.name}'s notebook ran with data={used!r}: rebuild it without a data folder, "
                                  f"`python lessons/make.py notebooks {path.name[:2]}`")
    printed = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                      for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert FROM_DATA_FOLDER not in printed, f"{path.name}'s notebook printed {FROM_DATA_FOLDER!r}"


def test_a_learners_run_ignores_a_data_folder_beside_the_checkout(tmp_path, monkeypatch):
    """make.py's learner environment (MINIGPT_PTV2_DATA=none) hides a data folder that would
    otherwise be found beside the checkout; a folder named on purpose is still used."""
    from minigpt_ptv2.data import paths, sst2_or_sample
    from minigpt_ptv2.data.sample import FROM_DATA_FOLDER, FROM_SAMPLE
    from minigpt_ptv2.errors import MissingFileError
    (tmp_path / "sst2").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    monkeypatch.setattr(paths, "_beside_checkout", lambda: [tmp_path])
    monkeypatch.delenv(paths.ENV, raising=False)
    assert sst2_or_sample(None, 1, 1)[2] == FROM_DATA_FOLDER  # found beside the checkout
    monkeypatch.setenv(paths.ENV, make.learner_env()[paths.ENV])
    assert sst2_or_sample(None, 1, 1)[2] == FROM_SAMPLE
    with pytest.raises(MissingFileError, match="MINIGPT_PTV2_DATA=none"):
        paths.data_dir()
    assert paths.data_dir(tmp_path) == tmp_path and make.learner_env(tmp_path)[paths.ENV] == str(tmp_path)


def test_times_go_into_the_reading_order_table_and_the_total(tmp_path):
    readme = tmp_path / "README.md"
    text = (LESSONS / "README.md").read_text()
    readme.write_text(text)
    total = make.write_times({"01": 12.4, "10": 61.6}, 0.4, "lesson 05 building the decoder", readme)
    written = readme.read_text()
    rows = dict(re.findall(r"^\| (\d\d) \| `[^`]+` \| .+? \| (\d+) s \|$", written, flags=re.M))
    assert rows["01"] == "12" and rows["10"] == "62" and len(rows) == len(ALL)
    assert total in written and f"**{sum(map(int, rows.values())):,} s for the whole course**" in total
    assert total.endswith("load average 0.4, lesson 05 building the decoder)")
    assert make.write_times({"01": 9.0}, 5.25, "the decoder already built", readme).endswith(
        "load average 5.2, the decoder already built)")
    assert make.write_times({"01": 9.0}, 0.5, "", readme).endswith("load average 0.5)")
    changed = [new for old, new in zip(text.splitlines(), written.splitlines()) if old != new]
    assert len(changed) <= 3 and all("| 01 |" in x or "| 10 |" in x or "whole course" in x for x in changed), changed
    with pytest.raises(SystemExit, match="no reading-order row for lesson 99"):
        make.write_times({"99": 1.0}, 0.4, "", readme)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_cpu_seconds_reads_a_running_process():
    import os
    import time
    start = make.cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:  # spend 50 ms of CPU
        pass
    assert make.cpu_seconds(os.getpid()) >= start + 0.03
    assert make.cpu_seconds(2 ** 22 + 7) is None  # no such process


def test_times_name_the_lesson_that_built_the_decoder(tmp_path, monkeypatch):
    """A first run's lesson 05 pays for pretraining the decoder; the total's sentence says so, and
    says "already built" when runs/decoder was there before, or nothing when no lesson built it."""
    import subprocess
    decoder = tmp_path / "runs" / "decoder"
    monkeypatch.setattr(make, "DECODER", decoder)
    monkeypatch.setattr(make, "ROOT", tmp_path)
    monkeypatch.setattr(make, "lesson_files", lambda numbers=None: [tmp_path / f"{n}_x.py" for n in numbers])

    def run(cmd, **kw):
        if Path(cmd[-1]).name.startswith("05"):
            decoder.mkdir(parents=True, exist_ok=True)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(make.subprocess, "run", run)
    assert make.measure_times(["01", "04"])[2] == ""
    assert make.measure_times(["04", "05", "12"])[2] == "lesson 05 building the decoder"
    assert make.measure_times(["05", "12"])[2] == "the decoder already built"
