"""Length-grouped batches: a speed device for training on sentences of very different lengths.

A batch is padded to its longest row (batches.py), so a batch drawn at random from SST-2 or
CoNLL-2003 is mostly padding: of the first 4,000 training examples in random batches of 32,
only 33% (SST-2, 64 tokens) and 37% (CoNLL, 128 tokens) of the padded positions are real
tokens. Every padded position still costs a full row of every matmul (and attention grows with
the square of the length). Grouping brings both to 95% real tokens, without changing what is
learned from:

    1. shuffle every index (a new order each epoch, from seed + epoch);
    2. cut the order into pools of `pool` batches and sort each pool by length;
    3. cut each pool into batches, then shuffle the order of all the batches, so that short and long
       batches are spread over the epoch (and over the learning-rate schedule) at random.

Every example is still seen once per epoch, and a batch is still a random draw of rows of similar
length. What changes is which rows share a batch; benchmarks/claim.py's table is measured with it
(train's default, --batches grouped) and benchmarks/run.py's "grouped batches" line shows what it
buys. `--batches random` is the plain shuffle.

A token task's loss needs one more change. The mean over a batch's labelled tokens gives each
token of a short batch more weight than a token of a long one, and grouped batches differ in
length by design: on CoNLL that cost 4 F1 points (held out, benchmarks/recipe_results.jsonl). So
under grouped batches the summed loss is divided by one constant, the epoch's mean count of
labelled tokens per batch (tokens_per_batch below, heads.task_loss): every token weighs the same.

Under torchrun each global batch of `batch_size` rows is dealt out to the W processes
(rank r takes rows r, r+W, ...), so W processes see the same global batches as one process
does. When the examples do not split evenly the index list is first padded to a multiple of W by
repeating its start, as DistributedSampler does, so every process takes the same number of steps
(the last pool then holds a repeated example or few, and its batches differ from one process's).
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler):
    """This process's indices, batch after batch, for batches of rows of similar length.

    lengths: each example's length in tokens; batch_size: the global batch (all processes);
    the DataLoader that uses this sampler takes batch_size // num_replicas rows at a time.
    """

    def __init__(self, lengths: list[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, pool: int = 50):
        if batch_size <= 0 or batch_size % num_replicas:
            raise ValueError(f"batch_size {batch_size} must be positive and split evenly over {num_replicas} processes")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        if not lengths:
            raise ValueError("no examples to batch (lengths is empty)")
        if pool <= 0:
            raise ValueError(f"pool (batches sorted together) must be positive, got {pool}")
        self.lengths, self.batch_size, self.pool = list(lengths), batch_size, pool
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.total = -(-len(self.lengths) // num_replicas) * num_replicas  # padded to a multiple of W

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches, each a list of dataset indices (every process computes the same)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        # the padding: repeat from the start, round and round when W exceeds the examples
        order = (order * -(-self.total // len(order)))[: self.total]
        span = self.pool * self.batch_size
        batches = []
        for start in range(0, len(order), span):
            pool = sorted(order[start:start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [pool[k:k + self.batch_size] for k in range(0, len(pool), self.batch_size)]
        # the one batch shorter than batch_size (the last pool's last) stays last: every process's
        # share of a full batch is then exactly batch_size // W consecutive indices
        full, rest = (batches[:-1], batches[-1:]) if len(batches[-1]) < self.batch_size else (batches, [])
        shuffled = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        return shuffled + rest

    def __iter__(self):
        for batch in self.global_batches():
            yield from batch[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return self.total // self.num_replicas


def tokens_per_batch(labels: list[list[int]], batch_size: int) -> float:
    """The mean count of labelled tokens (label != -100) per global batch of `batch_size` rows over
    one epoch of a token task: the constant heads.task_loss divides each grouped batch's summed
    loss by, so a token weighs the same in a batch of short sentences as in one of long ones.
    (Under torchrun the at most W-1 repeated padding rows are left out of the count: a scale off
    by their share of the epoch, under 1% from a few hundred examples on, the same for every batch.)"""
    if batch_size <= 0 or not labels:
        raise ValueError(f"need a positive batch_size and at least one row, got {batch_size} and {len(labels)} rows")
    batches = -(-len(labels) // batch_size)
    return sum(sum(label != -100 for label in row) for row in labels) / batches


def longest_first(lengths: list[int]) -> list[int]:
    """Indices from the longest row to the shortest: an evaluation order that pads little (the
    predictions do not depend on it; each row is scored on its own)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
