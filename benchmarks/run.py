"""Benchmarks: minigpt_ptv2 side by side with transformers + peft, on the same weights, in one run.

    python benchmarks/run.py            # full run, writes benchmarks/results.json, prints a table
    python benchmarks/run.py --quick    # a smoke run with tiny repeat counts
    python benchmarks/run.py --json out.json --device cuda

Every line is a ratio measured in the same process, because a shared or busy machine makes
absolute times meaningless while it leaves ratios of interleaved measurements usable:

    encoder forward        MiniLM, B=32, N=128, no grad: time ours (fused attention) / transformers
    prefix train step      frozen MiniLM + K/V prefix P=16, B=32, N=128, forward + backward +
                           AdamW on the prompt only: time and peak memory, ours / peft
    prefix decode          GPT-2-124M shape (random weights, identical in both), P=16 prefix,
                           batch 1, 32-token prompt, 64 greedy tokens: tokens/s, ours / peft
    llama prefix decode    the same on a LLaMA-shaped decoder with grouped K/V heads (SmolLM-135M's
                           shape: D=576, L=30, H=9, H_kv=3, tied embeddings; random weights)
    cost of the prefix     our encoder with a P=16 K/V prefix (and a P=16 deep hidden-state
                           prompt) vs P=0, against the (N+P)/N that the arithmetic predicts
    achieved GFLOP/s       our encoder forward (FLOPs counted analytically) vs the same matrix
                           multiplications run back to back with nothing else
    FFN in blocks          our encoder forward with the FFN in blocks of 1024 rows vs all rows at
                           once (information: what fast/row_blocks.py buys, with page faults per call)
    rotary tables          llama decode with RoPE's cos/sin computed once per forward vs twice per
                           layer (information: what fast/rotary_tables.py buys)
    weight layout          a batch-1 decoding step's four products at GPT-2's shapes, W stored
                           [in, out] (our Linear) vs [out, in] (nn.Linear) (information)
    grad checkpoint        frozen MiniLM + K/V prefix P=16, B=32, N=256 train step with each layer
                           recomputed in backward vs kept: peak memory and time (information:
                           what training/recompute.py, `train --grad-checkpoint`, buys and costs)
    mixed batch            MiniLM serving two K/V prefixes (P=16, P=8) and two heads in one batch of
                           32 padded rows vs one task's batch, and vs two per-task batches
    real-data epoch        a training epoch on the first 1,000 SST-2 / CoNLL-2003 training examples
                           (needs the data folder), P=16 prefix, batch 32: time ours / peft
    grouped batches        that epoch of ours in batches grouped by length (train's default) vs
                           randomly shuffled ones (information: what data/grouping.py buys)

Timing: warm-up calls first, then `repeats` rounds in which ours and the reference run one after
the other (order alternating each round); a ratio is the median over rounds of the paired ratio,
so a burst of load from elsewhere hits both sides of a pair.

Each line runs in a fresh Python process (the parent re-runs this script with `--only LINE`).
Lines that ran earlier in the same process leave the heap in a state that shifts later lines:
in one shared process the decode ratio read 0.03-0.06 lower after the training-step line than
on its own. Within a line, both sides share the process, so they are measured alike.

Peak memory on CPU: the profiler's allocation events (`profile_memory=True`) for one train step
after a warm-up step; the peak of the running sum is the most tensor memory the step held beyond
what was alive before it (activations kept for backward, gradients, temporaries). It counts
tensors allocated by torch, not the process's RSS. On CUDA: `torch.cuda.max_memory_allocated`.

Before timing, each pair is checked to compute the same thing (same prompt values, HF/PEFT
position convention), and the difference is stored next to the timings.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minigpt_ptv2 import GPT2Decoder, BertEncoder  # noqa: E402
from minigpt_ptv2.pretrained import default_model_dir  # noqa: E402
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, freeze_backbone  # noqa: E402

B, N, P = 32, 128, 16  # encoder lines
LINES = ["forward", "train", "decode", "llama", "prefix", "gflops", "blocks", "rotary", "layout", "mixed",
         "recompute", "epoch", "grouped"]
# SmolLM-135M's shape: a small real-world LLaMA-architecture decoder with grouped K/V heads
LLAMA_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                   tie_word_embeddings=True)
PROMPT_LEN, NEW_TOKENS = 32, 64  # decode line


# --- timing ----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, device, repeats: int, warmup: int) -> dict:
    """Run each callable `warmup` times, then `repeats` alternating rounds; seconds per call."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    names, times = list(fns), {k: [] for k in fns}
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            t0 = time.perf_counter()
            fns[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def faults_per_call(fn, calls: int = 3) -> float | None:
    """Minor page faults (pages the kernel had to hand the process) per call; None off Linux."""
    try:
        import resource
    except ImportError:
        return None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def paired_ratio(num: list, den: list) -> float:
    """Median over rounds of num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den))


def peak_bytes(step, device) -> int:
    """Most tensor memory held during one call of `step` beyond what was alive before it."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


# --- FLOPs -----------------------------------------------------------------------------------
def encoder_flops(cfg, batch: int, n: int, p: int = 0, hidden_prompt: bool = False) -> int:
    """Multiply-adds x 2 of one encoder forward: the linear layers, Q K^T and probs V (and the
    pooler). Elementwise work (GELU, LayerNorm, softmax) is left out, as is conventional."""
    D, L, F_ = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    rows = n + p if hidden_prompt else n  # rows the layers process
    keys = n + p  # keys each query scores
    per_layer = 2 * batch * rows * (4 * D * D + 2 * D * F_) + 2 * 2 * batch * rows * keys * D
    return L * per_layer + 2 * batch * D * D


def matmul_only(cfg, batch: int, n: int, device):
    """The encoder's matrix multiplications with the same shapes and weight layout ([in, out],
    Q/K/V fused), all rows at once, and nothing between them."""
    D, L, H, F_ = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    x = rand(batch * n, D)  # [B*N, D]
    w_qkv, b_qkv, w_d, b_d = rand(D, 3 * D), rand(3 * D), rand(D, D), rand(D)
    w_in, b_in, w_out = rand(D, F_), rand(F_), rand(F_, D)
    q = rand(batch, H, n, D // H)  # [B, H, N, d]

    @torch.no_grad()
    def run():
        for _ in range(L):
            torch.addmm(b_qkv, x, w_qkv)  # [B*N, 3D]: Q, K, V in one product
            torch.addmm(b_d, x, w_d)  # [B*N, D]: attention output
            h = torch.addmm(b_in, x, w_in)  # [B*N, D_ff]
            torch.addmm(b_d, h, w_out)  # [B*N, D]
            s = q @ q.transpose(-2, -1)  # [B, H, N, N]
            s @ q  # [B, H, N, d]
        torch.addmm(b_d, x[:batch], w_d)  # pooler
    return run


# --- the lines -------------------------------------------------------------------------------
def bench_forward(model_dir, device, repeats, warmup) -> dict:
    from transformers import BertModel
    hf = BertModel.from_pretrained(model_dir, attn_implementation="sdpa").to(device).eval()
    ours = BertEncoder.from_pretrained(model_dir, device=device).eval()
    ids = torch.randint(1000, ours.config.vocab_size, (B, N), device=device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        diff = (hf(input_ids=ids, attention_mask=mask).last_hidden_state
                - ours(ids, mask).last_hidden_state).abs().max().item()
        fns = {"ours": lambda: ours(ids, mask), "ref": lambda: hf(input_ids=ids, attention_mask=mask)}
        t = interleaved(fns, device, repeats, warmup)
        faults = {k: faults_per_call(f) for k, f in fns.items()}
    return {"line": "encoder forward", "shape": f"B={B} N={N}", "unit": "s",
            "ours": statistics.median(t["ours"]), "reference": statistics.median(t["ref"]),
            "ratio": paired_ratio(t["ours"], t["ref"]), "target": "ratio <= 1.0",
            "ok": paired_ratio(t["ours"], t["ref"]) <= 1.0, "max_abs_diff": diff,
            "page_faults_per_call": faults, "times": t}


def bench_train_step(model_dir, device, repeats, warmup) -> list:
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import BertModel
    hf = BertModel.from_pretrained(model_dir, attn_implementation="sdpa").to(device)
    pm = get_peft_model(hf, PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P))
    ours = BertEncoder.from_pretrained(model_dir, device=device)
    prefix = KVPrefix(ours.config, P, positions="shifted").to(device)  # HF/PEFT positions P..P+N-1
    with torch.no_grad():
        prefix.embedding.weight.copy_(pm.prompt_encoder["default"].embedding.weight)  # same layout
    ours.attach(prefix)
    freeze_backbone(ours)
    D = ours.config.hidden_size
    head = torch.nn.Linear(D, 2).to(device).requires_grad_(False)  # a frozen task head, shared
    ids = torch.randint(1000, ours.config.vocab_size, (B, N), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (B,), device=device)

    pm.eval(), ours.eval()
    with torch.no_grad():
        diff = (pm(input_ids=ids, attention_mask=mask).last_hidden_state
                - ours(ids, mask).last_hidden_state).abs().max().item()
    pm.train(), ours.train()  # dropout on, as in training
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)
    opt_ref = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
    n_ours = sum(p.numel() for g in opt_ours.param_groups for p in g["params"])
    n_ref = sum(p.numel() for g in opt_ref.param_groups for p in g["params"])
    assert n_ours == n_ref, f"trainable parameters differ: ours {n_ours}, peft {n_ref}"

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(ours(ids, mask).pooler_output), labels)
        loss.backward()
        opt_ours.step()

    def step_ref():
        opt_ref.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(pm(input_ids=ids, attention_mask=mask).pooler_output), labels)
        loss.backward()
        opt_ref.step()

    t = interleaved({"ours": step_ours, "ref": step_ref}, device, repeats, warmup)
    mem_ours, mem_ref = peak_bytes(step_ours, device), peak_bytes(step_ref, device)
    r = paired_ratio(t["ours"], t["ref"])
    return [{"line": "prefix train step", "shape": f"B={B} N={N} P={P}", "unit": "s",
             "ours": statistics.median(t["ours"]), "reference": statistics.median(t["ref"]),
             "ratio": r, "target": "ratio <= 1.0", "ok": r <= 1.0, "max_abs_diff": diff,
             "trainable": n_ours, "times": t},
            {"line": "prefix train step peak memory", "shape": f"B={B} N={N} P={P}", "unit": "MB",
             "ours": mem_ours / 2**20, "reference": mem_ref / 2**20, "ratio": mem_ours / mem_ref,
             "target": "ratio <= 1.0", "ok": mem_ours <= mem_ref,
             "measures": "cuda max_memory_allocated" if device.type == "cuda"
             else "peak tensor bytes from profiler allocation events, beyond those alive before the step"}]


