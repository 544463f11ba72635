"""One frozen backbone, several prompts in one batch (prompts/mixed.py, training/mixed.py):

- every row of a mixed batch equals its own prompt's run alone, for K/V prefixes, deep hidden-state
  prompts and shallow prompts of different P, on the encoder and both decoders, with padding;
- the same for cached greedy generation on the decoders (left-padded rows);
- what cannot share a batch is refused, naming the members;
- checkpoints of two tasks (an SST-2 prefix and a CoNLL prefix, different P) served together by
  the API and by `predict`, each input tagged with its task, equal to predicting each task alone.
"""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from architectures import ARCHS as TABLE, DECODERS
from minigpt_ptv2 import preset
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.models import build
from minigpt_ptv2.prompts import make_method
from minigpt_ptv2.prompts.mixed import MixedPrompts

pytestmark = pytest.mark.usefixtures("one_thread")
# The bound. A mixed row computes its softmax over P_max + N keys where the row alone has
# P_m + N (the padded entries' weights are exactly 0), and its batch pads to another length:
# the same sums in another order through L layers. obs 3.8e-6 (GPT-2 logits up to ~25), 6e-7 elsewhere.
ROW_EQUAL = 1e-5
# How far two different prompts move the same row: the test could not tell rows apart below this.
DIFFERENT = 1e-2
FAMILIES = {"kv": ("prefix", "prefix-mlp"), "hidden": ("deep", "deep-mlp"), "input": ("soft", "ptuning-mlp")}
ARCHS = sorted(TABLE)  # every architecture (tests/architectures.py)


def _model(arch: str):
    torch.manual_seed(0)
    return build(TABLE[arch].tiny).eval()


def _members(config, family: str, sizes=(3, 5), **kw) -> dict:
    """Two trained-looking members of one kind: different methods, different P, visible values."""
    members = {}
    for i, (name, P) in enumerate(zip(FAMILIES[family], sizes)):
        torch.manual_seed(10 + i)
        m = make_method(name, config, P, **({"hidden": 16} if name.endswith("-mlp") else {}), **kw)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.5)  # far from init: the members' outputs differ clearly
        members[f"task{i}"] = m.eval()
    return members


def _batch(config, B=5, N=7, left=False):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, config.vocab_size, (B, N), generator=g)  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)
    for i, n in enumerate([7, 4, 6, 2, 5][:B]):  # rows of different lengths: padding everywhere
        if left:
            mask[i, :N - n] = 0
        else:
            mask[i, n:] = 0
    return ids, mask


def _hidden(model, ids, mask):
    out = model(ids, attention_mask=mask)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits  # [B, N, D] / [B, N, V]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_row_of_a_mixed_batch_equals_its_prompt_alone(arch, family):
    model = _model(arch)
    members = _members(model.config, family)
    ids, mask = _batch(model.config)
    tasks = ["task0", "task1", "task1", "task0", "task1"]
    alone = {}
    for name, m in members.items():
        model.attach(m)
        alone[name] = _hidden(model, ids, mask)  # every row under this member
    model.attach(MixedPrompts(model.config, members).use_rows(tasks))
    with torch.no_grad():
        mixed = _hidden(model, ids, mask)
    real = mask.bool()
    for i, t in enumerate(tasks):
        other = "task1" if t == "task0" else "task0"
        assert (mixed[i] - alone[t][i])[real[i]].abs().max() <= ROW_EQUAL, (i, t)
        assert (alone[other][i] - alone[t][i])[real[i]].abs().max() > DIFFERENT  # rows can be told apart


def test_rotated_prefix_keys_mix_too():
    """rotate_keys=True: each member's keys sit at -P_m..-1 in the mixed batch, as alone (right-aligned)."""
    model = _model("llama")
    members = _members(model.config, "kv", sizes=(2, 6), rotate_keys=True)
    ids, mask = _batch(model.config)
    tasks = ["task1", "task0", "task0", "task1", "task0"]
    alone = {n: _hidden(model.attach(m), ids, mask) for n, m in members.items()}
    mixed = _hidden(model.attach(MixedPrompts(model.config, members).use_rows(tasks)), ids, mask)
    for i, t in enumerate(tasks):
        assert (mixed[i] - alone[t][i])[mask[i].bool()].abs().max() <= ROW_EQUAL


@pytest.mark.parametrize("arch", DECODERS)
def test_cached_generation_of_a_mixed_batch_equals_each_prompt_alone(arch):
    model = _model(arch)
    members = _members(model.config, "kv")
    ids, mask = _batch(model.config, left=True)
    tasks = ["task0", "task1", "task0", "task1", "task1"]
    alone = {n: model.attach(m).generate(ids, 6, attention_mask=mask) for n, m in members.items()}
    mixed = model.attach(MixedPrompts(model.config, members).use_rows(tasks)).generate(ids, 6, attention_mask=mask)
    for i, t in enumerate(tasks):
        assert torch.equal(mixed[i], alone[t][i]), (i, t)
    assert any(not torch.equal(alone["task0"][i], alone["task1"][i]) for i in range(5))


