"""core/meta.py shapes_only(): the meta device without the seconds normal_ costs there, and
nothing else changed: a tensor made on a real device inside the block is still initialised."""
from __future__ import annotations

import subprocess
import sys

import torch

from minigpt_ptv2.core.meta import shapes_only


def test_meta_tensors_get_their_shapes_and_real_ones_their_numbers():
    with shapes_only():
        meta = torch.nn.Embedding(30522, 384)  # BERT's word table: no memory, no init
        torch.manual_seed(0)
        real = torch.nn.Embedding(5, 4, device="cpu")
        filled = torch.zeros(1000, device="cpu").normal_()
    assert meta.weight.is_meta and tuple(meta.weight.shape) == (30522, 384)
    torch.manual_seed(0)
    assert torch.equal(real.weight, torch.nn.Embedding(5, 4).weight)  # nn.Embedding's own N(0, 1) init
    assert 0.9 < filled.std().item() < 1.1


def test_a_meta_build_does_not_import_torchs_compiler():
    code = ("import sys\nfrom minigpt_ptv2 import preset\nfrom minigpt_ptv2.core.meta import shapes_only\n"
            "from minigpt_ptv2.models import build\nwith shapes_only():\n    build(preset('bert-base'))\n"
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "normal_ on a meta tensor imports torch's compiler (seconds)"