def real_data(line: str):
    """The data folder, or None (said on stderr): the real-data lines need it, the rest do not."""
    from minigpt_ptv2.data import data_dir
    try:
        return data_dir()
    except FileNotFoundError as e:
        print(f"{line}: skipped ({e})", file=sys.stderr)
        return None


def train_batches(task: str, root, tok, max_length: int, device, grouped: bool = True):
    """The first 1,000 training examples of `task` in the batches `train` draws from them (batch
    32, seed 0): grouped by length, its default, or shuffled (--batches random), on `device`.
    Returns (batches, the loss divisor train uses with them, heads.task_loss; the real tokens)."""
    from minigpt_ptv2.training import distributed
    from minigpt_ptv2.training.run import training_loader
    from minigpt_ptv2.training.tasks import get_task
    t = get_task(task)
    rows = t.batches(t.load("train", root, 1000), tok, batch_size=32, max_length=max_length)
    loader, divisor = training_loader(rows, t, 32, distributed.current(), 0, "grouped" if grouped else "random")
    batches = [{k: v.to(device) for k, v in b.items() if torch.is_tensor(v)} for b in loader]
    return batches, divisor, sum(len(ids) for ids in rows.dataset.input_ids)


def recipe_epoch(batches, forward, params, epochs: int, tokens_per_batch: float | None = None):
    """One training epoch over `batches` as `train` steps it under the prefix's recipe
    (catalog.RECIPES: peak lr, warm-up and decay; TrainConfig's clipping and weight decay), with
    one schedule over the `epochs` epochs the line runs, as over a run's epochs. tokens_per_batch:
    a token task's loss divisor under grouped batches (heads.task_loss)."""
    from minigpt_ptv2.catalog import RECIPES
    from minigpt_ptv2.training.heads import task_loss
    from minigpt_ptv2.training.trainer import TrainConfig, warmup_decay
    recipe, cfg = RECIPES["prefix"], TrainConfig()
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=cfg.weight_decay)
    sched = warmup_decay(opt, len(batches) * epochs, recipe.warmup)

    def run():
        for b in batches:
            opt.zero_grad(set_to_none=True)
            task_loss(forward(b), b["labels"], tokens_per_batch).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
    return run


