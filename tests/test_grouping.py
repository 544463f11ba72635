"""Length-grouped batches (data/grouping.py): every example once an epoch, far less padding, the
batch order still shuffled, the same global batches under W processes; the token loss's constant
divisor (heads.task_loss) and its K/W under torchrun; train's --batches option."""
from __future__ import annotations

import json
import random

import pytest
import torch
from torch.utils.data import DataLoader

from minigpt_ptv2.catalog import BATCHINGS
from minigpt_ptv2.cli import main
from minigpt_ptv2.data import WordPiece
from minigpt_ptv2.data.grouping import LengthGroupedSampler, longest_first, tokens_per_batch
from minigpt_ptv2.errors import InputError
from minigpt_ptv2.training import build_task_model, get_task, run as run_module, state as run_state
from minigpt_ptv2.training.checkpoint import read_meta
from minigpt_ptv2.training.heads import task_loss
from minigpt_ptv2.training.run import saved_arguments, train_task
from minigpt_ptv2.training.trainer import Alternate, start_epoch
from tolerances import FP32_KERNELS, FP32_ULPS

pytestmark = pytest.mark.usefixtures("one_thread")

# lengths shaped like SST-2's: mostly short, a long tail (1,003 rows: the last batch is short)
LENGTHS = [min(64, 3 + int(random.Random(i).expovariate(1 / 12))) for i in range(1003)]


def padded(batches, lengths) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_every_example_once_an_epoch_and_a_new_order_each_epoch():
    s = LengthGroupedSampler(LENGTHS, 32, seed=5)
    first = list(s)
    assert sorted(first) == list(range(len(LENGTHS))) and len(s) == len(LENGTHS)
    assert list(LengthGroupedSampler(LENGTHS, 32, seed=5)) == first  # the seed alone decides
    s.set_epoch(1)
    assert sorted(s) == sorted(first) and list(s) != first


def test_grouped_batches_pad_far_less_than_random_ones():
    grouped = LengthGroupedSampler(LENGTHS, 32, seed=0, pool=8).global_batches()  # pools of 256 rows
    shuffled = random.Random(0).sample(range(len(LENGTHS)), len(LENGTHS))
    plain = [shuffled[k:k + 32] for k in range(0, len(shuffled), 32)]
    real = sum(LENGTHS)
    assert real / padded(plain, LENGTHS) < 0.5  # a random batch is mostly padding (its longest row rules)
    assert real / padded(grouped, LENGTHS) > 0.7  # 0.75 here; 0.95 on SST-2 and CoNLL with pools of 1,600
    # ... yet the long batches are not all at one end of the epoch (nor of the lr schedule)
    longest = [max(LENGTHS[i] for i in b) for b in grouped[:-1]]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
    top = sorted(range(len(longest)), key=longest.__getitem__)[-6:]  # the six longest batches
    assert max(top) - min(top) > len(longest) // 3


def per_rank_steps(lengths, world, seed=3):
    """What each of `world` processes' loaders yields, step by step (as torchrun would run them)."""
    loaders = [DataLoader(list(range(len(lengths))), batch_size=32 // world,
                          sampler=LengthGroupedSampler(lengths, 32, world, rank, seed=seed)) for rank in range(world)]
    return [[b.tolist() for b in ld] for ld in loaders]


@pytest.mark.parametrize("world", [2, 4])
def test_w_processes_see_the_global_batches_one_process_sees(world):
    lengths = LENGTHS[:1000]  # a multiple of W: no padding, so exactly one process's batches
    one = LengthGroupedSampler(lengths, 32, seed=3).global_batches()
    steps = list(zip(*per_rank_steps(lengths, world)))
    assert [sorted(i for part in step for i in part) for step in steps] == [sorted(b) for b in one]


