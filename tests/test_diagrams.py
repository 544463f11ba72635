"""The pictures of the ideas (minigpt_ptv2/viz/diagrams.py): each draws, no training, into any
folder; the `figures` command writes them (so figures/ holds only what it writes); the copies
checked in under figures/ are what the code draws now (same size in pixels: a changed layout that
was not redrawn fails); and each sits in the lesson that teaches its idea and in the README."""
from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from minigpt_ptv2.cli import figures as figures_cmd
from minigpt_ptv2.viz.diagrams import DIAGRAMS, save_diagrams

ROOT = Path(__file__).resolve().parent.parent
WHERE = {"deep_styles.png": ("07", "08"), "bridge.png": ("09",), "kv_cache.png": ("05", "12"),
         "grouped_heads.png": ("15",)}  # the lessons that teach each idea


def test_each_diagram_draws_and_matches_the_checked_in_copy(tmp_path):
    written = save_diagrams(tmp_path / "new")  # a folder it creates
    assert [p.name for p in written] == list(DIAGRAMS) == list(WHERE)
    assert set(DIAGRAMS) <= set(figures_cmd.FILES), "the figures command must write every diagram"
    for path in written:
        drawn, kept = imread(path), imread(ROOT / "figures" / path.name)
        assert drawn.shape[1] >= 700, f"{path.name} is too small to read: {drawn.shape}"
        assert drawn.shape == kept.shape, (f"figures/{path.name} is not what the code draws now: "
                                           f"run `python -m minigpt_ptv2 figures --out figures --overwrite`")
        assert drawn[..., :3].std() > 0.05, f"{path.name} is blank"


@pytest.mark.parametrize("name", list(WHERE))
def test_each_diagram_sits_in_its_lessons_and_the_readme(name):
    for number in WHERE[name]:
        lesson = next((ROOT / "lessons").glob(f"{number}_*.py"))
        # the lesson's markdown, as its notebook in lessons/notebooks/ resolves it
        assert f"](../../figures/{name})" in lesson.read_text(), f"lesson {number} does not show figures/{name}"
    assert f"](figures/{name})" in (ROOT / "README.md").read_text(), f"the README does not show figures/{name}"
