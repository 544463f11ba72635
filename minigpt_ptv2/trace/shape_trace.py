"""ShapeTrace: the rows the capture points record (core/capture.py), as a table in letters.

Modules call `record(scope, "name", tensor)` at the places a learner wants to look; a
ShapeTrace entered with `with` keeps each name and shape in order (and, if asked, the tensor),
and prints them as a table in the notation's letters (letters.py), a walk of one layer, or two
traces side by side.

    with ShapeTrace.for_model(model, B=16, N=128) as tr:
        model(ids)
    print(tr.table())
    print(side_by_side(tr, other_trace, ("deep", "K/V prefix")))   # what differs, row by row

The capture points, in the order a forward pass meets them (i = layer index):

    shallow.prompt             [B, P, D]       the input-level prompt (SoftPrompt, PTuningV1)
    embeddings.out             [B, N, D]       ([B, P+N, D] with a shallow prompt)
    deep.prompts               [L, P, D]       one hidden-state prompt per layer (DeepPrompt)
    prefix.table               [P, L*2*D]      the K/V prefix table, PEFT's layout (KVPrefix);
                                               [P, L*2*H_kv*d] under grouped K/V heads
    prefix.kv                  [L, 2, H_kv, P, d] the same numbers, one K and one V per layer and K/V head
    gated.rows                 [L_a, P, D]     a gated prefix's rows, one set per adapted layer (GatedPrefix)
    gated.gates                [L_a]           their gates, one per adapted layer (0 at the start)
    mask.keys                  [B, P+N]        which keys are real (True) or padding (False)
    mask.keep                  [B, 1, N, P+N]  who may attend to whom (only when something is masked)
    layer{i}.prompt            [B, P, D]       deep: this layer's prompt, broadcast over the batch
    layer{i}.inject            [B, P+N, D]     deep: prompt rows in front of the hidden states
    layer{i}.attn.q            [B, H, N, d]    queries of the rows the layer sees
    layer{i}.attn.k|v          [B, H_kv, N, d] keys and values (H_kv = H unless grouped)
    layer{i}.attn.gated_k|v    [B, H_kv, P, d] gated prefix: the layer's bare projection of its rows
    layer{i}.attn.gated_probs  [B, H, N, P]    g * softmax over the P gated keys alone
    layer{i}.attn.gated_read   [B, H, N, d]    what the queries read from them, added to the context
    layer{i}.attn.prefix_k|v   [B, H_kv, P, d] K/V prefix (or, when decoding, the KV cache)
    layer{i}.attn.k|v_with_prefix [B, H_kv, P+N, d]
    layer{i}.attn.k|v_repeated [B, H, P+N, d]  grouped K/V heads widened to H (explicit path only)
    layer{i}.attn.scores|probs [B, H, N, P+N]  only on the explicit path (output_attentions=True)
    layer{i}.attn.context      [B, H, N, d]
    layer{i}.attn.out          [B, N, D]
    layer{i}.out               [B, N, D]       the layer's output ([B, P+N, D] before a deep slice)
    layer{i}.slice             [B, N, D]       deep: prompt rows thrown away
    shallow.slice              [B, N, D]       shallow: virtual rows dropped before pooling/logits
    final.last_hidden_state    [B, N, D]       encoder
    final.pooler               [B, D]          encoder: the real [CLS]
    final.logits               [B, N, V]       decoder
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch

from ..core.capture import Capture
from .letters import dims_for, fmt, layer_of, spell


@dataclass
class ShapeTrace(Capture):
    """Context manager collecting `(name, shape)` rows in the order they are recorded.

    dims:   letter -> size, used to spell shapes (see `dims_for`).
    keep:   also store the tensors whose names contain any of these substrings
            (e.g. `keep=("attn.probs",)`), detached, in `.tensors`.
    layers: record only these layer indices (rows outside the layer loop are always kept).
    """
    dims: dict = field(default_factory=dict)
    keep: tuple = ()
    layers: tuple | None = None
    rows: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)

    @classmethod
    def for_model(cls, model, B: int, N: int, **kw) -> "ShapeTrace":
        """A trace whose letters come from `model.config` and its attached prompt's P."""
        P = model.prompt.num_virtual if getattr(model, "prompt", None) is not None else None
        return cls(dims=dims_for(model.config, B=B, N=N, P=P), **kw)

    def __exit__(self, exc_type, exc, tb):
        """A forward pass that raises leaves what it recorded so far on the exception
        (`exc.partial_trace`, the innermost trace), so a test can show how far it got."""
        if exc is not None and not hasattr(exc, "partial_trace"):
            try:
                exc.partial_trace = self
            except AttributeError:  # an exception type that takes no attributes
                pass
        return super().__exit__(exc_type, exc, tb)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self.layers is not None:
            i = layer_of(name)
            if i is not None and i not in self.layers:
                return
        self.rows.append((name, tuple(tensor.shape)))
        if any(k in name for k in self.keep):
            self.tensors[name] = tensor.detach()

    # --- reading the trace -----------------------------------------------------------------
    def names(self) -> list[str]:
        return [name for name, _ in self.rows]

    def shapes(self) -> dict:
        """name -> shape of the last recording under that name."""
        return {name: shape for name, shape in self.rows}

    def select(self, *prefixes: str) -> "ShapeTrace":
        """A copy holding only the rows whose names start with one of `prefixes`."""
        rows = [(n, s) for n, s in self.rows if n.startswith(prefixes)]
        return ShapeTrace(dims=dict(self.dims), keep=self.keep, layers=self.layers, rows=rows,
                          tensors={n: t for n, t in self.tensors.items() if n.startswith(prefixes)})

    def letters(self, shape: tuple, name: str | None = None) -> str:
        """Spell a shape with this trace's letters, e.g. (16, 12, 148, 64) -> '[B, H, P+N, d]'."""
        return spell(shape, self.dims, name)

    def table(self, layers=None, letters: bool = True, collapse_repeats: bool = False) -> str:
        """A printable table: name, shape in numbers, and (when dims are known) in letters.

        layers: show only these layer indices (rows outside the layer loop are always shown).
        collapse_repeats: print a layer whose rows repeat the first layer's exactly (the same
            names after `layerI.`, the same shapes) as one line saying so, instead of row by row.
            Only the printed view shortens: `rows` keeps every row.
        """
        rows = [(n, s) for n, s in self.rows
                if layers is None or layer_of(n) is None or layer_of(n) in layers]
        if not rows:
            return "(nothing recorded)"
        if collapse_repeats:
            return self._collapsed(rows, letters)
        spell = letters and bool(self.dims)
        nums = [fmt(shape) for _, shape in rows]
        w_name = max(len("name"), *(len(n) for n, _ in rows))
        w_num = max(len("shape"), *(len(x) for x in nums))
        lines = [f"{'name':<{w_name}}  {'shape':<{w_num}}  {'letters' if spell else ''}".rstrip()]
        for (name, shape), num in zip(rows, nums):
            spelled = self.letters(shape, name) if spell else ""
            lines.append(f"{name:<{w_name}}  {num:<{w_num}}  {spelled}".rstrip())
        return "\n".join(lines)

    def _collapsed(self, rows: list, letters: bool) -> str:
        """The table of `rows`, each later layer that repeats the first one's rows as one line."""
        blocks = []  # [(layer or None, rows)]: runs of consecutive rows of one layer
        for name, shape in rows:
            i = layer_of(name)
            if blocks and i is not None and blocks[-1][0] == i:
                blocks[-1][1].append((name, shape))
            else:
                blocks.append((i, [(name, shape)]))

        def pattern(i, block):  # the block's rows with the layer number taken out of each name
            return [(name[len(f"layer{i}."):], shape) for name, shape in block]

        first = next(((i, pattern(i, b)) for i, b in blocks if i is not None), None)
        kept, notes, run = [], {}, []  # notes: index into kept -> "layers a..b repeat ..."
        for i, block in blocks + [(None, [])]:
            if i is not None and i != first[0] and pattern(i, block) == first[1]:
                run.append(i)
                continue
            if run:
                span = f"layer{run[0]}" if len(run) == 1 else f"layer{run[0]}..layer{run[-1]}"
                notes[len(kept)] = (f"{span}: the same {len(first[1])} rows as layer{first[0]}, "
                                    f"layer by layer (not repeated here)")
                run = []
            kept += block
        table = ShapeTrace(dims=self.dims, rows=kept).table(letters=letters).splitlines()
        for at in sorted(notes, reverse=True):
            table.insert(at + 1, notes[at])  # + 1: the header line
        return "\n".join(table)

    def walk(self, layer: int = 0) -> str:
        """The walk of lessons 06-08 for one layer, in numbers: how the prompt meets the real tokens.

        Shallow prompts:      prompt + embeddings -> every layer on P+N rows -> slice at the end.
        Hidden-state prompts: prompt + hidden -> inject -> layer -> slice.
        K/V prefix:           prefix K + K -> K with prefix (and the same for V); Q untouched.
        Gated prefix:         Q reads the prefix keys under their own softmax, times the gate.
        """
        s = self.shapes()
        f = lambda key: fmt(s[key])  # noqa: E731
        p = f"layer{layer}"
        lines = []
        if "shallow.prompt" in s:
            B, P, D = s["shallow.prompt"]
            PN = s["embeddings.out"][1]
            lines.append(f"input: prompt {f('shallow.prompt')} + embeddings {fmt((B, PN - P, D))} -> "
                         f"{f('embeddings.out')} -> every layer on P+N rows -> slice {f('shallow.slice')}")
        if f"{p}.inject" in s:
            B, PN, D = s[f"{p}.inject"]
            P = s[f"{p}.prompt"][1]
            lines.append(f"{p}: prompt {f(p + '.prompt')} + hidden {fmt((B, PN - P, D))} -> inject "
                         f"{f(p + '.inject')} -> layer {f(p + '.out')} -> slice {f(p + '.slice')}")
        if f"{p}.attn.prefix_k" in s:
            for kv in ("k", "v"):
                lines.append(f"{p}: {kv.upper()}: prefix {f(f'{p}.attn.prefix_{kv}')} + "
                             f"{kv} {f(f'{p}.attn.{kv}')} -> {f(f'{p}.attn.{kv}_with_prefix')}")
            lines.append(f"{p}: Q: {f(p + '.attn.q')} (never prefixed)")
        if f"{p}.attn.gated_k" in s:
            lines.append(f"{p}: gated: Q {f(p + '.attn.q')} reads K {f(p + '.attn.gated_k')} under its own "
                         f"softmax, times g -> {f(p + '.attn.gated_read')}, added to the tokens' read")
        return "\n".join(lines) if lines else f"{p}: no prompt meets the real tokens here"


