"""Fixtures the bad-input tables share."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# the table modules import `harness` (and `tolerances`) as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_sessionfinish(session):
    """With MINIGPT_PTV2_CENSUS=FILE, write every row this session checked to FILE (census.py)."""
    out = os.environ.get("MINIGPT_PTV2_CENSUS")
    if out:
        import harness
        Path(out).write_text(json.dumps(sorted(set(harness.CHECKED))))
