"""Answers to lesson 14's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, asserts the
finding, and returns it, so the test fails if the answer stops being true."""
from __future__ import annotations


import torch
from einops import rearrange

from _lesson import cli, load


def try_1() -> dict:
    """Only "Lovelace" splits ("love", "##lace"); "Kensington" and "Palace" are single pieces.
    The -100s go on [CLS], [SEP] and "##lace" (a word's later pieces): 9 positions, 6 labelled,
    one per word, each on the word's first piece."""
    from minigpt_ptv2.data import CONLL_LABELS, WordPiece
    tok = WordPiece.from_model_dir()
    words = "Ada Lovelace visited Kensington Palace .".split()
    tags = "B-PER I-PER O B-LOC I-LOC O".split()
    batch = tok.encode_words([words], [[CONLL_LABELS.index(t) for t in tags]])
    pieces, labels = tok.tokens(batch["input_ids"][0].tolist()), batch["labels"][0].tolist()
    print("  ".join(f"{p}:{CONLL_LABELS[x] if x >= 0 else -100}" for p, x in zip(pieces, labels)))
    split = [w for w in words if len(tok.tokens(tok.encode_words([[w]])["input_ids"][0].tolist()[1:-1])) > 1]
    ignored = [p for p, x in zip(pieces, labels) if x == -100]
    print(f"words that split: {split}; -100 on {ignored}")
    assert split == ["Lovelace"] and ignored == ["[CLS]", "##lace", "[SEP]"]
    assert [CONLL_LABELS[x] for x in labels if x >= 0] == tags
    return {"split": split, "ignored": ignored}


def try_2() -> float:
    """No: a cached step never consults the prompt method. The prompt joins the first pass only;
    after that its rows live in the cache (their keys and values), so the step with a freshly
    attached prompt gives exactly the logits of the step with the old one. A new prompt takes
    effect from the next prompt step."""
    lesson = load("14")
    from minigpt_ptv2.prompts import SoftPrompt
    model = lesson.random_gpt2_with_soft_prompt(7)
    torch.manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (1, 9))  # [1, N]
    with torch.no_grad():
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
        old = model(nxt, past=out.cache).logits
        torch.manual_seed(5)
        model.attach(SoftPrompt(model.config, 7, positions="shifted"))
        new = model(nxt, past=out.cache).logits
        fresh = model(torch.cat([ids, nxt], 1)).logits[:, -1:]  # a new prompt step with the new prompt
    gap, moved = float((old - new).abs().max()), float((fresh - new).abs().max())
    print(f"cached step, old prompt vs fresh prompt: max |diff| {gap:.1e}; a new prompt step with the fresh "
          f"prompt moves the logits by {moved:.2f}")
    assert gap == 0.0 and moved > 1e-2
    return gap


def try_3() -> dict:
    """MiniLM (22.7M parameters) is 4.8 times smaller than BERT-base (109.5M), but the prompts
    shrink with it, so the shares grow by less than that. A soft prompt is P*D and D halves
    (768 -> 384): its share grows 2.4 times (0.006% -> 0.014%). A deep prompt (L*P*D) or a K/V
    prefix (P*L*2*D) loses both half its L and half its D: its share grows only 1.2 times
    (deep 0.067% -> 0.081%, prefix 0.135% -> 0.162%). The MLP methods go either way, as their
    hidden widths are fixed or follow D (deep-mlp falls from 7.0% to 4.6%, prefix-mlp rises from
    9.0% to 11.3%). The soft prompt's 0.014% is also lesson 14's BERT-base figure at P=20: P*D fell
    by 5 (15,360 -> 3,072) while the backbone fell by 4.8."""
    from minigpt_ptv2 import preset
    from minigpt_ptv2.prompts import parameter_report
    out = cli("params", "--config", "minilm", "--P", "8")
    print(out.strip())
    mini = {r["method"]: r for r in parameter_report(preset("minilm"), 8)}  # the numbers the CLI prints
    base = {r["method"]: r for r in parameter_report(preset("bert-base"), 8)}  # the same for --config bert-base
    growth = {m: mini[m]["percent"] / base[m]["percent"] for m in mini}
    print(f"backbone: MiniLM {mini['soft']['backbone']:,}, BERT-base {base['soft']['backbone']:,}")
    print("share on MiniLM / share on BERT-base, P=8: " + ", ".join(f"{m} {g:.2f}x" for m, g in growth.items()))
    assert f"{mini['soft']['trainable']:,}" in out and 4.7 < base["soft"]["backbone"] / mini["soft"]["backbone"] < 4.9
    assert 2.3 < growth["soft"] < 2.5 and all(1.1 < growth[m] < 1.3 for m in ("deep", "prefix"))
    assert growth["deep-mlp"] < 1 < growth["prefix-mlp"]
    return growth


def try_4() -> bool:
    """Seed 002's MLP is Linear(D, D) -> Tanh -> Linear(D, 2*L*d_kv), the shape of our prefix MLP
    with hidden = D and d_kv = D. Fixed: build the index on the weight's device, rearrange the
    [P, L*2*D] output as (layer, K/V, head, d), and expand each layer's K and V to [B, H, P, d]
    (a view, stride 0 along B). With the seed's weights copied into KVPrefix(projection=True,
    hidden=D), the L pairs are equal, number for number."""
    from minigpt_ptv2 import preset
    from minigpt_ptv2.prompts import KVPrefix
    lesson = load("14")
    cfg = preset("bert-tiny")
    P, B, D, L, H = 5, 4, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    torch.manual_seed(0)
    seed = lesson.Seed002Prefix(P, L, D, D)

    def fixed_forward(self, batch_size):
        n = self.prompt_embed.num_embeddings
        prompts = self.prefix_mlp(self.prompt_embed(torch.arange(n, device=self.prompt_embed.weight.device)))
        kv = rearrange(prompts, "p (l two h d) -> l two h p d", l=self.num_layers, two=2, h=H)  # [L, 2, H, P, d]
        return [(kv[i, 0].expand(batch_size, -1, -1, -1), kv[i, 1].expand(batch_size, -1, -1, -1))
                for i in range(self.num_layers)]  # L x ([B, H, P, d], [B, H, P, d])

    ours = KVPrefix(cfg, P, projection=True, hidden=D)
    ours.load_state_dict({"embedding.weight": seed.prompt_embed.weight,
                          **{f"transform.{i}.{w}": getattr(seed.prefix_mlp[i], w) for i in (0, 2)
                             for w in ("weight", "bias")}})
    with torch.no_grad():
        fixed, want = fixed_forward(seed, B), ours.kv_prefix(B)
    same = all(torch.equal(a, b) for pair, ref in zip(fixed, want) for a, b in zip(pair, ref))
    print(f"fixed seed 002: {len(fixed)} pairs of {list(fixed[0][0].shape)} = [B, H, P, d], stride along B "
          f"{fixed[0][0].stride(0)}; equal to KVPrefix's: {same}")
    assert same and len(fixed) == L and fixed[0][0].shape == (B, H, P, D // H) and fixed[0][0].stride(0) == 0
    return same


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
