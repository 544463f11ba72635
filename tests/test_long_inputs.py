"""Long inputs are read in full, never silently cut (data/windows.py).

- the windows cover every sub-token, consecutive ones share `stride`, and each sub-token's
  prediction comes from the window where it lies farthest from a cut edge;
- NER prediction and evaluation tag every word of a 10,000-word text: entities far past the first
  window are found (by a stand-in model whose tags depend only on the token, so the right answer
  is known everywhere), where truncation used to fill every word after ~30 with "O";
- a text that fits in one window is predicted exactly as without windows (the real MiniLM);
- a sentence classifier that must truncate says so (per record, and on the command line).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from minigpt_ptv2.data import CONLL_LABELS, ConllDataset, WordPiece, align_predictions, conll_batches
from minigpt_ptv2.data.windows import owners, spans
from minigpt_ptv2.training import evaluate, get_task
from minigpt_ptv2.training.predict import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCE = "Angela Merkel visited Berlin on Monday ."
TAGS = ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]  # "Merkel" is two sub-tokens: mer ##kel


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return WordPiece.from_model_dir(minilm_dir)


class TokenLookup(nn.Module):
    """A stand-in token classifier whose tag for a sub-token depends on its id alone: position-
    and context-free, so the right tag of every word is known wherever the word appears."""

    def __init__(self, tok: WordPiece, tags: dict[str, str], max_positions: int = 512):
        super().__init__()
        self.encoder = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=max_positions), prompt=None)
        table = torch.zeros(tok.vocab_size, len(CONLL_LABELS))  # [V, C]
        table[:, CONLL_LABELS.index("O")] = 1.0
        for token, tag in tags.items():
            table[tok._tok.token_to_id(token)] = 0.0
            table[tok._tok.token_to_id(token), CONLL_LABELS.index(tag)] = 1.0
        self.register_buffer("table", table)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, task=None):
        return self.table[input_ids]  # [B, N, C]


# "##kel" is tagged wrongly on purpose: a word's tag must be read at its first sub-token only.
LOOKUP = {"angela": "B-PER", "mer": "I-PER", "##kel": "B-MISC", "berlin": "B-LOC"}


def lookup_predictor(tok, max_length=32, stride=None):
    return Predictor(TokenLookup(tok, LOOKUP), {"task": "conll", "train": {"max_length": max_length}}, tok,
                     stride=stride)


# --- the windows themselves ----------------------------------------------------------------------

@pytest.mark.parametrize("n, room, stride", [(0, 4, 2), (4, 4, 2), (5, 4, 2), (23, 6, 0), (100, 30, 15),
                                             (101, 30, 29), (57, 9, 4)])
def test_windows_cover_every_sub_token_with_the_given_overlap(n, room, stride):
    windows = spans(n, room, stride)
    assert windows[0][0] == 0 and windows[-1][1] == n
    assert all(0 < e - s <= room or n == 0 for s, e in windows)
    for (s0, e0), (s1, e1) in zip(windows, windows[1:]):
        assert e0 - s1 == stride and e0 == s0 + room  # only the last window may be short
    assert len(windows) == 1 or n > room  # a text that fits is one window


@pytest.mark.parametrize("n, room, stride", [(23, 6, 3), (100, 30, 15), (101, 30, 29), (57, 9, 4), (64, 8, 0)])
def test_each_sub_token_is_read_where_it_has_the_most_context(n, room, stride):
    windows = spans(n, room, stride)

    def context(t, k):  # distance to the nearer cut edge; the text's own ends are not cuts
        s, e = windows[k]
        return min(t - s if s > 0 else n, e - 1 - t if e < n else n)
    own = owners(n, windows)
    for t in range(n):
        holding = [k for k, (s, e) in enumerate(windows) if s <= t < e]
        assert own[t] in holding
        assert context(t, own[t]) == max(context(t, k) for k in holding)
    if stride >= 2:  # with overlap, no kept prediction sits right at a cut
        assert all(context(t, own[t]) >= 1 for t in range(n))


def test_every_word_of_the_dev_set_is_read_exactly_once(tok):
    """Real CoNLL dev sentences in windows of max_length 16: across a sentence's windows, each word
    is read once, at its first sub-token; the truncated training rows lose words instead."""
    from minigpt_ptv2.data import data_dir, load_conll
    try:
        sentences = load_conll("dev", data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))
    words = [w for w, _ in sentences]
    encodings = tok._tok.encode_batch([list(w) for w in words], is_pretokenized=True, add_special_tokens=False)
    reads = [[] for _ in words]
    rows = tok.word_windows(words, max_length=16)
    for r in rows:
        word_ids = encodings[r["text"]].word_ids
        for pos, w in enumerate(r["reads"]):
            if w is not None:
                t = r["start"] + pos - 1  # the sub-token read here
                assert word_ids[t] == w and (t == 0 or word_ids[t - 1] != w)  # word w's first sub-token
                reads[r["text"]].append(w)
    for k, e in enumerate(encodings):
        assert sorted(reads[k]) == sorted(set(w for w in e.word_ids if w is not None))
    assert sum(len(r) for r in reads) == sum(len(w) for w in words)  # no dev word lacks a sub-token
    assert len(rows) > 1.2 * len(sentences)  # many dev sentences need more than one window of 14
    assert sum(ConllDataset(sentences, tok, 16).words_cut) > 0.1 * sum(len(w) for w in words)


# --- NER prediction over a 10,000-word document ----------------------------------------------------

def test_entities_past_the_first_window_are_found_in_a_long_document(tok):
    repeats = 10_000 // len(SENTENCE.split()) + 1  # 1,429 sentences, 10,003 words, 11,432 sub-tokens
    document = " ".join([SENTENCE] * repeats)
    record, = lookup_predictor(tok, max_length=32).predict([document])
    tags = [t for _, t in record["tags"]]
    assert len(tags) == len(document.split()) >= 10_000
    assert tags == TAGS * repeats  # every Berlin a B-LOC, every Merkel a person, to the last word
    sub_tokens = repeats * 8
    assert record["windows"] == -(-(sub_tokens - 30) // 15) + 1  # windows of 30 moving on by 15


def test_predictions_do_not_depend_on_the_stride_for_a_context_free_model(tok):
    text = " ".join([SENTENCE] * 12)
    results = [lookup_predictor(tok, 16, stride).predict([text], batch_size=4)[0]["tags"] for stride in (0, 3, 7, 13)]
    assert all(r == results[0] for r in results) and [t for _, t in results[0]] == TAGS * 12


@pytest.fixture(scope="module")
def conll_model(minilm_dir):
    from minigpt_ptv2.training import build_task_model
    torch.manual_seed(0)
    model = build_task_model("conll", "prefix", 4, model_dir=minilm_dir, init_std=0.5).eval()
    with torch.no_grad():
        model.heads["conll"].classifier.weight.normal_(std=1.0)  # an untrained head that varies its tags
    return model


def test_a_text_that_fits_one_window_is_predicted_as_without_windows(conll_model, tok):
    text = "Sundar Pichai works for Google in California , said the Reuters report from Mountain View ."
    words = text.split()
    n = len(tok.encode_words([words], max_length=512)["input_ids"][0])  # sub-tokens + 2
    batch = tok.encode_words([words], max_length=512)
    with torch.no_grad():
        logits = conll_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # [1, N, 9]
    direct = [CONLL_LABELS[i] for i in align_predictions(logits[0].argmax(-1), batch["word_ids"][0], len(words))]
    assert len(set(direct)) > 2  # a head that really varies its tags, or the comparison proves little
    for max_length in (n, 128):  # exactly full, and roomy
        p = Predictor(conll_model, {"task": "conll", "train": {"max_length": max_length}}, tok)
        record, = p.predict([text])
        assert record["windows"] == 1 and [t for _, t in record["tags"]] == direct
    p = Predictor(conll_model, {"task": "conll", "train": {"max_length": n - 1}}, tok)
    assert p.predict([text])[0]["windows"] == 2  # one sub-token more than fits: two windows


# --- evaluation -----------------------------------------------------------------------------------

def test_evaluation_scores_every_word_of_long_sentences(tok):
    model, task = TokenLookup(tok, LOOKUP), get_task("conll")
    long = (SENTENCE.split() * 20, TAGS * 20)  # 140 words, 160 sub-tokens
    examples = [long, (SENTENCE.split(), TAGS), long]
    loader = conll_batches(examples, tok, batch_size=4, max_length=24)
    scores = evaluate(model, loader, task, examples)
    assert scores["f1"] == 1.0 and scores["n_gold"] == 2 * 20 * 2 + 2
    assert scores["long_sentences"] == 2 and scores["windows"] == 1 + 2 * (-(-(160 - 22) // 11) + 1)
    # a loader of plain truncated rows (no windows) is scored as given, and says what it cut
    plain = torch.utils.data.DataLoader(list(loader.dataset), batch_size=4, collate_fn=loader.dataset.collate_fn)
    cut = evaluate(model, plain, task, examples)
    assert cut["recall"] < 0.2 and cut["words_cut"] == sum(loader.dataset.words_cut) == 2 * (140 - 19)


class LengthSpy(nn.Module):
    """The model, and the padded length of every batch it was given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.lengths = model, []

    def forward(self, input_ids, *args, **kwargs):
        self.lengths.append(input_ids.shape[1])
        return self.model(input_ids, *args, **kwargs)


