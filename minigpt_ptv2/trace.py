"""Named capture points: record tensor shapes (and optionally values) as data flows.

Modules call `record(scope, "name", tensor)` at the places a learner wants to look. When no
`ShapeTrace` is active, `record` is one `is None` check and hands the tensor straight back:
no row is built, no shape is read, nothing is kept. Tracing costs nothing when off.

    with ShapeTrace.for_model(model, B=16, N=128) as tr:
        model(ids)
    print(tr.table())
    print(side_by_side(tr, other_trace, ("deep", "K/V prefix")))   # what differs, row by row

The capture points, in the order a forward pass meets them (i = layer index):

    shallow.prompt             [B, P, D]       the input-level prompt (SoftPrompt, PTuningV1)
    embeddings.out             [B, N, D]       ([B, P+N, D] with a shallow prompt)
    deep.prompts               [L, P, D]       one hidden-state prompt per layer (DeepPrompt)
    prefix.table               [P, L*2*D]      the K/V prefix table, PEFT's layout (KVPrefix)
    prefix.kv                  [L, 2, H, P, d] the same numbers, one K and one V per layer and head
    mask.keys                  [B, P+N]        which keys are real (True) or padding (False)
    mask.keep                  [B, 1, N, P+N]  who may attend to whom (only when something is masked)
    layer{i}.prompt            [B, P, D]       deep: this layer's prompt, broadcast over the batch
    layer{i}.inject            [B, P+N, D]     deep: prompt rows in front of the hidden states
    layer{i}.attn.q|k|v        [B, H, N, d]    queries, keys, values of the rows the layer sees
    layer{i}.attn.prefix_k|v   [B, H, P, d]    K/V prefix (or, when decoding, the KV cache)
    layer{i}.attn.k|v_with_prefix [B, H, P+N, d]
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
import re
from dataclasses import dataclass, field

import torch

_ACTIVE: "ShapeTrace | None" = None


def record(scope: str, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Record `tensor` under `scope.name` if a trace is active; always returns the tensor."""
    if _ACTIVE is not None:
        _ACTIVE.add(f"{scope}.{name}" if scope else name, tensor)
    return tensor


def tracing() -> bool:
    """True inside a `with ShapeTrace(...)` block."""
    return _ACTIVE is not None


def dims_for(config=None, B: int | None = None, N: int | None = None, P: int | None = None,
             **extra) -> dict:
    """The notation letters (lesson 01's table) with their sizes, for `ShapeTrace(dims=...)`.

    From a config: D, L, H, d, V (vocabulary), D_ff (feed-forward width) and L*2*D (the flat
    prefix table); from the arguments: B, N, P (and P+N when both are given).
    """
    dims = {}
    for letter, value in (("B", B), ("N", N), ("P", P)):
        if value is not None:
            dims[letter] = int(value)
    if config is not None:
        dims.update(config.dims())
        dims["V"] = config.vocab_size
        dims["D_ff"] = config.intermediate_size
        dims["L*2*D"] = config.num_hidden_layers * 2 * config.hidden_size
    if P is not None and N is not None:
        dims["P+N"] = int(P) + int(N)
    dims.update(extra)
    return dims


# Which letter wins when a size matches several (BERT-base has L = H = 12): the first in this
# order, unless the capture point's usual spelling (_SPELLING) names one of the candidates.
_LETTER_ORDER = ("B", "P+N", "N", "P", "D", "H", "d", "L", "V", "D_ff", "L*2*D")

