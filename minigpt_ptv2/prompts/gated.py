"""The third deep style: a zero-init gated prefix (LLaMA-Adapter; PEFT's adaption prompt).

Why a gate. A K/V prefix is read under ONE softmax with the tokens' own keys, so whatever it
holds, it takes attention away from them: a prefix of zeros scores q . 0 = 0 against every
query, and exp(0) = 1 is an ordinary weight, so each real token's attention to the text shrinks
by Z / (Z + P) (Z: the sum of exp(score) over its real keys; pitfall 4). No value of a joined
prefix gives back the frozen model (only keys at minus infinity would, and those cannot train).
A trained prompt therefore starts by damaging the model it tunes.

LLaMA-Adapter reads the prefix apart instead (pitfall 10). Per layer, with g a learnable gate:

    tokens' read   softmax(q K^T / sqrt(d)) V                      [B, H, N, d]  untouched
    prefix read    g * softmax(q K_p^T / sqrt(d)) V_p              [B, H, N, d]  its own softmax
    context        tokens' read + prefix read

The tokens' softmax never sees the prefix keys, so nothing is taken from them, and with g = 0
the prefix read is exactly zero, whatever the prefix holds. A fresh gated prefix IS the frozen
model, bit for bit (tests/test_gated.py: torch.equal on both attention paths). Training opens
the gate: at g = 0 the prefix rows get no gradient (their read is multiplied by 0), but g does
(d context / d g = softmax(q K_p^T / sqrt(d)) V_p, which is not 0), so the first steps move g
off 0 and the rows start learning after it.

What this method stores: per adapted layer P hidden-size rows h [P, D] and one gate g, as the
paper and PEFT do, not keys and values. The layer turns rows into keys and values through the
layer contract's `project_kv` (core/layer.py), its attention's bare projection, reached through
the `layers` the model hands kv_prefix (core/prompt_method.py):

    K_p = h W_K + b_K,  V_p = h W_V + b_V     [1, H_kv, P, d]   (then expanded over B)

no norm first (not RMSNorm, not ln_1: the rows live in the projection's input space, not in the
residual stream) and no RoPE on the keys (they carry no position; the queries are rotated as
always, so a prefix key scores like a key at distance 0). That is exactly what PEFT computes, so
its adapter files hold our parameters as they are (interop/peft_layout.py): export and import
are a copy, both ways, and training follows the same path as PEFT's. Storing K and V directly
would have been more expressive (like KVPrefix over DeepPrompt, bridge.py) but no longer PEFT's
method, and its adapters could not be written back. The price of rows: one projection of P rows
per adapted layer per forward, against the B*N rows every layer projects anyway.

Where the prefix read joins (`join`, core/prefix.py): "context" adds it to the tokens' context
before the output projection, so W_O maps both (the paper; PEFT on LLaMA). PEFT on GPT-2 adds it
AFTER c_proj, unprojected (its `o_proj_layer` is None there): join="output" reproduces that, as
PEFT's GPT-2 convention. (In train mode GPT-2's residual dropout then also drops the prefix read;
PEFT adds it after that dropout. Eval, where the two are compared, has no dropout.)

Only the top `adapter_layers` layers get a prefix (PEFT's adapter_layers; the paper adapts the
top 30 of LLaMA-7B's 32): kv_prefix answers None for the layers below.

The gate is one number per layer, as in PEFT (the paper's later version gates per head). Nothing
bounds it: PEFT and the paper leave it free, so it can go negative or past 1, and the prefix read
is then not a share of attention but a correction added to it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.capture import record
from ..core.prefix import JOINS, Prefix
from ..core.prompt_method import PromptMethod
from ..errors import InputError


class GatedPrefix(PromptMethod):
    """Per adapted layer: rows [P, D] and a gate starting at 0 (adaption_prompt, adaption_gate)."""

    kind = "gated"

    def __init__(self, config, num_virtual: int, adapter_layers: int | None = None, join: str = "context",
                 init_std: float = 1.0, positions: str = "real"):
        super().__init__(config, num_virtual, positions)
        L = config.num_hidden_layers
        if adapter_layers is None:
            adapter_layers = L
        if isinstance(adapter_layers, bool) or not isinstance(adapter_layers, int) or not 1 <= adapter_layers <= L:
            raise InputError(f"adapter_layers must be an int in 1..L={L} (the top layers that get a prefix), "
                             f"got {adapter_layers!r}")
        if join not in JOINS:
            raise InputError(f"join must be one of {JOINS} (where the gated read joins: before the output "
                             f"projection, or after it as PEFT does on GPT-2), got {join!r}")
        self.adapter_layers = adapter_layers  # the top layers L - adapter_layers .. L - 1 get a prefix
        self.join = join
        # PEFT draws its adaption prompt from a standard normal, as the official LLaMA-Adapter code does.
        self.rows = nn.Parameter(torch.randn(adapter_layers, num_virtual, config.hidden_size) * init_std)  # [L_a, P, D]
        self.gates = nn.Parameter(torch.zeros(adapter_layers))  # [L_a]: zero-init, the whole point

    def first_layer(self) -> int:
        """The index of the lowest layer with a prefix."""
        return self.config.num_hidden_layers - self.adapter_layers

    def kv_prefix(self, batch_size: int, layers=None) -> list[Prefix | None]:
        """L entries: None below the adapted layers, then each layer's Prefix(K, V, gate), its K and V
        the layer's own projection of this method's rows (layer.project_kv), expanded over B."""
        if layers is None:
            raise InputError(f"{type(self).__name__} makes its keys with the model's layers (their projection "
                             f"of its rows): call kv_prefix(B, layers=model.layers)")
        if len(layers) != self.config.num_hidden_layers:
            raise InputError(f"{type(self).__name__} was built for L={self.config.num_hidden_layers} layers, "
                             f"handed {len(layers)}")
        rows = record("gated", "rows", self.rows)  # [L_a, P, D]
        gates = record("gated", "gates", self.gates)  # [L_a]
        first, B = self.first_layer(), batch_size
        out = [None] * first
        for j, layer in enumerate(layers[first:]):
            self.check_tensor(rows, next(layer.parameters()), f"rows of layer {first + j}")
            k, v = layer.project_kv(rows[j][None])  # [1, H_kv, P, d] each: no norm, no RoPE
            out.append(Prefix(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1),  # [B, H_kv, P, d] each, views
                              gate=gates[j:j + 1], join=self.join))  # gate [1]
        return out

    @torch.no_grad()
    def to_peft(self, model=None) -> dict:
        """ADAPTION_PROMPT: each adapted layer's rows [P, D] and gate, PEFT's adaption_prompt and
        adaption_gate as they are. Refused if kv_prefix hands the layers anything else than what
        these rows and gates make (a subclass that changes the read would otherwise lose it)."""
        if model is None:
            raise InputError(f"exporting a {type(self).__name__} needs the model it runs in (where PEFT "
                             f"keeps each layer's prompt, and how it reads it)")
        self.only_answers("kv_prefix", model.layers)
        handed, made = self.kv_prefix(1, layers=model.layers), GatedPrefix.kv_prefix(self, 1, layers=model.layers)
        for i, (h, m) in enumerate(zip(handed, made)):
            same = (h is None and m is None) or (h is not None and m is not None and type(h) is Prefix and all(
                _same(getattr(h, f), getattr(m, f)) for f in ("k", "v", "gate", "keep", "join")))
            if not same:
                raise InputError(f"{type(self).__name__} hands layer {i} another prefix than its rows and gates "
                                 f"make: PEFT's adaption prompt holds rows and gates only")
        return {"peft_type": "ADAPTION_PROMPT", "adaption_prompt": self.rows.detach(),  # [L_a, P, D]
                "adaption_gate": self.gates.detach(), "join": self.join}  # [L_a]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, adapter_layers={self.adapter_layers}, join={self.join!r}"


def _same(a, b) -> bool:
    return torch.equal(a, b) if torch.is_tensor(a) and torch.is_tensor(b) else a is None and b is None or a == b
