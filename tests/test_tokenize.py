"""WordPiece: the seed's examples give the ids the real uncased vocabulary gives, labels land on each
word's first sub-token only, padding/truncation are ours (not tokenizer.json's), and the results
match HuggingFace's BertTokenizerFast on real data."""
from __future__ import annotations

import shutil

import pytest
import torch

from torch.utils.data import DataLoader, DistributedSampler

from minigpt_ptv2.data import (CONLL_LABEL_TO_ID, CONLL_LABELS, ConllDataset, SST2Dataset, WordPiece,
                               align_predictions, conll_batches, data_dir, load_conll, load_sst2,
                               sst2_batches)
from minigpt_ptv2.metrics import entity_f1


@pytest.fixture(scope="module")
def wp(minilm_dir):
    return WordPiece.from_model_dir(minilm_dir)


@pytest.fixture(scope="module")
def real_data():
    try:
        return data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"real datasets not available ({e})")


# Seed 000 prints [101, 1996, 3185, 2001, 2019, 7595, 23 masterpiece, 102]: that list is garbled
# (it contains the literal text `23 masterpiece`, 7595 is "globe" in this vocab, and the final "."
# is missing). The uncased BERT vocab (vocab.txt line = id + 1) really gives:
#   [CLS]=101 the=1996 movie=3185 was=2001 an=2019 absolute=7619 masterpiece=17743 .=1012 [SEP]=102
MASTERPIECE_IDS = [101, 1996, 3185, 2001, 2019, 7619, 17743, 1012, 102]


def test_seed_sentiment_example(wp):
    batch = wp.encode(["The movie was an absolute masterpiece."])
    assert batch["input_ids"].tolist() == [MASTERPIECE_IDS]
    assert batch["attention_mask"].tolist() == [[1] * 9]
    assert batch["token_type_ids"].tolist() == [[0] * 9]
    assert wp.tokens(MASTERPIECE_IDS)[5:7] == ["absolute", "masterpiece"]
    assert wp.decode(MASTERPIECE_IDS) == "the movie was an absolute masterpiece."


# Seed 000 gives [101, 24167, 25895, 2552, 2005, 8224, 1999, 3408, 102] with one label per word:
# wrong for this vocab (24167 = "##stered", 25895 = "pitted", 3408 = "terms", the "." is missing).
# "Sundar" and "Pichai" are not in the vocab, so each splits in two: sun ##dar, pic ##hai; only
# the first piece carries the word's label. Labels use CONLL_LABELS ids (B-LOC = 5, not the seed's 4).
SUNDAR_WORDS = ["Sundar", "Pichai", "works", "for", "Google", "in", "California", "."]
SUNDAR_TAGS = ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]
SUNDAR_IDS = [101, 3103, 7662, 27263, 10932, 2573, 2005, 8224, 1999, 2662, 1012, 102]
SUNDAR_TOKENS = ["[CLS]", "sun", "##dar", "pic", "##hai", "works", "for", "google", "in",
                 "california", ".", "[SEP]"]
SUNDAR_LABELS = [-100, 1, -100, 2, -100, 0, 0, 3, 0, 5, 0, -100]


def test_seed_tagging_example(wp):
    tag_ids = [CONLL_LABEL_TO_ID[t] for t in SUNDAR_TAGS]
    batch = wp.encode_words([SUNDAR_WORDS], [tag_ids])
    assert batch["input_ids"].tolist() == [SUNDAR_IDS]
    assert wp.tokens(SUNDAR_IDS) == SUNDAR_TOKENS
    assert batch["labels"].tolist() == [SUNDAR_LABELS]
    assert batch["word_ids"] == [[None, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, None]]
    # same ids whether the sentence arrives as text or as pre-split words
    assert wp.encode(["Sundar Pichai works for Google in California."])["input_ids"].tolist() == [SUNDAR_IDS]


def test_padding_is_dynamic_and_right_sided(wp):
    batch = wp.encode(["hi", "The movie was an absolute masterpiece."])
    assert batch["input_ids"].shape == (2, 9)  # longest row, not tokenizer.json's fixed 128
    assert batch["input_ids"][0].tolist() == [101, 7632, 102] + [wp.pad_id] * 6
    assert batch["attention_mask"][0].tolist() == [1, 1, 1] + [0] * 6
    assert (wp.pad_id, wp.cls_id, wp.sep_id, wp.vocab_size) == (0, 101, 102, 30522)


def test_truncation_keeps_cls_and_sep(wp):
    ids = wp.encode(["The movie was an absolute masterpiece."], max_length=5)["input_ids"][0].tolist()
    assert ids == [101, 1996, 3185, 2001, 102]
    words = wp.encode_words([SUNDAR_WORDS], [[0] * 8], max_length=5)
    assert words["input_ids"][0].tolist() == [101, 3103, 7662, 27263, 102]
    assert words["labels"][0].tolist() == [-100, 0, -100, 0, -100]
    assert words["word_ids"][0] == [None, 0, 0, 1, None]
    with pytest.raises(ValueError, match="max_length"):
        wp.encode(["x"], max_length=1)


def test_label_count_mismatch_is_an_error(wp):
    with pytest.raises(ValueError, match="sentence 0: 8 words but 7 labels"):
        wp.encode_words([SUNDAR_WORDS], [[0] * 7])


