"""Our prompt methods against the reference implementation (PEFT on transformers models).

Each test gives our method and PEFT's the SAME prompt values (copied, never re-drawn), runs both
on the same pretrained backbone and compares outputs with an explicit tolerance:

    prefix / prefix-mlp   KVPrefix      vs PEFT prefix tuning      (BertModel, GPT2LMHeadModel, LlamaForCausalLM)
    soft                  SoftPrompt    vs PEFT prompt tuning      (BertModel, GPT2LMHeadModel, LlamaForCausalLM)
    ptuning-mlp / -lstm   PTuningV1     vs PEFT P-tuning           (BertModel)

PEFT follows the HuggingFace position convention (real tokens at P..P+N-1), so our methods are
built with positions="shifted" for these comparisons; one test shows that our default
positions="real" is a different model and pins down which one it is. Notation: B batch,
N real tokens, P virtual tokens, D hidden, L layers, H heads, d = D/H, V vocabulary.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")
R = pytest.importorskip("reference")
from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType, get_peft_model  # noqa: E402

from minigpt_ptv2 import GPT2Decoder, BertEncoder  # noqa: E402
from minigpt_ptv2.models.llama import LlamaDecoder  # noqa: E402
from minigpt_ptv2.prompts import KVPrefix, PTuningV1, SoftPrompt  # noqa: E402
from tolerances import FP32_KERNELS  # noqa: E402  ours vs transformers + PEFT: other kernels

P = 5
# Two MiniLM sentences, the second padded with [PAD]=0: [B=2, N=8]
IDS = torch.tensor([[101, 2023, 2003, 1037, 2204, 3185, 999, 102],
                    [101, 7592, 2088, 102, 0, 0, 0, 0]])
MASK = (IDS != 0).long()  # [B, N]
# Tiny GPT-2 prompts: a full batch, and the same rows left-padded to a common length.
G_IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [40, 41, 42, 43, 44, 45]])  # [B, N]
G_LEFT = torch.tensor([[0, 0, 0, 7, 8, 9], [40, 41, 42, 43, 44, 45]])  # [B, N], row 0 left-padded
G_LEFT_MASK = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
NEW = 20  # greedy tokens to generate
# Generated tokens are compared exactly: they are argmaxes, equal whenever no step's two best
# logits lie within FP32_KERNELS of each other (the closest pair these tests meet is 9e-4 apart).


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape mismatch: left {list(a.shape)} right {list(b.shape)}"
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- backbones, built once per module

@pytest.fixture(scope="module")
def ours_bert(minilm_dir):
    return BertEncoder.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 saved by transformers; initializer_range=0.3 makes greedy text varied."""
    _, path = R.hf_gpt2_tiny(tmp_path_factory.mktemp("gpt2_vs_peft"), seed=3, initializer_range=0.3)
    return path


@pytest.fixture(scope="module")
def ours_gpt2(gpt2_dir):
    return GPT2Decoder.from_pretrained(gpt2_dir).eval()


def run_ours_bert(model, method, ids=IDS, mask=MASK) -> torch.Tensor:
    model.attach(method.eval())
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask).last_hidden_state  # [B, N, D]
    finally:
        model.detach_prompt()


def run_ours_gpt2(model, method, ids, mask=None) -> torch.Tensor:
    model.attach(method.eval())
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask).logits  # [B, N, V]
    finally:
        model.detach_prompt()


def generate_ours(model, method, ids, mask=None) -> torch.Tensor:
    model.attach(method.eval())
    try:
        return model.generate(ids, NEW, attention_mask=mask, eos_token_id=None)  # [B, N + NEW]: as R.peft_generate
    finally:
        model.detach_prompt()


def peft_wrap(base, peft_config, ours_module):
    """get_peft_model(base, ...) (wraps `base` in place: pass a fresh copy) with the prompt
    encoder's weights copied from our method. load_state_dict is strict, so this also proves the
    two encoders have the same modules and shapes."""
    with R._quiet():
        pm = get_peft_model(base, peft_config)
    pm.prompt_encoder["default"].load_state_dict(ours_module.state_dict())
    return pm.eval()


@pytest.fixture(scope="module")
def prefix_bert(ours_bert):
    """One P-Tuning v2 prefix (plain table) and the PEFT BertModel holding the same values."""
    c = ours_bert.config
    ours = KVPrefix(c, P, positions="shifted")
    with torch.no_grad():
        ours.embedding.weight.copy_(torch.randn(P, c.num_hidden_layers * 2 * c.hidden_size, generator=gen(1)))
    pm = R.peft_prefix_model(R.hf_bert(), P, ours.embedding.weight.detach().clone())
    return ours, pm


