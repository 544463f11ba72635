"""Deep hidden-state prompts: one [P, D] prompt per layer, injected, processed, sliced.

At every layer the prompt rows are concatenated in front of the hidden states, the layer runs
on P+N rows, and the P prompt rows are thrown away (see `stack.run_layers`). The rows' own
outputs are never used; only the keys and values the real tokens read from them matter,
which is why this is a special case of a K/V prefix (see `bridge.py`).
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..core.capture import record
from ..core.prompt_method import PromptMethod
from ..errors import InputError
from .bridge import hidden_to_kv
from .from_tokens import check_rows, layer_inputs


class DeepPrompt(PromptMethod):
    kind = "hidden"

    def __init__(self, config, num_virtual: int, reparam: bool = False, hidden: int | None = None,
                 init_std: float = 0.02, positions: str = "real"):
        super().__init__(config, num_virtual, positions)
        P, D, L = num_virtual, config.hidden_size, config.num_hidden_layers
        self.reparam = reparam
        if reparam:  # seed 001's idea: an MLP couples the prompts during training
            hidden = hidden or D
            self.embedding = nn.Embedding(P, D)
            self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, L * D))
        else:
            self.prompts = nn.Parameter(torch.randn(L, P, D) * init_std)  # [L, P, D]

    @torch.no_grad()
    def start_from_text(self, model, text_ids: torch.Tensor, rows: slice) -> None:
        """Every layer's prompt = the rows that layer receives for a real text (from_tokens.py)."""
        if self.reparam:
            super().start_from_text(model, text_ids, rows)  # an MLP's output cannot be set directly
        check_rows(self, text_ids, rows)
        self.prompts.copy_(layer_inputs(model, text_ids, rows))  # [L, P, D]

    def layer_prompts(self) -> torch.Tensor:
        """All layers' prompts at once, [L, P, D] (the MLP runs once, not per batch row)."""
        if not self.reparam:
            return self.prompts
        # Autocast may run the MLP in bf16/fp16: return the prompts in the method's own dtype,
        # as the plain (reparam=False) parameters are.
        flat = self.mlp(self.embedding.weight).to(self.embedding.weight.dtype)  # [P, L*D]
        return rearrange(flat, "p (l d) -> l p d", l=self.config.num_hidden_layers)  # [L, P, D]

    def to_peft(self, model=None) -> dict:
        """PREFIX_TUNING through the bridge (bridge.py): the keys and values `model`'s layers make
        of the prompts, exact for the real tokens."""
        if model is None:
            raise InputError("exporting a deep hidden-state prompt needs the model it runs in "
                             "(its keys and values come from the model's W_K and W_V)")
        self.only_answers("hidden_prompts", model.layers)
        was_training = model.training
        model.eval()
        try:
            return hidden_to_kv(model, self).to_peft(model)
        finally:
            model.train(was_training)

    def hidden_prompts(self, batch_size: int) -> list[torch.Tensor]:
        h = record("deep", "prompts", self.layer_prompts())  # [L, P, D]
        return [h[i].unsqueeze(0).expand(batch_size, -1, -1) for i in range(h.shape[0])]  # L x [B, P, D]
