"""The trace facility itself: free when off, faithful when on, readable when printed, and the
`trace` command that prints seed 000's walk."""
from __future__ import annotations

import re

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from minigpt_ptv2 import trace as trace_mod
from minigpt_ptv2.trace import shape_trace as shape_trace_mod
from minigpt_ptv2.cli import main
from minigpt_ptv2.cli.trace import parse_layers
from minigpt_ptv2.prompts import METHODS, make_method
from minigpt_ptv2.trace import ShapeTrace, dims_for, layer_of, record, side_by_side
from trace_helpers import assert_trace, parse_table

B, N, P = 2, 5, 3


def tiny(kind: str, method: str | None):
    """kind: "encoder" (bert-tiny), "decoder" (gpt2-tiny) or "llama" (llama-tiny, grouped K/V heads)."""
    from minigpt_ptv2.models import build
    cfg = preset({"encoder": "bert-tiny", "decoder": "gpt2-tiny", "llama": "llama-tiny"}[kind])
    model = build(cfg).eval()
    if method is not None:
        model.attach(make_method(method, cfg, P).eval())
    return model, torch.randint(0, cfg.vocab_size, (B, N))


# --- off means off ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["deep", "prefix", "soft"])
def test_tracing_off_does_no_recording_work(monkeypatch, method):
    """With no trace active, a whole forward pass never reaches ShapeTrace.add (the only place
    that reads shapes or keeps tensors), and `record` hands back the very same tensor."""
    model, ids = tiny("encoder", method)
    calls = []
    monkeypatch.setattr(ShapeTrace, "add", lambda self, name, t: calls.append(name))
    with torch.no_grad():
        model(ids, output_attentions=True)
    assert calls == [] and trace_mod.capturing() is False
    t = torch.ones(3)
    assert record("x", "y", t) is t
    # The same spy does count when a trace is on, so the zero above is meaningful.
    with torch.no_grad(), ShapeTrace():
        model(ids, output_attentions=True)
    assert len(calls) > 20 and "layer0.attn.probs" in calls


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("method", [None, *METHODS])
def test_tracing_changes_nothing(kind, method):
    """Outputs are bit-identical with and without a trace, for every model and method."""
    model, ids = tiny(kind, method)
    with torch.no_grad():
        plain = model(ids, output_attentions=True)
        with ShapeTrace(keep=("probs",)) as tr:
            traced = model(ids, output_attentions=True)
    a = plain.last_hidden_state if kind == "encoder" else plain.logits
    b = traced.last_hidden_state if kind == "encoder" else traced.logits
    assert torch.equal(a, b)
    # kept tensors are the very probabilities the model returns (a gated prefix's weights in front)
    kept = [tr.tensors[n] for n in ("layer1.attn.gated_probs", "layer1.attn.probs") if n in tr.tensors]
    assert torch.equal(torch.cat(kept, dim=-1), traced.attentions[1])
    assert not any(t.requires_grad for t in kept)


def test_traces_nest_and_always_close():
    """An inner trace records while it is open, the outer one throughout; an error closes both."""
    x = torch.ones(2, 3)
    with ShapeTrace() as outer:
        record("a", "x", x)
        with ShapeTrace() as inner:
            record("b", "x", x)
        record("c", "x", x)
    assert outer.names() == ["a.x", "b.x", "c.x"] and inner.names() == ["b.x"]
    with pytest.raises(ZeroDivisionError):
        with ShapeTrace():
            1 / 0
    assert not trace_mod.capturing()


