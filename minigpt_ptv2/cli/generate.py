"""`generate`: continue a text with a decoder, with the prompt `train lm` trained or without one."""
from __future__ import annotations

from ._shared import (add_allow_other_backbone, add_device, add_json, check_device, positive_int, print_json, seed,
                      setup_help, temperature)

NAME = "generate"
HELP = "continue a text with a GPT-2 / LLaMA-style decoder, with a prompt trained by `train lm` or bare"
DESCRIPTION = """\
Load the decoder in --model-dir (a HuggingFace-format GPT-2 or LLaMA-style folder: config.json,
model.safetensors, tokenizer.json), attach the prompt of CHECKPOINT (a `train lm` output folder;
its backbone fingerprint must match), and continue TEXT: greedy by default, sampled with
--do-sample. Without CHECKPOINT the bare decoder continues it; with one, --model-dir defaults to
the folder the prompt was trained on. TEXT is tokenized as transformers' tokenizer does it: with
the special tokens tokenizer.json's post-processor puts around a text (LLaMA's BOS, say). Stops
after --max-new-tokens, or at any of the model's end-of-text tokens (eos_token_id, one or a list,
from generation_config.json if there is one, else config.json) unless --ignore-eos. Prints the
text and its continuation."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 generate runs/lm "Once upon a time"
  python -m minigpt_ptv2 generate runs/lm "Once upon a time" --model-dir path/to/gpt2 --max-new-tokens 40
  python -m minigpt_ptv2 generate runs/lm "The" --do-sample --temperature 0.8 --top-k 40 --seed 1 --json
  python -m minigpt_ptv2 generate --model-dir path/to/gpt2 "Once upon a time"    # no prompt: the bare model"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("checkpoint", nargs="?", default=None, help="a `train lm` checkpoint folder (optional)")
    p.add_argument("text", help="the text to continue")
    p.add_argument("--model-dir", default=None,
                   help="HF-format GPT-2 / LLaMA-style folder (default: the one the checkpoint was trained on)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens to add at most")
    p.add_argument("--do-sample", action="store_true", help="sample each token instead of taking the most likely")
    p.add_argument("--temperature", type=temperature, default=None,
                   help="with --do-sample: logits / T (default 1), T in [0.001, 1000] (below, sampling is greedy decoding in "
                        "all but name and the logits overflow; above, uniform noise)")
    p.add_argument("--top-k", type=positive_int, default=None, help="with --do-sample: only the k most likely tokens")
    p.add_argument("--seed", type=seed, default=None, help="with --do-sample: the sampling generator's seed (default 0)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    add_allow_other_backbone(p)
    add_device(p)
    add_json(p)


def run(args) -> int:
    from ..errors import InputError
    check_device(args.device)
    if args.checkpoint is None and args.model_dir is None:
        raise InputError("generate needs a checkpoint (generate CKPT TEXT) or --model-dir DIR for the bare model")
    if not args.text:
        raise InputError("TEXT is empty: give the text to continue")
    check_sampling_options(args)
    import torch
    from ..data.bpe import ByteLevelBPE
    from ..training.lm import check_tokenizer, load_decoder, load_lm_checkpoint
    if args.checkpoint is not None:
        model, meta = load_lm_checkpoint(args.checkpoint, args.model_dir, args.device,
                                         allow_other_backbone=args.allow_other_backbone)
        model_dir = args.model_dir or meta["train"]["model_dir"]
    else:
        model, meta, model_dir = load_decoder(args.model_dir).to(args.device), None, args.model_dir
    tok = ByteLevelBPE.from_model_dir(model_dir)
    check_tokenizer(tok, model)
    ids = tok.encode(args.text, add_special_tokens=True)
    generator = torch.Generator(device=args.device).manual_seed(args.seed or 0) if args.do_sample else None
    input_ids = torch.tensor([ids], device=args.device)  # [1, N]
    out = model.generate(input_ids, args.max_new_tokens, attention_mask=torch.ones_like(input_ids),
                         do_sample=args.do_sample, temperature=args.temperature or 1.0, top_k=args.top_k,
                         eos_token_id=None if args.ignore_eos else "config", generator=generator)[0, len(ids):].tolist()
    continuation = tok.decode(out)
    if args.json:
        print_json({"text": args.text, "continuation": continuation, "new_ids": out, "input_ids": ids,
                    "checkpoint": args.checkpoint, "model_dir": str(model_dir),
                    "method": meta["method"] if meta else None, "P": meta["P"] if meta else 0,
                    "do_sample": args.do_sample})
    else:
        print(args.text + continuation)
    return 0


def check_sampling_options(args) -> None:
    """Refuse --temperature, --top-k or --seed without --do-sample: greedy decoding would ignore
    them, and the text would look like a sample (transformers only warns; a warning scrolls past)."""
    from ..errors import InputError
    given = [f"--{k.replace('_', '-')} {v}" for k, v in (("temperature", args.temperature), ("top_k", args.top_k),
                                                         ("seed", args.seed)) if v is not None]
    if given and not args.do_sample:
        raise InputError(f"{', '.join(given)} only act{'' if len(given) > 1 else 's'} when sampling: without --do-sample generate decodes "
                         f"greedily and would ignore {'them' if len(given) > 1 else 'it'}: add --do-sample or drop "
                         f"{', '.join(g.split()[0] for g in given)}")
