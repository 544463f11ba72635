"""Bad PEFT adapters and interop that would change predictions, refused by name.

Each row is one example of a rule that holds at every import and export (issue rules 3, 6, 8):
- no result from a broken number: a NaN, infinite, out-of-float32-range or integer tensor in an
  adapter (or in the head --head-from brings) is refused naming the tensor and the file; before
  this, a NaN prompt imported and eval printed a plausible 0.5625 (argmax of NaN is 0);
- adapter_config.json's fields are checked by kind ("num_layers": "2" used to give "num_layers 2
  vs this model's 2") and against the model, naming the field;
- interop that changes predictions does not pass silently: a prompt-tuning SEQ_CLS classifier was
  trained on virtual token 0 while our head reads [CLS]; an --allow-pooling-change without such a
  classifier is a mistake too.
The adapters are written by hand for a tiny BERT (L=2, D=24, H=4); tests/test_peft_interop.py
checks the same rules on adapters PEFT itself saved.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from harness import Case, check
from safetensors.torch import load_file, save_file

from minigpt_ptv2 import BertEncoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.errors import InputError, MissingFileError, NonFiniteError
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
from minigpt_ptv2.interop import import_adapter, save_adapter
from minigpt_ptv2.interop.peft_layout import PEFT_CONFIG, PEFT_WEIGHTS
from minigpt_ptv2.training import build_task_model, save_checkpoint

transformers = pytest.importorskip("transformers")

P, L, D, C = 4, 2, 24, 2
TINY = {}
HEAD = "base_model.classifier."


@pytest.fixture(scope="module", autouse=True)
def tiny_bert(tmp_path_factory):
    torch.manual_seed(6)
    TINY["bert"] = tmp_path_factory.mktemp("bert")
    transformers.BertModel(transformers.BertConfig(
        vocab_size=120, hidden_size=D, num_hidden_layers=L, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64)).save_pretrained(TINY["bert"])
    TINY["gpt2"] = tmp_path_factory.mktemp("gpt2")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=130, n_embd=D, n_layer=L, n_head=4,
                                                         n_positions=64)).save_pretrained(TINY["gpt2"])


@dataclass
class Row(Case):
    setup: Callable = lambda tmp: None  # writes the bad input before the snapshot


# --- writing adapters and checkpoints --------------------------------------------------------------

def adapter(peft_type="PREFIX_TUNING", task_type="FEATURE_EXTRACTION", fields=None, tensors=None,
            config_text=None, head=False):
    """tmp/adapter: a hand-written PEFT adapter for the tiny BERT. fields update adapter_config.json
    (or config_text replaces it); tensors(dict) -> dict edits the tensors before they are saved."""
    def setup(tmp):
        folder = tmp / "adapter"
        folder.mkdir()
        cfg = {"peft_type": peft_type, "task_type": task_type, "num_virtual_tokens": P, **(fields or {})}
        (folder / PEFT_CONFIG).write_text(config_text if config_text is not None else json.dumps(cfg))
        width = L * 2 * D if peft_type == "PREFIX_TUNING" else D
        ts = {"prompt_embeddings": 0.1 * torch.randn(P, width)}
        if head:
            ts.update({HEAD + "weight": 0.1 * torch.randn(C, D), HEAD + "bias": torch.zeros(C)})
        save_file(tensors(ts) if tensors else ts, str(folder / PEFT_WEIGHTS))
    return setup


def poke(key, value):
    def edit(ts):
        t = ts[key].clone()
        t.view(-1)[1] = value
        return {**ts, key: t}
    return edit


def checkpoint(task="sst2", method="soft", edit=None, **kw):
    """tmp/ck: one of our checkpoints on the tiny BERT; edit(tensors) rewrites its weights (the
    recorded sha256 follows, so the edit itself is what must be caught)."""
    def setup(tmp):
        model = build_task_model(task, method, P, encoder=BertEncoder.from_pretrained(TINY["bert"]), **kw)
        save_checkpoint(model, tmp / "ck", task=task, method=method, P=P)
        if edit:
            path, meta_path = tmp / "ck" / "checkpoint.safetensors", tmp / "ck" / "checkpoint.json"
            save_file(edit(dict(load_file(str(path)))), str(path))
            meta = json.loads(meta_path.read_text())
            meta["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            meta_path.write_text(json.dumps(meta))
    return setup


def both(*setups):
    def setup(tmp):
        for s in setups:
            s(tmp)
    return setup


def imp(**kw):
    """import_adapter on tmp/adapter, writing tmp/out; head_from="ck" means tmp/ck."""
    def run(tmp):
        given = {**kw, **({"head_from": tmp / "ck"} if kw.get("head_from") == "ck" else {})}
        return import_adapter(tmp / "adapter", tmp / "out", model_dir=TINY["bert"], **given)
    return run


def cli_imp(*extra):
    return lambda tmp: main(["import-peft", str(tmp / "adapter"), str(tmp / "out"), "--model-dir",
                             str(TINY["bert"]), *[str(tmp / e) if e == "ck" else e for e in extra]])


def _bridge_other_config(tmp):
    model = BertEncoder(preset("bert-tiny"))
    return hidden_to_kv(model, DeepPrompt(preset("bert-tiny").replace(num_hidden_layers=5), P))


def _export_nan(tmp):
    prefix = KVPrefix(preset("bert-tiny"), P, positions="shifted")
    with torch.no_grad():
        prefix.embedding.weight[0, 0] = float("nan")
    return save_adapter(tmp / "out", prefix)


PROMPT_SEQ_CLS = adapter("PROMPT_TUNING", "SEQ_CLS", head=True)


def lm_adapter(method="prefix", task_type=None):
    """tmp/adapter: our export of a prompt on the tiny GPT-2 (CAUSAL_LM), task_type rewritten if given."""
    def setup(tmp):
        from minigpt_ptv2.models import load_pretrained
        from minigpt_ptv2.prompts import GatedPrefix
        decoder = load_pretrained(TINY["gpt2"])
        prompt = (KVPrefix(decoder.config, P, positions="shifted") if method == "prefix"
                  else GatedPrefix(decoder.config, P, join="output"))
        save_adapter(tmp / "adapter", prompt, decoder)
        if task_type:
            path = tmp / "adapter" / PEFT_CONFIG
            path.write_text(json.dumps({**json.loads(path.read_text()), "task_type": task_type}))
    return setup


def cli_imp_lm(*extra):
    return lambda tmp: main(["import-peft", str(tmp / "adapter"), str(tmp / "out"), "--model-dir",
                             str(TINY["gpt2"]), *extra])

ROWS = [
    # --- rule 3: no result from a broken number ------------------------------------------------
    Row("NaN prompt", imp(), ["adapter_model.safetensors", "'prompt_embeddings'", "1 NaN"], NonFiniteError,
        setup=adapter(tensors=poke("prompt_embeddings", float("nan")))),
    Row("cli: NaN prompt", cli_imp("--random-head", "--task", "sst2"), ["'prompt_embeddings'", "NaN"], cli=True,
        setup=adapter(tensors=poke("prompt_embeddings", float("nan")))),
    Row("inf classifier bias", imp(), [f"'{HEAD}bias'", "1 infinite"], NonFiniteError,
        setup=adapter(task_type="SEQ_CLS", head=True, tensors=poke(HEAD + "bias", float("inf")))),
    Row("float64 beyond float32's range", imp(), ["adapter_model.safetensors", "'prompt_embeddings'", "beyond float32's range", "1e+300"],
        NonFiniteError, setup=adapter(tensors=lambda ts: {"prompt_embeddings": ts["prompt_embeddings"].double()
                                                          .index_fill(0, torch.tensor([0]), 1e300)})),
    Row("integer prompt", imp(), ["'prompt_embeddings'", "torch.int64", "floating"], InputError,
        setup=adapter(tensors=lambda ts: {"prompt_embeddings": torch.zeros(P, L * 2 * D, dtype=torch.int64)})),
    Row("head-from: NaN classifier", imp(task="sst2", head_from="ck"),
        ["checkpoint.safetensors", "'heads.sst2.classifier.weight'", "NaN"], NonFiniteError,
        setup=both(adapter("PROMPT_TUNING"), checkpoint(edit=poke("heads.sst2.classifier.weight", float("nan"))))),
    Row("head-from: edited after saving", imp(task="sst2", head_from="ck"), ["checkpoint.safetensors", "sha256"],
        InputError, setup=both(adapter("PROMPT_TUNING"), checkpoint(),
                               lambda tmp: _append(tmp / "ck" / "checkpoint.safetensors"))),
    Row("export a NaN prefix", _export_nan, ["cannot export", "KVPrefix", "'prompt_embeddings'", "NaN"], NonFiniteError),

    # --- rule 6: adapter_config.json, field by field --------------------------------------------
    Row('num_layers "2"', imp(), ["adapter_config.json", "'num_layers'", '"2" (str)'], InputError,
        setup=adapter(fields={"num_layers": "2"})),
    Row('num_virtual_tokens "4"', imp(), ["adapter_config.json", "'num_virtual_tokens'", '"4" (str)'],
        InputError, setup=adapter(fields={"num_virtual_tokens": "4"})),
    Row("num_virtual_tokens true", imp(), ["'num_virtual_tokens'", "positive int", "true (bool)"], InputError,
        setup=adapter(fields={"num_virtual_tokens": True})),
    Row("num_virtual_tokens 0", imp(), ["'num_virtual_tokens'", "positive int", "0"], InputError,
        setup=adapter(fields={"num_virtual_tokens": 0})),
    Row("task_type a number", imp(), ["'task_type'", "a string"], InputError,
        setup=adapter(fields={"task_type": 3})),
    Row("adapter_config a list", imp(), ["adapter_config.json", "JSON object", "list"], InputError,
        setup=adapter(config_text="[]")),
    Row("adapter_config broken", imp(), ["adapter_config.json", "line 1, column"], InputError,
        setup=adapter(config_text='{"peft_type": }')),
    Row("no peft_type", imp(), ["adapter_config.json", "'peft_type'"], InputError,
        setup=adapter(config_text=json.dumps({"num_virtual_tokens": P}))),
    Row("LORA adapter", imp(), ["adapter_config.json", "LORA adapters are not prompts"], InputError,
        setup=adapter(fields={"peft_type": "LORA"})),
    Row("token_dim of another model", imp(), ["adapter_config.json", "token_dim is 768", "D=24"], InputError,
        setup=adapter(fields={"token_dim": 768})),
    Row("encoder-decoder adapter", imp(), ["num_transformer_submodules", "encoder-decoder"], InputError,
        setup=adapter(fields={"num_transformer_submodules": 2})),
    Row("prompt of the wrong shape", imp(), ["prompt_embeddings", "[4, 24]", "[P=4, L*2*D=96]"], InputError,
        setup=adapter(tensors=lambda ts: {"prompt_embeddings": torch.zeros(P, D)})),
    Row("classifier bias [1]", imp(), ["classifier weight is [2, 24] and bias [1]"], InputError,
        setup=adapter(task_type="SEQ_CLS", head=True, tensors=lambda ts: {**ts, HEAD + "bias": torch.zeros(1)})),
    Row("classifier without bias", imp(), ["classifier needs weight and bias", "['weight']"], InputError,
        setup=adapter(task_type="SEQ_CLS", head=True,
                      tensors=lambda ts: {k: v for k, v in ts.items() if k != HEAD + "bias"})),
    Row("unknown tensor", imp(), ["does not know", "'lora_A'"], InputError,
        setup=adapter(tensors=lambda ts: {**ts, "lora_A": torch.zeros(2)})),
    Row("no adapter_model.safetensors", imp(), ["adapter_model.safetensors"], MissingFileError,
        setup=both(adapter(), lambda tmp: (tmp / "adapter" / PEFT_WEIGHTS).unlink())),
    Row("truncated adapter weights", imp(), ["adapter_model.safetensors", "could not read"], InputError,
        setup=both(adapter(), lambda tmp: _truncate(tmp / "adapter" / PEFT_WEIGHTS))),
    Row("cli: num_layers \"2\"", cli_imp(), ["'num_layers'", "(str)"], cli=True,
        setup=adapter(fields={"num_layers": "2"})),

    # --- rule 8: interop that would change predictions -------------------------------------------
    Row("prompt-tuning SEQ_CLS classifier", imp(), ["PROMPT_TUNING SEQ_CLS", "virtual token 0", "[CLS]",
                                                    "--head-from", "--random-head", "--allow-pooling-change"],
        InputError, setup=PROMPT_SEQ_CLS),
    Row("P_TUNING SEQ_CLS classifier", imp(), ["P_TUNING SEQ_CLS", "virtual token 0"], InputError,
        setup=adapter("P_TUNING", "SEQ_CLS", head=True)),
    Row("cli: prompt-tuning SEQ_CLS classifier", cli_imp(), ["virtual token 0", "--allow-pooling-change"],
        cli=True, setup=PROMPT_SEQ_CLS),
    Row("--allow-pooling-change on a prefix adapter", imp(allow_pooling_change=True),
        ["--allow-pooling-change", "PREFIX_TUNING SEQ_CLS adapter has no such classifier"], InputError,
        setup=adapter(task_type="SEQ_CLS", head=True)),
    Row("cli: --allow-pooling-change with --random-head", cli_imp("--allow-pooling-change", "--random-head"),
        ["--allow-pooling-change", "--random-head"], cli=True, setup=PROMPT_SEQ_CLS),
    Row("sentence classifier for conll", imp(task="conll"), ["adapter is a SEQ_CLS adapter", "conll needs a token head"], InputError,
        setup=adapter(task_type="SEQ_CLS", head=True)),
    Row("no head anywhere", imp(task="sst2"), ["--head-from CHECKPOINT", "--random-head"], InputError,
        setup=adapter()),
    Row("head-from a conll checkpoint", imp(task="sst2", head_from="ck"), ["holds a 'conll' head"], InputError,
        setup=both(adapter(), checkpoint("conll"))),
    Row("cli: head-from a missing folder", cli_imp("--task", "sst2", "--head-from", "ck"), ["ck", "checkpoint.json"],
        cli=True, setup=adapter()),
    Row("cli: export real positions", lambda tmp: main(["export-peft", str(tmp / "ck"), str(tmp / "out"),
                                                       "--model-dir", str(TINY["bert"])]),
        ["positions='real'", "--allow-position-change"], cli=True, setup=checkpoint(method="prefix")),
    Row("bridge: prompt for another model", _bridge_other_config, ["L: prompt 5 vs model 3"], InputError),

    # --- decoders: an adapter becomes an lm checkpoint, without a task head ----------------------
    Row("cli: a decoder's adapter with --random-head", cli_imp_lm("--random-head"),
        ["--random-head does not apply", "'gpt2' decoder", "'lm' checkpoints"], cli=True, was="ugly",
        setup=lm_adapter()),
    Row("cli: a decoder's adapter with --task sst2", cli_imp_lm("--task", "sst2"),
        ["--task does not apply", "'gpt2' decoder"], cli=True, was="ugly", setup=lm_adapter()),
    Row("cli: a SEQ_CLS adapter on a decoder", cli_imp_lm(), ["is a SEQ_CLS adapter", "imports a CAUSAL_LM adapter"],
        cli=True, was="ugly", setup=lm_adapter(task_type="SEQ_CLS")),
    Row("cli: an adaption prompt into an lm checkpoint", cli_imp_lm(),
        ["peft_type ADAPTION_PROMPT", "PREFIX_TUNING, PROMPT_TUNING and P_TUNING"], cli=True, was="ugly",
        setup=lm_adapter("gated")),
]


def _append(path: Path):
    path.write_bytes(path.read_bytes() + b" ")


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_refused(row, tmp_path):
    row.setup(tmp_path)
    check(row, tmp_path)