def side_by_side(left: ShapeTrace, right: ShapeTrace, titles=("left", "right"), layers=None) -> str:
    """Two traces in one table, rows lined up by name, each spelled with its own letters; "-"
    where a capture point exists in one trace only. The "-" rows are the difference between
    two methods (inject/slice vs prefix_k/prefix_v), or between two runs of one (mask.keep).

    layers: show only these layer indices (rows outside the layer loop are always shown).
    """
    def pick(tr):
        return [(n, tr.letters(s, n) if tr.dims else fmt(s)) for n, s in tr.rows
                if layers is None or layer_of(n) is None or layer_of(n) in layers]

    a, b = pick(left), pick(right)
    rows = []
    matcher = difflib.SequenceMatcher(a=[n for n, _ in a], b=[n for n, _ in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows += [(n, x, y) for (n, x), (_, y) in zip(a[i1:i2], b[j1:j2])]
        else:
            rows += [(n, x, "-") for n, x in a[i1:i2]] + [(n, "-", y) for n, y in b[j1:j2]]
    if not rows:
        return "(nothing recorded)"
    w = max(len("name"), *(len(n) for n, _, _ in rows))
    wx = max(len(titles[0]), *(len(x) for _, x, _ in rows))
    lines = [f"{'name':<{w}}  {titles[0]:<{wx}}  {titles[1]}"]
    lines += [f"{n:<{w}}  {x:<{wx}}  {y}" for n, x, y in rows]
    return "\n".join(lines)
