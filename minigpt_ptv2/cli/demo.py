"""`demo`: the guided tour, offline, in a few minutes on a CPU.

1. load the shipped pretrained BERT (all-MiniLM-L6-v2) into our hand-written encoder;
2. prove it agrees with HuggingFace transformers (when installed);
3. run both deep-prompt styles side by side and print their shape walks;
4. check the bridge between them on the real model;
5. count what each method trains;
6. train a K/V prefix briefly on SST-2 (or an embedded tiny set when SST-2 is not on disk);
7. draw where real tokens put their attention on the prefix.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

NAME = "demo"
HELP = "guided tour: pretrained BERT, equivalence, both deep styles, the bridge, a short training run"
DESCRIPTION = __doc__


def add_arguments(p):
    p.add_argument("--model-dir", default=None, help="HuggingFace-format BERT folder (default: shipped MiniLM)")
    p.add_argument("--data-dir", default=None, help="folder holding sst2/ (default: $MINIGPT_PTV2_DATA or shared/data)")
    p.add_argument("--out", default="runs/demo", help="where the checkpoint and figure go")
    p.add_argument("--P", type=int, default=16, help="prompt / prefix length for the training run")
    p.add_argument("--max-train", type=int, default=4000, help="SST-2 training examples for the short run")
    p.add_argument("--max-dev", type=int, default=872, help="SST-2 dev examples to score")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests): a few seconds of training")


def step(n: int, title: str) -> None:
    print(f"\n{'=' * 78}\n{n}. {title}\n{'=' * 78}", flush=True)


def sentences(data_dir):
    """Real SST-2 when available, else the embedded tiny set; returns (train, dev, source)."""
    from ..data import load_sst2
    from ..data.tiny import tiny_sentiment
    try:
        return load_sst2("train", data_dir), load_sst2("dev", data_dir), "SST-2"
    except FileNotFoundError as e:
        print(f"(SST-2 not found: {e}; using the embedded tiny sentiment set)")
        return tiny_sentiment("train"), tiny_sentiment("dev"), "embedded tiny set"


RECORD = Path(__file__).resolve().parents[1] / "reference_outputs" / "minilm_bertmodel.safetensors"


def check_equivalence(encoder) -> bool:
    """Compare with transformers.BertModel's outputs on the shipped MiniLM, recorded in the package
    (tests/test_reference_outputs.py checks the record against live transformers on every run)."""
    from safetensors.torch import load_file
    ref = load_file(str(RECORD))
    batch = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        ours = encoder(**batch)
    d_h = (ours.last_hidden_state - ref["last_hidden_state"]).abs().max().item()
    d_p = (ours.pooler_output - ref["pooler_output"]).abs().max().item()
    ok = d_h <= 1e-5 and d_p <= 1e-5
    print(f"{list(batch['input_ids'].shape)} batch with padding and both token types")
    print(f"max |ours - transformers|: last_hidden_state {d_h:.2e}, pooler {d_p:.2e}  "
          f"(tolerance 1e-5: {'OK' if ok else 'FAILED'})")
    return ok


def side_by_side(encoder, batch, P: int) -> None:
    from ..prompts import DeepPrompt, KVPrefix
    from ..trace import ShapeTrace
    B, N = batch["input_ids"].shape
    for method in (DeepPrompt(encoder.config, P, init_std=0.02), KVPrefix(encoder.config, P)):
        encoder.attach(method)
        with torch.no_grad(), ShapeTrace.for_model(encoder, B=B, N=N, layers=(0,)) as tr:
            encoder(**batch)
        print(f"\n--- {type(method).__name__} ({method.kind}) ---")
        print(tr.select("layer0.").table())
        print(tr.walk(0))
    encoder.detach_prompt()


def bridge(encoder, batch, P: int) -> bool:
    from ..prompts import DeepPrompt, hidden_to_kv
    deep = DeepPrompt(encoder.config, P, init_std=1.0)
    with torch.no_grad():
        a = encoder.attach(deep)(**batch).last_hidden_state
        b = encoder.attach(hidden_to_kv(encoder, deep))(**batch).last_hidden_state
    encoder.detach_prompt()
    d = (a - b).abs().max().item()
    print(f"inject-process-slice with h  vs  K/V prefix K=hW_K+b_K, V=hW_V+b_V: max diff {d:.2e} "
          f"({'OK' if d <= 1e-5 else 'FAILED'}, tolerance 1e-5)")
    return d <= 1e-5


def train_prefix(encoder, model_dir, args, out: Path):
    from ..data import WordPiece, sst2_batches
    from ..training import TrainConfig, evaluate, fit, get_task, save_checkpoint, set_seed
    from ..training.tasks import build_task_model
    train, dev, source = sentences(args.data_dir)
    n_train, n_dev = (64, 32) if args.quick else (args.max_train, args.max_dev)
    train, dev = train[:n_train], dev[:n_dev]
    tok, task = WordPiece.from_model_dir(model_dir), get_task("sst2")
    set_seed(0)
    model = build_task_model("sst2", "prefix", args.P, encoder=encoder)
    train_loader = sst2_batches(train, tok, batch_size=32, shuffle=True, seed=0, max_length=64)
    dev_loader = sst2_batches(dev, tok, batch_size=64, max_length=64)
    before = evaluate(model, dev_loader, task)["accuracy"]
    print(f"{source}: {len(train)} training / {len(dev)} dev sentences; dev accuracy before training {before:.3f}")
    start = time.perf_counter()
    hist = fit(model, train_loader, TrainConfig(epochs=args.epochs, lr=1e-2),
               evaluate=lambda m: evaluate(m, dev_loader, task), task="sst2")
    print(f"dev accuracy after {args.epochs} epoch(s): {hist[-1]['accuracy']:.3f}  "
          f"({time.perf_counter() - start:.0f} s)")
    info = save_checkpoint(model, out / "sst2_prefix", task="sst2", method="prefix", P=args.P,
                           labels=task.labels)
    print(f"checkpoint: {info['path']} ({info['bytes'] / 1024:.1f} KiB: the prefix and the head, not the backbone)")
    return model, tok, dev


def figure(model, tok, dev, out: Path) -> None:
    from ..viz import attention_maps, plot_prefix_mass
    batch = tok.encode([e.text for e in dev[:8]], max_length=64)
    mass = attention_maps(model.encoder, batch).mass()  # [L, H] mean mass on the P prefix keys
    path, _ = plot_prefix_mass({"trained K/V prefix": mass}, out / "prefix_attention.png",
                               title="attention mass real tokens put on the prefix (layer x head)")
    top = int(mass.mean(1).argmax())
    print(f"mean mass on the prefix per layer: " + ", ".join(f"L{i} {v:.2f}" for i, v in enumerate(mass.mean(1))))
    print(f"layer {top} leans on the prefix most; figure: {path}")


def run(args) -> int:
    from ..data import WordPiece
    from ..encoder import Encoder
    from ..pretrained import default_model_dir
    from ..prompts import format_report, parameter_report
    torch.manual_seed(0)
    out = Path(args.out)
    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()

    step(1, "Load the shipped pretrained BERT into our encoder")
    encoder = Encoder.from_pretrained(model_dir)
    c = encoder.config
    n = sum(p.numel() for p in encoder.parameters())
    name = "all-MiniLM-L6-v2 (shipped)" if not args.model_dir else model_dir.name
    print(f"{name}: L={c.num_hidden_layers} D={c.hidden_size} H={c.num_attention_heads} "
          f"d={c.head_dim}, {n:,} parameters, every checkpoint key accounted for")
    tok = WordPiece.from_model_dir(model_dir)
    batch = tok.encode(["the movie was an absolute masterpiece .", "a dull , lifeless mess",
                        "it 's a charming and often affecting journey ."])
    batch["token_type_ids"][0, 4:] = 1  # exercise both token types

    step(2, "Prove it: our encoder vs transformers.BertModel on the same weights (fp32, eval)")
    if args.model_dir:
        ok = True
        print("the recorded reference is for the shipped MiniLM; for another folder run "
              "tests/test_encoder.py, which compares with transformers live")
    else:
        ok = check_equivalence(encoder)

    step(3, "Two ways to give every layer a prompt, side by side (layer 0 shown)")
    side_by_side(encoder, batch, P=20)

    step(4, "The bridge: hidden-state prompts are K/V prefixes with K and V tied through h")
    ok = bridge(encoder, batch, P=20) and ok

    step(5, "What each method trains (MiniLM, P=16)")
    print(format_report(parameter_report(c, 16)))

    step(6, "Train a K/V prefix (P-Tuning v2) on a frozen MiniLM")
    model, tok, dev = train_prefix(encoder, model_dir, args, out)

    step(7, "Where do real tokens look? Attention mass on the prefix")
    figure(model, tok, dev, out)
    print("\nNext: read lessons/ in order, run the shape-trace tests (README), "
          "and try `python -m minigpt_ptv2 trace --help`.")
    return 0 if ok else 1
