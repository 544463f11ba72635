"""Same-shape bugs, planted one at a time: does each lesson's trace test catch the bug it teaches about?

Every row of BUGS is a mistake a learner could make while reading a lesson: one exact snippet of
the package replaced by another that keeps every shape and gets the numbers wrong (a slice off
the wrong end, K and V swapped, a prefix behind the tokens, heads paired wrong). A shape trace
cannot see any of them; the lessons' trace tests check each step by its numbers too
(tests/trace_checks.py), and this script shows that they catch every row:

    python tests/mutations.py              # plant every row, run its tests, print the table
    python tests/mutations.py --list       # the table only, nothing run
    python tests/mutations.py deep-slice-wrong-end repeat-kv-tiles   # some rows

For each row it copies the package, the tests and the lessons into a temporary folder, plants
the bug there (never in the working tree), and runs the row's tests in a fresh Python that
imports the package from that copy before anything else, checks that it did (the installed,
editable package would hide the bug) and that the file it imported holds the planted text.
A bug counts as caught when one of its tests fails with a message naming the step's file and
function (`core/prompt_rows.py` and `drop_front`), not by an unrelated error. First, with no bug
planted, every test of the table must pass.

Exit status 1 when a snippet is not found exactly once inside its function (the table went stale
as the code moved: update the row), when the tests fail with no bug planted, or when a planted
bug is not caught by name. Run it before a release; tests/test_mutations_table.py checks the
table itself on every test run, without planting anything.
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "minigpt_ptv2"
COPIED = (PACKAGE, "tests", "lessons", "pyproject.toml")  # what a lesson's trace test reads


@dataclass(frozen=True)
class Bug:
    name: str  # one word-group, used on the command line
    mistake: str  # what the learner did, in a line
    file: str  # inside minigpt_ptv2/
    function: str  # where the snippet sits: "func", "Class.method" or "Class"
    snippet: str  # exact text, found exactly once in the file
    replacement: str  # the same shapes, other numbers
    tests: tuple  # pytest node ids expected to catch it


def t(lesson: str, name: str) -> str:
    return f"tests/test_lesson_{lesson}_trace.py::test_lesson_{lesson}_{name}"


BUGS = (
    Bug("heads-split-d-h", "splits D into heads as (d h): head h gets every H-th column",
        "core/attention.py", "MultiHeadAttention.project",
        'heads = rearrange(self.qkv(x), "b n (h d) -> b h n d", d=d)',
        'heads = rearrange(self.qkv(x), "b n (d h) -> b h n d", d=d)',
        (t("01", "plain_encoder_trace"),)),
    Bug("heads-merged-d-h", "merges the heads back as (d h) before W_O",
        "core/attention.py", "MultiHeadAttention.forward",
        'out = self.output(rearrange(ctx, "b h n d -> b n (h d)"))',
        'out = self.output(rearrange(ctx, "b h n d -> b n (d h)"))',
        (t("01", "plain_encoder_trace"),)),
    Bug("scores-over-d", "scales the scores by d instead of sqrt(d)",
        "core/attention.py", "MultiHeadAttention._explicit",
        "scores = (q @ k.transpose(-2, -1)).to(acc) / math.sqrt(self.head_dim)",
        "scores = (q @ k.transpose(-2, -1)).to(acc) / self.head_dim",
        (t("02", "explicit_attention_trace"),)),
    Bug("softmax-over-queries", "takes the softmax over the queries' axis (same shape)",
        "core/attention.py", "MultiHeadAttention._explicit",
        "probs = torch.softmax(scores, dim=-1).to(q.dtype)",
        "probs = torch.softmax(scores, dim=-2).to(q.dtype)",
        (t("02", "explicit_attention_trace"),)),
    Bug("mask-inverted", "fills the kept keys with the minimum instead of the dropped ones",
        "core/attention.py", "additive_mask",
        ".masked_fill(\n        ~keep, torch.finfo(dtype).min)",
        ".masked_fill(\n        keep, torch.finfo(dtype).min)",
        (t("03", "tiny_bert_trace"),)),
    Bug("token-type-dropped", "adds no token-type row for a single segment (pitfall 8)",
        "models/bert.py", "BertEmbeddings.tokens",
        "x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # [B, N, D]",
        "x = self.word_embeddings(input_ids)  # [B, N, D]",
        (t("03", "tiny_bert_trace"),)),
    Bug("output-not-transposed", "loads the attention output matrix [out, in] as it is (D x D: no shape error)",
        "models/bert.py", "keys",
        'Key(ours + f"attn.output.{w}", (hf + f"attention.output.dense.{w}",), transpose=True),',
        'Key(ours + f"attn.output.{w}", (hf + f"attention.output.dense.{w}",)),',
        (t("04", "pretrained_minilm_trace"),)),
    Bug("embedding-eps-default", "builds the embedding LayerNorm with torch's eps 1e-5, not BERT's 1e-12",
        "models/bert.py", "BertEmbeddings.__init__",
        "self.LayerNorm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)",
        "self.LayerNorm = nn.LayerNorm(D)",
        (t("04", "pretrained_minilm_trace"),)),
    Bug("cache-position-repeats", "gives the next token the last token's position (no + 1)",
        "core/causal_lm.py", "CausalLM.forward",
        "out.positions[:, -1].expand(B) + 1",
        "out.positions[:, -1].expand(B).clone()",
        (t("05", "cached_step_trace"),)),
    Bug("shallow-slice-wrong-end", "drops the last P rows after a soft prompt: the pooler reads a virtual row",
        "core/transformer.py", "Transformer.run",
        'h = record("shallow", "slice", drop_front(h, m.num_virtual))',
        'h = record("shallow", "slice", h[:, :h.shape[1] - m.num_virtual])',
        (t("06", "soft_prompt_trace"),)),
    Bug("pooler-reads-last-row", "pools the last token, as a decoder's head would, instead of [CLS]",
        "models/bert.py", "BertEncoder.forward",
        "pooled = torch.tanh(self.pooler(h[:, 0]))",
        "pooled = torch.tanh(self.pooler(h[:, -1]))",
        (t("06", "soft_prompt_trace"),)),
    Bug("deep-slice-wrong-end", "slices x[:, :N] instead of x[:, P:]: prompt rows kept, real rows lost",
        "core/prompt_rows.py", "drop_front",
        "return x[:, P:]  # [B, N, D]",
        "return x[:, :x.shape[1] - P]  # [B, N, D]",
        (t("07", "deep_prompt_trace"), t("07", "prompt_rows_known_the_real_rows_are_the_plain_models"))),
    Bug("deep-prompt-after-tokens", "injects the prompt rows after the hidden rows",
        "core/prompt_rows.py", "in_front",
        "return torch.cat([rows, x], dim=1)  # [B, P+N, D]",
        "return torch.cat([x, rows], dim=1)  # [B, P+N, D]",
        (t("07", "deep_prompt_trace"),)),
    Bug("prefix-k-v-swapped", "concatenates the prefix values onto K and the prefix keys onto V",
        "core/attention.py", "concat_prefix",
        "k = torch.cat([pk, k], dim=2)  # [B, H_kv, P+N, d]\n    v = torch.cat([pv, v], dim=2)",
        "k = torch.cat([pv, k], dim=2)  # [B, H_kv, P+N, d]\n    v = torch.cat([pk, v], dim=2)",
        (t("08", "kv_prefix_trace"),)),
    Bug("prefix-table-d-h", "reads the prefix table's heads as (d h)",
        "prompts/prefix.py", "KVPrefix.layer_kv",
        'kv = rearrange(self.flat(), "p (l two h d) -> l two h p d"',
        'kv = rearrange(self.flat(), "p (l two d h) -> l two h p d"',
        (t("08", "kv_prefix_trace"),)),
    Bug("bridge-normed-post-ln", "takes LayerNorm(h) first in a post-LN layer (only pre-LN reads LN(h))",
        "models/bert.py", "BertLayer.kv_from_hidden",
        "_, k, v = self.attn.project(h)  # post-LN",
        "_, k, v = self.attn.project(self.attn_norm(h))  # post-LN",
        (t("09", "equivalent_prefix_trace"),)),
    Bug("key-mask-prefix-after", "puts the P virtual entries of the key mask after the tokens'",
        "core/prompt_rows.py", "keys_in_front",
        "return torch.cat([front, key_mask], dim=1)  # [B, P+N]",
        "return torch.cat([key_mask, front], dim=1)  # [B, P+N]",
        (t("10", "task_model_trace"),)),
    Bug("prefix-masked-out", "reads virtual_keep as 'True = masked' (nn.MultiheadAttention's convention)",
        "core/prompt_rows.py", "keys_in_front",
        "front = virtual_keep.to(key_mask.device).bool().expand(B, P)  # [B, P]",
        "front = (~virtual_keep.to(key_mask.device).bool()).expand(B, P)  # [B, P]",
        (t("11", "attention_probs_trace"),)),
    Bug("causal-mask-ignores-prefix", "lines the causal triangle up with the first key, not after the prefix",
        "core/masks.py", "build_keep",
        "q_pos = torch.arange(n_query, device=key_mask.device)[:, None] + first  # [Nq, 1]",
        "q_pos = torch.arange(n_query, device=key_mask.device)[:, None]  # [Nq, 1]",
        (t("12", "prompt_step_trace"),)),
    Bug("prefix-after-tokens", "appends the prefix after the tokens' keys and values",
        "core/attention.py", "concat_prefix",
        "k = torch.cat([pk, k], dim=2)  # [B, H_kv, P+N, d]\n    v = torch.cat([pv, v], dim=2)",
        "k = torch.cat([k, pk], dim=2)  # [B, H_kv, P+N, d]\n    v = torch.cat([v, pv], dim=2)",
        (t("12", "prompt_step_trace"),)),
    Bug("fused-mask-dropped", "forgets to hand the keep-mask to the fused kernel",
        "core/attention.py", "MultiHeadAttention.forward",
        "ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,",
        "ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=None,",
        (t("13", "zero_prefix_trace"),)),
    Bug("position-policy-inverted", "shifts the real tokens under 'real' and not under 'shifted' (pitfall 1)",
        "core/prompt_method.py", "PromptMethod.position_offset",
        'return self.num_virtual if self.positions == "shifted" else 0',
        'return self.num_virtual if self.positions == "real" else 0',
        (t("13", "positions_under_a_prefix"),)),
    Bug("cache-position-counts-prefix", "places the next token at the cache's length, prefix entries included",
        "core/transformer.py", "Transformer._real_positions",
        "pos = past.next_position[:, None] + torch.arange(N, device=input_ids.device)  # [B, N]",
        "pos = past.length + torch.arange(N, device=input_ids.device)[None].expand(B, N)  # [B, N]",
        (t("12", "cached_step_trace"),)),
    Bug("shifted-prompt-rows-unplaced", "gives the prompt rows no positions under 'shifted' (PEFT gives 0..P-1)",
        "core/transformer.py", "Transformer.prompt_positions",
        'if policy == "shifted":\n            return torch.arange(P, device=device)[None]  # [1, P]',
        'if policy == "shifted":\n            return None  # [1, P]',
        (t("14", "generation_step_with_the_cache"),)),
    Bug("repeat-kv-tiles", "widens K/V heads with repeat (0,1,0,1) instead of repeat_interleave (0,0,1,1)",
        "core/attention.py", "repeat_kv",
        "return t.repeat_interleave(groups, dim=1)  # [B, H, Nk, d]",
        "return t.repeat(1, groups, 1, 1)  # [B, H, Nk, d]",
        (t("15", "kv_prefix_trace"), t("15", "deep_prompt_trace"))),
    Bug("rotate-half-sign", "flips rotate_half's sign: every row turns the other way",
        "core/rotary.py", "rotate_half",
        "return torch.cat([-x2, x1], dim=-1)  # [..., d]",
        "return torch.cat([x2, -x1], dim=-1)  # [..., d]",
        (t("15", "kv_prefix_trace"),)),
    Bug("rotary-prompt-rows-overlap", "puts rotary prompt rows at 0..P-1, on top of the tokens' 0..N-1",
        "core/transformer.py", "Transformer.prompt_positions",
        "return torch.arange(-P, 0, device=device)[None]  # [1, P]",
        "return torch.arange(0, P, device=device)[None]  # [1, P]",
        (t("15", "deep_prompt_trace"),)),
    Bug("loss-not-shifted", "scores each position on its own token instead of the next one (labels[:, :-1])",
        "core/causal_lm.py", "CausalLM.forward",
        "labels[:, 1:].flatten(),",
        "labels[:, :-1].flatten(),",
        (t("16", "deep_prompt_training_step_trace"), t("16", "kv_prefix_training_step_trace"))),
)


# --- the table's own checks: cheap, nothing planted (tests/test_mutations_table.py runs them) ----

def _span(tree: ast.Module, qualname: str):
    """(first line, last line) of a function, method or class given as "f", "C.m" or "C"."""
    nodes, found = tree.body, None
    for part in qualname.split("."):
        found = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if found is None:
            return None
        nodes = found.body
    return found.lineno, found.end_lineno


def problems(root: Path = ROOT, bugs=BUGS) -> list[str]:
    """What is wrong with the table: a snippet not found exactly once, or not inside its
    function; a replacement that changes nothing or is already in the file; a test that does not
    exist; two rows with one name."""
    out = []
    names = [b.name for b in bugs]
    out += [f"two rows are named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for b in bugs:
        path = root / PACKAGE / b.file
        if not path.is_file():
            out.append(f"{b.name}: {PACKAGE}/{b.file} does not exist")
            continue
        text = path.read_text()
        if text.count(b.snippet) != 1:
            out.append(f"{b.name}: the snippet is found {text.count(b.snippet)} times in {b.file}, expected once: "
                       f"{b.snippet!r}")
        else:
            span = _span(ast.parse(text), b.function)
            line = text[:text.index(b.snippet)].count("\n") + 1
            if span is None:
                out.append(f"{b.name}: {b.file} has no {b.function}")
            elif not span[0] <= line <= span[1]:
                out.append(f"{b.name}: the snippet is at line {line} of {b.file}, outside {b.function} "
                           f"(lines {span[0]}..{span[1]})")
        if b.replacement == b.snippet or b.replacement in text:
            out.append(f"{b.name}: the replacement is already in {b.file}: planting it would prove nothing")
        if not b.tests:
            out.append(f"{b.name}: no test is expected to catch it")
        for node in b.tests:
            file, _, test = node.partition("::")
            if not (root / file).is_file() or f"def {test}(" not in (root / file).read_text():
                out.append(f"{b.name}: {node} does not exist")
    return out


# --- planting and running -----------------------------------------------------------------------

# Run in a fresh Python inside the copy: import the package first, prove it is the copy's and
# holds the planted text, then hand over to pytest (which finds it already imported).
BOOT = r"""
import sys, pathlib
root, file, planted, report, *tests = sys.argv[1:]
root = pathlib.Path(root).resolve()
sys.path.insert(0, str(root))
import minigpt_ptv2
where = pathlib.Path(minigpt_ptv2.__file__).resolve()
if root not in where.parents:
    sys.exit(f"IMPORT ERROR: the package came from {where}, not from the copy {root}")
