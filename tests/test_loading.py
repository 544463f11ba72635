"""Loading HuggingFace-format folders: every checkpoint layout we accept gives the reference's
numbers, and every layout we refuse fails with a message naming the offending key, shape,
file or model type.

The folders are tiny random BERT / GPT-2 models saved by transformers itself, then rewritten
(renamed keys, dropped keys, pickles, truncated files) to imitate what one meets in the wild.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt_ptv2.models import config_from_hf
from minigpt_ptv2.models.gpt2 import GPT2Decoder
from minigpt_ptv2.models.bert import BertEncoder
from minigpt_ptv2.models import load_pretrained
from tolerances import FP32_KERNELS

transformers = pytest.importorskip("transformers")


def bert_config():
    return transformers.BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=40,
                                   max_position_embeddings=64)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BertModel saved as model.safetensors (keys without a 'bert.' prefix)."""
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("bert_tiny")
    transformers.BertModel(bert_config()).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_ref(bert_dir):
    return transformers.BertModel.from_pretrained(bert_dir).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 120, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[0, 5:] = 1
    return ids, mask, types


def encode(model, inputs):
    ids, mask, types = inputs
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=types)
    return out.last_hidden_state, out.pooler_output


def assert_matches_reference(ours, ref, inputs):
    a, pa = encode(ours, inputs)
    b, pb = encode(ref, inputs)
    assert (a - b).abs().max().item() <= FP32_KERNELS  # ours vs transformers: other kernels
    assert (pa - pb).abs().max().item() <= FP32_KERNELS


def rewrite(src, dst, edit, weights="model.safetensors"):
    """Copy config.json from `src` and write `edit(state_dict)` into `dst/weights`."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    sd = edit(dict(load_file(str(src / "model.safetensors"))))
    if weights.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(dst / weights))
    else:
        torch.save(sd, dst / weights)
    return dst


# --- layouts we accept -----------------------------------------------------------------------

def test_safetensors_folder_matches_bertmodel(bert_dir, bert_ref, inputs):
    ours = BertEncoder.from_pretrained(bert_dir)
    assert not ours.training  # eval mode: dropout off
    assert_matches_reference(ours, bert_ref, inputs)


def test_pytorch_model_bin(bert_dir, bert_ref, inputs, tmp_path):
    """The pre-safetensors format (what save_pretrained(safe_serialization=False) wrote)."""
    folder = rewrite(bert_dir, tmp_path / "bin", lambda sd: sd, weights="pytorch_model.bin")
    assert not (folder / "model.safetensors").exists()
    assert_matches_reference(BertEncoder.from_pretrained(folder), bert_ref, inputs)


_UNPICKLED = []


def _side_effect():
    _UNPICKLED.append("ran")
    return torch.zeros(1)


class _Payload:
    """Unpickling this calls `_side_effect`: arbitrary code, which weights_only=True refuses."""

    def __reduce__(self):
        return (_side_effect, ())


def test_pytorch_model_bin_is_read_weights_only(bert_dir, tmp_path):
    folder = rewrite(bert_dir, tmp_path / "evil", lambda sd: {**sd, "pooler.dense.bias": _Payload()},
                     weights="pytorch_model.bin")
    with pytest.raises(ValueError, match=r"could not read weights from .*pytorch_model\.bin"):
        BertEncoder.from_pretrained(folder)
    assert _UNPICKLED == []
    # the same file does run code when unpickled without weights_only: the test can tell
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert _UNPICKLED == ["ran"]


def test_legacy_gamma_beta_layernorm_names(bert_dir, bert_ref, inputs, tmp_path):
    def to_legacy(sd):
        out = {}
        for k, v in sd.items():
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
            out[k] = v
        return out
    folder = rewrite(bert_dir, tmp_path / "legacy", to_legacy)
    assert any(k.endswith("LayerNorm.gamma") for k in load_file(str(folder / "model.safetensors")))
    assert_matches_reference(BertEncoder.from_pretrained(folder), bert_ref, inputs)


def test_bert_prefixed_pretraining_checkpoint(tmp_path, inputs):
    """BertForPreTraining keys start with 'bert.'; its cls.* heads are ignored on purpose."""
    torch.manual_seed(12)
    full = transformers.BertForPreTraining(bert_config()).eval()
    full.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors"))
    assert any(k.startswith("bert.") for k in keys) and any(k.startswith("cls.") for k in keys)
    assert_matches_reference(BertEncoder.from_pretrained(tmp_path), full.bert, inputs)


def test_sequence_classification_head_is_reported_not_dropped(tmp_path):
    """A fine-tuned BertForSequenceClassification folder is refused, naming classifier.*.

    Choice: unlike the pre-training heads (cls.*), which every original BERT checkpoint
    carries and nobody wants inside an encoder, a classifier head holds trained task weights.
    Dropping it silently would let a user believe they loaded their classifier while a fresh
    head is in use; the error lists exactly what would be lost, and that it is the only issue.
    """
    torch.manual_seed(13)
    transformers.BertForSequenceClassification(bert_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError) as e:
        BertEncoder.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing keys []" in msg
    assert "unexpected keys ['classifier.bias', 'classifier.weight']" in msg


def test_sharded_safetensors(bert_ref, inputs, tmp_path):
    bert_ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    assert_matches_reference(BertEncoder.from_pretrained(tmp_path), bert_ref, inputs)


def test_hub_cache_layout_with_symlinks_into_blobs(bert_dir, bert_ref, inputs, tmp_path):
    """The HuggingFace hub cache keeps files in blobs/ and symlinks them from snapshots/<rev>/:
    the one place a model folder's files may resolve outside it (loading.inside)."""
    entry = tmp_path / "models--someone--tiny-bert"
    blobs, snapshot = entry / "blobs", entry / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, name in enumerate(("config.json", "model.safetensors")):
        shutil.copy(bert_dir / name, blobs / f"blob{i}")
        (snapshot / name).symlink_to(f"../../blobs/blob{i}")
    assert_matches_reference(BertEncoder.from_pretrained(snapshot), bert_ref, inputs)


