"""A seam that meets a prompt method it does not know refuses it by name, never falls through.

A method says what it is through the written interface (core/prompt_method.py: its `kind`, the
Prefix objects its hooks hand over, `to_peft`); nothing asks `isinstance(method, KVPrefix)`. So a
subclass of a known method that adds something the seam cannot carry is refused where it would
otherwise lose it silently: by the layer loop, by PEFT export, by MixedPrompts. And a subclass
whose additions the seam does carry (a scale folded into its values) is exported as it is.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from minigpt_ptv2 import preset
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.core.prefix import Prefix
from minigpt_ptv2.interop import save_adapter
from minigpt_ptv2.interop.peft_layout import PEFT_WEIGHTS
from minigpt_ptv2.models import build
from minigpt_ptv2.prompts import KVPrefix
from minigpt_ptv2.prompts.mixed import MixedPrompts

P = 3


class GatedPair(tuple):
    """(K, V) with a gate attached: how a gate had to be slipped through when a prefix was a bare pair."""
    gate = None


class KVPrefixWithGate(KVPrefix):
    """A KVPrefix that adds a gate per layer, handed over on (K, V) pairs of its own type."""

    def __init__(self, config, num_virtual, **kw):
        super().__init__(config, num_virtual, **kw)
        self.gates = nn.Parameter(torch.full((config.num_hidden_layers,), 0.5))

    def kv_prefix(self, batch_size, layers=None):
        out = []
        for i, (k, v) in enumerate(super().kv_prefix(batch_size)):
            pair = GatedPair((k, v))
            pair.gate = self.gates[i]
            out.append(pair)
        return out


class KVPrefixWithInput(KVPrefix):
    """A KVPrefix that adds a shallow prompt as well: a second hook answered."""

    def __init__(self, config, num_virtual, **kw):
        super().__init__(config, num_virtual, **kw)
        self.extra = nn.Parameter(torch.randn(num_virtual, config.hidden_size))

    def input_prompt(self, batch_size):
        return self.extra[None].expand(batch_size, -1, -1)  # [B, P, D]


class KVPrefixWithScale(KVPrefix):
    """A KVPrefix that adds a learnable scale on its values, folded into what it hands over."""

    def __init__(self, config, num_virtual, **kw):
        super().__init__(config, num_virtual, **kw)
        self.scale = nn.Parameter(torch.tensor(3.0))

    def kv_prefix(self, batch_size, layers=None):
        return [type(p)(p.k, self.scale * p.v) if hasattr(p, "k") else (p[0], self.scale * p[1])
                for p in super().kv_prefix(batch_size)]


class KVPrefixReadApart(KVPrefix):
    """A KVPrefix that hands its prefixes over gated, as core/prefix.py lets a method say: read
    under their own softmax, through a gate of 0.5."""

    def kv_prefix(self, batch_size, layers=None):
        return [p.replace(gate=torch.full((1,), 0.5)) for p in super().kv_prefix(batch_size)]


@pytest.fixture
def gpt2():
    return build(preset("gpt2-tiny")).eval()


def test_export_refuses_a_kv_prefix_that_adds_a_gate(gpt2, tmp_path):
    method = KVPrefixWithGate(gpt2.config, P, positions="shifted")
    with pytest.raises((InputError, TypeError), match="KVPrefixWithGate|GatedPair"):
        save_adapter(tmp_path, method, gpt2)
    assert not (tmp_path / PEFT_WEIGHTS).exists()


def test_export_refuses_a_kv_prefix_whose_prefixes_are_gated(gpt2, tmp_path):
    method = KVPrefixReadApart(gpt2.config, P, positions="shifted")
    ids = torch.randint(1, 100, (2, 5))
    with torch.no_grad():
        plain = gpt2(ids).logits
        gpt2.attach(method)
        try:  # the model reads it as it says, gated: no key joins the tokens' (the cache holds N)
            out = gpt2(ids, use_cache=True)
        finally:
            gpt2.detach_prompt()
    assert out.cache.length == 5 and (out.logits - plain).abs().max() > 1e-3
    with pytest.raises(InputError, match=r"KVPrefixReadApart hands layer 0 more than a Prefix\(K, V\)"):
        save_adapter(tmp_path, method, gpt2)


def test_export_refuses_a_kv_prefix_that_also_answers_another_hook(gpt2, tmp_path):
    method = KVPrefixWithInput(gpt2.config, P, positions="shifted")
    with pytest.raises(InputError, match="KVPrefixWithInput answers input_prompt besides kv_prefix"):
        save_adapter(tmp_path, method, gpt2)


def test_export_writes_what_a_subclass_hands_the_layers(gpt2, tmp_path):
    """The table is laid out from the hook's K and V, so a scale folded into them is exported."""
    from safetensors.torch import load_file
    method = KVPrefixWithScale(gpt2.config, P, positions="shifted")
    save_adapter(tmp_path, method, gpt2)
    table = load_file(tmp_path / PEFT_WEIGHTS)["prompt_embeddings"]  # [P, L*2*D]
    with torch.no_grad():
        want = KVPrefix.from_layer_kv(gpt2.config, torch.stack([torch.stack([k[0], v[0]])
                                                                for k, v in method.kv_prefix(1)]))
    assert torch.equal(table, want.embedding.weight)
    assert not torch.equal(table, method.embedding.weight)  # not the unscaled parameter