def test_each_thread_records_into_its_own_trace():
    import threading
    results = {}

    def run(name):
        with ShapeTrace() as tr:
            for _ in range(200):
                record(name, "x", torch.ones(1))
        results[name] = set(tr.names())

    threads = [threading.Thread(target=run, args=(n,)) for n in ("t0", "t1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"t0": {"t0.x"}, "t1": {"t1.x"}}


def documented_names() -> list:
    """The capture points listed in trace/shape_trace.py's docstring, as regular expressions."""
    out = []
    for line in shape_trace_mod.__doc__.splitlines():
        m = re.match(r"^    ([a-z][\w{}.|]*\.[\w{}.|]+)\s", line)
        if m:
            pattern = re.escape(m.group(1)).replace(r"\{i\}", r"\d+").replace(r"\|", "|")
            out.append(re.compile(re.sub(r"([a-z]+(?:\|[a-z]+)+)", r"(\1)", pattern) + "$"))
    return out


def test_every_recorded_name_is_documented():
    """Run every method on every model, padded, explicit path, plus a cached decoding step:
    each name recorded must be one the module docstring lists (and the list has no extras)."""
    seen = set()
    for kind in ("encoder", "decoder", "llama"):
        for method in (None, *METHODS):
            model, ids = tiny(kind, method)
            mask = torch.ones_like(ids)
            mask[-1, -1] = 0
            with torch.no_grad(), ShapeTrace() as tr:
                out = model(ids, attention_mask=mask, output_attentions=True,
                            **({"use_cache": True} if kind == "decoder" else {}))
                if kind == "decoder":
                    model(ids[:, :1], past=out.cache)
            seen.update(tr.names())
    patterns = documented_names()
    assert len(patterns) >= 20
    undocumented = sorted(n for n in seen if not any(p.match(n) for p in patterns))
    unused = [p.pattern for p in patterns if not any(p.match(n) for n in seen)]
    assert undocumented == [] and unused == []


# --- letters -----------------------------------------------------------------------------------

def test_letters_resolve_clashes_with_each_capture_points_usual_spelling():
    """BERT-base has L = H = 12 and, with 2 layers, L*2*D = D_ff = 3072: plain value matching
    would spell prefix.kv as [H, 2, H, P, d]."""
    tr = ShapeTrace(dims=dims_for(preset("bert-base").replace(num_hidden_layers=12), B=16, N=128, P=20))
    assert tr.letters((12, 2, 12, 20, 64), "prefix.kv") == "[L, 2, H, P, d]"
    assert tr.letters((12, 2, 12, 20, 64)) == "[H, 2, H, P, d]"  # no name: first match wins
    assert tr.letters((16, 12, 128, 148), "layer3.attn.scores") == "[B, H, N, P+N]"
    assert tr.letters((16, 12, 148, 64), "layer3.attn.q") == "[B, H, P+N, d]"  # deep: Q is P+N long
    assert tr.letters((16, 7, 768)) == "[B, 7, D]"  # no letter: the number
    two = ShapeTrace(dims=dims_for(preset("bert-base").replace(num_hidden_layers=2), B=2, N=128, P=20))
    assert two.letters((20, 3072), "prefix.table") == "[P, L*2*D]"
    assert two.letters((2, 2, 12, 20, 64), "prefix.kv") == "[L, 2, H, P, d]"
    assert two.letters((2, 128, 3072)) == "[B, N, D_ff]"


def test_a_size_one_axis_is_not_spelled_with_whichever_letter_is_one():
    """With L = 1 the encoder's keep-mask [B, 1, 1, P+N] once printed as [B, 1, L, P+N]: a
    broadcast axis of size 1 is "1", unless the usual spelling puts a size-1 letter there."""
    cfg = preset("bert-tiny").replace(num_hidden_layers=1)
    model = BertEncoder(cfg, prompt=make_method("prefix", cfg, P)).eval()
    mask = torch.ones(B, N, dtype=torch.long)
    mask[-1, -1] = 0  # something masked, so the keep-mask is built
    with torch.no_grad(), ShapeTrace.for_model(model, B=B, N=N) as tr:
        model(torch.randint(0, cfg.vocab_size, (B, N)), attention_mask=mask)
    assert tr.dims["L"] == 1
    assert tr.shapes()["mask.keep"] == (B, 1, 1, P + N)
    assert tr.letters(tr.shapes()["mask.keep"], "mask.keep") == "[B, 1, 1, P+N]"
    assert tr.letters((1, 2, 4, P, 6), "prefix.kv") == "[L, 2, H, P, d]"  # here L is meant
    assert tr.letters((B, 1, 24)) == "[B, 1, D]"  # no name, no hint: the number
    one = ShapeTrace(dims=dims_for(cfg, B=1, N=N, P=P))  # B = L = 1
    assert one.letters((1, 1, 1, P + N), "mask.keep") == "[B, 1, 1, P+N]"
    assert one.letters((1, N, 24), "layer0.out") == "[B, N, D]"
    assert one.letters((1, P, 24), "layer0.prompt") == "[B, P, D]"
    assert one.letters((1, 4, 1, 6), "layer0.attn.q") == "[B, H, 1, d]"  # one decoding step


def test_dims_for_spells_every_notation_letter():
    d = dims_for(preset("minilm"), B=16, N=128, P=20)
    assert d == {"B": 16, "N": 128, "P": 20, "D": 384, "L": 6, "H": 12, "d": 32, "V": 30522,
                 "D_ff": 1536, "L*2*D": 4608, "P+N": 148}
    assert "P" not in dims_for(preset("minilm"), B=1, N=4)


def test_table_prints_header_numbers_and_letters_and_filters_layers():
    tr = ShapeTrace(dims={"B": 2, "N": 5, "D": 24})
    tr.add("embeddings.out", torch.zeros(2, 5, 24))
    tr.add("layer0.out", torch.zeros(2, 5, 24))
    tr.add("layer1.out", torch.zeros(2, 5, 24))
    assert tr.table().splitlines() == [
        "name            shape       letters",
        "embeddings.out  [2, 5, 24]  [B, N, D]",
        "layer0.out      [2, 5, 24]  [B, N, D]",
        "layer1.out      [2, 5, 24]  [B, N, D]",
    ]
    assert [r[0] for r in parse_table(tr.table(layers=(1,)))] == ["embeddings.out", "layer1.out"]
    assert ShapeTrace().table() == "(nothing recorded)"
    assert layer_of("layer11.attn.k") == 11 and layer_of("final.pooler") is None


def test_table_collapses_layers_that_repeat_the_first_and_keeps_every_row():
    tr = ShapeTrace(dims={"B": 2, "N": 5, "P": 3, "P+N": 8, "D": 24})
    tr.add("embeddings.out", torch.zeros(2, 5, 24))
    for i in range(4):
        tr.add(f"layer{i}.attn.q", torch.zeros(2, 5, 24))
        tr.add(f"layer{i}.out", torch.zeros(2, 8 if i == 2 else 5, 24))  # layer 2 differs: printed in full
    tr.add("final.last_hidden_state", torch.zeros(2, 5, 24))
    assert tr.table(collapse_repeats=True).splitlines() == [
        "name                     shape       letters",
        "embeddings.out           [2, 5, 24]  [B, N, D]",
        "layer0.attn.q            [2, 5, 24]  [B, N, D]",
        "layer0.out               [2, 5, 24]  [B, N, D]",
        "layer1: the same 2 rows as layer0, layer by layer (not repeated here)",
        "layer2.attn.q            [2, 5, 24]  [B, N, D]",
        "layer2.out               [2, 8, 24]  [B, P+N, D]",
        "layer3: the same 2 rows as layer0, layer by layer (not repeated here)",
        "final.last_hidden_state  [2, 5, 24]  [B, N, D]",
    ]
    assert len(tr.rows) == 10 and len(parse_table(tr.table())) == 10  # only the printed view shortens


def test_side_by_side_lines_rows_up_by_name_and_marks_what_only_one_trace_has():
    left = ShapeTrace(dims={"B": 2, "N": 5, "P": 3, "P+N": 8, "D": 24})
    right = ShapeTrace()  # no letters: numbers
    for name, shape in (("embeddings.out", (2, 5, 24)), ("layer0.inject", (2, 8, 24)),
                        ("layer0.out", (2, 8, 24)), ("layer1.out", (2, 8, 24))):
        left.add(name, torch.zeros(shape))
    for name, shape in (("embeddings.out", (2, 5, 24)), ("mask.keep", (2, 1, 1, 8)),
                        ("layer0.out", (2, 5, 24))):
        right.add(name, torch.zeros(shape))
    assert side_by_side(left, right, ("deep", "plain"), layers=(0,)).splitlines() == [
        "name            deep         plain",
        "embeddings.out  [B, N, D]    [2, 5, 24]",
        "layer0.inject   [B, P+N, D]  -",
        "mask.keep       -            [2, 1, 1, 8]",
        "layer0.out      [B, P+N, D]  [2, 5, 24]",
    ]
    assert side_by_side(ShapeTrace(), ShapeTrace()) == "(nothing recorded)"


def test_layer_filter_applies_while_recording():
    model, ids = tiny("encoder", "prefix")
    with torch.no_grad(), ShapeTrace(layers=(2,)) as tr:
        model(ids)
    layers = {layer_of(n) for n in tr.names()} - {None}
    assert layers == {2} and "prefix.kv" in tr.names() and "final.pooler" in tr.names()


def test_kv_cache_is_recorded_as_a_longer_prefix():
    """Decoding one token with a cache of T keys: the cache shows up where a prefix would."""
    model, _ = tiny("decoder", None)
    ids = torch.randint(0, 130, (B, 7))  # T = 7 keys so far: no size clash with H=4 or d=6
    with torch.no_grad():
        out = model(ids, use_cache=True)
        with ShapeTrace(dims={"B": B, "T": 7, "T+1": 8, "H": 4, "d": 6, "D": 24}) as tr:
            model(ids[:, :1], past=out.cache, use_cache=True)
    assert_trace(tr.select("layer0.attn."), """
        layer0.attn.q              [2, 4, 1, 6]  [B, H, 1, d]
        layer0.attn.k              [2, 4, 1, 6]  [B, H, 1, d]
        layer0.attn.v              [2, 4, 1, 6]  [B, H, 1, d]
        layer0.attn.prefix_k       [2, 4, 7, 6]  [B, H, T, d]
        layer0.attn.prefix_v       [2, 4, 7, 6]  [B, H, T, d]
        layer0.attn.k_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
        layer0.attn.v_with_prefix  [2, 4, 8, 6]  [B, H, T+1, d]
        layer0.attn.context        [2, 4, 1, 6]  [B, H, 1, d]
        layer0.attn.out            [2, 1, 24]    [B, 1, D]
    """)


# --- the helper the lesson tests use ----------------------------------------------------------

def test_assert_trace_shows_expected_and_actual_row_by_row():
    rows = [("a", (1, 2)), ("b", (3,)), ("c", (4,))]
    assert_trace(rows, "a [1, 2]\nb [3]\nc [4]")
    with pytest.raises(pytest.fail.Exception) as e:
        assert_trace(rows, "a [1, 2]\nb [30]\nz [9]\nc [4]")
    msg = str(e.value)
    assert "!  b  [30]" in msg and "|  b  [3]" in msg and "-  z  [9]" in msg and "   a  [1, 2]" in msg
    with pytest.raises(pytest.fail.Exception, match=r"\+ .*\|  c  \[4\]"):
        assert_trace(rows, "a [1, 2]\nb [3]")


# --- the trace command --------------------------------------------------------------------------

def run_cli(capsys, *argv):
    try:
        code = main(["trace", *argv])
    except SystemExit as e:  # an option the parser refuses
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_seed_000_walk_for_deep_prompts(capsys):
    code, out, _ = run_cli(capsys, "--method", "deep", "--config", "bert-base", "--num-layers", "1",
                           "--B", "16", "--N", "128", "--P", "20", "--fused")
    assert code == 0
    assert ("layer0: prompt [16, 20, 768] + hidden [16, 128, 768] -> inject [16, 148, 768] "
            "-> layer [16, 148, 768] -> slice [16, 128, 768]") in out
    table = {r[0]: r for r in parse_table(out.split("\n\n")[0].split("\n", 1)[1])}
    assert table["layer0.inject"] == ("layer0.inject", (16, 148, 768), "[B, P+N, D]")
    assert table["layer0.slice"] == ("layer0.slice", (16, 128, 768), "[B, N, D]")
    assert "D=768 L=1 H=12 d=64" in out.splitlines()[0]


def test_cli_prints_the_kv_counterpart_for_prefixes(capsys):
    code, out, _ = run_cli(capsys, "--method", "prefix", "--config", "bert-base", "--num-layers", "1",
                           "--B", "16", "--N", "128", "--P", "20", "--fused")
    assert code == 0
    assert "layer0: K: prefix [16, 12, 20, 64] + k [16, 12, 128, 64] -> [16, 12, 148, 64]" in out
    assert "layer0: V: prefix [16, 12, 20, 64] + v [16, 12, 128, 64] -> [16, 12, 148, 64]" in out
    assert "layer0: Q: [16, 12, 128, 64] (never prefixed)" in out


@pytest.mark.parametrize("config", ["bert-tiny", "gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("method", ["none", *METHODS])
def test_cli_runs_every_method_on_every_model(capsys, config, method):
    model = "encoder" if config == "bert-tiny" else "decoder"
    code, out, _ = run_cli(capsys, "--method", method, "--model", model, "--config", config,
                           "--B", "2", "--N", "5", "--P", "3", "--layers", "-1", "--pad", "1")
    assert code == 0
    names = [r[0] for r in parse_table(out.split("\n\n")[0].split("\n", 1)[1])]
    assert names[-1] == ("final.pooler" if model == "encoder" else "final.logits")
    assert {layer_of(n) for n in names} - {None} == {2}
    assert "mask.keep" in names


def test_cli_shows_grouped_kv_heads_on_the_llama_decoder(capsys):
    code, out, _ = run_cli(capsys, "--method", "prefix", "--config", "llama-tiny", "--B", "2", "--N", "6",
                           "--P", "4", "--layers", "0")
    assert code == 0
    assert "B=2 N=6 P=4 D=40 L=3 H=4 H_kv=2 d=10" in out.splitlines()[0]
    table = {r[0]: r for r in parse_table(out.split("\n\n")[0].split("\n", 1)[1])}
    assert table["prefix.table"][1:] == ((4, 120), "[P, L*2*H_kv*d]")
    assert table["layer0.attn.prefix_k"][1:] == ((2, 2, 4, 10), "[B, H_kv, P, d]")
    assert table["layer0.attn.k_repeated"][1:] == ((2, 4, 10, 10), "[B, H, P+N, d]")  # widened to H to score
    assert "layer0: K: prefix [2, 2, 4, 10] + k [2, 2, 6, 10] -> [2, 2, 10, 10]" in out


@pytest.mark.parametrize("argv, message", [
    (["--config", "gpt2-tiny", "--model", "encoder"], "is a decoder preset but --model encoder"),
    (["--config", "bert-tiny", "--layers", "3"], "layer 3 is outside 0..2 (L=3)"),
    (["--config", "bert-tiny", "--layers", "one"], "expected indices like"),
    (["--config", "bert-tiny", "--B", "0"], "argument --B: must be a positive integer, got 0"),  # the parser's
    (["--config", "bert-tiny", "--N", "70"], "--N 70: the model has 64 positions"),
    (["--config", "bert-tiny", "--N", "4", "--pad", "4"], "--pad must be in [0, N=4)"),
])
def test_cli_user_errors_are_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith(("error: ", "minigpt_ptv2 trace: error: ")) and message in err
    assert len(err.splitlines()) == 1, err


def test_parse_layers():
    assert parse_layers(None, 12) is None
    assert parse_layers("0,-1", 12) == (0, 11)
    assert parse_layers("2-4,3", 12) == (2, 3, 4)
    assert parse_layers("-2--1", 12) == (10, 11)


def test_kv_head_axis_reads_H_when_there_is_no_grouping():
    """With H_kv = H the letter H_kv is not listed, and a K axis that also equals P+N must still
    read H (it once fell through to P+N: [B, P+N, P+N, d])."""
    from minigpt_ptv2.trace import dims_for
    from minigpt_ptv2.trace.letters import spell
    dims = dims_for(preset("minilm"), B=2, N=8, P=4)  # H = 12 = P+N
    assert spell((2, 12, 12, 32), dims, "layer0.attn.k") == "[B, H, P+N, d]"