def bench_real_epoch(model_dir, device, repeats, warmup) -> list:
    """A training epoch on real data, paired: the first 1,000 SST-2 sentences (64 tokens) and CoNLL-2003
    sentences (128 tokens), batch 32, P=16 K/V prefix, ours (TaskModel, as `train` runs it) vs
    transformers + peft prefix tuning with the same head, the same batches in the same order (those
    `train` draws: grouped by length, data/grouping.py), and
    the same prefix values (ours with positions="shifted", as PEFT numbers them). Both sides take
    `train`'s step under the prefix's recipe (catalog.RECIPES: its peak lr, the warm-up-and-decay
    schedule, gradient clipping and weight decay as TrainConfig sets them); where the recipe starts the prefix, from
    real tokens or from noise, is a cost paid once before the first epoch, not timed here."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import BertModel
    from minigpt_ptv2.data import WordPiece
    from minigpt_ptv2.training.tasks import build_task_model
    root = real_data("real-data epoch")
    if root is None:
        return []
    tok, rows = WordPiece.from_model_dir(model_dir), []
    for task, max_length in (("sst2", 64), ("conll", 128)):
        batches, divisor, _ = train_batches(task, root, tok, max_length, device)
        torch.manual_seed(0)
        ours = build_task_model(task, "prefix", P, model_dir=model_dir, positions="shifted").to(device)
        hf = BertModel.from_pretrained(model_dir, attn_implementation="sdpa").to(device)
        pm = get_peft_model(hf, PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P))
        with torch.no_grad():
            ours.encoder.prompt.embedding.weight.copy_(pm.prompt_encoder["default"].embedding.weight)
        head = ours.heads[task]
        ref_head = copy.deepcopy(head)
        b0 = batches[0]
        ours.eval(), pm.eval()
        with torch.no_grad():  # both sides compute the same thing before either is timed
            diff = (ours.encoder(b0["input_ids"], b0["attention_mask"], b0["token_type_ids"]).last_hidden_state
                    - pm(input_ids=b0["input_ids"], attention_mask=b0["attention_mask"],
                         token_type_ids=b0["token_type_ids"]).last_hidden_state)[b0["attention_mask"].bool()]
        ours.train(), pm.train(), ref_head.train()

        def reference(b):
            out = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     token_type_ids=b["token_type_ids"])
            return ref_head.classifier(ref_head.dropout(out.pooler_output if head.kind == "sequence"
                                                        else out.last_hidden_state))

        ours_epoch = recipe_epoch(batches, lambda b: ours(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                  ours.parameters(), warmup + repeats, divisor)
        ref_epoch = recipe_epoch(batches, reference, [*pm.parameters(), *ref_head.parameters()], warmup + repeats,
                                 divisor)
        t = interleaved({"ours": ours_epoch, "ref": ref_epoch}, device, repeats, warmup)
        r = paired_ratio(t["ours"], t["ref"])
        rows.append({"line": f"train epoch, real {task}", "shape": f"1000 examples, N<={max_length}, B=32, P={P}",
                     "unit": "s", "ours": statistics.median(t["ours"]), "reference": statistics.median(t["ref"]),
                     "ratio": r, "target": "ratio <= 1.0", "ok": r <= 1.0, "batches": len(batches),
                     "max_abs_diff": diff.abs().max().item(), "times": t})
    return rows


def bench_grouped_batches(model_dir, device, repeats, warmup) -> list:
    """What data/grouping.py buys: our training epoch on the first 1,000 SST-2 / CoNLL-2003
    examples (as the epoch line: P=16 K/V prefix, batch 32, the prefix's recipe) with `train`'s
    batches grouped by length vs the same examples in randomly shuffled batches (--batches random),
    each from the loader `train` builds. Same model, same steps; only the rows that share a batch
    differ, so the padded positions each side computes are reported too."""
    from minigpt_ptv2.data import WordPiece
    from minigpt_ptv2.training.tasks import build_task_model
    root = real_data("grouped batches")
    if root is None:
        return []
    tok, rows = WordPiece.from_model_dir(model_dir), []
    for task, max_length in (("sst2", 64), ("conll", 128)):
        sides, divisor = {}, {}
        for name in ("grouped", "random"):
            sides[name], divisor[name], real_tokens = train_batches(task, root, tok, max_length, device,
                                                                    grouped=name == "grouped")
        torch.manual_seed(0)
        model = build_task_model(task, "prefix", P, model_dir=model_dir).to(device).train()
        fns = {name: recipe_epoch(bs, lambda b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                  model.parameters(), 2 * (warmup + repeats), divisor[name])
               for name, bs in sides.items()}
        times = interleaved(fns, device, repeats, warmup)
        r = paired_ratio(times["grouped"], times["random"])
        padded = {name: sum(b["input_ids"].numel() for b in bs) for name, bs in sides.items()}
        rows.append({"line": f"grouped batches, {task}", "shape": f"1000 examples, N<={max_length}, B=32, P={P}",
                     "unit": "s", "ours": statistics.median(times["grouped"]),
                     "reference": statistics.median(times["random"]), "ratio": r,
                     "target": "information (random batches = 1)", "ok": None, "batches": len(sides["grouped"]),
                     "real_tokens": real_tokens, "padded_grouped": padded["grouped"],
                     "padded_random": padded["random"], "times": times})
    return rows


def _decode_pair(hf, ours, device):
    """Our decoder and PEFT's prefix tuning on the same weights and the same P=16 prefix values:
    (generate ours, generate reference, how many of the 64 greedy tokens agree)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    hf.to(device)
    pm = get_peft_model(hf, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=P)).eval()
    prefix = KVPrefix(ours.config, P, positions="shifted").to(device)  # PEFT's positions, keys as given
    with torch.no_grad():
        prefix.embedding.weight.copy_(pm.prompt_encoder["default"].embedding.weight)
    ours.attach(prefix)
    ids = torch.randint(0, ours.config.vocab_size, (1, PROMPT_LEN), device=device)
    mask = torch.ones_like(ids)

    def run_ours():
        return ours.generate(ids, NEW_TOKENS)

    def run_ref():
        return pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                           eos_token_id=None, pad_token_id=0)  # never stop early: 64 tokens, as ours

    a, b = run_ours(), run_ref()
    assert b.shape[1] == PROMPT_LEN + NEW_TOKENS, f"reference generated {b.shape[1] - PROMPT_LEN} tokens"
    return run_ours, run_ref, int((a[0, PROMPT_LEN:] == b[0, PROMPT_LEN:]).sum())


