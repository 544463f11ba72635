"""Multi-process training with torchrun: one process per device, each reading its own shard.

    torchrun --nproc_per_node=2 -m minigpt_ptv2 train sst2 prefix --batch-size 32

What changes under torchrun, and nothing else does:
- every process joins a process group (gloo on CPU, nccl on CUDA) from the variables torchrun sets
  (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
- `--batch-size` stays the *global* batch: each of the W ranks takes batch_size / W examples;
- the training order comes from a sampler that deals every global batch out to the ranks, even in
  a single process: `train`'s default LengthGroupedSampler (data/grouping.py, batches of rows of
  similar length) or, under --batches random, a DistributedSampler (one seeded permutation per
  epoch). Either way rank r takes every W-th index of global batch j, so the union of the ranks'
  batch j is exactly single-process batch j. DDP averages the ranks' gradients: the mean over
  ranks of each rank's loss.
  - Sentence tasks (sst2): one loss term per example and equal per-rank batches, so that average
    is the global batch's mean loss: 2 processes train what 1 process trains, up to float
    summation order.
  - Token tasks (conll), grouped batches: each rank sums its tokens' losses and divides by K/W
    (K: the epoch's mean labelled tokens per global batch, heads.task_loss), so the average over
    ranks is the global batch's sum / K, exactly what one process computes.
  - Token tasks, random batches: each rank averages over its own n_r labelled tokens, and the
    ranks' n_r differ, so a token on rank r weighs 1 / (W * n_r) instead of 1 / sum(n): close to
    the single-process token-weighted mean, not equal (equal only when every n_r is the same).
  When the dataset size is not a multiple of W, the sampler also pads the index list by repeating
  a few examples (both kinds of task).
- only rank 0 shows progress, evaluates and saves; the others wait for it at the next step.
- each process uses its own GPU: --device cuda becomes cuda:LOCAL_RANK (rank_device). An explicit
  index (cuda:1) is refused, since it would put every process on that one GPU; choose the GPUs
  with CUDA_VISIBLE_DEVICES instead.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ..data.grouping import LengthGroupedSampler
from ..errors import InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def current() -> DistInfo:
    """This process's place in the process group (rank 0 of 1 when not under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def _env_int(env: Mapping, name: str, default: str) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise InputError(f"environment variable {name}={env.get(name)!r} is not an integer") from None


def rank_device(device: str, env: Mapping, cuda_count: int | None = None) -> str:
    """The device this process trains on: a pure function of --device and the variables torchrun
    sets, so it can be checked without a GPU.

    One process (WORLD_SIZE unset or 1): `device` as given. Under torchrun with W > 1 processes:
    cpu stays cpu; cuda becomes cuda:LOCAL_RANK, one GPU per process on each machine; cuda:N is
    refused, because every process would land on GPU N (and then compete for it, or fail in NCCL).
    """
    world = _env_int(env, "WORLD_SIZE", "1")
    if world <= 1 or not device.startswith("cuda"):
        return device
    if "LOCAL_RANK" not in env:
        raise InputError(f"WORLD_SIZE={world} but LOCAL_RANK is not set: start the processes with torchrun")
    local = _env_int(env, "LOCAL_RANK", "0")
    if device != "cuda":
        raise InputError(f"--device {device} under torchrun ({world} processes) would put every process on "
                         f"that one GPU: pass --device cuda (process LOCAL_RANK=k then uses cuda:k), and "
                         f"choose the GPUs with CUDA_VISIBLE_DEVICES, e.g. CUDA_VISIBLE_DEVICES=2,3 torchrun "
                         f"--nproc_per_node=2 ...")
    if cuda_count is not None and local >= cuda_count:
        raise InputError(f"process LOCAL_RANK={local} needs cuda:{local}, but this machine shows {cuda_count} "
                         f"CUDA device(s): run at most {cuda_count} processes per machine "
                         f"(--nproc_per_node), or check CUDA_VISIBLE_DEVICES")
    return f"cuda:{local}"


def setup(device: str = "cpu") -> tuple[DistInfo, str]:
    """Join the process group torchrun prepared, if any; returns (info, this rank's device)."""
    cuda_count = torch.cuda.device_count() if device.startswith("cuda") else None
    device = rank_device(device, os.environ, cuda_count)  # refused before joining the group
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return current(), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, info: DistInfo) -> int:
    if batch_size % info.world_size:
        raise InputError(f"--batch-size {batch_size} is the global batch and must split evenly over "
                         f"{info.world_size} processes")
    return batch_size // info.world_size


def shard_loader(loader: DataLoader, batch_size: int, info: DistInfo, seed: int, shuffle: bool = True,
                 lengths: list[int] | None = None) -> DataLoader:
    """The same dataset and collate function, ordered by a DistributedSampler: this rank's shard.
    lengths (each example's, in tokens): batches of rows of similar length instead
    (data/grouping.py), dealt out to the ranks the same way."""
    per_rank = per_rank_batch(batch_size, info)  # refuses a global batch that does not split evenly
    if lengths is not None:
        sampler = LengthGroupedSampler(lengths, batch_size, num_replicas=info.world_size, rank=info.rank, seed=seed)
    else:
        sampler = DistributedSampler(loader.dataset, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=shuffle, seed=seed, drop_last=False)
    return DataLoader(loader.dataset, batch_size=per_rank, sampler=sampler,
                      collate_fn=loader.collate_fn)


def wrap(model: torch.nn.Module, info: DistInfo, device: str, find_unused: bool = False):
    """DistributedDataParallel around the model when there are several processes.

    The frozen backbone gets no gradient, so only the prompt and head are all-reduced. Buffers
    (e.g. `virtual_keep`) never change, so they are not re-broadcast at every forward.
    """
    if not info.enabled:
        return model
    DDP = torch.nn.parallel.DistributedDataParallel
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})  # the newer name, where torch has it
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused, **no_sync)


def unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def gather_objects(obj) -> list:
    """[rank 0's obj, rank 1's obj, ...] on every rank (JSON-like values; [obj] in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def global_sum(*values: float) -> list[float]:
    """Sum plain numbers over all ranks (loss and example counts for the epoch record)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    backend_gpu = dist.get_backend() == "nccl"
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if backend_gpu else "cpu")
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def max_rank_difference(model) -> float:
    """Largest |difference| between any rank's trainable parameters and rank 0's (0.0 = in sync)."""
    info = current()
    flat = torch.cat([p.detach().flatten().float() for p in unwrap(model).parameters() if p.requires_grad])
    if not info.enabled:
        return 0.0
    if dist.get_backend() != "nccl":
        flat = flat.cpu()
    gathered = [torch.empty_like(flat) for _ in range(info.world_size)]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)
