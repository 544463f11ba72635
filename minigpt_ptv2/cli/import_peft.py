"""`import-peft`: turn a PEFT prefix- or prompt-tuning adapter into one of our checkpoints."""
from __future__ import annotations

from ..catalog import TASKS
from ._shared import add_json, add_model_dir, add_overwrite, print_json, setup_help, size_text

NAME = "import-peft"
HELP = "turn a PEFT prefix/prompt-tuning adapter into a checkpoint that eval, predict or generate use"
DESCRIPTION = """\
Read a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) made for the same
backbone and write our checkpoint: PREFIX_TUNING becomes method 'prefix', PROMPT_TUNING and
P_TUNING become 'soft' (both store the final prompt, so any MLP is already folded in). The
prompt keeps PEFT's position convention (positions='shifted': real tokens at P..P+N-1).

For a decoder (--model-dir holding a GPT-2, LLaMA, Qwen2 or Mistral model) a CAUSAL_LM adapter
becomes an 'lm' checkpoint, as `train lm` writes it, that `generate CKPT TEXT` uses: the output is
the decoder's own LM head, so --task, --head-from, --random-head and --allow-pooling-change do not
apply and are refused.

An encoder's checkpoint needs a task head, and most adapters have none. The head comes from exactly one of:
  the adapter itself    SEQ_CLS (-> sst2) / TOKEN_CLS (-> conll) adapters carry PEFT's classifier
  --head-from CKPT      the head of one of our checkpoints for the same task (e.g. the one a
                        prompt-only adapter was exported from)
  --random-head         an untrained head: eval and predict warn that its outputs mean nothing

A PROMPT_TUNING / P_TUNING SEQ_CLS adapter is refused as it stands: PEFT trained its classifier on
row 0, which under prompt tuning is virtual token 0, while our sst2 head reads the real [CLS], so
its predictions would change. Replace the classifier with --head-from or --random-head, or keep it
with --allow-pooling-change, knowing the logits will differ from PEFT's.

OUT is checked before anything is read: a folder that holds anything is refused unless
--overwrite (which replaces it whole, at once), and a folder the import reads (ADAPTER,
--model-dir, --head-from) is never written. The checkpoint records the token limit eval and
predict use by default: 128, or what the model's position table leaves beside the prompt."""
EPILOG = """\
examples:
  python -m minigpt_ptv2 import-peft runs/sst2-prefix-peft runs/sst2-imported
  python -m minigpt_ptv2 import-peft my-adapter runs/imported --task sst2 --head-from runs/sst2-soft
  python -m minigpt_ptv2 import-peft my-lm-adapter runs/lm-imported --model-dir my-gpt2"""


def add_arguments(p):
    setup_help(p, DESCRIPTION, EPILOG)
    p.add_argument("adapter", metavar="ADAPTER", help="PEFT adapter folder")
    p.add_argument("out", metavar="OUT", help="checkpoint folder to write (new or empty, or --overwrite)")
    p.add_argument("--task", choices=sorted(TASKS), default=None,
                   help="task of the head (default: from the adapter's task_type)")
    p.add_argument("--head-from", default=None, help="take the task head from this checkpoint of ours")
    p.add_argument("--random-head", action="store_true", help="initialise an untrained head")
    p.add_argument("--allow-pooling-change", action="store_true",
                   help="keep a prompt-tuning SEQ_CLS adapter's classifier although it will read [CLS], "
                        "not the virtual token PEFT trained it on (predictions differ from PEFT's)")
    add_model_dir(p)
    add_overwrite(p, "the imported checkpoint")
    add_json(p)


def run(args) -> int:
    from ..interop import import_adapter
    info = import_adapter(args.adapter, args.out, args.task, args.model_dir, args.head_from, args.random_head,
                          args.allow_pooling_change, overwrite=args.overwrite)
    if args.json:
        print_json(info)
        return 0
    head = "for generate" if info["head"] is None else f"head from {info['head']}"
    print(f"{info['task']} checkpoint, method {info['method']} (P={info['P']}, positions='shifted'), "
          f"{head}: {info['path']} ({size_text(info['bytes'])})")
    if info["head"] == "random":
        print("warning: the head is untrained; train it before trusting eval or predict")
    if info["pooling_changed"]:
        print("warning: PEFT's classifier was trained on virtual token 0 and now reads [CLS]: "
              "predictions differ from PEFT's")
    if info["adapter_classifier_replaced"]:
        print("note: the adapter's own classifier (trained on virtual token 0) was left out")
    return 0
