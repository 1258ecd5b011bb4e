"""Let VLMEvalKit's multi-process mode run without GPUs.

``vlmeval.run.run_local_mode`` calls ``init_process_group(backend='nccl')``,
which fails on a machine without CUDA. The wrapper below swaps in ``gloo``
there (barriers are all VLMEvalKit needs); with CUDA present nothing changes.
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist


def install_gloo_fallback() -> None:
    if getattr(dist.init_process_group, "_seqprune_fallback", False):
        return
    orig = dist.init_process_group

    @functools.wraps(orig)
    def init_process_group(*args, **kwargs):
        if kwargs.get("backend") == "nccl" and not torch.cuda.is_available():
            kwargs["backend"] = "gloo"
        elif args and args[0] == "nccl" and not torch.cuda.is_available():
            args = ("gloo",) + tuple(args[1:])
        return orig(*args, **kwargs)

    init_process_group._seqprune_fallback = True
    dist.init_process_group = init_process_group
