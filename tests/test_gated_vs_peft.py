"""GatedPrefix against PEFT's adaption prompt (LLaMA-Adapter), and its adapter files both ways.

Tiny random LlamaForCausalLM (H=4 query heads over H_kv=2 K/V heads) and GPT2LMHeadModel saved
by transformers; PEFT adapts the top ADAPTED of their L=3 layers, with gates set away from 0 so
the prefix matters (a fresh adapter reads nothing and would match anything). Our method holds
the same rows and gates; joined where PEFT joins the read on each model (prompts/gated.py):
before o_proj on LLaMA, after c_proj on GPT-2. Reference facts g. in tests/reference.py.
"""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("peft")
R = pytest.importorskip("reference")
from safetensors.torch import load_file  # noqa: E402

from minigpt_ptv2 import GPT2Decoder, preset  # noqa: E402
from minigpt_ptv2.cli import main  # noqa: E402
from minigpt_ptv2.errors import InputError  # noqa: E402
from minigpt_ptv2.interop import load_adapter, save_adapter  # noqa: E402
from minigpt_ptv2.interop.peft_layout import PEFT_CONFIG, PEFT_WEIGHTS  # noqa: E402
from minigpt_ptv2.models import build  # noqa: E402
from minigpt_ptv2.models.llama import LlamaDecoder  # noqa: E402
from minigpt_ptv2.prompts import GatedPrefix, KVPrefix  # noqa: E402

P, ADAPTED, NEW = 4, 2, 20
# LOGITS: ours vs transformers + PEFT, the same formula in other kernels (fused attention, one
# [Q|K|V] product): the largest difference these models show is about 1e-6 (printed below).
LOGITS = 1e-5
GATES = torch.tensor([0.6, -0.9])  # [L_a]: open, one of them negative (nothing bounds a gate)
IDS = torch.randint(1, 130, (3, 8), generator=torch.Generator().manual_seed(11))  # [B, N]
LEFT_MASK = torch.tensor([[1] * 8, [0] * 3 + [1] * 5, [0] * 5 + [1] * 3])  # rows 1, 2 left-padded
LEFT = IDS * LEFT_MASK  # pads are token 0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return R.hf_gpt2_tiny(tmp_path_factory.mktemp("gated_gpt2"), seed=3, initializer_range=0.3)[1]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, llama_varied_dir, gpt2_dir):
    """(ours, PEFT, model dir, kind): the same rows and open gates in both."""
    kind = request.param
    if kind == "llama":
        ours_model, hf, path = LlamaDecoder.from_pretrained(llama_varied_dir).eval(), R.hf_llama, llama_varied_dir
    else:
        ours_model, hf, path = GPT2Decoder.from_pretrained(gpt2_dir).eval(), R.hf_gpt2, gpt2_dir
    join = "context" if kind == "llama" else "output"  # PEFT's convention on each (prompts/gated.py)
    method = GatedPrefix(ours_model.config, P, adapter_layers=ADAPTED, join=join)
    with torch.no_grad():
        method.rows.copy_(torch.randn(method.rows.shape, generator=gen(12)))
        method.gates.copy_(GATES)
    pm = R.peft_adaption_model(hf(path), P, method.rows.detach().clone(), GATES.clone())
    return ours_model, method, pm, path, kind


def logits(model, method, ids, mask):
    model.attach(method)
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask).logits  # [B, N, V]
    finally:
        model.detach_prompt()


def generate(model, method, ids, mask=None):
    model.attach(method)
    try:
        return model.generate(ids, NEW, attention_mask=mask)
    finally:
        model.detach_prompt()


def max_diff(a, b, mask) -> float:
    real = mask.bool()
    return float((a[real] - b[real]).abs().max())


# --- the same model -------------------------------------------------------------------------------

def test_logits_equal_peft_with_and_without_left_padding(pair, record_property):
    model, method, pm, _, kind = pair
    for name, ids, mask in (("full", IDS, torch.ones_like(IDS)), ("left-padded", LEFT, LEFT_MASK)):
        ours = logits(model, method, ids, mask)
        gap = max_diff(ours, R.run_peft_lm_logits(pm, ids, mask), mask)
        print(f"{kind} {name}: max |ours - PEFT| = {gap:.2e}")
        record_property(f"{kind}_{name}_max_abs_logit_diff", gap)
        assert gap <= LOGITS
        with torch.no_grad():  # and the prefix does matter: these are not the frozen model's logits
            assert max_diff(ours, model(ids, attention_mask=mask).logits, mask) > 1e-2


