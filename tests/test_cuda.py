"""Device handling: models follow `.to(...)` / `device=`, outputs live where the inputs live, and
no tensor is created on a fixed device.

The CPU tests catch the common slip (a `torch.arange(n)` without `device=`) by making the
*default* device "meta" while the model and inputs stay on the CPU: any tensor the code
creates without naming a device then lands on "meta" and the forward pass fails. The layers
themselves are also run entirely on "meta", which catches a device written into the code.
Tests marked `cuda` compare a GPU run with the CPU one and are skipped without a GPU.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2.models.presets import preset
from minigpt_ptv2.models.gpt2 import GPT2Decoder, GPT2Block
from minigpt_ptv2.models.bert import BertEncoder, BertLayer
from minigpt_ptv2.core.masks import build_keep
from minigpt_ptv2.core.prompt_rows import keys_in_front
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.core.stack import run_layers
from tolerances import CPU_VS_CUDA

METHODS = [None, "soft", "ptuning-lstm", "deep-mlp", "prefix-mlp"]


class default_device:
    """torch.set_default_device for the duration of a block, then back to the CPU default."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        torch.set_default_device(self.device)

    def __exit__(self, *exc):
        torch.set_default_device(None)


def padded_batch(vocab, b=2, n=6):
    ids = torch.randint(0, vocab, (b, n))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in row 1
    return ids, mask


def test_default_device_trap_works():
    """The trap itself: a tensor made without device= really does land on meta."""
    with default_device("meta"):
        made = torch.arange(3)
    assert made.device.type == "meta"
    with pytest.raises(RuntimeError):
        with default_device("meta"):
            torch.ones(3) + torch.arange(3, device="cpu")


@pytest.mark.parametrize("method", METHODS)
def test_encoder_creates_no_tensor_on_the_default_device(method):
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    if method:
        model.attach(make_method(method, cfg, 4))
    ids, mask = padded_batch(cfg.vocab_size)
    with default_device("meta"), torch.no_grad():
        out = model(ids, attention_mask=mask, output_attentions=True)
        fused = model(ids, attention_mask=mask)
    for t in (out.last_hidden_state, out.pooler_output, fused.last_hidden_state, *out.attentions):
        assert t.device == ids.device


@pytest.mark.parametrize("method", METHODS)
def test_decoder_creates_no_tensor_on_the_default_device(method):
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg).eval()
    if method:
        model.attach(make_method(method, cfg, 4))
    ids, mask = padded_batch(cfg.vocab_size)
    with default_device("meta"), torch.no_grad():
        out = model(ids, attention_mask=mask, labels=ids, use_cache=True, output_attentions=True)
        step = model(ids[:, :1], past=out.cache, use_cache=True)
        greedy = model.generate(ids, 3, attention_mask=mask)
        sampled = model.generate(ids, 3, attention_mask=mask, do_sample=True, top_k=5,
                                 generator=torch.Generator(device="cpu").manual_seed(0))
    for t in (out.logits, out.loss, step.logits, greedy, sampled, *out.cache.layers[0]):
        assert t.device == ids.device


def test_layers_run_entirely_on_another_device():
    """Attention, both layer kinds and the layer loop on "meta": nothing pins them to the CPU."""
    cfg_e, cfg_d = preset("bert-tiny"), preset("gpt2-tiny")
    b, n, p = 2, 5, 3
    enc = BertLayer(cfg_e).to("meta")
    H, d = cfg_e.num_attention_heads, cfg_e.head_dim
    x = torch.randn(b, n, cfg_e.hidden_size, device="meta")
    prefix = (torch.randn(b, H, p, d, device="meta"),) * 2
    keep = torch.ones(b, 1, 1, p + n, dtype=torch.bool, device="meta")
    for need_weights in (False, True):
        out, probs, (k, _) = enc(x, keep=keep, prefix=prefix, need_weights=need_weights, use_cache=True)
        assert out.device.type == k.device.type == "meta"
        assert out.shape == (b, n, cfg_e.hidden_size) and k.shape == (b, H, p + n, d)

    blocks = torch.nn.ModuleList(GPT2Block(cfg_d, i) for i in range(2)).to("meta")
    method = make_method("prefix", cfg_d, p).to("meta")
    key_mask = torch.ones(b, n, dtype=torch.bool, device="meta")
    res = run_layers(blocks, torch.randn(b, n, cfg_d.hidden_size, device="meta"), keys_in_front(key_mask, p),
                     prefix=method.kv_prefix(b), causal=True, need_weights=True)
    assert res.hidden.device.type == "meta" and res.attentions[0].shape == (b, cfg_d.num_attention_heads, n, p + n)
    keep = build_keep(keys_in_front(key_mask, p), n, causal=True)
    assert keep.device.type == "meta"