# ---------------------------------------------------------------- BERT: K/V prefix

def test_kv_prefix_equals_peft_prefix_tuning_on_bert(ours_bert, prefix_bert):
    ours, pm = prefix_bert
    got = run_ours_bert(ours_bert, ours)  # [B, N, D]
    want = R.run_peft_bert(pm, IDS, MASK)  # [B, N, D]
    assert max_diff(got, want) <= FP32_KERNELS
    with torch.no_grad():  # the prefix really changes the output, so the equality is not vacuous
        plain = ours_bert(IDS, attention_mask=MASK).last_hidden_state
    assert max_diff(got, plain) > 1e-2


def test_kv_prefix_mlp_equals_peft_prefix_projection_on_bert(ours_bert):
    c = ours_bert.config
    hidden = 48
    torch.manual_seed(2)
    ours = KVPrefix(c, P, projection=True, hidden=hidden, positions="shifted")  # "prefix-mlp"
    # PEFT's PrefixEncoder: embedding [P, D], transform = Linear(D, h), Tanh, Linear(h, L*2*D):
    # the same module names as ours, so our state dict loads into it strictly.
    cfg = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P,
                             prefix_projection=True, encoder_hidden_size=hidden)
    pm = peft_wrap(R.hf_bert(), cfg, ours)
    got = run_ours_bert(ours_bert, ours)
    want = R.run_peft_bert(pm, IDS, MASK)
    assert max_diff(got, want) <= FP32_KERNELS
    with torch.no_grad():  # and the MLP's output is the plain table PEFT would save
        table = pm.get_prompt_embedding_to_save("default")  # [P, L*2*D]
        assert max_diff(ours.for_inference().embedding.weight, table) <= FP32_KERNELS


def test_position_policy_real_differs_from_peft_and_equals_hf_from_zero(ours_bert, prefix_bert):
    shifted, pm = prefix_bert
    c = ours_bert.config
    real = KVPrefix.from_layer_kv(c, shifted.layer_kv().detach())  # same K/V, default positions="real"
    assert real.positions == "real"
    got = run_ours_bert(ours_bert, real)  # [B, N, D]
    assert max_diff(got, R.run_peft_bert(pm, IDS, MASK)) > 1e-3  # PEFT puts real tokens at P..P+N-1
    kv = R.peft_kv_layout(shifted.embedding.weight.detach(), c.num_hidden_layers, c.num_attention_heads,
                          c.head_dim)  # L x (K, V) [H, P, d]
    N = IDS.shape[1]
    want = R.run_hf_bert_prefix(R.hf_bert(), IDS, kv, MASK, position_ids=torch.arange(N)[None])
    assert max_diff(got, want) <= FP32_KERNELS  # "real" = HF BertModel with the prefix cache at positions 0..N-1


# ---------------------------------------------------------------- BERT: input-level prompts

def test_soft_prompt_equals_peft_prompt_tuning_on_bert(ours_bert):
    D = ours_bert.config.hidden_size
    prompt = 0.05 * torch.randn(P, D, generator=gen(4))  # word-embedding scale
    ours = SoftPrompt(ours_bert.config, P, init=prompt, positions="shifted")
    pm = R.peft_prompt_model(R.hf_bert(), P, prompt.clone())
    got = run_ours_bert(ours_bert, ours)  # [B, N, D]: real rows
    want = R.run_peft_bert(pm, IDS, MASK)  # PEFT's [B, P+N, D] with the P virtual rows sliced off
    assert max_diff(got, want) <= FP32_KERNELS
    with torch.no_grad():
        plain = ours_bert(IDS, attention_mask=MASK).last_hidden_state
    assert max_diff(got, plain) > 1e-2


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_ptuning_v1_equals_peft_p_tuning_on_bert(ours_bert, encoder):
    hidden = 40
    torch.manual_seed(5)
    ours = PTuningV1(ours_bert.config, P, encoder=encoder, hidden=hidden, positions="shifted")
    # PEFT's PromptEncoder: embedding [P, D]; MLP head Linear(D,h)-ReLU-Linear(h,h)-ReLU-Linear(h,D),
    # or a 2-layer bidirectional LSTM(D, h) followed by Linear(2h,2h)-ReLU-Linear(2h,D).
    cfg = PromptEncoderConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P,
                              encoder_reparameterization_type=encoder.upper(), encoder_hidden_size=hidden)
    names = {"head": "mlp_head", "lstm": "lstm_head"}  # our module names -> PEFT's
    state = {names.get(k.split(".")[0], k.split(".")[0]) + k[k.index("."):]: v
             for k, v in ours.state_dict().items()}
    with R._quiet():
        pm = get_peft_model(R.hf_bert(), cfg)
    pm.prompt_encoder["default"].load_state_dict(state)  # strict: same modules, same shapes
    pm.eval()
    got = run_ours_bert(ours_bert, ours)  # [B, N, D]
    full = R.run_peft_bert(pm, IDS, MASK)  # P-tuning, like prompt tuning, returns [B, P+N, D]
    assert full.shape[1] == P + IDS.shape[1]
    assert max_diff(got, full[:, P:]) <= FP32_KERNELS  # real rows
    with torch.no_grad():
        plain = ours_bert(IDS, attention_mask=MASK).last_hidden_state
    assert max_diff(got, plain) > 1e-3