def test_greedy_generation_equals_peft_with_and_without_left_padding(pair):
    model, method, pm, _, _ = pair
    for ids, mask in ((IDS, torch.ones_like(IDS)), (LEFT, LEFT_MASK)):
        got = generate(model, method, ids, mask)  # [B, N + NEW]
        want = R.peft_generate(pm, ids, mask, max_new_tokens=NEW)
        assert torch.equal(got, want), f"ours {got[:, 8:].tolist()}\nPEFT {want[:, 8:].tolist()}"
        assert len(set(got[0, -NEW:].tolist())) > 5  # varied text, so agreement is informative
    # PEFT's prefix keys carry no position: a left-padded row generates what it generates alone
    assert torch.equal(got[2, 5:], generate(model, method, LEFT[2:, 5:])[0])


def test_parameters_are_peft_s_one_for_one(pair):
    _, method, pm, _, _ = pair
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert method.num_trainable() == trainable == ADAPTED * (P * method.config.hidden_size + 1)


# --- adapter files, both ways ---------------------------------------------------------------------

def test_our_adapter_loads_into_peft_and_matches_peft_s_own_files(pair, tmp_path):
    model, method, pm, path, kind = pair
    info = save_adapter(tmp_path / "ours", method, model)
    assert (info["peft_type"], info["task_type"]) == ("ADAPTION_PROMPT", "CAUSAL_LM")
    pm.save_pretrained(tmp_path / "theirs")
    ours_t, theirs_t = load_file(tmp_path / "ours" / PEFT_WEIGHTS), load_file(tmp_path / "theirs" / PEFT_WEIGHTS)
    assert sorted(ours_t) == sorted(theirs_t) and all(torch.equal(ours_t[k], theirs_t[k]) for k in ours_t)
    ours_c, theirs_c = (json.loads((tmp_path / d / PEFT_CONFIG).read_text()) for d in ("ours", "theirs"))
    fields = ("peft_type", "task_type", "adapter_len", "adapter_layers", "target_modules")
    assert {k: ours_c[k] for k in fields} == {k: theirs_c[k] for k in fields}
    hf = R.hf_llama(path) if kind == "llama" else R.hf_gpt2(path)
    loaded = R.load_peft_adapter(hf, tmp_path / "ours")
    gap = max_diff(logits(model, method, LEFT, LEFT_MASK), R.run_peft_lm_logits(loaded, LEFT, LEFT_MASK), LEFT_MASK)
    assert gap <= LOGITS


def test_peft_s_saved_adapter_imports_as_a_gated_prefix(pair, tmp_path):
    model, method, pm, _, kind = pair
    pm.save_pretrained(tmp_path)
    ad = load_adapter(tmp_path, model.config)
    assert ad.method_name == "gated" and ad.head is None
    got = ad.method
    assert (got.adapter_layers, got.join, got.positions) == (ADAPTED, method.join, "real")
    assert torch.equal(got.rows, method.rows) and torch.equal(got.gates, GATES)
    assert max_diff(logits(model, got, LEFT, LEFT_MASK), R.run_peft_lm_logits(pm, LEFT, LEFT_MASK),
                    LEFT_MASK) <= LOGITS


# --- what PEFT would read otherwise: refused by name ----------------------------------------------

def test_export_refuses_what_peft_would_read_otherwise(gpt2_dir, tmp_path):
    model = GPT2Decoder.from_pretrained(gpt2_dir).eval()
    with pytest.raises(InputError, match="PEFT's adaption prompt on gpt2 adds it at the 'output'.*join='output'"):
        save_adapter(tmp_path, GatedPrefix(model.config, P), model)  # join="context" by default
    with pytest.raises(InputError, match="positions='shifted'.*leave real tokens at 0..N-1"):
        save_adapter(tmp_path, GatedPrefix(model.config, P, join="output", positions="shifted"), model)
    with pytest.raises(InputError, match="needs the model it runs in"):
        save_adapter(tmp_path, GatedPrefix(model.config, P, join="output"))
    assert not (tmp_path / PEFT_WEIGHTS).exists()


def test_llama_with_attention_bias_is_refused_because_peft_adds_the_output_bias_twice(tmp_path):
    """Reference fact g.: PEFT's LLaMA adapter passes its read through o_proj, bias included, so a
    fresh adapter (gate 0) already moves the model by b_O: not the method, refused both ways."""
    base, _ = R.hf_llama_tiny(tmp_path / "init", seed=5, attention_bias=True)
    with torch.no_grad():  # transformers starts biases at 0: give b_O a value, so that twice is not once
        for layer in base.model.layers:
            layer.self_attn.o_proj.bias.normal_(0.0, 0.5, generator=gen(4))
    path = tmp_path / "biased"
    base.save_pretrained(path)
    ids = IDS[:1, :5] % 100
    with torch.no_grad():
        plain = base(input_ids=ids).logits
    pm = R.peft_adaption_model(base, P, torch.randn(1, P, 40, generator=gen(3)), torch.zeros(1))
    assert (R.run_peft_lm_logits(pm, ids) - plain).abs().max() > 1e-3  # gate 0, yet not the frozen model
    pm.save_pretrained(tmp_path / "adapter")
    ours = LlamaDecoder.from_pretrained(path)
    with pytest.raises(InputError, match="attention_bias=true it adds that bias a second time"):
        load_adapter(tmp_path / "adapter", ours.config)
    with pytest.raises(InputError, match="attention_bias=true it adds that bias a second time"):
        save_adapter(tmp_path / "out", GatedPrefix(ours.config, P), ours)