@pytest.mark.parametrize("world", [2, 4])
def test_a_dataset_that_does_not_split_evenly_is_padded_as_distributed_sampler_pads(world):
    ranks = per_rank_steps(LENGTHS, world)
    assert len({len(r) for r in ranks}) == 1  # every process takes the same number of steps
    seen = [i for r in ranks for b in r for i in b]
    assert set(seen) == set(range(len(LENGTHS))) and len(seen) == -(-len(LENGTHS) // world) * world


@pytest.mark.parametrize("n, world", [(1, 4), (2, 4), (3, 2)])
def test_fewer_examples_than_processes_still_give_every_process_its_steps(n, world):
    """Padding repeats the examples round and round (as DistributedSampler does): with fewer
    examples than processes a rank left without a step would hang the others in the all-reduce."""
    ranks = per_rank_steps([5] * n, world)
    assert [len(r) for r in ranks] == [1] * world  # one step each, of ceil(n / W) rows
    assert all(len(r[0]) == -(-n // world) for r in ranks)
    assert {i for r in ranks for i in r[0]} == set(range(n))


def test_bad_sampler_arguments_are_refused():
    with pytest.raises(ValueError, match="no examples"):
        LengthGroupedSampler([], 32)
    with pytest.raises(ValueError, match="pool"):
        LengthGroupedSampler(LENGTHS, 32, pool=0)
    with pytest.raises(ValueError, match="split evenly over 3"):
        LengthGroupedSampler(LENGTHS, 32, num_replicas=3)
    with pytest.raises(ValueError, match="rank 2 is not one of 2"):
        LengthGroupedSampler(LENGTHS, 32, num_replicas=2, rank=2)


def test_longest_first_orders_by_length():
    order = longest_first(LENGTHS)
    assert sorted(order) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS, reverse=True)


# --- a token task's loss under grouped batches ----------------------------------------------------

def test_tokens_per_batch_counts_labelled_tokens_over_the_epochs_batches():
    labels = [[-100, 1, 2, -100], [-100, 0, -100], [-100, 3, 4, 5, -100]]  # 2 + 1 + 3 labelled tokens
    assert tokens_per_batch(labels, batch_size=2) == 6 / 2  # two batches: 2 rows, then 1
    assert tokens_per_batch(labels, batch_size=3) == 6
    with pytest.raises(ValueError, match="positive batch_size"):
        tokens_per_batch(labels, 0)


def test_a_constant_divisor_weighs_every_token_alike():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 9)  # [B, N, C]
    labels = torch.tensor([[-100, 1, 2, 3, -100], [-100, 4, -100, -100, -100]])  # 4 labelled tokens
    per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                  reduction="none")  # [B*N], 0 where ignored
    assert torch.allclose(task_loss(logits, labels, 10.0), per_token.sum() / 10, rtol=FP32_ULPS, atol=0)
    assert torch.allclose(task_loss(logits, labels, 4.0), task_loss(logits, labels), rtol=FP32_ULPS, atol=0)
    short, long = task_loss(logits[1:], labels[1:], 10.0), task_loss(logits[:1], labels[:1], 10.0)
    assert torch.allclose(short + long, task_loss(logits, labels, 10.0), rtol=FP32_ULPS, atol=0)  # additive
    sentence = torch.randn(3, 2)  # [B, C]: a sequence task keeps its mean over the batch
    assert torch.equal(task_loss(sentence, torch.tensor([0, 1, 1]), 10.0), task_loss(sentence, torch.tensor([0, 1, 1])))
    with pytest.raises(InputError, match="tokens_per_batch must be positive"):
        task_loss(logits, labels, 0.0)


def test_w_ranks_dividing_by_k_over_w_give_the_single_process_gradient(minilm_dir):
    """Under torchrun each rank sums the loss over its 1/W of the batch and divides by K/W; DDP
    then averages the ranks' gradients. That average must be the one process's gradient of sum / K."""
    tok = WordPiece.from_model_dir(minilm_dir)
    sentences = [(["John", "lives", "in", "Berlin"][: 1 + i % 4] + ["."] * (i % 3), None) for i in range(8)]
    sentences = [(w, ["B-PER"] + ["O"] * (len(w) - 1)) for w, _ in sentences]
    loader = get_task("conll").batches(sentences, tok, batch_size=8, max_length=16)
    K = tokens_per_batch(loader.dataset.labels, 8)
    torch.manual_seed(0)
    model = build_task_model("conll", "prefix", 2, model_dir=minilm_dir).eval()  # no dropout: one function
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(rows, divisor):
        batch = loader.collate_fn([loader.dataset[i] for i in rows])
        loss = task_loss(model(batch["input_ids"], batch["attention_mask"]), batch["labels"], divisor)
        return torch.autograd.grad(loss, params)

    one = grads(range(8), K)
    ranks = [grads(range(r, 8, 2), K / 2) for r in range(2)]  # rank r takes rows r, r+2, ... (grouping.py)
    for g1, g_a, g_b in zip(one, *ranks):
        assert g1.abs().max() > 0
        assert torch.allclose((g_a + g_b) / 2, g1, rtol=FP32_KERNELS, atol=FP32_KERNELS)  # padding: other shapes


def test_train_gives_a_token_task_the_constant_only_under_grouped_batches(tmp_path, minilm_dir, monkeypatch):
    (tmp_path / "conll2003").mkdir()
    text = "\n\n".join("\n".join(f"{w} NNP B-NP {t}" for w, t in zip(["Ann", "met", "Bo"][: 1 + i % 3],
                                                                   ["B-PER", "O", "B-PER"])) for i in range(20))
    for split in ("train", "dev"):
        (tmp_path / "conll2003" / f"{split}.txt").write_text(text + "\n")
    seen = {}

    def spy(*args, tokens_per_batch=None, **kwargs):
        seen[len(seen)] = tokens_per_batch
        raise Stop

    monkeypatch.setattr(run_module, "fit", spy)
    for batches in BATCHINGS:
        with pytest.raises(Stop):
            train_task("conll", "prefix", P=2, epochs=1, batch_size=4, max_train=20, data_dir=tmp_path,
                       model_dir=minilm_dir, batches=batches, progress=False)
    labelled = sum(1 + i % 3 for i in range(20))  # every word's first (here: only) piece is labelled
    assert seen == {0: labelled / 5, 1: None}  # 20 sentences in 5 batches of 4