def test_vocab_txt_fallback_matches_tokenizer_json(wp, minilm_dir, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    from_vocab = WordPiece.from_model_dir(tmp_path)
    texts = ["The movie was an absolute masterpiece.", "Café TÉLÉ naïve — 1996-08-22 ,  x\tz", "Pichai"]
    assert from_vocab.encode(texts)["input_ids"].tolist() == wp.encode(texts)["input_ids"].tolist()
    assert from_vocab.decode(SUNDAR_IDS) == wp.decode(SUNDAR_IDS)
    with pytest.raises(FileNotFoundError):
        WordPiece.from_model_dir(tmp_path / "empty")


def test_matches_huggingface_on_real_sentences(wp, minilm_dir, real_data):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))
    texts = [e.text for e in load_sst2("dev", real_data)]
    ours = wp.encode(texts, max_length=64)
    theirs = hf(texts, padding="longest", truncation=True, max_length=64, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours[key], theirs[key]), key
    sentences = load_conll("dev", real_data, max_examples=300)
    words = [w for w, _ in sentences]
    ours = wp.encode_words(words, max_length=32)
    theirs = hf(words, is_split_into_words=True, padding="longest", truncation=True, max_length=32)
    assert ours["input_ids"].tolist() == theirs["input_ids"]
    assert ours["word_ids"] == [theirs.word_ids(i) for i in range(len(words))]  # padding included


def test_gold_labels_round_trip_through_alignment(wp, real_data):
    """Feeding the aligned gold labels back as predictions recovers every word's tag (F1 = 1);
    words cut off by truncation come back as "O" and cost recall instead of vanishing."""
    sentences = load_conll("dev", real_data)
    gold = [tags for _, tags in sentences]
    for max_length in (512, 16):
        data = ConllDataset(sentences, wp, max_length)
        pred = [[CONLL_LABELS[i] for i in align_predictions(
                    [max(label, 0) for label in data.labels[k]], data.word_ids[k], data.n_words[k])]
                for k in range(len(data))]
        scores = entity_f1(gold, pred)
        if max_length == 512:
            assert pred == gold and scores["f1"] == 1.0
        else:
            assert scores["n_pred"] < scores["n_gold"] and scores["recall"] < 1.0
            assert all(len(p) == len(g) for p, g in zip(pred, gold))


def test_batches_are_padded_shuffled_by_seed_and_sampler_ready(wp):
    examples = [("a good film", 1), ("bad", 0), ("the movie was an absolute masterpiece .", 1), ("meh", 0)]
    batch = next(iter(sst2_batches(examples, wp, batch_size=3)))
    assert batch["input_ids"].shape == (3, 9) and batch["labels"].tolist() == [1, 0, 1]
    assert batch["attention_mask"].sum(1).tolist() == [5, 3, 9]

    numbered = [(f"row {i}", i) for i in range(20)]  # the label tells which row came out

    def order(seed):
        return [i for b in sst2_batches(numbered, wp, batch_size=4, shuffle=True, seed=seed)
                for i in b["labels"].tolist()]
    assert order(3) == order(3) != order(4) and sorted(order(3)) == list(range(20)) != order(3)

    data = SST2Dataset(examples, wp)
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=data.collate_fn)
    assert [b["labels"].tolist() for b in loader] == [[0, 0]]  # rank 1 gets rows 1 and 3

    ner = next(iter(conll_batches([(SUNDAR_WORDS, SUNDAR_TAGS), (["Hi"], ["O"])], wp, batch_size=2)))
    assert ner["labels"].tolist() == [SUNDAR_LABELS, [-100, 0, -100] + [-100] * 9]
    assert ner["word_ids"][1] == [None, 0, None] + [None] * 9


def test_a_sentence_that_fits_is_one_window_identical_to_its_row(wp):
    """word_windows' row for a short sentence is word_rows' row; `reads` marks each word's first
    sub-token (sun, pic, works, ...), not the continuation pieces (##dar, ##hai)."""
    rows = wp.word_windows([SUNDAR_WORDS, ["Hi"]], max_length=64)
    ids, _, word_ids = wp.word_rows([SUNDAR_WORDS, ["Hi"]], max_length=64)
    assert [r["text"] for r in rows] == [0, 1] and [r["input_ids"] for r in rows] == ids
    assert rows[0]["reads"] == [None, 0, None, 1, None, 2, 3, 4, 5, 6, 7, None]
    assert word_ids[0] == [None, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, None]
    long = wp.word_windows([SUNDAR_WORDS], max_length=8, stride=3)  # 10 sub-tokens, windows of 6
    assert [r["input_ids"][1:-1] for r in long] == [SUNDAR_IDS[1:7], SUNDAR_IDS[4:10], SUNDAR_IDS[7:11]]
    read = sorted(w for r in long for w in r["reads"] if w is not None)
    assert read == list(range(8))  # every word once, the last ones from the windows that hold them


def test_token_rows_report_what_truncation_cut(wp):
    cut = []
    rows = wp.token_rows(["The movie was an absolute masterpiece.", "hi"], max_length=5, cut=cut)
    assert cut == [4, 0] and rows[0] == [101, 1996, 3185, 2001, 102]
    data = SST2Dataset([("The movie was an absolute masterpiece.", 1), ("hi", 0)], wp, max_length=5)
    assert data.cut == [4, 0]
