"""Answers to lesson 06's "Try this" (tests/test_solutions.py runs every try_N).

Each function does the exercise as written, prints what a learner would see, and returns the
finding, so the test can check it holds."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from _lesson import cli, letters, load

P_TRY_1 = 20  # the prompt length of try_1


def try_1() -> dict:
    """Row 0 follows the prompt: with two different prompts on the same sentences its vectors are
    nearly unrelated (cosine 0.13-0.17), while the real [CLS] changes little (cosine 0.85-0.93).
    Row 0 *is* the first prompt vector, processed; pooling it classifies the prompt, not the
    sentence. (The gap is as wide with P=4.)"""
    from minigpt_ptv2 import ShapeTrace
    from minigpt_ptv2.prompts import SoftPrompt
    lesson = load("06")
    model = lesson.backbone()
    P = P_TRY_1
    torch.manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (2, 16))  # [B, N], as in pool_after_slicing
    ids[:, 0] = 101  # [CLS]
    last = f"layer{len(model.layers) - 1}.out"
    pooled = []
    for seed in (1, 2):
        model.attach(SoftPrompt.from_vocab(model, P, generator=torch.Generator().manual_seed(seed)))
        with torch.no_grad(), ShapeTrace(keep=(last,)) as tr:
            out = model(ids)
        model.detach_prompt()
        pooled.append({"real [CLS]": out.last_hidden_state[:, 0], "row 0": tr.tensors[last][:, 0]})  # [B, D] each
    cos = {k: F.cosine_similarity(pooled[0][k], pooled[1][k], dim=-1).mean().item() for k in pooled[0]}
    for k, v in cos.items():
        print(f"cos between prompt 1 and prompt 2, {k:10s}: {v:.3f}")
    assert cos["real [CLS]"] > 0.7 and cos["row 0"] < 0.4
    return cos


def try_2() -> dict:
    """"classify the sentiment" is three WordPiece tokens (ids 26268, 1996, 15792), so P=3 and the
    prompt's rows are exactly those three rows of the word-embedding table [V, D] (copies: training
    the prompt does not touch the table). With num_virtual=8 the ids are cycled: classify, the,
    sentiment, classify, the, sentiment, classify, the."""
    from minigpt_ptv2.data import WordPiece
    from minigpt_ptv2.prompts import SoftPrompt
    model = load("06").backbone()
    tok = WordPiece.from_model_dir()
    ids = tok.encode(["classify the sentiment"])["input_ids"][0, 1:-1]  # drop [CLS] and [SEP]
    prompt = SoftPrompt.from_text(model, ids)
    table = model.embeddings.word_embeddings.weight  # [V, D]
    print(f"ids {ids.tolist()} = {tok.tokens(ids)}: P = {prompt.num_virtual}, weight {list(prompt.weight.shape)}")
    assert prompt.num_virtual == 3 and torch.equal(prompt.weight, table[ids])
    eight = SoftPrompt.from_text(model, ids, num_virtual=8)
    cycled = ids[torch.arange(8) % 3]
    print(f"num_virtual=8: rows from {tok.tokens(cycled)}")
    assert torch.equal(eight.weight, table[cycled])
    return {"P": prompt.num_virtual, "ids": ids.tolist()}


def try_3() -> dict:
    """P+N = 8 rows: `embeddings.out`, every layer's q/k/v, scores, context and output, and the mask
    `[B, 1, P+N, P+N]`. N = 5 rows: `shallow.slice` and `final.logits` [B, N, V]: the decoder slices
    before its head, so no logits exist for the prompt rows. The mask is square and causal over all
    P+N rows: each real token sees the whole prompt and earlier tokens, and each prompt row sees
    only the prompt rows before it."""
    out = cli(*"trace --method soft --model decoder --config gpt2-tiny --B 2 --N 5 --P 3".split())
    spelled = letters(out)  # name -> shape in letters, from the printed table
    for name in ("embeddings.out", "mask.keep", "layer0.attn.scores", "shallow.slice", "final.logits"):
        print(f"{name:20s} {spelled[name]}")
    assert spelled["embeddings.out"] == "[B, P+N, D]" and spelled["mask.keep"] == "[B, 1, P+N, P+N]"
    assert spelled["shallow.slice"] == "[B, N, D]" and spelled["final.logits"] == "[B, N, V]"
    return spelled


def try_4() -> dict:
    """N=44 fits, N=45 does not: under "shifted" the real tokens use positions P..P+N-1, so with
    P=20 and a table of 64 positions the longest input is 64 - 20 = 44. Under "real" both fit (up
    to 64)."""
    lesson = load("06")
    found = {N: lesson.position_policies(N=N) for N in (44, 45)}
    assert found == {44: {"real": True, "shifted": True}, 45: {"real": True, "shifted": False}}, found
    return found


if __name__ == "__main__":
    for name in sorted(n for n in dir() if n.startswith("try_")):
        print(f"--- {name}")
        globals()[name]()