def test_to_and_device_arguments(gpt2_tiny_dir):
    model = GPT2Decoder.from_pretrained(gpt2_tiny_dir, device="cpu", dtype=torch.float64)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    model = model.to("cpu", torch.float32)
    cfg = model.config
    method = make_method("prefix", cfg, 4)
    model.attach(method).to(torch.device("cpu"))
    ids = torch.randint(0, cfg.vocab_size, (2, 4))
    with torch.no_grad():
        out = model(ids)
    assert out.logits.device == ids.device and out.logits.dtype == torch.float32


def test_input_on_another_device_than_the_model_is_named():
    model = BertEncoder(preset("bert-tiny")).to("meta")
    with pytest.raises(ValueError, match=r"input_ids is on cpu but the model is on meta"):
        model(torch.tensor([[1, 2, 3]]))
    model = GPT2Decoder(preset("gpt2-tiny")).to("meta")
    with pytest.raises(ValueError, match=r"input_ids is on cpu but the model is on meta"):
        model(torch.tensor([[1, 2, 3]]))


def test_prompt_left_on_another_dtype_is_named():
    """Attaching after moving the model: the prompt stays fp32 while the model is fp64."""
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval().to(torch.float64)
    model.attach(make_method("prefix", cfg, 4))
    with pytest.raises(ValueError, match=r"torch\.float32.*torch\.float64"):
        model(torch.tensor([[1, 2, 3]]))


# --- on a GPU -----------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("output_attentions", [False, True])
def test_minilm_on_cuda_matches_cpu(minilm_dir, output_attentions):
    cpu = BertEncoder.from_pretrained(minilm_dir)
    gpu = BertEncoder.from_pretrained(minilm_dir, device="cuda")
    ids = torch.randint(1000, 5000, (3, 16))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    with torch.no_grad():
        a = cpu(ids, attention_mask=mask, output_attentions=output_attentions)
        b = gpu(ids.cuda(), attention_mask=mask.cuda(), output_attentions=output_attentions)
    assert b.last_hidden_state.device.type == "cuda"
    assert (a.last_hidden_state - b.last_hidden_state.cpu()).abs().max().item() <= CPU_VS_CUDA
    assert (a.pooler_output - b.pooler_output.cpu()).abs().max().item() <= CPU_VS_CUDA
    if output_attentions:
        for pa, pb in zip(a.attentions, b.attentions):
            assert (pa - pb.cpu()).abs().max().item() <= CPU_VS_CUDA


@pytest.mark.cuda
def test_minilm_with_prefix_moved_to_cuda(minilm_dir):
    cpu = BertEncoder.from_pretrained(minilm_dir)
    method = make_method("prefix", cpu.config, 8)
    cpu.attach(method)
    gpu = BertEncoder.from_pretrained(minilm_dir).attach(make_method("prefix", cpu.config, 8))
    gpu.prompt.load_state_dict(method.state_dict())
    gpu.to("cuda")
    ids = torch.randint(1000, 5000, (2, 12))
    with torch.no_grad():
        a = cpu(ids).last_hidden_state
        b = gpu(ids.cuda()).last_hidden_state
    assert (a - b.cpu()).abs().max().item() <= CPU_VS_CUDA


@pytest.mark.cuda
def test_generate_on_cuda(gpt2_tiny_dir):
    cpu = GPT2Decoder.from_pretrained(gpt2_tiny_dir)
    gpu = GPT2Decoder.from_pretrained(gpt2_tiny_dir, device="cuda")
    ids = torch.randint(1, cpu.config.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    out = gpu.generate(ids.cuda(), 10, attention_mask=mask.cuda())
    assert out.device.type == "cuda" and out.shape == (2, 16)
    assert torch.equal(out[:, :6].cpu(), ids)
    # whatever tokens the GPU chose, both devices score that sequence alike
    full_mask = torch.cat([mask, torch.ones(2, 10, dtype=mask.dtype)], 1)
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = cpu(out.cpu(), attention_mask=full_mask, position_ids=pos).logits
        b = gpu(out, attention_mask=full_mask.cuda(), position_ids=pos.cuda()).logits
    real = full_mask.bool()
    assert (a[real] - b.cpu()[real]).abs().max().item() <= CPU_VS_CUDA


@pytest.mark.cuda
def test_input_on_cpu_for_a_cuda_model_is_named(gpt2_tiny_dir):
    gpu = GPT2Decoder.from_pretrained(gpt2_tiny_dir, device="cuda")
    with pytest.raises(ValueError, match=r"input_ids is on cpu but the model is on cuda"):
        gpu(torch.tensor([[1, 2, 3]]))
