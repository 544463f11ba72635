"""The demo proves equivalence offline against transformers' outputs recorded in the package
(the package itself never imports transformers). This test keeps that record honest: it must
equal what transformers.BertModel computes now, on the same shipped weights, to RECORDED
(tolerances.py): the record was made on one CPU, and another CPU's kernels round differently.

Regenerate after a deliberate change: `python tests/test_reference_outputs.py`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tolerances import RECORDED

RECORD = Path(__file__).resolve().parents[1] / "minigpt_ptv2" / "reference_outputs" / "minilm_bertmodel.safetensors"
SENTENCES = ["the movie was an absolute masterpiece .", "a dull , lifeless mess",
             "it 's a charming and often affecting journey ."]


def live_outputs(model_dir) -> dict:
    from transformers import BertModel

    from minigpt_ptv2.data import WordPiece
    batch = WordPiece.from_model_dir(model_dir).encode(SENTENCES)
    batch["token_type_ids"][0, 4:] = 1  # both token types, as the demo uses
    with torch.no_grad():
        out = BertModel.from_pretrained(model_dir).eval()(**batch)
    return {**batch, "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous()}


def test_recorded_reference_equals_live_transformers(minilm_dir):
    pytest.importorskip("transformers")
    saved, live = load_file(str(RECORD)), live_outputs(minilm_dir)
    assert saved.keys() == live.keys()
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(saved[k], live[k]), k
    for k in ("last_hidden_state", "pooler_output"):
        assert (saved[k] - live[k]).abs().max() <= RECORDED, k  # recorded on one CPU, live on this one


if __name__ == "__main__":
    from minigpt_ptv2.pretrained import default_model_dir
    save_file(live_outputs(default_model_dir()), str(RECORD))
    print(f"wrote {RECORD}")