if planted and planted not in (where.parent / file).read_text():
    sys.exit(f"IMPORT ERROR: {where.parent / file} does not hold the planted text")
print(f"IMPORTED {where}", flush=True)
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]))
"""


@dataclass
class Outcome:
    bug: Bug | None  # None: the run with nothing planted
    imported: str = ""
    failures: dict = None  # node id -> first lines of its failure message
    passed: list = None
    error: str = ""
    seconds: float = 0.0

    def named(self) -> list[str]:
        """The failing tests whose message names the planted bug's file and function."""
        b = self.bug
        return [n for n, m in self.failures.items() if b.file in m and b.function in m]


def _copy(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
            shutil.copytree(src, dest / name, ignore=skip)
        else:
            shutil.copy2(src, dest / name)


def _read_report(path: Path) -> tuple[dict, list]:
    failures, passed = {}, []
    for case in ET.parse(path).iter("testcase"):
        node = case.get("classname").replace(".", "/") + ".py::" + case.get("name")
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is None:
            if case.find("skipped") is None:
                passed.append(node)
            continue
        message = (bad.get("message") or bad.text or "").strip()
        failures[node] = message.removeprefix("Failed: ")
    return failures, passed


def run(bug: Bug | None, tests: list[str], workdir: Path) -> Outcome:
    """Copy, plant (unless bug is None), run `tests` against the copy."""
    start = time.perf_counter()
    copy = Path(tempfile.mkdtemp(prefix=(bug.name if bug else "clean") + "-", dir=workdir))
    _copy(copy)
    planted = ""
    if bug is not None:
        path = copy / PACKAGE / bug.file
        text = path.read_text()
        path.write_text(text.replace(bug.snippet, bug.replacement, 1))
        planted = bug.replacement
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    report = copy / "report.xml"
    proc = subprocess.run([sys.executable, "-c", BOOT, str(copy), bug.file if bug else "", planted, str(report),
                           *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=1800)
    out = Outcome(bug, failures={}, passed=[], seconds=time.perf_counter() - start)
    out.imported = next((line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("IMPORTED ")),
                        "")
    if not out.imported or not report.is_file():
        out.error = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
    else:
        out.failures, out.passed = _read_report(report)
    shutil.rmtree(copy, ignore_errors=True)
    return out


def _short(node: str) -> str:
    return node.removeprefix("tests/")


def _message(text: str, width: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 3] + "..."


def report(o: Outcome) -> bool:
    """Print one row's outcome; True when one of its tests failed naming the step."""
    b, named = o.bug, o.named() if not o.error else []
    print(f"[{'caught' if named else 'MISSED'}] {b.name}: {b.mistake}\n"
          f"         planted in {b.file}: {b.function} ({o.seconds:.0f} s)", flush=True)
    if o.error:
        print(f"         the run failed before testing: {_message(o.error)}")
    for node in b.tests:
        if node in o.failures:
            mark = "by name" if node in named else "WITHOUT naming the step"
            print(f"    {_short(node)} fails {mark}:\n        {_message(o.failures[node])}", flush=True)
        elif not o.error:
            print(f"    {_short(node)} passes", flush=True)
    return bool(named)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="rows to plant (default: all)")
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    ap.add_argument("--jobs", type=int, default=2, help="rows run at once (default 2)")
    args = ap.parse_args(argv)

    bad = problems()
    if bad:
        print("the table is stale:\n  " + "\n  ".join(bad))
        return 1
    unknown = [n for n in args.names if n not in {b.name for b in BUGS}]
    if unknown:
        print(f"no rows named {unknown}; rows: {', '.join(b.name for b in BUGS)}")
        return 1
    bugs = [b for b in BUGS if not args.names or b.name in args.names]
    if args.list:
        for b in bugs:
            print(f"{b.name:<30} {b.file}: {b.function}\n    {b.mistake}\n    - {b.snippet!r}\n    + "
                  f"{b.replacement!r}\n    caught by: {', '.join(_short(n) for n in b.tests)}")
        return 0

    start = time.perf_counter()
    all_tests = sorted({n for b in bugs for n in b.tests})
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        clean = run(None, all_tests, Path(tmp))
        print(f"package imported from the copy, not the working tree: {clean.imported or '(failed)'}")
        if clean.error or clean.failures or sorted(clean.passed) != all_tests:
            print(f"with no bug planted the tests must pass; they did not:\n{clean.error}")
            for node, message in clean.failures.items():
                print(f"  {_short(node)}: {_message(message)}")
            missing = sorted(set(all_tests) - set(clean.passed) - set(clean.failures))
            print("".join(f"  {_short(n)}: not run\n" for n in missing), end="")
            return 1
        print(f"with no bug planted: {len(clean.passed)} tests pass ({clean.seconds:.0f} s)\n")
        missed = 0
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # results printed in table order, as they come
            for o in pool.map(lambda b: run(b, list(b.tests), Path(tmp)), bugs):
                missed += not report(o)
    total = time.perf_counter() - start
    print(f"\n{len(bugs) - missed} of {len(bugs)} planted bugs caught by name; {total:.0f} s in all "
          f"(--jobs {args.jobs}). Every run imported {PACKAGE} from its own copy and found the planted text "
          f"in the file it imported, before pytest started.")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
