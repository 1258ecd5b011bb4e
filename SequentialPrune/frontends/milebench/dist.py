"""torchrun data parallel for the MileBench run: each process answers every world-th sample still to do.

Rank 0 decides (the lock, the run folder, which samples are still to do) and tells the others; each rank appends
its answers to its own partial file and stats log, so ranks never interleave lines; rank 0 merges and scores.
One process (no torchrun) needs none of this: every call here is then a no-op.
"""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def init() -> None:
    """Join the process group (gloo on CPU, nccl on GPU, one GPU per local rank)."""
    if world() == 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def share(obj):
    """Rank 0's ``obj``, on every rank."""
    if world() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def longest(seconds: float) -> float:
    """The largest ``seconds`` over the ranks (a dataset's wall time under data parallel)."""
    if world() == 1:
        return seconds
    import torch.distributed as dist

    box = [None] * world()
    dist.all_gather_object(box, seconds)
    return max(box)


def barrier() -> None:
    if world() > 1:
        import torch.distributed as dist

        dist.barrier()


def finish() -> None:
    if world() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