def test_a_token_training_set_without_a_labelled_token_is_refused_by_name(tmp_path, minilm_dir):
    (tmp_path / "conll2003").mkdir()
    text = "\n\n".join("\u200b NN O O" for _ in range(4))  # a zero-width space has no word piece
    for split in ("train", "dev"):
        (tmp_path / "conll2003" / f"{split}.txt").write_text(text + "\n")
    for batches in BATCHINGS:  # under random batches this was a NaN loss blamed on the learning rate
        with pytest.raises(InputError, match="4 training sentences have no labelled token"):
            train_task("conll", "prefix", P=2, epochs=1, batch_size=2, data_dir=tmp_path, model_dir=minilm_dir,
                       init="random", batches=batches, progress=False)


def test_every_task_of_an_alternate_hears_the_new_epoch():
    samplers = {name: LengthGroupedSampler(LENGTHS[:64], 8, seed=1) for name in ("a", "b")}
    mixed = Alternate({name: DataLoader(list(range(64)), batch_size=8, sampler=s) for name, s in samplers.items()})
    start_epoch(mixed, 3)
    assert [s.epoch for s in samplers.values()] == [3, 3]  # before: both stayed at epoch 0's order
    plain = DataLoader(list(range(64)), batch_size=8, sampler=LengthGroupedSampler(LENGTHS[:64], 8))
    start_epoch(plain, 2)
    assert plain.sampler.epoch == 2
    start_epoch([{"input_ids": None}], 1)  # a list of batches has no sampler: nothing to tell


# --- train --batches ------------------------------------------------------------------------------

@pytest.fixture
def sst2_dir(sst2_folder):
    return sst2_folder([f"{'very ' * (i % 9)}sentence number {i}" for i in range(40)])


def test_train_groups_by_default_and_records_it(sst2_dir, tmp_path, minilm_dir):
    assert BATCHINGS[0] == "grouped"
    shapes = {}
    for batches in BATCHINGS:
        out = tmp_path / batches
        summary, _ = train_task("sst2", "prefix", P=2, epochs=1, batch_size=8, max_train=32, data_dir=sst2_dir,
                                model_dir=minilm_dir, out_dir=out, progress=False, **({"batches": batches}
                                                                                      if batches != "grouped" else {}))
        assert read_meta(out)["train"]["batches"] == batches
        shapes[batches] = summary["history"][-1]["train_loss"]
    assert shapes["grouped"] != shapes["random"]  # other batches, another loss: the option is used
    with pytest.raises(InputError, match="batches must be one of"):
        train_task("sst2", "prefix", P=2, epochs=1, max_train=8, data_dir=sst2_dir, model_dir=minilm_dir,
                   batches="sorted", progress=False)


class Stop(Exception):
    pass


def test_a_run_started_before_the_option_resumes_with_the_shuffle_it_had(sst2_dir, tmp_path, minilm_dir,
                                                                         monkeypatch):
    out, real = tmp_path / "old", run_state.save

    def save_then_stop(run_dir, meta, tensors):  # the run interrupted after its first epoch
        real(run_dir, meta, tensors)
        raise Stop

    monkeypatch.setattr(run_state, "save", save_then_stop)
    with pytest.raises(Stop):
        train_task("sst2", "prefix", P=2, epochs=2, batch_size=8, max_train=16, data_dir=sst2_dir,
                   model_dir=minilm_dir, out_dir=out, batches="random", progress=False)
    path = run_state.folder(out) / f"{run_state.STEM}.json"
    meta = json.loads(path.read_text())
    assert meta["extra"]["args"].pop("batches") == "random"  # as a run saved before --batches existed:
    path.write_text(json.dumps(meta))
    assert saved_arguments(out)["batches"] == "random"  # ... it resumes with the shuffle it had
    monkeypatch.setattr(run_state, "save", real)
    summary, _ = train_task(**saved_arguments(out), out_dir=out, resume=True)  # its folders are saved too
    assert summary["resumed_after_epoch"] == 1 and read_meta(out)["train"]["batches"] == "random"


def test_the_command_line_option(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "sst2", "prefix", "--batches", "sorted"])
    assert e.value.code == 2 and "argument --batches: invalid choice: 'sorted'" in capsys.readouterr().err
    code = main(["train", "lm", "prefix", "--text-file", "t.txt", "--model-dir", str(tmp_path), "--batches", "random",
                 "--out", str(tmp_path / "o")])
    assert code != 0 and "train lm reads --text-file, not --batches" in capsys.readouterr().err
