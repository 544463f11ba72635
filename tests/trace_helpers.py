"""Compare a recorded shape trace with an expected table written out in a test.

An expected table looks exactly like `ShapeTrace.table()` prints it (the header is optional):

    embeddings.out   [16, 128, 768]  [B, N, D]
    layer0.inject    [16, 148, 768]  [B, P+N, D]

The letters column is optional too; when present it is checked against the trace's dims.
On a mismatch the failure message lines the two tables up row by row:

    !  layer0.inject  [16, 148, 768]  [B, P+N, D]   |  layer0.inject  [16, 128, 768]  [B, N, D]
    -  layer0.prompt  [16, 20, 768]   [B, P, D]     |
    +                                               |  layer0.extra   [1]  [1]

`check_lesson_trace` runs a lesson's `trace_example` the way a learner's change would be tested:
- if the code raises, the failure shows the rows recorded before the error next to the expected
  table, marks the row where it stopped, and then the error itself in a few lines (no 90-line
  traceback with tensor dumps);
- after the shapes, one numeric check: the first attention call is recomputed head by head from
  the module's own weights (`attention_probe`), so a layout bug that keeps every shape (heads
  split as `(d h)` instead of `(h d)`) fails too.

`trace_lesson` does the same and also hands back what the run saw (`Seen`): every capture point's
tensors, every attention call with its module and inputs, and every model run with its inputs.
The lesson's own numeric checks (trace_checks.py) read them, so a same-shape bug in the step a
lesson teaches (a slice off the wrong end, K and V swapped) fails with the step's name.
"""
from __future__ import annotations

