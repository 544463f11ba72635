"""Fixtures the bad-input tables share."""
from __future__ import annotations

import sys
from pathlib import Path

# the table modules import `harness` (and `tolerances`) as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))
