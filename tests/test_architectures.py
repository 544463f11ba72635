"""Every decoder in the architectures table (tests/architectures.py) against transformers' own
model and PEFT's prefix tuning on it, saved with random weights: logits, greedy generation with
left padding, the KV cache, the save_pretrained round trip. A new registry line with its table
line is tested here with nothing else to write; Qwen2 and Mistral, small subclasses of the LLaMA
decoder with q/k/v biases and sliding windows, are proven by these tests alone."""
from __future__ import annotations

import json

import pytest
import torch

from architectures import ARCHS, DECODERS, check_complete, hf_folder
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import ARCHITECTURES, architecture, load_pretrained, save_pretrained
from minigpt_ptv2.prompts import KVPrefix

transformers = pytest.importorskip("transformers")
import reference as R  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# Ours vs transformers on these tiny models (D=40, L=3, activations of a few units): the same
# float32 arithmetic through other kernels and in another order (SDPA vs our masked softmax, a
# fused QKV product vs three), so a few ulps per layer; observed about 2e-6. 1e-5 leaves 5x
# headroom and sits far below what a wrong mask or bias moves the logits by (1e-2 and more).
LOGITS = 1e-5
NEW, P = 12, 3
IDS = torch.randint(3, 120, (3, 10), generator=torch.Generator().manual_seed(5))  # [B, N]: inside every tiny vocabulary
MASK = torch.tensor([[1] * 10, [0] * 3 + [1] * 7, [0] * 6 + [1] * 4])  # rows 1, 2 left-padded
LEFT = IDS * MASK  # pads are token 0


@pytest.fixture(scope="module", params=DECODERS)
def pair(request, tmp_path_factory):
    """(ours, transformers') on one folder of random weights (std 0.3: greedy text wanders)."""
    path = hf_folder(request.param, tmp_path_factory.mktemp(request.param), seed=3, initializer_range=0.3)
    with R._quiet():
        hf = getattr(transformers, ARCHS[request.param].hf_class).from_pretrained(path).eval()
    return load_pretrained(path), hf, path


def test_every_registered_architecture_has_a_table_line_and_one_missing_fails_loudly():
    check_complete()
    with pytest.raises(RuntimeError, match=r"ARCHS has no line for \['phi'\]"):
        check_complete({**ARCHITECTURES, "phi": "phi"})
    assert all(architecture(name).hf_architecture == arch.hf_class for name, arch in ARCHS.items())


def test_logits_equal_transformers_with_left_padding(pair):
    ours, hf, _ = pair
    pos = (MASK.cumsum(-1) - 1).clamp(min=0)  # [B, N]: real tokens count from 0, as generate does
    with torch.no_grad():
        a = ours(LEFT, attention_mask=MASK, position_ids=pos).logits  # [B, N, V]
        b = hf(input_ids=LEFT, attention_mask=MASK, position_ids=pos).logits
    real = MASK.bool()
    assert (a[real] - b[real]).abs().max().item() <= LOGITS
    with torch.no_grad():  # the comparison can fail: a one-token change moves the logits
        assert (ours(LEFT.roll(1, 1), attention_mask=MASK).logits[real] - b[real]).abs().max() > 1e-2


def test_a_sliding_window_is_applied_where_the_config_has_one(pair):
    ours, _, path = pair
    windows = [layer.sliding_window for layer in ours.layers]
    cfg = ours.config
    expected = [cfg.layer_window(i) for i in range(cfg.num_hidden_layers)] if hasattr(cfg, "layer_window") else None
    assert windows == (expected or [None] * cfg.num_hidden_layers)
    if not any(windows):
        pytest.skip(f"{cfg.model_type}'s table config has no sliding window")
    assert max(w for w in windows if w) < IDS.shape[1]  # the window is shorter than the text: it matters
    unbounded = load_pretrained(path)
    for layer in unbounded.layers:
        layer.sliding_window = None
    with torch.no_grad():
        assert (ours(IDS).logits - unbounded(IDS).logits).abs().max() > 1e-3


def test_greedy_generation_equals_transformers_with_left_padding_and_the_cache_equals_recomputation(pair):
    ours, hf, _ = pair
    with torch.no_grad():
        want = hf.generate(input_ids=LEFT, attention_mask=MASK, max_new_tokens=NEW, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    got = ours.generate(LEFT, NEW, attention_mask=MASK, eos_token_id=None)  # [B, N + NEW]
    assert torch.equal(got, want), f"ours {got[:, 10:].tolist()}\nHF   {want[:, 10:].tolist()}"
    assert len(set(got[0, 10:].tolist())) > 4  # varied text, so agreement is informative
    assert torch.equal(got, ours.generate(LEFT, NEW, attention_mask=MASK, eos_token_id=None, use_cache=False))


def test_save_pretrained_round_trip_opens_in_transformers_with_our_values(pair, tmp_path):
    ours, _, _ = pair
    changed = load_pretrained(pair[2])
    with torch.no_grad():  # every weight moved, as fine-tuning moves it: the folder must carry ours
        for p in changed.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    out = save_pretrained(changed, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["model_type"] == ours.config.model_type
    with R._quiet():
        theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(theirs).__name__ == ARCHS[ours.config.model_type].hf_class
    with torch.no_grad():
        a, b = changed(IDS).logits, theirs(input_ids=IDS).logits
        assert (a - b).abs().max().item() <= LOGITS
        assert (a - ours(IDS).logits).abs().max() > 1e-3
    again = load_pretrained(out)
    assert again.config == changed.config
    assert all(torch.equal(x, y) for x, y in zip(again.state_dict().values(), changed.state_dict().values()))


def test_kv_prefix_equals_peft_prefix_tuning_logits_and_greedy_generation_with_left_padding(pair):
    ours, _, path = pair
    c = ours.config
    method = KVPrefix(c, P, positions="shifted", rotate_keys=False)  # PEFT's conventions
    with torch.no_grad():
        method.embedding.weight.copy_(torch.randn(P, c.prefix_width, generator=torch.Generator().manual_seed(8)))
    with R._quiet():
        base = getattr(transformers, ARCHS[c.model_type].hf_class).from_pretrained(path).eval()
    pm = R.peft_prefix_model(base, P, method.embedding.weight.detach().clone())
    ours.attach(method.eval())
    try:
        with torch.no_grad():
            got = ours(LEFT, attention_mask=MASK).logits  # [B, N, V]
        real = MASK.bool()
        assert (got[real] - R.run_peft_lm_logits(pm, LEFT, MASK)[real]).abs().max().item() <= LOGITS
        out = ours.generate(LEFT, NEW, attention_mask=MASK, eos_token_id=None)
    finally:
        ours.detach_prompt()
    assert torch.equal(out, R.peft_generate(pm, LEFT, MASK, max_new_tokens=NEW))
    with torch.no_grad():
        assert (got[real] - ours(LEFT, attention_mask=MASK).logits[real]).abs().max() > 1e-2  # the prefix acts


def test_qwen2_has_no_peft_adaption_prompt_and_its_window_settings_are_checked():
    cfg = ARCHS["qwen2"].tiny
    with pytest.raises(InputError, match="no Qwen2 wrapper"):
        architecture("qwen2").peft_adaption_prompt(cfg)
    with pytest.raises(InputError, match="layer_types names 'sliding_attention' but use_sliding_window is false"):
        cfg.replace(use_sliding_window=False)
    with pytest.raises(InputError, match="for each of the 3 layers"):
        cfg.replace(layer_types=("full_attention",) * 2)
    with pytest.raises(InputError, match="qwen2 has no attention_bias or mlp_bias"):
        cfg.replace(attention_bias=True)
