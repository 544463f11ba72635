"""The train / eval / predict / export-peft / import-peft commands, run in-process through `main`:
outputs that parse, sizes that are printed, and one-line errors (exit 2) for bad arguments."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from minigpt_ptv2.cli import main

TINY = ["--P", "4", "--epochs", "1", "--max-dev", "8", "--max-length", "24", "--batch-size", "8",
        "--positions", "shifted", "--no-progress"]


def _data_dir():
    from minigpt_ptv2.data import data_dir
    try:
        return str(data_dir())
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _run(argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def sst2_ckpt(minilm_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sst2-prefix"
    code, out = _run(["train", "sst2", "prefix", *TINY, "--max-train", "16", "--json", "--out", str(path),
                      "--data-dir", _data_dir()])
    assert code == 0
    return path, json.loads(out)


@pytest.fixture(scope="module")
def conll_ckpt(minilm_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "conll-soft"
    code, out = _run(["train", "conll", "soft", *TINY, "--max-train", "8", "--out", str(path),
                      "--data-dir", _data_dir()])
    assert code == 0
    return path, out


def test_train_json_reports_history_sizes_and_the_checkpoint(sst2_ckpt):
    path, summary = sst2_ckpt
    assert (summary["task"], summary["method"], summary["P"], summary["train_examples"]) == ("sst2", "prefix", 4, 16)
    assert 0.0 <= summary["history"][0]["accuracy"] <= 1.0
    assert summary["trainable"] == 4 * 6 * 2 * 384 + 2 * 384 + 2  # prefix table + head
    ck = summary["checkpoint"]
    assert ck["bytes"] == sum(f.stat().st_size for f in path.iterdir()) and ck["bytes"] < 100 * 1024
    meta = json.loads((path / "checkpoint.json").read_text())
    assert meta["positions"] == "shifted" and meta["train"]["max_length"] == 24


def test_train_text_prints_the_metric_and_the_checkpoint_size(conll_ckpt):
    path, out = conll_ckpt
    assert "conll / soft (P=4): dev f1 " in out
    size = sum(f.stat().st_size for f in path.iterdir())
    assert f"checkpoint: {path} ({size:,} bytes = {size / 1024:.1f} KiB)" in out


def test_eval_json_parses_and_matches_the_training_run(sst2_ckpt):
    path, summary = sst2_ckpt
    code, out = _run(["eval", str(path), "--max-examples", "8", "--json"])
    result = json.loads(out)
    assert code == 0 and (result["examples"], result["metric"]) == (8, "accuracy")
    assert result["accuracy"] == summary["history"][0]["accuracy"]  # same 8 dev sentences, same model


def test_eval_conll_test_split_reports_entity_f1(conll_ckpt):
    path, _ = conll_ckpt
    code, out = _run(["eval", str(path), "--split", "test", "--max-examples", "4", "--json"])
    result = json.loads(out)
    assert code == 0 and result["split"] == "test" and {"f1", "precision", "recall"} <= set(result)


def test_predict_sentences_from_args_file_and_stdin(sst2_ckpt, tmp_path, monkeypatch):
    path, _ = sst2_ckpt
    code, out = _run(["predict", str(path), "a gorgeous , witty film", "dull and overlong"])
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    for line, text in zip(lines, ["a gorgeous , witty film", "dull and overlong"]):
        label, score, echoed = line.split("\t")
        assert label in ("negative", "positive") and 0.5 <= float(score) <= 1.0 and echoed == text
    (tmp_path / "in.txt").write_text("first line\n\nsecond line\nthird\n")
    code, out = _run(["predict", str(path), "--file", str(tmp_path / "in.txt"), "--json"])
    preds = json.loads(out)["predictions"]
    assert [p["text"] for p in preds] == ["first line", "second line", "third"]  # blank lines skipped
    code, out = _run(["predict", str(path), "--batch-size", "1", "a gorgeous , witty film", "--max-length", "24"])
    assert code == 0 and out.strip().endswith("a gorgeous , witty film")  # texts and options in any order
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    code, out = _run(["predict", str(path), "--json"])
    assert [p["text"] for p in json.loads(out)["predictions"]] == ["from stdin"]


def test_predict_tags_one_per_word(conll_ckpt):
    path, _ = conll_ckpt
    sentence = "John Smith works for Siemens in Berlin ."
    code, out = _run(["predict", str(path), sentence, "--json"])
    tags = json.loads(out)["predictions"][0]["tags"]
    labels = json.loads((path / "checkpoint.json").read_text())["labels"]
    assert code == 0 and [w for w, _ in tags] == sentence.split() and all(t in labels for _, t in tags)
    code, out = _run(["predict", str(path), sentence])
    assert [pair.rsplit("/", 1)[0] for pair in out.split()] == sentence.split()


def test_export_then_import_through_the_cli_keeps_the_predictions(sst2_ckpt, tmp_path):
    path, _ = sst2_ckpt
    code, out = _run(["export-peft", str(path), str(tmp_path / "adapter")])
    assert code == 0 and "PREFIX_TUNING adapter (SEQ_CLS" in out and "KiB" in out
    assert sorted(f.name for f in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                          "adapter_model.safetensors"]
    code, out = _run(["import-peft", str(tmp_path / "adapter"), str(tmp_path / "back"), "--json"])
    assert code == 0 and json.loads(out)["head"] == "adapter"
    texts = ["a gorgeous , witty film", "dull and overlong"]
    _, before = _run(["predict", str(path), *texts, "--json"])
    _, after = _run(["predict", str(tmp_path / "back"), *texts, "--json"])
    assert json.loads(before)["predictions"] == json.loads(after)["predictions"]


def test_export_refuses_a_real_positions_checkpoint_with_a_one_line_error(minilm_dir, tmp_path, capsys):
    from minigpt_ptv2 import BertEncoder
    from minigpt_ptv2.training import build_task_model, save_checkpoint
    model = build_task_model("sst2", "soft", 2, encoder=BertEncoder.from_pretrained(minilm_dir))
    save_checkpoint(model, tmp_path / "ck", task="sst2", method="soft", P=2)
    assert main(["export-peft", str(tmp_path / "ck"), str(tmp_path / "ad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--allow-position-change" in err
    assert not (tmp_path / "ad" / "adapter_model.safetensors").exists()
    assert main(["export-peft", str(tmp_path / "ck"), str(tmp_path / "ad"), "--allow-position-change"]) == 0
    assert "warning: trained with positions='real'" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["train", "sst2", "nonsense"], "invalid choice: 'nonsense'"),
    (["train", "sst2", "prefix", "--P", "0"], "argument --P: must be a positive integer, got 0"),
    (["train", "sst2", "prefix", "--epochs", "-1"], "argument --epochs: must be a positive integer, got -1"),
    (["train", "sst2", "prefix", "--lr", "zero"], "argument --lr: expected a positive number, got 'zero'"),
    (["train", "mnli", "prefix"], "invalid choice: 'mnli'"),
    (["eval", "ck", "--split", "train"], "invalid choice: 'train'"),
])
def test_bad_arguments_exit_2_with_a_usage_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_user_errors_are_one_line_not_tracebacks(sst2_ckpt, tmp_path, capsys, monkeypatch):
    path, _ = sst2_ckpt
    cases = [
        (["eval", str(tmp_path / "missing")], "is not a minigpt_ptv2 checkpoint: no checkpoint.json"),
        (["train", "sst2", "prefix", "--data-dir", str(tmp_path / "no-data"), "--out", str(tmp_path / "o")],
         "data folder given by --data-dir does not exist"),
        (["eval", str(path), "--split", "test"], "unknown SST-2 split 'test'"),
        (["predict", str(tmp_path / "missing"), "hello"], "is not a minigpt_ptv2 checkpoint"),
        (["predict", str(path), "--file", str(tmp_path / "none.txt")], "--file"),
        (["import-peft", str(tmp_path / "missing"), str(tmp_path / "o")], "is not a PEFT adapter folder"),
        (["train", "sst2", "prefix", "--max-length", "2"], "--max-length must leave room"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "sst2", "prefix", "--device", "cuda"], "CUDA is not available"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n"))
    assert main(["predict", str(path)]) == 2 and "no sentences" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export-peft", "import-peft"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and f"minigpt_ptv2 {command} " in out.split("examples:")[1]


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:  # a literal '%' in a command's HELP used to crash this
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(c in out for c in ("train", "eval", "predict", "export-peft",
                                                        "import-peft", "params"))


@pytest.mark.cuda
def test_train_eval_predict_on_cuda(minilm_dir, tmp_path):
    out = str(tmp_path / "ck")
    code, _ = _run(["train", "sst2", "prefix", *TINY, "--max-train", "16", "--device", "cuda", "--json",
                    "--out", out, "--data-dir", _data_dir()])
    assert code == 0
    code, text = _run(["eval", out, "--max-examples", "8", "--device", "cuda", "--json"])
    assert code == 0 and 0.0 <= json.loads(text)["accuracy"] <= 1.0
    code, text = _run(["predict", out, "a fine film", "--device", "cuda", "--json"])
    assert code == 0 and json.loads(text)["predictions"][0]["label"] in ("negative", "positive")


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_long_commands_draw_a_bar_on_a_terminal_and_none_under_json(command, sst2_ckpt, tmp_path, capsys,
                                                                    monkeypatch):
    path, _ = sst2_ckpt
    (tmp_path / "in.txt").write_text("a fine film\ndull\nwitty and warm\n")
    argv = {"eval": ["eval", str(path), "--max-examples", "8", "--batch-size", "4"],
            "predict": ["predict", str(path), "--file", str(tmp_path / "in.txt"), "--batch-size", "2"]}[command]
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)  # bars draw only where someone watches
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "/2 [" in err and "batch/s" in err, err  # 8 examples / 4, or 3 texts / 2: two batches to count
    assert main(argv + ["--json"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "batch/s" not in captured.err and json.loads(captured.out)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)  # a log file or a pipe: no bar either
    assert main(argv) == 0 and "batch/s" not in capsys.readouterr().err  # (warnings stay)
