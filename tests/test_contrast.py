"""Two prompts trained against each other (training/contrast.py): the loss is the formula it says,
lam=0 is the LM loss alone, the term pushes two equal prompts apart exactly oppositely, and the
two prompts come out as ordinary `train lm` checkpoints that load and generate.

Tiny random decoders (presets llama-tiny and gpt2-tiny, L=2), tiny batches: what is tested is the
arithmetic and the plumbing, not whether the prompts steer (benchmarks/steering.py measures that).
"""
from __future__ import annotations

import pytest
import torch

from minigpt_ptv2 import preset
from minigpt_ptv2.catalog import PretrainConfig
from minigpt_ptv2.data.sample import load_sst2_sample
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import build
from minigpt_ptv2.outdir import OutputError
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.prompts.mixed import MixedPrompts
from minigpt_ptv2.training import pretrain as pt
from minigpt_ptv2.training.contrast import CLASSES, contrast_loss, train_contrast
from minigpt_ptv2.training.lm import load_lm_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads cost more than they give

B, N, P = 4, 7, 3
METHODS = ["prefix", "deep"]  # the two deep styles benchmarks/steering.py trains


def pair(arch: str, method: str, same: bool = False):
    """A tiny random decoder with a MixedPrompts of a negative and a positive prompt; a batch of B
    right-padded rows and their labels y (two of each class)."""
    torch.manual_seed(0)
    decoder = build(preset(f"{arch}-tiny").replace(num_hidden_layers=2)).eval()
    members = {c: make_method(method, decoder.config, P, init_std=1.0) for c in CLASSES}
    if same:
        members["positive"].load_state_dict(members["negative"].state_dict())
    decoder.attach(MixedPrompts(decoder.config, members))
    ids = torch.randint(1, decoder.config.vocab_size, (B, N))  # [B, N]
    mask = torch.ones_like(ids)
    mask[1, -3:] = mask[3, -1:] = 0  # right padding, as sentence_batch pads
    labels = ids.masked_fill(mask == 0, -100)  # [B, N]
    return decoder, members, ids, mask, labels, torch.tensor([1, 0, 0, 1])


def by_hand(decoder, members, ids, mask, labels, y, lam):
    """The loss written out: each prompt attached alone, a sentence's log-likelihood as the sum of
    log_softmax at each next token, Bayes' rule with equal priors as a log-sum-exp."""
    mixed = decoder.prompt
    ll, n = torch.zeros(B, 2), torch.zeros(B)
    for c, name in enumerate(CLASSES):
        decoder.attach(members[name])
        logp = decoder(ids, attention_mask=mask).logits.log_softmax(-1)  # [B, N, V]
        for b in range(B):
            for t in range(N - 1):
                if labels[b, t + 1] != -100:
                    ll[b, c] = ll[b, c] + logp[b, t, ids[b, t + 1]]
                    n[b] += c == 0  # count each scored token once
    decoder.attach(mixed)
    own = ll[torch.arange(B), y]  # [B]
    lm = -own.sum() / n.sum()
    disc = (torch.logsumexp(ll, 1) - own).mean()  # -log p(y | x) = log(e^ll0 + e^ll1) - ll_y
    return lm + lam * disc


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", METHODS)
def test_the_loss_is_the_lm_loss_plus_lam_times_bayes_rule(arch, method):
    decoder, members, ids, mask, labels, y = pair(arch, method)
    for lam in (0.0, 0.7):
        loss, parts = contrast_loss(decoder, ids, mask, labels, y, lam)
        # float32 sums of N log-probabilities, in another order: 1e-5 relative covers it
        torch.testing.assert_close(loss, by_hand(decoder, members, ids, mask, labels, y, lam), rtol=1e-5, atol=1e-5)
        assert parts["disc"] > 0.05  # random prompts of std 1 disagree: the term is not trivially 0


@pytest.mark.parametrize("method", METHODS)
def test_lam_zero_is_each_prompts_own_lm_loss(method):
    decoder, members, ids, mask, labels, y = pair("llama", method)
    loss, _ = contrast_loss(decoder, ids, mask, labels, y, 0.0)
    total, count = 0.0, 0
    for c, name in enumerate(CLASSES):  # train lm's loss: each class's rows under its own prompt alone
        rows = y == c
        decoder.attach(members[name])
        n = int((labels[rows][:, 1:] != -100).sum())
        total, count = total + decoder(ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss * n, count + n
    torch.testing.assert_close(loss, total / count, rtol=1e-6, atol=1e-6)  # the same means, summed apart


@pytest.mark.parametrize("method", METHODS)
def test_the_term_pushes_two_equal_prompts_apart_exactly_oppositely(method):
    decoder, members, ids, mask, labels, y = pair("llama", method, same=True)
    grads = []
    for lam in (1.0, 0.0):
        decoder.zero_grad(set_to_none=True)
        loss, parts = contrast_loss(decoder, ids, mask, labels, y, lam)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in decoder.prompt.named_parameters()})
    assert abs(parts["disc"] - torch.log(torch.tensor(2.0)).item()) < 1e-6  # equal prompts: p = 1/2 for every row
    term = {n: grads[0][n] - grads[1][n] for n in grads[0]}  # the discriminative term's gradient alone
    for name in members["negative"].state_dict():
        g_neg, g_pos = term[f"members.negative.{name}"], term[f"members.positive.{name}"]
        assert g_pos.abs().max() > 1e-4  # the term does move the prompts
        torch.testing.assert_close(g_pos, -g_neg, rtol=1e-4, atol=1e-6)  # a difference of two float32 gradients