def test_config_json_nulls_that_mean_default(gpt2_tiny_dir):
    """transformers writes n_inner: null (= 4D) and pad_token_id: null (unused): both load."""
    cfg = json.loads((gpt2_tiny_dir / "config.json").read_text())
    assert cfg["n_inner"] is None and cfg["pad_token_id"] is None
    assert GPT2Decoder.from_pretrained(gpt2_tiny_dir).config.intermediate_size == 4 * cfg["n_embd"]


def test_gpt2_original_layout_without_prefix_and_with_mask_buffers(gpt2_tiny_dir, tmp_path):
    """Original GPT-2 files: no 'transformer.' prefix, causal-mask buffers h.{i}.attn.bias."""
    ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_tiny_dir).eval()
    n_pos = ref.config.n_positions

    def to_original(sd):
        out = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
        for i in range(ref.config.n_layer):
            out[f"h.{i}.attn.bias"] = torch.ones(1, 1, n_pos, n_pos).tril()
            out[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        return out
    folder = rewrite(gpt2_tiny_dir, tmp_path / "orig", to_original)
    assert "h.0.attn.c_attn.weight" in load_file(str(folder / "model.safetensors"))
    ours = GPT2Decoder.from_pretrained(folder)
    ids = torch.randint(0, 130, (2, 8))
    with torch.no_grad():
        assert (ours(ids).logits - ref(ids).logits).abs().max().item() <= FP32_KERNELS


def test_gpt2_conv1d_weights_are_taken_as_they_are(gpt2_tiny_dir):
    """Conv1D stores [in, out], like our Linear: GPT-2 matrices load untransposed, c_attn as qkv."""
    ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_tiny_dir)
    ours = GPT2Decoder.from_pretrained(gpt2_tiny_dir)
    assert torch.equal(ours.layers[1].attn.qkv.weight, ref.transformer.h[1].attn.c_attn.weight)  # [D, 3D]
    assert torch.equal(ours.layers[1].ffn_in.weight, ref.transformer.h[1].mlp.c_fc.weight)


def test_bert_linear_weights_are_transposed_and_qkv_fused(bert_dir):
    """nn.Linear stores [out, in]: BERT matrices are transposed, and query|key|value concatenated."""
    ref = transformers.BertModel.from_pretrained(bert_dir)
    ours = BertEncoder.from_pretrained(bert_dir)
    D = ours.config.hidden_size
    attn, qkv = ref.encoder.layer[1].attention.self, ours.layers[1].attn.qkv
    for j, lin in enumerate((attn.query, attn.key, attn.value)):
        assert torch.equal(qkv.weight[:, j * D:(j + 1) * D], lin.weight.t())  # W_j [D, D]
        assert torch.equal(qkv.bias[j * D:(j + 1) * D], lin.bias)
    assert torch.equal(ours.pooler.weight, ref.pooler.dense.weight.t())


def test_dtype_argument(bert_dir):
    model = BertEncoder.from_pretrained(bert_dir, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]]))
    assert out.last_hidden_state.dtype == torch.float64


def test_load_pretrained_picks_the_model_from_config(bert_dir, gpt2_tiny_dir):
    assert isinstance(load_pretrained(bert_dir), BertEncoder)
    assert isinstance(load_pretrained(gpt2_tiny_dir), GPT2Decoder)


# --- layouts we refuse -----------------------------------------------------------------------

def test_missing_key_is_listed(bert_dir, tmp_path):
    folder = rewrite(bert_dir, tmp_path / "m", lambda sd: {k: v for k, v in sd.items()
                                                            if k != "encoder.layer.1.output.dense.bias"})
    with pytest.raises(ValueError, match=r"missing keys \['encoder\.layer\.1\.output\.dense\.bias'\]"):
        BertEncoder.from_pretrained(folder)


