"""Where a lesson's figure goes: to a folder when one is named, inline in a notebook.

Lessons build a `matplotlib.figure.Figure` (no pyplot, so no backend to pick and no window) and
hand it to `save_figure`. Run as a script, the figure is written to the folder named by the
environment variable MINIGPT_PTV2_FIGURES, if set, and a line `saved <path>` says where (the
lessons-run test checks each announced file); without the variable nothing is written. Run in
a notebook (Jupyter, VS Code, any IPython kernel), the figure is also shown under the cell, as a
PNG: nothing to configure, no `%matplotlib inline`, since the figure is drawn here, not by a
pyplot backend.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import InputError

ENV = "MINIGPT_PTV2_FIGURES"


def figures_dir() -> Path | None:
    """The folder named by MINIGPT_PTV2_FIGURES, or None when figures are not saved."""
    out = os.environ.get(ENV)
    return Path(out) if out else None


DPI = 160  # sharp enough to read 8-point cell labels when the figure is shown at full width


def save_figure(fig, name: str, dpi: int = DPI) -> Path | None:
    """Save `fig` as `name` in `figures_dir()` (if set) and show it in a notebook.

    name: a file name such as "08_once_vs_per_row.png", not a path. Returns the saved path, or
    None when no folder is named.
    """
    if not name or Path(name).name != name:
        raise InputError(f"name must be a plain file name like 'figure.png', got {name!r}")
    out = figures_dir()
    path = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / name
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        print(f"saved {path}")
    if "ipykernel" in sys.modules:  # a notebook: show it under the cell
        import io

        from IPython.display import Image, display
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        display(Image(data=buf.getvalue()))
    return path
