"""Answers to lesson 09's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations


import torch

from _lesson import cli, load


def try_1() -> dict:
    """Without ln_1 the prefix holds the keys and values of the raw h, not of the ln_1(h) that the
    pre-LN block really attends to: the real tokens' logits move by whole units (1.4 on
    gpt2-tiny with this seed), where the true bridge agrees to float rounding (0 here)."""
    from minigpt_ptv2 import GPT2Decoder, preset
    from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv
    cfg = preset("gpt2-tiny")
    torch.manual_seed(0)
    model = GPT2Decoder(cfg).eval()
    torch.manual_seed(1)
    deep = DeepPrompt(cfg, 4, init_std=0.5).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 8))  # [B, N]
    with torch.no_grad():
        h = torch.cat(deep.hidden_prompts(1))  # [L, P, D]
        kv = torch.stack([torch.cat(layer.attn.project(h[i][None])[1:])  # K, V of h itself: [2, H, P, d]
                          for i, layer in enumerate(model.layers)])  # [L, 2, H, P, d]
        want = model.attach(deep)(ids).logits
        right = model.attach(hidden_to_kv(model, deep))(ids).logits
        wrong = model.attach(KVPrefix.from_layer_kv(cfg, kv))(ids).logits
    model.detach_prompt()
    gaps = {"kv_from_hidden (ln_1)": float((want - right).abs().max()),
            "attn.project (no ln_1)": float((want - wrong).abs().max())}
    for name, gap in gaps.items():
        print(f"deep prompt vs prefix from {name}: max |logits diff| = {gap:.2e}")
    assert gaps["kv_from_hidden (ln_1)"] < 1e-5 and gaps["attn.project (no ln_1)"] > 1e-2
    return gaps


def try_2() -> dict:
    """No easier: a tied prefix (K = V) is still about 0.71 out of reach. The tied pairs form a
    D-dimensional subspace of their own, which meets the reachable one (h W_K + b_K, h W_V + b_V)
    only at a point for generic weights, so random tied pairs are as far out as random free ones."""
    from minigpt_ptv2 import BertEncoder, preset
    from minigpt_ptv2.prompts import DeepPrompt, hidden_to_kv
    lesson = load("09")
    torch.manual_seed(0)
    model = BertEncoder(preset("minilm")).eval()  # the lesson's full-mode model: MiniLM's shape, random weights
    torch.manual_seed(2)
    deep = DeepPrompt(model.config, 8, init_std=0.5)
    with torch.no_grad():
        bridged = hidden_to_kv(model, deep).layer_kv()[0]  # [2, H, P, d]
        free = torch.randn_like(bridged) * bridged.std()
        tied = free.clone()
        tied[1] = tied[0]  # V = K
        out = {name: lesson.unreachable_fraction(model.layers[0].attn, kv)
               for name, kv in (("free", free), ("tied", tied))}
    print(f"unreachable fraction: free random prefix {out['free']:.3f}, tied (K = V) {out['tied']:.3f}")
    assert abs(out["tied"] - 2 ** -0.5) < 0.05 and abs(out["free"] - 2 ** -0.5) < 0.05
    return out


def _trace(method: str) -> dict:
    out = cli("trace", "--method", method, "--config", "minilm", "--B", "2", "--N", "9", "--P", "5", "--layers", "0")
    rows = [line.split() for line in out.splitlines() if line[:1].isalpha() and "[" in line]
    return {r[0]: " ".join(r[1:]) for r in rows if r[0] != "name"}


def try_3() -> dict:
    """Only the hidden-state prompt has deep.prompts, layer0.prompt, layer0.inject and layer0.slice;
    only the K/V prefix has prefix.table, prefix.kv, prefix_k/v and k/v_with_prefix. The deep
    prompt's layer runs P+N = 14 query rows ([2, 12, 14, 32]), the prefix's N = 9 ([2, 12, 9, 32])."""
    deep, prefix = _trace("deep"), _trace("prefix")
    only_deep, only_prefix = sorted(set(deep) - set(prefix)), sorted(set(prefix) - set(deep))
    print("only in the hidden-state trace:", only_deep)
    print("only in the K/V prefix trace:  ", only_prefix)
    print(f"queries: deep {deep['layer0.attn.q']}, prefix {prefix['layer0.attn.q']}")
    assert only_deep == ["deep.prompts", "layer0.inject", "layer0.prompt", "layer0.slice"]
    assert set(only_prefix) >= {"prefix.table", "prefix.kv", "layer0.attn.prefix_k", "layer0.attn.prefix_v",
                                "layer0.attn.k_with_prefix", "layer0.attn.v_with_prefix"}
    assert deep["layer0.attn.q"].startswith("[2, 12, 14, 32]") and prefix["layer0.attn.q"].startswith("[2, 12, 9, 32]")
    return {"deep": only_deep, "prefix": only_prefix}


def try_4() -> dict:
    """P = N: the ratio is (P+N)/N, so it is 2 when the prompt is as long as the sentence (P = 32
    for N = 32, P = 128 for N = 128), just under 2 because the pooler runs once either way."""
    from minigpt_ptv2 import preset
    lesson = load("09")
    cfg = preset("minilm")
    found = {}
    for N in (32, 128):
        ratio = {P: lesson.forward_flops(cfg, 1, P + N, P + N) / lesson.forward_flops(cfg, 1, N, P + N)
                 for P in range(1, 2 * N)}
        found[N] = min(ratio, key=lambda P: abs(ratio[P] - 2))
        print(f"N={N}: ratio {ratio[found[N]]:.4f} at P={found[N]}")
    assert found == {32: 32, 128: 128}
    return found


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