def test_the_model_refuses_a_prefix_it_would_read_only_in_part(gpt2):
    gpt2.attach(KVPrefixWithGate(gpt2.config, P))
    try:
        with pytest.raises(TypeError, match="GatedPair"):
            gpt2(torch.randint(1, 100, (2, 5)))
    finally:
        gpt2.detach_prompt()


@pytest.mark.parametrize("cls", [KVPrefixWithGate, KVPrefixReadApart, KVPrefixWithInput])
def test_mixed_prompts_refuse_a_member_handing_over_what_they_do_not_gather(gpt2, cls):
    cfg = gpt2.config
    mixed = MixedPrompts(cfg, {"plain": KVPrefix(cfg, P), "more": cls(cfg, P)}).use_rows(["plain", "more"])
    gpt2.attach(mixed)
    try:
        with pytest.raises(InputError, match=rf"member 'more' \({cls.__name__}"):
            gpt2(torch.randint(1, 100, (2, 5)))
    finally:
        gpt2.detach_prompt()


def test_export_refuses_a_gated_prefix_whose_read_its_rows_and_gates_do_not_make(gpt2, tmp_path):
    from minigpt_ptv2.prompts import GatedPrefix

    class GatedWithScale(GatedPrefix):  # a scale on the values: PEFT's adaption prompt holds rows and gates only
        def kv_prefix(self, batch_size, layers=None):
            return [p if p is None else p.replace(v=2 * p.v) for p in super().kv_prefix(batch_size, layers)]

    with pytest.raises(InputError, match="GatedWithScale hands layer 0 another prefix than its rows and gates make"):
        save_adapter(tmp_path, GatedWithScale(gpt2.config, P, join="output"), gpt2)
    save_adapter(tmp_path, GatedPrefix(gpt2.config, P, join="output"), gpt2)  # the method itself is written
    assert (tmp_path / PEFT_WEIGHTS).exists()


# Every field of Prefix besides K and V, read from the dataclass: a field added later is enrolled here.
EXTRA_FIELDS = [f.name for f in dataclasses.fields(Prefix) if f.name not in ("k", "v")]


def off_default(p: Prefix, name: str) -> Prefix:
    """p with field `name` set to something other than its default, whatever the field holds."""
    default = {f.name: f.default for f in dataclasses.fields(Prefix)}[name]
    return p.replace(**{name: torch.ones(1) if default is None else f"{default}-other"})


class KVPrefixWithField(KVPrefix):
    """A KVPrefix handing over prefixes with one more field set (the field named by `field`)."""
    field = None

    def kv_prefix(self, batch_size, layers=None):
        return [off_default(p, self.field) for p in super().kv_prefix(batch_size)]


@pytest.mark.parametrize("name", EXTRA_FIELDS)
def test_a_prefix_setting_more_than_k_and_v_is_never_taken_as_a_pair(gpt2, tmp_path, name):
    """Unpacking, PEFT export and MixedPrompts ask Prefix.plain, which reads the dataclass's fields,
    so none of them drops a field it was not written for (each listed the fields it knew before)."""
    cfg = gpt2.config
    plain = KVPrefix(cfg, P).kv_prefix(1)[0]
    other = off_default(plain, name)
    assert plain.plain and not other.plain
    with pytest.raises(TypeError, match=f"more than K and V.*{name}"):
        k, v = other
    method = KVPrefixWithField(cfg, P, positions="shifted")
    method.field = name
    with pytest.raises(InputError, match=r"KVPrefixWithField hands layer 0 more than a Prefix\(K, V\)"):
        save_adapter(tmp_path, method, gpt2)
    assert not (tmp_path / PEFT_WEIGHTS).exists()
    mixed = MixedPrompts(cfg, {"plain": KVPrefix(cfg, P), "more": KVPrefixWithField(cfg, P)})
    mixed.members["more"].field = name
    with pytest.raises(InputError, match=r"member 'more' \(KVPrefixWithField\) hands layer 0 a prefix with more"):
        mixed.use_rows(["plain", "more"]).kv_prefix(2)


def test_a_kv_prefix_subclass_must_say_its_inference_form(gpt2):
    """for_inference builds a plain KVPrefix: from a subclass that would drop what the subclass adds."""
    assert type(KVPrefix(gpt2.config, P).for_inference()) is KVPrefix
    with pytest.raises(TypeError, match="KVPrefixWithScale is a subclass of KVPrefix: override for_inference"):
        KVPrefixWithScale(gpt2.config, P).for_inference()