def test_unexpected_key_is_listed(bert_dir, tmp_path):
    folder = rewrite(bert_dir, tmp_path / "u", lambda sd: {**sd, "encoder.layer.0.adapter.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder\.layer\.0\.adapter\.weight'\]"):
        BertEncoder.from_pretrained(folder)


def test_shape_mismatch_names_both_shapes(bert_dir, tmp_path):
    folder = rewrite(bert_dir, tmp_path / "s", lambda sd: {**sd, "pooler.dense.bias": torch.zeros(23)})
    with pytest.raises(ValueError, match=r"shape mismatch for pooler\.bias: checkpoint \[23\] vs model \[24\]"):
        BertEncoder.from_pretrained(folder)


def test_untied_gpt2_head_is_refused(gpt2_tiny_dir, tmp_path):
    folder = rewrite(gpt2_tiny_dir, tmp_path / "untied",
                     lambda sd: {**sd, "lm_head.weight": torch.randn_like(sd["transformer.wte.weight"])})
    with pytest.raises(ValueError, match=r"lm_head\.weight differs from wte\.weight"):
        GPT2Decoder.from_pretrained(folder)


@pytest.mark.parametrize("model_type", ["t5", "roberta", None])
def test_other_architectures_are_refused_by_name(bert_dir, tmp_path, model_type):
    cfg = json.loads((bert_dir / "config.json").read_text())
    if model_type is None:
        cfg.pop("model_type")
    else:
        cfg["model_type"] = model_type
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shutil.copy(bert_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=rf"unsupported model_type {model_type!r}.*'bert'.*'gpt2'"):
        load_pretrained(tmp_path)


def test_bert_config_with_other_activation_is_refused():
    with pytest.raises(ValueError, match=r"hidden_act='gelu'.*'relu'"):
        config_from_hf({"model_type": "bert", "hidden_act": "relu"})


def test_truncated_safetensors(bert_dir, tmp_path):
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    data = (bert_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read weights from .*model\.safetensors.*corrupted, truncated"):
        BertEncoder.from_pretrained(tmp_path)


def test_garbage_safetensors(bert_dir, tmp_path):
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match=r"could not read weights from .*model\.safetensors"):
        BertEncoder.from_pretrained(tmp_path)


def test_no_config_json(bert_dir, tmp_path):
    shutil.copy(bert_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        BertEncoder.from_pretrained(tmp_path)


def test_no_weights_file(bert_dir, tmp_path):
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"no weights in .*model\.safetensors.*pytorch_model\.bin"):
        BertEncoder.from_pretrained(tmp_path)


def test_decoder_from_a_bert_folder_is_refused(bert_dir):
    with pytest.raises(ValueError, match=r"holds a 'bert' model but 'gpt2' was expected"):
        GPT2Decoder.from_pretrained(bert_dir)


def test_encoder_from_a_gpt2_folder_is_refused(gpt2_tiny_dir):
    with pytest.raises(ValueError, match=r"holds a 'gpt2' model but 'bert' was expected"):
        BertEncoder.from_pretrained(gpt2_tiny_dir)


@pytest.mark.parametrize("hf, needle", [
    ({"model_type": "bert", "is_decoder": True}, "is_decoder=True"),
    ({"model_type": "bert", "add_cross_attention": True}, "add_cross_attention=True"),
    ({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "gpt2", "scale_attn_weights": False}, "scale_attn_weights=False"),
])
def test_configs_that_would_compute_something_else_are_refused_by_name(hf, needle):
    from minigpt_ptv2.models import config_from_hf
    with pytest.raises(ValueError, match=needle):
        config_from_hf(hf)


def test_attention_with_a_missing_key_matrix_is_named(bert_dir, tmp_path):
    folder = rewrite(bert_dir, tmp_path / "nokey",
                     lambda sd: {k: v for k, v in sd.items() if "layer.1.attention.self.key.weight" not in k})
    with pytest.raises(ValueError, match=r"missing keys \['encoder\.layer\.1\.attention\.self\.key\.weight'\]"):
        BertEncoder.from_pretrained(folder)


def test_attention_with_mismatched_query_key_value_is_named(bert_dir, tmp_path):
    def narrow_key(sd):
        return {k: (v[:, :-1].contiguous() if "layer.1.attention.self.key.weight" in k else v) for k, v in sd.items()}
    folder = rewrite(bert_dir, tmp_path / "narrow", narrow_key)
    with pytest.raises(ValueError, match="cannot be fused into layers.1.attn.qkv.weight: shapes") as e:
        BertEncoder.from_pretrained(folder)
    assert "encoder.layer.1.attention.self.key.weight" in str(e.value) and "[24, 23]" in str(e.value)