# The usual spelling of each capture point, keyed by the end of its name ("out" covers
# embeddings.out, layer{i}.out and layer{i}.attn.out; "prompt" covers shallow.prompt and
# layer{i}.prompt). A hint is used only where its letter has the axis's size.
_SPELLING = {
    "prompt": ("B", "P", "D"),
    "out": ("B", "N", "D"),
    "inject": ("B", "P+N", "D"),
    "slice": ("B", "N", "D"),
    "final.last_hidden_state": ("B", "N", "D"),
    "prefix.table": ("P", "L*2*D"),
    "prefix.kv": ("L", "2", "H", "P", "d"),
    "deep.prompts": ("L", "P", "D"),
    "mask.keys": ("B", "P+N"),
    "mask.keep": ("B", "1", "N", "P+N"),
    "attn.q": ("B", "H", "N", "d"),
    "attn.k": ("B", "H", "N", "d"),
    "attn.v": ("B", "H", "N", "d"),
    "attn.prefix_k": ("B", "H", "P", "d"),
    "attn.prefix_v": ("B", "H", "P", "d"),
    "attn.k_with_prefix": ("B", "H", "P+N", "d"),
    "attn.v_with_prefix": ("B", "H", "P+N", "d"),
    "attn.scores": ("B", "H", "N", "P+N"),
    "attn.probs": ("B", "H", "N", "P+N"),
    "attn.context": ("B", "H", "N", "d"),
    "final.pooler": ("B", "D"),
    "final.logits": ("B", "N", "V"),
}

_LAYER = re.compile(r"^layer(\d+)\.")


def layer_of(name: str) -> int | None:
    """`layer3.attn.k` -> 3; names outside the layer loop -> None."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def fmt(shape) -> str:
    """(16, 128, 768) -> '[16, 128, 768]'."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _spelling(name: str) -> tuple | None:
    for key, letters in _SPELLING.items():
        if name == key or name.endswith("." + key):
            return letters
    return None


@dataclass
class ShapeTrace:
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

    def __enter__(self):
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a ShapeTrace is already active; traces do not nest")
        _ACTIVE = self
        return self

    def __exit__(self, *exc):
        global _ACTIVE
        _ACTIVE = None
        return False

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
        """Spell a shape with the notation letters, e.g. (16, 12, 148, 64) -> '[B, H, P+N, d]'.

        A size no letter matches is printed as a number; a size several letters match gets
        the letter the capture point `name` usually has there (L, not H, in `prefix.kv`).
        A size-1 axis prints as "1" unless the usual spelling puts a letter of size 1 there:
        with L = 1, the keep-mask [B, 1, 1, P+N] must not read [B, 1, L, P+N]; with B = 1,
        the batch axis still reads B.
        """
        order = [k for k in _LETTER_ORDER if k in self.dims] + [
            k for k in self.dims if k not in _LETTER_ORDER]
        usual = _spelling(name) if name else None
        if usual is not None and len(usual) != len(shape):
            usual = None
        out = []
        for axis, size in enumerate(shape):
            matches = [k for k in order if self.dims[k] == size]
            hint = usual[axis] if usual else None
            if hint is not None and (hint in matches or hint == str(size)):
                out.append(hint)
            elif size == 1:  # a broadcast axis or a single step, not whichever letter is 1
                out.append("1")
            else:
                out.append(matches[0] if matches else str(size))
        return "[" + ", ".join(out) + "]"

    def table(self, layers=None, letters: bool = True) -> str:
        """A printable table: name, shape in numbers, and (when dims are known) in letters.

        layers: show only these layer indices (rows outside the layer loop are always shown).
        """
        rows = [(n, s) for n, s in self.rows
                if layers is None or layer_of(n) is None or layer_of(n) in layers]
        if not rows:
            return "(nothing recorded)"
        spell = letters and bool(self.dims)
        nums = [fmt(shape) for _, shape in rows]
        w_name = max(len("name"), *(len(n) for n, _ in rows))
        w_num = max(len("shape"), *(len(x) for x in nums))
        lines = [f"{'name':<{w_name}}  {'shape':<{w_num}}  {'letters' if spell else ''}".rstrip()]
        for (name, shape), num in zip(rows, nums):
            spelled = self.letters(shape, name) if spell else ""
            lines.append(f"{name:<{w_name}}  {num:<{w_num}}  {spelled}".rstrip())
        return "\n".join(lines)

    def walk(self, layer: int = 0) -> str:
        """The walk of lessons 06-08 for one layer, in numbers: how the prompt meets the real tokens.

        Shallow prompts:      prompt + embeddings -> every layer on P+N rows -> slice at the end.
        Hidden-state prompts: prompt + hidden -> inject -> layer -> slice.
        K/V prefix:           prefix K + K -> K with prefix (and the same for V); Q untouched.
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
