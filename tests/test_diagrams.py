"""The pictures of the ideas (minigpt_ptv2/viz/diagrams.py): each draws, no training, into any
folder; the copies checked in under figures/ are what the code draws now (same size in pixels:
a changed layout that was not redrawn fails); and each sits in the lesson that teaches its idea
and in the README."""
from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from minigpt_ptv2.viz.diagrams import DIAGRAMS, main, save_diagrams

ROOT = Path(__file__).resolve().parent.parent
WHERE = {"deep_styles.png": ("07", "08"), "bridge.png": ("09",), "kv_cache.png": ("05", "12"),
         "grouped_heads.png": ("15",)}  # the lessons that teach each idea


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The command, run once: every diagram drawn into a fresh folder."""
    out = tmp_path_factory.mktemp("diagrams")
    assert main(["--out", str(out)]) == 0
    return out


def test_each_diagram_draws_and_matches_the_checked_in_copy(drawn, capsys):
    assert sorted(p.name for p in drawn.iterdir()) == sorted(DIAGRAMS) == sorted(WHERE)
    for path in sorted(drawn.iterdir()):
        drawn, kept = imread(path), imread(ROOT / "figures" / path.name)
        assert drawn.shape[1] >= 700, f"{path.name} is too small to read: {drawn.shape}"
        assert drawn.shape == kept.shape, (f"figures/{path.name} is not what the code draws now: "
                                           f"run `python -m minigpt_ptv2.viz.diagrams --out figures`")
        assert drawn[..., :3].std() > 0.05, f"{path.name} is blank"


def test_save_diagrams_creates_its_folder_and_returns_what_it_wrote(tmp_path, monkeypatch):
    monkeypatch.setitem(DIAGRAMS, "bridge.png", DIAGRAMS["bridge.png"])
    for name in [n for n in DIAGRAMS if n != "bridge.png"]:
        monkeypatch.delitem(DIAGRAMS, name)  # one diagram is enough to check the plumbing
    assert save_diagrams(tmp_path / "a" / "b") == [tmp_path / "a" / "b" / "bridge.png"]


@pytest.mark.parametrize("name", list(WHERE))
def test_each_diagram_sits_in_its_lessons_and_the_readme(name):
    for number in WHERE[name]:
        lesson = next((ROOT / "lessons").glob(f"{number}_*.py"))
        # the lesson's markdown, as its notebook in lessons/notebooks/ resolves it
        assert f"](../../figures/{name})" in lesson.read_text(), f"lesson {number} does not show figures/{name}"
    assert f"](figures/{name})" in (ROOT / "README.md").read_text(), f"the README does not show figures/{name}"
