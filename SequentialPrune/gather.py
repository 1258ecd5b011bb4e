"""Index helpers that shrink per-token tensors to the kept positions."""
from __future__ import annotations

import torch


def take(t: torch.Tensor, idx: torch.Tensor, dim: int, batch_dim: int = 0) -> torch.Tensor:
    """Per batch row b, keep positions ``idx[b]`` of ``t`` along ``dim``.

    ``t`` may broadcast over the batch (size 1 at ``batch_dim``); ``idx`` is
    (batch, n) and is moved to ``t``'s device, so it works across devices.
    """
    dim, batch_dim = dim % t.dim(), batch_dim % t.dim()
    b, n = idx.shape
    shape = list(t.shape)
    shape[batch_dim] = b
    t = t.expand(shape)
    view = [1] * t.dim()
    view[batch_dim], view[dim] = b, n
    out_shape = list(shape)
    out_shape[dim] = n
    return t.gather(dim, idx.to(t.device).view(view).expand(out_shape))


def take_mask(mask, idx: torch.Tensor):
    """Shrink a prefill mask: 4-D (queries and keys) or 2-D flash padding mask."""
    if mask is None:
        return None
    if mask.dim() == 4:
        return take(take(mask, idx, 2), idx, 3)
    if mask.dim() == 2:
        return take(mask, idx, 1)
    raise ValueError(f"unexpected attention mask of shape {tuple(mask.shape)}")


def take_position_ids(pos, idx: torch.Tensor):
    """Shrink position ids: (batch, L) or (sections, batch, L)."""
    if pos is None:
        return None
    return take(pos, idx, -1, batch_dim=0 if pos.dim() == 2 else 1)


def take_position_embeddings(pe, idx: torch.Tensor):
    """Shrink a (cos, sin) pair of (batch, L, head_dim) tensors."""
    if pe is None:
        return None
    return tuple(take(t, idx, 1) for t in pe)


def decode_key_index(kept: torch.Tensor, prompt_len: int, kv_len: int) -> torch.Tensor:
    """Key positions a pruned layer holds during decoding: kept prompt tokens plus every generated one."""
    new = torch.arange(prompt_len, kv_len, device=kept.device).expand(kept.shape[0], -1)
    return torch.cat([kept, new], dim=1)


def relative_index(base: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Per row, where each entry of ``kept`` sits in ``base`` (both ascending, ``kept`` a subset of ``base``)."""
    return torch.searchsorted(base, kept.to(base.device))