# ---------------------------------------------------------------- GPT-2: prefix and prompt

@pytest.fixture(scope="module")
def prefix_gpt2(ours_gpt2, gpt2_dir):
    c = ours_gpt2.config
    ours = KVPrefix(c, P, positions="shifted")
    with torch.no_grad():
        ours.embedding.weight.copy_(torch.randn(P, c.num_hidden_layers * 2 * c.hidden_size, generator=gen(6)))
    pm = R.peft_prefix_model(R.hf_gpt2(gpt2_dir), P, ours.embedding.weight.detach().clone())
    return ours, pm


def test_kv_prefix_equals_peft_prefix_tuning_on_gpt2_logits(ours_gpt2, prefix_gpt2):
    ours, pm = prefix_gpt2
    got = run_ours_gpt2(ours_gpt2, ours, G_IDS)  # [B, N, V]
    assert max_diff(got, R.run_peft_lm_logits(pm, G_IDS, torch.ones_like(G_IDS))) <= FP32_KERNELS
    with torch.no_grad():
        plain = ours_gpt2(G_IDS).logits
    assert max_diff(got, plain) > 1e-2


def test_kv_prefix_greedy_generation_equals_peft_with_and_without_left_padding(ours_gpt2, prefix_gpt2):
    ours, pm = prefix_gpt2
    for ids, mask in [(G_IDS, torch.ones_like(G_IDS)), (G_LEFT, G_LEFT_MASK)]:
        got = generate_ours(ours_gpt2, ours, ids, mask)  # [B, N + NEW]
        want = R.peft_generate(pm, ids, mask, max_new_tokens=NEW)
        assert got.shape == (2, ids.shape[1] + NEW)
        assert torch.equal(got, want), f"ours {got.tolist()}\nPEFT {want.tolist()}"
        assert len(set(got[0, -NEW:].tolist())) > 3  # varied text, so agreement is informative
    # The padded row generates what the same row does unpadded: positions count real tokens only.
    alone = generate_ours(ours_gpt2, ours, G_LEFT[:1, 3:])
    assert torch.equal(got[:1, 3:], alone)


def test_soft_prompt_equals_peft_prompt_tuning_on_gpt2_logits_and_generation(ours_gpt2, gpt2_dir):
    D = ours_gpt2.config.hidden_size
    prompt = torch.randn(P, D, generator=gen(7))
    ours = SoftPrompt(ours_gpt2.config, P, init=prompt, positions="shifted")
    pm = R.peft_prompt_model(R.hf_gpt2(gpt2_dir), P, prompt.clone())
    got = run_ours_gpt2(ours_gpt2, ours, G_IDS)  # [B, N, V]: real rows
    assert max_diff(got, R.run_peft_lm_logits(pm, G_IDS)) <= FP32_KERNELS  # PEFT's [B, P+N, V] sliced to N
    with torch.no_grad():
        assert max_diff(got, ours_gpt2(G_IDS).logits) > 1e-2
    # Full batch only. PEFT's prompt tuning drops position_ids and the base model numbers all of
    # [prompt, input] as 0..P+N-1, pads included, so under left padding a row's real tokens sit at
    # positions shifted by its pad count: its output depends on how much padding it got. Ours counts
    # real tokens only (pad-invariant), so a left-padded comparison would be comparing two policies.
    out = generate_ours(ours_gpt2, ours, G_IDS)
    assert torch.equal(out, R.peft_generate(pm, G_IDS, max_new_tokens=NEW))
    assert len(set(out[0, -NEW:].tolist())) > 3


# ---------------------------------------------------------------- LLaMA (grouped K/V heads): prefix and prompt

