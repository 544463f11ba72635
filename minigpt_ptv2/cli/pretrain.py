"""`pretrain`: a small decoder trained from scratch on the shipped SST-2 sentences, as a HF folder."""
from __future__ import annotations

from ._shared import add_json, add_overwrite, fraction, positive_float, positive_int, print_json, seed, setup_help

NAME = "pretrain"
HELP = "pretrain a small GPT-2 / LLaMA-style decoder from scratch on the shipped SST-2 sentences (offline)"
DESCRIPTION = """\
Train a byte-level BPE tokenizer and a small decoder from scratch on the 3,872 SST-2 sentences
shipped in the package (minigpt_ptv2/data/sst2_sample/: 3,000 train rows and the 872 dev rows;
every 5th dev row is held out for the perplexity), and write --out as an ordinary
HuggingFace-format folder: config.json, model.safetensors, tokenizer.json (+ tokenizer_config.json),
and pretrain.json (the settings, the time, the held-out perplexity). transformers'
AutoModelForCausalLM and AutoTokenizer open it too; `train lm --model-dir` and `generate
--model-dir` take it.

The text is one sentence per line, and the newline is the end-of-sentence token (the model's
bos_token_id and eos_token_id): a generation starts from a newline and stops at the next one, and
`train lm` reads a file of one sentence per line in the same format. Each training window of
--context tokens starts anywhere in that stream, as `train lm`'s blocks do. A progress bar shows
the steps and the running loss. Deterministic for a --seed on one machine and thread count.
The defaults were measured (benchmarks/pretrain_trials.py): about a minute of CPU (67 s on one
thread; a busy machine stretches the wall time several-fold), held-out perplexity about 300.
Lessons get the same folder from training.pretrain.decoder_dir(), which builds it once."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 pretrain                                  # runs/decoder, the defaults
  python -m minigpt_ptv2 pretrain --out runs/big --layers 6 --hidden 192 --steps 1000
  python -m minigpt_ptv2 generate --model-dir runs/decoder "the film is" --do-sample --top-k 40
  python -m minigpt_ptv2 train lm prefix --model-dir runs/decoder --text-file positive.txt --out runs/pos"""


def add_arguments(p):
    from ..catalog import DECODER_ARCHS, PretrainConfig  # plain data: no torch at import
    C = PretrainConfig._field_defaults
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("--out", default="runs/decoder", help="folder to write (created; new or empty)")
    add_overwrite(p, "the new decoder", "runs/decoder")
    p.add_argument("--arch", choices=DECODER_ARCHS, default=C["arch"], help="GPT-2 (learned positions, LayerNorm, GELU) "
                                                                  "or LLaMA-style (RoPE, RMSNorm, SwiGLU)")
    p.add_argument("--layers", type=positive_int, default=C["layers"], help="L")
    p.add_argument("--hidden", type=positive_int, default=C["hidden"], help="D")
    p.add_argument("--heads", type=positive_int, default=C["heads"], help="H (must divide D)")
    p.add_argument("--vocab-size", type=positive_int, default=C["vocab_size"],
                   help="V: byte-level BPE symbols (at least the 256 bytes)")
    p.add_argument("--context", type=positive_int, default=C["context"],
                   help="T: tokens per training window, and the model's position limit")
    p.add_argument("--batch-size", type=positive_int, default=C["batch_size"], help="windows per step")
    p.add_argument("--steps", type=positive_int, default=C["steps"], help="optimizer steps")
    p.add_argument("--lr", type=positive_float, default=C["lr"],
                   help="peak learning rate (warm-up over 5%% of the steps, then cosine decay to a tenth)")
    p.add_argument("--dropout", type=fraction, default=C["dropout"],
                   help="dropout on attention and hidden states while training, in [0, 1)")
    p.add_argument("--seed", type=seed, default=C["seed"], help="seed for the weights and the windows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p)


def run(args) -> int:
    from .. import outdir
    from ..catalog import PretrainConfig
    from ..training.pretrain import check_config, pretrain
    cfg = check_config(PretrainConfig(arch=args.arch, layers=args.layers, hidden=args.hidden, heads=args.heads,
                                      vocab_size=args.vocab_size, context=args.context, batch_size=args.batch_size,
                                      steps=args.steps, lr=args.lr, dropout=args.dropout,
                                      seed=args.seed))
    from ..data.sample import SAMPLE_DIR
    reads = {"the shipped SST-2 sample": SAMPLE_DIR}
    with outdir.writing(args.out, "--out", reads, args.overwrite) as stage:  # checked before the work
        summary, _, _ = pretrain(cfg, stage, show_progress=not (args.no_progress or args.json))
    if args.json:
        print_json({**summary, "out": args.out})
        return 0
    print(f"{args.out}: {cfg.arch} decoder, L={cfg.layers} D={cfg.hidden} H={cfg.heads} V={summary['vocab_size']}, "
          f"{summary['parameters']:,} parameters, pretrained in {summary['seconds']:.0f} s "
          f"({cfg.steps} steps of {cfg.batch_size} x {cfg.context} tokens)\n"
          f"held-out perplexity {summary['held_out_perplexity']:.1f} per token "
          f"({summary['held_out_sentences']} sentences never trained on)")
    return 0