def test_what_cannot_share_a_batch_is_refused_by_name():
    c = preset("bert-tiny")
    with pytest.raises(InputError, match="'a' .*KVPrefix.* and 'b' .*DeepPrompt.* different kinds"):
        MixedPrompts(c, {"a": make_method("prefix", c, 3), "b": make_method("deep", c, 3)})
    with pytest.raises(InputError, match=r"'a' \(P=3\) and 'b' \(P=4\) use positions='shifted'.*share one P"):
        MixedPrompts(c, {"a": make_method("prefix", c, 3, positions="shifted"),
                         "b": make_method("prefix", c, 4, positions="shifted")})
    MixedPrompts(c, {"a": make_method("prefix", c, 3, positions="shifted"),  # one P: fine
                     "b": make_method("prefix", c, 3, positions="shifted")})
    with pytest.raises(InputError, match="positions 'real' and 'shifted'"):
        MixedPrompts(c, {"a": make_method("prefix", c, 3), "b": make_method("prefix", c, 3, positions="shifted")})
    mixed = MixedPrompts(c, {"a": make_method("prefix", c, 3), "b": make_method("prefix", c, 5)})
    with pytest.raises(InputError, match=r"unknown member\(s\) \['c'\]; this MixedPrompts holds \['a', 'b'\]"):
        mixed.use_rows(["a", "c"])
    model = build(c).attach(mixed)
    ids = torch.randint(0, c.vocab_size, (3, 4))
    with pytest.raises(InputError, match="call use_rows"):
        model(ids)
    mixed.use_rows(["a", "b"])
    with pytest.raises(InputError, match="use_rows was given 2 rows but the batch has B=3"):
        model(ids)


# --- checkpoints of two tasks over the pretrained MiniLM ----------------------------------------

@pytest.fixture(scope="module")
def two_checkpoints(minilm_dir, tmp_path_factory):
    """An SST-2 prefix (P=4) and a CoNLL prefix (P=7), saved as `train` saves them (random prompts
    and heads: equality is what is tested here, not accuracy)."""
    from minigpt_ptv2.training import save_checkpoint
    from minigpt_ptv2.training.checkpoint import backbone_info
    from minigpt_ptv2.training.tasks import build_task_model, get_task
    root = tmp_path_factory.mktemp("mixed")
    paths = {}
    for i, (task, P) in enumerate((("sst2", 4), ("conll", 7))):
        torch.manual_seed(20 + i)
        model = build_task_model(task, "prefix", P, model_dir=minilm_dir)
        with torch.no_grad():
            model.encoder.prompt.embedding.weight.normal_(0.0, 1.0)
            model.heads[task].classifier.weight.normal_(0.0, 0.5)
        paths[task] = root / f"{task}-prefix"
        save_checkpoint(model, paths[task], task=task, method="prefix", P=P, labels=get_task(task).labels,
                        extra={"backbone": backbone_info(model.encoder), "train": {"max_length": 24}})
    return paths


SENTENCES = ["a gorgeous , witty film", "dull and overlong", "an honest , moving story about two brothers"]
NER = ["John Smith works for Siemens in Berlin .", "Angela Merkel visited Paris on Monday with the "
       "French president and spoke to reporters in Berlin and London about the European Union , NATO and the "
       "United Nations ."]


def test_mixed_checkpoints_predict_what_each_predicts_alone(two_checkpoints, minilm_dir):
    from minigpt_ptv2.training import Predictor
    from minigpt_ptv2.training.mixed import MixedPredictor
    items = [("sst2", SENTENCES[0]), ("conll", NER[0]), ("sst2", SENTENCES[1]), ("conll", NER[1]),
             ("sst2", SENTENCES[2])]
    mixed = MixedPredictor.from_checkpoints(two_checkpoints, minilm_dir).predict(items, batch_size=3)
    alone = {t: iter(Predictor.from_checkpoint(p, minilm_dir).predict([x for n, x in items if n == t], 3))
             for t, p in two_checkpoints.items()}
    for (task, text), got in zip(items, mixed):
        want = next(alone[task])
        assert got == {"task": task, **want}
        assert got["text"] == text
    assert mixed[3]["windows"] > 1  # the long NER text was read in windows of 24 tokens, mixed with sentences


