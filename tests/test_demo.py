"""The README's first command runs this demo: it must finish, agree with the reference, and
leave its checkpoint and figure behind (quick sizes here)."""
from __future__ import annotations

import json

import pytest

from minigpt_ptv2.cli import main


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path, capsys, minilm_dir):
    pytest.importorskip("transformers")
    rc = main(["demo", "--quick", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "tolerance 1e-5: OK" in text  # step 2: equivalence with transformers
    assert "inject [3, 32, 384]" in text and "slice [3, 12, 384]" in text  # step 3: deep walk (P=20, N=12)
    assert "[3, 12, 20, 32] + k [3, 12, 12, 32] -> [3, 12, 32, 32]" in text  # step 3: K/V walk
    assert "(OK, tolerance 1e-5)" in text  # step 4: the bridge
    meta = json.loads((tmp_path / "sst2_prefix" / "checkpoint.json").read_text())
    assert meta["method"] == "prefix" and meta["P"] == 16
    png = (tmp_path / "prefix_attention.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
