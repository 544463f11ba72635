"""P-tuning v1 (Liu et al., 2021): input-level prompts produced by a small prompt encoder.

The P virtual embeddings are not trained directly but passed through an MLP or a
bidirectional LSTM + MLP, which couples them and tends to make optimisation smoother. The
encoder runs once per forward pass (the prompts do not depend on the input) and its output is
broadcast over the batch. After training it can be replaced by its output (`to_soft_prompt`).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call

from ..errors import InputError
from ..core.prompt_method import PromptMethod
from .soft import SoftPrompt, input_prompt_to_peft


class PTuningV1(PromptMethod):
    kind = "input"

    def __init__(self, config, num_virtual: int, encoder: str = "mlp", hidden: int | None = None,
                 positions: str = "real"):
        super().__init__(config, num_virtual, positions)
        D = config.hidden_size
        hidden = hidden or D
        if encoder not in ("mlp", "lstm"):
            raise InputError(f"encoder must be 'mlp' or 'lstm', got {encoder!r}")
        self.encoder_type = encoder
        self.embedding = nn.Embedding(num_virtual, D)
        if encoder == "lstm":
            self.lstm = nn.LSTM(D, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, D))
        else:
            self.head = nn.Sequential(nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                      nn.ReLU(), nn.Linear(hidden, D))

    def prompts(self) -> torch.Tensor:
        e = self.embedding.weight  # [P, D]
        if self.encoder_type == "lstm":
            e = self.run_lstm(e)  # [P, 2*hidden]: each prompt sees all others
        # Under autocast the MLP runs in bf16/fp16; hand the prompt over in the method's own
        # dtype (as a plain SoftPrompt would), not in whatever precision autocast picked.
        return self.head(e).to(self.embedding.weight.dtype)  # [P, D]

    def run_lstm(self, e: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over the P embeddings, always in float32 (float64 in a float64 model).

        Not in bf16/fp16, whatever autocast or a `.to(torch.bfloat16)` asks for: oneDNN has no
        bf16 LSTM kernel on CPUs without AVX-512 ("could not create a primitive descriptor for
        the LSTM forward propagation primitive"), and lowering the precision of one sequence of
        P rows saves nothing worth having. Lowered weights are widened for the call only; their
        gradients still reach them.
        """
        dtype = torch.promote_types(e.dtype, torch.float32)
        weights = {n: w.to(dtype) for n, w in self.lstm.named_parameters()}  # the same tensors when fp32
        device = e.device.type
        no_autocast = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) \
            else nullcontext()  # e.g. "meta", where autocast cannot be on anyway
        with no_autocast:
            out = functional_call(self.lstm, weights, (e.to(dtype).unsqueeze(0),))[0]  # [1, P, 2*hidden]
        return out.squeeze(0).to(e.dtype)  # [P, 2*hidden], in the method's own dtype for the head

    def input_prompt(self, batch_size: int) -> torch.Tensor:
        return self.prompts().unsqueeze(0).expand(batch_size, -1, -1)  # [B, P, D]

    def to_peft(self, model=None) -> dict:
        return input_prompt_to_peft(self)  # the encoder's output: exact

    @torch.no_grad()
    def to_soft_prompt(self) -> SoftPrompt:
        """The inference form: keep only the encoder's output, drop the encoder."""
        p = self.prompts()  # [P, D], in the method's own dtype, on its device
        out = SoftPrompt(self.config, self.num_virtual, init=torch.zeros_like(p), positions=self.positions)
        out = out.to(device=p.device, dtype=p.dtype)
        out.weight.copy_(p)  # after .to: a float64 prompt is not rounded through float32 on the way
        out.virtual_keep.copy_(self.virtual_keep)
        return out