def test_bert_has_no_adaption_prompt_in_peft_export_and_import_say_so(tmp_path):
    bert = build(preset("bert-tiny"))
    with pytest.raises(InputError, match="adaption prompt exists for llama, mistral and gpt2 models only"):
        save_adapter(tmp_path / "out", GatedPrefix(bert.config, P), bert)
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / PEFT_CONFIG).write_text(json.dumps(
        {"peft_type": "ADAPTION_PROMPT", "adapter_len": P, "adapter_layers": 1, "task_type": "CAUSAL_LM"}))
    with pytest.raises(InputError, match="adaption prompt exists for llama, mistral and gpt2 models only"):
        load_adapter(tmp_path / "ad", bert.config)


def test_import_peft_command_names_what_it_cannot_build(pair, tmp_path, capsys, minilm_dir):
    """import-peft builds encoder task checkpoints: an adaption prompt (decoders only) is refused
    in one line, naming why, before anything is written."""
    _, _, pm, _, _ = pair
    pm.save_pretrained(tmp_path / "ad")
    code = main(["import-peft", str(tmp_path / "ad"), str(tmp_path / "ck"), "--task", "sst2", "--random-head",
                 "--model-dir", str(minilm_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "adaption prompt exists for llama, mistral and gpt2 models only, not for BERT" in err
    assert not (tmp_path / "ck").exists()


def test_a_kv_prefix_turning_its_keys_is_refused_by_export(tmp_path):
    """PEFT's prefix tuning uses prefix keys as given; rotate_keys=True computes something else."""
    llama = build(preset("llama-tiny"))
    with pytest.raises(InputError, match=r"rotate_keys=True.*uses prefix keys as given"):
        save_adapter(tmp_path, KVPrefix(llama.config, P, positions="shifted", rotate_keys=True), llama)


def test_an_adaption_prompt_adapter_is_read_field_by_field(gpt2_dir, tmp_path):
    """Every way such a folder can fail to describe this model is named (made here from a good one)."""
    from safetensors.torch import save_file
    model = GPT2Decoder.from_pretrained(gpt2_dir).eval()
    save_adapter(tmp_path / "good", GatedPrefix(model.config, P, adapter_layers=ADAPTED, join="output"), model)
    cfg = json.loads((tmp_path / "good" / PEFT_CONFIG).read_text())
    tensors = load_file(tmp_path / "good" / PEFT_WEIGHTS)
    gate = "base_model.model.transformer.h.2.attn.adaption_gate"
    prompt = "base_model.model.transformer.h.2.attn.adaption_prompt"
    cases = {
        "adapter_layers is 4 but this model has L=3": ({"adapter_layers": 4}, tensors),
        r"'adapter_len'.*positive int": ({"adapter_len": 0}, tensors),
        "target_modules is 'self_attn' but PEFT adapts 'attn'": ({"target_modules": "self_attn"}, tensors),
        rf"missing \['{gate}'\]": ({}, {k: v for k, v in tensors.items() if k != gate}),
        r"h.2.attn.adaption_prompt is \[1, 3, 24\], expected \[1, 4, 24\]": ({}, {**tensors, prompt: torch.zeros(1, 3, 24)}),
        "unexpected .'base_model.model.transformer.h.0": ({}, {**tensors, gate.replace("h.2", "h.0"): torch.zeros(1)}),
    }
    for i, (message, (change, ts)) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / PEFT_CONFIG).write_text(json.dumps({**cfg, **change}))
        save_file(ts, str(folder / PEFT_WEIGHTS))
        with pytest.raises(InputError, match=message):
            load_adapter(folder, model.config)


def test_export_peft_command_refuses_a_gated_checkpoint_on_bert_by_name(tmp_path, capsys, minilm_dir):
    """A gated prefix trained on MiniLM (sst2) has no PEFT form: one line naming why, nothing written."""
    from minigpt_ptv2.models import load_pretrained
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    model = build_task_model("sst2", "gated", P, encoder=load_pretrained(minilm_dir))
    save_checkpoint(model, tmp_path / "ck", task="sst2", method="gated", P=P, labels=("negative", "positive"))
    code = main(["export-peft", str(tmp_path / "ck"), str(tmp_path / "ad"), "--model-dir", str(minilm_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "not for BERT: a gated prefix on BERT has no PEFT adapter" in err
    assert not (tmp_path / "ad" / PEFT_WEIGHTS).exists()
