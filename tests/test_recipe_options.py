"""train's recipe options: --holdout scores held-out training examples instead of dev, --init
starts a prompt from a real text, --warmup sets the schedule; each refused where it means nothing."""
from __future__ import annotations

import pytest

from minigpt_ptv2.catalog import INITS, RECIPES, TRAIN_METHODS
from minigpt_ptv2.cli import main
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.training.checkpoint import read_meta
from minigpt_ptv2.training.run import load_splits, train_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def sst2_dir(sst2_folder):
    """A data folder whose training rows are numbered, so each split's rows can be named."""
    return sst2_folder([f"sentence number {i}" for i in range(40)])


def test_holdout_is_the_training_rows_after_max_train_never_dev(sst2_dir):
    train, dev = load_splits("sst2", sst2_dir, max_train=30, holdout=6)
    assert [e.text for e in train] == [f"sentence number {i}" for i in range(30)]
    assert [e.text for e in dev] == [f"sentence number {i}" for i in range(30, 36)]


@pytest.mark.parametrize("max_train,holdout,message", [
    (None, 5, "needs max_train"), (38, 5, "has 40 examples: too few for max_train=38 plus holdout=5")])
def test_holdout_without_room_is_refused(sst2_dir, max_train, holdout, message):
    with pytest.raises(InputError, match=message):
        load_splits("sst2", sst2_dir, max_train=max_train, holdout=holdout)


def test_every_method_has_a_recipe_with_a_known_init():
    assert set(RECIPES) == set(TRAIN_METHODS)
    assert all(r.init in INITS and 0 <= r.warmup < 1 and r.lr > 0 for r in RECIPES.values())


def test_a_run_records_its_recipe_and_scores_the_holdout(sst2_dir, tmp_path, minilm_dir):
    summary, _ = train_task("sst2", "prefix", P=4, epochs=1, max_train=24, holdout=8, data_dir=sst2_dir,
                            model_dir=minilm_dir, out_dir=tmp_path / "run", init="tokens", warmup=0.25,
                            progress=False)
    assert summary["dev_examples"] == 8 and summary["train_examples"] == 24 and summary["holdout"] == 8
    train = read_meta(tmp_path / "run")["train"]
    assert (train["init"], train["warmup"], train["lr"], train["holdout"]) == ("tokens", 0.25, RECIPES["prefix"].lr, 8)


def test_init_tokens_for_a_method_behind_an_mlp_names_the_option(sst2_dir, minilm_dir):
    with pytest.raises(InputError, match="--init random"):
        train_task("sst2", "prefix-mlp", P=4, epochs=1, max_train=8, data_dir=sst2_dir, model_dir=minilm_dir,
                   init="tokens", progress=False)


@pytest.mark.parametrize("argv,message", [
    (["train", "sst2", "prefix", "--warmup", "1"], "argument --warmup: must be in [0, 1), got 1"),
    (["train", "sst2", "prefix", "--init", "zeros"], "argument --init: invalid choice: 'zeros'"),
    (["train", "sst2", "prefix", "--holdout", "0"], "argument --holdout: must be a positive integer, got 0"),
])
def test_bad_recipe_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_train_lm_refuses_the_options_it_does_not_read(tmp_path, capsys):
    code = main(["train", "lm", "prefix", "--text-file", "t.txt", "--model-dir", str(tmp_path), "--init", "tokens",
                 "--holdout", "5", "--out", str(tmp_path / "o")])
    assert code != 0 and "train lm reads --text-file, not --holdout / --init" in capsys.readouterr().err