def _decode_row(line, t, same) -> dict:
    r = paired_ratio(t["ref"], t["ours"])  # tokens/s ours / tokens/s ref = time ref / time ours
    return {"line": line, "shape": f"batch 1, {PROMPT_LEN}+{NEW_TOKENS} tokens, P={P}",
            "unit": "tok/s", "ours": NEW_TOKENS / statistics.median(t["ours"]),
            "reference": NEW_TOKENS / statistics.median(t["ref"]), "ratio": r,
            "target": "ratio >= 1.0", "ok": r >= 1.0, "same_tokens": f"{same}/{NEW_TOKENS}", "times": t}


def bench_decode(device, repeats, warmup) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()  # GPT-2 124M shape, random weights
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = GPT2Decoder.from_pretrained(tmp, device=device).eval()
    run_ours, run_ref, same = _decode_pair(hf, ours, device)
    return _decode_row("prefix decode", interleaved({"ours": run_ours, "ref": run_ref}, device, repeats, warmup), same)


def _llama_pair(device):
    from transformers import LlamaConfig, LlamaForCausalLM
    from minigpt_ptv2.models.llama import LlamaDecoder
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**LLAMA_SHAPE)).eval()  # random weights
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = LlamaDecoder.from_pretrained(tmp, device=device).eval()
    return hf, ours


