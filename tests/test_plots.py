"""The numbers behind the attention figures, and the figures command.

The plots are only as right as the tensors they draw, so most tests check the data: attention
probabilities in [0, 1] whose real rows sum to 1 over the P+N keys, the prefix mass equal to
the sum of the prefix columns (and to transformers' own attention under PEFT), a masked prefix
getting exactly 0, the decoder's causal triangle, and images that hold exactly that data.
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import GPT2Decoder, BertEncoder, preset
from minigpt_ptv2.cli import main
from minigpt_ptv2.cli import figures as figures_cmd
from minigpt_ptv2.prompts import DeepPrompt, KVPrefix, hidden_to_kv, make_method
from minigpt_ptv2.viz import attention_maps, key_labels, prefix_mass, token_mass
from minigpt_ptv2.viz.plots import plot_attention_heads, plot_prefix_mass
from tolerances import EXACT, FP32_KERNELS, FP32_ULPS, PROB_SUM

PNG = b"\x89PNG\r\n\x1a\n"
P = 3


def tiny_batch(vocab: int, B=3, N=6):
    ids = torch.randint(1, vocab, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 4:] = 0  # right padding in row 1
    mask[2, 2:] = 0  # a very short row 2
    return {"input_ids": ids, "attention_mask": mask}


def tiny_encoder(method: str | None):
    cfg = preset("bert-tiny")
    model = BertEncoder(cfg).eval()
    if method is not None:
        model.attach(make_method(method, cfg, P).eval())
    return model


def manual_mass(real: torch.Tensor, P: int, mask: torch.Tensor) -> torch.Tensor:
    """The definition, written as loops: mean over real queries of the sum of the P columns."""
    L, B, H = real.shape[:3]
    out = torch.zeros(L, H)
    for l in range(L):
        for h in range(H):
            vals = [float(real[l, b, h, i, :P].sum()) for b in range(B) for i in range(mask.shape[1])
                    if mask[b, i]]
            out[l, h] = sum(vals) / len(vals)
    return out


# --- probabilities and prefix mass -------------------------------------------------------------

@pytest.mark.parametrize("method", ["prefix", "deep", "soft"])
def test_real_rows_are_distributions_over_prompt_and_real_keys(method):
    model = tiny_encoder(method)
    batch = tiny_batch(model.config.vocab_size)
    maps = attention_maps(model, batch)
    L, H, N = model.config.num_hidden_layers, model.config.num_attention_heads, 6
    Nq = N if method == "prefix" else P + N  # deep/shallow prompt rows are queries too
    assert maps.probs.shape == (L, 3, H, Nq, P + N) and maps.real.shape == (L, 3, H, N, P + N)
    assert maps.kind == {"prefix": "kv", "deep": "hidden", "soft": "input"}[method] and maps.P == P
    assert float(maps.probs.min()) >= 0 and float(maps.probs.max()) <= 1
    sums = maps.real.sum(-1)  # [L, B, H, N]
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=PROB_SUM[torch.float32], rtol=0)
    # padding keys get exactly nothing; prompt keys are always visible
    pad_keys = ~maps.key_mask  # [B, P+N]
    assert pad_keys[:, :P].sum() == 0 and pad_keys.sum() == 2 + 4
    assert float(maps.real.permute(1, 0, 2, 3, 4)[pad_keys[:, None, None, None, :].expand(
        -1, L, H, N, -1)].abs().max()) == 0.0
    mass = maps.mass()  # [L, H]
    assert mass.shape == (L, H)
    # the same probabilities summed in another order (the loops add them one by one)
    want = manual_mass(maps.real, P, batch["attention_mask"].bool())
    torch.testing.assert_close(mass, want, atol=FP32_ULPS, rtol=0)
    assert float(mass.min()) > 0 and float(mass.max()) < 1


def test_prefix_mass_ignores_padding_queries_and_checks_shapes():
    probs = torch.zeros(1, 1, 1, 2, 4)  # [L, B, H, N, P+N] with P=2
    probs[0, 0, 0, 0] = torch.tensor([0.5, 0.25, 0.25, 0.0])  # real query: 0.75 on the prefix
    probs[0, 0, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # padding query: must not count
    assert prefix_mass(probs, 2, torch.tensor([[True, False]])).item() == pytest.approx(0.75)
    assert prefix_mass(probs, 2).item() == pytest.approx(0.375)  # no mask: every row counts
    assert prefix_mass(list(probs), 2).shape == (1, 1)  # a list of per-layer tensors works too
    with pytest.raises(ValueError, match=r"\[L, B, H, N, P\+N\]"):
        prefix_mass(probs[0], 2)
    with pytest.raises(ValueError, match="P=3 prefix keys do not fit"):
        prefix_mass(probs, 3)
    with pytest.raises(ValueError, match=r"query_mask shape \[2\] must be \[B=1, N=2\]"):
        prefix_mass(probs, 2, torch.tensor([True, True]))
    with pytest.raises(ValueError, match="selects no query"):
        prefix_mass(probs, 2, torch.tensor([[False, False]]))


def test_masked_prefix_entries_get_zero_mass():
    model = tiny_encoder("prefix")
    batch = tiny_batch(model.config.vocab_size)
    model.prompt.virtual_keep[0] = False
    maps = attention_maps(model, batch)
    assert not maps.key_mask[:, 0].any() and maps.key_mask[:, 1:P].all()
    assert float(maps.real[..., 0].abs().max()) == 0.0  # exactly 0: the additive mask underflows
    assert float(maps.real[..., 1].min()) > 0
    model.prompt.virtual_keep[:] = False  # the whole prefix masked out: no mass at all ...
    masked = attention_maps(model, batch)
    assert float(masked.mass().abs().max()) == 0.0
    backbone = tiny_encoder(None)
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("prompt.")})
    alone = attention_maps(backbone, batch)
    # ... and the real-token columns are exactly the backbone's own attention
    torch.testing.assert_close(masked.real[..., P:], alone.real, atol=FP32_ULPS, rtol=0)  # P more zero terms


def test_deep_prompt_mass_equals_its_bridged_kv_prefix():
    """Hidden-state prompts are K/V prefixes with tied K and V (the bridge): the real tokens'
    attention, and so the prompt mass, must be the same numbers under both forms."""
    model = tiny_encoder(None)
    deep = DeepPrompt(model.config, P, init_std=1.0).eval()
    batch = tiny_batch(model.config.vocab_size)
    model.attach(deep)
    hidden = attention_maps(model, batch)
    model.attach(hidden_to_kv(model, deep).eval())
    kv = attention_maps(model, batch)
    assert hidden.kind == "hidden" and kv.kind == "kv"
    torch.testing.assert_close(hidden.real, kv.real, atol=FP32_KERNELS, rtol=0)  # the bridge: see test_prompts_bridge
    torch.testing.assert_close(hidden.mass(), kv.mass(), atol=FP32_ULPS, rtol=0)  # means: the noise averages out


def test_prefix_mass_matches_transformers_attention_under_peft(minilm_dir):
    """PEFT prefix tuning on transformers' BertModel (eager attention, which returns its
    probabilities) vs our encoder with the same table: same attention to 1e-5, so the same mass."""
    reference = pytest.importorskip("reference")
    base = reference.hf_bert(minilm_dir)
    base.set_attn_implementation("eager")
    enc = BertEncoder.from_pretrained(minilm_dir).eval()
    prefix = KVPrefix(enc.config, 4, init_std=1.0, positions="shifted").eval()  # PEFT's positions
    enc.attach(prefix)
    peft_model = reference.peft_prefix_model(base, 4, prefix.embedding.weight.detach().clone())
    ids = torch.tensor([[101, 1037, 6919, 2143, 2000, 3422, 102], [101, 11771, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        theirs = torch.stack(peft_model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions)
    ours = attention_maps(enc, {"input_ids": ids, "attention_mask": mask})
    assert theirs.shape == ours.probs.shape == (6, 2, 12, 7, 11)
    torch.testing.assert_close(ours.probs, theirs, atol=FP32_KERNELS, rtol=0)  # ours vs transformers: other kernels
    torch.testing.assert_close(ours.mass(), prefix_mass(theirs, 4, mask.bool()), atol=FP32_ULPS, rtol=0)


def test_matrix_drops_padding_and_token_mass_averages_heads():
    model = tiny_encoder("prefix")
    batch = tiny_batch(model.config.vocab_size)
    maps = attention_maps(model, batch)
    m = maps.matrix(1, row=1, heads=[2, 0])  # row 1 has 4 real tokens
    assert m.shape == (2, 4, P + 4)
    assert torch.equal(m[0], maps.probs[1, 1, 2, :4, :P + 4])
    # nothing lost with the padding
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 4), atol=PROB_SUM[torch.float32], rtol=0)
    tm = token_mass(maps, row=2)  # [L, n]
    assert tm.shape == (model.config.num_hidden_layers, 2)
    want = maps.probs[:, 2, :, :2, :P].sum(-1).mean(1)  # the same sums in another order
    torch.testing.assert_close(tm, want, atol=FP32_ULPS, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        maps.matrix(0, row=5)
    assert key_labels(2, ["[CLS]", "hi"]) == ["p0", "p1", "[CLS]", "hi"]


# --- the decoder's causal pattern with a prefix -------------------------------------------------

def test_decoder_prefix_columns_fully_visible_and_causal_triangle():
    maps, _ = figures_cmd.decoder_causal_data(P=4, N=8)
    m = maps.matrix(0, 0)  # [H, N, P+N]
    Pd, N = 4, 8
    assert m.shape == (4, N, Pd + N)
    assert float(m[..., :Pd].min()) > 0  # every token sees every prefix entry
    real = m[..., Pd:]  # [H, N, N]
    above = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)
    assert float(real[:, above].abs().max()) == 0.0  # no query sees a later token
    assert float(real[:, ~above].min()) > 0  # ... and every earlier one, and itself
    torch.testing.assert_close(m.sum(-1), torch.ones(4, N), atol=PROB_SUM[torch.float32], rtol=0)


def test_decoder_left_padding_keys_get_zero_and_matrix_removes_them():
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg).eval().attach(KVPrefix(cfg, 2).eval())
    ids = torch.randint(1, cfg.vocab_size, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])  # row 1 left-padded
    maps = attention_maps(model, {"input_ids": ids, "attention_mask": mask})
    assert float(maps.real[:, 1, :, 2:, 2:4].abs().max()) == 0.0  # pad keys (after the prefix)
    m = maps.matrix(0, 1)  # [H, 3, 2+3]: pads gone, prefix kept
    assert m.shape == (4, 3, 5)
    assert float(m[:, :, 2:][:, torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)].abs().max()) == 0.0


# --- the images hold the data --------------------------------------------------------------------

def test_attention_heads_image_shows_the_matrices_with_labelled_prefix_columns(tmp_path):
    model = tiny_encoder("prefix")
    batch = tiny_batch(model.config.vocab_size)
    maps = attention_maps(model, batch)
    mats = maps.matrix(0, row=1, heads=[0, 3])  # [2, 4, P+4]
    toks = ["[CLS]", "a", "b", "[SEP]"]
    path, fig = plot_attention_heads(mats, P, key_labels(P, toks), toks, tmp_path / "heads.png", [0, 3])
    assert path.read_bytes()[:8] == PNG
    shown = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("head")]
    assert [ax.get_title() for ax in shown] == ["head 0", "head 3"]
    for ax, want in zip(shown, mats):
        img = torch.tensor(ax.images[0].get_array())
        torch.testing.assert_close(img, want, atol=EXACT, rtol=0)  # the image holds the very numbers
        assert ax.images[0].get_clim() == (0.0, 1.0)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["p0", "p1", "p2", *toks]
        assert any(list(line.get_xdata()) == [P - 0.5, P - 0.5] for line in ax.lines)  # the divider
    with pytest.raises(ValueError, match="labels do not fit"):
        plot_attention_heads(mats, P, toks, toks, tmp_path / "bad.png")


def test_causal_image_greys_exactly_the_cells_a_query_may_not_see(tmp_path):
    maps, _ = figures_cmd.decoder_causal_data(P=2, N=5)
    mats = maps.matrix(0, 0)  # [H, N, P+N]
    later = torch.zeros(5, 7, dtype=torch.bool)
    later[:, 2:] = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    names = [f"t{i}" for i in range(5)]
    _, fig = plot_attention_heads(mats, 2, key_labels(2, names), names, None, vmax=float(mats.max()),
                                  hidden=later)
    for ax, want in zip([ax for ax in fig.axes if ax.get_title().startswith("head")], mats):
        img = ax.images[0].get_array()
        assert torch.equal(torch.tensor(img.mask), later)  # grey = not allowed, nothing else
        torch.testing.assert_close(torch.tensor(img.data), want, atol=EXACT, rtol=0)
        assert float(want[later].abs().max()) == 0.0  # and those cells really are 0
    with pytest.raises(ValueError, match=r"hidden must be \[n=5, P\+n=7\]"):
        plot_attention_heads(mats, 2, key_labels(2, names), names, None, hidden=later[:, :6])


def test_prefix_mass_image_holds_each_panel_on_a_shared_scale(tmp_path):
    a, b = torch.rand(3, 4) * 0.5, torch.rand(3, 4)
    path, fig = plot_prefix_mass({"A": a, "B": b}, tmp_path / "mass.png", title="t")
    assert path.read_bytes()[:8] == PNG
    panels = {ax.get_title(): ax for ax in fig.axes if ax.images and ax.get_title()}
    torch.testing.assert_close(torch.tensor(panels["A"].images[0].get_array()), a, atol=EXACT, rtol=0)
    torch.testing.assert_close(torch.tensor(panels["B"].images[0].get_array()), b, atol=EXACT, rtol=0)
    assert panels["A"].images[0].get_clim() == panels["B"].images[0].get_clim() == (0.0, float(b.max()))
    with pytest.raises(ValueError, match=r"\[L, H\] table"):
        plot_prefix_mass({"bad": torch.rand(2, 3, 4)}, tmp_path / "bad.png")


def test_sink_share_reads_the_cls_and_sep_columns_of_the_last_two_heads():
    P, tokens = 2, ["[CLS]", "a", "b", "[SEP]"]
    mats = torch.zeros(4, 4, P + 4)  # [h, n, P+n]
    mats[:2, :, 0] = 1.0  # heads 0, 1: everything on p0
    mats[2:, :, P + 0] = 0.25  # heads 2, 3: a quarter on [CLS]
    mats[2:, :, P + 3] = 0.5  # ... half on [SEP]
    mats[2:, :, P + 1] = 0.25
    assert figures_cmd.sink_share(mats, P, tokens) == pytest.approx(0.75)
    assert figures_cmd.sink_share(mats, P, ["x", "a", "b", "y"]) == 0.0


def test_heads_are_titled_and_axes_named(tmp_path):
    mats = torch.softmax(torch.randn(2, 3, 5), -1)  # [h, n, P+n], P=2
    _, fig = plot_attention_heads(mats, 2, ["p0", "p1", "a", "b", "c"], ["a", "b", "c"], None,
                                  head_titles=["head 3: reads the prefix", "head 1: ignores it"])
    ax = fig.axes[0]
    assert ax.get_title() == "head 3: reads the prefix" and ax.get_ylabel() == "query (real token)"
    assert ax.get_xlabel() == "key: prompt p0..p1 | real tokens"
    with pytest.raises(ValueError, match="2 heads"):
        plot_attention_heads(mats, 2, ["p0", "p1", "a", "b", "c"], ["a", "b", "c"], None, head_titles=["x"])


def test_head_and_sentence_pickers():
    assert figures_cmd.pick_heads(torch.tensor([0.1, 0.9, 0.5, 0.0, 0.7])) == [1, 4, 0, 3]
    mask = torch.tensor([[1] * 20, [1] * 10 + [0] * 10, [1] * 3 + [0] * 17]).bool()
    assert figures_cmd.pick_sentence(mask) == 1
    assert figures_cmd.pick_sentence(mask[[0, 2]]) == 1  # none in 8..14: the shortest


def test_sentences_fall_back_to_the_embedded_set_only_when_no_folder_was_asked_for(monkeypatch, tmp_path):
    import minigpt_ptv2.data.sst2 as sst2
    from minigpt_ptv2.data import DATA_ENV, sst2_or_sample

    def missing(relative, explicit=None):
        raise FileNotFoundError(f"no {relative}")
    monkeypatch.setattr(sst2, "data_file", missing)
    monkeypatch.delenv(DATA_ENV, raising=False)
    train, dev, source = sst2_or_sample(None, 6, 3)
    assert source == "embedded SST-2 sample" and len(train) == 6 and len(dev) == 3
    assert {label for _, label in train} == {0, 1}
    with pytest.raises(FileNotFoundError):  # an explicit folder that lacks SST-2 is an error
        sst2_or_sample(tmp_path, 6, 3)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # so is a folder named by the environment
    with pytest.raises(FileNotFoundError):
        sst2_or_sample(None, 6, 3)


# --- the command, end to end ---------------------------------------------------------------------

@pytest.mark.slow
def test_figures_command_quick_writes_every_png(tmp_path, minilm_dir, capsys):
    assert main(["figures", "--out", str(tmp_path), "--quick", "--model-dir", str(minilm_dir)]) == 0
    for name in figures_cmd.FILES:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG, name
        assert 5_000 < len(data) < 300_000, (name, len(data))
    out = capsys.readouterr().out
    assert "trained K/V prefix" in out and "trained hidden-state prompt" in out
