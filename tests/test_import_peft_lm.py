"""`import-peft` for decoders, from the command line: a PEFT prefix- or prompt-tuning adapter made on
transformers' model of each decoder in the architectures table (random weights, saved here) becomes
an "lm" checkpoint that `generate` uses, giving PEFT's own greedy continuation; the head options
that only an encoder's task checkpoint has are refused by name (tests/bad_inputs/test_interop.py)."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from architectures import ARCHS, DECODERS, hf_folder
from minigpt_ptv2.cli import main
from minigpt_ptv2.training.lm import load_lm_checkpoint

transformers = pytest.importorskip("transformers")
import reference as R  # noqa: E402
from test_train_lm import V, bpe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
P, NEW = 3, 8
# Ours vs PEFT on these tiny decoders: the same float32 arithmetic through other kernels and in
# another order, a few ulps per layer (observed about 2e-6); a wrong prompt moves logits by 1e-2.
LOGITS = 1e-5


def cli(argv) -> tuple[int, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.mark.parametrize("kind", ["prefix", "soft"])
@pytest.mark.parametrize("arch", DECODERS)
def test_a_decoder_adapter_imports_from_the_command_line_and_generates_as_peft_does(arch, kind, tmp_path):
    # a window over the whole text, as in tests/test_train_lm.py: the prompt stays in sight of every token
    windowed = "sliding_window" in ARCHS[arch].tiny.to_dict()
    model_dir = hf_folder(arch, tmp_path / "model", 4, {"sliding_window": 64} if windowed else None,
                          vocab_size=V, initializer_range=0.3)
    bpe().save(str(model_dir / "tokenizer.json"))
    with R._quiet():
        base = getattr(transformers, ARCHS[arch].hf_class).from_pretrained(model_dir).eval()
    g = torch.Generator().manual_seed(9)
    if kind == "prefix":
        pm = R.peft_prefix_model(base, P, torch.randn(P, ARCHS[arch].tiny.prefix_width, generator=g))  # [P, L*2*H_kv*d]
    else:
        pm = R.peft_prompt_model(base, P, torch.randn(P, base.config.hidden_size, generator=g))
    pm.save_pretrained(tmp_path / "adapter")

    code, printed = cli(["import-peft", tmp_path / "adapter", tmp_path / "ck", "--model-dir", model_dir, "--json"])
    assert code == 0
    info = json.loads(printed)
    assert (info["task"], info["method"], info["P"], info["head"]) == ("lm", kind, P, None)

    code, printed = cli(["generate", tmp_path / "ck", "the cat", "--max-new-tokens", NEW, "--ignore-eos", "--json"])
    assert code == 0
    out = json.loads(printed)
    ids = torch.tensor([out["input_ids"]])  # [1, N]
    want = R.peft_generate(pm, ids, max_new_tokens=NEW)[0, ids.shape[1]:].tolist()
    assert out["new_ids"] == want
    decoder, _ = load_lm_checkpoint(tmp_path / "ck")
    with torch.no_grad():
        ours = decoder(ids).logits  # [1, N, V]
        assert (ours - R.run_peft_lm_logits(pm, ids)).abs().max().item() <= LOGITS
        decoder.detach_prompt()
        assert (ours - decoder(ids).logits).abs().max() > 1e-2  # the imported prompt acts
