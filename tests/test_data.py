"""Dataset readers: the real files load with their documented sizes; broken files fail loudly,
naming the file and the line; the data folder is found the documented way."""
from __future__ import annotations

from pathlib import Path

import pytest

from minigpt_ptv2.data import (CONLL_LABELS, SST2_LABELS, data_dir, load_conll, load_sst2,
                               read_conll_file, read_sst2_file)


@pytest.fixture(scope="module")
def real_data() -> Path:
    try:
        return data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"real datasets not available ({e})")


# --- the real files ------------------------------------------------------------------------------

@pytest.mark.parametrize("split, rows", [("train", 67_349), ("dev", 872)])
def test_sst2_row_counts(real_data, split, rows):
    examples = load_sst2(split, real_data)
    assert len(examples) == rows
    assert {e.label for e in examples} == {0, 1}
    assert all(e.text and "\t" not in e.text for e in examples)


def test_sst2_first_rows_and_max_examples(real_data):
    first = load_sst2("train", real_data, max_examples=2)
    assert first == [("hide new secretions from the parental units", 0),
                     ("contains no wit , only labored gags", 0)]
    assert SST2_LABELS[first[0].label] == "negative"


# The data README (and the usual figure for CoNLL-2003 without -DOCSTART-) says train has 14,041
# sentences / 203,621 tokens. The shipped train.txt has exactly 14,039 blank-line-separated
# sentences and 203,619 tokens (no -DOCSTART-, no double blank lines, every line 3 columns),
# two sentences and two tokens fewer, as if two one-token sentences were left out. Dev and test match the
# usual figures. We assert what the file holds, so a reader change that drops or merges sentences fails.
@pytest.mark.parametrize("split, sentences, tokens", [
    ("train", 14_039, 203_619), ("dev", 3_250, 51_362), ("test", 3_453, 46_435)])
def test_conll_sentence_counts(real_data, split, sentences, tokens):
    data = load_conll(split, real_data)
    assert len(data) == sentences
    assert sum(len(words) for words, _ in data) == tokens
    assert all(len(words) == len(tags) > 0 for words, tags in data)
    assert {t for _, tags in data for t in tags} == set(CONLL_LABELS)


def test_conll_first_sentence(real_data):
    (words, tags), = load_conll("train", real_data, max_examples=1)
    assert words == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]


def test_label_order_is_fixed():
    assert CONLL_LABELS[0] == "O"
    assert CONLL_LABELS == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def test_unknown_split_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="train, dev"):
        load_sst2("test", tmp_path)
    with pytest.raises(ValueError, match="train, dev, test"):
        load_conll("validation", tmp_path)


# --- finding the folder --------------------------------------------------------------------------

def test_explicit_path_wins_over_env(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("MINIGPT_PTV2_DATA", str(env_dir))
    assert data_dir() == env_dir
    assert data_dir(tmp_path) == tmp_path


def test_missing_explicit_or_env_path_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data_dir(tmp_path / "nope")
    monkeypatch.setenv("MINIGPT_PTV2_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MINIGPT_PTV2_DATA"):
        data_dir()


def test_missing_file_names_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="sst2/dev.tsv"):
        load_sst2("dev", tmp_path)


def test_nothing_found_says_how_to_point_at_data(tmp_path, monkeypatch):
    import minigpt_ptv2.data.paths as paths
    monkeypatch.delenv("MINIGPT_PTV2_DATA", raising=False)
    monkeypatch.setattr(paths, "_beside_checkout", lambda: [tmp_path / "absent"])
    with pytest.raises(FileNotFoundError, match="--data-dir.*MINIGPT_PTV2_DATA"):
        data_dir()


# --- broken files --------------------------------------------------------------------------------