def bench_llama_decode(device, repeats, warmup) -> dict:
    hf, ours = _llama_pair(device)
    run_ours, run_ref, same = _decode_pair(hf, ours, device)
    row = _decode_row("llama prefix decode", interleaved({"ours": run_ours, "ref": run_ref}, device, repeats, warmup),
                      same)
    row["shape"] += ", D=576 L=30 H=9 H_kv=3"
    return row


def bench_rotary_tables(device, repeats, warmup) -> dict:
    from minigpt_ptv2.fast import rotary_tables
    hf, ours = _llama_pair(device)
    run_ours, _, _ = _decode_pair(hf, ours, device)

    def with_tables(on):
        def run():
            rotary_tables.enable(ours) if on else rotary_tables.disable(ours)
            return run_ours()
        return run

    t = interleaved({"once": with_tables(True), "per_layer": with_tables(False)}, device, repeats, warmup)
    return {"line": "rotary tables once/per layer", "shape": f"llama decode, batch 1, {NEW_TOKENS} tokens",
            "unit": "s", "ours": statistics.median(t["once"]), "reference": statistics.median(t["per_layer"]),
            "ratio": paired_ratio(t["once"], t["per_layer"]), "target": "information", "ok": None, "times": t}


def bench_prefix_cost(model_dir, device, repeats, warmup) -> list:
    ours = BertEncoder.from_pretrained(model_dir, device=device).eval()
    cfg = ours.config
    kv = KVPrefix(cfg, P, init_std=0.02).to(device)
    deep = DeepPrompt(cfg, P).to(device)
    ids = torch.randint(1000, cfg.vocab_size, (B, N), device=device)
    mask = torch.ones_like(ids)

    def with_method(m):
        def run():
            ours.attach(m) if m is not None else ours.detach_prompt()
            ours(ids, mask)
        return run

    with torch.no_grad():
        t = interleaved({"P0": with_method(None), "kv": with_method(kv), "deep": with_method(deep)},
                        device, repeats, warmup)
    ours.detach_prompt()
    bound = (N + P) / N
    rows = []
    for key, name, hidden in (("kv", "cost of K/V prefix", False), ("deep", "cost of deep prompt", True)):
        r = paired_ratio(t[key], t["P0"])
        flop_ratio = encoder_flops(cfg, B, N, P, hidden) / encoder_flops(cfg, B, N)
        rows.append({"line": name, "shape": f"B={B} N={N} P={P} vs P=0", "unit": "s",
                     "ours": statistics.median(t[key]), "reference": statistics.median(t["P0"]),
                     "ratio": r, "predicted_flop_ratio": flop_ratio, "target": f"ratio <= 1.1 x (N+P)/N = {1.1 * bound:.3f}",
                     "ok": r <= 1.1 * bound, "times": {"prompt": t[key], "P0": t["P0"]}})
    return rows