# Three prompts of 8 tokens; row 1 left-padded to 5 real tokens, row 2 to 3.
L_IDS = torch.randint(1, 140, (3, 8), generator=gen(11))  # [B, N]
L_LEFT_MASK = torch.tensor([[1] * 8, [0] * 3 + [1] * 5, [0] * 5 + [1] * 3])
L_LEFT = L_IDS * L_LEFT_MASK  # pads are token 0


@pytest.fixture(scope="module")
def llama_dir(llama_varied_dir):
    return llama_varied_dir


@pytest.fixture(scope="module")
def ours_llama(llama_dir):
    return LlamaDecoder.from_pretrained(llama_dir).eval()


@pytest.fixture(scope="module")
def prefix_llama(ours_llama, llama_dir):
    """PEFT's prefix tuning on LlamaForCausalLM with H=4 query heads over H_kv=2 key/value heads:
    its table is [P, L*2*H_kv*d], ours the same, keys used as given and real tokens at P.."""
    c = ours_llama.config
    ours = KVPrefix(c, P, positions="shifted", rotate_keys=False)
    with torch.no_grad():
        ours.embedding.weight.copy_(torch.randn(P, c.prefix_width, generator=gen(12)))
    assert c.prefix_width == c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim == 120
    pm = R.peft_prefix_model(R.hf_llama(llama_dir), P, ours.embedding.weight.detach().clone())
    return ours, pm


def test_kv_prefix_equals_peft_prefix_tuning_on_llama_logits(ours_llama, prefix_llama):
    ours, pm = prefix_llama
    for ids, mask in [(L_IDS, torch.ones_like(L_IDS)), (L_LEFT, L_LEFT_MASK)]:
        got = run_ours_gpt2(ours_llama, ours, ids, mask)  # [B, N, V]
        want = R.run_peft_lm_logits(pm, ids, mask)
        real = mask.bool()
        assert max_diff(got[real], want[real]) <= FP32_KERNELS
    with torch.no_grad():
        assert max_diff(got, ours_llama(ids, attention_mask=mask).logits) > 1e-2


def test_kv_prefix_greedy_generation_equals_peft_on_llama_with_and_without_left_padding(ours_llama, prefix_llama):
    ours, pm = prefix_llama
    for ids, mask in [(L_IDS, torch.ones_like(L_IDS)), (L_LEFT, L_LEFT_MASK)]:
        got = generate_ours(ours_llama, ours, ids, mask)  # [B, N + NEW]
        want = R.peft_generate(pm, ids, mask, max_new_tokens=NEW)
        assert got.shape == (3, 8 + NEW)
        assert torch.equal(got, want), f"ours {got[:, 8:].tolist()}\nPEFT {want[:, 8:].tolist()}"
        assert len(set(got[0, -NEW:].tolist())) > 5  # varied text, so agreement is informative


def test_soft_prompt_equals_peft_prompt_tuning_on_llama(ours_llama, llama_dir):
    prompt = torch.randn(P, ours_llama.config.hidden_size, generator=gen(13))
    ours = SoftPrompt(ours_llama.config, P, init=prompt, positions="shifted")
    pm = R.peft_prompt_model(R.hf_llama(llama_dir), P, prompt.clone())
    for ids, mask in [(L_IDS, torch.ones_like(L_IDS)), (L_LEFT, L_LEFT_MASK)]:
        got = run_ours_gpt2(ours_llama, ours, ids, mask)  # [B, N, V]: real rows
        want = R.run_peft_lm_logits(pm, ids, mask)  # PEFT's [B, P+N, V] sliced to N
        real = mask.bool()
        assert max_diff(got[real], want[real]) <= FP32_KERNELS
    out = generate_ours(ours_llama, ours, L_IDS)
    assert torch.equal(out, R.peft_generate(pm, L_IDS, max_new_tokens=NEW))
    assert len(set(out[0, -NEW:].tolist())) > 5
    # Left-padded generation: PEFT's prompt tuning numbers the pads too, so a padded row's real
    # tokens sit further from the virtual ones than they would alone, and it generates something
    # else (reference fact f.). Ours counts real tokens only: padded or alone, the same text.
    ours_padded = generate_ours(ours_llama, ours, L_LEFT, L_LEFT_MASK)
    assert torch.equal(ours_padded[2:, 5:], generate_ours(ours_llama, ours, L_LEFT[2:, 5:]))
    peft_padded = R.peft_generate(pm, L_LEFT, L_LEFT_MASK, max_new_tokens=NEW)
    assert torch.equal(peft_padded[:1], ours_padded[:1])  # the unpadded row agrees
    assert not torch.equal(peft_padded[2:, 5:], R.peft_generate(pm, L_LEFT[2:, 5:], max_new_tokens=NEW))