def _write(tmp_path, name, text) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("content, line, what", [
    ("", 1, "empty file"),
    ("index\tsentence\n0\tit 's a film\n", 1, "bad header"),  # GLUE's unlabelled test.tsv
    ("\ntext\tlabel\nok\t1\n", 1, "blank first line"),
    ("text\tlabel\ngood\t1\nbad row without tab\n", 3, "2 tab-separated columns, got 1"),
    ("text\tlabel\ngood\t1\nx\t1\textra\n", 3, "got 3"),
    ("text\tlabel\ngood\t1\nfine\t0\nmeh\t2\n", 4, "label must be 0 or 1"),
    ("text\tlabel\ngood\tpositive\n", 2, "label must be 0 or 1"),
])
def test_broken_sst2_names_file_and_line(tmp_path, content, line, what):
    path = _write(tmp_path, "broken.tsv", content)
    with pytest.raises(ValueError) as err:
        read_sst2_file(path)
    assert f"broken.tsv:{line}:" in str(err.value)
    assert what in str(err.value)


def test_sst2_header_only_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="broken.tsv: no examples"):
        read_sst2_file(_write(tmp_path, "broken.tsv", "text\tlabel\n"))


@pytest.mark.parametrize("content, line, what", [
    ("EU NNP B-ORG\nrejects\n", 2, "expected 'word POS TAG'"),
    ("EU NNP B-ORG\n\nPeter NNP B-PERSON\n", 3, "unknown tag 'B-PERSON'"),
    ("EU NNP I-ORG\nrejects VBZ o\n", 2, "unknown tag 'o'"),
])
def test_broken_conll_names_file_and_line(tmp_path, content, line, what):
    path = _write(tmp_path, "broken.txt", content)
    with pytest.raises(ValueError) as err:
        read_conll_file(path)
    assert f"broken.txt:{line}:" in str(err.value)
    assert what in str(err.value)


def test_conll_empty_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no sentences"):
        read_conll_file(_write(tmp_path, "empty.txt", "\n\n"))


def test_conll_docstart_extra_columns_and_no_final_blank(tmp_path):
    text = ("-DOCSTART- -X- -X- O\n\n"
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
            "-DOCSTART- -X- -X- O\n\n"
            "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER")  # 4 columns: word first, tag last
    data = read_conll_file(_write(tmp_path, "ok.txt", text))
    assert data == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert read_conll_file(tmp_path / "ok.txt", max_examples=1) == data[:1]


# --- what users' copies look like ----------------------------------------------------------------

def test_sst2_accepts_glue_header_crlf_and_a_bom(tmp_path):
    """GLUE's own train.tsv says 'sentence<TAB>label'; Windows editors add a BOM and CRLF."""
    want = [("a gorgeous film", 1), ("dull", 0)]
    for header in ("text\tlabel", "sentence\tlabel"):
        path = tmp_path / "glue.tsv"
        path.write_bytes(("\ufeff" + header + "\r\na gorgeous film\t1\r\ndull\t0\r\n").encode("utf-8"))
        assert read_sst2_file(path) == want


def test_conll_bom_before_docstart_is_not_a_word(tmp_path):
    """Without dropping the BOM, the first line reads '\\ufeff-DOCSTART-' with tag O: a word."""
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n".encode("utf-8"))
    assert read_conll_file(path) == [(["EU"], ["B-ORG"])]


@pytest.mark.parametrize("reader, text, line", [
    (read_sst2_file, "text\tlabel\nfine\t1\ncaf\xe9 au lait\t1\n", 3),
    (read_conll_file, "EU NNP B-ORG\n\nPel\xe9 NNP B-PER\n", 3),
])
def test_latin1_file_names_file_line_and_byte(tmp_path, reader, text, line):
    path = tmp_path / "latin1.txt"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"latin1.txt:{line}: byte 0xe9 \(byte 4 of the line\) is not UTF-8"):
        reader(path)
    path.write_bytes(text.encode("utf-8"))
    assert reader(path)  # the same text as UTF-8 reads


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_max_examples_must_be_a_positive_int(tmp_path, bad):
    path = _write(tmp_path, "ok.tsv", "text\tlabel\ngood\t1\n")
    with pytest.raises(ValueError, match=f"max_examples must be a positive int or None.*{bad!r}"):
        read_sst2_file(path, bad)