def bench_mixed(model_dir, device, repeats, warmup) -> list:
    """Two tasks over one backbone: an SST-2 prefix (P=16) and a CoNLL prefix (P=8), rows alternating.
    A mixed batch of B rows vs a single-task batch of B rows, and vs the same rows in two per-task
    batches. A mixed batch pays for P_max keys in every row and a per-row copy of the prefixes."""
    from minigpt_ptv2.training.heads import Head, TaskModel
    from minigpt_ptv2.training.mixed import MixedTaskModel
    encoder = BertEncoder.from_pretrained(model_dir, device=device).eval()
    cfg, D = encoder.config, encoder.config.hidden_size
    members = {"sst2": (KVPrefix(cfg, P, init_std=0.02), Head(D, 2, "sequence")),
               "conll": (KVPrefix(cfg, P // 2, init_std=0.02), Head(D, 9, "token"))}
    single = TaskModel(encoder, {"sst2": members["sst2"][1]})
    ids = torch.randint(1000, cfg.vocab_size, (B, N), device=device)
    # served text comes padded (lengths N/4..N): every batch, mixed or not, then runs the masked kernel
    lengths = torch.randint(N // 4, N + 1, (B,), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(N)[None] < lengths[:, None]).long().to(device)  # [B, N]
    tasks = ["sst2", "conll"] * (B // 2)
    halves = {t: [i for i, n in enumerate(tasks) if n == t] for t in members}
    alone = {t: (m.to(device), h.to(device)) for t, (m, h) in members.items()}

    def one_task():
        encoder.attach(alone["sst2"][0])
        single(ids, mask)

    def per_task():
        for t, rows in halves.items():
            encoder.attach(alone[t][0])
            alone[t][1](encoder(ids[rows], mask[rows]))

    mixed = MixedTaskModel(encoder, members).to(device).eval()
    mixed_prompt = encoder.detach_prompt()

    def one_mixed():
        encoder.attach(mixed_prompt)
        mixed(ids, mask, tasks=tasks)

    with torch.no_grad():
        t = interleaved({"mixed": one_mixed, "single": one_task, "split": per_task}, device, repeats, warmup)
    encoder.detach_prompt()
    shape = f"B={B} N={N}, P={P} and {P // 2}, 2 heads"
    rows = []
    for key, name, target, bound in (("single", "mixed batch vs one task", "ratio <= 1.111 (>= 0.9x its rows/s)", 1 / 0.9),
                                     ("split", "mixed batch vs per-task", "ratio <= 1.111", 1 / 0.9)):
        r = paired_ratio(t["mixed"], t[key])
        rows.append({"line": name, "shape": shape, "unit": "s", "ours": statistics.median(t["mixed"]),
                     "reference": statistics.median(t[key]), "ratio": r, "target": target, "ok": r <= bound,
                     "rows_per_s": {k: B / statistics.median(v) for k, v in t.items()}, "times": t})
    return rows


def bench_grad_checkpoint(model_dir, device, repeats, warmup) -> list:
    """A K/V prefix train step on the frozen MiniLM with gradient checkpointing vs without, at a
    length where the activations kept for backward dominate the step's memory."""
    from minigpt_ptv2.training.recompute import disable_grad_checkpoint, enable_grad_checkpoint
    n = 2 * N  # 256: activations grow with N (the scores with N^2), the prefix does not
    ours = BertEncoder.from_pretrained(model_dir, device=device)
    ours.attach(KVPrefix(ours.config, P).to(device))
    freeze_backbone(ours)
    head = torch.nn.Linear(ours.config.hidden_size, 2).to(device).requires_grad_(False)
    ids = torch.randint(1000, ours.config.vocab_size, (B, n), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (B,), device=device)
    ours.train()  # dropout on, as in training (and recomputed with the same masks)
    opt = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-3)

    def step(recompute: bool):
        def run():
            enable_grad_checkpoint(ours) if recompute else disable_grad_checkpoint(ours)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(head(ours(ids, mask).pooler_output), labels).backward()
            opt.step()
        return run

    t = interleaved({"recompute": step(True), "keep": step(False)}, device, repeats, warmup)
    mem = {k: peak_bytes(step(k == "recompute"), device) / 2**20 for k in ("recompute", "keep")}
    shape = f"B={B} N={n} P={P}"
    return [{"line": "grad checkpoint step time", "shape": shape, "unit": "s",
             "ours": statistics.median(t["recompute"]), "reference": statistics.median(t["keep"]),
             "ratio": paired_ratio(t["recompute"], t["keep"]), "target": "information", "ok": None,
             "times": t},
            {"line": "grad checkpoint peak memory", "shape": shape, "unit": "MB", "ours": mem["recompute"],
             "reference": mem["keep"], "ratio": mem["recompute"] / mem["keep"], "target": "information",
             "ok": None, "measures": "cuda max_memory_allocated" if device.type == "cuda"
             else "peak tensor bytes from profiler allocation events, beyond those alive before the step"}]


def bench_ffn_blocks(model_dir, device, repeats, warmup) -> dict:
    from minigpt_ptv2.fast import row_blocks
    ours = BertEncoder.from_pretrained(model_dir, device=device).eval()
    ids = torch.randint(1000, ours.config.vocab_size, (B, N), device=device)
    rows = 1024

    def with_blocks(on):
        def run():
            row_blocks.enable(ours, rows) if on else row_blocks.disable(ours)
            ours(ids)
        return run

    fns = {"blocks": with_blocks(True), "whole": with_blocks(False)}
    with torch.no_grad():
        t = interleaved(fns, device, repeats, warmup)
        faults = {k: faults_per_call(f) for k, f in fns.items()}
    return {"line": "FFN in blocks / at once", "shape": f"B={B} N={N}, {rows} rows",
            "unit": "s", "ours": statistics.median(t["blocks"]), "reference": statistics.median(t["whole"]),
            "ratio": paired_ratio(t["blocks"], t["whole"]), "target": "information", "ok": None,
            "page_faults_per_call": faults, "times": t}


def bench_layout(device, repeats, warmup) -> dict:
    """One decoding step's matrix products (batch 1) at GPT-2's shapes, in both weight layouts."""
    g = torch.Generator().manual_seed(0)
    shapes = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # qkv, attention out, FFN in, FFN out
    mats = [(torch.randn(1, i, generator=g).to(device), torch.randn(i, o, generator=g).to(device),
             torch.randn(o, generator=g).to(device)) for i, o in shapes]
    out_in = [(x, w.t().contiguous(), b) for x, w, b in mats]  # nn.Linear's [out, in]

    def in_out_step():
        for _ in range(20):
            for x, w, b in mats:
                torch.addmm(b, x, w)  # our Linear: x W + b, W [in, out]

    def out_in_step():
        for _ in range(20):
            for x, w, b in out_in:
                F.linear(x, w, b)  # nn.Linear: x W^T + b, W [out, in]

    with torch.no_grad():
        t = interleaved({"in_out": in_out_step, "out_in": out_in_step}, device, repeats, warmup)
    return {"line": "weight layout [in,out]/[out,in]", "shape": "batch 1, GPT-2 qkv/out/fc/proj, x20",
            "unit": "s", "ours": statistics.median(t["in_out"]), "reference": statistics.median(t["out_in"]),
            "ratio": paired_ratio(t["in_out"], t["out_in"]), "target": "information", "ok": None, "times": t}


def bench_gflops(model_dir, device, repeats, warmup) -> dict:
    ours = BertEncoder.from_pretrained(model_dir, device=device).eval()
    cfg = ours.config
    ids = torch.randint(1000, cfg.vocab_size, (B, N), device=device)
    gemms = matmul_only(cfg, B, N, device)
    with torch.no_grad():
        t = interleaved({"ours": lambda: ours(ids), "gemm": gemms}, device, repeats, warmup)
    flops = encoder_flops(cfg, B, N)
    ours_rate = flops / statistics.median(t["ours"]) / 1e9
    gemm_rate = flops / statistics.median(t["gemm"]) / 1e9
    return {"line": "encoder GFLOP/s", "shape": f"B={B} N={N}, {flops / 1e9:.1f} GFLOP", "unit": "GFLOP/s",
            "ours": ours_rate, "reference": gemm_rate, "ratio": paired_ratio(t["gemm"], t["ours"]),
            "target": "fraction of plain-matmul rate (information)", "ok": None, "times": t}


# --- report ----------------------------------------------------------------------------------
def fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def table(rows: list) -> str:
    head = f"{'device':<7}{'line':<31}{'ours':>10}{'ref':>10}{'unit':>8}{'ratio':>8}  target"
    lines = [head, "-" * len(head)]
    for r in rows:
        ok = "" if r.get("ok") is None else ("  ok" if r["ok"] else "  MISSED")
        extra = f" (flops {r['predicted_flop_ratio']:.3f})" if "predicted_flop_ratio" in r else ""
        lines.append(f"{r['device']:<7}{r['line']:<31}{fmt(r['ours']):>10}{fmt(r['reference']):>10}"
                     f"{r['unit']:>8}{r['ratio']:>8.3f}  {r['target']}{extra}{ok}")
    return "\n".join(lines)


def run_isolated(args, names: list) -> int:
    """One fresh process per line; merge their JSON into one file and print one table."""
    import subprocess
    from minigpt_ptv2.progress import progress
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in progress(names, "benchmark lines", unit="line"):
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, __file__, "--only", name, "--json", str(out), "--threads", str(args.threads)]
            cmd += ["--quick"] if args.quick else []
            for dev in args.device or []:
                cmd += ["--device", dev]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results.append(json.loads(out.read_text()))
    merged = {**results[0], "rows": [r for res in results for r in res["rows"]]}
    merged["settings"]["isolation"] = "one process per line"
    for dev in dict.fromkeys(r["device"] for r in merged["rows"]):
        print(table([r for r in merged["rows"] if r["device"] == dev]), flush=True)
    Path(args.json).write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny repeat counts: a smoke run, not a measurement")
    ap.add_argument("--json", default=str(Path(__file__).with_name("results.json")), help="where to write results")
    ap.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--only", action="append", choices=LINES,
                    help="run only these lines")
    ap.add_argument("--same-process", action="store_true",
                    help="run every line in this process instead of one fresh process per line")
    args = ap.parse_args(argv)
    names = args.only or LINES
    if len(names) > 1 and not args.same_process:
        return run_isolated(args, names)
    torch.set_num_threads(args.threads)
    repeats, warmup = (2, 1) if args.quick else (9, 2)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    model_dir = default_model_dir()
    only = set(names)
    rows = []
    for name in devices:
        device = torch.device(name)
        torch.manual_seed(0)
        if "forward" in only:
            rows.append(bench_forward(model_dir, device, repeats, warmup))
        if "train" in only:
            rows += bench_train_step(model_dir, device, max(2, repeats // 2), 1)
        if "decode" in only:
            rows.append(bench_decode(device, max(2, repeats // 2), 1))
        if "llama" in only:
            rows.append(bench_llama_decode(device, max(2, repeats // 2), 1))
        if "prefix" in only:
            rows += bench_prefix_cost(model_dir, device, repeats, warmup)
        if "gflops" in only:
            rows.append(bench_gflops(model_dir, device, repeats, warmup))
        if "blocks" in only:
            rows.append(bench_ffn_blocks(model_dir, device, repeats, warmup))
        if "rotary" in only:
            rows.append(bench_rotary_tables(device, max(2, repeats // 2), 1))
        if "layout" in only:
            rows.append(bench_layout(device, repeats, warmup))
        if "mixed" in only:
            rows += bench_mixed(model_dir, device, repeats, warmup)
        if "epoch" in only:
            rows += bench_real_epoch(model_dir, device, 3, 1)
        if "grouped" in only:
            rows += bench_grouped_batches(model_dir, device, 3, 1)
        if "recompute" in only:
            rows += bench_grad_checkpoint(model_dir, device, max(2, repeats // 2), 1)
        for r in rows:
            r.setdefault("device", name)
        print(table([r for r in rows if r["device"] == name]), flush=True)
    import peft
    import transformers
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": sys.version.split()[0], "torch": torch.__version__,
                          "transformers": transformers.__version__, "peft": peft.__version__,
                          "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "settings": {"quick": args.quick, "repeats": repeats, "warmup": warmup,
                           "isolation": "one process for every line" if len(names) > 1 else "this line alone"},
              "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