def test_mixed_logits_equal_each_checkpoint_alone(two_checkpoints, minilm_dir):
    from minigpt_ptv2.data import WordPiece
    from minigpt_ptv2.training import load_checkpoint
    from minigpt_ptv2.training.mixed import load_mixed
    tok = WordPiece.from_model_dir(minilm_dir)
    batch = tok.encode(SENTENCES + NER, max_length=24)
    tasks = ["sst2", "conll", "sst2", "conll", "sst2"]
    model = load_mixed(two_checkpoints, minilm_dir)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], tasks=tasks)
        for task, path in two_checkpoints.items():
            single, _ = load_checkpoint(path, minilm_dir)
            want = single(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            rows, logits = out[task]
            assert rows.tolist() == [i for i, t in enumerate(tasks) if t == task]
            if task == "conll":
                real = batch["attention_mask"][rows].bool()  # [b, N]
                assert (logits - want[rows])[real].abs().max() <= ROW_EQUAL
            else:
                assert (logits - want[rows]).abs().max() <= ROW_EQUAL
    assert out["sst2"][1].shape == (3, 2) and out["conll"][1].shape == (2, 24, 9)


def test_predict_cli_serves_several_checkpoints_tagging_each_input(two_checkpoints, tmp_path, capsys):
    from minigpt_ptv2.cli import main
    lines = ["sst2\ta gorgeous , witty film", "conll\tJohn Smith works for Siemens in Berlin .", "",
             "sst2: dull and overlong"]
    (tmp_path / "mixed.txt").write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(two_checkpoints["sst2"]), "--also", str(two_checkpoints["conll"]),
                     "--file", str(tmp_path / "mixed.txt"), "--json"]) == 0
    result = json.loads(out.getvalue())
    preds = result["predictions"]
    assert [p["task"] for p in preds] == ["sst2", "conll", "sst2"]
    assert [p["text"] for p in preds] == ["a gorgeous , witty film", "John Smith works for Siemens in Berlin .",
                                          "dull and overlong"]
    assert set(result["members"]) == {"sst2", "conll"} and result["members"]["conll"]["P"] == 7
    assert result["members"]["sst2"]["truncated"] == 0 and result["members"]["conll"]["windows"] == 1
    long = "a " * 40 + "film"
    assert main(["predict", str(two_checkpoints["sst2"]), "--also", str(two_checkpoints["conll"]), f"sst2: {long}",
                 f"conll: {long}"]) == 0
    err = capsys.readouterr().err  # what length did, said per member as a single-task predict says it
    assert "warning: sst2: 1 of 1 sentences are longer than max_length=24" in err
    assert "note: conll: 1 of 1 texts are longer than max_length=24" in err
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(two_checkpoints["sst2"]), "a gorgeous , witty film", "--json"]) == 0
    assert json.loads(out.getvalue())["predictions"][0] == {k: v for k, v in preds[0].items() if k != "task"}


def test_predict_cli_refuses_an_untagged_line_and_a_clash_of_names(two_checkpoints, tmp_path, capsys):
    from minigpt_ptv2.cli import main
    (tmp_path / "bad.txt").write_text("sst2\tfine\nno task here\n")
    argv = ["predict", str(two_checkpoints["sst2"]), "--also", str(two_checkpoints["conll"])]
    assert main(argv + ["--file", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'sst2', 'conll'" in err and "tab" in err
    for line, says in (("sst2\t", "names 'sst2' but holds no text"), ("conll:", "names 'conll' but holds no text")):
        assert main(argv + [line]) == 2 and says in capsys.readouterr().err
    from minigpt_ptv2.cli.predict import tagged
    assert tagged(["sst2: a film\twith a tab", "conll\tParis: a city"], ["sst2", "conll"]) == [
        ("sst2", "a film\twith a tab"), ("conll", "Paris: a city")]  # the separator after a member's name counts
    assert main(["predict", str(two_checkpoints["sst2"]), "--also", str(two_checkpoints["sst2"]), "x"]) == 2
    assert "two checkpoints named 'sst2'" in capsys.readouterr().err
    assert main(["predict", f"a={two_checkpoints['sst2']}", "a\tfine", "b: dull", "--also",
                 f"b={two_checkpoints['sst2']}", "--json"]) == 0
    assert [p["task"] for p in json.loads(capsys.readouterr().out)["predictions"]] == ["a", "b"]


def test_a_members_mask_is_read_when_rows_are_chosen_and_dtypes_never_mix_silently():
    model = _model("bert")
    members = _members(model.config, "kv")
    ids, mask = _batch(model.config)
    mixed = MixedPrompts(model.config, members)
    members["task1"].virtual_keep[1:4] = False  # masked after the mix was built
    tasks = ["task0", "task1", "task1", "task0", "task1"]
    alone = _hidden(model.attach(members["task1"]), ids, mask)
    got = _hidden(model.attach(mixed.use_rows(tasks)), ids, mask)
    assert (got[1] - alone[1])[mask[1].bool()].abs().max() <= ROW_EQUAL
    members["task0"].to(torch.bfloat16)
    with pytest.raises(InputError, match="member 'task1' hands over torch.float32 .* member 'task0' torch.bfloat16"):
        model(ids, attention_mask=mask)