def test_windows_are_scored_longest_first_and_the_order_changes_no_score(conll_model, tok, monkeypatch):
    evaluation = importlib.import_module("minigpt_ptv2.training.evaluate")  # the module, not its function
    words = SENTENCE.split()
    examples = [(words[: 1 + i % 7] * (1 + i % 5), TAGS[: 1 + i % 7] * (1 + i % 5)) for i in range(40)]
    examples.sort(key=lambda e: len(e[0]))  # in the file, shortest first
    loader = conll_batches(examples, tok, batch_size=8, max_length=64)
    spy = LengthSpy(conll_model)
    sorted_scores = evaluate(spy, loader, get_task("conll"), examples)
    assert spy.lengths == sorted(spy.lengths, reverse=True) and len(set(spy.lengths)) > 2
    monkeypatch.setattr(evaluation, "longest_first", lambda lengths: list(range(len(lengths))))  # file order
    spy.lengths = []
    assert evaluate(spy, loader, get_task("conll"), examples) == sorted_scores
    assert spy.lengths != sorted(spy.lengths, reverse=True)  # the file order really was another order
    assert 0 < sorted_scores["f1"] < 1  # an untrained head: some entities right, some wrong


# --- the sentence task says when it truncates ---------------------------------------------------------

def _run(argv):
    from minigpt_ptv2.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checkpoints(minilm_dir, tmp_path_factory):
    """Untrained checkpoints (prompt and head at their initial values), saved by the real code."""
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    root = tmp_path_factory.mktemp("long")
    for task, labels in (("sst2", ("negative", "positive")), ("conll", CONLL_LABELS)):
        model = build_task_model(task, "soft", 2, model_dir=minilm_dir)
        save_checkpoint(model, root / task, task=task, method="soft", P=2, labels=labels,
                        extra={"train": {"max_length": 16}})
    return root


