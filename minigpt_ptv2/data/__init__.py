"""Real tasks for prompt tuning: SST-2 and CoNLL-2003 readers, BERT WordPiece with label alignment, batches.

The datasets are read in place from a configurable folder (see ``paths.data_dir``), never copied.
"""
from .batches import ConllDataset, PadCollate, SST2Dataset, conll_batches, sst2_batches
from .conll import CONLL_LABEL_TO_ID, CONLL_LABELS, CONLL_SPLITS, Sentence, load_conll, read_conll_file
from .paths import ENV as DATA_ENV
from .paths import data_dir, data_file
from .sample import load_sst2_sample, sst2_or_sample
from .sst2 import SST2_LABELS, SST2_SPLITS, Example, load_sst2, read_sst2_file
from .tokenize import IGNORE, WordPiece, align_predictions, first_subtoken_labels, pad_batch

__all__ = [
    "data_dir", "data_file", "DATA_ENV",
    "load_sst2", "load_sst2_sample", "sst2_or_sample", "read_sst2_file", "Example", "SST2_LABELS", "SST2_SPLITS",
    "load_conll", "read_conll_file", "Sentence", "CONLL_LABELS", "CONLL_LABEL_TO_ID", "CONLL_SPLITS",
    "WordPiece", "pad_batch", "first_subtoken_labels", "align_predictions", "IGNORE",
    "SST2Dataset", "ConllDataset", "PadCollate", "sst2_batches", "conll_batches",
]
