"""One frozen backbone serving several trained checkpoints in one batch, a task per row.

    model = load_mixed({"sst2": "runs/sst2-prefix", "conll": "runs/conll-prefix"})
    out = model(input_ids, attention_mask, token_type_ids, tasks=["sst2", "conll", "sst2"])
    out["sst2"]  -> (rows tensor([0, 2]), logits [2, 2])
    out["conll"] -> (rows tensor([1]), logits [1, N, 9])

The backbone is loaded once; each checkpoint brings only its prompt and head (a few KiB). The
prompts ride together in a `MixedPrompts` (prompts/mixed.py), which gives each row its own prompt
through per-row masks, and each task's head reads its own rows. Each row equals what its checkpoint
gives alone (tests/test_mixed.py). Checkpoints must share the backbone (checked by fingerprint, as
any load is: every weight and the tokenizer), and their prompts must be of one kind (all K/V prefixes, say: MixedPrompts says why).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.checks import check_batch_size
from ..data import pad_batch
from ..errors import InputError, InputTypeError
from ..progress import progress
from ..prompts.mixed import MixedPrompts
from .heads import Head
from .predict import check_stride_used, clean_texts, limits, model_rows, records
from .tasks import get_task


class MixedTaskModel(nn.Module):
    """A frozen encoder with a MixedPrompts attached and one head per member, by member name."""

    def __init__(self, encoder, members: dict[str, tuple], metas: dict[str, dict] | None = None):
        """members: name -> (prompt method, Head); the methods are detached prompts of one kind."""
        super().__init__()
        if not members:
            raise InputError("MixedTaskModel needs at least one member")
        for name, (_, head) in members.items():
            if not isinstance(head, Head):
                raise InputTypeError(f"member {name!r}: the head must be a Head, got {type(head).__name__}")
        self.encoder = encoder
        encoder.attach(MixedPrompts(encoder.config, {n: m for n, (m, _) in members.items()}))
        self.heads = nn.ModuleDict({n: h for n, (_, h) in members.items()})
        self.metas = dict(metas or {})

    @property
    def names(self) -> list[str]:
        return list(self.heads)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, tasks: list[str]) -> dict:
        """tasks: the member name of each of the B rows. Returns {name: (rows [b], logits)} for the
        names present, rows in batch order, logits [b, C] (sentence head) or [b, N, C] (token head)."""
        if isinstance(tasks, str):
            raise InputTypeError(f"tasks must be a list of member names, one per row, not the string {tasks!r}")
        if len(tasks) != input_ids.shape[0]:
            raise InputError(f"tasks lists {len(tasks)} names for the batch's {input_ids.shape[0]} rows")
        self.encoder.prompt.use_rows(list(tasks))  # refuses unknown names, listing the members
        out = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        result = {}
        for name in dict.fromkeys(tasks):  # each name once, in order of first appearance
            rows = torch.tensor([i for i, t in enumerate(tasks) if t == name], device=input_ids.device)  # [b]
            picked = type(out)(out.last_hidden_state[rows], out.pooler_output[rows])  # [b, N, D], [b, D]
            result[name] = (rows, self.heads[name](picked))
        return result


def load_mixed(checkpoints: dict[str, str | Path], model_dir=None, device="cpu",
               allow_other_backbone: bool = False) -> MixedTaskModel:
    """Several checkpoints, by member name, over one backbone loaded once (see the module doc).
    Each is checked against that backbone (allow_other_backbone: as checkpoint.load_checkpoint)."""
    from ..models import load_pretrained
    from ..pretrained import default_model_dir
    from .checkpoint import load_checkpoint, read_meta
    if not checkpoints:
        raise InputError("load_mixed needs at least one checkpoint")
    metas = {name: read_meta(path) for name, path in checkpoints.items()}  # all readable before the slow load
    for name, meta in metas.items():
        if meta["method"] in ("head-only", "full"):
            what = "has no prompt" if meta["method"] == "head-only" else "changed the backbone itself"
            raise InputError(f"checkpoint {checkpoints[name]} ({name}) was trained with method "
                             f"{meta['method']!r}, which {what}: only prompt checkpoints share a frozen backbone")
    encoder = load_pretrained(model_dir or default_model_dir(), expect="bert")
    members = {}
    for name, path in checkpoints.items():
        model, meta = load_checkpoint(path, encoder=encoder,  # checks this backbone against the checkpoint's
                                      allow_other_backbone=allow_other_backbone)
        members[name] = (encoder.detach_prompt(), model.heads[meta["task"]])
        metas[name] = meta
    try:
        model = MixedTaskModel(encoder, members, metas)
    except InputError as e:
        where = ", ".join(f"{n}: {checkpoints[n]} ({m['method']}, P={m['P']})" for n, m in metas.items())
        raise InputError(f"these checkpoints cannot share one batch ({where}): {e}") from None
    return model.to(device).eval()


class MixedPredictor:
    """`Predictor` for several checkpoints at once: each input names its member, and the rows of all
    members share batches (one forward per batch, whatever the mix).

        p = MixedPredictor.from_checkpoints({"sst2": "runs/sst2-prefix", "conll": "runs/conll-prefix"})
        p.predict([("sst2", "a gorgeous, witty film"), ("conll", "John lives in Berlin")])
          -> [{"task": "sst2", "text": ..., "label": "positive", ...}, {"task": "conll", "tags": [...], ...}]

    Each member reads its rows at its own checkpoint's max_length unless one is given for all."""

    def __init__(self, model: MixedTaskModel, tokenizer, device="cpu", max_length: int | None = None,
                 stride: int | None = None, names: tuple[str, str] = ("max_length", "stride")):
        self.model, self.tok, self.device = model.eval(), tokenizer, device
        self.members = {}
        check_stride_used([get_task(meta["task"]) for meta in model.metas.values()], stride, names[1])
        for name, meta in model.metas.items():
            task = get_task(meta["task"])
            ml, st = limits(meta, model.encoder, max_length, stride, names)
            self.members[name] = {"task": task, "labels": list(meta.get("labels") or task.labels),
                                  "max_length": ml, "stride": st, "meta": meta}

    @classmethod
    def from_checkpoints(cls, checkpoints: dict, model_dir=None, device="cpu", max_length: int | None = None,
                         stride: int | None = None, names: tuple[str, str] = ("max_length", "stride"),
                         allow_other_backbone: bool = False):
        from ..data import WordPiece
        from ..pretrained import default_model_dir
        model_dir = model_dir or default_model_dir()
        return cls(load_mixed(checkpoints, model_dir, device, allow_other_backbone),
                   WordPiece.from_model_dir(model_dir), device, max_length, stride, names)

    @torch.no_grad()
    def predict(self, items: list[tuple[str, str]], batch_size: int = 32, show_progress: bool = False) -> list[dict]:
        """items: (member name, text) pairs; one record per item, in order, with its "task" (the name)."""
        check_batch_size(batch_size)
        items = list(items)
        for k, item in enumerate(items):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise InputTypeError(f"input {k + 1} must be a (member name, text) pair, got {item!r}")
            if item[0] not in self.members:
                raise InputError(f"input {k + 1} names {item[0]!r}; the members are {list(self.members)}")
        texts = clean_texts([t for _, t in items])
        by_name = {n: [k for k, (m, _) in enumerate(items) if m == n] for n in self.members}  # item indices
        rows, order = {}, []  # rows per member; order: (item index, member, row index) over all rows
        for n, ks in by_name.items():
            m = self.members[n]
            rows[n] = model_rows(m["task"], self.tok, [texts[k] for k in ks], m["max_length"], m["stride"])
            order += [(ks[r["text"]], n, j) for j, r in enumerate(rows[n])]
        order.sort()  # rows in input order: a batch mixes whatever the inputs mix
        outputs = {n: [None] * len(rows[n]) for n in rows}
        for start in progress(range(0, len(order), batch_size), "mixed tasks: predicting", unit="batch",
                              enabled=show_progress):
            chunk = order[start:start + batch_size]
            batch = pad_batch([rows[n][j]["input_ids"] for _, n, j in chunk], self.tok.pad_id)
            b = {k: v.to(self.device) for k, v in batch.items()}
            out = self.model(b["input_ids"], b["attention_mask"], b["token_type_ids"], tasks=[n for _, n, _ in chunk])
            for n, (where, logits) in out.items():
                for i, row_logits in zip(where.tolist(), logits.float().cpu()):
                    outputs[n][chunk[i][2]] = row_logits  # [C] or [N, C]
        result = [None] * len(items)
        for n, ks in by_name.items():
            m = self.members[n]
            for k, rec in zip(ks, records(m["task"], m["labels"], [texts[k] for k in ks], rows[n], outputs[n])):
                result[k] = {"task": n, **rec}
        return result