import difflib
import math
import re
import traceback
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from minigpt_ptv2.core.capture import Capture
from minigpt_ptv2.core.transformer import Transformer

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def lesson_path(number: str) -> Path:
    """lessons/NN_*.py for NN = "01" ... "13"."""
    found = sorted(LESSONS.glob(f"{number}_*.py"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one lessons/{number}_*.py, found {[p.name for p in found]}")
    return found[0]


def load_lesson(number: str):
    """A lesson's definitions as a module (its functions, classes and constant tables; the lesson's
    own work is not run): lessons/run_lesson.py's `definitions`, as the answers import a lesson."""
    import sys
    if str(LESSONS) not in sys.path:
        sys.path.insert(0, str(LESSONS))
    import run_lesson
    return run_lesson.definitions(lesson_path(number))

_ROW = re.compile(r"^(?P<name>\S+)\s+\[(?P<shape>[\d,\s]*)\](?:\s+\[(?P<letters>[^\]]*)\])?\s*$")


def parse_table(text: str) -> list[tuple]:
    """Rows `(name, shape)` or `(name, shape, letters)` from a printed table."""
    rows = []
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or line.split()[0] == "name":
            continue
        m = _ROW.match(line)
        if m is None:
            raise ValueError(f"cannot read expected trace row {line!r}; write 'name  [1, 2]  [B, N]'")
        shape = tuple(int(s) for s in m["shape"].split(",") if s.strip())
        rows.append((m["name"], shape) if m["letters"] is None
                    else (m["name"], shape, "[" + m["letters"].strip() + "]"))
    return rows


def _render(rows: list[tuple]) -> list[str]:
    if not rows:
        return []
    w = max(len(r[0]) for r in rows)
    nums = ["[" + ", ".join(str(s) for s in r[1]) + "]" for r in rows]
    wn = max(len(n) for n in nums)
    return [f"{r[0]:<{w}}  {n:<{wn}}  {r[2] if len(r) > 2 else ''}".rstrip() for r, n in zip(rows, nums)]


def assert_trace(actual, expected) -> None:
    """actual: a ShapeTrace or a list of (name, shape) rows; expected: a table (str) or rows."""
    want = parse_table(expected) if isinstance(expected, str) else [tuple(r) for r in expected]
    rows = actual.rows if hasattr(actual, "rows") else list(actual)
    with_letters = bool(want) and all(len(r) == 3 for r in want)
    if with_letters:
        if not hasattr(actual, "letters"):
            raise TypeError("expected rows carry letters: pass the ShapeTrace itself, not its rows")
        got = [(n, tuple(s), actual.letters(tuple(s), n)) for n, s in rows]
    else:
        got = [(n, tuple(s)) for n, s in rows]
    if got == want:
        return
    left, right = _render(want), _render(got)
    wl = max([len("expected")] + [len(x) for x in left])
    out = [f"   {'expected':<{wl}}  |  actual"]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=want, b=got, autojunk=False).get_opcodes():
        if op == "equal":
            out += [f"   {left[i]:<{wl}}  |  {right[j]}" for i, j in zip(range(i1, i2), range(j1, j2))]
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            a = left[i1 + k] if i1 + k < i2 else ""
            b = right[j1 + k] if j1 + k < j2 else ""
            mark = "!" if a and b else ("-" if a else "+")
            out.append(f"{mark}  {a:<{wl}}  |  {b}")
    pytest.fail(f"shape trace differs from the expected table "
                f"({len(want)} expected rows, {len(got)} recorded; ! changed, - missing, + extra):\n"
                + "\n".join(out), pytrace=False)


# --- a lesson's trace, run as a test: partial traces on errors, and one numeric check -------------

def _where(exc: BaseException) -> str:
    """The innermost frame of the error inside the project (a lesson or the package)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/lessons/" in f.filename or "/minigpt_ptv2/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} ({f.name})"


def _fail_partial(exc: BaseException, expected: str, several: bool = False) -> None:
    want = parse_table(expected)
    partial = getattr(exc, "partial_trace", None)
    rows = partial.rows if partial is not None else []
    got = [(n, tuple(sh), partial.letters(tuple(sh), n)) if partial is not None and want and len(want[0]) == 3
           else (n, tuple(sh)) for n, sh in rows]
    left, right = _render(want), _render(got)
    wl = max([len("expected")] + [len(x) for x in left])
    out = [f"   {'expected':<{wl}}  |  recorded before the error"]
    stopped = False
    for i, a in enumerate(left):
        if i < len(right):
            mark = " " if want[i] == got[i] else "!"
            out.append(f"{mark}  {a:<{wl}}  |  {right[i]}")
        else:
            out.append(f"{'>' if not stopped else ' '}  {a:<{wl}}  |  {'<-- stopped here' if not stopped else ''}")
            stopped = True
    message = str(exc).strip().splitlines()
    short = "\n".join("    " + line[:200] for line in message[:4]) + ("\n    ..." if len(message) > 4 else "")
    note = ("\n(this lesson records several traces: the right column is the one that was being recorded "
            "when the error came, which may not be the one this test checks)" if several else "")
    pytest.fail(f"the lesson's code raised before its trace was complete ({len(got)} of {len(want)} rows "
                f"recorded; ! differs, > first row never reached):\n" + "\n".join(out) + note
                + f"\n\n{type(exc).__name__} at {_where(exc)}\n{short}", pytrace=False)


def check_lesson_trace(number: str, expected: str, pick=None, **kwargs):
    """Run lesson `number`'s trace_example(**kwargs), compare the (picked) trace with `expected`,
    then recompute its first attention call by hand. Returns what trace_example returned."""
    result, seen = trace_lesson(number, expected, pick, **kwargs)
    seen.probe.check()
    return result


def trace_lesson(number: str, expected: str, pick=None, keep=None, **kwargs):
    """Run and compare as `check_lesson_trace` does, and return (what trace_example returned,
    `Seen`). keep: the capture names (prefixes) whose tensors to keep, e.g. ("layer0.", "mask.");
    None keeps every one. The head-by-head recomputation is left to the caller,
    `seen.probe.check()`, after the lesson's own checks: theirs name the step that is wrong."""
    lesson = load_lesson(number)
    error = None
    with attention_probe() as probe, Seen(keep) as seen:
        seen.probe, seen.attention = probe, probe.calls
        try:
            result = lesson.trace_example(**kwargs)
        except Exception as e:  # a learner's change that crashes: show how far the trace got
            error = e
    if error is not None:
        _fail_partial(error, expected, several=pick is not None)
    assert_trace(pick(result) if pick is not None else result, expected)
    return result, seen


class Seen(Capture):
    """What a lesson's run computed, for checks by numbers: a capture listening outside the
    lesson's own traces, so it receives every row whatever layers those traces show.

    seen(name, call=0)  the tensor recorded under `name` by the call-th forward pass that recorded it
    seen.attention      every MultiHeadAttention call: (module, x, keywords, AttentionOutput)
    seen.probe          (from trace_lesson) those calls' probe: `.check()` recomputes the first one
    seen.runs           every model's forward body: (model, input_ids, attention_mask, keywords)
    """

    def __init__(self, keep=None):
        self.keep = tuple(keep) if keep is not None else None
        self.tensors = defaultdict(list)  # name -> [tensor of the first call, of the second, ...]
        self.attention, self.runs = [], []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self.keep is None or name.startswith(self.keep):
            self.tensors[name].append(tensor.detach())

    def __call__(self, name: str, call: int = 0) -> torch.Tensor:
        found = self.tensors.get(name, [])
        if len(found) <= call:
            pytest.fail(f"the run recorded {name!r} {len(found)} time(s); the check reads recording {call}"
                        + ("" if self.keep is None else f" (kept: {self.keep})"), pytrace=False)
        return found[call]

    def calls(self, scope: str) -> list:
        """The attention calls of one module, e.g. "layer0.attn", in order."""
        return [c for c in self.attention if c[0].scope == scope]

    def __enter__(self):
        original, runs = Transformer.run, self.runs

        def recording(model, input_ids, attention_mask=None, **kw):  # every architecture's forward body
            runs.append((model, input_ids, attention_mask, kw))
            return original(model, input_ids, attention_mask, **kw)
        self._original, Transformer.run = original, recording
        return super().__enter__()

    def __exit__(self, *exc):
        Transformer.run = self._original
        return super().__exit__(*exc)


def reference_attention(attn, x, keep=None, prefix=None, positions=None, rotary=None):
    """One MultiHeadAttention call recomputed head by head, from its weights alone.

    Head h reads columns h*d..(h+1)*d of W_Q, and its group's K/V head g = h // (H / H_kv) the
    columns of W_K and W_V at g*d; heads are put back side by side, (h d), before W_O. This never
    uses the module's own split or merge, so a layout bug there shows up as a wrong number."""
    H, H_kv, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    W = attn.qkv.weight  # [D, (H + 2 H_kv) d]
    b = attn.qkv.bias

    def cols(start):  # x [B, N, D] -> [B, N, d], columns start..start+d of the fused product
        y = x @ W[:, start:start + d]
        return y + b[start:start + d] if b is not None else y

    heads = []
    for h in range(H):
        g = h // (H // H_kv)
        q, k, v = cols(h * d), cols((H + g) * d), cols((H + H_kv + g) * d)  # [B, N, d] each
        if rotary is not None:
            q, k = rotary(q[:, None], positions)[:, 0], rotary(k[:, None], positions)[:, 0]
        if prefix is not None:
            k = torch.cat([prefix[0][:, g], k], dim=1)  # [B, P+N, d]
            v = torch.cat([prefix[1][:, g], v], dim=1)
        s = (q @ k.transpose(1, 2)) / math.sqrt(d)  # [B, N, P+N]
        if keep is not None:
            s = s.masked_fill(~keep[:, 0], torch.finfo(s.dtype).min)  # keep [B, 1, N or 1, P+N]
        heads.append(torch.softmax(s, dim=-1) @ v)  # [B, N, d]
    ctx = torch.cat(heads, dim=-1)  # [B, N, H*d]: head 0's d features, then head 1's, ...
    out = ctx @ attn.output.weight
    return out + attn.output.bias if attn.output.bias is not None else out  # [B, N, D]


class _Probe:
    def __init__(self):
        self.calls = []

    def check(self, atol: float = 1e-4) -> None:
        """The first recorded attention call equals `reference_attention` (atol: fp32 sums in
        another order through one layer, on activations of a few units; a layout bug moves them by
        0.1 or more)."""
        if not self.calls:
            pytest.fail("the lesson's trace ran no attention module: nothing to check numerically",
                        pytrace=False)
        attn, x, kw, out = self.calls[0]
        with torch.no_grad():
            want = reference_attention(attn, x, kw.get("keep"), kw.get("prefix"), kw.get("positions"),
                                       kw.get("rotary"))
        got = out.out.detach()
        gap = float((got - want).abs().max())
        if not gap <= atol * max(1.0, float(want.abs().max())):
            pytest.fail(f"the shapes are right but the numbers are not: attention ({attn.scope}) differs from "
                        f"the head-by-head recomputation by {gap:.3g} (heads split or merged in another order? "
                        f"core/attention.py: MultiHeadAttention)",
                        pytrace=False)


@contextmanager
def attention_probe():
    """Record every MultiHeadAttention call (module, input, keywords, output) while the block runs."""
    from minigpt_ptv2.core.attention import MultiHeadAttention
    probe, original = _Probe(), MultiHeadAttention.forward

    def recording(self, x, **kw):
        out = original(self, x, **kw)
        probe.calls.append((self, x.detach(), {k: (v.detach() if torch.is_tensor(v) else v) for k, v in kw.items()},
                            out))
        return out
    MultiHeadAttention.forward = recording
    try:
        yield probe
    finally:
        MultiHeadAttention.forward = original