def test_sentence_truncation_is_reported_on_stderr_and_in_json(checkpoints, tok):
    long = "a film that starts well and then loses its way for two long hours of nothing much"
    n = len(tok.token_rows([long], 512)[0]) - 2  # sub-tokens
    code, out, err = _run(["predict", str(checkpoints / "sst2"), long, "short and sweet"])
    assert code == 0 and len(out.splitlines()) == 2
    assert "warning: 1 of 2 sentences are longer than max_length=16 tokens" in err
    code, out, err = _run(["predict", str(checkpoints / "sst2"), long, "short and sweet", "--json"])
    result = json.loads(out)
    assert (result["truncated"], result["max_length"]) == (1, 16)
    assert result["predictions"][0]["cut_tokens"] == n - 14 > 0 and result["predictions"][1]["cut_tokens"] == 0
    code, out, err = _run(["predict", str(checkpoints / "sst2"), long, "--max-length", "64", "--json"])
    assert json.loads(out)["truncated"] == 0 and err == ""


def test_ner_on_the_command_line_reads_every_word_and_says_how(checkpoints):
    text = " ".join([SENTENCE] * 10)  # 80 sub-tokens, windows of 14
    code, out, err = _run(["predict", str(checkpoints / "conll"), text, "--json"])
    result = json.loads(out)
    record, = result["predictions"]
    assert code == 0 and [w for w, _ in record["tags"]] == text.split()
    assert record["windows"] == result["windows"] == -(-(80 - 14) // 7) + 1 and result["stride"] == 7
    code, out, err = _run(["predict", str(checkpoints / "conll"), text, "--stride", "3"])
    assert code == 0 and len(out.split()) == 70
    assert "1 of 1 texts are longer than max_length=16 tokens and were read in 7 overlapping windows" in err
    from minigpt_ptv2.cli import main
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "overlapping windows" in help_text.getvalue() and "--stride" in help_text.getvalue()
