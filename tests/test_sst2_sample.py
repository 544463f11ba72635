"""The SST-2 sample shipped in the package: the counts SOURCE.md states, real SST-2 rows drawn by
the rule SOURCE.md states, and files that a built wheel really contains."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from minigpt_ptv2.data import data_dir, load_sst2_sample
from minigpt_ptv2.data.sample import SAMPLE_DIR, sample_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "make_sst2_sample.py"


def documented_counts() -> dict:
    """{split: (rows, negative, positive)} from SOURCE.md's table."""
    text = (SAMPLE_DIR / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)\.tsv` \| (\d+) \| (\d+) \| (\d+) \|", text, flags=re.M)
    return {split: tuple(int(n) for n in counts) for split, *counts in rows}


def make_sample_module():
    spec = importlib.util.spec_from_file_location("make_sst2_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_sst2() -> Path:
    """The full SST-2 folder of the data folder; the checks against it skip when there is none."""
    try:
        folder = data_dir() / "sst2"
    except FileNotFoundError as e:
        pytest.skip(str(e))
    if not (folder / "train.tsv").is_file() or not (folder / "dev.tsv").is_file():
        pytest.skip(f"no SST-2 files in {folder}")
    return folder


@pytest.mark.parametrize("split", ["train", "dev"])
def test_sample_loads_with_the_counts_source_md_states(split):
    rows = load_sst2_sample(split)
    labels = Counter(label for _, label in rows)
    assert documented_counts()[split] == (len(rows), labels[0], labels[1])
    assert labels[0] > 0 and labels[1] > 0 and set(labels) == {0, 1}
    assert all(text and text == text.strip() for text, _ in rows)
    assert load_sst2_sample(split, max_examples=5) == rows[:5]


def test_source_md_attributes_the_data_and_states_the_rule():
    text = (SAMPLE_DIR / "SOURCE.md").read_text(encoding="utf-8")
    for needle in ("Socher", "Pang", "Lee", "rottentomatoes.com", "GLUE", "Wang", "SHA-256",
                   "make_sst2_sample.py", "Licence", "MIT licence covers its code, not these rows"):
        assert needle in text, needle
    assert set(documented_counts()) == {"train", "dev"}


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="valid splits are train, dev"):
        sample_file("test")


def test_every_sample_row_is_a_real_sst2_line(real_sst2):
    script = make_sample_module()
    for split in ("train", "dev"):
        real = set(script.read_lines(real_sst2 / f"{split}.tsv"))
        shipped = script.read_lines(SAMPLE_DIR / f"{split}.tsv")
        missing = [line for line in shipped if line not in real]
        assert not missing, f"{split}: {len(missing)} rows not in {real_sst2}, e.g. {missing[:2]}"
        assert len(set(shipped)) == len(shipped)


def test_the_rule_in_source_md_redraws_the_shipped_files(real_sst2):
    script = make_sample_module()
    assert script.read_lines(SAMPLE_DIR / "train.tsv") == script.draw_train(script.read_lines(real_sst2 / "train.tsv"))
    assert script.read_lines(SAMPLE_DIR / "dev.tsv") == script.read_lines(real_sst2 / "dev.tsv")


@pytest.mark.slow
def test_a_built_wheel_ships_the_sample(tmp_path):
    """Build the wheel from a copy of the project (the checkout stays untouched) and look inside:
    the SST-2 sample, and the course (lessons, executed notebooks, answers) for pip users."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    ignore = lambda d, names: [n for n in names if n == "__pycache__"]  # noqa: E731
    for folder in ("minigpt_ptv2", "lessons"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    code = "import setuptools.build_meta as b, sys; print(b.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / done.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("train.tsv", "dev.tsv", "SOURCE.md"):
        assert f"minigpt_ptv2/data/sst2_sample/{name}" in names
    assert "minigpt_ptv2/data/sample.py" in names
    lessons = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))
    for name in lessons:
        assert f"minigpt_ptv2/lessons/{name}" in names
        assert f"minigpt_ptv2/lessons/notebooks/{name[:-3]}.ipynb" in names
        assert f"minigpt_ptv2/lessons/solutions/{name[:2]}_solutions.py" in names
    assert "minigpt_ptv2/lessons/README.md" in names
