"""Index helpers that shrink per-token tensors to the kept positions."""
from __future__ import annotations

from typing import Optional

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


def relative_index(base: torch.Tensor, kept: torch.Tensor, length: int,
                   base_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row, the slot of ``base`` holding each position of ``kept`` (positions < ``length``).

    Both hold absolute positions; ``base``'s padding slots (``base_valid`` False) are never pointed at, and a
    position ``base`` does not hold gets slot 0 (the caller hides it).
    """
    b, n = base.shape
    src = base if base_valid is None else base.masked_fill(~base_valid.to(base.device), length)
    inverse = torch.zeros(b, length + 1, dtype=torch.long, device=base.device)
    inverse.scatter_(1, src, torch.arange(n, device=base.device).expand(b, -1))
    return inverse.gather(1, kept.to(base.device))


MASK_KINDS = ("bool", "float", "2d")  # sdpa-style boolean, eager-style additive, flash-style (B, kv) padding


def hide_keys(mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``mask`` (4-D boolean or additive, or a 2-D padding mask) with the keys where ``valid`` (B, kv) is False
    hidden from every query."""
    valid = valid.to(mask.device)
    if mask.dim() == 2:
        return mask * valid.to(mask.dtype)
    v = valid[:, None, None, :]
    if mask.dtype == torch.bool:
        return mask & v
    return mask.masked_fill(~v, torch.finfo(mask.dtype).min)


def build_mask(kind: str, query_pos: torch.Tensor, key_pos: torch.Tensor, key_valid: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
    """The mask the model would give for these slots, where it gave none (no padding, so none was needed):
    key j is seen by query q when its absolute position is not after q's and it is valid."""
    valid = key_valid.to(key_pos.device)
    if kind == "2d":
        return valid.long()
    seen = (key_pos[:, None, :] <= query_pos[:, :, None].to(key_pos.device)) & valid[:, None, :]
    seen = seen[:, None]
    if kind == "bool":
        return seen
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill(~seen, torch.finfo(dtype).min)