TINY = PretrainConfig(layers=1, hidden=16, heads=2, vocab_size=300, context=32, batch_size=4, steps=3)
ROWS = load_sst2_sample("train", 24)
SENTENCES = [(e.text, e.label) for e in ROWS]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contrast") / "decoder"
    pt.pretrain(TINY, folder, show_progress=False, sentences=([e.text for e in ROWS], [e.text for e in ROWS[:4]]))
    return folder


@pytest.mark.parametrize("method", METHODS)
def test_the_two_prompts_are_train_lm_checkpoints_that_load_and_generate(tiny_folder, tmp_path, method):
    out = train_contrast(method, tiny_folder, tmp_path / "pair", P=2, lam=1.0, epochs=2, batch_size=8, lr=0.1,
                         sentences=SENTENCES, held_out=SENTENCES[:5], progress=False)
    assert len(out["history"]) == 2 and all(h["disc"] > 0 for h in out["history"])
    held = out["held_out"]
    assert held["disc"] > 0 and min(abs(held["accuracy"] - k / 5) for k in range(6)) < 1e-6  # a share of 5 sentences
    prompts = {}
    for c in CLASSES:
        decoder, meta = load_lm_checkpoint(out[c])
        assert meta["task"] == "lm" and meta["method"] == method and meta["train"]["lam"] == 1.0
        ids = torch.tensor([[10, 11, 12]])  # [1, 3]
        assert decoder.generate(ids, 4, attention_mask=torch.ones_like(ids)).shape == (1, 7)
        prompts[c] = [p.detach() for p in decoder.prompt.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(*prompts.values()))  # trained apart from one start


def test_train_contrast_refuses_bad_arguments_and_an_occupied_folder(tiny_folder, tmp_path):
    for kwargs, message in [({"lam": -1.0}, "lam must be"), ({"lam": float("nan")}, "lam must be"),
                            ({"epochs": 0}, "epochs must be"), ({"lr": 0.0}, "lr must be"),
                            ({"sentences": SENTENCES[:1] * 3}, "both labels"), ({"sentences": []}, "sentences is empty"),
                            ({"sentences": [(t, float(y)) for t, y in SENTENCES]}, r"sentences\[0\] must be"),
                            ({"sentences": [(t, bool(y)) for t, y in SENTENCES]}, r"sentences\[0\] must be"),
                            ({"held_out": [(SENTENCES[0][0], 2)]}, r"held_out\[0\] must be"),
                            ({"held_out": []}, "held_out is empty"), ({"dropout": "yes"}, "dropout must be")]:
        with pytest.raises(InputError, match=message):
            train_contrast("prefix", tiny_folder, tmp_path / "x", **{"sentences": SENTENCES, **kwargs})
    with pytest.raises(InputError, match="method must be one of"):
        train_contrast("nope", tiny_folder, tmp_path / "x", sentences=SENTENCES)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already holds"):
        train_contrast("prefix", tiny_folder, tmp_path / "full", sentences=SENTENCES, progress=False)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_contrast_loss_refuses_what_it_cannot_score_by_name():
    """The loss is public: a bad lam, labels that are not [B] ints 0/1, a batch with nothing to
    score, or a prompt that is not the pair of CLASSES are refused by name, not by torch."""
    decoder, members, ids, mask, labels, y = pair("llama", "prefix")
    for lam in (-1.0, float("nan"), True):
        with pytest.raises(InputError, match="lam must be"):
            contrast_loss(decoder, ids, mask, labels, y, lam)
    for bad in (torch.tensor([1, 0, 2, 1]), y.float(), y.bool(), y[:2], [1, 0, 0, 1]):
        with pytest.raises(InputError, match="y must"):
            contrast_loss(decoder, ids, mask, labels, bad, 1.0)
    with pytest.raises(InputError, match="score no token"):
        contrast_loss(decoder, ids, mask, torch.full_like(labels, -100), y, 1.0)
    three = dict(members, neutral=make_method("prefix", decoder.config, P))
    for prompt, named in ((members["positive"], "KVPrefix"), (MixedPrompts(decoder.config, three), "neutral")):
        decoder.attach(prompt)
        with pytest.raises(InputError, match=f"MixedPrompts of exactly.*{named}"):
            contrast_loss(decoder, ids, mask, labels, y, 1.0)
